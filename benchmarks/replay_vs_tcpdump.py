"""End to end: ``dataplane replay`` against ``tcpdump -r ... -w ... 'not udp'``.

Both whole processes, on the same capture, in alternating runs (A B A B ...)
so that drift of a shared machine hits both alike; prints each one's median
wall time and the median of the per-pair ratios. Usage:

    python benchmarks/replay_vs_tcpdump.py CAPTURE [--runs N] [-j]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def timed(cmd):
    t0 = time.perf_counter()
    r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)}: exit {r.returncode}: {r.stderr.decode()[-300:]}")
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("--program", default="drop_udp")
    ap.add_argument("--filter", default="not udp", help="tcpdump's filter (default: not udp)")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("-j", "--json", action="store_true")
    args = ap.parse_args()
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        sys.exit("error: tcpdump not found (make deps installs it)")
    dataplane = os.path.join(os.path.dirname(sys.executable), "dataplane")
    with tempfile.TemporaryDirectory() as tmp:
        ours = [dataplane, "replay", "-r", args.capture, "-p", args.program,
                "-w", os.path.join(tmp, "out"), "-q"]
        theirs = [tcpdump, "-r", args.capture, "-w", os.path.join(tmp, "tcpdump.pcap"),
                  args.filter]
        timed(ours), timed(theirs)  # warm-up: page cache, compiled code
        a, b = [], []
        for _ in range(args.runs):
            a.append(timed(ours))
            b.append(timed(theirs))
    ratios = [x / y for x, y in zip(a, b)]
    result = {"capture": args.capture, "runs": args.runs, "program": args.program,
              "dataplane_wall_s": round(statistics.median(a), 4),
              "tcpdump_wall_s": round(statistics.median(b), 4),
              "ratio": round(statistics.median(ratios), 3),
              "ratio_min": round(min(ratios), 3), "ratio_max": round(max(ratios), 3)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"replay -p {args.program} vs tcpdump '{args.filter}' on {args.capture} "
          f"(median of {args.runs} alternating runs, whole processes):")
    print(f"  dataplane {result['dataplane_wall_s']:.3f} s   tcpdump "
          f"{result['tcpdump_wall_s']:.3f} s   ratio {result['ratio']:.2f} "
          f"(min {result['ratio_min']:.2f}, max {result['ratio_max']:.2f}; < 1: dataplane faster)")


if __name__ == "__main__":
    main()
