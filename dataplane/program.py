"""ProgramSpec -> Program: Python XDP programs, checked, compiled, cached, run.

A program file is an ordinary module: ``@xdp`` marks its programs. Loading one
(``load_program("drop_udp")``, ``"path/prog.py"``, ``"path/prog.py:name"``):

1. the file's text and a hash of dataplane's compiled core name a generated
   module in the cache directory: the program's source verbatim (so line
   numbers stay the user's) followed by one batch loop per program
   (kernels/runner.py);
2. the generated module is imported (the program's module code runs once);
3. if the loop's native code is cached (native.py), it is loaded: no numba;
4. otherwise the chosen program and the file's functions it calls are checked
   (program_check.py, the verifier of Python programs), given loop budgets,
   compiled with numba in nopython mode with the program inlined into its
   loop, and the loop's machine code is cached for the next run.
"""

import ast
import collections
import contextlib
import copy
import functools
import hashlib
import importlib.util
import os
import re
import sys
import traceback
from pathlib import Path


import numpy as np

from . import config
from .action import XdpAction
from .broadcast import BROADCAST, redirect_groups
from .errors import DataplaneError, ProgramError
from .io.batch import PacketBatch
from .jit import core_hash, kind_of, materialize, plain_dispatcher
from .kernels import layout, runner as runner_kernels
from .maps import BPF_MAP_TYPE_PROG_ARRAY, BPF_MAP_TYPE_RINGBUF, Map, RingBuf
from .program_check import (check_program, function_tree, parse_trace_format,
                            trace_format_table)

#: Argument kinds of a batch loop: (buf uint8[:], meta int64[:, :], scratch int64[:],
#: first, end).
_RUNNER_KINDS = (("|u1", 1), ("<i8", 2), ("<i8", 1), "i", "i")


class ProgramSpec:
    """What an XDP program is (cilium/ebpf's ProgramSpec): a function, its name, its file."""

    def __init__(self, fn, name=None, prefetch=None):
        self.fn = fn
        self.name = name or fn.__name__
        self.prefetch = prefetch

    def __repr__(self):
        return f"ProgramSpec({self.name!r})"


def xdp(fn=None, *, name=None, prefetch=None):
    """Mark a function ``prog(ctx) -> XDP_*`` as an XDP program (SEC("xdp") in C).

    ``prefetch``: an optional function ``hook(ctx)`` the loop runs on the packet
    a few places ahead of the one the program runs on, to start the cache
    misses the program will take on it (``bpf_map_prefetch(map, key)``): DPDK's
    and VPP's habit, which one-packet-at-a-time XDP cannot have. A hint only: it
    reads the packet and looks maps up, and must change neither."""
    if fn is None:
        return functools.partial(xdp, name=name, prefetch=prefetch)
    return ProgramSpec(fn, name, prefetch)


class TestRun(tuple):
    """``(action, output_bytes)`` of Program.test_run, plus ``.redirect`` (the
    target ifindex of a redirect to one device, else 0), ``.targets`` (the
    devices the frame goes out of: the one, or a broadcast's, or none) and
    ``.meta``: the metadata left in front of the frame (bpf_xdp_adjust_meta),
    which the kernel's BPF_PROG_TEST_RUN gives as the start of its output
    (``meta + data`` is the kernel's data_out), and ``.retval``: the value
    the program returned, the test run's retval (an invalid one, 7 say, is
    ``retval`` 7 with ``action`` XDP_ABORTED, the verdict an attached program's
    packet gets)."""

    __test__ = False  # not a pytest class

    def __new__(cls, action, data, redirect, targets=(), meta=b"", retval=None):
        self = super().__new__(cls, (action, data))
        self.redirect, self.targets, self.meta = redirect, targets, meta
        self.retval = int(action) if retval is None else retval
        return self

    action = property(lambda self: self[0])
    data = property(lambda self: self[1])


class TraceLine(collections.namedtuple("TraceLine", "packet text")):
    """One bpf_trace_printk line: the packet's index in the run and the text
    (without a trailing newline); ``str()`` gives ``packet 17: x=5``."""

    __slots__ = ()

    def __str__(self):
        return f"packet {self.packet}: {self.text}"


