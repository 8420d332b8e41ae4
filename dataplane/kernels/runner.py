"""The batch loop: one compiled loop per program, the program inlined into it.

The loop is emitted as source text into the program's generated module (see
program.py) and compiled there as a kernel (jit.py): its native entry is
cached on disk keyed by the module's hash, so a later run loads machine code.

Per packet, the loop builds ``ctx`` (struct xdp_md), resets the fault flag and
the loop budget, calls the program inside ``try``/``except`` (numba can catch
any exception of compiled code: a tuple index out of range, say) and stores
the verdict. ``scratch`` (int64, slots in kernels/layout.py) carries the
bookkeeping, so a call passes three arrays and the range of packets to run.

A program's maps follow as arrays (Map.program_arrays), from which the loop
builds each map's handle. A file that calls ``bpf_trace_printk`` gets one more,
hidden handle, ``_dp_trace``: the program's trace ring (a RingBuf of
TRACE_RECORD). Before each packet the loop stores the packet's index in the
whole run (TRACE_BASE, set by Program.run_batch, plus its index in the batch)
in a worker global, where kernels/trace.py reads it. Each call first sets the
worker's number from scratch (SCRATCH_WORKER: workers.py runs one loop per
thread).
"""

import numpy as np

from .. import config
from ..action import XDP_ABORTED, XDP_REDIRECT
from ..jit import kernel, lazy
from ..maps import RB_AUX
from .htab import LINK_OFFSET
from .layout import (ACTION, MEMO_HINT, MEMO_SLOT_WORDS, MEMO_SLOTS, MEMO_WORDS, REDIRECT,
                     SCRATCH_FAULTS, SCRATCH_FIRST_FAULT, SCRATCH_FIRST_INVALID, SCRATCH_INVALID,
                     SCRATCH_MEMO, SCRATCH_SIZE)

as_pointer = lazy("dataplane.kernels.memory", "as_pointer")
byte_address = lazy("dataplane.kernels.memory", "byte_address")
prefetch_address = lazy("dataplane.kernels.memory", "prefetch_address")

#: Fault kinds (scratch[SCRATCH_FAULT] after a packet; FAULT_KIND_COUNTS + kind counts them).
FAULT_NONE, FAULT_ACCESS, FAULT_LOOP, FAULT_EXCEPTION = 0, 1, 2, 3
FAULT_REASONS = {
    FAULT_ACCESS: "access outside the packet",
    FAULT_LOOP: f"loop budget of {config.LOOP_BUDGET:,} iterations spent",
    FAULT_EXCEPTION: "the program raised an exception (e.g. tuple index out of range)",
}


#: The trace ring: its records, its size (bytes), and the header word for the
#: first packet's index in the run (Python; the loop keeps the current packet's
#: in a worker global, kernels/budget.py trace_packet).
TRACE_RECORD = np.dtype([("packet", "<i8"), ("fmt", "<i8"), ("a1", "<u8"), ("a2", "<u8"),
                         ("a3", "<u8")])
TRACE_RING_BYTES = 1 << 20
TRACE_BASE = RB_AUX
#: The hidden map-like argument of every function of a file that traces.
TRACE_HANDLE = "_dp_trace"


def first_invalid_of(word):
    """scratch[SCRATCH_FIRST_INVALID] -> (the packet's index in the loop, the
    value its program returned: the low 32 bits, the kernel's u32 retval)."""
    word = int(word)
    return word & 0xFFFFFFFF, (word >> 32) & 0xFFFFFFFF


def new_scratch():
    """A zeroed scratch array with 'first' indices set to none (-1)."""
    s = np.zeros(SCRATCH_SIZE, np.int64)
    s[SCRATCH_FIRST_FAULT] = s[SCRATCH_FIRST_INVALID] = -1
    return s


