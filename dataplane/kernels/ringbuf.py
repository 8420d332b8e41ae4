"""BPF_MAP_TYPE_RINGBUF inside programs: ``bpf_ringbuf_output`` (numba code,
imported only when a program is compiled).

The ring's layout and its Python side (``read``, ``peek``, ...) are in maps.py
(``RingBuf``); this is the producer. A record is written as the kernel writes
one (kernel/bpf/ringbuf.c): an 8-byte header (``u32 len``, ``u32 pg_off``,
here 0), then the data, padded to 8 bytes, at the producer position (a byte
counter that only grows; its offset in the ring is ``pos & (size - 1)``). The
room check is the kernel's: ``new_prod - cons > size - 1`` fails with -EAGAIN
and the record is dropped (counted in the ring's header as well). The data
and the header are stored before the producer position is published with a
release store, and the consumer position is read with an acquire load, so a
process draining a pinned ring never sees half a record.

The data is written as 8-byte words (the record's bytes as numpy stores them,
read as little-endian words: maps.pack_source), each at ``(pos + 8 k) & mask``:
a record that runs past the end of the ring continues at its start (the
kernel maps the data pages twice for the same effect).
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from .. import config
from ..errors import ProgramError
from .map_api import key_packer as packer
from ..maps import (BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, RB_CONSUMER, RB_DROPPED,
                    RB_LOCK, RB_PRODUCER, RB_WRITTEN)
from .memory import load_acquire, spin_lock, spin_unlock, store_release

EAGAIN, EINVAL = 11, 22
_FLAGS = BPF_RB_NO_WAKEUP | BPF_RB_FORCE_WAKEUP


def bpf_ringbuf_output(ringbuf, data, flags):
    """``bpf_ringbuf_output(ringbuf, data, flags)`` (helper 130): copy one record
    of the ring's value dtype into it: 0, -EAGAIN when there is no room (the
    record is dropped and counted in ``ringbuf.dropped``), -EINVAL for flags
    other than BPF_RB_NO_WAKEUP / BPF_RB_FORCE_WAKEUP (accepted and ignored).
    ``data`` is an int for a scalar value dtype, a tuple of ints (one per
    field, in order) for a structured one; the kernel's ``size`` argument is
    the dtype's itemsize."""
    raise NotImplementedError("bpf_ringbuf_output runs only inside a program")


@njit(**config.INLINE_JIT)
def ringbuf_claim(hdr, ring, nbytes):
    """Take the ring's lock and room for ``nbytes``: the producer position, or -1
    (no room: counted in RB_DROPPED, the lock given back)."""
    spin_lock(hdr, RB_LOCK)
    cons = load_acquire(hdr, RB_CONSUMER)
    prod = hdr[RB_PRODUCER]
    if prod + nbytes - cons > 8 * ring.size - 1:  # the kernel's "new_prod - cons > mask"
        hdr[RB_DROPPED] += 1
        spin_unlock(hdr, RB_LOCK)
        return np.int64(-1)
    return prod


@njit(**config.INLINE_JIT)
def ringbuf_publish(hdr, ring, prod, nbytes, head):
    """Write a claimed record's header word and publish it (a release store after
    its data), then give the lock back."""
    ring[(prod >> 3) & (ring.size - 1)] = head
    hdr[RB_WRITTEN] += 1
    store_release(hdr, RB_PRODUCER, prod + nbytes)
    spin_unlock(hdr, RB_LOCK)
    return np.int64(0)


@njit(**config.INLINE_JIT)
def ringbuf_write(hdr, ring, head, words, flags):
    """Append one record (header word ``head``, then ``words``) to the ring
    ``hdr`` (int64 positions) / ``ring`` (uint64 words): 0, -EAGAIN or -EINVAL."""
    if np.int64(flags) & ~np.int64(_FLAGS):
        return np.int64(-EINVAL)
    nbytes = np.int64(8 * (len(words) + 1))
    prod = ringbuf_claim(hdr, ring, nbytes)
    if prod < 0:
        return np.int64(-EAGAIN)
    wmask, w = np.int64(ring.size - 1), prod >> 3
    k = np.int64(1)
    for x in words:
        ring[(w + k) & wmask] = x
        k += 1
    return ringbuf_publish(hdr, ring, prod, nbytes, head)


def _ring_spec(rb):
    return getattr(getattr(rb, "instance_class", None), "_dp_ringbuf", None)


def _is_int(t):
    return isinstance(t, (types.Integer, types.Boolean))


@overload(bpf_ringbuf_output)
def _output(rb, data, flags):
    spec = _ring_spec(rb)
    if spec is None:
        return None
    dtype = spec.value_dtype
    names = dtype.names
    if spec.variable:
        raise ProgramError(f"map '{spec.name}': a ring of raw records ({dtype}) takes them "
                           "from eBPF objects only: give it a record dtype")
    if names is None:
        ok = _is_int(data)
        want = f"an int ({dtype})"
    else:
        ok = isinstance(data, types.BaseTuple) and len(data) == len(names) \
            and all(_is_int(t) for t in data)
        want = f"a tuple of {len(names)} ints ({', '.join(names)})"
    if not ok:
        raise ProgramError(f"map '{spec.name}': bpf_ringbuf_output takes a record as {want}, "
                           f"not {data}")
    if not _is_int(flags):
        raise ProgramError(f"map '{spec.name}': bpf_ringbuf_output's flags are an int, "
                           f"not {flags}")
    pack = packer(dtype)
    head = np.uint64(dtype.itemsize)  # struct bpf_ringbuf_hdr: len, pg_off = 0

    def impl(rb, data, flags):
        return ringbuf_write(rb.hdr, rb.ring, head, pack(data), flags)
    return impl