#: Trace records a Program keeps for trace_lines() at most (the rest are counted
#: in trace_dropped): a caller that never drains them does not grow without bound.
TRACE_PENDING_MAX = 1 << 18


class Program:
    """A loaded, compiled XDP program (cilium/ebpf's Program).

    ``run_batch(batch)`` sets ``batch.action`` and ``batch.redirect`` for every
    packet; a fault (out-of-bounds access, exception, loop budget) makes that
    packet XDP_ABORTED and is counted in ``faults``, the first one kept in
    ``first_fault`` (packet index) and ``fault_reason``; a return value that is
    no XDP action (or XDP_REDIRECT without a target) makes it XDP_ABORTED too,
    as bpf_warn_invalid_xdp_action does, counted in ``invalid``, the first one in
    ``first_invalid`` and the value it returned in ``invalid_return``.

    A program whose file calls ``bpf_trace_printk`` has a trace ring
    (``traces``): after each run_batch its records are kept, and
    ``trace_lines()`` drains them as TraceLine(packet index, text);
    ``trace_formats`` is the file's format table (a format's id is its index),
    ``trace_dropped`` counts the lines lost (the ring was full during a batch,
    or more than TRACE_PENDING_MAX were waiting).
    """

    #: Bytes of room each batch keeps behind every packet for this program.
    tailroom = config.GROW_TAILROOM
    #: Where each packet's data starts in its cache line in this program's
    #: batches (config.HEAD_LINE_OFFSET if it prepends headers).
    line_offset = 0

    def __init__(self, spec, entry, source_path, checked=True, maps=(), map_arrays=(),
                 trace=None):
        self.spec = spec
        self.name = spec.name
        self.checked = checked
        #: The program's maps in the order of their numbers in the compiled code
        #: (a broadcast's target names its device map so: broadcast.py) ...
        self.numbered_maps = tuple(maps)
        #: ... and by name: the live objects its loop reads and writes.
        self.maps = {m.name: m for m in self.numbered_maps}
        self.source_path = source_path
        self._entry = entry
        self._scratch = runner_kernels.new_scratch()
        # The loop's argument block (jit.Kernel.entry's block ABI): buf pointer and
        # size, meta pointer, rows and columns, scratch pointer and size, start, stop.
        # Then each map array's pointer and shape (Map.program_arrays).
        tail = [v for a in map_arrays for v in (a.ctypes.data, *a.shape)]
        self._block = np.array([0] * 9 + tail, np.int64)
        self._block_ptr = self._block.ctypes.data
        self._block[5:7] = self._scratch.ctypes.data, self._scratch.size
        self._map_arrays = map_arrays  # the block points into them: keep them alive
        self._bound = None
        self.faults = 0
        self.first_fault = None
        self.fault_reason = None
        self.invalid = 0
        self.first_invalid = None
        self.invalid_return = None  # what the program returned there (a u32)
        self._batch_invalid_return = None
        # the trace ring (a RingBuf) and the file's formats, parsed when first used
        self._trace, self.trace_formats = trace if trace is not None else (None, [])
        self._trace_render = []  # each format's TraceFormat.render, by id
        self._trace_pending, self._trace_pending_n, self._trace_lost = [], 0, 0

    @property
    def traces(self):
        """True when the program's file calls bpf_trace_printk."""
        return self._trace is not None

    @property
    def trace_dropped(self):
        """Trace lines lost: the trace ring was full, or too many were waiting."""
        return (self._trace.dropped if self._trace is not None else 0) + self._trace_lost

    def _take_trace(self, base_index=0, index_of=None):
        """Move the trace ring's records into the pending list (after a batch);
        ``index_of`` as in take_counters (records then come in packet order)."""
        ring = self._trace
        if not len(ring):
            return
        records = ring.read()
        if index_of is not None:
            records["packet"] = base_index + index_of[records["packet"] - base_index]
            records = records[np.argsort(records["packet"], kind="stable")]
        room = TRACE_PENDING_MAX - self._trace_pending_n
        if len(records) > room:
            self._trace_lost += len(records) - room
            records = records[:room]
        if len(records):
            self._trace_pending.append(records)
            self._trace_pending_n += len(records)

    def trace_lines(self):
        """Drain the bpf_trace_printk lines of the batches run so far, oldest first:
        a list of TraceLine(packet, text), packet the index in the run."""
        if self._trace is None:
            return []
        self._take_trace()
        lines, render, make = [], self._trace_render, tuple.__new__
        for records in self._trace_pending:
            for packet, fid, a1, a2, a3 in records.tolist():
                if fid >= len(render):
                    render.extend(parse_trace_format(f).render
                                  for f in self.trace_formats[len(render):])
                lines.append(make(TraceLine, (packet, render[fid](a1, a2, a3))))
        self._trace_pending, self._trace_pending_n = [], 0
        return lines

    def seed_prandom(self, seed):
        """Seed bpf_get_prandom_u32 for reproducible runs (applied at the next batch)."""
        self._scratch[layout.SCRATCH_SEED] = int(seed) & 0x7FFFFFFFFFFFFFFF or 1

    def use_capture_time(self, on=True):
        """bpf_ktime_get_ns() returns each packet's capture time (replay), or the clock."""
        self._scratch[layout.SCRATCH_KTIME] = 1 if on else 0

    def _call(self, b, start, stop):
        """Run packets start..stop of batch ``b``: one ctypes call (~0.5 us)."""
        block = self._block
        if b is not self._bound:
            block[0:5] = b.native_args
            self._bound = b
        block[7] = start
        block[8] = stop
        self._entry(self._block_ptr)

    def run_batch(self, batch, base_index=0, start=0, stop=None):
        """Run the program on packets ``start..stop`` of ``batch`` (all by default).

        ``base_index`` is the index of the batch's first packet in the stream,
        used to report faults by packet index. ``batch.maps`` becomes the maps
        its redirect targets name.
        """
        batch.ran_by(self.numbered_maps)
        if self._trace is not None:
            self._trace.hdr[runner_kernels.TRACE_BASE] = base_index
        self._call(batch, start, batch.count if stop is None else stop)
        self.take_counters(base_index)
        if self._trace is not None:
            self._take_trace()

    def take_counters(self, base_index=0, scratch=None, index_of=None):
        """Move the loop's fault and invalid-verdict counts into the program's totals.

        ``scratch``: a worker's (for_worker) instead of the program's own;
        ``index_of``: maps the position the loop saw to the packet's index in
        the batch (a worker runs a steered copy of the batch: workers.py)."""
        scratch = self._scratch if scratch is None else scratch
        if not (scratch[layout.SCRATCH_FAULTS] or scratch[layout.SCRATCH_INVALID]):
            return
        at = (lambda j: j) if index_of is None else (lambda j: int(index_of[j]))
        if scratch[layout.SCRATCH_FAULTS]:
            self.faults += int(scratch[layout.SCRATCH_FAULTS])
            first = int(scratch[layout.SCRATCH_FIRST_FAULT])
            index = base_index + at(first & ((1 << 56) - 1))
            if self.first_fault is None or index < self.first_fault:
                self.first_fault = index
                self.fault_reason = runner_kernels.FAULT_REASONS[first >> 56]
        if scratch[layout.SCRATCH_INVALID]:
            self.invalid += int(scratch[layout.SCRATCH_INVALID])
            first, code = runner_kernels.first_invalid_of(scratch[layout.SCRATCH_FIRST_INVALID])
            index = base_index + at(first)
            if self.first_invalid is None or index < self.first_invalid:
                self.first_invalid, self.invalid_return = index, code
            self._batch_invalid_return = code  # (test_run's retval)
        scratch[:layout.SCRATCH_FAULT] = runner_kernels.new_scratch()[:layout.SCRATCH_FAULT]

    def for_worker(self, worker):
        """This program as worker ``worker`` runs it (workers.py): the same
        compiled loop and maps, its own scratch (fault counters, the number
        bpf_get_smp_processor_id returns) and argument block."""
        view = copy.copy(self)
        view._scratch = runner_kernels.new_scratch()
        view._scratch[layout.SCRATCH_WORKER] = worker
        view._block = self._block.copy()
        view._block_ptr = view._block.ctypes.data
        view._block[5:7] = view._scratch.ctypes.data, view._scratch.size
        view._bound = None
        return view

    def new_batch(self, capacity, buffer_bytes=None):
        """A PacketBatch laid out for this program: its tailroom behind each
        packet, each packet's data at its line offset."""
        return PacketBatch(capacity, buffer_bytes, tailroom=self.tailroom,
                           line_offset=self.line_offset)

    def test_run(self, frame, ingress_ifindex=1, rx_queue_index=0):
        """Run one frame (BPF_PROG_TEST_RUN): a TestRun, ``(XdpAction, output
        bytes)`` with ``.redirect``, ``.targets``, ``.meta`` and ``.retval``. The frame comes
        in on ``ingress_ifindex``: by default 1, the loopback device, where the
        kernel's test run puts a frame given without a context."""
        frame = bytes(frame)
        b = self.new_batch(1, len(frame) + config.HEADROOM + self.tailroom + config.SLOT_ALIGN)
        if not b.append(frame, ifindex=ingress_ifindex, rx_queue=rx_queue_index):
            raise AssertionError("test_run: frame does not fit its batch")
        invalid = self.invalid
        self.run_batch(b)
        action = XdpAction(int(b.action[0]))
        retval = self._batch_invalid_return if self.invalid > invalid else None
        targets, redirect = (), 0
        if action == XdpAction.XDP_REDIRECT:
            targets = tuple(t for t, _ in redirect_groups(b, np.zeros(1, np.int64), b.maps))
            redirect = int(b.redirect[0]) if b.redirect[0] < BROADCAST else 0
        return TestRun(action, b.packet(0), redirect, targets, b.metadata(0), retval)

    def __repr__(self):
        mode = "" if self.checked else ", unchecked"
        return f"Program({self.name!r} from {self.source_path}{mode})"