@kernel(**config.INLINE_JIT)
def store_verdict(ret, fault, i, meta, scratch):
    """Decode a program's return value into meta[ACTION, i] and meta[REDIRECT, i].

    bpf_redirect() returns XDP_REDIRECT with (ifindex + 1) in the upper 32 bits
    (a broadcast's target has bit 31 of the ifindex set: broadcast.py).
    As in the kernel, an unknown action or a redirect without a target is
    treated as XDP_ABORTED (bpf_warn_invalid_xdp_action / xdp_do_redirect -EINVAL).
    A faulting packet is XDP_ABORTED; the first fault's index and kind are kept
    (the kind in the upper bits of scratch[SCRATCH_FIRST_FAULT]), and the first
    invalid verdict's index with the value returned in the upper half of
    scratch[SCRATCH_FIRST_INVALID] (first_invalid_of decodes it).
    """
    r = np.int64(ret)
    code = r & 0xFFFFFFFF
    target = (r >> 32) & 0xFFFFFFFF
    if fault != 0:
        code = XDP_ABORTED
        scratch[SCRATCH_FAULTS] += 1
        if scratch[SCRATCH_FIRST_FAULT] < 0:
            scratch[SCRATCH_FIRST_FAULT] = np.int64(i) | (fault << 56)
    elif code > XDP_REDIRECT or (code == XDP_REDIRECT and target == 0) \
            or (code != XDP_REDIRECT and target != 0):
        scratch[SCRATCH_INVALID] += 1
        if scratch[SCRATCH_INVALID] == 1:  # (a word with a value >= 2**31 is negative)
            scratch[SCRATCH_FIRST_INVALID] = (np.int64(i) & 0xFFFFFFFF) | (code << 32)
        code = XDP_ABORTED
    meta[ACTION, i] = code
    if code == XDP_REDIRECT:  # read only for redirected packets: no store for the rest
        meta[REDIRECT, i] = target - 1


@kernel(**config.INLINE_JIT)
def head_line(buf):
    """Where, from a packet's data, the loop of a program that prepends headers
    fetches a second line: in a batch laid out for it (data HEAD_LINE_OFFSET
    into a line, Program.line_offset) the next line, where the headers go on;
    with data on a line's start, the line in front, where the outer header goes
    (unfetched, its write stalled l4lb ~40 ns a packet on the 1M capture)."""
    line = byte_address(buf, 0) % config.SLOT_ALIGN
    return np.int64(config.SLOT_ALIGN - line) if line >= config.HEAD_LINE_OFFSET \
        else np.int64(-config.SLOT_ALIGN)


#: Packets ahead the loop fetches the rows of the chains' second entries.
NEXT_AHEAD = config.HOOK_AHEAD // 2
# packet h's slot is last read by its program, 2 * HOOK_AHEAD packets after the
# hook noted it, and taken again for packet h + MEMO_SLOTS
if MEMO_SLOTS <= 2 * config.HOOK_AHEAD:
    raise ImportError(f"MEMO_SLOTS ({MEMO_SLOTS}) too small for HOOK_AHEAD ({config.HOOK_AHEAD})")


@kernel(**config.INLINE_JIT)
def _memo_slot(scratch, h):
    """The address of packet ``h``'s memo slot (read through a pointer: an index
    into scratch costs numba's negative-index fix-up, five instructions)."""
    return byte_address(scratch, (SCRATCH_MEMO + np.int64(h % np.uint64(MEMO_SLOTS))
                                  * MEMO_SLOT_WORDS) * 8)


@kernel(**config.INLINE_JIT)
def memo_open(scratch, h):
    """Empty packet ``h``'s memo slot and hint before the hook runs on it: its
    address, which the loop hands bpf_map_prefetch (xdp.prefetch_memo)."""
    address = _memo_slot(scratch, h)
    slot = as_pointer(address, np.int64)
    slot[0] = 0
    slot[MEMO_HINT] = 0
    return address


@kernel(**config.INLINE_JIT)
def memo_clear(scratch):
    """Empty every slot of the prefetch hook's memo, hints included (a call's
    first packets were noted by no hook run of this call)."""
    for s in range(MEMO_SLOTS):
        memo_open(scratch, np.uint64(s))


