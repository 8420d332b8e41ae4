// SPDX-License-Identifier: GPL-2.0
/* global_data: global variables (.bss, .data, .rodata) and an ARRAY map.
 *
 *   packets      .bss     every packet seen (atomic add)
 *   match_verdict .data   the verdict for a match, initialised to XDP_DROP
 *   match_proto  .rodata  const volatile config: the L4 protocol to match
 *                         (17, UDP; a loader may change it before load)
 *   verdicts     ARRAY map, 5 x u64: packets per verdict (index = XDP_*),
 *                read through bpf_map_lookup_elem
 * libbpf turns each data section into a one-entry ARRAY map
 * (global_d.bss, global_d.data, global_d.rodata; .rodata frozen).
 *
 * Verdict: IPv4 / IPv6 (up to two VLAN tags skipped, as drop_udp) whose
 * protocol / next header is match_proto -> match_verdict; else XDP_PASS.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "parse_eth.h"


__u64 packets;                          /* .bss */
__u32 match_verdict = XDP_DROP;         /* .data */
const volatile __u8 match_proto = 17;   /* .rodata */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 5);
} verdicts SEC(".maps");

SEC("xdp")
int global_data(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 verdict = XDP_PASS;
	__u64 *count;

	__sync_fetch_and_add(&packets, 1);
	if (parse_l4proto(data, data_end) == match_proto)
		verdict = match_verdict;
	if (verdict > XDP_REDIRECT)
		verdict = XDP_ABORTED;
	count = bpf_map_lookup_elem(&verdicts, &verdict);
	if (count)
		__sync_fetch_and_add(count, 1);
	return verdict;
}

char LICENSE[] SEC("license") = "GPL";
