"""Map operations inside programs: bpf_map_lookup_elem / update_elem / delete_elem.

numba overloads, imported only when a program is compiled. A program's map is
a handle (a namedtuple of the map's arrays, built by the program's loop) whose
class carries the Map (``_dp_map``); each overload specialises on it: key
packing, value layout, LRU or not, array or hash, are all compile-time facts.

A value is given in place, as the kernel gives a pointer into the map: a
record for a structured value (``v.packets += 1``), a one-element array for a
scalar (``v[0] += 1``), or None when the key is missing. Per-CPU maps give the
running worker's slot (worker 0 until workers exist).

LPM tries (maps.py, kernels/lpm.py): a lookup takes the address (W <= 64 bits:
an int; wider: a tuple of the first 8 data bytes and the rest, as big-endian
ints) or the kernel's full key with the prefixlen first; update and delete
take the full key ``(prefixlen, addr)`` / ``(prefixlen, hi, lo)``.
"""

import weakref

import numpy as np
from numba import njit, types
from numba.extending import overload

from .. import config, helpers
from ..action import BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS, XDP_ABORTED
from ..broadcast import INNER_NUMBER, INNER_SHIFT, broadcast_target
from ..errors import ProgramError
from ..map_layout import pack_source
from . import htab, lpm, lru_htab, queue_stack
from .htab import H_COUNT, H_LOCK
from .layout import MEMO_ENTRIES, MEMO_HINT, MEMO_WORDS
from .memory import as_pointer, byte_address, prefetch, spin_lock, spin_unlock, view_bytes
from .budget import worker_id
from .xdp import lookup_hint, prefetch_memo

#: A hash map's key-hash seed from its header (kernels/htab.py).
seed_of = htab.table_seed.dispatcher

_table_ops = {}


def table_ops(spec, hinted=False):
    """The compiled ``(find, touch, insert, delete)`` of a hash map's table, on
    its handle ``m`` and a key's words ``k``: ``find(m, k)`` the entry or -1;
    ``touch(m, e)`` marks it used (LRU); ``insert(m, k, flags)`` gives
    ``(entry, created)`` or a -errno entry, under the caller's lock;
    ``delete(m, k)`` 0 or -errno, taking the lock. LRU_HASH probes its slots
    (kernels/lru_htab.py), the other hash maps walk bucket chains
    (kernels/htab.py). Python programs and eBPF objects both use these;
    ``hinted``: an LRU hash map's ``find`` starts from the hash the packet's
    prefetch hook left (lru_htab.lru_find_hinted; Python programs: eBPF objects
    have no hook)."""
    kind = (spec.open_addressed, spec.lru, hinted and spec.open_addressed)
    if kind in _table_ops:
        return _table_ops[kind]
    lru = spec.lru
    if spec.open_addressed:
        find_key, mark = lru_htab.lru_find_key.dispatcher, lru_htab.lru_touch.dispatcher
        find_hinted = lru_htab.lru_find_hinted.dispatcher
        put, remove = lru_htab.lru_insert.dispatcher, lru_htab.lru_delete.dispatcher

        if hinted:
            def find(m, k):
                return find_hinted(m.hdr, m.keys, k, lookup_hint())
        else:
            def find(m, k):
                return find_key(m.hdr, m.keys, k)

        def touch(m, e):
            mark(m.keys, e)

        def insert(m, k, flags):
            return put(m.hdr, m.rows, m.free, m.keys, k, flags, seed_of(m.hdr))

        def delete(m, k):
            spin_lock(m.hdr, H_LOCK)
            r = remove(m.hdr, m.rows, m.free, m.keys, k, seed_of(m.hdr))
            spin_unlock(m.hdr, H_LOCK)
            return r
    else:
        find_key, mark = htab.htab_find_key.dispatcher, htab.lru_touch.dispatcher
        put, remove = htab.htab_insert.dispatcher, htab.htab_delete_locked.dispatcher

        def find(m, k):
            return find_key(m.hdr, m.buckets, m.keys, k)

        def touch(m, e):
            mark(m.refs, e)

        def insert(m, k, flags):
            return put(m.hdr, m.buckets, m.refs, m.free, m.keys, k, flags, lru, seed_of(m.hdr))

        def delete(m, k):
            return remove(m.hdr, m.buckets, m.free, m.keys, k, seed_of(m.hdr))
    ops = tuple(njit(**config.INLINE_JIT)(f) for f in (find, touch, insert, delete))
    _table_ops[kind] = ops
    return ops


