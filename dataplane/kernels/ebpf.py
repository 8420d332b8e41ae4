"""Map helpers for eBPF bytecode: keys and values by address, as the kernel's
helpers take them (numba code; imported only when an object is compiled).

An eBPF program passes ``bpf_map_lookup_elem(map, &key)`` a pointer to
key_size bytes (its stack, a map value, the packet) and gets back a pointer
into the map's value storage or NULL. These are the same tables as Python
programs use (kernels/htab.py, maps.py): a key's bytes are read as the
little-endian words the table stores, so entries written by the control plane
and by either kind of program agree.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .. import config
from . import htab, lpm, queue_stack
from .htab import H_LOCK
from .lru_htab import lru_next
from .memory import spin_lock, spin_unlock, store_release
from .context import ctx_address, ctx_bounds
from .csum import _diff as _diff_kernel
from ..helpers import bpf_redirect
from .map_api import (_inline_value, _inner_builder, _queue_stack_spec, _slot_base, _spec,
                      array_update_error, bpf_redirect_map, bpf_tail_call, lpm_entry,
                      table_ops)
from .ringbuf import (_FLAGS as RB_FLAGS, EAGAIN, EINVAL, _ring_spec, ringbuf_claim,
                      ringbuf_publish, ringbuf_write)
from ..maps import (BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT, RB_AUX, RB_LOCK,
                    RB_PRODUCER, RB_WRITTEN)
from .trace import trace_printk
from .xdp import (bpf_get_prandom_u32, bpf_get_smp_processor_id, bpf_ktime_get_coarse_ns,
                  bpf_ktime_get_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_meta,
                  bpf_xdp_adjust_tail)


def _peek(nbytes):
    @intrinsic
    def peek(typingctx, addr):
        """The ``nbytes`` bytes at ``addr`` (unaligned, little-endian) as a uint64."""
        def codegen(context, builder, signature, args):
            ty = ir.IntType(8 * nbytes)
            v = builder.load(builder.inttoptr(args[0], ty.as_pointer()), align=1)
            return v if nbytes == 8 else builder.zext(v, ir.IntType(64))
        return types.uint64(types.int64), codegen
    return peek


peek1, peek2, peek4, peek8 = (_peek(n) for n in (1, 2, 4, 8))


@intrinsic
def array_address(typingctx, arr):
    """The address of an array's first element."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.ptrtoint(ary.data, ir.IntType(64))

    return types.int64(arr), codegen


@intrinsic
def copy_bytes(typingctx, dst, src, n):
    """memcpy(dst, src, n) between addresses (the verifier checked both ranges)."""
    def codegen(context, builder, signature, args):
        p8 = ir.IntType(8).as_pointer()
        d, s = (builder.inttoptr(a, p8) for a in args[:2])
        cgutils.raw_memcpy(builder, d, s, args[2], 1)
        return context.get_dummy_value()

    return types.void(types.int64, types.int64, types.int64), codegen


_packers = {}


def key_reader(nbytes):
    """A compiled ``read(addr) -> tuple of uint64 words`` of an ``nbytes`` key:
    exact-width loads only (a key at the top of the stack has nothing after it)."""
    if nbytes not in _packers:
        words = []
        for w in range(0, nbytes, 8):
            parts, off = [], w
            while off < min(w + 8, nbytes):
                size = next(s for s in (8, 4, 2, 1) if off + s <= min(w + 8, nbytes)
                            and (off - w) % s == 0)
                shift = 8 * (off - w)
                parts.append(f"(peek{size}(addr + {off}) << _u({shift}))" if shift
                             else f"peek{size}(addr + {off})")
                off += size
            words.append(" | ".join(parts))
        src = f"def read(addr):\n    return ({', '.join(words)},)\n"
        ns = {"peek1": peek1, "peek2": peek2, "peek4": peek4, "peek8": peek8, "_u": np.uint64}
        exec(src, ns)
        _packers[nbytes] = njit(**config.INLINE_JIT)(ns["read"])
    return _packers[nbytes]


