"""Longest-prefix-match kernels of BPF_MAP_TYPE_LPM_TRIE (maps.py has the API).

An LPM map keeps two structures, all views of the map's one buffer:

- the exact prefixes, in a hash table (kernels/htab.py: ``hdr``, ``buckets``,
  ``refs``, ``free``, ``keys``) keyed by the words
  ``(prefixlen, hi, lo)``; an entry's number is its value slot, as in hash maps.
  Exact-prefix update (BPF_ANY / NOEXIST / EXIST), delete and dumps use it.
- the longest match, as a sorted **range table**: the prefixes cut the address
  space into intervals on which the longest matching prefix is constant.
  ``bhi`` / ``blo`` (uint64[2 * max_entries + 1]) hold the first address of
  each interval, sorted, and ``rval`` (int32) the entry of its longest prefix
  (-1: none); ``hdr[H_BOUNDS]`` is how many there are (the first is always
  address 0). Only points where the match changes are kept, so n prefixes
  make at most 2n + 1 intervals.

Addresses are left-aligned: a key of W bits (W = 8 * data bytes, up to 128)
is a 128-bit number ``(hi, lo)`` whose first W bits are the data in network
order (W <= 64: ``lo`` is 0 and lookups read only ``bhi``).

Finding an address's interval (lpm_find1 / lpm_find2):

1. ``index`` (int32[2**ibits + 1], ibits <= 16) is a direct table on the
   address's first bits: ``index[b]`` is the interval holding bucket b's
   first address, so the answer lies in ``index[b] .. index[b + 1]``.
2. A bucket with more than HEAVY boundaries has an index node (``rchild[b]``;
   nodes come from a fixed pool, ``nhdr`` / ``nent``). A node covers the
   region of the common prefix of its bucket's boundaries (path compression:
   10,000 prefixes inside 2001:db8::/32 skip straight to bit 32) and splits
   it on the next 8 bits into 256 sub-buckets, each with its first interval
   (relative to the bucket's, so an insertion touches only the nodes on its
   path) and, when heavy itself, a node of its own. An address outside the
   region gets the bucket's first or last interval at once.
3. A binary search (branch-free) among the few boundaries left.

Lookups cost 2 to 3 loads per level, typically one or two levels: 8 to 18 ns
with 10,000 prefixes on the project's 2-vCPU VM (benchmarks/map_lookups.py).

Insert (after the hash table made a new entry): make sure intervals start at
the prefix's first address and just after its last one (splitting the
intervals holding them: a shift of the tail of the table, +1 on the index
entries of later buckets and on the relative entries of the nodes on the
path; a (sub)bucket that became heavy gets a node), then relabel the
intervals between them whose prefix is shorter (or none). Delete: relabel
the prefix's intervals to its parent (the longest shorter stored prefix
covering it, found by hash probes of the shorter lengths) and drop its two
boundaries where the match no longer changes. Both are O(intervals +
2**ibits): tens of microseconds at 10,000 prefixes, from programs and Python
alike. When the node pool is spent a rebuild reclaims the nodes nobody needs
any more (at most once per max(64, n / 4) boundary changes); buckets still
left without a node binary-search, so lookups stay exact in every case.

Error codes are the kernel's: -EINVAL (flags, prefixlen above W), -EEXIST,
-ENOENT, -ENOSPC (full).
"""

import numpy as np

from .. import config
from ..jit import kernel
from . import htab
from .htab import (EBUSY, H_LOCK, control_lock, htab_delete, htab_find, htab_insert, key_hash,
                   spin_lock, spin_unlock)

