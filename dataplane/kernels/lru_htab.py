"""The open-addressed table of BPF_MAP_TYPE_LRU_HASH (the kernel's htab_lru_map_*).

Where kernels/htab.py chains entries from a bucket array (a lookup reads the
bucket's line, then the entry's row), an LRU hash map keeps its rows in the
slots themselves: a key's hash picks its slot, and a lookup reads that row's
one line, then the next rows while they hold other keys (linear probing). The
slots are twice the entries (at most half are used), so a hit reads at most
1.5 rows on average (Knuth's (1 + 1 / (1 - load)) / 2; l4lb's 100,000 flows
in 262,144 slots, 1.3). A prefetch hook fetches the very line the program
reads, where a chained table needed the bucket fetched, read, and its row
fetched in two more stages (kernels/runner.py's memo).

Storage (views of one buffer, see maps.py), ``n = max_entries`` entries in
``S`` slots (a power of two >= 2n, at least 8):

- ``hdr`` int64[8]: htab.py's H_COUNT, H_FREE_TOP, H_CLOCK, H_LOCK, H_SEED,
  then H_DELETED, the number of deleted slots, and H_REBUILDS;
- ``rows`` int32[n]: the slot of each entry number (the CLOCK's order);
- ``free`` int32[n]: a stack of free entry numbers;
- ``keys`` uint64[S, row words]: each slot's tag word, its key, its value.

A slot's tag word holds, from the low bits up: 24 bits of the key's hash
(compared before the key), the LRU reference byte (``node->ref``: a lookup sets
it in the line it read anyway), and in the high half the slot's state: 0 empty,
DELETED, else the entry number + 1. A lookup walks from the key's slot until
an empty one; a deleted slot keeps the walk going (a tombstone), and an insert
takes the first deleted or empty slot it passed. A delete whose next slot is
empty empties its slot and the tombstones just before it (no key's walk can
cross them); when tombstones pass a quarter of the slots, the table is
compacted in place (rebuild, below) so that a miss still ends soon.

Lookups take no lock (as under RCU in the kernel); every change holds H_LOCK.
A change never makes a concurrent lookup miss a key that stays in the map:
an insert writes the key before its tag word, a delete marks the slot a
tombstone, and the rebuild copies a row to an earlier slot of its walk before
it marks the old one deleted.

The LRU: as in htab.py, entries are numbered from a free stack, and a full map
evicts by CLOCK over the entry numbers (their order of insertion): the hand
clears reference bits and takes the first entry whose bit is clear.
"""

import sys

import numpy as np

from .. import config
from ..jit import kernel, lazy
from .htab import (BPF_EXIST, BPF_NOEXIST, E2BIG, EBUSY, EEXIST, EINVAL, ENOENT, H_CLOCK,
                   FREE_STACK_FAULTS, H_COUNT, H_FREE_TOP, H_LOCK, _same_key, check_free_stack,
                   control_lock, key_hash, table_seed)

spin_unlock = lazy("dataplane.kernels.memory", "spin_unlock")
as_pointer = lazy("dataplane.kernels.memory", "as_pointer")
byte_address = lazy("dataplane.kernels.memory", "byte_address")

#: The header's count of deleted slots (tombstones), and of rebuilds so far.
H_DELETED, H_REBUILDS = 5, 6
#: Slots an entry (at least): half the slots stay free, so a miss stops soon.
SLOTS_PER_ENTRY = 2
MIN_SLOTS = 8
_TAG = np.uint64(0xFFFFFF)
_TAG_SHIFT = np.uint64(40)  # the hash's top 24 bits: the slot is its low bits
_STATE_SHIFT = np.uint64(32)
_DELETED = np.uint64(0xFFFFFFFF)
_DELETED_WORD = _DELETED << _STATE_SHIFT
#: Byte offset in a slot's tag word of its reference byte.
REF_OFFSET = 3 if sys.byteorder == "little" else 4


def slots_for(n):
    """The number of slots of an LRU hash map of ``n`` entries."""
    return max(MIN_SLOTS, SLOTS_PER_ENTRY << max(0, (n - 1).bit_length()))


@kernel(**config.INLINE_JIT)
def tag_of(h):
    return (h >> _TAG_SHIFT) & _TAG


@kernel(**config.INLINE_JIT)
def state_of(word):
    """A tag word's state: 0 empty, _DELETED, else the entry number + 1."""
    return word >> _STATE_SHIFT


@kernel(**config.INLINE_JIT)
def is_used(word):
    s = state_of(word)
    return (s != 0) & (s != _DELETED)


