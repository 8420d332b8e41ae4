/* SPDX-License-Identifier: GPL-2.0 */
/* parse_eth.h: the Ethernet header and up to two VLAN tags (802.1Q 0x8100 or
 * 802.1ad 0x88a8), as the Python programs' parse_ethhdr. parse_eth returns the
 * L3 header with *proto its EtherType, or NULL when the frame ends inside them;
 * parse_l4proto the IP protocol. */
#ifndef DATAPLANE_PARSE_ETH_H
#define DATAPLANE_PARSE_ETH_H

#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>

#define ETH_P_8021AD_ 0x88A8
#define VLAN_MAX_DEPTH 2

static __always_inline unsigned char *parse_eth(void *data, void *data_end, __u16 *proto)
{
	unsigned char *p;
	int i;

	if (data + ETH_HLEN > data_end)
		return NULL;
	p = data + 12;                 /* the EtherType / TPID */
	*proto = bpf_ntohs(*(__be16 *)p);
#pragma unroll
	for (i = 0; i < VLAN_MAX_DEPTH; i++) {
		if (*proto != ETH_P_8021Q && *proto != ETH_P_8021AD_)
			break;
		p += 4;
		if ((void *)(p + 2) > data_end)
			return NULL;
		*proto = bpf_ntohs(*(__be16 *)p);
	}
	return p + 2;                  /* the L3 header */
}

/* The IPv4 protocol / IPv6 next header of the frame, or -1 when it is not IP
 * or ends inside the fixed header. */
static __always_inline int parse_l4proto(void *data, void *data_end)
{
	unsigned char *p;
	__u16 proto;

	p = parse_eth(data, data_end, &proto);
	if (!p)
		return -1;
	if (proto == ETH_P_IP && (void *)(p + 20) <= data_end)
		return p[9];
	if (proto == ETH_P_IPV6 && (void *)(p + 40) <= data_end)
		return p[6];
	return -1;
}

#endif
