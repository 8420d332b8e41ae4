"""Counters of a live run (``dataplane run``): the per-interface raw counters,
their rate lines (xdp-bench's habit) and JSON; the summary is formatted by
stats.py, the one printer.

Every total printed comes from a raw 64-bit counter; rates are differences of
two snapshots divided by the time between them, computed at print time.
"""

import numpy as np

from .action import XdpAction

# Per-interface counters: one int64 row per interface, these columns.
RX = 0              # frames received from the interface's ring
RX_BYTES = 1        # their bytes (as captured)
ABORTED = 2         # verdicts, by ingress interface (XdpAction order: 2..6)
DROP = 3
PASS = 4
TX = 5
REDIRECT = 6
ERR = 7             # redirects to an ifindex the dataplane does not hold
OUT = 8             # frames sent out of this interface (TX, redirects to it, host frames)
OUT_DROP = 9        # frames for this interface the kernel refused or had no room for
HOST_IN = 10        # frames written into this interface's TAP (the host received them)
HOST_IN_DROP = 11   # frames for the TAP it refused
HOST_OUT = 12       # frames the host sent out of the TAP (put on the wire, not run)
RING_PACKETS = 13   # the kernel's tp_packets (frames it put in the ring)
RING_DROPS = 14     # the kernel's tp_drops (frames lost: the ring was full)
RING_FREEZES = 15   # the kernel's tp_freeze_q_cnt
IF_RX_DROPPED = 16  # the interface's own drop counters over the run (/proc/net/dev)
IF_TX_DROPPED = 17
COLUMNS = 18

VERDICT_COLUMN = {XdpAction.XDP_ABORTED: ABORTED, XdpAction.XDP_DROP: DROP,
                  XdpAction.XDP_PASS: PASS, XdpAction.XDP_TX: TX,
                  XdpAction.XDP_REDIRECT: REDIRECT}

#: (JSON key, column) of the periodic rates, in print order
RATES = (("rx", RX), ("pass", PASS), ("drop", DROP), ("tx", TX), ("redir", REDIRECT),
         ("err", ERR))
#: The rates -e adds (xdp-bench's extended stats): aborted verdicts, bytes in,
#: frames out and refused, to and from the host, the kernel's ring and
#: interface drops.
EXTENDED_RATES = (("abort", ABORTED), ("rx_bytes", RX_BYTES), ("out", OUT),
                  ("out_drop", OUT_DROP), ("to_host", HOST_IN), ("to_host_drop", HOST_IN_DROP),
                  ("from_host", HOST_OUT), ("ring_drop", RING_DROPS),
                  ("if_rx_drop", IF_RX_DROPPED))


