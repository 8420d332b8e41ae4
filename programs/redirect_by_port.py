"""Redirect TCP and UDP by destination port to an interface; pass the rest.

PORT_TABLE maps a destination port to the ifindex the frame is redirected to.
IPv4 (first fragments only, options honoured) and the IPv6 fixed header.
"""

from dataplane import XDP_PASS, bpf_redirect, xdp
from dataplane.parse import (ETH_P_IP, ETH_P_IPV6, load_be16, parse_ethhdr, parse_ip6hdr,
                             parse_iphdr)

IPPROTO_TCP = 6
IPPROTO_UDP = 17
#: (destination port, ifindex)
PORT_TABLE = ((53, 2), (80, 3), (443, 3), (8080, 4))


def l4_offset(pkt):
    """Offset of the TCP/UDP header, or -1."""
    proto, off = parse_ethhdr(pkt)
    if proto == ETH_P_IP:
        ipproto, l4 = parse_iphdr(pkt, off)
    elif proto == ETH_P_IPV6:
        ipproto, l4 = parse_ip6hdr(pkt, off)
    else:
        return -1
    if ipproto != IPPROTO_TCP and ipproto != IPPROTO_UDP:
        return -1
    return l4


@xdp
def redirect_by_port(ctx):
    pkt = ctx.pkt
    l4 = l4_offset(pkt)
    if l4 < 0 or len(pkt) < l4 + 4:
        return XDP_PASS
    dport = load_be16(pkt, l4 + 2)
    for port, ifindex in PORT_TABLE:
        if dport == port:
            return bpf_redirect(ifindex, 0)
    return XDP_PASS
