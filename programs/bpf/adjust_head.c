// SPDX-License-Identifier: GPL-2.0
/* adjust_head: encapsulate IPv4 in IPIP with bpf_xdp_adjust_head; XDP_TX.
 *
 * The C twin of programs/encap_ipip.py. An untagged IPv4 frame (EtherType
 * 0x0800 at offset 12, the 20-byte IPv4 header present) grows by 20 bytes at
 * the front; the Ethernet header moves to the new front unchanged and the
 * outer IPv4 header follows it:
 *   version 4, IHL 5, the inner TOS, total length = inner total length + 20,
 *   id 0, don't-fragment, TTL 64, protocol 4 (IPIP),
 *   172.16.0.1 -> 172.16.0.2, a correct header checksum.
 * The inner packet (and any padding after it) is left byte for byte.
 * Anything else passes; a failed bpf_xdp_adjust_head gives XDP_ABORTED.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define IPIP_HLEN 20
#define IPPROTO_IPIP_ 4
#define IP_DF_ 0x4000
#define TUNNEL_SRC 0xAC100001   /* 172.16.0.1 */
#define TUNNEL_DST 0xAC100002   /* 172.16.0.2 */

static __always_inline __u16 ipv4_csum(const __u16 *hdr)
{
	__u32 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < IPIP_HLEN / 2; i++)
		sum += hdr[i];
	sum = (sum & 0xFFFF) + (sum >> 16);
	sum = (sum & 0xFFFF) + (sum >> 16);
	return (__u16)~sum;
}

SEC("xdp")
int adjust_head(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *inner, *outer;
	__u8 tos;
	__u16 inner_len;

	if (data + ETH_HLEN + sizeof(*inner) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	inner = data + ETH_HLEN;
	tos = inner->tos;
	inner_len = bpf_ntohs(inner->tot_len);

	if (bpf_xdp_adjust_head(ctx, -IPIP_HLEN))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + IPIP_HLEN + ETH_HLEN + sizeof(*outer) > data_end)
		return XDP_ABORTED;

	/* the Ethernet header to the new front (the areas overlap: copy forwards) */
	__builtin_memmove(data, data + IPIP_HLEN, ETH_HLEN);

	outer = data + ETH_HLEN;
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = tos;
	outer->tot_len = bpf_htons((__u16)(inner_len + IPIP_HLEN));
	outer->id = 0;
	outer->frag_off = bpf_htons(IP_DF_);
	outer->ttl = 64;
	outer->protocol = IPPROTO_IPIP_;
	outer->check = 0;
	outer->saddr = bpf_htonl(TUNNEL_SRC);
	outer->daddr = bpf_htonl(TUNNEL_DST);
	outer->check = ipv4_csum((const __u16 *)outer);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