def map_lookup(m, key):
    """bpf_map_lookup_elem by address: the value's address, or 0."""


def map_update(m, key, value, flags):
    """bpf_map_update_elem by address: 0 or -errno."""


def map_delete(m, key):
    """bpf_map_delete_elem by address: 0 or -errno."""


def map_value_address(m):
    """The address of a (one-entry, global data) array map's value."""


def map_push(m, value, flags):
    """bpf_map_push_elem (helper 87) on a queue or a stack, the value by address:
    0 or -errno (kernels/queue_stack.py)."""


def map_get(m, value, delete):
    """bpf_map_pop_elem (helper 88, ``delete``) / bpf_map_peek_elem (89) into the
    value's address: 0 or -ENOENT."""


@overload(map_push)
def _map_push(m, value, flags):
    spec = _queue_stack_spec(m, "bpf_map_push_elem")
    if spec is None:
        return None
    push, size = queue_stack.queue_stack_push.dispatcher, spec.value_dtype.itemsize
    return lambda m, value, flags: push(m.hdr, m.elems, value, size, flags)


@overload(map_get)
def _map_get(m, value, delete):
    spec = _queue_stack_spec(m, "bpf_map_pop_elem")
    if spec is None:
        return None
    get, size, stack = queue_stack.queue_stack_get.dispatcher, spec.value_dtype.itemsize, \
        spec.is_stack
    return lambda m, value, delete: get(m.hdr, m.elems, value, size, stack, delete)


@overload(map_value_address)
def _value_address(m):
    return lambda m: array_address(m.values)


def map_each_next(m, cursor):
    """bpf_for_each_map_elem's walk: the cursor of the element after ``cursor``
    (-1: before the first), -1 after the last. Arrays: the index. Hash maps:
    bucket << 32 | (entry + 1), each bucket's chain in order (the kernel's walk:
    buckets in order)."""


def map_each_key(m, cursor):
    """The address of the key of the element at ``cursor`` (0 for an array: its
    index is the key, which the caller writes)."""


def map_each_value(m, cursor):
    """The address of the value of the element at ``cursor`` (a per-CPU map's:
    this worker's)."""


@overload(map_each_next)
def _each_next(m, cursor):
    spec = _spec(m)
    if spec is None:
        return None
    if not spec.is_hash:
        n = spec.max_entries

        def impl(m, cursor):
            return cursor + 1 if cursor + 1 < n else np.int64(-1)
        return impl
    if spec.open_addressed:  # the cursor is the slot
        next_slot = lru_next.dispatcher
        return lambda m, cursor: next_slot(m.keys, cursor)
    link = htab.link_of.dispatcher

    def impl(m, cursor):
        if cursor < 0:
            b, e = np.int64(-1), np.int64(-1)
        else:
            b, e = cursor >> 32, (cursor & 0xFFFFFFFF) - 1
            e = link(m.keys, e)
        while e < 0:
            b += 1
            if b >= m.buckets.size:
                return np.int64(-1)
            e = np.int64(m.buckets[b])
        return (b << 32) | (e + 1)
    return impl


@overload(map_each_key)
def _each_key(m, cursor):
    spec = _spec(m)
    if spec is None:
        return None
    if not spec.is_hash:
        return lambda m, cursor: np.int64(0)
    row, entry = spec.keys.strides[0], _cursor_entry(spec)

    def impl(m, cursor):  # the key's words after the row's hash word: its bytes
        return array_address(m.keys) + entry(cursor) * row + 8
    return impl


@overload(map_each_value)
def _each_value(m, cursor):
    spec = _spec(m)
    if spec is None:
        return None
    slot, entry = _value_slot(spec, m), _cursor_entry(spec)
    return lambda m, cursor: slot(m, entry(cursor))