def bpf_map_lookup_elem(m, key):
    """``bpf_map_lookup_elem(map, key)`` (helper 1): the value in place, or None."""
    raise NotImplementedError("bpf_map_lookup_elem runs only inside a program")


def bpf_map_update_elem(m, key, value, flags):
    """``bpf_map_update_elem(map, key, value, flags)`` (helper 2): 0 or -errno.

    ``flags``: BPF_ANY, BPF_NOEXIST (-EEXIST if present), BPF_EXIST (-ENOENT if
    missing); a full hash map gives -E2BIG, a full LRU map evicts its least
    recently used entry. A structured value is a tuple of its fields.
    """
    raise NotImplementedError("bpf_map_update_elem runs only inside a program")


def bpf_map_delete_elem(m, key):
    """``bpf_map_delete_elem(map, key)`` (helper 3): 0, -ENOENT, or -EINVAL for arrays."""
    raise NotImplementedError("bpf_map_delete_elem runs only inside a program")


_packers, _writers = {}, {}  # by dtype


def key_packer(dtype):
    """A compiled ``pack(key) -> words`` for keys of ``dtype`` (also ring records).

    Note for value lookups below: a function compiled without reference
    counting may return only views of its own arguments, so the scalar and
    record forms are written out rather than shared through a helper."""
    if dtype not in _packers:
        ns = {"_dp_np": np}
        exec(pack_source(dtype, "pack"), ns)
        _packers[dtype] = njit(**config.INLINE_JIT)(ns["pack"])
    return _packers[dtype]


def _writer(dtype):
    """A compiled ``write(values, slot, value)`` storing a scalar or a record's fields."""
    if dtype not in _writers:
        if dtype.names is None:
            src = "def write(values, slot, value):\n    values[slot] = value\n"
        else:
            body = "".join(f"    rec.{n} = value[{i}]\n" for i, n in enumerate(dtype.names))
            src = "def write(values, slot, value):\n    rec = values[slot]\n" + body
        ns = {}
        exec(src, ns)
        _writers[dtype] = njit(**config.INLINE_JIT)(ns["write"])
    return _writers[dtype]


def _spec(m):
    return getattr(getattr(m, "instance_class", None), "_dp_map", None)


def _slot_base(spec, m):
    """A compiled ``base()``: the first value slot of the running worker (per-CPU
    maps keep ``max_entries`` slots per worker, maps.py), 0 for other maps and
    for handles the loop built from the worker's own slots (runner.worker_rows)."""
    if not spec.percpu or getattr(m.instance_class, "_dp_worker_rows", False):
        return _base_zero
    n = np.int64(spec.max_entries)
    return njit(**config.INLINE_JIT)(lambda: worker_id() * n)


@njit(**config.INLINE_JIT)
def _base_zero():
    return np.int64(0)


def _slot_form(spec):
    """(value type, bytes a slot) for ``view_bytes(values, k * size, vt, (1,))``:
    a one-element view of value slot ``k``, made at its address. Lookups prove
    ``k`` in range; numba's ``values[k:k + 1]`` (or ``values[k]``) would clamp it
    again and wrap negatives, ~10 instructions a lookup: more than a per-CPU
    counter bump costs without them. (Written out in each lookup: a compiled
    function without NRT may return no view but of its arguments.)"""
    return _value_type(spec), np.int64(spec.value_dtype.itemsize)


# ---------------------------------------------------------------- LPM tries

def _key_arity(key):
    """1 for an integer key, the length of a tuple key, else 0."""
    if isinstance(key, types.Integer):
        return 1
    if isinstance(key, types.BaseTuple) and all(isinstance(t, types.Integer) for t in key):
        return len(key)
    return 0


