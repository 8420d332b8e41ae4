// SPDX-License-Identifier: GPL-2.0
/* bounded_loop: walk up to 8 IPv6 extension headers with a real loop.
 *
 * The loop is kept rolled (unroll disabled), so the object has a back-edge
 * and the kernel verifier has to prove it bounded (i < IPV6_EXTHDR_MAX).
 * The walk follows dataplane.parse.parse_ip6hdr_ext: hop-by-hop (0),
 * routing (43), destination options (60) and mobility (135) headers are
 * (hdrlen + 1) * 8 bytes, AH (51) (hdrlen + 2) * 4, the fragment header (44)
 * 8 bytes; a non-first fragment stops the walk at its fragment header.
 *
 * Verdicts (Ethernet with up to two VLAN tags skipped):
 *   IPv6 whose upper-layer protocol is UDP (behind any extension headers) -> XDP_DROP
 *   more than 8 extension headers                                          -> XDP_ABORTED
 *   anything else (other IPv6, truncated headers, not IPv6)                -> XDP_PASS
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "parse_eth.h"

#define IPV6_EXTHDR_MAX 8
#define IPPROTO_UDP_ 17

static __always_inline int is_exthdr(__u8 nh)
{
	return nh == 0 || nh == 43 || nh == 44 || nh == 51 || nh == 60 || nh == 135;
}

SEC("xdp")
int bounded_loop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	unsigned char *p, *h;
	__u32 off, hlen;
	__u16 proto;
	__u8 nexthdr;
	int i;

	p = parse_eth(data, data_end, &proto);
	if (!p)
		return XDP_PASS;
	if (proto != ETH_P_IPV6 || (void *)(p + 40) > data_end || (p[0] >> 4) != 6)
		return XDP_PASS;

	nexthdr = p[6];
	off = 40;
#pragma clang loop unroll(disable)
	for (i = 0; i < IPV6_EXTHDR_MAX; i++) {
		if (!is_exthdr(nexthdr))
			break;
		if (off > 0x4000)              /* never true; keeps the offset's range small */
			return XDP_PASS;
		h = p + off;
		if ((void *)(h + 8) > data_end)
			return XDP_PASS;
		if (nexthdr == 44) {
			if (bpf_ntohs(*(__be16 *)(h + 2)) & 0xFFF8) {
				nexthdr = h[0];   /* a non-first fragment: no L4 header */
				goto done;
			}
			hlen = 8;
		} else if (nexthdr == 51) {
			hlen = ((__u32)h[1] + 2) * 4;
		} else {
			hlen = ((__u32)h[1] + 1) * 8;
		}
		if ((void *)(h + hlen) > data_end)
			return XDP_PASS;
		nexthdr = h[0];
		off += hlen;
	}
	if (is_exthdr(nexthdr))
		return XDP_ABORTED;            /* still an extension header after 8 */
done:
	return nexthdr == IPPROTO_UDP_ ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
