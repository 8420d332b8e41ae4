"""ns per map lookup inside a program (programs/ that do only lookups), with the
empty program measured in the same run. Usage:

    python benchmarks/map_lookups.py [--keys N] [--prefixes N] [-r CAPTURE] [--only lpm]

LPM_TRIE lines: tries of --prefixes prefixes, "spread" over the address space
or "clustered" in one network (benchmarks/programs/map_lookups.py says how).
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=4096,
                    help="keys in each map, a power of two (default 4096)")
    ap.add_argument("-r", "--read", default=str(HERE.parent / "pcaps" / "small.pcap"))
    ap.add_argument("--prefixes", type=int, default=10000,
                    help="prefixes in each LPM trie (default 10000)")
    ap.add_argument("--only", choices=("hash", "lpm"),
                    help="only the hash/LRU/array maps, or only the LPM tries")
    ap.add_argument("--repeat", type=int, default=11)
    args = ap.parse_args()
    os.environ["DATAPLANE_BENCH_MAP_KEYS"] = str(args.keys)
    os.environ["DATAPLANE_BENCH_LPM_PREFIXES"] = str(args.prefixes)
    sys.path.insert(0, str(HERE / "programs"))
    import map_lookups
    from dataplane import load_program
    from dataplane.bench import bench, load_packets

    chunks, n = load_packets(args.read)
    harness = load_program("pass_all")
    runs = []
    if args.only != "lpm":
        runs += [(name, f"{kind:<9} hit", f"{args.keys:,} keys") for name, kind in
                 (("hash_lookups", "HASH"), ("lru_lookups", "LRU_HASH"),
                  ("array_lookups", "ARRAY"))]
    if args.only != "hash":
        runs += [(f"lpm{v}{'_clustered' if c else ''}_lookups", f"LPM_TRIE v{v}",
                  f"{args.prefixes:,} prefixes, {'clustered' if c else 'spread'}")
                 for v in (4, 6) for c in (False, True)]
    # Compiled code bakes in the key counts read at import: load a copy whose
    # text names them, so the compile cache (keyed on the source) cannot serve
    # a loop built for other counts.
    src = (HERE / "programs" / "map_lookups.py").read_text()
    copy = Path(tempfile.mkdtemp(prefix="dataplane-bench-")) / "map_lookups.py"
    copy.write_text(src + f"\n# built for keys={args.keys} prefixes={args.prefixes}\n")
    for name, kind, what in runs:
        p = load_program(f"{copy}:{name}")
        map_lookups.fill(p)
        r = bench(p, p, harness, chunks, n, batch=1024, repeats=args.repeat)
        per = (r.ns_per_pkt - r.harness_ns_per_pkt) / map_lookups.LOOKUPS
        print(f"{kind}: {per:5.1f} ns/lookup ({map_lookups.LOOKUPS} lookups a packet, "
              f"{what}, median of {args.repeat} runs over {n:,} packets)")


if __name__ == "__main__":
    main()
