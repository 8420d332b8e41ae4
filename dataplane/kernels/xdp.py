"""XDP helpers on the context and the worker: the kernel's names, arguments and
error codes (numba code; imported only when a program is compiled).

Boundaries follow net/core/filter.c: ``data`` may move down to the slot's start
plus sizeof(struct xdp_frame) (XDP_FRAME_SIZE) plus the metadata, and up to
14 bytes before data_end; ``data_end`` may move up to the slot's end and at
most XDP_FRAME_END bytes from its start (new bytes are zeroed, as the kernel
clears them) and down to 14 bytes after data; ``data_meta`` sits below data,
a multiple of 4 bytes, at most XDP_META_MAX. A refused move returns -EINVAL
(-EACCES for a bad metadata length) and changes nothing. After a move, read
``ctx.pkt`` / ``ctx.meta`` again.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .. import config
from .budget import worker_global, worker_global_reader, worker_global_writer, worker_id
from .worker_state import WORKER_GLOBALS
from .context import (ctx_bounds, ctx_memmove, ctx_memzero, set_data, set_data_end,
                      set_data_meta)

XDP_FRAME_SIZE = 40   # sizeof(struct xdp_frame), kept free at the start of the headroom
ETH_HLEN = 14
#: The longest metadata, a multiple of 4 that skb_shared_info's u8 meta_len
#: holds (the kernel's xdp_metalen_invalid; kernels before 6.x said 32).
XDP_META_MAX = 252
#: How far from the slot's start data_end may grow: a page less
#: skb_shared_info, the kernel's frame for a packet in one page.
XDP_FRAME_END = config.HEADROOM + config.GROW_TAILROOM
EINVAL, EACCES = 22, 13


@njit(**config.INLINE_JIT)
def bpf_xdp_adjust_head(ctx, delta):
    """``bpf_xdp_adjust_head(ctx, delta)`` (helper 44): move data by delta bytes
    (negative: grow the packet at its front). 0 or -EINVAL."""
    meta, data, end, start, _ = ctx_bounds(ctx)
    metalen = data - meta
    new = data + np.int64(delta)
    if new < start + XDP_FRAME_SIZE + metalen or new > end - ETH_HLEN:
        return np.int64(-EINVAL)
    if metalen:
        ctx_memmove(ctx, meta + np.int64(delta), meta, metalen)
    set_data_meta(ctx, meta + np.int64(delta))
    set_data(ctx, new)
    return np.int64(0)


@njit(**config.INLINE_JIT)
def bpf_xdp_adjust_tail(ctx, delta):
    """``bpf_xdp_adjust_tail(ctx, delta)`` (helper 65): move data_end by delta
    bytes (positive: grow into the tailroom, zeroed). 0 or -EINVAL."""
    _, data, end, start, slot_end = ctx_bounds(ctx)
    new = end + np.int64(delta)
    if new > slot_end or new < data + ETH_HLEN or (delta > 0 and new > start + XDP_FRAME_END):
        return np.int64(-EINVAL)
    if delta > 0:
        ctx_memzero(ctx, end, np.int64(delta))
    set_data_end(ctx, new)
    return np.int64(0)


@njit(**config.INLINE_JIT)
def bpf_xdp_adjust_meta(ctx, delta):
    """``bpf_xdp_adjust_meta(ctx, delta)`` (helper 54): move data_meta by delta
    (negative: reserve metadata before the packet, read as ``ctx.meta``).
    0, -EINVAL (out of the headroom) or -EACCES (length not a multiple of 4 or
    over XDP_META_MAX bytes)."""
    meta, data, _, start, _ = ctx_bounds(ctx)
    new = meta + np.int64(delta)
    if new < start + XDP_FRAME_SIZE or new > data:
        return np.int64(-EINVAL)
    metalen = data - new
    if (metalen & 3) != 0 or metalen > XDP_META_MAX:
        return np.int64(-EACCES)
    set_data_meta(ctx, new)
    return np.int64(0)


@njit(**config.INLINE_JIT)
def bpf_get_smp_processor_id():
    """``bpf_get_smp_processor_id()`` (helper 8): the worker running the program
    (0 .. workers - 1: each worker is a CPU of the kernel's model)."""
    return worker_id()


# -- the worker's random state and clock source (LLVM globals, see budget.py) --

_PRANDOM = "dataplane_prandom_state"
_KTIME = "dataplane_ktime_capture"
_COARSE_NOW = "dataplane_coarse_now"
_PRANDOM_DEFAULT = WORKER_GLOBALS[_PRANDOM]


@intrinsic
def _prandom_next(typingctx):
    def codegen(context, builder, signature, args):
        gv = worker_global(builder, _PRANDOM)
        i64 = ir.IntType(64)
        x = builder.load(gv)  # xorshift64*: fast, reproducible from its seed
        x = builder.xor(x, builder.lshr(x, i64(12)))
        x = builder.xor(x, builder.shl(x, i64(25)))
        x = builder.xor(x, builder.lshr(x, i64(27)))
        builder.store(x, gv)
        r = builder.mul(x, i64(0x2545F4914F6CDD1D))
        return builder.lshr(r, i64(32))
    return types.int64(), codegen


@intrinsic
def prandom_seed(typingctx, seed):
    """Reseed the worker's generator (runner only; 0 picks the default seed)."""
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        v = context.cast(builder, args[0], signature.args[0], types.int64)
        v = builder.select(builder.icmp_signed("==", v, i64(0)), i64(_PRANDOM_DEFAULT), v)
        builder.store(v, worker_global(builder, _PRANDOM))
        return context.get_dummy_value()
    return types.void(seed), codegen


#: Make bpf_ktime_get_ns() return ``ts`` (replay with capture time; 0: the clock).
ktime_set_capture = worker_global_writer(_KTIME)


def _clock_ns(clock_id):
    """An intrinsic reading clock ``clock_id`` (clock_gettime, through the vDSO)."""
    def clock(typingctx):
        return types.int64(), lambda context, builder, signature, args: \
            _clock_gettime(builder, clock_id)
    return intrinsic(clock)


def _clock_gettime(builder, clock_id):
    i64, i32 = ir.IntType(64), ir.IntType(32)
    ts = cgutils.alloca_once(builder, ir.ArrayType(i64, 2))
    fnty = ir.FunctionType(i32, [i32, ts.type])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "clock_gettime")
    builder.call(fn, [i32(clock_id), ts])
    sec = builder.load(builder.gep(ts, [i32(0), i32(0)]))
    nsec = builder.load(builder.gep(ts, [i32(0), i32(1)]))
    return builder.add(builder.mul(sec, i64(1_000_000_000)), nsec)


