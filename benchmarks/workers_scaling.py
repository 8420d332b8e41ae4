"""Multi-core figures (issue 7), whole commands timed in alternating runs:

1. ``bench --workers N`` against ``--workers 1`` (ns/packet, in memory, both
   with 4096-packet calls);
2. ``replay --workers N`` against ``--workers 1`` (end to end, pcap in and out);
3. ``replay --cluster local:N`` on 8 captures of 250,000 packets against the
   same captures in one process with ``--workers N`` (the Dask overhead).

Prints medians and the median of the per-pair ratios. Usage:

    python benchmarks/workers_scaling.py CAPTURE [--workers N] [--runs N] [-j]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(cmd, cpu=None):
    """Run ``cmd``: (wall seconds, its stdout); its CPU seconds (user + system)
    appended to ``cpu`` when given."""
    t0, c0 = time.perf_counter(), _children_cpu()
    r = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(map(str, cmd))}: exit {r.returncode}: {r.stderr[-300:]}")
    if cpu is not None:
        cpu.append(_children_cpu() - c0)
    return elapsed, r.stdout


def paired(a, b, runs):
    """Alternate a and b (after one warm-up of each): medians of wall and CPU
    seconds, and the median ratio a/b of the wall times."""
    run(a), run(b)
    ta, tb, ca, cb = [], [], [], []
    for _ in range(runs):
        ta.append(run(a, ca)[0])
        tb.append(run(b, cb)[0])
    return {"a_s": statistics.median(ta), "b_s": statistics.median(tb),
            "a_cpu_s": statistics.median(ca), "b_cpu_s": statistics.median(cb),
            "ratio": statistics.median(x / y for x, y in zip(ta, tb))}


#: Packets per compiled call in both bench runs: what a multi-worker replay
#: gives each worker per batch (pipeline.MIN_WORKER_BATCH). At 1024 a worker's
#: call is ~15 us, and the GIL hand-off after each call (~2 ns/pkt: the harness
#: alone goes 2.2 -> 4.0 ns/pkt on 2 workers) eats a fifth of the gain.
BENCH_BATCH = 4096


def bench_ns(dp, capture, program, workers, extra=()):
    _, out = run([dp, "bench", "-p", program, "-r", capture, "--workers", str(workers),
                  "--batch", str(BENCH_BATCH), "-j", *extra])
    return json.loads(out)["ns_per_pkt"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("-j", "--json", action="store_true")
    args = ap.parse_args()
    dp = os.path.join(os.path.dirname(sys.executable), "dataplane")
    n = args.workers
    res = {"workers": n, "bench": {}, "replay": {}}
    for program in ("drop_udp", "flow_counter"):
        one = statistics.median(bench_ns(dp, args.capture, program, 1) for _ in range(args.runs))
        many = statistics.median(bench_ns(dp, args.capture, program, n)
                                 for _ in range(args.runs))
        res["bench"][program] = {"ns_1": one, f"ns_{n}": many, "speedup": one / many}
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.capture))) as tmp:
        for program in ("drop_udp", "flow_counter"):
            cmd = [dp, "replay", "-r", args.capture, "-p", program, "-w",
                   os.path.join(tmp, "out"), "-q", "--workers"]
            p = paired(cmd + ["1"], cmd + [str(n)], args.runs)
            res["replay"][program] = {"s_1": p["a_s"], f"s_{n}": p["b_s"], "speedup": p["ratio"],
                                      "cpu_s_1": p["a_cpu_s"], f"cpu_s_{n}": p["b_cpu_s"]}
        caps = os.path.join(tmp, "caps")
        os.mkdir(caps)
        for k in range(8):
            subprocess.run([sys.executable, os.path.join(HERE, "..", "pcaps", "gen.py"), "-o",
                            os.path.join(caps, f"c{k}.pcap"), "--count", "250000", "--seed",
                            str(100 + k)], check=True)
        pattern = os.path.join(caps, "*.pcap")
        base = [dp, "replay", "-r", pattern, "-p", "flow_counter", "-q", "-w"]
        p = paired(base + [os.path.join(tmp, "c"), "--cluster", f"local:{n}"],
                   base + [os.path.join(tmp, "o"), "--workers", str(n)], args.runs)
        _, out = run(base[:-2] + ["-j", "-w", os.path.join(tmp, "c"), "--cluster",
                                  f"local:{n}"])
        start_s = json.loads(out)["cluster_start_s"]
        res["cluster"] = {"captures": 8, "packets": 2_000_000, "cluster_s": p["a_s"],
                          "one_process_s": p["b_s"], "ratio": p["ratio"],
                          "cluster_start_s": start_s,
                          "ratio_after_start": (p["a_s"] - start_s) / p["b_s"]}
    if args.json:
        print(json.dumps(res))
        return
    for program, r in res["bench"].items():
        print(f"bench {program} (batch {BENCH_BATCH}): {r['ns_1']:.1f} ns/pkt on 1 worker, "
              f"{r[f'ns_{n}']:.1f} on {n}: {r['speedup']:.2f}x")
    for program, r in res["replay"].items():
        # one worker already keeps more than one core busy (the write-back thread)
        print(f"replay {program} ({os.path.basename(args.capture)}): {r['s_1']:.2f} s on 1 "
              f"worker, {r[f's_{n}']:.2f} s on {n}: {r['speedup']:.2f}x; CPU "
              f"{r['cpu_s_1']:.2f} s on 1 worker ({r['cpu_s_1'] / r['s_1']:.2f} cores busy), "
              f"{r[f'cpu_s_{n}']:.2f} s on {n}")
    c = res["cluster"]
    print(f"replay of 8 captures x 250,000 packets (flow_counter): --cluster local:{n} "
          f"{c['cluster_s']:.2f} s, one process --workers {n} {c['one_process_s']:.2f} s: "
          f"{c['ratio']:.2f}x the time ({c['ratio_after_start']:.2f}x without the cluster's "
          f"start, {c['cluster_start_s']:.2f} s)")


if __name__ == "__main__":
    main()