def _lpm_words(spec, key, full_only, what):
    """A compiled ``to_words(key) -> (prefixlen, hi, lo)`` (left-aligned words,
    kernels/lpm.py) for an LPM key of numba type ``key``: the full key, or (unless
    ``full_only``) the address alone, whose prefixlen is the trie's width."""
    width = spec.lpm_width
    words = 1 if width <= 64 else 2
    arity = _key_arity(key)
    if arity == words + 1 or (arity == words and not full_only):
        full = arity == words + 1
    else:
        addr = "an int" if words == 1 else "a tuple (first 8 data bytes, rest) of ints"
        form = "(prefixlen, addr)" if words == 1 else "(prefixlen, hi, lo)"
        takes = f"the full key {form}" if full_only else \
            f"the address ({addr}) or the full key {form}"
        raise ProgramError(f"map '{spec.name}': {what} of a {width}-bit lpm_trie takes "
                           f"{takes}, not {key}")
    if words == 1:
        lsh, amask = np.uint64(64 - width), np.uint64((1 << width) - 1)
        if full:
            def to_words(k):
                return np.int64(k[0]), (np.uint64(k[1]) & amask) << lsh, np.uint64(0)
        else:
            def to_words(k):
                return np.int64(width), (np.uint64(k) & amask) << lsh, np.uint64(0)
    else:
        lsh, amask = np.uint64(128 - width), np.uint64((1 << (width - 64)) - 1)
        if full:
            def to_words(k):
                return np.int64(k[0]), np.uint64(k[1]), (np.uint64(k[2]) & amask) << lsh
        else:
            def to_words(k):
                return np.int64(width), np.uint64(k[0]), (np.uint64(k[1]) & amask) << lsh
    return njit(**config.INLINE_JIT)(to_words)


def lpm_entry(spec):
    """A compiled ``entry(m, plen, hi, lo)``: the entry number of the longest
    prefix of at most ``plen`` bits (the key's prefixlen, as the kernel's
    trie_lookup_elem limits its match) that matches the left-aligned words
    ``hi``, ``lo``, or -1; -1 too for a prefixlen above the trie's width, as
    trie_lookup_elem. Python programs and eBPF objects both look up so."""
    # numpy scalars, not Python ints: a literal type would compile the kernels
    # again for each width (the control plane's calls pass int64 and uint64)
    width, shift = np.int64(spec.lpm_width), np.uint64(spec.lpm_shift)
    find1, find2 = lpm.lpm_find1.dispatcher, lpm.lpm_find2.dispatcher
    slow = lpm.lpm_lookup.dispatcher
    one_word = spec.lpm_width <= 64

    def entry(m, plen, hi, lo):
        if m.hdr[H_COUNT] == 0 or plen > width:  # the kernel's trie: NULL at once
            return np.int64(-1)
        if plen < width:  # a shorter prefixlen: the general walk
            return slow(m.buckets, m.keys, m.index, m.rchild, m.nhdr, m.nent, m.bhi,
                        m.blo, m.rval, plen, hi, lo, width, shift)
        if one_word:  # a whole address (the usual lookup): kernels/lpm.py's index
            return np.int64(m.rval[find1(m.index, m.rchild, m.nhdr, m.nent, m.bhi, hi, shift)])
        return np.int64(m.rval[find2(m.index, m.rchild, m.nhdr, m.nent, m.bhi, m.blo, hi, lo,
                                     shift)])
    return njit(**config.INLINE_JIT)(entry)


def _lpm_lookup(spec, key):
    scalar = spec.value_dtype.names is None
    to_words = _lpm_words(spec, key, False, "bpf_map_lookup_elem")
    entry = lpm_entry(spec)
    vt, size = _slot_form(spec)

    def impl(m, key):
        plen, hi, lo = to_words(key)
        e = entry(m, plen, hi, lo)
        if e < 0:
            return None
        v = view_bytes(m.values, e * size, vt, (1,))
        if scalar:
            return v
        return v[0]
    return impl


def _lpm_update(spec, key):
    width, shift = np.int64(spec.lpm_width), np.uint64(spec.lpm_shift)
    write = _writer(spec.value_dtype)
    to_words = _lpm_words(spec, key, True, "bpf_map_update_elem")
    insert = lpm.lpm_insert.dispatcher

    def impl(m, key, value, flags):
        plen, hi, lo = to_words(key)
        spin_lock(m.hdr, H_LOCK)
        e = insert(m.hdr, m.buckets, m.refs, m.free, m.keys, m.index,
                   m.rchild, m.nhdr, m.nent, m.bhi, m.blo, m.rval, plen, hi, lo,
                   np.int64(flags), width, shift)
        if e >= 0:
            write(m.values, e, value)
        spin_unlock(m.hdr, H_LOCK)
        return e if e < 0 else np.int64(0)
    return impl