class LiveStats:
    """Raw counters of a live run: ``c[i, COLUMN]`` for interface ``i``."""

    def __init__(self, program, interfaces, taps=None, host_tap=False, checked=True,
                 extended=False):
        self.program = program
        self.interfaces = list(interfaces)
        self.taps = list(taps or [None] * len(self.interfaces))
        self.host_tap = host_tap
        self.checked = checked
        self.c = np.zeros((len(self.interfaces), COLUMNS), np.int64)
        #: -e: the periodic lines carry EXTENDED_RATES too.
        self.extended = extended
        self.unknown = {}          # redirect target ifindex not held -> frames
        self.errors = {}           # (interface, what) -> last errno text
        self.faults = 0
        self.first_fault = None
        self.fault_reason = None
        self.invalid = 0
        self.elapsed_s = 0.0
        self.cpu_s = 0.0           # user + system CPU time of the loop
        self.stopped_by = None     # "SIGINT", "SIGTERM", "count"
        self.error = None          # the error that ended the run, if any
        self.trace_lines = 0
        self.workers = []          # per worker (live_workers.py): rx and verdicts

    @property
    def packets(self):
        return int(self.c[:, RX].sum())

    def snapshot(self):
        return self.c.copy()

    def take_program_counters(self, program):
        self.faults, self.first_fault = program.faults, program.first_fault
        self.fault_reason = program.fault_reason
        self.invalid = program.invalid

    # ---- periodic lines ----------------------------------------------------
    @property
    def rates(self):
        return RATES + EXTENDED_RATES if self.extended else RATES

    def interval_json(self, before, seconds, now_s):
        d = self.c - before
        out = {"time_s": round(now_s, 3), "interval_s": round(seconds, 3), "interfaces": {}}
        for i, name in enumerate(self.interfaces):
            e = {(f"{k}_per_s" if k.endswith("bytes") else f"{k}_pps"):
                 round(d[i, col] / seconds, 1) if seconds > 0 else 0.0
                 for k, col in self.rates}
            e["rx"] = int(self.c[i, RX])
            e["ring_drops"] = int(self.c[i, RING_DROPS])
            out["interfaces"][name] = e
        return out

    def interval_header(self):
        return (f"{'interface':<16}" + "".join(f"{k + '/s':>{_width(k)}}" for k, _ in self.rates)
                + f"{'ring drops':>12}")

    def interval_lines(self, before, seconds):
        d = self.c - before
        lines = []
        for i, name in enumerate(self.interfaces):
            rates = "".join(f"{(d[i, col] / seconds if seconds > 0 else 0):>{_width(k)},.0f}"
                            for k, col in self.rates)
            lines.append(f"{name:<16}{rates}{int(self.c[i, RING_DROPS]):>12,}")
        return lines

    # ---- summary -----------------------------------------------------------
    def to_json(self):
        ifaces = {}
        for i, name in enumerate(self.interfaces):
            c = self.c[i]
            ifaces[name] = {
                "rx": int(c[RX]), "rx_bytes": int(c[RX_BYTES]),
                "actions": {a.short: int(c[col]) for a, col in VERDICT_COLUMN.items()},
                "redirect_errors": int(c[ERR]),
                "out": int(c[OUT]), "out_dropped": int(c[OUT_DROP]),
                "host_tap": self.taps[i],
                "host_in": int(c[HOST_IN]), "host_in_dropped": int(c[HOST_IN_DROP]),
                "host_out": int(c[HOST_OUT]),
                "ring": {"tp_packets": int(c[RING_PACKETS]), "tp_drops": int(c[RING_DROPS]),
                         "tp_freeze_q_cnt": int(c[RING_FREEZES])},
                "interface": {"rx_dropped": int(c[IF_RX_DROPPED]),
                              "tx_dropped": int(c[IF_TX_DROPPED])},
            }
        packets = self.packets
        d = {
            "program": self.program, "checked": self.checked, "host_tap": self.host_tap,
            "interfaces": ifaces,
            "packets": packets,
            "redirect_unknown": {str(k): v for k, v in sorted(self.unknown.items())},
            "elapsed_s": round(self.elapsed_s, 6),
            "cpu_s": round(self.cpu_s, 6),
            "cpu_ns_per_pkt": round(self.cpu_s * 1e9 / packets, 1) if packets else None,
            "faults": self.faults, "first_fault": self.first_fault,
            "invalid_verdicts": self.invalid,
            "trace_lines": self.trace_lines,
            "stopped_by": self.stopped_by,
            "errors": [f"{k[0]}: {k[1]}: {v}" for k, v in sorted(self.errors.items())],
            "workers": self.workers or [{"worker": 0, "rx": packets, "actions": {
                a.short: int(self.c[:, col].sum()) for a, col in VERDICT_COLUMN.items()}}],
        }
        if self.error:
            d["error"] = self.error
        return d


def _width(key):
    return max(12, len(key) + 4)


def interface_drops(names):
    """{name: (rx_dropped, tx_dropped)} of this network namespace's interfaces
    (/proc/net/dev is the calling process's namespace; /sys may show another)."""
    out = {}
    try:
        with open("/proc/net/dev") as f:
            for line in f.readlines()[2:]:
                name, _, rest = line.partition(":")
                fields = rest.split()
                if name.strip() in names and len(fields) >= 12:
                    out[name.strip()] = (int(fields[3]), int(fields[11]))
    except OSError:
        pass
    return out
