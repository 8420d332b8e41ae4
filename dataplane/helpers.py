"""Helpers callable from programs, with the kernel's names and argument order."""

import numpy as np

from . import config
from .action import XDP_ABORTED, XDP_REDIRECT
from .jit import api, kernel, lazy


@kernel(**config.INLINE_JIT)
def redirect_target(ifindex):
    """The verdict XDP_REDIRECT to ``ifindex``: the target in the upper 32 bits,
    plus one (0: none); the runner takes it apart (runner.store_verdict)."""
    return (((np.int64(ifindex) & 0xFFFFFFFF) + 1) << 32) | XDP_REDIRECT


@api
@kernel(**config.INLINE_JIT)
def bpf_redirect(ifindex, flags):
    """``bpf_redirect(ifindex, flags)`` (helper 23): return it from the program.

    Returns XDP_REDIRECT carrying the target in its upper 32 bits (the kernel
    keeps it per CPU instead); the runner decodes it. Non-zero flags give
    XDP_ABORTED, as the kernel's XDP variant returns for unknown flags, and
    so does an ifindex of 2**31 or more, which no device has (the kernel's
    redirect fails later, and drops the frame; here such targets are
    broadcasts: broadcast.py).
    """
    if flags != 0 or np.int64(ifindex) & 0x80000000:
        return np.int64(XDP_ABORTED)
    return redirect_target(ifindex)


def _xdp(name):
    return api(lazy("dataplane.kernels.xdp", name))


bpf_xdp_adjust_head = _xdp("bpf_xdp_adjust_head")
bpf_xdp_adjust_tail = _xdp("bpf_xdp_adjust_tail")
bpf_xdp_adjust_meta = _xdp("bpf_xdp_adjust_meta")
bpf_get_smp_processor_id = _xdp("bpf_get_smp_processor_id")
bpf_get_prandom_u32 = _xdp("bpf_get_prandom_u32")
bpf_ktime_get_ns = _xdp("bpf_ktime_get_ns")
bpf_ktime_get_coarse_ns = _xdp("bpf_ktime_get_coarse_ns")


@api
def bpf_trace_printk(fmt, *args):
    """``bpf_trace_printk(fmt, ...)`` (helper 6): a debug line with the packet's index.

    ``fmt`` is a string constant (the kernel's ``fmt, fmt_size`` in one), with up
    to 3 integer arguments, one per directive: %d %i %u %x %X (32 bits, as the
    kernel reads them), the same with l or ll (64 bits), %c, %% (flags '-' and
    '0' and a width allowed); other formats are refused at load with their line.
    Returns the formatted line's length in bytes, or -EAGAIN (-11) when the
    program's trace ring is full (the line is dropped, and counted). ``replay``
    prints the lines on stderr after each batch as ``trace: packet N: <line>``
    (with -j also under "trace"); ``Program.trace_lines()`` drains them.
    """
    raise NotImplementedError("bpf_trace_printk runs only inside a program")


#: libbpf's name for it.
bpf_printk = bpf_trace_printk