def _lpm_delete(spec, key):
    width, shift = np.int64(spec.lpm_width), np.uint64(spec.lpm_shift)
    to_words = _lpm_words(spec, key, True, "bpf_map_delete_elem")
    delete = lpm.lpm_delete_locked.dispatcher

    def impl(m, key):
        plen, hi, lo = to_words(key)
        return delete(m.hdr, m.buckets, m.refs, m.free, m.keys, m.index,
                      m.rchild, m.nhdr, m.nent, m.bhi, m.blo, m.rval, plen, hi, lo, width,
                      shift)
    return impl


# ---------------------------------------------------------------- overloads

#: Each outer map's builders, by the map itself: keyed by the map's name, a
#: second object's outer map of the same name got the first's inner layout
#: and type (wrong verdicts, loops that never ended, kept in the code cache);
#: then by the outer map's number in the program using it (a map shared by
#: two program files may have a number in each).
_inner_builders = weakref.WeakKeyDictionary()


def _inner_builder(m):
    """For the handle type ``m`` of a map of maps, a compiled ``build(row,
    number)`` giving the handle of inner map ``number`` (1-based) from its row
    of the outer map's pool: the same views at the same offsets as the inner
    spec. A device map's handle keeps the number (``pool_number``), and its
    type the outer map's number in the program (``_dp_outer_number``): its
    broadcasts name both (broadcast.py)."""
    spec = _spec(m)
    outer_number = getattr(m.instance_class, "_dp_map_number", None)
    builders = _inner_builders.setdefault(spec, {})
    if outer_number in builders:
        return builders[outer_number]
    from collections import namedtuple

    from .runner import map_param_names

    inner = spec.inner_spec
    base = inner.buffer.ctypes.data
    fields = [n[len("m_"):] for n in map_param_names("m", inner)]
    numbered = inner.is_devmap
    handle = namedtuple(f"InnerMapHandle_{spec.name}",
                        fields + (["pool_number"] if numbered else []))
    handle._dp_map = inner
    handle._dp_outer = spec
    handle._dp_outer_number = outer_number
    ns, parts = {"H": handle, "view_bytes": view_bytes}, []
    for i, (field, a) in enumerate(zip(fields, inner.program_arrays())):
        off = a.ctypes.data - base
        if field == "values":  # records (or scalars) of the value dtype
            ns[f"DT{i}"] = inner.value_dtype
            shape = (inner.values.size,)
        else:
            ns[f"DT{i}"] = a.dtype.type
            shape = a.shape
        parts.append(f"view_bytes(row, {off}, DT{i}, {shape})")
    if numbered:
        parts.append("number")
    exec(f"def build(row, number):\n    return H({', '.join(parts)})\n", ns)
    builders[outer_number] = build = njit(**config.INLINE_JIT)(ns["build"])
    return build


@overload(bpf_map_lookup_elem)
def _lookup(m, key):
    spec = _spec(m)
    if spec is None:
        return None
    if spec.is_map_in_map:
        return _lookup_inner(m, spec)
    if spec.is_lpm:
        return _lpm_lookup(spec, key)
    base, n, lru, scalar = _slot_base(spec, m), spec.max_entries, spec.lru, \
        spec.value_dtype.names is None
    if not spec.is_hash:
        vt, size = _slot_form(spec)
        slotted = spec.is_devmap  # an empty slot (ifindex 0) is a miss, as a deleted key

        def impl(m, key):
            i = np.int64(key) & 0xFFFFFFFF
            if i >= n or (slotted and m.values[i] == 0):
                return None
            v = view_bytes(m.values, (base() + i) * size, vt, (1,))
            if scalar:
                return v
            return v[0]
        return impl
    pack, (find, touch, _, _) = key_packer(spec.key_dtype), table_ops(spec, hinted=True)
    inline, row, voff = _inline_value(spec)
    vt, size = _slot_form(spec)

    def impl(m, key):
        e = find(m, pack(key))
        if e < 0:
            return None
        if lru:
            touch(m, e)
        if inline:  # compile-time constants: numba keeps one branch of each
            v = view_bytes(m.keys, e * row + voff, vt, (1,))
        else:
            v = view_bytes(m.values, (base() + e) * size, vt, (1,))
        if scalar:
            return v
        return v[0]
    return impl


