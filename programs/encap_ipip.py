"""Encapsulate IPv4 packets in IPv4 (IPIP, protocol 4) and send them back out:
bpf_xdp_adjust_head makes room for the outer header in the headroom.

The outer header: version 4, IHL 5, the inner TOS, total length = inner + 20,
don't-fragment, TTL 64, protocol 4, TUNNEL_SRC -> TUNNEL_DST, a correct header
checksum. The Ethernet header moves to the new front unchanged. Frames that
are not untagged IPv4 pass.
"""

import ipaddress

from dataplane import XDP_ABORTED, XDP_PASS, XDP_TX, bpf_xdp_adjust_head, xdp
from dataplane.csum import ipv4_csum_set
from dataplane.parse import ETH_HLEN, ETH_P_IP, header_fits, load_be16, parse_ethhdr, \
    store_be16, store_be32

TUNNEL_SRC = int(ipaddress.IPv4Address("172.16.0.1"))
TUNNEL_DST = int(ipaddress.IPv4Address("172.16.0.2"))
IPIP_HLEN = 20
IPPROTO_IPIP = 4
IP_DF = 0x4000


@xdp
def encap_ipip(ctx):
    pkt = ctx.pkt
    proto, off = parse_ethhdr(pkt)
    if proto != ETH_P_IP or off != ETH_HLEN or not header_fits(pkt, off, 20):
        return XDP_PASS
    tos = pkt[off + 1]
    inner_len = load_be16(pkt, off + 2)
    if bpf_xdp_adjust_head(ctx, -IPIP_HLEN) != 0:
        return XDP_ABORTED
    pkt = ctx.pkt  # the view moved with data
    for i in range(ETH_HLEN):
        pkt[i] = pkt[i + IPIP_HLEN]
    o = ETH_HLEN
    pkt[o] = 0x45
    pkt[o + 1] = tos
    store_be16(pkt, o + 2, inner_len + IPIP_HLEN)
    store_be16(pkt, o + 4, 0)
    store_be16(pkt, o + 6, IP_DF)
    pkt[o + 8] = 64
    pkt[o + 9] = IPPROTO_IPIP
    store_be16(pkt, o + 10, 0)
    store_be32(pkt, o + 12, TUNNEL_SRC)
    store_be32(pkt, o + 16, TUNNEL_DST)
    ipv4_csum_set(pkt, o)
    return XDP_TX