#: The element a map_each_next cursor names: a chained table's cursor holds
#: its bucket and entry + 1; an array's and an LRU table's is the index or slot.
_chain_cursor_entry = njit(**config.INLINE_JIT)(lambda cursor: (cursor & 0xFFFFFFFF) - 1)
_plain_cursor_entry = njit(**config.INLINE_JIT)(lambda cursor: cursor)


def _cursor_entry(spec):
    """The compiled ``entry(cursor)`` of map ``spec``'s cursors."""
    if spec.is_hash and not spec.open_addressed:
        return _chain_cursor_entry
    return _plain_cursor_entry


def _value_slot(spec, m):
    """A compiled ``slot(m, e) -> address`` of entry ``e``'s value (handle type ``m``)."""
    base, vsize = _slot_base(spec, m), spec.value_dtype.itemsize
    inline, row, voff = _inline_value(spec)
    if inline:
        def slot(m, e):
            return array_address(m.keys) + e * row + voff
    else:
        def slot(m, e):
            return array_address(m.values) + (base() + e) * vsize
    return njit(**config.INLINE_JIT)(slot)


_lpm_readers = {}


def lpm_key_reader(nbytes):
    """A compiled ``read(addr) -> (prefixlen, hi, lo)`` of an LPM key
    (``struct bpf_lpm_trie_key``: u32 prefixlen, then ``nbytes`` of data in
    network order) as kernels/lpm.py's left-aligned words."""
    if nbytes not in _lpm_readers:
        def word(first, count):
            terms = [f"(_u(peek1(addr + {4 + first + i})) << _u({8 * (7 - i)}))"
                     for i in range(count)]
            return " | ".join(terms) if terms else "_u(0)"
        src = (f"def read(addr):\n    return np.int64(peek4(addr)), {word(0, min(nbytes, 8))}, "
               f"{word(8, max(nbytes - 8, 0))}\n")
        ns = {"peek1": peek1, "peek4": peek4, "_u": np.uint64, "np": np}
        exec(src, ns)
        _lpm_readers[nbytes] = njit(**config.INLINE_JIT)(ns["read"])
    return _lpm_readers[nbytes]


