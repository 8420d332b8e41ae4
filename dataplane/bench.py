"""ns/packet of a program on packets held in memory, against the empty program.

The packets are read once into large batches; each timed pass runs the
program over all of them in windows of ``batch`` packets, one compiled call
per window from Python, exactly as a pipeline does. In the same run, repeats
interleaved, it also times the program without bounds checks (so the cost of
checking is visible) and the empty program (``pass_all``: the harness alone,
so the program's own cost is the difference). Each timed pass follows an
untimed pass of the same program, so that none is timed on caches the other
programs filled.
"""

import functools
import statistics
import time

import numpy as np

from . import config
from .io.batch import PacketBatch
from .io.capture import open_capture
from .kernels import layout
from .kernels.restore import HEAD_BYTES, restore_heads
from .kernels.steer import steer
from .workers import WorkerThreads

#: Packets per in-memory chunk (each a PacketBatch; windows of --batch run inside).
_CHUNK = 65536


class Chunk:
    """A large batch of packets, with what a program that moves packet boundaries
    changes (its boundaries, the first HEAD_BYTES bytes from data) saved as
    read. Such a program (bpf_xdp_adjust_head/tail/meta: an encapsulation) would
    otherwise run out of headroom pass after pass and see its own output, so
    each window of packets is put back just before it runs, untimed (the
    kernel's BPF_PROG_TEST_RUN with a repeat count also gives each repetition a
    fresh copy). Its headers are then in cache, as a NIC writing packets into
    the cache (DDIO) leaves them. Larger restores, whole buffers between passes
    or whole chunks, evicted the program's maps: the load balancer's 100,000
    connections were fetched again after each, doubling its ns/packet."""

    def __init__(self, batch):
        self.batch = b = batch
        self.meta = b.meta.copy()
        # each packet's first HEAD_BYTES, gathered through a window view (an index
        # array of every byte cost 8 bytes a byte); the buffer's last ones fewer
        windows = np.lib.stride_tricks.sliding_window_view(b.buf, HEAD_BYTES)
        data = b.data[:b.count]
        self.heads = windows[np.minimum(data, len(windows) - 1)]
        for k in np.flatnonzero(data >= len(windows)):
            self.heads[k, :b.buf.size - data[k]] = b.buf[data[k]:]

    def moved(self):
        """True when a pass moved any packet's boundaries."""
        b = self.batch
        return any(not np.array_equal(b.meta[r, :b.count], self.meta[r, :b.count])
                   for r in (layout.DATA, layout.DATA_END, layout.DATA_META))


def load_packets(path, limit=None, programs=(), workers=1, warnings=None):
    """Read up to ``limit`` packets of a capture into a list of large batches,
    laid out for ``programs``, the programs that will run on them: the room
    behind each packet the largest of their tailrooms, each packet's data at
    the first one's line offset (Program.new_batch; no programs: a
    PacketBatch's defaults). The reader's warnings (a truncated last record)
    are added to ``warnings``. With ``workers`` > 1 each batch is steered once
    (workers.py): its packets in worker order, worker k's from
    ``chunk.bounds[k]`` to ``chunk.bounds[k + 1]``."""
    tailroom = max((p.tailroom for p in programs), default=config.TAILROOM)
    line_offset = programs[0].line_offset if programs else 0
    chunks, total = [], 0
    with open_capture(path) as reader:
        while limit is None or total < limit:
            b = PacketBatch(_CHUNK, buffer_bytes=_CHUNK * (config.HEADROOM + tailroom + 1600),
                            tailroom=tailroom, line_offset=line_offset)
            n = reader.read_batch(b)
            if n == 0:
                break
            if limit is not None and total + n > limit:
                n = b.count = limit - total
            bounds = np.array([0, n], np.int64)
            if workers > 1:
                bounds = np.zeros(workers + 1, np.int64)
                steered = np.empty_like(b.meta)
                steer(b.buf, b.meta, n, workers, np.empty(n, np.int64), np.empty(n, np.int64),
                      bounds, steered)
                b.meta[:] = steered
            chunks.append(Chunk(b))
            chunks[-1].bounds = bounds
            total += n
        if warnings is not None:
            warnings.extend(reader.warnings)
    return chunks, total


def _run_range(call, chunk, lo, hi, batch, restore):
    """Run packets ``lo``..``hi`` of ``chunk`` in windows of ``batch``: ns spent in
    the calls. With ``restore`` each window is put back just before it runs,
    untimed; without, the whole range is timed at once."""
    b, clock = chunk.batch, time.perf_counter_ns
    if not restore:
        t0 = clock()
        for start in range(lo, hi, batch):
            call(b, start, min(start + batch, hi))
        return clock() - t0
    t = 0
    for start in range(lo, hi, batch):
        end = min(start + batch, hi)
        restore_heads(b.buf, b.meta, chunk.meta, chunk.heads, start, end)
        t0 = clock()
        call(b, start, end)
        t += clock() - t0
    return t