def _inline_value(spec):
    """(inline, row bytes, value offset in the row) of a hash map:
    HASH / LRU_HASH keep an entry's value in its key row (maps.py), read through
    a view of the row; the others in the value array, at the entry's slot."""
    if not spec.inline_values:
        return False, 0, 0
    return True, spec.keys.strides[0], spec.value_offset


def _value_type(spec):
    """The map's value type as view_bytes takes it: a numpy scalar type or a record dtype."""
    vt = spec.value_dtype
    return vt.type if vt.names is None else vt


def _lookup_inner(m, spec):
    """Lookup in an ARRAY_OF_MAPS / HASH_OF_MAPS: the inner map's handle, or None."""
    build, n = _inner_builder(m), spec.max_entries
    if not spec.is_hash:
        def impl(m, key):
            i = np.int64(key) & 0xFFFFFFFF
            if i >= n or m.values[i] == 0:
                return None
            return build(m.pool[m.values[i] - 1], np.int64(m.values[i]))
        return impl
    pack, find = key_packer(spec.key_dtype), htab.htab_find_key.dispatcher

    def impl(m, key):
        k = pack(key)
        e = find(m.hdr, m.buckets, m.keys, k)
        if e < 0:
            return None
        return build(m.pool[m.values[e] - 1], np.int64(m.values[e]))
    return impl


EOPNOTSUPP = 95  # maps of maps are changed by the control plane only, as in the kernel


array_update_error = htab.array_update_error.dispatcher


@overload(bpf_map_update_elem)
def _update(m, key, value, flags):
    spec = _spec(m)
    if spec is None:
        return None
    if spec.is_map_in_map:
        return lambda m, key, value, flags: np.int64(-EOPNOTSUPP)
    if spec.is_lpm:
        return _lpm_update(spec, key)
    base, n, write = _slot_base(spec, m), spec.max_entries, _writer(spec.value_dtype)
    if not spec.is_hash:
        def impl(m, key, value, flags):
            i = np.int64(key) & 0xFFFFFFFF
            err = array_update_error(i, n, flags)
            if err:
                return err
            write(m.values, base() + i, value)
            return np.int64(0)
        return impl
    pack, insert = key_packer(spec.key_dtype), table_ops(spec)[2]
    (inline, row, voff), vt = _inline_value(spec), _value_type(spec)

    def impl(m, key, value, flags):
        spin_lock(m.hdr, H_LOCK)  # the value too: two workers' updates never mix
        e, created = insert(m, pack(key), np.int64(flags))
        if e >= 0:
            if inline:
                write(view_bytes(m.keys, e * row + voff, vt, (1,)), 0, value)
            else:
                write(m.values, base() + e, value)
        spin_unlock(m.hdr, H_LOCK)
        return e if e < 0 else np.int64(0)
    return impl


@overload(bpf_map_delete_elem)
def _delete(m, key):
    spec = _spec(m)
    if spec is None:
        return None
    if spec.is_map_in_map:
        return lambda m, key: np.int64(-EOPNOTSUPP)
    if spec.is_lpm:
        return _lpm_delete(spec, key)
    if not spec.is_hash:
        EINVAL = -htab.EINVAL
        return lambda m, key: np.int64(EINVAL)
    pack, delete = key_packer(spec.key_dtype), table_ops(spec)[3]

    def impl(m, key):
        return delete(m, pack(key))
    return impl


def bpf_map_prefetch(m, key):
    """Start loading the cache lines a lookup of ``key`` will read (no kernel
    counterpart: for ``@xdp(prefetch=...)`` hooks, which run a few packets
    ahead). Arrays: the value's line. LRU hash maps: the rows of the key's slot
    and the next (its walk's first two); in a hook, the key's hash is kept for
    the packet, and the program's lookup in that map starts from it (the last
    LRU map the hook fetched from: a hint, see lru_htab.lru_find_hinted).
    Other hash maps: the key's bucket's line, and the hook's memo notes the
    bucket, so that the loop, some packets later, reads it (cached by then) and
    fetches the rows of the chain's first two entries (kernels/runner.py).
    Returns 0. Changes nothing; in a program's body it only fetches."""
    raise NotImplementedError("bpf_map_prefetch runs only inside a program")


