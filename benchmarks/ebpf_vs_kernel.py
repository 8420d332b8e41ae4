"""ns/packet of each eBPF object in programs/bpf/: dataplane's JIT against the
kernel's own JIT (BPF_PROG_TEST_RUN with repeat), measured in the same run, like
for like (dataplane/ebpf/kernel_bench.py says how).

    python benchmarks/ebpf_vs_kernel.py [-r pcaps/small.pcap] [--frames 16]
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataplane.ebpf import kernel, kernel_bench  # noqa: E402

#: Objects with several programs: the one to time.
ENTRY = {"tail_call": "tail_call"}
#: Objects whose maps a control plane fills: timed as loaded (empty maps) and
#: again with these entries written on both sides.
FILLS = {"lpm_acl": kernel_bench.acl_fill}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-r", default=str(ROOT / "pcaps" / "small.pcap"))
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=kernel_bench.KERNEL_REPEAT)
    args = ap.parse_args()
    frames = kernel_bench.read_frames(args.r, args.frames)
    ok, why = kernel.kernel_available()
    empty = kernel_bench.kernel_empty_ns(frames, args.repeat) if ok else None
    print(f"capture {args.r}, first {len(frames)} frames; kernel: "
          + (f"empty program {empty:.1f} ns/run" if empty is not None else why))
    print(f"{'object':<14} {'ours ns':>8} {'kernel ns':>10} {'ratio':>6}   (empty program "
          "subtracted on both sides)  | whole runs, empty program included: ours, kernel, ratio")
    tmp = tempfile.TemporaryDirectory()
    captures = kernel_bench.frame_captures(frames, tmp.name)
    harness = kernel_bench.empty_program()
    for obj in sorted((ROOT / "programs" / "bpf").glob("*.o")):
        ref = f"{obj}:{ENTRY[obj.stem]}" if obj.stem in ENTRY else str(obj)
        fills = [None] + ([FILLS[obj.stem](frames)] if obj.stem in FILLS else [])
        for fill in fills:
            r = kernel_bench.compare(ref, args.r, args.frames, args.repeat, harness, captures,
                                     fill=fill)
            kern = f"{r['kernel']:10.1f}" if r["kernel"] is not None else f"{'-':>10}"
            ratio = f"{r['ratio']:6.2f}" if r["ratio"] is not None else f"{'~':>6}"
            notes = [n for n in (fill and fill.what, r["note"]) if n]
            note = f"   ({'; '.join(notes)})" if notes else ""
            print(f"{obj.stem:<14} {r['ours']:8.1f} {kern} {ratio}{_whole(r)}{note}", flush=True)


def _whole(r):
    """Each side's program with its empty program (its loop) added back: a loop
    that leaves the core idle hides part of the program in it, so the difference
    alone can favour the side with the heavier loop."""
    whole = kernel_bench.whole_runs(r)
    if whole is None:
        return ""
    ours, kern = whole
    return f"   | {ours:5.1f} {kern:5.1f} {ours / kern:5.2f}"


if __name__ == "__main__":
    main()
