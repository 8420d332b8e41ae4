// SPDX-License-Identifier: GPL-2.0
/* map_in_map: an ARRAY_OF_MAPS of per-family action tables.
 *
 *   by_family   ARRAY_OF_MAPS, 2 slots (0 = IPv4, 1 = IPv6), declared with
 *               __array(values, struct action_table) and statically filled
 *               with v4_actions / v6_actions
 *   v4_actions, v6_actions
 *               ARRAY, 256 x u32, indexed by the L4 protocol: the verdict
 *               for that protocol; 0 means "no rule" (XDP_PASS)
 *
 * Verdict: the L4 protocol of an IPv4 / IPv6 packet (up to two VLAN tags
 * skipped, as drop_udp) looked up in its family's table through the outer
 * map; no table, no rule or not IP -> XDP_PASS. The tables start empty:
 * write e.g. v4_actions[17] = XDP_DROP (1) from user space.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "parse_eth.h"


struct action_table {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 256);
};

struct action_table v4_actions SEC(".maps");
struct action_table v6_actions SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 2);
	__array(values, struct action_table);
} by_family SEC(".maps") = {
	.values = { [0] = &v4_actions, [1] = &v6_actions },
};

SEC("xdp")
int map_in_map(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	unsigned char *p;
	__u32 family, key, *action;
	__u16 proto;
	void *table;

	p = parse_eth(data, data_end, &proto);
	if (!p)
		return XDP_PASS;
	if (proto == ETH_P_IP && (void *)(p + 20) <= data_end) {
		family = 0;
		key = p[9];
	} else if (proto == ETH_P_IPV6 && (void *)(p + 40) <= data_end) {
		family = 1;
		key = p[6];
	} else {
		return XDP_PASS;
	}

	table = bpf_map_lookup_elem(&by_family, &family);
	if (!table)
		return XDP_PASS;
	action = bpf_map_lookup_elem(table, &key);
	if (!action || *action == 0 || *action > XDP_REDIRECT)
		return XDP_PASS;
	return *action;
}

char LICENSE[] SEC("license") = "GPL";
