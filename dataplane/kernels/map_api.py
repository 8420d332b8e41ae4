"""Map operations inside programs: bpf_map_lookup_elem / update_elem / delete_elem.

numba overloads, imported only when a program is compiled. A program's map is
a handle (a namedtuple of the map's arrays, built by the program's loop) whose
class carries the Map (``_dp_map``); each overload specialises on it: key
packing, value layout, LRU or not, array or hash, are all compile-time facts.

A value is given in place, as the kernel gives a pointer into the map: a
record for a structured value (``v.packets += 1``), a one-element array for a
scalar (``v[0] += 1``), or None when the key is missing. Per-CPU maps give the
running worker's slot (worker 0 until workers exist).
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from .. import config
from ..maps import pack_source
from . import htab

_CPU = 0  # the worker's slot in per-CPU values (multi-worker: issue 7)


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


_packers, _writers = {}, {}


def _packer(dtype):
    """A compiled ``pack(key) -> words`` for keys of ``dtype``."""
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


def _slot_base(spec):
    return _CPU * spec.max_entries if spec.percpu else 0


@overload(bpf_map_lookup_elem)
def _lookup(m, key):
    spec = _spec(m)
    if spec is None:
        return None
    base, n, lru, scalar = _slot_base(spec), spec.max_entries, spec.lru, \
        spec.value_dtype.names is None
    if not spec.is_hash:
        if scalar:
            def impl(m, key):
                i = np.int64(key) & 0xFFFFFFFF
                if i >= n:
                    return None
                return m.values[base + i:base + i + 1]
        else:
            def impl(m, key):
                i = np.int64(key) & 0xFFFFFFFF
                if i >= n:
                    return None
                return m.values[base + i]
        return impl
    pack, find = _packer(spec.key_dtype), htab.htab_find.dispatcher
    key_hash, touch = htab.key_hash.dispatcher, htab.lru_touch.dispatcher
    if scalar:
        def impl(m, key):
            k = pack(key)
            e = find(m.buckets, m.chain, m.keys, k, key_hash(k))
            if e < 0:
                return None
            if lru:
                touch(m.hdr, m.prev, m.next, e)
            return m.values[base + e:base + e + 1]
    else:
        def impl(m, key):
            k = pack(key)
            e = find(m.buckets, m.chain, m.keys, k, key_hash(k))
            if e < 0:
                return None
            if lru:
                touch(m.hdr, m.prev, m.next, e)
            return m.values[base + e]
    return impl


@overload(bpf_map_update_elem)
def _update(m, key, value, flags):
    spec = _spec(m)
    if spec is None:
        return None
    base, n, lru, write = _slot_base(spec), spec.max_entries, spec.lru, \
        _writer(spec.value_dtype)
    E2BIG, EEXIST, EINVAL = -htab.E2BIG, -htab.EEXIST, -htab.EINVAL
    if not spec.is_hash:
        def impl(m, key, value, flags):
            i = np.int64(key) & 0xFFFFFFFF
            if flags > htab.BPF_EXIST or flags < 0:
                return np.int64(EINVAL)
            if i >= n:
                return np.int64(E2BIG)
            if flags == htab.BPF_NOEXIST:
                return np.int64(EEXIST)
            write(m.values, base + i, value)
            return np.int64(0)
        return impl
    pack, insert = _packer(spec.key_dtype), htab.htab_insert.dispatcher

    def impl(m, key, value, flags):
        e, created = insert(m.hdr, m.buckets, m.chain, m.prev, m.next, m.free, m.keys,
                            pack(key), np.int64(flags), lru)
        if e < 0:
            return e
        write(m.values, base + e, value)
        return np.int64(0)
    return impl


@overload(bpf_map_delete_elem)
def _delete(m, key):
    spec = _spec(m)
    if spec is None:
        return None
    if not spec.is_hash:
        EINVAL = -htab.EINVAL
        return lambda m, key: np.int64(EINVAL)
    pack, delete, lru = _packer(spec.key_dtype), htab.htab_delete.dispatcher, spec.lru

    def impl(m, key):
        return delete(m.hdr, m.buckets, m.chain, m.prev, m.next, m.free, m.keys, pack(key),
                      lru)
    return impl


def is_map_handle(t):
    """True for the numba type of a map handle (used by the checker's tests)."""
    return isinstance(t, types.NamedTuple) and _spec(t) is not None
