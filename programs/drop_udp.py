"""Drop UDP over IPv4 and IPv6 (802.1Q / QinQ tags skipped); pass everything else.

IPv6: the fixed header's next header only (like tcpdump's ``ip6 proto 17``).
"""

from dataplane import XDP_DROP, XDP_PASS, xdp
from dataplane.parse import ETH_P_IP, ETH_P_IPV6, parse_ethhdr

IPPROTO_UDP = 17


@xdp
def drop_udp(ctx):
    pkt = ctx.pkt
    proto, off = parse_ethhdr(pkt)
    if proto == ETH_P_IP:
        if len(pkt) >= off + 20 and pkt[off + 9] == IPPROTO_UDP:
            return XDP_DROP
    elif proto == ETH_P_IPV6:
        if len(pkt) >= off + 40 and pkt[off + 6] == IPPROTO_UDP:
            return XDP_DROP
    return XDP_PASS