@kernel(**config.INLINE_JIT)
def _ref(keys, s):
    """Slot ``s``'s reference byte, as a one-byte pointer."""
    return as_pointer(byte_address(keys, np.int64(s) * keys.strides[0] + REF_OFFSET), np.uint8)


@kernel(**config.INLINE_JIT)
def lru_touch(keys, s):
    """Mark slot ``s``'s entry used (bpf_lru_node_set_ref: written only when
    clear, so a hot entry's line is not dirtied on every hit)."""
    ref = _ref(keys, s)
    if ref[0] == 0:
        ref[0] = 1


@kernel(**config.INLINE_JIT)
def lru_find(keys, key, h):
    """Slot of ``key`` (hash ``h``), or -1: the walk from its slot to an empty one."""
    mask = np.uint64(keys.shape[0] - 1)
    tag = tag_of(h)
    s = h & mask
    for _ in range(keys.shape[0]):
        w = keys[s, 0]
        state = state_of(w)
        if state == 0:
            return np.int64(-1)
        if ((w & _TAG) == tag) & (state != _DELETED) and _same_key(keys, s, key):
            return np.int64(s)
        s = (s + np.uint64(1)) & mask
    return np.int64(-1)


@kernel(**config.INLINE_JIT)
def lru_find_key(hdr, keys, key):
    """Slot of ``key``, hashed with the map's own seed, or -1."""
    return lru_find(keys, key, key_hash(key, table_seed(hdr)))


@kernel(**config.INLINE_JIT)
def lru_find_hinted(hdr, keys, key, hint):
    """Slot of ``key`` or -1, the walk starting from the hash at address
    ``hint`` when the hint is this table's (words: the keys' address, a hash;
    0: none), as a prefetch hook leaves it (runner.memo_hint): the program's
    lookup then waits on no hash. The hint is only a start: a row whose whole
    key matched is the key's entry whatever hash led there, and a miss stands
    only once the key's own hash is the hint's (else the walk starts again
    from it), so a hint for another key or a stale one costs a walk, never an
    answer."""
    if hint != 0:
        words = as_pointer(hint, np.int64)
        if words[0] == byte_address(keys, 0):
            h = np.uint64(words[1])
            s = lru_find(keys, key, h)
            if s >= 0:
                return s
            own = key_hash(key, table_seed(hdr))
            if own == h:
                return np.int64(-1)
            return lru_find(keys, key, own)
    return lru_find_key(hdr, keys, key)


@kernel(**config.INLINE_JIT)
def _release(hdr, free, keys, s):
    """Delete the entry in slot ``s``: its number back on the free stack, the
    slot a tombstone, or empty with the tombstones before it when the next slot
    is empty."""
    mask = np.uint64(keys.shape[0] - 1)
    s = np.uint64(s)
    free[hdr[H_FREE_TOP]] = np.int64(state_of(keys[s, 0])) - 1
    hdr[H_FREE_TOP] += 1
    hdr[H_COUNT] -= 1
    if state_of(keys[(s + np.uint64(1)) & mask, 0]) != 0:
        keys[s, 0] = _DELETED_WORD
        hdr[H_DELETED] += 1
        return
    keys[s, 0] = 0
    t = (s - np.uint64(1)) & mask
    for _ in range(keys.shape[0]):
        if state_of(keys[t, 0]) != _DELETED:
            break
        keys[t, 0] = 0
        hdr[H_DELETED] -= 1
        t = (t - np.uint64(1)) & mask


@kernel(**config.INLINE_JIT)
def _victim(hdr, rows, keys):
    """The slot CLOCK evicts (the map is full: every entry number is in use)."""
    n = rows.size
    hand = hdr[H_CLOCK]
    for _ in range(2 * n):  # one lap clears every bit it passes: the second finds one
        ref = _ref(keys, rows[hand])
        if ref[0] == 0:
            break
        ref[0] = 0
        hand = hand + 1 if hand + 1 < n else 0
    hdr[H_CLOCK] = hand + 1 if hand + 1 < n else 0
    return np.int64(rows[hand])


@kernel(**config.INLINE_JIT)
def _row_hash(keys, s, kw, seed):
    return key_hash(keys[s, 1:1 + kw], seed)


