"""Hash-table kernels of BPF_MAP_TYPE_HASH (PERCPU_HASH, LRU_PERCPU_HASH,
DEVMAP_HASH, HASH_OF_MAPS, and an LPM trie's prefixes): entries chained from
buckets. LRU_HASH probes its slots instead (kernels/lru_htab.py), which shares
the header, the key hash and the free stack of entry numbers.

Storage (views of one buffer, see maps.py), for ``n = max_entries`` entries:
``hdr`` int64[8] (count, free-stack top, CLOCK hand), ``buckets`` int32[nb]
(first entry of each chain, -1 empty; nb a power of two >= 4n), ``refs``
uint8[n] (LRU reference bits), ``free`` int32[n] (a stack of free entry
numbers), ``keys`` uint64[n, 1 + kw]: the entry's hash word, then its key as
8-byte words, zero-padded, in whole 64-byte lines. The hash word holds the
hash's low 32 bits and, in its high half, the entry's chain link (the next
entry in its bucket, -1 for none): a lookup that walks past a row finds the
next in the row it read, where a separate link array cost a third line a
lookup (l4lb on 100,000 flows: 68-73 -> 64-65 ns/pkt). HASH keeps the value
in the row after the key (maps.py), so that a hit reads one
line; other tables keep values apart, in the slot of the entry's number.
Keys are compared a word at a time (numba-notes.md: 6 ns a hit against 26 ns
for byte-by-byte compares).

Each hash map hashes its keys with a random seed of its own (``hdr[H_SEED]``,
drawn when the table is made, kept for its life), as the kernel's htab does with its
``hashrnd``: CRC32C alone is linear over GF(2), so anyone who can choose flows
(a connection table's keys) could craft thousands that share one bucket. The
seed enters each key word non-linearly (xor, then an odd multiply) before the
CRC; seed 0 is the plain CRC (LPM tries, whose prefixes the control plane
writes, and tables pinned before seeds existed).

Error codes are the kernel's: -ENOENT, -EEXIST, -E2BIG (a full map never drops
an update silently). An LRU map never fails for lack of room: it evicts an
entry not used lately. Like the kernel's (kernel/bpf/bpf_lru_list.c), the LRU
is approximate so that a hit stays cheap: a hit only sets the entry's
reference bit (the kernel's ``node->ref``), and a full map evicts by CLOCK:
the hand walks the entries in order, clearing set bits, and takes the first
entry whose bit is clear (not used since the hand last passed). Entries taken
in order and never deleted are evicted least recently used first; a doubly
linked list kept exact on every hit cost 55 ns a packet in flow_counter
(two more cache misses and a chain of dependent stores).
"""

import os
import platform
import sys

import numpy as np

from .. import config, native
from ..jit import kernel, lazy

spin_lock = lazy("dataplane.kernels.memory", "spin_lock")
spin_trylock = lazy("dataplane.kernels.memory", "spin_trylock")
spin_unlock = lazy("dataplane.kernels.memory", "spin_unlock")

ENOENT, EEXIST, E2BIG, EINVAL, EBUSY = 2, 17, 7, 22, 16
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
#: The update flag asking for the value's bpf_spin_lock (none of these values holds one).
BPF_F_LOCK = 4
H_COUNT, H_FREE_TOP, H_CLOCK = 0, 1, 2
#: The map's update lock (the kernel's per-bucket raw spinlocks, one per map
#: here): taken by every insert and delete, from a program's workers and from
#: the control plane (maybe another process: pinned maps are shared memory).
#: Lookups take no lock, as under RCU in the kernel.
H_LOCK = 3
#: The key hash's seed (hash maps only: an LPM trie's header uses slots 4-7).
H_SEED = 4
HDR_SIZE = 8
BUCKETS_PER_ENTRY = 4
_NIL = -1


crc32_u64 = lazy("dataplane.kernels.memory", "crc32_u64")

#: Byte offset in a row of its chain link, the high half of the hash word (the
#: prefetching loop reads it by address: kernels/runner.py).
LINK_OFFSET = 4 if sys.byteorder == "little" else 0
_HASH_BITS = np.uint64(0xFFFFFFFF)


@kernel(**config.INLINE_JIT)
def hash_word(h, link):
    """A row's first word: the hash's low half, and the chain link (-1: none)
    above it, written in one store so that a lookup never reads half of it."""
    return (h & _HASH_BITS) | (np.uint64(np.int64(link) & 0xFFFFFFFF) << np.uint64(32))


