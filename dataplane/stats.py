"""Run counters and the one place that formats them (human table, JSON, progress).

Every printed total comes from raw 64-bit counters, never from rates (a known
xdp-bench gripe); rates are derived at print time.
"""

import json
import sys
import time

import numpy as np

from .action import ACTION_NAMES, XdpAction, invalid_verdict_text

#: bpf_trace_printk lines kept for the JSON summary (all are printed on stderr).
TRACE_KEEP = 1000


class RunStats:
    """Raw counters of one run of a program over packets."""

    def __init__(self, program="", source="", checked=True):
        self.program = program
        self.source = source
        self.checked = checked
        self.packets = 0
        self.bytes = 0
        self.actions = np.zeros(len(ACTION_NAMES), np.int64)
        self.redirect = {}            # target ifindex -> packets
        self.faults = 0               # packets aborted by a fault of the program
        self.first_fault = None
        self.fault_reason = None
        self.invalid = 0              # packets aborted for an invalid verdict
        self.first_invalid = None
        self.invalid_return = None    # the value the first one returned
        self.elapsed_ns = 0           # processing time, compiling left out
        self.compile_ns = 0           # time spent compiling kernels during the run
        self.files = {}               # output name -> path
        self.warnings = []
        self.error = None             # the error that ended the run early, if any
        self.interrupted = False
        self.trace = []               # the first TRACE_KEEP trace lines (TraceLine)
        self.trace_lines = 0          # trace lines the program wrote
        self.trace_dropped = 0        # trace lines lost: the program's trace ring was full
        self.workers = []             # per worker (workers.py): packets and verdicts

    def add_trace(self, lines):
        """Count a batch's trace lines, keeping the first TRACE_KEEP of the run."""
        self.trace_lines += len(lines)
        room = TRACE_KEEP - len(self.trace)
        if room > 0:
            self.trace.extend(lines[:room])

    def take_program_counters(self, program):
        """Copy the program's fault counters (kept by Program across batches)."""
        self.faults, self.first_fault = program.faults, program.first_fault
        self.fault_reason = program.fault_reason
        self.invalid, self.first_invalid = program.invalid, program.first_invalid
        self.invalid_return = program.invalid_return
        self.trace_dropped = getattr(program, "trace_dropped", 0)
        if hasattr(program, "per_worker"):
            self.workers = program.per_worker()

    @property
    def ns_per_pkt(self):
        return self.elapsed_ns / self.packets if self.packets else 0.0

    @property
    def pps(self):
        return self.packets * 1e9 / self.elapsed_ns if self.elapsed_ns else 0.0

    def to_json(self):
        """The summary as a JSON-able dict (keys carry their units)."""
        d = {
            "program": self.program,
            "checked": self.checked,
            "source": self.source,
            "packets": self.packets,
            "bytes": self.bytes,
            "actions": {name: int(c) for name, c in zip(ACTION_NAMES, self.actions)},
            "redirect": {str(k): v for k, v in sorted(self.redirect.items())},
            "ns_per_pkt": round(self.ns_per_pkt, 2),
            "pps": round(self.pps, 1),
            "elapsed_s": round(self.elapsed_ns / 1e9, 6),
            "compile_s": round(self.compile_ns / 1e9, 3),
            "faults": self.faults,
            "first_fault": self.first_fault,
            "invalid_verdicts": self.invalid,
            "first_invalid": self.first_invalid,
            "invalid_return": self.invalid_return,
            "files": self.files,
            "warnings": self.warnings,
            "interrupted": self.interrupted,
            "trace": [{"packet": ln.packet, "text": ln.text} for ln in self.trace],
            "trace_lines": self.trace_lines,
            "trace_dropped": self.trace_dropped,
            "workers": self.workers or [{"worker": 0, "packets": self.packets, "actions": {
                name: int(c) for name, c in zip(ACTION_NAMES, self.actions)}}],
        }
        if self.error:
            d["error"] = self.error
        return d


def _n(x):
    return f"{int(x):,}"


def _verdict_lines(counts, redirect, packets):
    """The verdict table: each verdict's packets and share (``counts`` in
    XdpAction order), then the redirect targets."""
    lines = [f"  {'verdict':<14}{'packets':>14}{'share':>9}"]
    for action, count in zip(XdpAction, counts):
        share = 100.0 * count / packets if packets else 0.0
        lines.append(f"  {action.name:<14}{_n(count):>14}{share:>8.1f}%")
    for target, count in sorted(redirect.items()):
        lines.append(f"    {'-> ifindex ' + str(target):<18}{_n(count):>10}")
    return lines