@kernel(**config.INLINE_JIT)
def _move(hdr, rows, keys, s, t):
    """Copy slot ``s``'s row to free slot ``t`` (its tag word last), then mark
    ``s`` deleted."""
    if state_of(keys[t, 0]) == _DELETED:
        hdr[H_DELETED] -= 1
    for i in range(1, keys.shape[1]):
        keys[t, i] = keys[s, i]
    w = keys[s, 0]
    keys[t, 0] = w
    rows[np.int64(state_of(w)) - 1] = t
    keys[s, 0] = _DELETED_WORD
    hdr[H_DELETED] += 1


@kernel(**config.INLINE_JIT)
def rebuild(hdr, rows, keys, kw, seed, steps):
    """Compact the table in place: move each key to the first free slot of its
    walk, pass after pass until none moves; then no walk crosses a free slot
    and every tombstone can be emptied. Concurrent lookups still find every key
    (each row is copied before its old slot is marked). ``steps`` >= 0 stops
    after that many moves (tests/test_lru_htab.py looks up every key at each
    point); returns the moves made."""
    mask = np.uint64(keys.shape[0] - 1)
    moved, moves = True, 0
    while moved:
        moved = False
        for s in range(keys.shape[0]):
            if not is_used(keys[s, 0]):
                continue
            t = _row_hash(keys, s, kw, seed) & mask
            while t != np.uint64(s):
                if not is_used(keys[t, 0]):
                    if moves == steps:
                        return moves
                    _move(hdr, rows, keys, np.uint64(s), t)
                    moved, moves = True, moves + 1
                    break
                t = (t + np.uint64(1)) & mask
    for s in range(keys.shape[0]):
        if state_of(keys[s, 0]) == _DELETED:
            keys[s, 0] = 0
    hdr[H_DELETED] = 0
    hdr[H_REBUILDS] += 1
    return moves


@kernel(**config.INLINE_JIT)
def _compact(hdr, rows, keys, kw, seed):
    """Rebuild the table when tombstones pass a quarter of its slots (then a
    quarter at least is empty: a miss's walk stays short). Whether it did."""
    if hdr[H_DELETED] <= keys.shape[0] // 4:
        return False
    rebuild(hdr, rows, keys, kw, seed, -1)
    return True


@kernel(**config.INLINE_JIT)
def _first_free(keys, h):
    """The first slot on hash ``h``'s walk that holds no entry."""
    mask = np.uint64(keys.shape[0] - 1)
    s = h & mask
    for _ in range(keys.shape[0]):
        if not is_used(keys[s, 0]):
            break
        s = (s + np.uint64(1)) & mask
    return np.int64(s)


@kernel(**config.INLINE_JIT)
def lru_insert(hdr, rows, free, keys, key, flags, seed):
    """Find or make the slot of ``key`` under BPF_ANY / BPF_NOEXIST / BPF_EXIST.

    Returns ``(slot, created)``; slot < 0 is the kernel's error: -EEXIST
    (NOEXIST on a present key), -ENOENT (EXIST on a missing key), -EINVAL
    (unknown flags). A full map evicts by CLOCK. The caller writes the value.
    """
    if flags > BPF_EXIST or flags < 0:
        return np.int64(-EINVAL), False
    h = key_hash(key, seed)
    s = lru_find(keys, key, h)
    if s >= 0:
        if flags == BPF_NOEXIST:
            return np.int64(-EEXIST), False
        lru_touch(keys, s)
        return s, False
    if flags == BPF_EXIST:
        return np.int64(-ENOENT), False
    if hdr[H_FREE_TOP] == 0:
        if free.size == 0:
            return np.int64(-E2BIG), False
        _release(hdr, free, keys, _victim(hdr, rows, keys))
    take = _first_free(keys, h)  # (after an eviction: it may have freed a slot of the walk)
    hdr[H_FREE_TOP] -= 1
    e = np.int64(free[hdr[H_FREE_TOP]])
    if state_of(keys[take, 0]) == _DELETED:
        hdr[H_DELETED] -= 1
    for i in range(len(key)):
        keys[take, i + 1] = np.uint64(key[i])
    keys[take, 0] = tag_of(h) | (np.uint64(e + 1) << _STATE_SHIFT)  # last: the key is whole
    rows[e] = take
    hdr[H_COUNT] += 1
    if _compact(hdr, rows, keys, len(key), seed):
        take = np.int64(rows[e])  # (moved)
    return take, True


@kernel(**config.INLINE_JIT)
def lru_delete(hdr, rows, free, keys, key, seed):
    """Remove ``key``: 0, or -ENOENT."""
    s = lru_find(keys, key, key_hash(key, seed))
    if s < 0:
        return np.int64(-ENOENT)
    _release(hdr, free, keys, s)
    _compact(hdr, rows, keys, len(key), seed)
    return np.int64(0)