@kernel(**config.INLINE_JIT)
def link_of(keys, e):
    """The entry after ``e`` in its bucket's chain, -1 for none."""
    return np.int64(np.int32(keys[e, 0] >> np.uint64(32)))


@kernel(**config.INLINE_JIT)
def _set_link(keys, e, link):
    keys[e, 0] = hash_word(keys[e, 0], link)


#: x86-64 with SSE4.2, whose crc32 instruction key_hash uses.
HOST_CRC32C = platform.machine() == "x86_64" and \
    "sse4_2" in native.host_cpu().get("flags", "").split()


def new_seed():
    """A random non-zero seed for a hash map's key hash (os.urandom)."""
    return int.from_bytes(os.urandom(8), "little", signed=True) or 1


@kernel(**config.INLINE_JIT)
def table_seed(hdr):
    """The key-hash seed of a hash map from its header."""
    return np.uint64(hdr[H_SEED])


if HOST_CRC32C:
    @kernel(**config.INLINE_JIT)
    def _mix(word, seed):
        # xor then multiply by an odd number: not linear over GF(2) (the carries),
        # so CRC collisions cannot be planned without the seed; seed 0: the word
        return (np.uint64(word) ^ seed) * (seed | np.uint64(1))

    @kernel(**config.INLINE_JIT)
    def key_hash(key, seed):
        """Hash of a key's words: CRC32C (DPDK rte_hash's default) in two chains,
        even and odd words, each word one 3-cycle instruction after its seeded
        mix; the low half (the bucket) mixes both chains, the high half is the
        even chain. Unseeded, against the multiply-xorshift mix below: HASH hits
        5.9-6.2 -> 4.6-5.0 ns, LRU_HASH 7.1 -> 5.1-5.4 (benchmarks/map_lookups.py
        --keys 65536); the seed's mix costs flow_counter ~1.3 ns a packet."""
        seed = np.uint64(seed)
        a = np.uint64(0x9E3779B9)
        b = np.uint64(0x7F4A7C15)
        n = len(key)
        for i in range(0, n - 1, 2):
            a = crc32_u64(a, _mix(key[i], seed))
            b = crc32_u64(b, _mix(key[i + 1], seed))
        if n & 1:
            a = crc32_u64(a, _mix(key[n - 1], seed))
        return (a << np.uint64(32)) | (a ^ b)
else:
    @kernel(**config.INLINE_JIT)
    def key_hash(key, seed):
        """64-bit hash of a key's words (a multiply-xorshift mix from the seed)."""
        h = np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(seed)
        for i in range(len(key)):
            h = (h ^ np.uint64(key[i])) * np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(31)
        return h


@kernel(**config.INLINE_JIT)
def _same_key(keys, e, key):
    for i in range(len(key)):
        if keys[e, i + 1] != np.uint64(key[i]):
            return False
    return True


@kernel(**config.INLINE_JIT)
def htab_find(buckets, keys, key, h):
    """Entry number of ``key`` (hash ``h``), or -1."""
    e = np.int64(buckets[h & np.uint64(buckets.size - 1)])
    while e >= 0:
        if (keys[e, 0] & _HASH_BITS) == (h & _HASH_BITS) and _same_key(keys, e, key):
            return e
        e = link_of(keys, e)
    return np.int64(-1)


@kernel(**config.INLINE_JIT)
def htab_find_key(hdr, buckets, keys, key):
    """Entry number of ``key`` in a hash map, hashed with the map's own seed, or -1."""
    return htab_find(buckets, keys, key, key_hash(key, table_seed(hdr)))


@kernel(**config.INLINE_JIT)
def lru_touch(refs, e):
    """Mark entry ``e`` used (bpf_lru_node_set_ref: written only when clear, so
    a hot entry's line is not dirtied on every hit)."""
    if refs[e] == 0:
        refs[e] = 1


@kernel(**config.INLINE_JIT)
def _lru_victim(hdr, refs):
    """The entry CLOCK evicts (the map is full: every entry is in use)."""
    n = refs.size
    hand = hdr[H_CLOCK]
    while refs[hand]:  # at most one lap: the bits it passes are cleared
        refs[hand] = 0
        hand = hand + 1 if hand + 1 < n else 0
    hdr[H_CLOCK] = hand + 1 if hand + 1 < n else 0
    return hand


@kernel(**config.INLINE_JIT)
def _unchain(buckets, keys, e):
    b = keys[e, 0] & np.uint64(buckets.size - 1)
    p = np.int64(-1)
    c = np.int64(buckets[b])
    while c >= 0 and c != e:
        p = c
        c = link_of(keys, c)
    if c < 0:
        return
    if p < 0:
        buckets[b] = link_of(keys, e)
    else:
        _set_link(keys, p, link_of(keys, e))


