"""BPF_MAP_TYPE_QUEUE and BPF_MAP_TYPE_STACK (kernel/bpf/queue_stack_maps.c):
push, pop and peek, compiled (numba; imported when a program or the control
plane first touches such a map).

The layout is the kernel's: ``max_entries + 1`` value slots (one always free,
so that ``head == tail`` means empty and ``head + 1 == tail`` full), ``head``
the next slot written, ``tail`` the oldest element. A queue pops at the tail,
a stack at ``head - 1``; a push with BPF_EXIST into a full map first drops the
oldest element (the tail moves on), for both. Every operation holds the map's
spin lock (the kernel's raw_spin_lock), so workers and a process changing a
pinned map take turns. push_slot / get_slot take the lock and name the slot,
push_done / get_done give it back: between them an eBPF object's value is
copied byte by byte from or to its address (queue_stack_push / _get: the
program's stack, the control plane's bytes), a Python program's written or
read as a record (kernels/map_api.py).
"""

import numpy as np

from .. import config
from ..jit import kernel, lazy
from .htab import BPF_EXIST, BPF_NOEXIST, E2BIG, EINVAL, ENOENT

as_pointer, byte_address, spin_lock, spin_unlock = (
    lazy("dataplane.kernels.memory", n) for n in ("as_pointer", "byte_address", "spin_lock",
                                                  "spin_unlock"))

#: The header's int64 words (a cache line): next slot written, oldest slot, lock.
QS_HEAD, QS_TAIL, QS_LOCK = 0, 1, 2
QS_HDR_WORDS = 8


@kernel(**config.INLINE_JIT)
def _copy(dst, src, size):
    d, s = as_pointer(dst, np.uint8), as_pointer(src, np.uint8)
    for i in range(size):
        d[i] = s[i]


@kernel(**config.INLINE_JIT)
def _after(i, slots):
    """The slot after ``i`` around the ring."""
    return i + 1 if i + 1 < slots else np.int64(0)


@kernel(**config.INLINE_JIT)
def push_slot(hdr, slots, flags):
    """Take the lock and the slot a push writes (the head): its number; or
    -E2BIG when full (with BPF_EXIST the oldest element makes room), -EINVAL for
    BPF_NOEXIST or flags above BPF_EXIST, the lock not held."""
    f = np.uint64(flags)
    if f & np.uint64(BPF_NOEXIST) or f > np.uint64(BPF_EXIST):
        return np.int64(-EINVAL)
    spin_lock(hdr, QS_LOCK)
    head = hdr[QS_HEAD]
    if _after(head, slots) == hdr[QS_TAIL]:
        if f != np.uint64(BPF_EXIST):
            spin_unlock(hdr, QS_LOCK)
            return np.int64(-E2BIG)
        hdr[QS_TAIL] = _after(hdr[QS_TAIL], slots)
    return head


@kernel(**config.INLINE_JIT)
def push_done(hdr, slots, head):
    """The value is in slot ``head``: move the head past it, give the lock back: 0."""
    hdr[QS_HEAD] = _after(head, slots)
    spin_unlock(hdr, QS_LOCK)
    return np.int64(0)


@kernel(**config.INLINE_JIT)
def get_slot(hdr, slots, stack):
    """Take the lock and the slot a pop or a peek reads (a queue's oldest, a
    ``stack``'s newest): its number, or -ENOENT when empty, the lock not held."""
    spin_lock(hdr, QS_LOCK)
    head, tail = hdr[QS_HEAD], hdr[QS_TAIL]
    if head == tail:
        spin_unlock(hdr, QS_LOCK)
        return np.int64(-ENOENT)
    if stack:
        return head - 1 if head > 0 else slots - 1
    return tail


@kernel(**config.INLINE_JIT)
def get_done(hdr, slots, at, stack, delete):
    """Slot ``at`` was read: a pop (``delete``) frees it; give the lock back: 0."""
    if delete:
        if stack:
            hdr[QS_HEAD] = at
        else:
            hdr[QS_TAIL] = _after(at, slots)
    spin_unlock(hdr, QS_LOCK)
    return np.int64(0)


@kernel(**config.INLINE_JIT)
def queue_stack_push(hdr, elems, value, size, flags):
    """bpf_map_push_elem with the value's ``size`` bytes at address ``value``:
    0 or -errno (push_slot)."""
    slots = np.int64(elems.size // size)
    head = push_slot(hdr, slots, flags)
    if head < 0:
        return head
    _copy(byte_address(elems, head * size), value, size)
    return push_done(hdr, slots, head)


@kernel(**config.INLINE_JIT)
def queue_stack_get(hdr, elems, value, size, stack, delete):
    """bpf_map_peek_elem / bpf_map_pop_elem (``delete``) into the ``size`` bytes
    at address ``value``: 0; an empty map zeroes them and gives -ENOENT."""
    slots = np.int64(elems.size // size)
    at = get_slot(hdr, slots, stack)
    if at < 0:
        out = as_pointer(value, np.uint8)
        for i in range(size):
            out[i] = 0
        return at
    _copy(value, byte_address(elems, at * size), size)
    return get_done(hdr, slots, at, stack, delete)


@kernel(**config.KERNEL_JIT)
def queue_stack_push_py(hdr, elems, value, flags):
    """Control-plane push of the bytes ``value`` (BPF_MAP_UPDATE_ELEM)."""
    return queue_stack_push(hdr, elems, byte_address(value, 0), value.size, flags)


@kernel(**config.KERNEL_JIT)
def queue_stack_get_py(hdr, elems, value, stack, delete):
    """Control-plane peek (BPF_MAP_LOOKUP_ELEM) or pop (BPF_MAP_LOOKUP_AND_DELETE_ELEM)
    into the bytes ``value``."""
    return queue_stack_get(hdr, elems, byte_address(value, 0), value.size, stack, delete)


@kernel(**config.KERNEL_JIT)
def queue_stack_snapshot(hdr, elems, size, stack, out):
    """The elements' bytes in the order pops would give them, copied into
    ``out`` (max_entries * size bytes) under the lock: how many."""
    slots = np.int64(elems.size // size)
    spin_lock(hdr, QS_LOCK)
    head, tail = hdr[QS_HEAD], hdr[QS_TAIL]
    n = head - tail if head >= tail else head + slots - tail
    for k in range(n):
        s = head - 1 - k if stack else tail + k
        s = s + slots if s < 0 else (s - slots if s >= slots else s)
        _copy(byte_address(out, k * size), byte_address(elems, s * size), size)
    spin_unlock(hdr, QS_LOCK)
    return n
