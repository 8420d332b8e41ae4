"""Seconds to load, verify and compile a large eBPF object cold (an empty cache)
and again from the cache: issue 6's "3,000 instructions under 2 s cold, 0.3 s
cached". The object is generated: ``--rules`` branchy ACL rules with map
updates, built by clang (``make bpf-toolchain`` installs it).

    python benchmarks/cold_compile.py [--rules 200] [--runs 3]
"""

import argparse
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SMALL = ROOT / "programs" / "bpf" / "xdp_drop.o"

HEAD = """#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 512);
} hits SEC(".maps");

static __always_inline void bump(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&hits, &k);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("xdp")
int big(struct xdp_md *ctx)
{
	unsigned char *d = (void *)(long)ctx->data, *e = (void *)(long)ctx->data_end;

	if (d + 64 > e)
		return XDP_PASS;
	__u32 a = ((__u32)d[26] << 24) | ((__u32)d[27] << 16) | ((__u32)d[28] << 8) | d[29];
	__u32 b = ((__u32)d[30] << 24) | ((__u32)d[31] << 16) | ((__u32)d[32] << 8) | d[33];
	__u16 sp = ((__u16)d[34] << 8) | d[35], dp = ((__u16)d[36] << 8) | d[37];
	__u32 acc = 0;
"""
TAIL = """	return acc == 12345 ? XDP_DROP : XDP_PASS;
}

char _license[] SEC("license") = "GPL";
"""


def source(rules, seed=3):
    """C of ``rules`` rules: a prefix-and-port match that counts, then a mix."""
    rng, lines = random.Random(seed), [HEAD]
    for i in range(rules):
        mask = rng.choice([0xFFFFFF00, 0xFFFF0000, 0xFFFFFFF0])
        if i % 2 == 0:
            lines.append(f"\tif ((a & 0x{mask:x}) == 0x{rng.getrandbits(32) & mask:x} && "
                         f"dp == {rng.randint(1, 65535)}) {{ bump({i // 2}); acc += {i}; }}\n")
        else:
            lines.append(f"\tif ((b ^ a) == 0x{rng.getrandbits(32):x} || "
                         f"sp == {rng.randint(1, 65535)}) acc ^= {rng.getrandbits(16)};\n")
    return "".join(lines) + TAIL


LOAD = """
import sys, time
t = time.perf_counter()
from dataplane import load_program
load_program(sys.argv[1])
print(time.perf_counter() - t)
"""


def timed_load(obj, cache):
    env = {"DATAPLANE_CACHE_DIR": cache, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", LOAD, obj], env=env, capture_output=True,
                         text=True, check=True)
    return float(out.stdout.split()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=200)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    clang = shutil.which("clang")
    if clang is None:
        print("cold_compile: skipped: no clang (make bpf-toolchain)")
        return
    from dataplane.ebpf import elf
    with tempfile.TemporaryDirectory() as tmp:
        c, obj = Path(tmp) / "big.c", str(Path(tmp) / "big.o")
        c.write_text(source(args.rules))
        subprocess.run([clang, "-O2", "-g", "-target", "bpf",
                        f"-I/usr/include/{platform.machine()}-linux-gnu",
                        "-c", str(c), "-o", obj], check=True)
        n = len(elf.load_object(obj).program(None).insns)
        cold, warm, small = [], [], []
        for k in range(args.runs):
            cache = str(Path(tmp) / f"cache{k}")
            cold.append(timed_load(obj, cache))
            warm.append(timed_load(obj, cache))
            small.append(timed_load(str(SMALL), str(Path(tmp) / f"small{k}")))
    print(f"{n} instructions: cold load+verify+compile {_spread(cold)}, "
          f"from the cache {_spread(warm)} ({args.runs} runs)")
    # what every program pays cold (numba's start, the batch loop), in the same
    # runs: a shared machine's speed moves both
    print(f"  the same runs' {SMALL.name} ({len(elf.load_object(str(SMALL)).program(None).insns)}"
          f" instructions) cold: {_spread(small)}")


def _spread(times):
    """The median, then the range: a shared machine's outliers show apart."""
    return f"{statistics.median(times):.2f} s ({min(times):.2f}-{max(times):.2f})"


if __name__ == "__main__":
    main()
