"""Drop by IPv4 / IPv6 source prefix and by TCP / UDP destination port.

The rule lists below are the firewall's configuration; edit them and re-run
(the compiled program is cached per version of this file).
"""

import ipaddress

from dataplane import XDP_DROP, XDP_PASS, xdp
from dataplane.parse import (ETH_P_IP, ETH_P_IPV6, load_be16, load_be32, parse_ethhdr,
                             parse_ip6hdr, parse_iphdr)

DENY_SOURCES = ["203.0.113.0/24", "198.51.100.0/25", "10.66.0.0/16",
                "2001:db8:bad::/48", "fd00:dead::/32"]
DENY_PORTS = (23, 3306, 6379)

IPPROTO_TCP = 6
IPPROTO_UDP = 17


def _words(net):
    """An IPv4 prefix as (network, mask); IPv6 as four (word, mask) pairs."""
    n = ipaddress.ip_network(net)
    addr, mask = int(n.network_address), int(n.netmask)
    if n.version == 4:
        return addr, mask
    return tuple(x for k in range(3, -1, -1)
                 for x in ((addr >> (32 * k)) & 0xFFFFFFFF, (mask >> (32 * k)) & 0xFFFFFFFF))


V4_RULES = tuple(_words(n) for n in DENY_SOURCES if ipaddress.ip_network(n).version == 4)
V6_RULES = tuple(_words(n) for n in DENY_SOURCES if ipaddress.ip_network(n).version == 6)


def v6_denied(pkt, src):
    for w0, m0, w1, m1, w2, m2, w3, m3 in V6_RULES:
        if (load_be32(pkt, src) & m0) == w0 and (load_be32(pkt, src + 4) & m1) == w1 \
                and (load_be32(pkt, src + 8) & m2) == w2 \
                and (load_be32(pkt, src + 12) & m3) == w3:
            return True
    return False


@xdp
def firewall(ctx):
    pkt = ctx.pkt
    proto, off = parse_ethhdr(pkt)
    if proto == ETH_P_IP:
        ipproto, l4 = parse_iphdr(pkt, off)
        if ipproto < 0:
            return XDP_PASS
        src = load_be32(pkt, off + 12)
        for net, mask in V4_RULES:
            if (src & mask) == net:
                return XDP_DROP
    elif proto == ETH_P_IPV6:
        ipproto, l4 = parse_ip6hdr(pkt, off)
        if ipproto < 0:
            return XDP_PASS
        if v6_denied(pkt, off + 8):
            return XDP_DROP
    else:
        return XDP_PASS
    if (ipproto == IPPROTO_TCP or ipproto == IPPROTO_UDP) and l4 >= 0 and len(pkt) >= l4 + 4:
        dport = load_be16(pkt, l4 + 2)
        for port in DENY_PORTS:
            if dport == port:
                return XDP_DROP
    return XDP_PASS
