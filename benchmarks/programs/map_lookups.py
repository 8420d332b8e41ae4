"""Programs that do only map lookups, for per-lookup costs (make bench).

Each looks up 8 keys taken from the packet (so the compiler cannot hoist the
lookups out of the loop) in a map filled with every possible key, so every
lookup hits: (ns/pkt - harness) / 8 is the cost of one hit. ``fill(program)``
fills them. ``N`` keys (set DATAPLANE_BENCH_MAP_KEYS, default 4096: a table in
the core's L2; 65536 spills to L3 on a 2 MB L2).

The LPM_TRIE programs look up 8 addresses made from the packet's bytes (a
multiplicative mix, so they spread over the address space) in tries of
``LPM_N`` prefixes (DATAPLANE_BENCH_LPM_PREFIXES, default 10,000) made by
``lpm_prefixes`` (seeded, deterministic): "spread" tries hold prefixes all
over the space (IPv4 with BGP-like lengths, IPv6 in 2000::/3) under a
default route; "clustered" ones hold all of them inside 10.0.0.0/8 or
2001:db8::/32, and their lookups stay inside it (the case of an ACL of one
network's prefixes: every lookup lands in the same few buckets of the
index, so it binary-searches). Every lookup hits (a covering prefix is
stored).
"""

import os

import numpy as np

from dataplane import XDP_DROP, XDP_PASS, xdp
from dataplane.maps import (BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LPM_TRIE,
                            BPF_MAP_TYPE_LRU_HASH, LPM_V4, LPM_V6, Map, bpf_map_lookup_elem)

LOOKUPS = 8
N = int(os.environ.get("DATAPLANE_BENCH_MAP_KEYS", "4096"))
MASK = N - 1  # a power of two
hash_map = Map("hash_map", BPF_MAP_TYPE_HASH, key=np.uint32, value=np.uint64, max_entries=N)
lru_map = Map("lru_map", BPF_MAP_TYPE_LRU_HASH, key=np.uint32, value=np.uint64, max_entries=N)
array_map = Map("array_map", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=np.uint64, max_entries=N)
LPM_N = int(os.environ.get("DATAPLANE_BENCH_LPM_PREFIXES", "10000"))
lpm4 = Map("lpm4", BPF_MAP_TYPE_LPM_TRIE, key=LPM_V4, value=np.uint64, max_entries=LPM_N)
lpm4c = Map("lpm4c", BPF_MAP_TYPE_LPM_TRIE, key=LPM_V4, value=np.uint64, max_entries=LPM_N)
lpm6 = Map("lpm6", BPF_MAP_TYPE_LPM_TRIE, key=LPM_V6, value=np.uint64, max_entries=LPM_N)
lpm6c = Map("lpm6c", BPF_MAP_TYPE_LPM_TRIE, key=LPM_V6, value=np.uint64, max_entries=LPM_N)
MIX32 = 0x9E3779B1
MIX64 = 0x9E3779B97F4A7C15


def key_of(pkt, i):
    return ((pkt[20 + i] << 8) | pkt[21 + i]) & MASK


def index_lookups(pkt, m):
    """LOOKUPS hits in map ``m`` (a map reaches a function as an argument too)."""
    if len(pkt) < 30:
        return XDP_PASS
    hits = 0
    for i in range(LOOKUPS):
        v = bpf_map_lookup_elem(m, key_of(pkt, i))
        if v is not None:
            hits += v[0]
    return XDP_DROP if hits == 0 else XDP_PASS


@xdp
def hash_lookups(ctx):
    return index_lookups(ctx.pkt, hash_map)


@xdp
def lru_lookups(ctx):
    return index_lookups(ctx.pkt, lru_map)


@xdp
def array_lookups(ctx):
    return index_lookups(ctx.pkt, array_map)


def addr4_of(pkt, i):
    x = (pkt[20 + i] << 24) | (pkt[21 + i] << 16) | (pkt[22 + i] << 8) | pkt[23 + i]
    return ((x + i) * MIX32) & 0xFFFFFFFF


def addr6_of(pkt, i):
    x = np.uint64(addr4_of(pkt, i))
    return x * np.uint64(MIX64), (x + np.uint64(1)) * np.uint64(MIX64)