def _worker_pass(program, views, chunks, batch, restore, threads):
    """One pass with every worker at once: worker k runs its part of each chunk
    in windows, with its view ``views[k]`` of the program. ns/packet of the wall
    time (in restore mode, of the slowest worker's timed calls)."""
    elapsed = [0] * threads.n
    clock = time.perf_counter_ns

    def job(k):
        elapsed[k] = sum(_run_range(views[k]._call, c, int(c.bounds[k]), int(c.bounds[k + 1]),
                                    batch, restore) for c in chunks)

    t0 = clock()
    threads.run_all([functools.partial(job, k) for k in range(threads.n)])
    wall = clock() - t0
    for v in views:
        program.take_counters(0, v._scratch)
    return (max(elapsed) if restore else wall) / sum(c.batch.count for c in chunks)


def _one_pass(program, chunks, batch, restore, threads=None, views=None):
    if threads is not None:
        return _worker_pass(program, views, chunks, batch, restore, threads)
    elapsed = sum(_run_range(program._call, c, 0, c.batch.count, batch, restore)
                  for c in chunks)
    program.take_counters()
    return elapsed / sum(c.batch.count for c in chunks)


class BenchResult:
    """Per-repeat ns/packet of a program, checked and unchecked, and of the harness."""

    def __init__(self, name, ns, unchecked_ns, harness_ns, packets, batch):
        self.name, self.ns, self.harness_ns = name, ns, harness_ns
        self.unchecked_ns = unchecked_ns
        self.packets, self.batch, self.repeats = packets, batch, len(ns)
        self.workers = 1

    @property
    def ns_per_pkt(self):
        return statistics.median(self.ns)

    @property
    def harness_ns_per_pkt(self):
        return statistics.median(self.harness_ns)

    @property
    def unchecked_ns_per_pkt(self):
        return statistics.median(self.unchecked_ns)

    def to_json(self):
        return {
            "program": self.name,
            "ns_per_pkt": round(self.ns_per_pkt, 3),
            "ns_per_pkt_min": round(min(self.ns), 3),
            "ns_per_pkt_max": round(max(self.ns), 3),
            "harness_ns_per_pkt": round(self.harness_ns_per_pkt, 3),
            "unchecked_ns_per_pkt": round(self.unchecked_ns_per_pkt, 3),
            "pps": round(1e9 / self.ns_per_pkt, 1),
            "packets": self.packets,
            "repeats": self.repeats,
            "batch": self.batch,
            "workers": self.workers,
        }

    def format(self):
        return (f"{self.name}: {self.ns_per_pkt:.1f} ns/pkt (median of {self.repeats} runs, "
                f"{self.packets:,} packets, batch {self.batch}"
                f"{f', {self.workers} workers' if self.workers > 1 else ''}), harness alone "
                f"{self.harness_ns_per_pkt:.1f} ns/pkt\n"
                f"  spread {min(self.ns):.1f} .. {max(self.ns):.1f} ns/pkt, "
                f"{1e3 / self.ns_per_pkt:.1f} Mpps; program's own cost "
                f"{self.ns_per_pkt - self.harness_ns_per_pkt:.1f} ns/pkt\n"
                f"  unchecked {self.unchecked_ns_per_pkt:.1f} ns/pkt: bounds checks cost "
                f"{self.ns_per_pkt - self.unchecked_ns_per_pkt:+.1f} ns/pkt")


def bench(program, unchecked, harness, chunks, packets, batch=256, repeats=7, workers=1):
    """Time the three programs in turn, each pass after an untimed one of its own;
    with ``workers`` > 1 (chunks loaded steered for as many), all workers at once."""
    threads = WorkerThreads(workers) if workers > 1 else None
    try:
        result = _bench(program, unchecked, harness, chunks, packets, batch, repeats, threads)
    finally:
        if threads is not None:
            threads.close()
    result.workers = workers
    return result


def _bench(program, unchecked, harness, chunks, packets, batch, repeats, threads):
    programs = (program, unchecked, harness)
    views = {p: [p.for_worker(k) for k in range(threads.n)] if threads else None
             for p in programs}
    restore = False
    for p in programs:  # the warm-up passes also tell whether packets need restoring
        _one_pass(p, chunks, batch, True, threads, views[p])
        restore = restore or any(c.moved() for c in chunks)
    times = [[], [], []]
    for _ in range(repeats):  # all three restore, or none: the harness measures it too
        for p, t in zip(programs, times):
            # an untimed pass first: the pass before (another program's) evicted
            # this one's maps, and timing it cold cost l4lb +30 ns/pkt against
            # the same program timed right after itself
            _one_pass(p, chunks, batch, restore, threads, views[p])
            t.append(_one_pass(p, chunks, batch, restore, threads, views[p]))
    return BenchResult(program.name, *times, packets, batch)
