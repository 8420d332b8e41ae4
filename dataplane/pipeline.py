"""Source -> PacketBatch -> Program -> sinks by verdict, with counters.

Python touches a batch, never a packet: reading, running and grouping are
compiled; per batch Python makes a handful of calls. After each batch the
program's bpf_trace_printk lines are printed (``trace: packet N: <text>``,
N the packet's index in the run) and counted in the stats.
"""

import os
import sys
import time

import numpy as np

from . import config, jit
from .action import ACTION_NAMES, XdpAction
from .broadcast import redirect_groups
from .errors import CaptureError, DataplaneError
from .io.pcap import PcapWriter
from .kernels.dispatch import captured_bytes, group_by_action
from .stats import RunStats


class VerdictPcaps:
    """One pcap per verdict in a directory (``pass.pcap``, ``drop.pcap``, ...,
    ``redirect-<ifindex>.pcap``), each created when its first packet arrives;
    a broadcast's frame is in the redirect file of each device it went to."""

    def __init__(self, outdir, nanosecond=True, snaplen=None):
        self.outdir = outdir
        self.nanosecond = nanosecond
        self.snaplen = snaplen
        self.writers = {}
        try:
            os.makedirs(outdir, exist_ok=True)
        except OSError as exc:
            raise DataplaneError(f"{outdir}: cannot create output directory: "
                                 f"{exc.strerror}") from None

    def _writer(self, name):
        w = self.writers.get(name)
        if w is None:
            path = os.path.join(self.outdir, f"{name}.pcap")
            kw = {} if self.snaplen is None else {"snaplen": self.snaplen}
            w = self.writers[name] = PcapWriter(path, nanosecond=self.nanosecond, **kw)
        return w

    def write(self, batch, order, counts):
        off = 0
        for action, count in enumerate(counts.tolist()):
            if count == 0:
                continue
            start, off = off, off + count
            if action != XdpAction.XDP_REDIRECT:
                self._writer(ACTION_NAMES[action]).write_batch(batch, order, off, start)
                continue
            redirects = batch.redirects
            if redirects is None:  # (not from replay, which groups them once)
                redirects = redirect_groups(batch, order[start:off], batch.maps)
            for t, sel in redirects:
                self._writer(f"redirect-{t}").write_batch(batch, sel, sel.size)

    def close(self):
        """Close every file; returns {name: path} of the files written."""
        files = {}
        for name, w in sorted(self.writers.items()):
            w.close()
            files[name] = w.path
        return files


class InterfaceSink:
    """The XDP_PASS and XDP_TX frames out of an interface (tcpreplay's habit):
    ``pps`` paces them (None: top speed). ``sent`` / ``dropped`` count them,
    ``seconds`` is the time spent sending, for the achieved rate."""

    #: Frames a paced sender sends between two looks at the clock.
    PACE_CHUNK = 64

    def __init__(self, ifname, pps=None):
        from .io.rawsock import RawSocket
        self.ifname, self.pps = ifname, pps
        self.sock = RawSocket(ifname, rx=False)
        self.sent = self.dropped = 0
        self.first = None
        self.seconds = 0.0

    def write(self, batch, order, counts):
        # order is sorted by verdict and PASS, TX are neighbours: one slice, no copy
        first = int(counts[:XdpAction.XDP_PASS].sum())
        idx = order[first:first + int(counts[XdpAction.XDP_PASS] + counts[XdpAction.XDP_TX])]
        if not idx.size:
            return
        if self.first is None:
            self.first = time.perf_counter()
        step = self.PACE_CHUNK if self.pps else idx.size
        for start in range(0, idx.size, step):
            if self.pps:  # wait until this chunk is due
                due = self.first + self.sent / self.pps
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            sent, dropped, _ = self.sock.send(batch, idx, start, min(start + step, idx.size))
            self.sent += sent
            self.dropped += dropped
        self.seconds = time.perf_counter() - self.first

    def close(self):
        self.sock.close()
        return {}

    def summary(self):
        """What was sent and how fast, against what was asked."""
        rate = self.sent / self.seconds if self.seconds > 0 else 0.0
        return {"interface": self.ifname, "sent": self.sent, "dropped": self.dropped,
                "seconds": round(self.seconds, 6), "pps": round(rate, 1),
                "requested_pps": self.pps}