@xdp
def lpm4_lookups(ctx):
    pkt = ctx.pkt
    if len(pkt) < 40:
        return XDP_PASS
    hits = 0
    for i in range(LOOKUPS):
        v = bpf_map_lookup_elem(lpm4, addr4_of(pkt, i))
        if v is not None:
            hits += v[0]
    return XDP_DROP if hits == 0 else XDP_PASS


@xdp
def lpm4_clustered_lookups(ctx):
    pkt = ctx.pkt
    if len(pkt) < 40:
        return XDP_PASS
    hits = 0
    for i in range(LOOKUPS):
        v = bpf_map_lookup_elem(lpm4c, 0x0A000000 | (addr4_of(pkt, i) >> 8))
        if v is not None:
            hits += v[0]
    return XDP_DROP if hits == 0 else XDP_PASS


@xdp
def lpm6_lookups(ctx):
    pkt = ctx.pkt
    if len(pkt) < 40:
        return XDP_PASS
    hits = 0
    for i in range(LOOKUPS):
        hi, lo = addr6_of(pkt, i)
        v = bpf_map_lookup_elem(lpm6, ((hi >> np.uint64(3)) | np.uint64(1 << 61), lo))
        if v is not None:
            hits += v[0]
    return XDP_DROP if hits == 0 else XDP_PASS


@xdp
def lpm6_clustered_lookups(ctx):
    pkt = ctx.pkt
    if len(pkt) < 40:
        return XDP_PASS
    hits = 0
    for i in range(LOOKUPS):
        hi, lo = addr6_of(pkt, i)
        v = bpf_map_lookup_elem(lpm6c, ((hi >> np.uint64(32)) | np.uint64(0x20010DB800000000),
                                        lo))
        if v is not None:
            hits += v[0]
    return XDP_DROP if hits == 0 else XDP_PASS


def lpm_prefixes(width, clustered, n=None, seed=1):
    """``n`` distinct (prefixlen, address) prefixes, a covering one first."""
    import random
    rng = random.Random(seed * 1000 + width + clustered)
    n = LPM_N if n is None else n
    if width == 32:
        cover = (8, 0x0A000000) if clustered else (0, 0)
        lengths = ([16] * 5 + [20] * 10 + list(range(21, 25)) * 10 + [24] * 40 + [28, 30, 32]
                   if clustered else
                   [8] + list(range(12, 17)) * 2 + list(range(17, 24)) * 4 + [24] * 55
                   + list(range(25, 33)))
    else:
        cover = (32, 0x20010DB8 << 96) if clustered else (0, 0)
        lengths = ([36, 40, 44] + [48] * 40 + list(range(49, 64)) + [64] * 20 + [128] * 5
                   if clustered else
                   list(range(16, 32)) + list(range(32, 49)) * 4 + [48] * 20
                   + list(range(49, 65)) * 2 + [128] * 5)
    seen = {cover}
    out = [cover]
    while len(out) < n:
        plen = rng.choice(lengths)
        addr = rng.getrandbits(width)
        if clustered:
            addr = cover[1] | (addr >> cover[0])
        elif width == 128:
            addr = (1 << 125) | (addr >> 3)  # 2000::/3
        addr &= ((1 << plen) - 1) << (width - plen)
        if (plen, addr) not in seen:
            seen.add((plen, addr))
            out.append((plen, addr))
    return out


_LPM_LAYOUT = {"lpm4": (32, False), "lpm4c": (32, True), "lpm6": (128, False),
               "lpm6c": (128, True)}


def fill(program):
    """Give every possible key a value (so every lookup hits); LPM tries get
    their prefixes (once: the maps are shared by the file's programs)."""
    keys = np.arange(N, dtype=np.uint32)
    for name, m in program.maps.items():
        if name in _LPM_LAYOUT:
            if len(m) == 0:
                prefixes = lpm_prefixes(*_LPM_LAYOUT[name])
                m.update_batch(prefixes, np.ones(len(prefixes), np.uint64))
        else:
            m.update_batch(keys, np.ones(N, np.uint64))