ENOENT, EEXIST, E2BIG, EINVAL = htab.ENOENT, htab.EEXIST, htab.E2BIG, htab.EINVAL
ENOSPC = 28
BPF_ANY, BPF_NOEXIST, BPF_EXIST = htab.BPF_ANY, htab.BPF_NOEXIST, htab.BPF_EXIST
#: hdr slots after the hash table's: interval boundaries, index nodes in use,
#: boundary changes so far and at the last rebuild of the nodes.
H_BOUNDS, H_NODES, H_CHANGES, H_REBUILT = 4, 5, 6, 7
#: The prefix table's key-hash seed: none (the header's slots are the trie's;
#: the control plane, not traffic, chooses prefixes, so none can be planned).
PREFIX_SEED = np.uint64(0)
#: Columns of ``nhdr``: the node's region (first and last address) and window.
N_START_HI, N_START_LO, N_END_HI, N_END_LO, N_POS, N_FIXED = 0, 1, 2, 3, 4, 5
#: A (sub)bucket with more boundaries than this gets an index node.
HEAVY = 16
#: Words of the exact-prefix hash key: (prefixlen, hi, lo).
KEY_WORDS = 3
#: Words of an entry's row (hash word, then the key words) past the key: the
#: key's address as given (RAW_HI, RAW_LO), and RAW_SET = 1 once they are (a
#: map pinned before they were kept has 0 there: its dump gives the prefix).
RAW_HI, RAW_LO, RAW_SET = 1 + KEY_WORDS, 2 + KEY_WORDS, 3 + KEY_WORDS
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


def index_bits(max_entries, width):
    """Bits of the direct index: about 4 buckets per boundary, 1 to 16 bits."""
    bits = max(1, (2 * int(max_entries) + 1).bit_length() + 2)
    return min(16, int(width), bits)


