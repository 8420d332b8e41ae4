// SPDX-License-Identifier: GPL-2.0
/* firewall: drop by IPv4 / IPv6 source prefix and by TCP / UDP destination port.
 *
 * The C twin of programs/firewall.py, with the same rules compiled in (the
 * Python version has no maps: its rule lists are its configuration):
 *   sources  203.0.113.0/24, 198.51.100.0/25, 10.66.0.0/16,
 *            2001:db8:bad::/48, fd00:dead::/32
 *   ports    23, 3306, 6379 (TCP or UDP destination)
 * Parsing as the Python helpers do:
 *   - Ethernet with up to two VLAN tags (0x8100 / 0x88a8); a truncated
 *     Ethernet header or a non-IP EtherType passes;
 *   - IPv4 (parse_iphdr): 20 bytes, version 4, IHL >= 5 and the whole
 *     header (options too) inside the packet, else PASS; a non-first
 *     fragment has no L4 header (the source rules still apply);
 *   - IPv6 (parse_ip6hdr): the 40-byte fixed header, else PASS; the next
 *     header is the fixed header's (no extension headers walked);
 *   - the port rule needs the first 4 bytes of the L4 header.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "parse_eth.h"

#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17

static __always_inline __u32 load_be32(const unsigned char *p)
{
	return ((__u32)p[0] << 24) | ((__u32)p[1] << 16) | ((__u32)p[2] << 8) | p[3];
}

static __always_inline int v4_denied(__u32 src)
{
	return (src & 0xFFFFFF00) == 0xCB007100 ||   /* 203.0.113.0/24 */
	       (src & 0xFFFFFF80) == 0xC6336400 ||   /* 198.51.100.0/25 */
	       (src & 0xFFFF0000) == 0x0A420000;     /* 10.66.0.0/16 */
}

static __always_inline int v6_denied(const unsigned char *src)
{
	__u32 w0 = load_be32(src), w1 = load_be32(src + 4);

	if (w0 == 0x20010DB8 && (w1 & 0xFFFF0000) == 0x0BAD0000)   /* 2001:db8:bad::/48 */
		return 1;
	if (w0 == 0xFD00DEAD)                                       /* fd00:dead::/32 */
		return 1;
	return 0;
}

SEC("xdp")
int firewall(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	unsigned char *p, *l4 = NULL;
	__u16 proto;
	__u8 ipproto;

	p = parse_eth(data, data_end, &proto);
	if (!p)
		return XDP_PASS;

	if (proto == ETH_P_IP) {
		__u32 ihl;

		if ((void *)(p + 20) > data_end)
			return XDP_PASS;
		ihl = (p[0] & 0x0F) * 4;
		if ((p[0] >> 4) != 4 || ihl < 20 || (void *)(p + ihl) > data_end)
			return XDP_PASS;
		ipproto = p[9];
		if (v4_denied(load_be32(p + 12)))
			return XDP_DROP;
		if ((bpf_ntohs(*(__be16 *)(p + 6)) & 0x1FFF) == 0)
			l4 = p + ihl;          /* first (or only) fragment */
	} else if (proto == ETH_P_IPV6) {
		if ((void *)(p + 40) > data_end)
			return XDP_PASS;
		ipproto = p[6];
		if (v6_denied(p + 8))
			return XDP_DROP;
		l4 = p + 40;
	} else {
		return XDP_PASS;
	}

	if ((ipproto == IPPROTO_TCP_ || ipproto == IPPROTO_UDP_) && l4 &&
	    (void *)(l4 + 4) <= data_end) {
		__u16 dport = bpf_ntohs(*(__be16 *)(l4 + 2));

		if (dport == 23 || dport == 3306 || dport == 6379)
			return XDP_DROP;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
