"""Hash-table kernels of BPF_MAP_TYPE_HASH / LRU_HASH (and their per-CPU forms).

Storage (views of one buffer, see maps.py), for ``n = max_entries`` entries:
``hdr`` int64[8] (count, free-stack top, LRU head and tail), ``buckets``
int32[nb] (first entry of each chain, -1 empty; nb a power of two >= n),
``chain`` int32[n] (next entry in the chain), ``prev``/``next`` int32[n] (the
LRU list, most recent at the head), ``free`` int32[n] (a stack of free entry
numbers), ``keys`` uint64[n, 1 + kw]: the entry's hash, then its key as 8-byte
words, zero-padded (one cache line for the compare of keys up to 56 bytes).
Values live apart (maps.py); an entry's number is its value slot. Keys are
compared a word at a time (numba-notes.md: 6 ns a hit against 26 ns for
byte-by-byte compares).

Error codes are the kernel's: -ENOENT, -EEXIST, -E2BIG (a full map never drops
an update silently). An LRU map never fails for lack of room: it evicts the
least recently used entry, as BPF_MAP_TYPE_LRU_HASH does.
"""

import numpy as np

from .. import config
from ..jit import kernel

ENOENT, EEXIST, E2BIG, EINVAL = 2, 17, 7, 22
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
H_COUNT, H_FREE_TOP, H_LRU_HEAD, H_LRU_TAIL = 0, 1, 2, 3
HDR_SIZE = 8
_NIL = -1


@kernel(**config.INLINE_JIT)
def key_hash(key):
    """64-bit hash of a key's words (a multiply-xorshift mix; keys are words)."""
    h = np.uint64(0x9E3779B97F4A7C15)
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
def htab_find(buckets, chain, keys, key, h):
    """Entry number of ``key`` (hash ``h``), or -1."""
    e = buckets[h & np.uint64(buckets.size - 1)]
    while e >= 0:
        if keys[e, 0] == h and _same_key(keys, e, key):
            return np.int64(e)
        e = chain[e]
    return np.int64(-1)


@kernel(**config.INLINE_JIT)
def _lru_unlink(hdr, prev, nxt, e):
    p, n = prev[e], nxt[e]
    if p >= 0:
        nxt[p] = n
    else:
        hdr[H_LRU_HEAD] = n
    if n >= 0:
        prev[n] = p
    else:
        hdr[H_LRU_TAIL] = p


@kernel(**config.INLINE_JIT)
def _lru_push_head(hdr, prev, nxt, e):
    head = hdr[H_LRU_HEAD]
    prev[e] = _NIL
    nxt[e] = head
    if head >= 0:
        prev[head] = e
    else:
        hdr[H_LRU_TAIL] = e
    hdr[H_LRU_HEAD] = e


@kernel(**config.INLINE_JIT)
def lru_touch(hdr, prev, nxt, e):
    """Make entry ``e`` the most recently used."""
    if hdr[H_LRU_HEAD] != e:
        _lru_unlink(hdr, prev, nxt, e)
        _lru_push_head(hdr, prev, nxt, e)


@kernel(**config.INLINE_JIT)
def _unchain(buckets, chain, keys, e):
    b = keys[e, 0] & np.uint64(buckets.size - 1)
    p = np.int64(-1)
    c = np.int64(buckets[b])
    while c >= 0 and c != e:
        p = c
        c = chain[c]
    if c < 0:
        return
    if p < 0:
        buckets[b] = chain[e]
    else:
        chain[p] = chain[e]


@kernel(**config.INLINE_JIT)
def htab_delete(hdr, buckets, chain, prev, nxt, free, keys, key, lru):
    """Remove ``key``: 0, or -ENOENT."""
    h = key_hash(key)
    e = htab_find(buckets, chain, keys, key, h)
    if e < 0:
        return np.int64(-ENOENT)
    _release(hdr, buckets, chain, prev, nxt, free, keys, e, lru)
    return np.int64(0)


