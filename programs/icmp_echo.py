"""Answer ICMP echo requests (IPv4) from the dataplane itself: swap the MAC and
IP addresses, make the message an echo reply, fix its checksum, XDP_TX
(xdp-tutorial's packet03 exercise). Everything else goes to the host.

The IPv4 header checksum needs no change (swapping two words leaves the
one's-complement sum as it was); the ICMP checksum changes with the type
field only: one incremental update (RFC 1624).
"""

from dataplane import XDP_PASS, XDP_TX, xdp
from dataplane.csum import csum_replace2
from dataplane.parse import (ETH_P_IP, ICMP_ECHO, ICMP_ECHOREPLY, IPPROTO_ICMP, load_be16,
                             load_be32, parse_ethhdr, parse_iphdr, store_be16, store_be32)


@xdp
def icmp_echo(ctx):
    pkt = ctx.pkt
    proto, off = parse_ethhdr(pkt)
    if proto != ETH_P_IP:
        return XDP_PASS
    ipproto, l4 = parse_iphdr(pkt, off)
    if ipproto != IPPROTO_ICMP or l4 < 0 or len(pkt) < l4 + 8:
        return XDP_PASS
    if pkt[l4] != ICMP_ECHO or pkt[l4 + 1] != 0:
        return XDP_PASS
    for i in range(6):
        b = pkt[i]
        pkt[i] = pkt[i + 6]
        pkt[i + 6] = b
    src = load_be32(pkt, off + 12)
    store_be32(pkt, off + 12, load_be32(pkt, off + 16))
    store_be32(pkt, off + 16, src)
    old = load_be16(pkt, l4)                 # type << 8 | code
    pkt[l4] = ICMP_ECHOREPLY
    store_be16(pkt, l4 + 2, csum_replace2(load_be16(pkt, l4 + 2), old, load_be16(pkt, l4)))
    return XDP_TX
