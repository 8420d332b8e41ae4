/* SPDX-License-Identifier: GPL-2.0 */
/* parse_eth.h: the Ethernet header and up to two VLAN tags (802.1Q 0x8100 or
 * 802.1ad 0x88a8), as the Python programs' parse_ethhdr. Returns the L3 header
 * with *proto its EtherType, or NULL when the frame ends inside them. */
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

#endif
