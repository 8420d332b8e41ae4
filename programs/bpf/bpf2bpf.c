// SPDX-License-Identifier: GPL-2.0
/* bpf2bpf: drop_udp split into bpf-to-bpf calls.
 *
 * The xdp program calls two subprograms that clang leaves in .text (static,
 * noinline), so the object has local calls (call with src_reg 1, an
 * R_BPF_64_32 relocation against .text) and the kernel verifies three
 * frames:
 *   l4proto(data, data_end): the L4 protocol of an IPv4 / IPv6 packet
 *       (up to two VLAN tags skipped, as programs/drop_udp.py), or -1;
 *   decide(proto): XDP_DROP for UDP, XDP_PASS otherwise.
 * Verdicts are drop_udp's, packet for packet.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "parse_eth.h"

#define IPPROTO_UDP_ 17

static __attribute__((noinline)) int l4proto(void *data, void *data_end)
{
	return parse_l4proto(data, data_end);  /* inlined here: one bpf-to-bpf call */
}

static __attribute__((noinline)) int decide(int proto)
{
	return proto == IPPROTO_UDP_ ? XDP_DROP : XDP_PASS;
}

SEC("xdp")
int bpf2bpf(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	return decide(l4proto(data, data_end));
}

char LICENSE[] SEC("license") = "GPL";