def _worker_verdicts(actions):
    """A worker's verdicts as one list: ``pass 10, drop 3``."""
    return ", ".join(f"{k} {_n(v)}" for k, v in actions.items() if v)


def format_summary(stats):
    """The human summary block of a run: aligned columns, units in labels."""
    secs = stats.elapsed_ns / 1e9
    name = stats.program + ("" if stats.checked else " (unchecked)")
    head = f"{name} on {stats.source}" if stats.source else name
    lines = [f"{head}: {_n(stats.packets)} packets, {_n(stats.bytes)} bytes in {secs:.3f} s"
             + (" (interrupted)" if stats.interrupted else "")]
    lines += _verdict_lines(stats.actions, stats.redirect, stats.packets)
    if len(stats.workers) > 1:
        lines.append(f"  {'worker':<14}{'packets':>14}{'share':>9}   verdicts")
        for w in stats.workers:
            share = 100.0 * w["packets"] / stats.packets if stats.packets else 0.0
            lines.append(f"  {w['worker']:<14}{_n(w['packets']):>14}{share:>8.1f}%   "
                         f"{_worker_verdicts(w['actions'])}")
    lines.append(f"  {'ns/pkt':<14}{stats.ns_per_pkt:>14.1f}")
    lines.append(f"  {'Mpps':<14}{stats.pps / 1e6:>14.3f}")
    if stats.compile_ns:
        lines.append(f"  compiled kernels in {stats.compile_ns / 1e9:.2f} s (once per version; "
                     "not in the time above)")
    if stats.faults:
        lines.append(f"  aborted by program faults: {_n(stats.faults)} (first: packet "
                     f"{stats.first_fault}, {stats.fault_reason})")
    if stats.invalid:
        lines.append(f"  aborted for invalid verdicts: {_n(stats.invalid)} (first: packet "
                     f"{stats.first_invalid}, {invalid_verdict_text(stats.invalid_return)})")
    if stats.trace_lines or stats.trace_dropped:
        lines.append(f"  trace lines: {_n(stats.trace_lines)} (on stderr)"
                     + (f", {_n(stats.trace_dropped)} dropped: the trace ring was full"
                        if stats.trace_dropped else ""))
    for name, path in stats.files.items():
        lines.append(f"  {name:<14}{path}")
    return "\n".join(lines)


def format_many(summary, maps_only=False):
    """The summary of a replay of several captures or tasks (cli/replay_many.py):
    totals, verdicts, one line per task, the files; merged maps when dumped."""
    lines = []
    if not maps_only:
        n, secs = summary["packets"], summary["elapsed_s"]
        where = f" on {summary['cluster']}" if summary["cluster"] else ""
        lines.append(f"{summary['program']} on {len(summary['inputs'])} captures "
                     f"({len(summary['tasks'])} tasks{where}): {_n(n)} packets, "
                     f"{_n(summary['bytes'])} bytes in {secs:.3f} s")
        lines += _verdict_lines([summary["actions"].get(ACTION_NAMES[a], 0) for a in XdpAction],
                                summary["redirect"], n)
        lines.append(f"  {'ns/pkt':<14}{secs * 1e9 / n if n else 0.0:>14.1f}"
                     + ("  (wall time of the cluster run)" if summary["cluster"] else ""))
        lines.append(f"  {'Mpps':<14}{n / secs / 1e6 if secs else 0.0:>14.3f}")
        if summary["faults"] or summary["invalid_verdicts"]:
            lines.append(f"  aborted by program faults: {_n(summary['faults'])}, for invalid "
                         f"verdicts: {_n(summary['invalid_verdicts'])}")
        lines.append(f"  {'task':<6}{'packets':>12}  capture")
        for k, t in enumerate(summary["tasks"]):
            at = "" if t["start"] is None else f" bytes {t['start']}..{t['end']}"
            status = f"  FAILED: {t['error']}" if t["error"] else ""
            lines.append(f"  {k:<6}{_n(t['packets']):>12}  {t['path']}{at}{status}")
        for name, path in summary["files"].items():
            lines.append(f"  {name:<14}{path}")
    for name, m in (summary.get("maps") or {}).items():
        lines.append(f"map {name}: {m['type']}, {_n(len(m['entries']))} entries "
                     f"(merged: {m['rule']})")
        lines.extend(f"  {json.dumps(e)}" for e in m["entries"])
    return "\n".join(lines)