def node_pool(max_entries):
    """Index nodes of a map (2 KiB each): one per 2 * HEAVY boundaries. A node is
    made only for a (sub)bucket of more than HEAVY boundaries (10,000 prefixes
    in one /8 or /32 take ~130 of the 625); when the pool is spent, the
    buckets left without one binary-search (still exact, slower)."""
    return max(4, (2 * int(max_entries) + 1) // (2 * HEAVY))


@kernel(**config.INLINE_JIT)
def mask128(hi, lo, plen):
    """(hi, lo) with every bit after the first ``plen`` cleared (plen 0..128)."""
    hi = np.uint64(hi)
    lo = np.uint64(lo)
    if plen <= 0:
        return np.uint64(0), np.uint64(0)
    if plen <= 64:
        return hi & (_ALL << np.uint64(64 - plen)), np.uint64(0)
    if plen < 128:
        return hi, lo & (_ALL << np.uint64(128 - plen))
    return hi, lo


@kernel(**config.INLINE_JIT)
def span_end(hi, lo, plen):
    """The first address after the prefix (hi, lo)/plen: (hi, lo, wrapped)."""
    if plen <= 0:
        return np.uint64(0), np.uint64(0), True
    if plen <= 64:
        h = hi + (np.uint64(1) << np.uint64(64 - plen))
        return h, np.uint64(0), h < hi
    l2 = lo + (np.uint64(1) << np.uint64(128 - min(plen, 128)))
    carry = l2 < lo
    h = hi + np.uint64(1) if carry else hi
    return h, l2, carry and h == np.uint64(0)


@kernel(**config.INLINE_JIT)
def _clz64(x):
    if x == np.uint64(0):
        return np.int64(64)
    n = np.int64(0)
    for step in (32, 16, 8, 4, 2, 1):
        if (x >> np.uint64(64 - step)) == np.uint64(0):
            n += step
            x <<= np.uint64(step)
    return n


@kernel(**config.INLINE_JIT)
def _window(hi, lo, pos):
    """The 8 address bits at [pos, pos + 8) of (hi, lo) (pos <= 120)."""
    if pos <= np.uint64(56):
        return (hi >> (np.uint64(56) - pos)) & np.uint64(0xFF)
    if pos >= np.uint64(64):
        return (lo >> (np.uint64(120) - pos)) & np.uint64(0xFF)
    return ((hi << (pos - np.uint64(56))) | (lo >> (np.uint64(120) - pos))) & np.uint64(0xFF)


@kernel(**config.INLINE_JIT)
def _search(bhi, blo, i, j, hi, lo):
    """Last boundary in [i, j] at or before (hi, lo) (boundary i must be)."""
    one = np.uint64(1)
    i = np.uint64(i)
    n = np.uint64(j) - i + one
    while n > one:  # branch-free: the compare's outcome is data, not a jump
        half = n >> one
        m = i + half
        h = bhi[m]
        i += half * np.uint64((h < hi) | ((h == hi) & (blo[m] <= lo)))
        n -= half
    return i


@kernel(**config.INLINE_JIT)
def lpm_find1(index, rchild, nhdr, nent, bhi, hi, shift):
    """Interval of the left-aligned address ``hi`` in a table of one-word (W <= 64)
    addresses: the index, the nodes under it, then a binary search."""
    one = np.uint64(1)
    b = hi >> shift
    i = np.uint64(index[b])
    j = np.uint64(index[b + one])
    k = np.int64(rchild[b])
    while k >= 0:
        if hi < nhdr[k, N_START_HI]:
            j = i
            break
        if hi > nhdr[k, N_END_HI]:
            i += np.uint64(nent[k, 512])
            j = i
            break
        t = _window(hi, np.uint64(0), nhdr[k, N_POS]) << one
        base = i
        i = base + np.uint64(nent[k, t])
        j = base + np.uint64(nent[k, t + np.uint64(2)])
        k = np.int64(nent[k, t + one])
    n = j - i + one
    while n > one:  # branch-free: the compare's outcome is data, not a jump
        half = n >> one
        i += half * np.uint64(bhi[i + half] <= hi)
        n -= half
    return i


@kernel(**config.INLINE_JIT)
def lpm_find2(index, rchild, nhdr, nent, bhi, blo, hi, lo, shift):
    """Interval of the 128-bit left-aligned address (hi, lo)."""
    one = np.uint64(1)
    b = hi >> shift
    i = np.uint64(index[b])
    j = np.uint64(index[b + one])
    k = np.int64(rchild[b])
    while k >= 0:
        sh = nhdr[k, N_START_HI]
        if hi < sh or (hi == sh and lo < nhdr[k, N_START_LO]):
            j = i
            break
        eh = nhdr[k, N_END_HI]
        if hi > eh or (hi == eh and lo > nhdr[k, N_END_LO]):
            i += np.uint64(nent[k, 512])
            j = i
            break
        t = _window(hi, lo, nhdr[k, N_POS]) << one
        base = i
        i = base + np.uint64(nent[k, t])
        j = base + np.uint64(nent[k, t + np.uint64(2)])
        k = np.int64(nent[k, t + one])
    return _search(bhi, blo, i, j, hi, lo)


# ---------------------------------------------------------------- index nodes

@kernel(**config.INLINE_JIT)
def _sub_start(shi, slo, pos, t):
    """First address of sub-bucket ``t`` of a node whose window starts at ``pos``."""
    t = np.uint64(t)
    pos = np.uint64(pos)
    if pos <= np.uint64(56):
        return shi | (t << (np.uint64(56) - pos)), slo
    if pos >= np.uint64(64):
        return shi, slo | (t << (np.uint64(120) - pos))
    return shi | (t >> (pos - np.uint64(56))), slo | (t << (np.uint64(120) - pos))


@kernel(**config.INLINE_JIT)
def _region_end(shi, slo, bits):
    """Last address of the region of (shi, slo)'s first ``bits`` bits (0..128)."""
    if bits < 64:
        return shi | (_ALL >> np.uint64(bits)), _ALL
    if bits < 128:
        return shi, slo | (_ALL >> np.uint64(bits - 64))
    return shi, slo


@kernel(**config.INLINE_JIT)
def _new_node(hdr, nhdr, nent, bhi, blo, base, cand, bs_hi, bs_lo, fixed, width):
    """A node for the (sub)bucket of the ``fixed``-bit prefix (bs_hi, bs_lo), whose
    first interval is ``base`` and whose boundaries are among base + 1 .. cand.
    Its window is the 8 bits after the common prefix of those boundaries.
    Returns the node, or -1 (pool spent, no boundary, or no bits left)."""
    k = hdr[H_NODES]
    if k >= nhdr.shape[0]:
        return np.int64(-1)
    nb = hdr[H_BOUNDS]
    cand = min(cand, nb - 1)
    eh, el = _region_end(bs_hi, bs_lo, fixed)
    last = np.int64(_search(bhi, blo, np.uint64(base), np.uint64(cand), eh, el))
    if last <= base:
        return np.int64(-1)
    fh, fl = bhi[base + 1], blo[base + 1]
    xh = fh ^ bhi[last]
    cp = _clz64(xh) if xh != np.uint64(0) else 64 + _clz64(fl ^ blo[last])
    pos = min(cp, np.int64(width) - 8)
    if pos < fixed:
        return np.int64(-1)
    hdr[H_NODES] = k + 1
    sh, sl = mask128(fh, fl, pos)
    eh, el = _region_end(sh, sl, pos)
    nhdr[k, N_START_HI] = sh
    nhdr[k, N_START_LO] = sl
    nhdr[k, N_END_HI] = eh
    nhdr[k, N_END_LO] = el
    nhdr[k, N_POS] = pos
    nhdr[k, N_FIXED] = pos + 8
    upos = np.uint64(pos)
    for t in range(256):
        h, l2 = _sub_start(sh, sl, upos, t)
        nent[k, 2 * t] = np.int64(_search(bhi, blo, np.uint64(base), np.uint64(last), h,
                                          l2)) - base
        nent[k, 2 * t + 1] = -1
    nent[k, 512] = last - base
    nent[k, 513] = 0
    return k


@kernel(**config.INLINE_JIT)
def _grow_nodes(hdr, nhdr, nent, bhi, blo, first, width):
    """Give the heavy sub-buckets of nodes ``first``.. (just made) nodes of their own."""
    q = first
    while q < hdr[H_NODES]:
        pos = nhdr[q, N_POS]
        for t in range(256):
            if nent[q, 2 * t + 1] < 0 and nent[q, 2 * t + 2] - nent[q, 2 * t] > HEAVY:
                h, l2 = _sub_start(nhdr[q, N_START_HI], nhdr[q, N_START_LO], pos, t)
                base = np.int64(_search(bhi, blo, np.uint64(0), np.uint64(hdr[H_BOUNDS] - 1),
                                        h, l2))
                c = _new_node(hdr, nhdr, nent, bhi, blo, base,
                              base + nent[q, 2 * t + 2] - nent[q, 2 * t], h, l2,
                              np.int64(nhdr[q, N_FIXED]), width)
                if c >= 0:
                    nent[q, 2 * t + 1] = c
                elif hdr[H_NODES] >= nhdr.shape[0]:
                    return
        q += 1


@kernel(**config.INLINE_JIT)
def lpm_rebuild_nodes(hdr, index, rchild, nhdr, nent, bhi, blo, width, shift):
    """Drop every node and make them again for the heavy buckets (pool allowing)."""
    hdr[H_NODES] = 0
    hdr[H_REBUILT] = hdr[H_CHANGES]
    nroot = rchild.size
    for b in range(nroot):
        rchild[b] = -1
    fixed = np.int64(64) - np.int64(shift)
    for b in range(nroot):
        if index[b + 1] - index[b] > HEAVY:
            first = hdr[H_NODES]
            k = _new_node(hdr, nhdr, nent, bhi, blo, np.int64(index[b]),
                          np.int64(index[b + 1]), np.uint64(b) << shift, np.uint64(0),
                          fixed, width)
            if k >= 0:
                rchild[b] = k
                _grow_nodes(hdr, nhdr, nent, bhi, blo, first, width)
            if hdr[H_NODES] >= nhdr.shape[0]:
                return


@kernel(**config.INLINE_JIT)
def _nodes_follow(hdr, index, rchild, nhdr, nent, bhi, blo, hi, lo, shift, delta, width):
    """Boundary (hi, lo) was added (delta 1) or removed (-1), the root index
    already shifted: fix the relative entries of the nodes on its path. A node
    whose region no longer holds its bucket's boundaries is dropped. After an
    addition, the (sub)bucket holding it gets a node if it became heavy (when
    the pool is spent: every node is rebuilt, at most once per max(64, n / 4)
    boundary changes)."""
    hdr[H_CHANGES] += 1
    b = hi >> shift
    low = (np.uint64(1) << shift) - np.uint64(1)
    if (hi & low) == np.uint64(0) and lo == np.uint64(0):
        return  # at the bucket's start: the whole bucket moved by one
    k = np.int64(rchild[b])
    pk = np.int64(-1)   # the slot pointing to k: rchild[b], or nent[pk, pt]
    pt = np.int64(0)
    fixed = np.int64(64) - np.int64(shift)
    bs_hi, bs_lo = b << shift, np.uint64(0)
    base = np.int64(index[b])
    span = np.int64(index[b + np.uint64(1)]) - base
    while k >= 0:
        sh, sl = nhdr[k, N_START_HI], nhdr[k, N_START_LO]
        eh, el = nhdr[k, N_END_HI], nhdr[k, N_END_LO]
        if hi < sh or (hi == sh and lo < sl) or hi > eh or (hi == eh and lo > el):
            if pk < 0:
                rchild[b] = -1
            else:
                nent[pk, pt] = -1
            break
        pos = nhdr[k, N_POS]
        t = np.int64(_window(hi, lo, pos))
        h, l2 = _sub_start(sh, sl, pos, t)
        at_start = h == hi and l2 == lo
        for u in range(t if at_start else t + 1, 256):
            nent[k, 2 * u] += delta
        nent[k, 512] += delta
        if at_start:
            return
        fixed = np.int64(nhdr[k, N_FIXED])
        bs_hi, bs_lo = h, l2
        base += nent[k, 2 * t]
        span = np.int64(nent[k, 2 * t + 2] - nent[k, 2 * t])
        pk, pt = k, 2 * t + 1
        k = np.int64(nent[k, 2 * t + 1])
    if delta < 0 or span <= HEAVY:
        return
    first = hdr[H_NODES]
    c = _new_node(hdr, nhdr, nent, bhi, blo, base, base + span, bs_hi, bs_lo, fixed, width)
    if c >= 0:
        if pk < 0:
            rchild[b] = c
        else:
            nent[pk, pt] = c
        _grow_nodes(hdr, nhdr, nent, bhi, blo, first, width)
    elif hdr[H_NODES] >= nhdr.shape[0] and \
            hdr[H_CHANGES] - hdr[H_REBUILT] >= max(64, hdr[H_BOUNDS] // 4):
        lpm_rebuild_nodes(hdr, index, rchild, nhdr, nent, bhi, blo, width, shift)


# ---------------------------------------------------------------- boundaries

@kernel(**config.INLINE_JIT)
def _shift_index(index, hi, lo, shift, delta):
    """Add ``delta`` to the index of every bucket whose first address is >= (hi, lo)."""
    b = np.int64(hi >> shift)
    if (hi & ((np.uint64(1) << shift) - np.uint64(1))) != np.uint64(0) or lo != np.uint64(0):
        b += 1
    for t in range(b, index.size):
        index[t] += delta


@kernel(**config.INLINE_JIT)
def _add_bound(hdr, index, rchild, nhdr, nent, bhi, blo, rval, hi, lo, shift, width):
    """Position of the boundary at (hi, lo), made (splitting its interval) if missing."""
    k = np.int64(lpm_find2(index, rchild, nhdr, nent, bhi, blo, hi, lo, shift))
    if bhi[k] == hi and blo[k] == lo:
        return k
    n = hdr[H_BOUNDS]
    j = n
    while j > k + 1:
        bhi[j] = bhi[j - 1]
        blo[j] = blo[j - 1]
        rval[j] = rval[j - 1]
        j -= 1
    bhi[k + 1] = hi
    blo[k + 1] = lo
    rval[k + 1] = rval[k]
    hdr[H_BOUNDS] = n + 1
    _shift_index(index, hi, lo, shift, np.int64(1))
    _nodes_follow(hdr, index, rchild, nhdr, nent, bhi, blo, hi, lo, shift, np.int64(1), width)
    return k + 1


@kernel(**config.INLINE_JIT)
def _remove_bound(hdr, index, rchild, nhdr, nent, bhi, blo, rval, k, shift, width):
    """Remove boundary ``k`` (its interval joins the one before)."""
    hi = bhi[k]
    lo = blo[k]
    n = hdr[H_BOUNDS]
    for j in range(k, n - 1):
        bhi[j] = bhi[j + 1]
        blo[j] = blo[j + 1]
        rval[j] = rval[j + 1]
    hdr[H_BOUNDS] = n - 1
    _shift_index(index, hi, lo, shift, np.int64(-1))
    _nodes_follow(hdr, index, rchild, nhdr, nent, bhi, blo, hi, lo, shift, np.int64(-1),
                  width)


# ---------------------------------------------------------------- map operations

@kernel(**config.INLINE_JIT)
def _exact(buckets, keys, plen, hi, lo):
    """Entry of the stored prefix (hi, lo)/plen (already masked), or -1."""
    key = (np.uint64(plen), hi, lo)
    return htab_find(buckets, keys, key, key_hash(key, PREFIX_SEED))


@kernel(**config.INLINE_JIT)
def lpm_lookup(buckets, keys, index, rchild, nhdr, nent, bhi, blo, rval, plen, hi, lo,
               width, shift):
    """Entry of the longest stored prefix of length <= ``plen`` matching (hi, lo)'s
    first bits (the kernel's lookup of a key with that prefixlen), or -1."""
    if plen < 0 or plen > width:
        return np.int64(-1)
    hi, lo = mask128(hi, lo, plen)
    if plen == width:
        return np.int64(rval[lpm_find2(index, rchild, nhdr, nent, bhi, blo, hi, lo, shift)])
    length = np.int64(plen)
    while length >= 0:
        h, l2 = mask128(hi, lo, length)
        e = _exact(buckets, keys, length, h, l2)
        if e >= 0:
            return e
        length -= 1
    return np.int64(-1)


@kernel(**config.INLINE_JIT)
def lpm_insert(hdr, buckets, refs, free, keys, index, rchild, nhdr, nent, bhi,
               blo, rval, plen, hi, lo, flags, width, shift):
    """bpf_map_update_elem's key part: the entry of prefix (hi, lo)/plen, made if
    new; or -EINVAL (flags, prefixlen), -EEXIST (NOEXIST), -ENOENT (EXIST),
    -ENOSPC (full). The caller writes the value."""
    if flags < 0 or flags > BPF_EXIST or plen < 0 or plen > width:
        return np.int64(-EINVAL)
    raw_hi, raw_lo = hi, lo
    hi, lo = mask128(hi, lo, plen)
    key = (np.uint64(plen), hi, lo)
    e, created = htab_insert(hdr, buckets, refs, free, keys, key,
                             np.int64(flags), False, PREFIX_SEED)
    if e < 0:
        return np.int64(-ENOSPC) if e == -E2BIG else e
    # the key's bytes as given, host bits included, in the row's spare words:
    # what the kernel's trie keeps (its node takes the update's key) and dumps
    keys[e, RAW_HI], keys[e, RAW_LO], keys[e, RAW_SET] = raw_hi, raw_lo, np.uint64(1)
    if created:
        start = _add_bound(hdr, index, rchild, nhdr, nent, bhi, blo, rval, hi, lo, shift, width)
        ehi, elo, wrapped = span_end(hi, lo, plen)
        stop = hdr[H_BOUNDS]
        if not wrapped:
            stop = _add_bound(hdr, index, rchild, nhdr, nent, bhi, blo, rval, ehi, elo, shift,
                              width)
        for k in range(start, stop):
            v = rval[k]
            if v < 0 or np.int64(keys[v, 1]) < plen:
                rval[k] = e
    return e


@kernel(**config.INLINE_JIT)
def lpm_delete(hdr, buckets, refs, free, keys, index, rchild, nhdr, nent, bhi,
               blo, rval, plen, hi, lo, width, shift):
    """bpf_map_delete_elem: remove the exact prefix (hi, lo)/plen: 0, -ENOENT or
    -EINVAL (prefixlen above the key's width)."""
    if plen < 0 or plen > width:
        return np.int64(-EINVAL)
    hi, lo = mask128(hi, lo, plen)
    e = _exact(buckets, keys, plen, hi, lo)
    if e < 0:
        return np.int64(-ENOENT)
    parent = np.int64(-1)
    length = np.int64(plen) - 1
    while length >= 0:
        h, l2 = mask128(hi, lo, length)
        parent = _exact(buckets, keys, length, h, l2)
        if parent >= 0:
            break
        length -= 1
    start = np.int64(lpm_find2(index, rchild, nhdr, nent, bhi, blo, hi, lo, shift))
    ehi, elo, wrapped = span_end(hi, lo, plen)
    stop = hdr[H_BOUNDS]
    if not wrapped:
        stop = np.int64(lpm_find2(index, rchild, nhdr, nent, bhi, blo, ehi, elo, shift))
    for k in range(start, stop):
        if rval[k] == e:
            rval[k] = parent
    if not wrapped and rval[stop] == rval[stop - 1]:
        _remove_bound(hdr, index, rchild, nhdr, nent, bhi, blo, rval, stop, shift, width)
    if start > 0 and rval[start] == rval[start - 1]:
        _remove_bound(hdr, index, rchild, nhdr, nent, bhi, blo, rval, start, shift, width)
    htab_delete(hdr, buckets, free, keys, (np.uint64(plen), hi, lo), PREFIX_SEED)
    return np.int64(0)


@kernel(**config.INLINE_JIT)
def lpm_delete_locked(hdr, buckets, refs, free, keys, index, rchild, nhdr, nent, bhi,
                      blo, rval, plen, hi, lo, width, shift):
    """lpm_delete under the map's lock (htab.H_LOCK)."""
    spin_lock(hdr, H_LOCK)
    r = lpm_delete(hdr, buckets, refs, free, keys, index, rchild, nhdr, nent, bhi,
                   blo, rval, plen, hi, lo, width, shift)
    spin_unlock(hdr, H_LOCK)
    return r


#: What lpm_check finds broken (its nonzero results).
CHECK_FAULTS = {1: "interval count out of range", 2: "an interval's entry out of range",
                3: "index out of range or out of order", 4: "an index node is broken"}


@kernel(**config.KERNEL_JIT)
def lpm_check(hdr, index, rchild, nhdr, nent, rval, entries, parent, stack):
    """0 when the range table and the index nodes a lookup can reach are sound,
    else the number of the first broken invariant (CHECK_FAULTS), as
    htab.htab_check for the prefix table. Nodes: numbers below H_NODES,
    windows inside the key, sub-bucket starts in order and inside their
    bucket's intervals, children made after them (nodes are made in order, so
    no loop) and each with one parent. ``parent`` and ``stack`` are int64
    scratch of the pool's size and 3 * that + 3."""
    bounds = hdr[H_BOUNDS]
    if bounds < 1 or bounds > rval.size:
        return 1
    for k in range(bounds):
        if rval[k] < -1 or rval[k] >= entries:
            return 2
    for b in range(index.size):
        if index[b] < 0 or index[b] > bounds or (b > 0 and index[b] < index[b - 1]):
            return 3
    nodes = hdr[H_NODES]
    if nodes < 0 or nodes > nhdr.shape[0]:
        return 4
    for k in range(nodes):
        parent[k] = -2
    for b in range(rchild.size):
        root = np.int64(rchild[b])
        if root == -1:
            continue
        if root < 0 or root >= nodes or parent[root] != -2:
            return 4
        parent[root] = -1
        stack[0], stack[1], stack[2] = root, np.int64(index[b]), np.int64(index[b + 1])
        top = 3
        while top:
            k, lo, hi = stack[top - 3], stack[top - 2], stack[top - 1]
            top -= 3
            if nhdr[k, N_POS] > np.uint64(120):
                return 4
            prev = np.int64(0)
            for t in range(257):
                off = np.int64(nent[k, 2 * t])
                if off < prev or lo + off > hi:
                    return 4
                prev = off
            for t in range(256):
                c = np.int64(nent[k, 2 * t + 1])
                if c == -1:
                    continue
                if c <= k or c >= nodes or parent[c] != -2 or top + 3 > stack.size:
                    return 4
                parent[c] = k
                stack[top], stack[top + 1] = c, lo + np.int64(nent[k, 2 * t])
                stack[top + 2] = lo + np.int64(nent[k, 2 * t + 2])
                top += 3
    return 0


# ---------------------------------------------------------------- from Python

#: Operations of lpm_py: one kernel (one compile) for the control plane.
OP_LOOKUP, OP_UPDATE, OP_DELETE, OP_REBUILD = 0, 1, 2, 3


def lpm_clear(hdr, index, rchild, bhi, blo, rval):
    """Empty range table: one interval, all addresses, no prefix; no index nodes
    (numpy: the hash table's own reset is htab.htab_reset)."""
    hdr[H_BOUNDS], hdr[H_NODES], hdr[H_CHANGES], hdr[H_REBUILT] = 1, 0, 0, 0
    bhi[0] = blo[0] = 0
    rval[0] = -1
    index[:] = 0
    rchild[:] = -1


@kernel(**config.KERNEL_JIT)
def lpm_py(op, hdr, buckets, refs, free, keys, index, rchild, nhdr, nent, bhi, blo,
           rval, kw, flags, width, shift):
    """A control-plane operation on key ``kw`` (uint64[3]: prefixlen, hi, lo; ctypes
    passes int64 scalars): OP_LOOKUP (kernel semantics) gives the entry or -1,
    OP_UPDATE the entry or -errno, OP_DELETE 0 or -errno, OP_REBUILD rebuilds
    the index nodes (maps do it themselves when the pool is spent)."""
    ushift = np.uint64(shift)
    plen = np.int64(kw[0])
    if op == OP_LOOKUP:
        return lpm_lookup(buckets, keys, index, rchild, nhdr, nent, bhi, blo, rval,
                          plen, kw[1], kw[2], width, ushift)
    if op == OP_UPDATE or op == OP_DELETE:
        if not control_lock(hdr):  # a process died holding it (htab.CONTROL_SPINS)
            return np.int64(-EBUSY)
        if op == OP_UPDATE:
            r = lpm_insert(hdr, buckets, refs, free, keys, index, rchild, nhdr,
                           nent, bhi, blo, rval, plen, kw[1], kw[2], flags, width, ushift)
        else:
            r = lpm_delete(hdr, buckets, refs, free, keys, index, rchild, nhdr,
                           nent, bhi, blo, rval, plen, kw[1], kw[2], width, ushift)
        spin_unlock(hdr, H_LOCK)
        return r
    if op == OP_REBUILD:
        lpm_rebuild_nodes(hdr, index, rchild, nhdr, nent, bhi, blo, width, ushift)
        return np.int64(0)
    return np.int64(-EINVAL)
