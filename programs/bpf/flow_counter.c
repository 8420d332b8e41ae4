// SPDX-License-Identifier: GPL-2.0
/* flow_counter: count packets and bytes per 5-tuple in the LRU_HASH map
 * "flows"; pass every packet.
 *
 * The C twin of programs/flow_counter.py, same map layout:
 *   key   (37 bytes, packed, every field in network byte order)
 *         saddr[16] daddr[16] sport dport proto; IPv4 addresses are stored
 *         IPv4-mapped (::ffff:a.b.c.d)
 *   value (16 bytes, host order) packets, bytes (the frame's length)
 *   max_entries 65536
 * TCP and UDP over IPv4 (whole header incl. options present, version 4,
 * IHL >= 5, not a non-first fragment) and over IPv6 (the fixed header's next
 * header); up to two VLAN tags skipped; the first 4 bytes of the L4 header
 * must be in the frame.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "parse_eth.h"

#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17

struct flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
} __attribute__((packed));

struct flow_value {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_value);
	__uint(max_entries, 65536);
} flows SEC(".maps");

SEC("xdp")
int flow_counter(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct flow_key key;
	struct flow_value *v, init;
	unsigned char *p, *l4;
	__u16 proto;
	__u8 ipproto;

	p = parse_eth(data, data_end, &proto);
	if (!p)
		return XDP_PASS;

	__builtin_memset(&key, 0, sizeof(key));
	if (proto == ETH_P_IP) {
		__u32 ihl;

		if ((void *)(p + 20) > data_end)
			return XDP_PASS;
		ihl = (p[0] & 0x0F) * 4;
		if ((p[0] >> 4) != 4 || ihl < 20 || (void *)(p + ihl) > data_end)
			return XDP_PASS;
		if (bpf_ntohs(*(__be16 *)(p + 6)) & 0x1FFF)
			return XDP_PASS;       /* a non-first fragment: no ports */
		ipproto = p[9];
		l4 = p + ihl;
		key.saddr[10] = 0xFF;
		key.saddr[11] = 0xFF;
		__builtin_memcpy(&key.saddr[12], p + 12, 4);
		key.daddr[10] = 0xFF;
		key.daddr[11] = 0xFF;
		__builtin_memcpy(&key.daddr[12], p + 16, 4);
	} else if (proto == ETH_P_IPV6) {
		if ((void *)(p + 40) > data_end)
			return XDP_PASS;
		ipproto = p[6];
		l4 = p + 40;
		__builtin_memcpy(key.saddr, p + 8, 16);
		__builtin_memcpy(key.daddr, p + 24, 16);
	} else {
		return XDP_PASS;
	}
	if ((ipproto != IPPROTO_TCP_ && ipproto != IPPROTO_UDP_) || (void *)(l4 + 4) > data_end)
		return XDP_PASS;
	__builtin_memcpy(&key.sport, l4, 2);
	__builtin_memcpy(&key.dport, l4 + 2, 2);
	key.proto = ipproto;

	v = bpf_map_lookup_elem(&flows, &key);
	if (v) {
		__sync_fetch_and_add(&v->packets, 1);
		__sync_fetch_and_add(&v->bytes, (__u64)(data_end - data));
	} else {
		init.packets = 1;
		init.bytes = data_end - data;
		bpf_map_update_elem(&flows, &key, &init, BPF_ANY);
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