# ---------------------------------------------------------------- resolving

def programs_dir():
    """Where bundled programs live (``programs/`` beside the package, or $DATAPLANE_PROGRAMS)."""
    env = os.environ.get("DATAPLANE_PROGRAMS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "programs"


def bundled_programs():
    """Names of the bundled programs (``-p NAME``)."""
    d = programs_dir()
    if not d.is_dir():
        return []
    files = [p.stem for p in d.glob("*.py") if not p.name.startswith("_")]
    folders = [p.parent.name for p in d.glob("*/*.py") if p.stem == p.parent.name]
    return sorted(files + folders)


def is_object_ref(ref):
    """True for ``prog.o`` / ``prog.o:name``: an ELF object, not a Python file."""
    path = str(ref)
    if not os.path.exists(path) and ":" in path:
        path = path.rsplit(":", 1)[0]
    if path.endswith(".o"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def resolve_program(ref):
    """``prog.py``, ``prog.py:name`` or a bundled name -> (Path, name or None)."""
    path, name = ref, None
    m = re.match(r"^(.*\.py):([A-Za-z_][A-Za-z0-9_]*)$", ref)
    if m:
        path, name = m.group(1), m.group(2)
    elif ":" in ref and not os.path.exists(ref):
        path, name = ref.rsplit(":", 1)
    p = Path(path)
    if p.is_file():
        return p.resolve(), name
    if "/" not in path and not path.endswith(".py"):
        for bundled in (programs_dir() / f"{path}.py", programs_dir() / path / f"{path}.py"):
            if bundled.is_file():  # programs/NAME.py, or programs/NAME/NAME.py with its files
                return bundled.resolve(), name
    raise ProgramError(f"program '{ref}': not found",
                       hint="give a file (prog.py or prog.py:name) or a bundled program: "
                            + ", ".join(bundled_programs()))


# ---------------------------------------------------------------- loading

def _xdp_function_names(tree):
    """Names of top-level functions decorated with ``xdp`` (or ``xdp(...)``)."""
    names = []
    for node in tree.body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for d in node.decorator_list:
            target = d.func if isinstance(d, ast.Call) else d
            if (isinstance(target, ast.Name) and target.id == "xdp") or \
                    (isinstance(target, ast.Attribute) and target.attr == "xdp"):
                names.append(node.name)
    return names


def forget_programs():
    """Drop every program module this process imported: the next load_program
    runs the file again, with fresh maps (a task of a distributed replay starts
    from the maps as loaded, whatever ran before in the same worker process).
    Compiled code stays cached."""
    for name in [n for n in sys.modules if n.startswith("dataplane_prog_")]:
        del sys.modules[name]


def _generated_module(path):
    """Write (once) and import the generated module for the program file ``path``."""
    text = path.read_bytes()
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise ProgramError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    names = _xdp_function_names(tree)
    # a module's maps are its live maps: per-CPU ones have a slot per worker, so
    # a process loading for another number of workers gets a module of its own
    workers = f" workers={config.WORKERS}" if config.WORKERS > 1 else ""
    key = hashlib.sha256(text + core_hash().encode() + str(path).encode()
                         + workers.encode()).hexdigest()[:20]
    modname = f"dataplane_prog_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{key}"
    if modname in sys.modules:
        return sys.modules[modname], names
    cache = Path(config.CACHE_DIR)
    cache.mkdir(parents=True, exist_ok=True)
    gen = cache / f"{modname}.py"
    if not gen.exists():
        tmp = gen.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(text + runner_kernels.RUNNER_PRELUDE.encode())
        os.replace(tmp, gen)
    spec = importlib.util.spec_from_file_location(modname, gen)
    module = importlib.util.module_from_spec(spec)
    module.__dataplane_source__ = str(path)
    sys.modules[modname] = module
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except DataplaneError:
        del sys.modules[modname]
        raise
    except Exception as exc:
        del sys.modules[modname]
        line = _line_in(exc.__traceback__, gen)
        raise ProgramError(f"{path}:{line}: error while loading: {type(exc).__name__}: {exc}") \
            from None
    finally:
        sys.path.remove(str(path.parent))
    _add_loops(module, gen, tree, names)
    return module, names


def _loop_value_dtype(module, m):
    """The record type the loop views map ``m``'s values as. numba types no
    big-endian field (``>u4``: a ``__u8 x[4]`` of an eBPF object's BTF, which
    btf_dtype reads as one number): an eBPF object reaches its values by
    address, so it gets the native-order twin of the same layout. (A Python
    program keeps its own: a ring buffer's records, packed by words, are never
    viewed.)"""
    dt = m.value_dtype
    if dt is None or dt.isnative or not getattr(module, "__dataplane_trusted__", False):
        return dt
    return dt.newbyteorder("=")


def _chained(m):
    """Whether map ``m`` (or, for a map of maps, its inner maps) chains its
    entries from buckets (kernels/htab.py)."""
    m = getattr(m, "inner_spec", None) or m
    return m.is_hash and not (m.is_lpm or m.open_addressed)


def _prefetches_chains(tree, module):
    """Whether the file may call bpf_map_prefetch on a chained hash map, whose
    rows the loop's memo stages fetch after the hook (kernels/runner.py): a map
    named by a global is known; any other (an inner map) may be any of the
    file's maps of maps' inner maps."""
    for n in ast.walk(tree):
        if not (isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None))
                == "bpf_map_prefetch" and n.args):
            continue
        m = module.__dict__.get(getattr(n.args[0], "id", None))
        if isinstance(m, Map) and not m.is_map_in_map:
            if _chained(m):
                return True
        elif any(_chained(x) for x in vars(module).values()
                 if isinstance(x, Map) and x.is_map_in_map):
            return True
    return False


