"""ns per map lookup inside a program (programs/ that do only lookups), with the
empty program measured in the same run. Usage:

    python benchmarks/map_lookups.py [--keys N] [-r CAPTURE]
"""

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=4096,
                    help="keys in each map, a power of two (default 4096)")
    ap.add_argument("-r", "--read", default=str(HERE.parent / "pcaps" / "small.pcap"))
    ap.add_argument("--repeat", type=int, default=11)
    args = ap.parse_args()
    os.environ["DATAPLANE_BENCH_MAP_KEYS"] = str(args.keys)
    sys.path.insert(0, str(HERE / "programs"))
    import map_lookups
    from dataplane import load_program
    from dataplane.bench import bench, load_packets

    chunks, n = load_packets(args.read)
    harness = load_program("pass_all")
    for name, kind in (("hash_lookups", "HASH"), ("lru_lookups", "LRU_HASH"),
                       ("array_lookups", "ARRAY")):
        p = load_program(f"{HERE / 'programs' / 'map_lookups.py'}:{name}")
        map_lookups.fill(p)
        r = bench(p, p, harness, chunks, n, batch=1024, repeats=args.repeat)
        per = (r.ns_per_pkt - r.harness_ns_per_pkt) / map_lookups.LOOKUPS
        print(f"{kind:<9} hit: {per:5.1f} ns/lookup ({map_lookups.LOOKUPS} lookups a packet, "
              f"{args.keys:,} keys, median of {args.repeat} runs over {n:,} packets)")


if __name__ == "__main__":
    main()
