"""``dataplane run --workers N``: one worker per receive ring, as XDP runs one
program instance per RX queue.

Each worker is a LiveDataplane of its own (live.py) on its own thread, with
its own view of the program (workers.py: per-CPU slots, worker number), its
own AF_PACKET socket per interface and its own transmit path. The sockets of
an interface form one PACKET_FANOUT_HASH group, so the kernel spreads the
interface's flows over the workers' rings by the flow hash (symmetric: both
directions of a connection reach one worker). Worker 0 (the lead, on the
calling thread) owns the TAPs and the host blocks and reads what the host
sends; every worker writes its XDP_PASS frames into the TAPs through handles
of its own. Counters are per worker and summed for the periodic lines and the
summary, which also lists each worker's.
"""

import os
import threading

import numpy as np

from .errors import UsageError
from .live import LiveDataplane
from .live_stats import RX, VERDICT_COLUMN, LiveStats
from .workers import check_workers


class LiveWorkers:
    """``workers`` LiveDataplanes on ``interfaces``; LiveDataplane's interface
    (warm_up, run, stop, close, ports, program)."""

    def __init__(self, program, interfaces, workers, host_tap=False, tap_names_=None,
                 batch_size=None, tx="mmsg", extended=False):
        check_workers(workers)
        if program.traces:
            raise UsageError("run: --workers with a program that calls bpf_trace_printk: not "
                             "yet (its trace ring numbers packets per run, not per worker)")
        self.program = program
        base = (os.getpid() * 31) & 0xFFFF  # group ids are per network namespace

        def fanout(row):
            return (base + row) & 0xFFFF
        self.lanes = []
        try:
            lead = LiveDataplane(program.for_worker(0), interfaces, host_tap, tap_names_,
                                 batch_size, tx, fanout=fanout, extended=extended)
            self.lanes.append(lead)
            for k in range(1, workers):
                self.lanes.append(LiveDataplane(program.for_worker(k), interfaces, host_tap,
                                                tap_names_, batch_size, tx, fanout=fanout,
                                                lead=lead))
        except BaseException:
            self.close()
            raise
        for lane in self.lanes:
            lane.peers = self.lanes
        self.ports = lead.ports
        self.stats = None

    def warm_up(self):
        for lane in self.lanes:
            lane.warm_up()

    def stop(self, why="stop"):
        for lane in self.lanes:
            lane.stop(why)

    def run(self, limit=None, interval=None, on_interval=None, wakeup_fd=None):
        """Every worker's loop at once until stop(), ``limit`` packets in all, or an
        error (which stops the others too and is raised here)."""
        errors = []

        def serve(lane):
            try:
                lane.run(limit=limit)
            except BaseException as exc:  # handed to the lead's thread
                errors.append(exc)
                self.stop("error")

        threads = [threading.Thread(target=serve, args=(lane,), daemon=True,
                                    name=f"dataplane-live-{k}")
                   for k, lane in enumerate(self.lanes[1:], 1)]
        for t in threads:
            t.start()
        state = {"before": None}

        def merged_interval(_stats, _before, seconds, since):
            for lane in self.lanes[1:]:
                lane._kernel_counters()
            merged = self._merged()
            before = state["before"] if state["before"] is not None else \
                np.zeros_like(merged.c)
            on_interval(merged, before, seconds, since)
            state["before"] = merged.snapshot()

        try:
            self.lanes[0].run(limit=limit, interval=interval, wakeup_fd=wakeup_fd,
                              on_interval=merged_interval if on_interval else None)
        finally:
            self.stop(self.lanes[0].stats.stopped_by or self.lanes[0]._stop or "stop")
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        self.stats = self._merged()
        return self.stats

    def _merged(self):
        """The workers' counters summed (an interface's own drop counters are the
        lead's alone: the others never read them)."""
        lead = self.lanes[0].stats
        m = LiveStats(lead.program, lead.interfaces, lead.taps, lead.host_tap, lead.checked,
                      lead.extended)
        for lane in self.lanes:
            s = lane.stats
            m.c += s.c
            for k, v in s.unknown.items():
                m.unknown[k] = m.unknown.get(k, 0) + v
            m.errors.update(s.errors)
            m.trace_lines += s.trace_lines
            m.faults += lane.program.faults
            m.invalid += lane.program.invalid
            if lane.program.first_fault is not None and m.first_fault is None:
                m.first_fault, m.fault_reason = lane.program.first_fault, \
                    lane.program.fault_reason
        m.elapsed_s, m.cpu_s = lead.elapsed_s, lead.cpu_s  # the process's CPU time
        m.stopped_by, m.error = lead.stopped_by, lead.error
        m.workers = [{"worker": k, "rx": int(lane.stats.c[:, RX].sum()),
                      "actions": {a.short: int(lane.stats.c[:, col].sum())
                                  for a, col in VERDICT_COLUMN.items()}}
                     for k, lane in enumerate(self.lanes)]
        return m

    def close(self):
        """Close the followers first: the lead's TAPs outlive their handles."""
        for lane in reversed(self.lanes):
            lane.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