@kernel(**config.INLINE_JIT)
def memo_hint(scratch, i):
    """The address of packet ``i``'s hash hint, which the loop hands the
    program's lookups (xdp.lookup_hint) before it runs on the packet."""
    return _memo_slot(scratch, i) + MEMO_HINT * 8


@kernel(**config.INLINE_JIT)
def _fetch_noted_row(slot, w):
    """Fetch the row of the entry whose number is at the address in memo word
    ``w`` (a bucket or a chain link, cached by now): that number, -1 for none."""
    e = np.int64(as_pointer(slot[w], np.int32)[0])
    if e >= 0:
        prefetch_address(slot[w + 1] + e * slot[w + 2])
    return e


@kernel(**config.INLINE_JIT)
def memo_fetch_rows(scratch, h):
    """The hook's second step on packet ``h``, without running it again: read
    each bucket it noted (fetched some packets ago, cached now) and fetch the
    row of the chain's first entry, which holds the link to the next: the
    link's address replaces the bucket's (0: an empty bucket)."""
    slot = as_pointer(_memo_slot(scratch, h), np.int64)
    for k in range(slot[0]):
        w = 1 + MEMO_WORDS * k
        e = _fetch_noted_row(slot, w)
        slot[w] = slot[w + 1] + e * slot[w + 2] + LINK_OFFSET if e >= 0 else 0


@kernel(**config.INLINE_JIT)
def memo_fetch_next_rows(scratch, h):
    """The last step, NEXT_AHEAD packets ahead: fetch the row of each chain's
    second entry (a hit reads it when the first entry holds another key: one
    in ten packets on l4lb's 100,000 flows); then empty the slot."""
    slot = as_pointer(_memo_slot(scratch, h), np.int64)
    for k in range(slot[0]):
        w = 1 + MEMO_WORDS * k
        if slot[w] != 0:
            _fetch_noted_row(slot, w)
    slot[0] = 0


#: The loop, instantiated per program by program.py ({name} is the program's name).
RUNNER_SOURCE = '''
@_dp_kernel(**_dp_config.RUNNER_JIT)
def _dp_run{variant}_{name}(buf, meta, scratch, first, end{map_params}):
{map_handles}    ahead = _dp_np.uint64({ahead})
    start = _dp_np.uint64(first)
    stop = _dp_np.uint64(end)
    if scratch[_dp_layout.SCRATCH_SEED] != 0:
        _dp_prandom_seed(scratch[_dp_layout.SCRATCH_SEED])
        scratch[_dp_layout.SCRATCH_SEED] = 0
    _dp_worker_id_set(scratch[_dp_layout.SCRATCH_WORKER])
    capture_time = scratch[_dp_layout.SCRATCH_KTIME] != 0
    if not capture_time:
        _dp_ktime_set_capture(0)
{head_setup}{trace_setup}{hook_setup}    for i in range(start, stop):
{packet_time}{trace_packet}        j = i + ahead
        if {prefetch} and j < stop:
            _dp_prefetch(buf, meta[_dp_layout.DATA, j])
            if {prefetch_head}:
                _dp_prefetch(buf, meta[_dp_layout.DATA, j] + head_line)
{hook}        scratch[_dp_layout.SCRATCH_FAULT] = 0
{budget_reset}{tail_reset}{hint_set}        try:
            ret = _dp_fn_{name}(_dp_make_xdp_md{variant}(buf, meta, scratch, i){map_args})
{tail_loop}        except Exception:
            ret = 0
            scratch[_dp_layout.SCRATCH_FAULT] = {exception}
{budget_check}        _dp_store_verdict(ret, scratch[_dp_layout.SCRATCH_FAULT], i, meta, scratch)
{time_done}{hint_done}'''