def format_maps(maps):
    """Maps as ``bpftool map dump`` prints them: a heading per map, an entry per line."""
    lines = []
    for name, m in maps.items():
        if getattr(m, "is_ringbuf", False):
            records = m.to_json()  # (a raw ring's records as hex)
            lines.append(f"map {name}: ringbuf, {_n(len(records))} records pending, "
                         f"{_n(m.dropped)} dropped, {_n(m.max_entries)} bytes")
            lines.extend(f"  value: {json.dumps(v)}" for v in records)
            continue
        if getattr(m, "is_queue_stack", False):
            values = m.to_json()
            lines.append(f"map {name}: {m.type_name}, {_n(len(values))} of "
                         f"{_n(m.max_entries)} values, next pop first")
            lines.extend(f"  value: {json.dumps(v)}" for v in values)
            continue
        entries = m.items()
        lines.append(f"map {name}: {m.type_name}, {_n(len(m))} of {_n(m.max_entries)} entries")
        lines.extend(f"  key: {json.dumps(k)}  value: {json.dumps(v)}" for k, v in entries)
    return "\n".join(lines)


def format_lb_stats(stats):
    """The load balancer's counters (LoadBalancer.stats, with rates when sampled
    over an interval): per VIP, per real, then the non-zero global counters."""
    rates = "interval" in stats
    lines = []
    for kind, name in (("vips", "vip"), ("reals", "real")):
        head = f"{name:<30} {'packets':>14} {'bytes':>16}"
        lines.append(head + (f" {'pps':>12} {'bytes/s':>14}" if rates else ""))
        for e in stats[kind]:
            line = f"{e[name]:<30} {e['packets']:>14,} {e['bytes']:>16,}"
            lines.append(line + (f" {e['pps']:>12,.0f} {e['bytes_per_s']:>14,.0f}"
                                 if rates else ""))
    lines.append("counters: " + ", ".join(f"{k} {v:,}" for k, v in stats["counters"].items()
                                          if v))
    return "\n".join(lines)


def print_json(obj, stream=None):
    """One JSON object per line, flushed (so a pipe sees it at once)."""
    stream = stream or sys.stdout
    stream.write(json.dumps(obj) + "\n")
    stream.flush()


class Progress:
    """A progress line on a terminal (percentage of the file, packets, rate).

    Silent when the stream is not a terminal or ``enabled`` is False.
    """

    def __init__(self, total_bytes, stream=None, enabled=True, every=0.25):
        self.stream = stream or sys.stderr
        self.enabled = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.total = max(int(total_bytes), 1)
        self.every = every
        self.start = self.last = time.monotonic()
        self.shown = False

    def update(self, done_bytes, packets, note=""):
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        pct = min(100.0, 100.0 * done_bytes / self.total)
        rate = packets / max(now - self.start, 1e-9)
        bar = "#" * int(pct / 5)
        self.stream.write(f"\r[{bar:<20}] {pct:5.1f}%  {_n(packets)} packets  "
                          f"{rate / 1e6:.2f} Mpps {note}")
        self.stream.flush()
        self.shown = True

    def clear(self):
        """Erase the progress line (before other output on the same stream)."""
        if self.shown:
            self.stream.write("\r" + " " * 72 + "\r")
            self.stream.flush()
            self.shown = False

    def done(self):
        self.clear()


def format_versus_kernel(v):
    """The kernel comparison of ``dataplane bench`` on an eBPF object
    (ebpf/kernel_bench.compare): one line, each frame repeated on both sides."""
    from .ebpf.kernel_bench import whole_runs
    head = "  vs the kernel's JIT (each frame repeated, empty program subtracted): "
    if v["ours"] is None:
        return head + v["note"]
    text = f"ours {v['ours']:.1f} ns/pkt"
    if v["kernel"] is not None:
        text += f", kernel {v['kernel']:.1f} ns/pkt"
    if v["ratio"] is not None:
        text += f", ratio {v['ratio']:.2f}"
    whole = whole_runs(v)
    if whole is not None:
        text += f"; whole runs, empty program included: ours {whole[0]:.1f}, kernel {whole[1]:.1f}"
    return head + text + (f" ({v['note']})" if v["note"] else "")


