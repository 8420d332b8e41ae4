"""ns/packet of a program on packets held in memory, against the empty program.

The packets are read once into large batches; each timed pass runs the
program over all of them in windows of ``batch`` packets, one compiled call
per window from Python, exactly as a pipeline does. In the same run, repeats
interleaved, it also times the program without bounds checks (so the cost of
checking is visible) and the empty program (``pass_all``: the harness alone,
so the program's own cost is the difference).
"""

import statistics
import time

from . import config
from .io.batch import PacketBatch
from .io.capture import open_capture

#: Packets per in-memory chunk (each a PacketBatch; windows of --batch run inside).
_CHUNK = 65536
_SLOT_OVERHEAD = config.HEADROOM + config.TAILROOM


def load_packets(path, limit=None, tailroom=config.TAILROOM):
    """Read up to ``limit`` packets of a capture into a list of large batches
    (with ``tailroom`` bytes behind each packet: Program.tailroom)."""
    chunks, total = [], 0
    with open_capture(path) as reader:
        while limit is None or total < limit:
            b = PacketBatch(_CHUNK, buffer_bytes=_CHUNK * (_SLOT_OVERHEAD + 1600),
                            tailroom=tailroom)
            n = reader.read_batch(b)
            if n == 0:
                break
            if limit is not None and total + n > limit:
                n = b.count = limit - total
            chunks.append(b)
            total += n
    return chunks, total


def _one_pass(program, chunks, batch):
    call = program._call
    packets = 0
    t0 = time.perf_counter_ns()
    for b in chunks:
        n = b.count
        for start in range(0, n, batch):
            call(b, start, min(start + batch, n))
        packets += n
    elapsed = time.perf_counter_ns() - t0
    program.take_counters()
    return elapsed / packets


class BenchResult:
    """Per-repeat ns/packet of a program, checked and unchecked, and of the harness."""

    def __init__(self, name, ns, unchecked_ns, harness_ns, packets, batch):
        self.name, self.ns, self.harness_ns = name, ns, harness_ns
        self.unchecked_ns = unchecked_ns
        self.packets, self.batch, self.repeats = packets, batch, len(ns)

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
        }

    def format(self):
        return (f"{self.name}: {self.ns_per_pkt:.1f} ns/pkt (median of {self.repeats} runs, "
                f"{self.packets:,} packets, batch {self.batch}), harness alone "
                f"{self.harness_ns_per_pkt:.1f} ns/pkt\n"
                f"  spread {min(self.ns):.1f} .. {max(self.ns):.1f} ns/pkt, "
                f"{1e3 / self.ns_per_pkt:.1f} Mpps; program's own cost "
                f"{self.ns_per_pkt - self.harness_ns_per_pkt:.1f} ns/pkt\n"
                f"  unchecked {self.unchecked_ns_per_pkt:.1f} ns/pkt: bounds checks cost "
                f"{self.ns_per_pkt - self.unchecked_ns_per_pkt:+.1f} ns/pkt")


def bench(program, unchecked, harness, chunks, packets, batch=256, repeats=7):
    """Time the three programs in turn, after one warm-up pass each."""
    programs = (program, unchecked, harness)
    for p in programs:
        _one_pass(p, chunks, batch)
    times = [[], [], []]
    for _ in range(repeats):
        for p, t in zip(programs, times):
            t.append(_one_pass(p, chunks, batch))
    return BenchResult(program.name, *times, packets, batch)