@overload(bpf_map_prefetch)
def _prefetch(m, key):
    spec = _spec(m)
    if spec is None:
        return None
    if spec.open_addressed:  # the key's slot and the next: a hit reads 1.3 rows (lru_htab.py)
        pack, key_hash = key_packer(spec.key_dtype), htab.key_hash.dispatcher
        mask, row = np.uint64(spec.keys.shape[0] - 1), np.uint64(spec.keys.strides[0])

        def impl(m, key):
            h = key_hash(pack(key), seed_of(m.hdr))
            s = h & mask
            prefetch(m.keys, s * row)
            prefetch(m.keys, ((s + np.uint64(1)) & mask) * row)
            memo = prefetch_memo()
            if memo != 0:  # in the hook: the hash, where the program's lookup starts
                slot = as_pointer(memo, np.int64)
                slot[MEMO_HINT] = byte_address(m.keys, 0)
                slot[MEMO_HINT + 1] = np.int64(h)
            return np.int64(0)
        return impl
    if spec.is_hash and not spec.is_lpm:
        pack, key_hash = key_packer(spec.key_dtype), htab.key_hash.dispatcher
        mask, row = np.uint64(spec.buckets.size - 1), spec.keys.strides[0]

        def impl(m, key):
            b = key_hash(pack(key), seed_of(m.hdr)) & mask
            prefetch(m.buckets, b * 4)
            memo = prefetch_memo()
            if memo != 0:  # in the hook: note the bucket for the loop's second look
                slot = as_pointer(memo, np.int64)
                n = slot[0]
                if n < MEMO_ENTRIES:
                    w = 1 + MEMO_WORDS * n
                    slot[w] = byte_address(m.buckets, b * 4)
                    slot[w + 1] = byte_address(m.keys, 0)
                    slot[w + 2] = row
                    slot[0] = n + 1
            return np.int64(0)
        return impl
    if not (spec.is_lpm or spec.is_map_in_map) and spec.values.ndim == 2:
        size, n = spec.value_dtype.itemsize, spec.max_entries

        def impl(m, key):
            i = np.int64(key) & 0xFFFFFFFF
            if i < n:
                prefetch(m.values, i * size)
            return np.int64(0)
        return impl
    return lambda m, key: np.int64(0)


def bpf_map_push_elem(m, value, flags):
    """``bpf_map_push_elem(map, value, flags)`` (helper 87) on a QUEUE or a STACK:
    0; -E2BIG when full, unless ``flags`` is BPF_EXIST (the oldest value makes
    room); -EINVAL for other flags. ``value`` as bpf_map_update_elem takes one:
    an int for a scalar value type, a tuple of ints (one per field) for a record."""
    raise NotImplementedError("bpf_map_push_elem runs only inside a program")


def bpf_map_pop_elem(m):
    """``bpf_map_pop_elem(map, &value)`` (helper 88) on a QUEUE (its oldest
    value) or a STACK (its newest), taken out: ``err, value = ...``, err 0 or
    -ENOENT when empty (the value then zero, as the kernel leaves it). The
    value is an int for a scalar value type, a tuple of the fields for a
    record (a copy: the slot is free again)."""
    raise NotImplementedError("bpf_map_pop_elem runs only inside a program")


def bpf_map_peek_elem(m):
    """``bpf_map_peek_elem(map, &value)`` (helper 89): ``err, value`` as
    bpf_map_pop_elem gives them, the value left in the map."""
    raise NotImplementedError("bpf_map_peek_elem runs only inside a program")


def _queue_stack_spec(m, helper):
    spec = _spec(m)
    if spec is None:
        return None
    if not getattr(spec, "is_queue_stack", False):
        raise ProgramError(f"{helper} needs a queue or a stack map: '{spec.name}' is a "
                           f"{spec.type_name}")
    return spec


_readers = {}  # by dtype


