"""Count packets and bytes per 5-tuple (TCP and UDP over IPv4 and IPv6, 802.1Q
and QinQ tags skipped) in the LRU_HASH map ``flows``; pass every packet.

IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d) in the same 128-bit
fields as IPv6 ones, so one key layout serves both; dumps print them as
dotted quads. ``dataplane replay -r X -p flow_counter --dump-maps -j`` lists
the flows.
"""

import numpy as np

from dataplane import XDP_PASS, xdp
from dataplane.maps import BPF_ANY, BPF_MAP_TYPE_LRU_HASH, Map, bpf_map_lookup_elem, \
    bpf_map_prefetch, bpf_map_update_elem
from dataplane.parse import ETH_P_IP, ETH_P_IPV6, load_be16, load_be32, parse_ethhdr, \
    parse_ip6hdr, parse_iphdr

FLOW_KEY = np.dtype([("saddr_hi", ">u8"), ("saddr_lo", ">u8"), ("daddr_hi", ">u8"),
                     ("daddr_lo", ">u8"), ("sport", ">u2"), ("dport", ">u2"), ("proto", "u1")])
FLOW_VALUE = np.dtype([("packets", "<u8"), ("bytes", "<u8")])

flows = Map("flows", BPF_MAP_TYPE_LRU_HASH, key=FLOW_KEY, value=FLOW_VALUE,
            max_entries=65536)

IPPROTO_TCP = 6
IPPROTO_UDP = 17
V4_MAPPED = 0xFFFF00000000


def load_be64(pkt, off):
    return (load_be32(pkt, off) << 32) | load_be32(pkt, off + 4)


def count(key, length):
    v = bpf_map_lookup_elem(flows, key)
    if v is not None:
        v.packets += 1
        v.bytes += length
    else:
        bpf_map_update_elem(flows, key, (1, length), BPF_ANY)


def flow_key(pkt):
    """(True, the packet's 5-tuple key), or (False, zeros) for a packet that
    is not TCP or UDP."""
    zero = np.uint64(0)
    proto, off = parse_ethhdr(pkt)
    if proto == ETH_P_IP:
        ipproto, l4 = parse_iphdr(pkt, off)
        if l4 >= 0 and (ipproto == IPPROTO_TCP or ipproto == IPPROTO_UDP) \
                and len(pkt) >= l4 + 4:
            return True, (zero, np.uint64(V4_MAPPED | load_be32(pkt, off + 12)), zero,
                          np.uint64(V4_MAPPED | load_be32(pkt, off + 16)),
                          np.uint64(load_be16(pkt, l4)), np.uint64(load_be16(pkt, l4 + 2)),
                          np.uint64(ipproto))
    elif proto == ETH_P_IPV6:
        ipproto, l4 = parse_ip6hdr(pkt, off)
        if l4 >= 0 and (ipproto == IPPROTO_TCP or ipproto == IPPROTO_UDP) \
                and len(pkt) >= l4 + 4:
            return True, (np.uint64(load_be64(pkt, off + 8)), np.uint64(load_be64(pkt, off + 16)),
                          np.uint64(load_be64(pkt, off + 24)),
                          np.uint64(load_be64(pkt, off + 32)), np.uint64(load_be16(pkt, l4)),
                          np.uint64(load_be16(pkt, l4 + 2)), np.uint64(ipproto))
    return False, (zero, zero, zero, zero, zero, zero, zero)


def flow_counter_prefetch(ctx):
    """The prefetch hook, run some packets ahead: start loading the flow's row
    (LRU_HASH: the key's slot and the next), which the lookup reads later."""
    ok, key = flow_key(ctx.pkt)
    if ok:
        bpf_map_prefetch(flows, key)
    return 0


@xdp(prefetch=flow_counter_prefetch)
def flow_counter(ctx):
    pkt = ctx.pkt
    ok, key = flow_key(pkt)
    if ok:
        count(key, len(pkt))
    return XDP_PASS