@kernel(**config.INLINE_JIT)
def htab_delete(hdr, buckets, free, keys, key, seed):
    """Remove ``key``: 0, or -ENOENT."""
    h = key_hash(key, seed)
    e = htab_find(buckets, keys, key, h)
    if e < 0:
        return np.int64(-ENOENT)
    _release(hdr, buckets, free, keys, e)
    return np.int64(0)


@kernel(**config.INLINE_JIT)
def htab_delete_locked(hdr, buckets, free, keys, key, seed):
    """htab_delete under the map's lock (H_LOCK)."""
    spin_lock(hdr, H_LOCK)
    r = htab_delete(hdr, buckets, free, keys, key, seed)
    spin_unlock(hdr, H_LOCK)
    return r


@kernel(**config.INLINE_JIT)
def _release(hdr, buckets, free, keys, e):
    _unchain(buckets, keys, e)
    free[hdr[H_FREE_TOP]] = e
    hdr[H_FREE_TOP] += 1
    hdr[H_COUNT] -= 1


@kernel(**config.INLINE_JIT)
def htab_insert(hdr, buckets, refs, free, keys, key, flags, lru, seed):
    """Find or make the entry for ``key`` under BPF_ANY / BPF_NOEXIST / BPF_EXIST.

    Returns ``(entry, created)``; entry < 0 is the kernel's error: -EEXIST
    (NOEXIST on a present key), -ENOENT (EXIST on a missing key), -E2BIG (full
    non-LRU map), -EINVAL (unknown flags). A full LRU map evicts (CLOCK, above).
    The caller writes the value.
    """
    if flags > BPF_EXIST or flags < 0:
        return np.int64(-EINVAL), False
    h = key_hash(key, seed)
    e = htab_find(buckets, keys, key, h)
    if e >= 0:
        if flags == BPF_NOEXIST:
            return np.int64(-EEXIST), False
        if lru:
            lru_touch(refs, e)
        return e, False
    if flags == BPF_EXIST:
        return np.int64(-ENOENT), False
    if hdr[H_FREE_TOP] == 0:
        if not lru or free.size == 0:
            return np.int64(-E2BIG), False
        _release(hdr, buckets, free, keys, _lru_victim(hdr, refs))
    hdr[H_FREE_TOP] -= 1
    e = np.int64(free[hdr[H_FREE_TOP]])
    b = h & np.uint64(buckets.size - 1)
    keys[e, 0] = hash_word(h, buckets[b])
    for i in range(len(key)):
        keys[e, i + 1] = np.uint64(key[i])
    buckets[b] = e
    refs[e] = 0  # new: first in line for the hand until used
    hdr[H_COUNT] += 1
    return e, True


@kernel(**config.INLINE_JIT)
def array_update_error(i, n, flags):
    """Why an array map refuses an update of slot ``i`` of ``n`` (-errno), or 0,
    in the kernel's order (array_map_update_elem): unknown flags -EINVAL, past
    the end -E2BIG, BPF_NOEXIST -EEXIST (every slot exists), then BPF_F_LOCK
    -EINVAL (no value here holds a bpf_spin_lock). Programs and the control
    plane (Map.update, through py_func) alike."""
    if (flags & ~BPF_F_LOCK) > BPF_EXIST or flags < 0:
        return np.int64(-EINVAL)
    if i >= n:
        return np.int64(-E2BIG)
    if flags & BPF_NOEXIST:
        return np.int64(-EEXIST)
    if flags & BPF_F_LOCK:
        return np.int64(-EINVAL)
    return np.int64(0)


@kernel(**config.KERNEL_JIT)
def htab_reset(hdr, buckets, refs, free):
    """Empty the table (every entry free)."""
    hdr[H_COUNT] = 0
    hdr[H_CLOCK] = 0
    for i in range(buckets.size):
        buckets[i] = _NIL
    n = free.size
    for i in range(n):  # (a free entry's link is written when it is taken)
        refs[i] = 0
        free[i] = n - 1 - i  # entry 0 is taken first
    hdr[H_FREE_TOP] = n


@kernel(**config.KERNEL_JIT)
def htab_lookup_py(hdr, buckets, keys, key):
    """Control-plane lookup: the entry number or -1 (an LRU lookup does not
    mark the entry used: bpftool's lookups do not either)."""
    return htab_find_key(hdr, buckets, keys, key)


