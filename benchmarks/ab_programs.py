"""Two programs side by side in one process: `dataplane bench`'s interleaved
passes (each timed pass after an untimed one of its own), with B in the place
of the unchecked variant. For A/B tests of a change on a noisy machine:

    python benchmarks/ab_programs.py prog_a.py prog_b.py -r capture.pcap [--config lb.toml] [-c N]
"""

import argparse

from dataplane.bench import bench, load_packets
from dataplane.lb.control import load_balancer
from dataplane.program import load_program


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("-r", "--read", required=True)
    ap.add_argument("--config", help="l4lb configuration for both programs")
    ap.add_argument("-c", "--count", type=int)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    a, b, harness = load_program(args.a), load_program(args.b), load_program("pass_all")
    if args.config:
        for p in (a, b):
            load_balancer(p, args.config)
    chunks, n = load_packets(args.read, args.count, (a, b, harness))
    r = bench(a, b, harness, chunks, n, batch=1024, repeats=args.repeat)
    print(f"A {args.a}: {r.ns_per_pkt:.1f} ns/pkt   B {args.b}: {r.unchecked_ns_per_pkt:.1f}   "
          f"harness {r.harness_ns_per_pkt:.1f}   ({n:,} packets, median of {r.repeats})")


if __name__ == "__main__":
    main()