#: Names the generated module needs, all reserved with the _dp_ prefix. Nothing
#: here imports numba: compiled-only objects are lazy references (jit.py).
RUNNER_PRELUDE = '''

# ---- generated by dataplane below this line: not part of the program's source ----
import numpy as _dp_np
from dataplane import config as _dp_config
from dataplane.jit import kernel as _dp_kernel, lazy as _dp_lazy
from dataplane.kernels import layout as _dp_layout
from dataplane.kernels.runner import (head_line as _dp_head_line,
                                      memo_clear as _dp_memo_clear,
                                      memo_fetch_next_rows as _dp_memo_fetch_next_rows,
                                      memo_fetch_rows as _dp_memo_fetch_rows,
                                      memo_hint as _dp_memo_hint,
                                      memo_open as _dp_memo_open,
                                      store_verdict as _dp_store_verdict)
_dp_make_xdp_md = _dp_lazy("dataplane.kernels.context", "make_xdp_md")
_dp_make_xdp_md_unchecked = _dp_lazy("dataplane.kernels.context", "make_xdp_md_unchecked")
_dp_prefetch = _dp_lazy("dataplane.kernels.memory", "prefetch")
_dp_prefetch_memo_set = _dp_lazy("dataplane.kernels.xdp", "prefetch_memo_set")
_dp_lookup_hint_set = _dp_lazy("dataplane.kernels.xdp", "lookup_hint_set")
_dp_coarse_clock_read = _dp_lazy("dataplane.kernels.xdp", "coarse_clock_read")
_dp_coarse_clock_forget = _dp_lazy("dataplane.kernels.xdp", "coarse_clock_forget")
_dp_loop_budget_tick = _dp_lazy("dataplane.kernels.budget", "loop_budget_tick")
_dp_loop_budget_reset = _dp_lazy("dataplane.kernels.budget", "loop_budget_reset")
_dp_loop_budget_spent = _dp_lazy("dataplane.kernels.budget", "loop_budget_spent")
_dp_prandom_seed = _dp_lazy("dataplane.kernels.xdp", "prandom_seed")
_dp_ktime_set_capture = _dp_lazy("dataplane.kernels.xdp", "ktime_set_capture")
_dp_tail_call_reset = _dp_lazy("dataplane.kernels.xdp", "tail_call_reset")
_dp_tail_call_take = _dp_lazy("dataplane.kernels.xdp", "tail_call_take")
_dp_trace_printk = _dp_lazy("dataplane.kernels.trace", "trace_printk")
_dp_trace_packet_set = _dp_lazy("dataplane.kernels.budget", "trace_packet_set")
_dp_worker_id_set = _dp_lazy("dataplane.kernels.budget", "worker_id_set")
'''


def map_param_names(gname, m):
    """The loop's parameters for map ``gname`` (its arrays, Map.program_arrays order)."""
    if getattr(m, "is_ringbuf", False):
        parts = ("hdr", "ring")
    elif getattr(m, "is_queue_stack", False):
        parts = ("hdr", "elems")
    elif getattr(m, "is_lpm", False):
        parts = ("hdr", "buckets", "refs", "free", "keys", "index", "rchild",
                 "nhdr", "nent", "bhi", "blo", "rval", "values")
    elif getattr(m, "open_addressed", False):  # kernels/lru_htab.py
        parts = ("hdr", "rows", "free", "keys")
    elif m.is_hash:
        parts = ("hdr", "buckets", "refs", "free", "keys") \
            + (() if m.inline_values else ("values",))
    else:
        parts = ("values",)
    if getattr(m, "is_map_in_map", False):
        parts += ("pool",)  # the inner maps' buffers, one row each
    return [f"{gname}_{p}" for p in parts]


def _values_view(g, m, name):
    """The loop's view of map ``g``'s values: records of its value type; for a
    per-CPU map, from the running worker's first slot (worker_rows: the map's
    lookups then read no thread-local worker id; l4lb 752.7 -> 736.7 instructions
    a packet, benchmarks/icount.py)."""
    view = f"{name}.view(_dp_VT_{g})"
    if worker_rows(m):
        return f"{view}[scratch[_dp_layout.SCRATCH_WORKER] * {m.max_entries}:]"
    return view