@kernel(**config.INLINE_JIT)
def _release(hdr, buckets, chain, prev, nxt, free, keys, e, lru):
    _unchain(buckets, chain, keys, e)
    if lru:
        _lru_unlink(hdr, prev, nxt, e)
    free[hdr[H_FREE_TOP]] = e
    hdr[H_FREE_TOP] += 1
    hdr[H_COUNT] -= 1


@kernel(**config.INLINE_JIT)
def htab_insert(hdr, buckets, chain, prev, nxt, free, keys, key, flags, lru):
    """Find or make the entry for ``key`` under BPF_ANY / BPF_NOEXIST / BPF_EXIST.

    Returns ``(entry, created)``; entry < 0 is the kernel's error: -EEXIST
    (NOEXIST on a present key), -ENOENT (EXIST on a missing key), -E2BIG (full
    non-LRU map), -EINVAL (unknown flags). A full LRU map evicts its least
    recently used entry. The caller writes the value.
    """
    if flags > BPF_EXIST or flags < 0:
        return np.int64(-EINVAL), False
    h = key_hash(key)
    e = htab_find(buckets, chain, keys, key, h)
    if e >= 0:
        if flags == BPF_NOEXIST:
            return np.int64(-EEXIST), False
        if lru:
            lru_touch(hdr, prev, nxt, e)
        return e, False
    if flags == BPF_EXIST:
        return np.int64(-ENOENT), False
    if hdr[H_FREE_TOP] == 0:
        if not lru or hdr[H_LRU_TAIL] < 0:
            return np.int64(-E2BIG), False
        _release(hdr, buckets, chain, prev, nxt, free, keys, hdr[H_LRU_TAIL], lru)
    hdr[H_FREE_TOP] -= 1
    e = np.int64(free[hdr[H_FREE_TOP]])
    keys[e, 0] = h
    for i in range(len(key)):
        keys[e, i + 1] = np.uint64(key[i])
    b = h & np.uint64(buckets.size - 1)
    chain[e] = buckets[b]
    buckets[b] = e
    if lru:
        _lru_push_head(hdr, prev, nxt, e)
    hdr[H_COUNT] += 1
    return e, True


@kernel(**config.KERNEL_JIT)
def htab_reset(hdr, buckets, chain, prev, nxt, free):
    """Empty the table (every entry free)."""
    hdr[H_COUNT] = 0
    hdr[H_LRU_HEAD] = _NIL
    hdr[H_LRU_TAIL] = _NIL
    for i in range(buckets.size):
        buckets[i] = _NIL
    n = free.size
    for i in range(n):
        chain[i] = _NIL
        prev[i] = _NIL
        nxt[i] = _NIL
        free[i] = n - 1 - i  # entry 0 is taken first
    hdr[H_FREE_TOP] = n


@kernel(**config.KERNEL_JIT)
def htab_lookup_py(buckets, chain, keys, key):
    """Control-plane lookup: the entry number or -1 (an LRU lookup does not
    refresh the entry: bpftool's lookups do not either)."""
    return htab_find(buckets, chain, keys, key, key_hash(key))


@kernel(**config.KERNEL_JIT)
def htab_insert_py(hdr, buckets, chain, prev, nxt, free, keys, key, flags, lru):
    """Control-plane insert: the entry number, or the kernel's negative error."""
    e, created = htab_insert(hdr, buckets, chain, prev, nxt, free, keys, key, flags, lru)
    return e


@kernel(**config.KERNEL_JIT)
def htab_delete_py(hdr, buckets, chain, prev, nxt, free, keys, key, lru):
    """Control-plane delete: 0 or -ENOENT."""
    return htab_delete(hdr, buckets, chain, prev, nxt, free, keys, key, lru)


@kernel(**config.KERNEL_JIT)
def htab_entries(hdr, prev, nxt, free, out):
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