def _add_loops(module, gen, tree, names):
    """Define each program's batch loops in the module, with its file's maps."""
    maps = sorted((g, m) for g, m in vars(module).items() if isinstance(m, Map))
    module.__dataplane_maps__ = maps
    # bpf_trace_printk's formats, by id: the file's text fixes them (cached code agrees)
    module.__dataplane_trace__ = getattr(module, "__dataplane_trace_formats__", None) or \
        trace_format_table(tree, module.__dict__)
    loop_maps = maps + ([(runner_kernels.TRACE_HANDLE, _trace_ring())]
                        if module.__dataplane_trace__ else [])
    for number, (g, m) in enumerate(loop_maps):
        fields = [n[len(g) + 1:] for n in runner_kernels.map_param_names(g, m)]
        handle = collections.namedtuple(f"MapHandle_{g}", fields)
        if getattr(m, "is_ringbuf", False):
            handle._dp_ringbuf = m  # kernels/ringbuf.py; the element helpers refuse it
        else:
            handle._dp_map = m
            handle._dp_map_number = number  # Program.numbered_maps, broadcast.py
            handle._dp_worker_rows = runner_kernels.worker_rows(m)
        module.__dict__[f"_dp_H_{g}"] = handle
        module.__dict__[f"_dp_VT_{g}"] = _loop_value_dtype(module, m)
    # (eBPF objects' generated files say it: ebpf/program.py)
    reads_packet = getattr(module, "__dataplane_reads_packet__", False) or any(
        isinstance(n, ast.Attribute) and n.attr == "pkt" for n in ast.walk(tree))
    # A PROG_ARRAY names the file's programs: each loop can run any of them.
    prog_arrays = [m for _, m in maps if m.type == BPF_MAP_TYPE_PROG_ARRAY]
    for m in prog_arrays:
        m.bind_programs(names)
    module.__dataplane_tail__ = tuple(names) if prog_arrays else ()
    # Only bpf_xdp_adjust_tail reaches the room behind a packet: files that never
    # call it get batches without it (denser slots, fewer cache lines per batch).
    called = {getattr(n, "id", getattr(n, "attr", None)) for n in ast.walk(tree)
              if isinstance(n, (ast.Name, ast.Attribute))}
    module.__dataplane_grows_tail__ = "bpf_xdp_adjust_tail" in called or \
        getattr(module, "__dataplane_grows_tail__", False)
    module.__dataplane_grows_head__ = grows_head = \
        bool(called & {"bpf_xdp_adjust_head", "bpf_xdp_adjust_meta"}) or \
        getattr(module, "__dataplane_grows_head__", False)
    hooks = {n: getattr(getattr(module.__dict__.get(n), "prefetch", None), "__name__", None)
             for n in names}
    trusted = getattr(module, "__dataplane_trusted__", False)
    # the checker ticks the budget in each loop of the file's functions, the only
    # code of the file a program runs: a file without loops never spends it
    loops = any(isinstance(n, (ast.For, ast.While, ast.comprehension)) for n in ast.walk(tree))
    memo = _prefetches_chains(tree, module)
    src = "".join(runner_kernels.runner_source(n, loop_maps, reads_packet,
                                               bool(module.__dataplane_trace__),
                                               module.__dataplane_tail__, grows_head,
                                               hooks[n], budget=loops and not trusted,
                                               reads_time=getattr(
                                                   module, "__dataplane_reads_time__", True),
                                               memo=memo)
                  for n in names)
    exec(compile(src, f"{gen}:loops", "exec"), module.__dict__)