def worker_rows(m):
    """Whether the loop hands map ``m``'s handle only the running worker's value
    slots (per-CPU maps; an inner map of a map-in-map is built by the program
    itself, from the whole pool row, and still finds its worker's slots)."""
    return m.percpu


def _tail_calls(programs, variant, map_args):
    """Code running the tail calls a program asked for (bpf_tail_call), in turn."""
    lines = ["            target = _dp_tail_call_take()", "            while target != 0:"]
    for k, p in enumerate(programs):
        lines.append(f"                {'if' if k == 0 else 'elif'} target == {k + 1}:")
        lines.append(f"                    ret = _dp_fn_{p}(_dp_make_xdp_md{variant}(buf, meta, "
                     f"scratch, i){map_args})")
    lines.append("                target = _dp_tail_call_take()")
    return "\n".join(lines) + "\n"


#: A packet's time for the clock helpers: its capture time (--ktime capture), or
#: the coarse clock read again every COARSE_EVERY packets.
PACKET_TIME = '''        if capture_time:
            _dp_ktime_set_capture(meta[_dp_layout.TS_NS, i])
        elif (i - start) % _dp_np.uint64(_dp_config.COARSE_EVERY) == 0:
            _dp_coarse_clock_read()
'''

HOOK_SOURCE = '''        h = i + _dp_np.uint64({ahead} * 2)  # the prefetch hook, far ahead
        if h < stop:
            _dp_prefetch_memo_set(_dp_memo_open(scratch, h))
            try:
                _dp_fn_{hook}(_dp_make_xdp_md{variant}(buf, meta, scratch, h){map_args})
            except Exception:
                pass
            _dp_prefetch_memo_set(0)
{memo_stages}'''

#: The loop's later stages on the buckets the hook noted.
MEMO_STAGES = '''        h = i + _dp_np.uint64({ahead})  # nearer: the rows of the buckets it noted
        if h < stop:
            _dp_memo_fetch_rows(scratch, h)
        h = i + _dp_np.uint64({next_ahead})  # nearer still: the chains' second rows
        if h < stop:
            _dp_memo_fetch_next_rows(scratch, h)
'''