def _field_reader(spec):
    """Compiled ``read(view) -> value`` of a one-record view (the scalar, or a
    tuple of the record's fields: a copy, made while the map's lock is held)
    and ``zero() -> value`` of the same type."""
    dtype = spec.value_dtype
    names = dtype.names or ()
    kinds = [dtype.fields[n][0] for n in names] if names else [dtype]
    if any(k.shape or k.kind not in "iu" for k in kinds):
        raise ProgramError(f"map '{spec.name}': a Python program pops integer fields, not "
                           f"{dtype}")
    if dtype not in _readers:
        zeros = ", ".join(f"_np.{k.name}(0)" for k in kinds)
        if names:
            src = ("def read(view):\n    r = view[0]\n    return ("
                   + "".join(f"r.{n}, " for n in names)
                   + f")\ndef zero():\n    return ({zeros},)\n")
        else:
            src = f"def read(view):\n    return view[0]\ndef zero():\n    return {zeros}\n"
        ns = {"_np": np}
        exec(src, ns)
        _readers[dtype] = (njit(**config.INLINE_JIT)(ns["read"]),
                           njit(**config.INLINE_JIT)(ns["zero"]))
    return _readers[dtype]


def _is_int_type(t):
    return isinstance(t, (types.Integer, types.Boolean))


@overload(bpf_map_push_elem)
def _push_elem(m, value, flags):
    spec = _queue_stack_spec(m, "bpf_map_push_elem")
    if spec is None:
        return None
    dtype = spec.value_dtype
    if dtype.names is None:
        ok, want = _is_int_type(value), f"an int ({dtype})"
    else:
        ok = isinstance(value, types.BaseTuple) and len(value) == len(dtype.names) \
            and all(_is_int_type(t) for t in value)
        want = f"a tuple of {len(dtype.names)} ints ({', '.join(dtype.names)})"
    if not ok:
        raise ProgramError(f"map '{spec.name}': bpf_map_push_elem takes a value as {want}, "
                           f"not {value}")
    write, vt, size = _writer(dtype), _value_type(spec), np.int64(dtype.itemsize)
    slots = np.int64(spec.max_entries + 1)
    claim, done = queue_stack.push_slot.dispatcher, queue_stack.push_done.dispatcher

    def impl(m, value, flags):
        head = claim(m.hdr, slots, flags)
        if head < 0:
            return head
        write(view_bytes(m.elems, head * size, vt, (1,)), 0, value)
        return done(m.hdr, slots, head)
    return impl


def _get_elem(m, helper, delete):
    spec = _queue_stack_spec(m, helper)
    if spec is None:
        return None
    (read, zero), vt = _field_reader(spec), _value_type(spec)
    size, slots, stack = np.int64(spec.value_dtype.itemsize), \
        np.int64(spec.max_entries + 1), spec.is_stack
    claim, done = queue_stack.get_slot.dispatcher, queue_stack.get_done.dispatcher

    def impl(m):
        at = claim(m.hdr, slots, stack)
        if at < 0:
            return at, zero()
        v = read(view_bytes(m.elems, at * size, vt, (1,)))
        return done(m.hdr, slots, at, stack, delete), v
    return impl


@overload(bpf_map_pop_elem)
def _pop_elem(m):
    return _get_elem(m, "bpf_map_pop_elem", True)


@overload(bpf_map_peek_elem)
def _peek_elem(m):
    return _get_elem(m, "bpf_map_peek_elem", False)


def bpf_redirect_map(m, key, flags):
    """``bpf_redirect_map(devmap, key, flags)`` (helper 51): return it from the
    program. XDP_REDIRECT to the device in slot ``key``; a missing key gives
    the fallback action in the low two bits of ``flags`` (XDP_PASS, ...). With
    BPF_F_BROADCAST, XDP_REDIRECT to every device of the map (``key`` is looked
    up, and ignored), but the packet's ingress device with also
    BPF_F_EXCLUDE_INGRESS (broadcast.py). Other flags give XDP_ABORTED."""
    raise NotImplementedError("bpf_redirect_map runs only inside a program")


_ACTION_MASK = 3  # BPF_F_ACTION_MASK: XDP_ABORTED .. XDP_TX
redirect_target = helpers.redirect_target.dispatcher
KNOWN_REDIRECT_FLAGS = _ACTION_MASK | BPF_F_BROADCAST | BPF_F_EXCLUDE_INGRESS


@njit(**config.INLINE_JIT)
def _pool_number(m):
    return m.pool_number