_monotonic_ns = _clock_ns(1)         # CLOCK_MONOTONIC
_monotonic_coarse_ns = _clock_ns(6)  # CLOCK_MONOTONIC_COARSE: the last tick, ~5x cheaper


_ktime_capture = worker_global_reader(_KTIME)
_coarse_now = worker_global_reader(_COARSE_NOW)
_coarse_now_set = worker_global_writer(_COARSE_NOW)


@njit(**config.INLINE_JIT)
def coarse_clock_read():
    """Read CLOCK_MONOTONIC_COARSE into the worker's copy, which
    bpf_ktime_get_coarse_ns returns: the loop does so every COARSE_EVERY
    packets (the clock itself moves once a timer tick, 1-4 ms; 64 packets of
    l4lb take ~5 us, and its UDP hits no longer call the vDSO each: -3%)."""
    _coarse_now_set(_monotonic_coarse_ns())


@njit(**config.INLINE_JIT)
def coarse_clock_forget():
    """Back to reading the clock at each call (after a loop)."""
    _coarse_now_set(0)


@njit(**config.INLINE_JIT)
def bpf_get_prandom_u32():
    """``bpf_get_prandom_u32()`` (helper 7): a pseudo-random u32, reproducible
    from the run's seed (``--seed``)."""
    return _prandom_next()