def runner_source(name, maps, reads_packet=True, trace=False, tail_programs=(),
                  grows_head=False, hook=None, budget=True, reads_time=True, memo=True):
    """The two batch loops of program ``name``: ``_dp_run_NAME`` (bounds-checked)
    and ``_dp_run_unchecked_NAME``.

    ``maps`` is [(global name, Map)] of the program's file: each map's arrays are
    arguments of the loop, which builds the handle (``_dp_H_<global>``) passed to
    the program. A module that never reads ``ctx.pkt`` gets loops without
    prefetching: on a batch larger than the caches, fetching lines nobody reads
    doubles the cost of an empty program.

    ``trace``: the last of ``maps`` is the trace ring (TRACE_HANDLE); the loop
    stores each packet's index in its header.

    ``tail_programs``: the file's programs, when it has a PROG_ARRAY: after the
    program returns, the loop runs the tail calls it asked for (by number).

    ``hook``: the program's prefetch function (``@xdp(prefetch=...)``), run on
    each packet 2 * HOOK_AHEAD packets ahead: bpf_map_prefetch fetches a hash
    key's bucket and notes it in the packet's memo slot (scratch). HOOK_AHEAD
    packets ahead the loop reads the noted buckets, cached by then, and fetches
    each chain's first row, with its link (memo_fetch_rows), NEXT_AHEAD packets ahead
    the second row (memo_fetch_next_rows). A hook that read the bucket at once
    stalled on it (a third of the load balancer's time); running the hook a
    second time to read it cost ~130 instructions a packet (l4lb).
    bpf_map_prefetch of an LRU hash map fetches the key's row and leaves its
    hash in the slot's hint; before running the program on a packet the loop
    hands it the packet's hint (xdp.lookup_hint), so that the program's lookup
    of that key starts walking at once instead of hashing the key again on its
    way to the row (lru_htab.lru_find_hinted): l4lb in cache (``-c 20000``)
    51.5-55.1 -> 47.5-50.5 ns/pkt, alternating runs.

    ``memo``: the hook may prefetch a chained hash map (kernels/htab.py). Without
    (arrays and LRU hash maps, whose lines the hook fetches itself), the loop has
    no memo stages: l4lb 2-3 ns/pkt less.

    ``grows_head``: the file calls bpf_xdp_adjust_head / _meta: its batches
    start data HEAD_LINE_OFFSET bytes into a line (Program.line_offset), whose
    bytes in front take a prepended header, and the loop prefetches a second
    line of each packet (head_line). With data on a line's start, the line in
    front, which the loop fetched, was still cold at a call's first
    PREFETCH_AHEAD packets: l4lb ~3 us a call.

    ``budget``: reset and check the loop budget of Python programs' loops
    around each packet (eBPF bytecode bounds its loops itself: ebpf/jit.py).

    ``reads_time``: the file may call bpf_ktime_get_ns / _coarse_ns, so with
    ``--ktime capture`` the loop hands each packet's capture time to them;
    otherwise it reads the coarse clock every COARSE_EVERY packets for
    bpf_ktime_get_coarse_ns, and forgets it after the loop.
    Without (eBPF objects that call neither), the loop skips that per-packet
    branch, whose flag held a register: firewall.o 2.84 -> 2.48 ns/pkt, redirect.o
    1.71 -> 1.31 (each frame repeated, empty program subtracted).
    """
    params, handles, args = "", "", ""
    for g, m in maps:
        names = map_param_names(g, m)
        params += "".join(f", {n}" for n in names)
        arrays = [_values_view(g, m, n) if n.endswith("_values") else n for n in names]
        handles += f"    _dp_h_{g} = _dp_H_{g}({', '.join(arrays)})\n"
        args += f", _dp_h_{g}"
    setup = packet = ""
    if trace:
        hdr = f"{TRACE_HANDLE}_hdr"
        setup = f"    _dp_trace_base = {hdr}[{TRACE_BASE}]\n"
        packet = "        _dp_trace_packet_set(_dp_trace_base + _dp_np.int64(i))\n"
    reset = "        _dp_tail_call_reset()\n" if tail_programs else ""
    memo = bool(hook and memo)
    head = bool(reads_packet and grows_head)  # a second line a packet (head_line)
    stages = MEMO_STAGES.format(ahead=config.HOOK_AHEAD, next_ahead=NEXT_AHEAD) if memo else ""
    return "".join(RUNNER_SOURCE.format(name=name, ahead=config.PREFETCH_AHEAD,
                                        exception=FAULT_EXCEPTION,
                                        prefetch=bool(reads_packet), variant=variant,
                                        prefetch_head=head,
                                        head_setup="    head_line = _dp_head_line(buf)\n"
                                        if head else "",
                                        hook=HOOK_SOURCE.format(
                                            ahead=config.HOOK_AHEAD, hook=hook, variant=variant,
                                            map_args=args, memo_stages=stages)
                                        if hook else "",
                                        map_params=params, map_handles=handles, map_args=args,
                                        trace_setup=setup, trace_packet=packet,
                                        hook_setup="    _dp_memo_clear(scratch)\n" if hook
                                        else "",
                                        hint_set="        _dp_lookup_hint_set("
                                        "_dp_memo_hint(scratch, i))\n" if hook else "",
                                        hint_done="    _dp_lookup_hint_set(0)\n" if hook else "",
                                        packet_time=PACKET_TIME if reads_time else "",
                                        time_done="    _dp_coarse_clock_forget()\n"
                                        if reads_time else "",
                                        budget_reset="        _dp_loop_budget_reset()\n"
                                        if budget else "",
                                        budget_check="        if _dp_loop_budget_spent():\n"
                                        "            scratch[_dp_layout.SCRATCH_FAULT] = "
                                        f"{FAULT_LOOP}\n" if budget else "",
                                        tail_reset=reset,
                                        tail_loop=_tail_calls(tail_programs, variant, args)
                                        if tail_programs else "")
                   for variant in ("", "_unchecked"))