class Tee:
    """Several sinks fed the same batches (pcap files and an interface)."""

    def __init__(self, *sinks):
        self.sinks = [s for s in sinks if s is not None]

    def write(self, batch, order, counts):
        for s in self.sinks:
            s.write(batch, order, counts)

    def close(self):
        files = {}
        for s in self.sinks:
            files.update(s.close())
        return files


#: Packets per worker in a multi-worker replay's batch, at the least.
MIN_WORKER_BATCH = 4096


def replay(reader, program, sinks=None, batch_size=config.BATCH_SIZE, limit=None,
           progress=None, trace_stream=None, workers=1):
    """Run every packet of ``reader`` through ``program`` into ``sinks``.

    Returns RunStats. A capture fault mid-file ends the run after the packets
    before it were processed and written (stats.error says where); Ctrl-C ends
    it the same way (stats.interrupted). The program's trace lines go to
    ``trace_stream`` after each batch (None: stderr; False: only the stats).
    ``workers`` > 1 runs each batch on that many threads (workers.py), in
    batches of at least MIN_WORKER_BATCH packets a worker: a hand-off wakes the
    threads (tens of us on a busy VM), which 1024-packet batches paid ~300 us
    a batch for on the 1M-packet capture.
    """
    if workers > 1:
        from .workers import Workers
        pool = Workers(program, workers)
        try:
            return replay(reader, pool, sinks, max(batch_size, MIN_WORKER_BATCH * workers),
                          limit, progress, trace_stream)
        finally:
            pool.close()
    tracing = getattr(program, "traces", False)
    stats = RunStats(program.name, reader.path, program.checked)
    batch = program.new_batch(batch_size)
    order = np.zeros(batch.capacity, np.int64)
    counts = np.zeros(len(ACTION_NAMES), np.int64)
    pos = np.zeros_like(counts)
    start, built = time.perf_counter_ns(), jit.build_ns
    try:
        while limit is None or stats.packets < limit:
            n = reader.read_batch(batch)
            if n == 0:
                break
            if limit is not None and stats.packets + n > limit:
                n = batch.count = limit - stats.packets
            stats.bytes += int(captured_bytes(batch.meta, n))
            program.run_batch(batch, base_index=stats.packets)
            if tracing:
                _emit_trace(program, stats, trace_stream, progress)
            group_by_action(batch.meta, n, order, counts, pos)
            stats.actions += counts
            if counts[XdpAction.XDP_REDIRECT]:
                _group_redirects(stats, batch, order, counts)
            if sinks is not None:
                sinks.write(batch, order, counts)
            stats.packets += n
            if progress is not None:
                progress.update(reader.offset, stats.packets)
    except CaptureError as exc:
        stats.error = str(exc)
    except KeyboardInterrupt:
        stats.interrupted = True
    finally:
        if tracing:  # lines of a batch cut short by Ctrl-C
            _emit_trace(program, stats, trace_stream, progress)
        if sinks is not None:
            stats.files = sinks.close()
        stats.compile_ns = jit.build_ns - built
        stats.elapsed_ns = time.perf_counter_ns() - start - stats.compile_ns
        if progress is not None:
            progress.done()
    stats.warnings = list(reader.warnings)
    stats.take_program_counters(program)
    return stats


def _emit_trace(program, stats, stream, progress):
    lines = program.trace_lines()
    if not lines:
        return
    stats.add_trace(lines)
    if stream is False:
        return
    stream = stream or sys.stderr
    if progress is not None:
        progress.clear()
    stream.write("".join(f"trace: packet {ln.packet}: {ln.text}\n" for ln in lines))
    stream.flush()


def _group_redirects(stats, batch, order, counts):
    """Group the batch's redirected packets by device, once, for the sinks
    (batch.redirects), and count the frames each device gets (a broadcast: one
    to each of its map's); ``order``, ``counts``: the batch grouped by verdict
    (group_by_action)."""
    start = int(counts[:XdpAction.XDP_REDIRECT].sum())
    idx = order[start:start + int(counts[XdpAction.XDP_REDIRECT])]
    batch.redirects = list(redirect_groups(batch, idx, batch.maps))
    for t, sel in batch.redirects:
        stats.redirect[t] = stats.redirect.get(t, 0) + sel.size