@njit(**config.INLINE_JIT)
def bpf_ktime_get_ns():
    """``bpf_ktime_get_ns()`` (helper 5): CLOCK_MONOTONIC in ns, or the packet's
    capture time when the run replays with ``--ktime capture``."""
    t = _ktime_capture()
    if t != 0:
        return t
    return _monotonic_ns()


@njit(**config.INLINE_JIT)
def bpf_ktime_get_coarse_ns():
    """``bpf_ktime_get_coarse_ns()`` (helper 160): CLOCK_MONOTONIC_COARSE in ns
    (the last timer tick: milliseconds of resolution, for timeouts, at a fifth
    of the cost: 4 ns a call against 19 on this VM; in a batch loop, as read
    every COARSE_EVERY packets), or the capture time with ``--ktime capture``."""
    t = _ktime_capture()
    if t != 0:
        return t
    t = _coarse_now()  # the loop's copy, read at most COARSE_EVERY packets ago
    if t != 0:
        return t
    return _monotonic_coarse_ns()


# -- tail calls: a pending target and a count per packet (worker globals) --------

_TAIL_TARGET = "dataplane_tail_target"
_TAIL_COUNT = "dataplane_tail_count"
MAX_TAIL_CALL_CNT = 33  # the kernel's limit on chained tail calls


@intrinsic
def tail_call_request(typingctx, target):
    """Ask the loop to run program ``target`` (1-based) next; False past the limit."""
    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        count = worker_global(builder, _TAIL_COUNT)
        n = builder.load(count)
        ok = builder.icmp_signed("<", n, i64(MAX_TAIL_CALL_CNT))
        with builder.if_then(ok):
            builder.store(builder.add(n, i64(1)), count)
            v = context.cast(builder, args[0], signature.args[0], types.int64)
            builder.store(v, worker_global(builder, _TAIL_TARGET))
        return ok
    return types.boolean(target), codegen


@intrinsic
def tail_call_take(typingctx):
    """The pending tail call's target (1-based), cleared; 0 for none (loop only)."""
    def codegen(context, builder, signature, args):
        gv = worker_global(builder, _TAIL_TARGET)
        v = builder.load(gv)
        builder.store(ir.Constant(ir.IntType(64), 0), gv)
        return v
    return types.int64(), codegen


@intrinsic
def tail_call_reset(typingctx):
    """A new packet: no pending call, no calls made (loop only)."""
    def codegen(context, builder, signature, args):
        zero = ir.Constant(ir.IntType(64), 0)
        builder.store(zero, worker_global(builder, _TAIL_TARGET))
        builder.store(zero, worker_global(builder, _TAIL_COUNT))
        return context.get_dummy_value()
    return types.void(), codegen


# -- prefetch hooks: where bpf_map_prefetch notes the buckets it fetched ----------

_PREFETCH_MEMO = "dataplane_prefetch_memo"
_LOOKUP_HINT = "dataplane_lookup_hint"


#: The address of the memo slot (layout.SCRATCH_MEMO) of the packet the prefetch
#: hook runs on, set by the loop around the hook only: 0 elsewhere, so that
#: bpf_map_prefetch called from a program's body notes nothing.
prefetch_memo_set = worker_global_writer(_PREFETCH_MEMO)
prefetch_memo = worker_global_reader(_PREFETCH_MEMO)
#: The address of the running packet's hash hint (runner.memo_hint), set by a
#: loop with a prefetch hook before each program run, 0 after the loop: where a
#: program's LRU-hash lookup starts (lru_htab.lru_find_hinted).
lookup_hint_set = worker_global_writer(_LOOKUP_HINT)
lookup_hint = worker_global_reader(_LOOKUP_HINT)