def _trace_ring():
    """A program's trace ring (kernels/runner.py's TRACE_RECORD records)."""
    return RingBuf("trace", BPF_MAP_TYPE_RINGBUF, None, runner_kernels.TRACE_RECORD,
                   runner_kernels.TRACE_RING_BYTES)


def _line_in(tb, filename):
    line = "?"
    for frame in traceback.extract_tb(tb):
        if frame.filename == str(filename):
            line = frame.lineno
    return line


def _compile_functions(module, spec):
    """Check the program and the functions it calls, then bind numba dispatchers.

    They are compiled in a copy of the module's namespace where helpers are
    numba objects; only the ``_dp_fn_*`` dispatchers go back into the module
    (for its loops), so a later check of the same file sees its own globals.
    """
    if f"_dp_fn_{spec.fn.__name__}" in module.__dict__:
        return
    if getattr(module, "__dataplane_trusted__", False):
        # generated by dataplane (an eBPF object's program: its verifier ran)
        tree, _, first = function_tree(spec.fn, module.__file__)
        ast.increment_lineno(tree, first - 1)
        checked = [(spec.fn, tree)]
    else:
        checked = check_program(spec.fn, module.__dataplane_source__,
                                module.__dataplane_trace__)
    if spec.prefetch is not None:
        seen = {f.__name__ for f, _ in checked}
        checked += [(f, t) for f, t in check_program(spec.prefetch, module.__dataplane_source__,
                                                     module.__dataplane_trace__)
                    if f.__name__ not in seen]
    renamed = {f.__name__: f"_dp_fn_{f.__name__}" for f, _ in checked}
    # Maps reach compiled code as arguments (numba freezes globals): every
    # function gets its file's maps as trailing parameters and passes them on,
    # and the trace ring's handle last when the file traces.
    maps = [g for g, _ in module.__dataplane_maps__]
    if module.__dataplane_trace__:
        maps.append(runner_kernels.TRACE_HANDLE)
    body = []
    for _, tree in checked:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                node.name = renamed[node.name]
                node.args.args += [ast.arg(f"_dp_map_{g}") for g in maps]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in renamed:
                node.args += [ast.Name(f"_dp_map_{g}", ast.Load()) for g in maps]
        for node in ast.walk(tree):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                if node.id in renamed:
                    node.id = renamed[node.id]
                elif node.id in maps:
                    node.id = f"_dp_map_{node.id}"
        ast.fix_missing_locations(tree)
        body.extend(tree.body)
    namespace = dict(module.__dict__)
    exec(compile(ast.Module(body=body, type_ignores=[]), module.__file__, "exec"), namespace)
    used = set()
    for new in renamed.values():
        used.update(namespace[new].__code__.co_names)
        namespace[new] = plain_dispatcher(namespace[new], config.PROGRAM_JIT)
        module.__dict__.setdefault(new, namespace[new])
    materialize(namespace, used)