#: Tries of the control plane at a map's lock before it gives up (about a
#: second): a pinned map keeps its lock word, so a process killed while it
#: held it (SIGKILL mid-insert) leaves it held for good, and dataplane map /
#: lb would spin on it forever.
CONTROL_SPINS = 1 << 27


@kernel(**config.INLINE_JIT)
def control_lock(hdr):
    """Take the map's lock (H_LOCK) for the control plane: False after
    CONTROL_SPINS tries."""
    for _ in range(CONTROL_SPINS):
        if spin_trylock(hdr, H_LOCK):
            return True
    return False


@kernel(**config.KERNEL_JIT)
def htab_insert_py(hdr, buckets, refs, free, keys, key, flags, lru):
    """Control-plane insert: the entry number, or the kernel's negative error
    (-EBUSY: the lock stayed held)."""
    if not control_lock(hdr):
        return np.int64(-EBUSY)
    e, created = htab_insert(hdr, buckets, refs, free, keys, key, flags, lru,
                             table_seed(hdr))
    spin_unlock(hdr, H_LOCK)
    return e


@kernel(**config.KERNEL_JIT)
def htab_delete_py(hdr, buckets, free, keys, key):
    """Control-plane delete: 0, -ENOENT or -EBUSY (the lock stayed held)."""
    if not control_lock(hdr):
        return np.int64(-EBUSY)
    r = htab_delete(hdr, buckets, free, keys, key, table_seed(hdr))
    spin_unlock(hdr, H_LOCK)
    return r


#: check_free_stack's faults 1-4, in htab_check's and lru_check's results alike.
FREE_STACK_FAULTS = {1: "free-stack top out of range", 2: "entry count out of range",
                     3: "CLOCK hand out of range", 4: "free-stack entry out of range"}
#: What htab_check finds broken (its nonzero results).
CHECK_FAULTS = {**FREE_STACK_FAULTS,
                5: "an entry both free and in a chain, or free twice",
                6: "bucket or chain link out of range", 7: "an entry in the wrong bucket",
                8: "a chain that loops, or an entry in two chains",
                9: "count and free entries do not add up"}


@kernel(**config.INLINE_JIT)
def check_free_stack(hdr, free, seen):
    """htab_check's faults 1-5 (the header's count, free-stack top and CLOCK
    hand; the free stack's entries), for the chained and the LRU tables: marks
    each free entry 1 in ``seen`` (the others 0), or returns the fault."""
    n = free.size
    top = hdr[H_FREE_TOP]
    if top < 0 or top > n:
        return 1
    if hdr[H_COUNT] < 0 or hdr[H_COUNT] > n:
        return 2
    if hdr[H_CLOCK] < 0 or (n > 0 and hdr[H_CLOCK] >= n):
        return 3
    for i in range(n):
        seen[i] = 0
    for i in range(top):
        e = free[i]
        if e < 0 or e >= n:
            return 4
        if seen[e]:
            return 5
        seen[e] = 1
    return 0


@kernel(**config.KERNEL_JIT)
def htab_check(hdr, buckets, free, keys, seen):
    """0 when the table's links are sound, else the number of the first broken
    invariant (CHECK_FAULTS): a pinned file another process wrote is checked
    before the control plane follows its links, so that a corrupt one is an
    error, not a read out of bounds or a walk without end. ``seen`` is int8
    scratch of the entries' number."""
    n, top = free.size, hdr[H_FREE_TOP]
    fault = check_free_stack(hdr, free, seen)
    if fault:
        return fault
    mask = np.uint64(buckets.size - 1)
    for b in range(buckets.size):
        e = np.int64(buckets[b])
        while e != _NIL:
            if e < 0 or e >= n:
                return 6
            if seen[e]:
                return 5 if seen[e] == 1 else 8
            if keys[e, 0] & mask != np.uint64(b):
                return 7
            seen[e] = 2
            e = link_of(keys, e)
    chained = 0
    for i in range(n):
        chained += seen[i] == 2
    if chained != hdr[H_COUNT] or chained + top != n:
        return 9
    return 0


@kernel(**config.KERNEL_JIT)
def htab_entries(hdr, free, out):
    """Write the numbers of the used entries to ``out``; returns how many."""
    n = free.size
    used = np.int64(0)
    # an entry is used unless it is on the free stack: mark free ones in out first
    for i in range(n):
        out[i] = 1
    for i in range(hdr[H_FREE_TOP]):
        out[free[i]] = 0
    for i in range(n):
        if out[i]:
            out[used] = i
            used += 1
    return used