@njit(**config.INLINE_JIT)
def _no_pool_number(m):
    return 0


def _broadcast(number):
    """A compiled ``broadcast(flags, inner)``: the verdict of a broadcast over
    map ``number``, or its inner map ``inner`` (its number in the pool, 0: the
    map itself; broadcast.py); XDP_ABORTED where the map has no number."""
    everywhere, elsewhere = broadcast_target(number, False), broadcast_target(number, True)
    if everywhere is None:
        return njit(**config.INLINE_JIT)(lambda f, inner: np.int64(XDP_ABORTED))

    @njit(**config.INLINE_JIT)
    def broadcast(f, inner):
        return redirect_target((elsewhere if f & BPF_F_EXCLUDE_INGRESS else everywhere)
                               | (inner << INNER_SHIFT))
    return broadcast


@overload(bpf_redirect_map)
def _redirect_map(m, key, flags):
    spec = _spec(m)
    if spec is None or not spec.is_devmap:
        return None
    n = spec.max_entries
    number = getattr(m.instance_class, "_dp_map_number", None)
    outer = getattr(m.instance_class, "_dp_outer", None)
    if outer is None:
        pool_number = _no_pool_number
    else:  # an inner map: its broadcasts name the outer map and its number there
        number = m.instance_class._dp_outer_number
        if len(outer.inner_maps) > INNER_NUMBER:
            number = None
        pool_number = _pool_number
    broadcast = _broadcast(number if number is not None else -1)
    if not spec.is_hash:
        def impl(m, key, flags):
            f = np.int64(flags)
            if f & ~KNOWN_REDIRECT_FLAGS:
                return np.int64(XDP_ABORTED)
            if f & BPF_F_BROADCAST:
                return broadcast(f, pool_number(m))
            i = np.int64(key) & 0xFFFFFFFF
            if i < n and m.values[i] != 0:
                return redirect_target(m.values[i])
            return f & _ACTION_MASK
        return impl
    pack, find = key_packer(spec.key_dtype), htab.htab_find_key.dispatcher

    def impl(m, key, flags):
        f = np.int64(flags)
        if f & ~KNOWN_REDIRECT_FLAGS:
            return np.int64(XDP_ABORTED)
        if f & BPF_F_BROADCAST:
            return broadcast(f, pool_number(m))
        k = pack(key)
        e = find(m.hdr, m.buckets, m.keys, k)
        if e >= 0 and m.values[e] != 0:
            return redirect_target(m.values[e])
        return f & _ACTION_MASK
    return impl


def bpf_tail_call(ctx, m, index):
    """``bpf_tail_call(ctx, prog_array, index)`` (helper 12): run the program in
    slot ``index`` on this packet instead of returning; its verdict is the
    packet's. Returns -ENOENT (and the caller goes on) for an empty slot or past
    33 chained calls, as the kernel does. Write ``return`` right after it: unlike
    the kernel, the call comes back (0) and the caller's verdict is then ignored."""
    raise NotImplementedError("bpf_tail_call runs only inside a program")


@overload(bpf_tail_call)
def _tail_call(ctx, m, index):
    spec = _spec(m)
    if spec is None or spec.type != 3:  # BPF_MAP_TYPE_PROG_ARRAY
        return None
    from .xdp import tail_call_request

    n, ENOENT = spec.max_entries, -htab.ENOENT

    def impl(ctx, m, index):
        i = np.int64(index) & 0xFFFFFFFF
        if i >= n or m.values[i] == 0 or not tail_call_request(m.values[i]):
            return np.int64(ENOENT)
        return np.int64(0)
    return impl


def sync_fetch_and_add(v, delta):
    """``__sync_fetch_and_add(v, delta)`` on a scalar map value (the one-element
    view bpf_map_lookup_elem gives): an atomic add, for counters that several
    workers update; returns the old value."""
    raise NotImplementedError("sync_fetch_and_add runs only inside a program")


@overload(sync_fetch_and_add)
def _sync_fetch_and_add(v, delta):
    if not (isinstance(v, types.Array) and v.ndim == 1
            and isinstance(v.dtype, types.Integer)):
        return None
    from .memory import atomic_add

    return lambda v, delta: atomic_add(v, 0, delta)
