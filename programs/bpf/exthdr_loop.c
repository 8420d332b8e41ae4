// SPDX-License-Identifier: GPL-2.0
/* exthdr_loop: bounded_loop's walk of up to 8 IPv6 extension headers, each
 * step a run of a callback under bpf_loop (helper 181) instead of a turn of a
 * rolled loop: the kernel's verifier checks the callback once for any number
 * of runs, where it walks a loop's turns one by one.
 *
 * The callback reads the packet through the pointers the program left in its
 * stack (struct walk) and says where the walk ended. Verdicts as bounded_loop's:
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

enum walk_end { WALK_ON, WALK_L4, WALK_TRUNCATED };

struct walk {
	unsigned char *ip6;
	void *data_end;
	__u32 off;
	__u8 nexthdr;
	__u8 end;
};

static __always_inline int is_exthdr(__u8 nh)
{
	return nh == 0 || nh == 43 || nh == 44 || nh == 51 || nh == 60 || nh == 135;
}

/* One extension header: 0 to go on, 1 to stop (end says why). */
static long step(__u64 index, void *arg)
{
	struct walk *w = arg;
	unsigned char *h;
	__u32 hlen;

	if (!is_exthdr(w->nexthdr)) {
		w->end = WALK_L4;
		return 1;
	}
	if (w->off > 0x4000)           /* never true; keeps the offset's range small */
		return 1;
	h = w->ip6 + w->off;
	if ((void *)(h + 8) > w->data_end) {
		w->end = WALK_TRUNCATED;
		return 1;
	}
	if (w->nexthdr == 44) {
		if (bpf_ntohs(*(__be16 *)(h + 2)) & 0xFFF8) {
			w->nexthdr = h[0];   /* a non-first fragment: no L4 header */
			w->end = WALK_L4;
			return 1;
		}
		hlen = 8;
	} else if (w->nexthdr == 51) {
		hlen = ((__u32)h[1] + 2) * 4;
	} else {
		hlen = ((__u32)h[1] + 1) * 8;
	}
	if ((void *)(h + hlen) > w->data_end) {
		w->end = WALK_TRUNCATED;
		return 1;
	}
	w->nexthdr = h[0];
	w->off += hlen;
	return 0;
}

SEC("xdp")
int exthdr_loop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct walk w = {};
	unsigned char *p;
	__u16 proto;

	p = parse_eth(data, data_end, &proto);
	if (!p)
		return XDP_PASS;
	if (proto != ETH_P_IPV6 || (void *)(p + 40) > data_end || (p[0] >> 4) != 6)
		return XDP_PASS;
	w.ip6 = p;
	w.data_end = data_end;
	w.off = 40;
	w.nexthdr = p[6];
	bpf_loop(IPV6_EXTHDR_MAX, step, &w, 0);
	if (w.end == WALK_TRUNCATED)
		return XDP_PASS;
	if (w.end == WALK_ON && is_exthdr(w.nexthdr))
		return XDP_ABORTED;            /* still an extension header after 8 */
	return w.nexthdr == IPPROTO_UDP_ ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