def format_live_summary(s):
    """The human summary of a live run (live_stats.LiveStats): per interface,
    what came in, the verdicts, what went out, and the kernel's ring counters."""
    from .live_stats import (ERR, HOST_IN, HOST_IN_DROP, HOST_OUT, IF_RX_DROPPED,
                             IF_TX_DROPPED, OUT, OUT_DROP, RING_DROPS, RING_FREEZES,
                             RING_PACKETS, RX, RX_BYTES, VERDICT_COLUMN)
    name = s.program + ("" if s.checked else " (unchecked)")
    why = f" (stopped by {s.stopped_by})" if s.stopped_by else ""
    lines = [f"{name} on {', '.join(s.interfaces)}: {_n(s.packets)} packets in "
             f"{s.elapsed_s:.3f} s{why}"]
    w = 16
    head = f"  {'':<22}" + "".join(f"{n:>{w}}" for n in s.interfaces)
    lines.append(head)

    def row(label, values):
        lines.append(f"  {label:<22}" + "".join(f"{v:>{w}}" for v in values))

    c = s.c
    row("rx", [_n(v) for v in c[:, RX]])
    row("rx bytes", [_n(v) for v in c[:, RX_BYTES]])
    for a, col in VERDICT_COLUMN.items():
        row(a.name, [_n(v) for v in c[:, col]])
    row("redirect errors", [_n(v) for v in c[:, ERR]])
    row("out (sent)", [_n(v) for v in c[:, OUT]])
    row("out dropped", [_n(v) for v in c[:, OUT_DROP]])
    if s.host_tap:
        row("host tap", [t or "-" for t in s.taps])
        row("to host (tap)", [_n(v) for v in c[:, HOST_IN]])
        row("to host dropped", [_n(v) for v in c[:, HOST_IN_DROP]])
        row("from host (tap)", [_n(v) for v in c[:, HOST_OUT]])
    row("ring tp_packets", [_n(v) for v in c[:, RING_PACKETS]])
    row("ring tp_drops", [_n(v) for v in c[:, RING_DROPS]])
    row("ring tp_freeze_q_cnt", [_n(v) for v in c[:, RING_FREEZES]])
    row("interface rx dropped", [_n(v) for v in c[:, IF_RX_DROPPED]])
    row("interface tx dropped", [_n(v) for v in c[:, IF_TX_DROPPED]])
    packets = s.packets
    for w in s.workers if len(s.workers) > 1 else ():
        lines.append(f"  worker {w['worker']:<15}{_n(w['rx']):>16} rx   "
                     f"{_worker_verdicts(w['actions'])}")
    per_pkt = f", {s.cpu_s * 1e9 / packets:,.0f} ns/pkt" if packets >= 10000 else ""
    lines.append(f"  CPU {s.cpu_s:.3f} s (user + system of the loop, idle time "
                 f"included){per_pkt}")
    if not s.host_tap:
        lines.append("  no --host-tap: XDP_PASS frames were counted and left to the kernel's "
                     "own copy (the host stack also saw every frame, whatever the verdict)")
    for target, count in sorted(s.unknown.items()):
        lines.append(f"  error: {_n(count)} frames redirected to ifindex {target}, which the "
                     "dataplane does not hold (not one of -i, nor a host TAP)")
    for (iface, what), text in sorted(s.errors.items()):
        lines.append(f"  {iface}: {what}: {text}")
    if s.faults:
        lines.append(f"  aborted by program faults: {_n(s.faults)} (first: packet "
                     f"{s.first_fault}, {s.fault_reason})")
    if s.invalid:
        lines.append(f"  aborted for invalid verdicts: {_n(s.invalid)}")
    return "\n".join(lines)


def print_warning(text):
    """``warning: text`` on stderr: what a command went on past (tcpdump's way)."""
    print(f"warning: {text}", file=sys.stderr)


def print_line(text, stream=None):
    """One line, flushed (progress and rate lines of long runs)."""
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()


def format_sent(s):
    """``replay -i``'s line: frames sent out of the interface, the achieved rate
    beside the requested one (tcpreplay's habit)."""
    asked = f"{s['requested_pps']:,.0f} pps" if s["requested_pps"] else "top speed"
    dropped = f", {_n(s['dropped'])} refused" if s["dropped"] else ""
    return (f"  sent {_n(s['sent'])} frames out of {s['interface']} in {s['seconds']:.3f} s: "
            f"{s['pps']:,.0f} pps (requested: {asked}){dropped}")
