"""Drop sources that send faster than a rate: a token bucket per source address.

``config`` (ARRAY, one entry) holds ``rate_pps`` (tokens per second) and
``burst`` (bucket size in packets); rate 0 passes everything. ``buckets``
(LRU_HASH by source address, IPv4 stored IPv4-mapped) holds each source's
tokens (in units of 1e-9 packet) and the time of its last packet. Every packet
spends one token; a source with less than one is dropped. Time comes from
bpf_ktime_get_ns: replay with ``--ktime capture`` to rate-limit by the
capture's own timestamps. Change the rate while it runs:
``program.maps["config"].update(0, (rate, burst))``.
"""

import numpy as np

from dataplane import XDP_DROP, XDP_PASS, bpf_ktime_get_ns, xdp
from dataplane.maps import (BPF_ANY, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_LRU_HASH, Map,
                            bpf_map_lookup_elem, bpf_map_update_elem)
from dataplane.parse import ETH_P_IP, ETH_P_IPV6, header_fits, load_be32, parse_ethhdr

CONFIG = np.dtype([("rate_pps", "<i8"), ("burst", "<i8")])
SOURCE = np.dtype([("saddr_hi", ">u8"), ("saddr_lo", ">u8")])
BUCKET = np.dtype([("tokens", "<i8"), ("last_ns", "<i8")])

config = Map("config", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=CONFIG, max_entries=1)
buckets = Map("buckets", BPF_MAP_TYPE_LRU_HASH, key=SOURCE, value=BUCKET, max_entries=65536)
config.update(0, (100, 10))  # default: 100 packets/s, bursts of 10

NS = 1_000_000_000
V4_MAPPED = 0xFFFF00000000


def load_be64(pkt, off):
    return (load_be32(pkt, off) << 32) | load_be32(pkt, off + 4)


def allow(key, rate, burst):
    """Spend a token of source ``key``; False when it has none."""
    cap = max(burst, 1) * NS
    now = bpf_ktime_get_ns()
    b = bpf_map_lookup_elem(buckets, key)
    if b is None:
        bpf_map_update_elem(buckets, key, (cap - NS, now), BPF_ANY)
        return True
    elapsed = min(max(now - b.last_ns, 0), cap // rate + 1)  # no overflow in * rate
    tokens = min(b.tokens + elapsed * rate, cap)
    b.last_ns = now
    if tokens >= NS:
        b.tokens = tokens - NS
        return True
    b.tokens = tokens
    return False


@xdp
def ddos_guard(ctx):
    c = bpf_map_lookup_elem(config, 0)
    if c is None or c.rate_pps <= 0:
        return XDP_PASS
    pkt = ctx.pkt
    proto, off = parse_ethhdr(pkt)
    if proto == ETH_P_IP and header_fits(pkt, off, 20):
        key = (0, V4_MAPPED | load_be32(pkt, off + 12))
    elif proto == ETH_P_IPV6 and header_fits(pkt, off, 40):
        key = (load_be64(pkt, off + 8), load_be64(pkt, off + 16))
    else:
        return XDP_PASS
    return XDP_PASS if allow(key, c.rate_pps, c.burst) else XDP_DROP
