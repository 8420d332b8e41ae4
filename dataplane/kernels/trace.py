"""``bpf_trace_printk`` inside programs (numba code, imported only when a
program is compiled).

A program writes ``bpf_trace_printk("x=%d y=%x\\n", x, y)``; at load the
checker (program_check.py) validates the format and rewrites the call to
``trace_printk(_dp_trace, FMT_ID, STATIC_LEN, SPEC1, SPEC2, SPEC3, a1, a2, a3)``:
the format becomes its index in the file's format table, ``STATIC_LEN`` is the
length of its text outside the directives, each ``SPEC`` says what a directive
prints (TRACE_* kinds below, plus the field width << 8), missing arguments are
0. At run time the call appends a record (packet index, format id, the three
arguments as u64) to the program's trace ring (kernels/runner.py's
TRACE_RECORD, a RingBuf); Python formats the lines after the batch.

The result is the kernel's: the length in bytes of the formatted line (what
``bstr_printf`` returns, trailing newline included), or -EAGAIN (-11) when the
trace ring had no room (the line is dropped and counted).
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from .. import config
from ..errors import ProgramError
from .ringbuf import ringbuf_write
from .budget import trace_packet
from .runner import TRACE_RECORD

# Directive kinds (the low 4 bits of a SPEC); program_check.py parses formats into them.
TRACE_NONE, TRACE_D32, TRACE_U32, TRACE_X32, TRACE_D64, TRACE_U64, TRACE_X64, TRACE_CHAR = \
    range(8)

_HEAD = np.uint64(TRACE_RECORD.itemsize)


def trace_printk(t, fmt_id, static_len, s1, s2, s3, a1, a2, a3):
    """What a program's ``bpf_trace_printk(fmt, ...)`` becomes (see the module)."""
    raise NotImplementedError("bpf_trace_printk runs only inside a program")


@njit(**config.INLINE_JIT)
def _dec_len(u):
    n = np.int64(1)
    while u >= np.uint64(10):
        u = u // np.uint64(10)
        n += 1
    return n


@njit(**config.INLINE_JIT)
def _hex_len(u):
    n = np.int64(1)
    while u >= np.uint64(16):
        u = u >> np.uint64(4)
        n += 1
    return n


@njit(**config.INLINE_JIT)
def _field_len(spec, v):
    """Bytes a directive prints for the argument's 64 bits ``v`` (uint64)."""
    kind = spec & 15
    if kind == TRACE_NONE:
        return np.int64(0)
    low = v & np.uint64(0xFFFFFFFF)
    if kind == TRACE_CHAR:
        n = np.int64(1)
    elif kind == TRACE_D32:
        if low >= np.uint64(0x80000000):
            n = _dec_len(np.uint64(0x100000000) - low) + 1
        else:
            n = _dec_len(low)
    elif kind == TRACE_U32:
        n = _dec_len(low)
    elif kind == TRACE_X32:
        n = _hex_len(low)
    elif kind == TRACE_D64:
        if v >= np.uint64(0x8000000000000000):
            n = _dec_len(~v + np.uint64(1)) + 1
        else:
            n = _dec_len(v)
    elif kind == TRACE_U64:
        n = _dec_len(v)
    else:
        n = _hex_len(v)
    return max(n, np.int64(spec >> 8))


@njit(**config.INLINE_JIT)
def _u64(a):
    return np.uint64(np.int64(a))


@overload(trace_printk)
def _trace_printk(t, fmt_id, static_len, s1, s2, s3, a1, a2, a3):
    for k, a in enumerate((a1, a2, a3)):
        if not isinstance(a, (types.Integer, types.Boolean)):
            raise ProgramError(f"bpf_trace_printk: argument {k + 1} is {a}, not an integer "
                               "(the kernel passes 64-bit registers)")

    def impl(t, fmt_id, static_len, s1, s2, s3, a1, a2, a3):
        v1, v2, v3 = _u64(a1), _u64(a2), _u64(a3)
        r = ringbuf_write(t.hdr, t.ring, _HEAD,
                          (np.uint64(trace_packet()), np.uint64(fmt_id), v1, v2, v3), 0)
        if r < 0:
            return r
        return np.int64(static_len) + _field_len(s1, v1) + _field_len(s2, v2) \
            + _field_len(s3, v3)
    return impl
