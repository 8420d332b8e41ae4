// SPDX-License-Identifier: GPL-2.0
/* drop_udp: drop UDP over IPv4 and IPv6, pass everything else.
 *
 * The C twin of programs/drop_udp.py, verdict for verdict:
 *  - Ethernet with up to two VLAN tags skipped (802.1Q 0x8100 or 802.1ad
 *    0x88a8, as parse_ethhdr); a frame cut inside a tag passes;
 *  - IPv4: at least 20 bytes from the L3 offset and protocol (byte 9) == 17.
 *    The protocol byte sits before any option, so the IHL does not move it;
 *    like the Python version the version/IHL fields are not checked;
 *  - IPv6: at least 40 bytes and the fixed header's next header == 17
 *    (extension headers are not walked, like tcpdump's "ip6 proto 17").
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "parse_eth.h"

#define IPPROTO_UDP_ 17

SEC("xdp")
int drop_udp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (parse_l4proto(data, data_end) == IPPROTO_UDP_)
		return XDP_DROP;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