def _lpm(spec):
    """(read, width, shift) of an LPM trie's keys."""
    return lpm_key_reader(spec.lpm_width // 8), np.int64(spec.lpm_width), \
        np.uint64(spec.lpm_shift)


@overload(map_lookup)
def _lookup(m, key):
    spec = _spec(m)
    if spec is None:
        return None
    if spec.is_map_in_map:
        return _lookup_outer(spec)
    if spec.is_lpm:  # the longest prefix of at most the key's prefixlen bits
        read, entry, slot = _lpm(spec)[0], lpm_entry(spec), _value_slot(spec, m)

        def impl(m, key):
            plen, hi, lo = read(key)
            e = entry(m, plen, hi, lo)
            if e < 0:
                return np.int64(0)
            return slot(m, e)
        return impl
    slot, n, lru = _value_slot(spec, m), spec.max_entries, spec.lru
    if not spec.is_hash:
        slotted = spec.is_devmap  # an empty slot (ifindex 0) is a miss, as a deleted key

        def impl(m, key):
            i = np.int64(peek4(key))
            if i >= n or (slotted and m.values[i] == 0):
                return np.int64(0)
            return slot(m, i)
        return impl
    read, (find, touch, _, _) = key_reader(spec.key_dtype.itemsize), table_ops(spec)

    def impl(m, key):
        e = find(m, read(key))
        if e < 0:
            return np.int64(0)
        if lru:
            touch(m, e)
        return slot(m, e)
    return impl


def _lookup_outer(spec):
    """A map of maps: the inner map's number in the pool (1-based), or 0."""
    n = spec.max_entries
    if not spec.is_hash:
        def impl(m, key):
            i = np.int64(peek4(key))
            if i >= n:
                return np.int64(0)
            return np.int64(m.values[i])
        return impl
    read, find = key_reader(spec.key_dtype.itemsize), htab.htab_find_key.dispatcher

    def impl(m, key):
        k = read(key)
        e = find(m.hdr, m.buckets, m.keys, k)
        if e < 0:
            return np.int64(0)
        return np.int64(m.values[e])
    return impl


@overload(map_update)
def _update(m, key, value, flags):
    spec = _spec(m)
    if spec is None:
        return None
    slot, n, vsize = _value_slot(spec, m), spec.max_entries, spec.value_dtype.itemsize
    if spec.is_lpm:
        (read, width, shift), insert = _lpm(spec), lpm.lpm_insert.dispatcher

        def impl(m, key, value, flags):
            plen, hi, lo = read(key)
            spin_lock(m.hdr, H_LOCK)
            e = insert(m.hdr, m.buckets, m.refs, m.free, m.keys, m.index, m.rchild,
                       m.nhdr, m.nent, m.bhi, m.blo, m.rval, plen, hi, lo, np.int64(flags),
                       width, shift)
            if e >= 0:
                copy_bytes(slot(m, e), value, vsize)
            spin_unlock(m.hdr, H_LOCK)
            return e if e < 0 else np.int64(0)
        return impl
    if not spec.is_hash:
        def impl(m, key, value, flags):
            i = np.int64(peek4(key))
            err = array_update_error(i, n, flags)
            if err:
                return err
            copy_bytes(slot(m, i), value, vsize)
            return np.int64(0)
        return impl
    read, insert = key_reader(spec.key_dtype.itemsize), table_ops(spec)[2]

    def impl(m, key, value, flags):
        spin_lock(m.hdr, H_LOCK)
        e, created = insert(m, read(key), np.int64(flags))
        if e >= 0:
            copy_bytes(slot(m, e), value, vsize)
        spin_unlock(m.hdr, H_LOCK)
        return e if e < 0 else np.int64(0)
    return impl


@overload(map_delete)
def _delete(m, key):
    spec = _spec(m)
    if spec is None:
        return None
    if spec.is_lpm:
        (read, width, shift), delete = _lpm(spec), lpm.lpm_delete_locked.dispatcher

        def impl(m, key):
            plen, hi, lo = read(key)
            return delete(m.hdr, m.buckets, m.refs, m.free, m.keys, m.index,
                          m.rchild, m.nhdr, m.nent, m.bhi, m.blo, m.rval, plen, hi, lo, width,
                          shift)
        return impl
    if not spec.is_hash:
        EINVAL = -htab.EINVAL
        return lambda m, key: np.int64(EINVAL)
    read, delete = key_reader(spec.key_dtype.itemsize), table_ops(spec)[3]

    def impl(m, key):
        return delete(m, read(key))
    return impl


@njit(**config.INLINE_JIT)
def _sum16_at(addr, size):
    """Unfolded sum of the native (little-endian) 16-bit words at ``addr``, as
    the kernel's csum_partial reads memory: an odd last byte is the low half of
    its word (lib/checksum.c's do_csum on a little-endian machine)."""
    s = np.int64(0)
    for i in range(0, size - 1, 2):
        s += np.int64(peek2(addr + i))
    if size & 1:
        s += np.int64(peek1(addr + size - 1))
    return s


@njit(**config.INLINE_JIT)
def csum_diff(frm, from_size, to, to_size, seed):
    """bpf_csum_diff (helper 28) by address: kernels/csum.py's _diff (Linux 6.13's
    result, as for Python programs) of the buffers' sums, of any sizes since
    6.13 as there (older kernels: multiples of 4, else -EINVAL; found against
    6.18). Summing native words gives the kernel's byte order."""
    if from_size < 0 or to_size < 0:
        return np.int64(-22)
    return _diff(_sum16_at(frm, from_size), from_size, _sum16_at(to, to_size), to_size, seed)


_diff = _diff_kernel.dispatcher


# -- the calls the JIT emits (compile_internal keys subroutines by code object,
#    so each helper has its own function)

_redirect = bpf_redirect.dispatcher


def call_lookup(m, key):
    return map_lookup(m, key)


def call_update(m, key, value, flags):
    return map_update(m, key, value, flags)


def call_delete(m, key):
    return map_delete(m, key)


def call_value_address(m):
    return map_value_address(m)


def call_push(m, value, flags):
    return map_push(m, value, flags)


def call_pop(m, value):
    return map_get(m, value, True)


def call_peek(m, value):
    return map_get(m, value, False)


def call_each_next(m, cursor):
    return map_each_next(m, cursor)


def call_each_key(m, cursor):
    return map_each_key(m, cursor)


def call_each_value(m, cursor):
    return map_each_value(m, cursor)


def call_redirect_map(m, key, flags):
    return bpf_redirect_map(m, key, flags)


def call_redirect(ifindex, flags):
    return _redirect(ifindex, flags)


def call_csum_diff(frm, from_size, to, to_size, seed):
    return csum_diff(frm, from_size, to, to_size, seed)


def call_adjust_head(ctx, delta):
    return bpf_xdp_adjust_head(ctx, delta)


def call_adjust_meta(ctx, delta):
    return bpf_xdp_adjust_meta(ctx, delta)


def call_adjust_tail(ctx, delta):
    return bpf_xdp_adjust_tail(ctx, delta)


@njit(**config.INLINE_JIT)
def xdp_bytes(ctx, offset, buf, n, store):
    """bpf_xdp_load_bytes (``buf`` <- packet) / bpf_xdp_store_bytes (packet <-
    ``buf``): ``n`` bytes at ``offset`` from data, 0 or -EINVAL past data_end
    (the frame is linear here: no fragments to walk)."""
    _, data, end, _, _ = ctx_bounds(ctx)
    if n <= 0 or offset + n > end - data:
        return np.int64(-htab.EINVAL)
    at = ctx_address(ctx, data + offset)
    if store:
        copy_bytes(at, buf, n)
    else:
        copy_bytes(buf, at, n)
    return np.int64(0)


def call_xdp_load_bytes(ctx, offset, buf, n):
    return xdp_bytes(ctx, offset, buf, n, False)


def call_xdp_store_bytes(ctx, offset, buf, n):
    return xdp_bytes(ctx, offset, buf, n, True)


def call_xdp_get_buff_len(ctx):
    _, data, end, _, _ = ctx_bounds(ctx)
    return end - data


def call_ktime():
    return bpf_ktime_get_ns()


def call_ktime_coarse():
    return bpf_ktime_get_coarse_ns()


def call_prandom():
    return np.int64(bpf_get_prandom_u32())


def call_smp_id():
    return np.int64(bpf_get_smp_processor_id())


def call_trace(t, fmt_id, static_len, s1, s2, s3, a1, a2, a3):
    return trace_printk(t, fmt_id, static_len, s1, s2, s3, a1, a2, a3)


def call_tail_call(ctx, m, index):
    return bpf_tail_call(ctx, m, index)


def ringbuf_output(rb, data, size, flags):
    """bpf_ringbuf_output by address: one record of the ring's record size."""


@njit(**config.INLINE_JIT)
def ringbuf_write_raw(hdr, ring, data, size, flags):
    """bpf_ringbuf_output of ``size`` bytes at address ``data`` into a ring of
    raw records (records of several sizes): 0, -EAGAIN or -EINVAL. The bytes
    past the last whole word are read one by one (never past the buffer)."""
    if np.int64(flags) & ~np.int64(RB_FLAGS):
        return np.int64(-EINVAL)
    whole = size >> 3
    nbytes = 8 * (((size + 7) >> 3) + 1)
    prod = ringbuf_claim(hdr, ring, nbytes)
    if prod < 0:
        return np.int64(-EAGAIN)
    wmask, w = np.int64(ring.size - 1), prod >> 3
    for k in range(whole):
        ring[(w + 1 + k) & wmask] = peek8(data + 8 * k)
    if size & 7:
        last = np.uint64(0)
        for b in range(size & 7):
            last |= np.uint64(peek1(data + 8 * whole + b)) << np.uint64(8 * b)
        ring[(w + 1 + whole) & wmask] = last
    return ringbuf_publish(hdr, ring, prod, nbytes, np.uint64(size))


@overload(ringbuf_output)
def _ringbuf_output(rb, data, size, flags):
    spec = _ring_spec(rb)
    if spec is None:
        return None
    if spec.variable:  # records of several sizes: each call's own
        return lambda rb, data, size, flags: ringbuf_write_raw(rb.hdr, rb.ring, data,
                                                               np.int64(size), flags)
    nbytes = spec.value_dtype.itemsize
    read, head = key_reader(nbytes), np.uint64(nbytes)

    def impl(rb, data, size, flags):
        return ringbuf_write(rb.hdr, rb.ring, head, read(data), flags)
    return impl


def call_ringbuf_output(rb, data, size, flags):
    return ringbuf_output(rb, data, size, flags)


@njit(**config.INLINE_JIT)
def ringbuf_reserve(hdr, ring, head, nwords, flags, scratch):
    """bpf_ringbuf_reserve: room for a record of ``nwords`` words, its header
    ``head`` marked busy and the producer position moved past it at once (the
    kernel's order: a reader stops at a busy record). The address of the data,
    or 0: no room (counted in ``dropped``), or flags (the kernel takes none).
    A record whose data would run past the ring's end is written at
    ``scratch`` (nwords words of the caller's) instead, and copied into place
    by the submit; its header's word is kept in the ring's header (RB_AUX):
    only one record can span the end at a time."""
    if flags != 0:
        return np.int64(0)
    nbytes = np.int64(8 * (nwords + 1))
    wmask = np.int64(ring.size - 1)
    prod = ringbuf_claim(hdr, ring, nbytes)
    if prod < 0:
        return np.int64(0)
    w = prod >> 3
    ring[w & wmask] = head | np.uint64(BPF_RINGBUF_BUSY_BIT)
    first = (w + 1) & wmask
    if first + nwords > ring.size:
        hdr[RB_AUX] = w
    store_release(hdr, RB_PRODUCER, prod + nbytes)
    spin_unlock(hdr, RB_LOCK)
    if first + nwords > ring.size:
        return scratch
    return array_address(ring) + 8 * first


@njit(**config.INLINE_JIT)
def ringbuf_commit(hdr, ring, head, nwords, data, discard, scratch):
    """bpf_ringbuf_submit / discard of the record at ``data``: its header
    without the busy bit (with the discard bit to discard), a release store
    after the data (copied from ``scratch`` into place first, if there)."""
    wmask = np.int64(ring.size - 1)
    if data == scratch:
        w = hdr[RB_AUX]
        if not discard:
            for k in range(nwords):
                ring[(w + 1 + k) & wmask] = peek8(scratch + 8 * k)
    else:
        w = ((data - array_address(ring)) >> 3) - 1
    if discard:
        store_release(ring, w & wmask, head | np.uint64(BPF_RINGBUF_DISCARD_BIT))
    else:
        store_release(ring, w & wmask, head)
        spin_lock(hdr, RB_LOCK)  # (ringbuf_write counts under it)
        hdr[RB_WRITTEN] += 1
        spin_unlock(hdr, RB_LOCK)


def ringbuf_reserve_in(rb, size, flags, scratch):
    """bpf_ringbuf_reserve on a ring handle (``size``: the verifier's constant,
    the record's size, which its header carries)."""


@overload(ringbuf_reserve_in)
def _ringbuf_reserve_in(rb, size, flags, scratch):
    if _ring_spec(rb) is None:
        return None

    def impl(rb, size, flags, scratch):
        n = np.int64(size)
        return ringbuf_reserve(rb.hdr, rb.ring, np.uint64(n), (n + 7) >> 3, flags, scratch)
    return impl


def call_ringbuf_reserve(rb, size, flags, scratch):
    return ringbuf_reserve_in(rb, size, flags, scratch)


def ringbuf_commit_in(rb, data, discard, scratch):
    """bpf_ringbuf_submit (discard 0) / bpf_ringbuf_discard on a ring handle."""


@njit(**config.INLINE_JIT)
def reserved_head(hdr, ring, data, scratch):
    """The header word of the record reserved at ``data`` (its length), busy bit
    cleared: the kernel's submit reads the size back from the header too."""
    w = hdr[RB_AUX] if data == scratch else ((data - array_address(ring)) >> 3) - 1
    return ring[w & (ring.size - 1)] & np.uint64(0xFFFFFFFF & ~BPF_RINGBUF_BUSY_BIT)


@overload(ringbuf_commit_in)
def _ringbuf_commit_in(rb, data, discard, scratch):
    if _ring_spec(rb) is None:
        return None

    def impl(rb, data, discard, scratch):
        head = reserved_head(rb.hdr, rb.ring, data, scratch)
        ringbuf_commit(rb.hdr, rb.ring, head, (np.int64(head) + 7) >> 3, data, discard,
                       scratch)
        return np.int64(0)
    return impl


def call_ringbuf_commit(rb, data, discard, scratch):
    return ringbuf_commit_in(rb, data, discard, scratch)


# -- maps of maps: a lookup gives the inner map's number in the outer's pool
#    (1-based, 0: none), which the program passes back as the map argument

def inner_lookup(m, number, key):
    """bpf_map_lookup_elem on an inner map found in ``m``."""


def inner_update(m, number, key, value, flags):
    """bpf_map_update_elem on an inner map found in ``m``."""


def inner_delete(m, number, key):
    """bpf_map_delete_elem on an inner map found in ``m``."""


def inner_redirect_map(m, number, key, flags):
    """bpf_redirect_map on an inner device map found in ``m``."""


def _inner_of(m):
    """For the handle type ``m`` of a map of maps, a compiled ``inner(m,
    number)``: the handle of its inner map ``number`` (what a lookup in it
    gave); None for other maps."""
    spec = _spec(m)
    if spec is None or not spec.is_map_in_map:
        return None
    build = _inner_builder(m)
    return njit(**config.INLINE_JIT)(lambda m, number: build(m.pool[number - 1], number))


@overload(inner_lookup)
def _inner_lookup(m, number, key):
    inner = _inner_of(m)
    return inner and (lambda m, number, key: map_lookup(inner(m, number), key))


@overload(inner_update)
def _inner_update(m, number, key, value, flags):
    inner = _inner_of(m)
    return inner and (lambda m, number, key, value, flags:
                      map_update(inner(m, number), key, value, flags))


@overload(inner_delete)
def _inner_delete(m, number, key):
    inner = _inner_of(m)
    return inner and (lambda m, number, key: map_delete(inner(m, number), key))


@overload(inner_redirect_map)
def _inner_redirect_map(m, number, key, flags):
    inner = _inner_of(m)
    return inner and (lambda m, number, key, flags:
                      bpf_redirect_map(inner(m, number), key, flags))


def call_inner_redirect_map(m, number, key, flags):
    return inner_redirect_map(m, number, key, flags)


def call_inner_lookup(m, number, key):
    return inner_lookup(m, number, key)


def call_inner_update(m, number, key, value, flags):
    return inner_update(m, number, key, value, flags)


def call_inner_delete(m, number, key):
    return inner_delete(m, number, key)
