"""Programs that do only map lookups, for per-lookup costs (make bench).

Each looks up 8 keys taken from the packet (so the compiler cannot hoist the
lookups out of the loop) in a map filled with every possible key, so every
lookup hits: (ns/pkt - harness) / 8 is the cost of one hit. ``fill(program)``
fills them. ``N`` keys (set DATAPLANE_BENCH_MAP_KEYS, default 4096: a table in
the core's L2; 65536 spills to L3 on a 2 MB L2).
"""

import os

import numpy as np

from dataplane import XDP_DROP, XDP_PASS, xdp
from dataplane.maps import (BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, Map,
                            bpf_map_lookup_elem)

LOOKUPS = 8
N = int(os.environ.get("DATAPLANE_BENCH_MAP_KEYS", "4096"))
MASK = N - 1  # a power of two
hash_map = Map("hash_map", BPF_MAP_TYPE_HASH, key=np.uint32, value=np.uint64, max_entries=N)
lru_map = Map("lru_map", BPF_MAP_TYPE_LRU_HASH, key=np.uint32, value=np.uint64, max_entries=N)
array_map = Map("array_map", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=np.uint64, max_entries=N)


def key_of(pkt, i):
    return ((pkt[20 + i] << 8) | pkt[21 + i]) & MASK


@xdp
def hash_lookups(ctx):
    pkt = ctx.pkt
    if len(pkt) < 30:
        return XDP_PASS
    hits = 0
    for i in range(LOOKUPS):
        v = bpf_map_lookup_elem(hash_map, key_of(pkt, i))
        if v is not None:
            hits += v[0]
    return XDP_DROP if hits == 0 else XDP_PASS


@xdp
def lru_lookups(ctx):
    pkt = ctx.pkt
    if len(pkt) < 30:
        return XDP_PASS
    hits = 0
    for i in range(LOOKUPS):
        v = bpf_map_lookup_elem(lru_map, key_of(pkt, i))
        if v is not None:
            hits += v[0]
    return XDP_DROP if hits == 0 else XDP_PASS


@xdp
def array_lookups(ctx):
    pkt = ctx.pkt
    if len(pkt) < 30:
        return XDP_PASS
    hits = 0
    for i in range(LOOKUPS):
        v = bpf_map_lookup_elem(array_map, key_of(pkt, i))
        if v is not None:
            hits += v[0]
    return XDP_DROP if hits == 0 else XDP_PASS


def fill(program):
    """Give every possible key a value (so every lookup hits)."""
    keys = np.arange(N, dtype=np.uint32)
    for m in program.maps.values():
        m.update_batch(keys, np.ones(N, np.uint64))