@contextlib.contextmanager
def _wrapping_integers():
    """Compile programs with wrap-around integer arithmetic (eBPF's semantics).

    numba marks signed +, - and * as unable to overflow (LLVM's ``nsw``). After a
    guard like ``if off + 4 > len(pkt)`` whose sum overflowed, LLVM may then
    "prove" ``off`` in bounds and delete the view's check: a crash. Without the
    flag only checks that are really redundant go.
    """
    import numba.cpython.numbers as cpython_numbers
    import numba.np.math.numbers as np_numbers

    modules = (cpython_numbers, np_numbers)
    saved = [m._int_arith_flags for m in modules]
    for m in modules:
        m._int_arith_flags = lambda rettype: []
    try:
        yield
    finally:
        for m, f in zip(modules, saved):
            m._int_arith_flags = f


def _numba_error(exc, path, gen, program):
    """The essential line of a numba compile error, located in the user's file
    (the innermost frame there: the generated module keeps the user's lines)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    lines = [ln.strip() for ln in text.splitlines()]
    skip = ("Failed in", "During:", "File ", "Enable logging", "This error", "<source",
            "^", "[1]", "[2]", "- Resolution", "raised from")
    essential = next((ln for ln in lines if ln and not ln.startswith(skip)
                      and not ln.startswith("- ")), lines[0] if lines else type(exc).__name__)
    call = re.search(r"No implementation of function Function\(<function (\w+)[^>]*>\) "
                     r"found for signature:\s*>>> \w+\((.*)\)", text)
    if call:
        essential = f"{call[1]}() does not take arguments of types ({_short_types(call[2])})"
    base = os.path.basename(str(gen))
    nums = [n for f, n in re.findall(r'File "([^"]+)", line (\d+)', text)
            if os.path.basename(f) == base]
    line = nums[0] if nums else "?"
    return ProgramError(f"{path}:{line}: {program}: cannot compile: {essential}")


def _short_types(types_text):
    """numba's argument types with each map handle's arrays elided: ``map 'flows'``."""
    out, i = [], 0
    for m in re.finditer(r"MapHandle_(\w+)\(", types_text):
        if m.start() < i:
            continue
        depth, j = 1, m.end()
        while j < len(types_text) and depth:
            depth += {"(": 1, ")": -1}.get(types_text[j], 0)
            j += 1
        out.append(types_text[i:m.start()] + f"map '{m[1]}'")
        i = j
    return "".join(out) + types_text[i:]


def load_configured(ref=None, filter_expr=None, checked=True, pin=None, lb_config=None,
                    seed=None, capture_time=False):
    """A program as ``replay``, ``run`` and a cluster's tasks take it: -p ``ref``
    (load_program), or -f ``filter_expr``, a tcpdump filter compiled to classic
    BPF (as ``tcpdump -ddd`` would) and run as eBPF; configured by a load
    balancer's TOML ``lb_config`` (--config, its state kept in ``pin``), with
    bpf_get_prandom_u32 seeded (--seed) and bpf_ktime_get_ns giving each
    packet's capture time (--ktime capture)."""
    if filter_expr is not None:
        from .ebpf.cbpf import load_filter
        program = load_filter(filter_expr, checked=checked)
    else:
        program = load_program(ref, checked=checked, pin=pin)
    if lb_config:
        from .lb.control import load_balancer
        load_balancer(program, lb_config, state_dir=pin)
    if seed is not None:
        program.seed_prandom(seed)
    program.use_capture_time(capture_time)
    return program