@kernel(**config.INLINE_JIT)
def lru_next(keys, cursor):
    """The first used slot after ``cursor`` (-1: from the start), or -1: the
    order of bpf_for_each_map_elem and get_next_key."""
    for s in range(cursor + 1, keys.shape[0]):
        if is_used(keys[s, 0]):
            return np.int64(s)
    return np.int64(-1)


@kernel(**config.KERNEL_JIT)
def lru_reset(hdr, free, keys):
    """Empty the table (every slot empty, every entry number free)."""
    hdr[H_COUNT] = 0
    hdr[H_CLOCK] = 0
    hdr[H_DELETED] = 0
    for s in range(keys.shape[0]):
        keys[s, 0] = 0
    n = free.size
    for i in range(n):
        free[i] = n - 1 - i  # entry 0 is taken first
    hdr[H_FREE_TOP] = n


@kernel(**config.KERNEL_JIT)
def lru_lookup_py(hdr, keys, key):
    """Control-plane lookup: the slot or -1 (not marked used: bpftool's lookups
    do not mark it either)."""
    return lru_find_key(hdr, keys, key)


@kernel(**config.KERNEL_JIT)
def lru_insert_py(hdr, rows, free, keys, key, flags):
    """Control-plane insert: the slot, or the kernel's negative error (-EBUSY:
    the lock stayed held, htab.CONTROL_SPINS)."""
    if not control_lock(hdr):
        return np.int64(-EBUSY)
    s, created = lru_insert(hdr, rows, free, keys, key, flags, table_seed(hdr))
    spin_unlock(hdr, H_LOCK)
    return s


@kernel(**config.KERNEL_JIT)
def lru_delete_py(hdr, rows, free, keys, key):
    """Control-plane delete: 0, -ENOENT or -EBUSY."""
    if not control_lock(hdr):
        return np.int64(-EBUSY)
    r = lru_delete(hdr, rows, free, keys, key, table_seed(hdr))
    spin_unlock(hdr, H_LOCK)
    return r


@kernel(**config.KERNEL_JIT)
def lru_rebuild_py(hdr, rows, keys, kw, steps):
    """rebuild from the control plane, under the map's lock: the moves made,
    or -EBUSY."""
    if not control_lock(hdr):
        return np.int64(-EBUSY)
    moves = rebuild(hdr, rows, keys, kw, table_seed(hdr), steps)
    spin_unlock(hdr, H_LOCK)
    return np.int64(moves)


@kernel(**config.KERNEL_JIT)
def lru_entries(keys, out):
    """Write the used slots, in order, to ``out``; returns how many."""
    used = np.int64(0)
    for s in range(keys.shape[0]):
        if is_used(keys[s, 0]):
            out[used] = s
            used += 1
    return used


#: What lru_check finds broken (its nonzero results).
CHECK_FAULTS = {**FREE_STACK_FAULTS,
                5: "an entry both free and in a slot, or in two slots",
                6: "a slot's entry number out of range",
                7: "an entry's slot out of range, or not the slot that holds it",
                8: "a key its lookups cannot reach", 9: "count and free entries do not add up",
                10: "the count of deleted slots is wrong"}


@kernel(**config.KERNEL_JIT)
def lru_check(hdr, rows, free, keys, kw, seen):
    """0 when the table is sound, else the number of the first broken
    invariant (CHECK_FAULTS): a pinned file another process wrote is checked
    before the control plane follows its entry numbers. ``seen`` is int8
    scratch of the entries' number."""
    n, top, nslots = free.size, hdr[H_FREE_TOP], keys.shape[0]
    mask = np.uint64(nslots - 1)
    fault = check_free_stack(hdr, free, seen)
    if fault:
        return fault
    used, deleted = 0, 0
    seed = table_seed(hdr)
    for s in range(nslots):
        state = state_of(keys[s, 0])
        if state == 0:
            continue
        if state == _DELETED:
            deleted += 1
            continue
        e = np.int64(state) - 1
        if e >= n:
            return 6
        if seen[e]:
            return 5
        seen[e] = 2
        if rows[e] != s:
            return 7
        used += 1
        t = _row_hash(keys, s, kw, seed) & mask
        while t != np.uint64(s):  # the walk from the key's slot meets no empty one
            if state_of(keys[t, 0]) == 0:
                return 8
            t = (t + np.uint64(1)) & mask
    if used != hdr[H_COUNT] or used + top != n:
        return 9
    if deleted != hdr[H_DELETED]:
        return 10
    return 0
