"""Hash maps hash keys with a random seed of their own (kernels/htab.py), so
that flows chosen by a sender cannot be planned into one bucket.

Oracle: CRC32C is linear, so unseeded, every key (w, w ^ D) has the same bucket
(the low half of the hash is crc(w) ^ crc(w ^ D) = a constant); the chains are
read straight from the map's arrays."""

import numpy as np
import pytest

from dataplane.kernels import htab
from dataplane.maps import BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, Map

KEY = np.dtype([("a", "<u8"), ("b", "<u8")])
D = 0x0123456789ABCDEF
N = 2000


def _longest_chain(m):
    """The longest bucket chain; for an LRU map (open addressing, kernels/lru_htab.py)
    the longest run of used slots, which a lookup's walk may cross."""
    longest = 0
    if m.open_addressed:
        run = 0
        for word in m.keys[:, 0].tolist() * 2:  # (a run may wrap around the end)
            run = run + 1 if (word >> 32) not in (0, 0xFFFFFFFF) else 0
            longest = max(longest, run)
        return min(longest, len(m))
    for head in m.buckets:
        n, e = 0, int(head)
        while e >= 0:
            n, e = n + 1, int(m.chain[e])
        longest = max(longest, n)
    return longest


def _planned(m):
    """Insert N keys of the shape (w, w ^ D); check each is found again."""
    rng = np.random.default_rng(7)
    words = rng.integers(0, 2**63, N, dtype=np.uint64)
    for i, w in enumerate(words):
        m.update((int(w), int(w) ^ D), i)
    assert len(m) == N
    assert all(m.lookup((int(w), int(w) ^ D)) == i for i, w in enumerate(words))
    return _longest_chain(m)


@pytest.mark.skipif(not htab.HOST_CRC32C, reason="the CRC32C key hash (x86-64 with SSE4.2)")
@pytest.mark.parametrize("kind", [BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH])
def test_planned_keys_share_a_bucket_only_without_the_seed(kind):
    unseeded = Map("unseeded", kind, key=KEY, value=np.uint32, max_entries=4096)
    unseeded.hdr[htab.H_SEED] = 0  # as a table pinned before seeds existed
    assert _planned(unseeded) == N  # one chain of every key: a lookup walks them all
    seeded = Map("seeded", kind, key=KEY, value=np.uint32, max_entries=4096)
    # random: P(a chain of 9) < 1e-10 a bucket; P(a run of 32 used slots) ~ 1e-9 a
    # slot (2,000 keys in 8,192 slots)
    assert _planned(seeded) <= (32 if seeded.open_addressed else 8)


def test_each_table_has_its_own_seed_and_keeps_it():
    a = Map("a", BPF_MAP_TYPE_HASH, key=KEY, value=np.uint32, max_entries=64)
    b = Map("b", BPF_MAP_TYPE_HASH, key=KEY, value=np.uint32, max_entries=64)
    seed = int(a.hdr[htab.H_SEED])
    assert len({seed, int(b.hdr[htab.H_SEED])}) == 2 and seed != 0
    a.update((1, 2), 3)
    a.clear()  # emptied, same seed (a program may be inserting meanwhile)
    assert int(a.hdr[htab.H_SEED]) == seed and len(a) == 0
    a.update((1, 2), 4)
    assert a.lookup((1, 2)) == 4
    a.hdr[htab.H_SEED] = 0  # as a table pinned before seeds: given one when emptied
    a.clear()
    assert int(a.hdr[htab.H_SEED]) not in (0, seed)


def test_inner_maps_are_seeded():
    from dataplane.maps import BPF_MAP_TYPE_ARRAY_OF_MAPS, InnerMap
    outer = Map("outer", BPF_MAP_TYPE_ARRAY_OF_MAPS, key=np.uint32, max_entries=3,
                inner=InnerMap(BPF_MAP_TYPE_LRU_HASH, KEY, np.uint32, 64))
    seeds = [int(m.hdr[htab.H_SEED]) for m in outer.inner_maps]
    assert 0 not in seeds and len(set(seeds)) == 3