def load_program(ref, name=None, checked=True, pin=None):
    """Load a program by reference (file, ``file:name`` or bundled name) -> Program.

    ``checked=False`` drops the run-time bounds checks of packet accesses (an
    out-of-bounds access is then undefined behaviour, as it would be in C
    without the verifier): for programs trusted to guard every access.
    ``pin`` is a directory: the program's maps move into files there, shared
    with other processes (pin.py).
    """
    if is_object_ref(ref):  # an eBPF object: its program becomes a generated file
        from .ebpf.program import load_ebpf_program
        return load_ebpf_program(ref if name is None else f"{ref}:{name}", checked, pin)
    path, ref_name = resolve_program(ref)
    name = name or ref_name
    module, names = _generated_module(path)
    specs = {v.name: v for v in vars(module).values() if isinstance(v, ProgramSpec)}
    if not specs:
        raise ProgramError(f"{path}: no @xdp program in this file")
    if name is None:
        if len(specs) > 1:
            raise ProgramError(f"{path}: {len(specs)} programs in this file, choose one",
                               hint="use " + " or ".join(f"{path.name}:{n}" for n in sorted(specs)))
        name = next(iter(specs))
    if name not in specs:
        raise ProgramError(f"{path}: no program '{name}' (programs: {', '.join(sorted(specs))})")
    spec = specs[name]
    if spec.fn.__name__ not in names:
        raise ProgramError(f"{path}: program '{name}' must be a top-level function decorated "
                           "with @xdp")
    variant = "" if checked else "_unchecked"
    run = module.__dict__[f"_dp_run{variant}_{spec.fn.__name__}"]
    maps = module.__dataplane_maps__
    if pin is not None:
        for _, m in maps:
            m.pin(pin)
    map_arrays = [a for _, m in maps for a in m.program_arrays()]
    trace = None
    if module.__dataplane_trace__:
        ring = _trace_ring()
        map_arrays += ring.program_arrays()
        trace = (ring, module.__dataplane_trace__)
    kinds = _RUNNER_KINDS + tuple(kind_of(a) for a in map_arrays)
    cached = run.is_cached(kinds, block=True)
    if not cached:
        by_function = {v.fn.__name__: v for v in specs.values()}
        # tail calls can reach every program of the file: compile them all
        for s_ in ([by_function[n] for n in module.__dataplane_tail__]
                   if module.__dataplane_tail__ else [spec]):
            _compile_functions(module, s_)
    b = PacketBatch(1, buffer_bytes=1024)
    try:
        with contextlib.nullcontext() if cached else _wrapping_integers():
            entry = run.entry(kinds, (b.buf, b.meta, runner_kernels.new_scratch(), 0, 0,
                                      *map_arrays), block=True)
    except Exception as exc:
        if type(exc).__module__.startswith("numba"):
            raise _numba_error(exc, path, module.__file__, name) from None
        raise
    program = Program(spec, entry, path, checked, [m for _, m in maps], map_arrays, trace)
    if not module.__dataplane_grows_tail__:
        program.tailroom = 0
    if module.__dataplane_grows_head__:
        program.line_offset = config.HEAD_LINE_OFFSET
    return program
