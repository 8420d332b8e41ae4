"""ns/packet of each eBPF object in programs/bpf/: dataplane's JIT against the
kernel's own JIT (BPF_PROG_TEST_RUN with repeat), measured in the same run.

The kernel's test run repeats one frame (hot caches, every branch predicted),
so ours does the same: for each of the first FRAMES packets of the capture, a
batch of that one frame repeated, timed by dataplane's bench. Both sides
subtract an empty program's time on the same frames: ours the harness
(pass_all), the kernel's an XDP program returning XDP_PASS. The ratio is
ours / kernel's per-packet cost: lower is better.

An object that moves the packet (bpf_xdp_adjust_head/meta/tail) is not compared:
the kernel's repeated test run keeps the moved packet, so after the first run it
times the helper refusing to move past the headroom, not the program's work.

    python benchmarks/ebpf_vs_kernel.py [-r pcaps/small.pcap] [--frames 64]
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import dpkt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataplane import load_program  # noqa: E402
from dataplane.bench import bench, load_packets  # noqa: E402
from dataplane.ebpf import elf, isa, kernel  # noqa: E402

PASS_ALL = isa.encode([isa.make(isa.ALU64 | isa.MOV, 0, imm=2), isa.make(isa.JMP | isa.EXIT)])
SKIP = {"map_in_map"}  # ARRAY_OF_MAPS: not supported by the engine yet
ENTRY = {"tail_call": "tail_call"}
#: Below this many ns (after subtracting the empty program) a side is within the
#: run-to-run noise of this machine: no ratio is printed ("~").
NOISE_NS = 1.0  # objects with several programs: the one to time


def moves_packet(obj):
    """True when the object's program calls adjust_head, adjust_meta or adjust_tail."""
    prog = elf.load_object(str(obj)).program(ENTRY.get(obj.stem))
    return any(i.cls == isa.JMP and i.op == isa.CALL and i.src == 0 and i.imm in (44, 54, 65)
               for i in prog.insns if not i.is_lddw_tail)


def kernel_ns(run, frames, repeat):
    """Mean ns per run over the frames (each run ``repeat`` times in the kernel)."""
    return statistics.mean(run(f, repeat)[2] for f in frames)


def ours_ns(obj, captures, harness):
    """Mean over the frames of (program - harness) ns/packet."""
    ref = f"{obj}:{ENTRY[obj.stem]}" if obj.stem in ENTRY else str(obj)
    program = load_program(ref)
    unchecked = load_program(ref, checked=False)
    costs = []
    for cap in captures:
        chunks, packets = load_packets(cap, None, max(program.tailroom, harness.tailroom))
        r = bench(program, unchecked, harness, chunks, packets, repeats=3)
        costs.append(r.ns_per_pkt - r.harness_ns_per_pkt)
    return statistics.mean(costs)


def frame_captures(frames, folder, copies=2048):
    """One capture per frame: the frame repeated ``copies`` times."""
    out = []
    for i, f in enumerate(frames):
        path = Path(folder) / f"frame{i}.pcap"
        with open(path, "wb") as fh:
            w = dpkt.pcap.Writer(fh)
            for _ in range(copies):
                w.writepkt(f, 0)
        out.append(str(path))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-r", default=str(ROOT / "pcaps" / "small.pcap"))
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=2000)
    args = ap.parse_args()
    ok, why = kernel.kernel_available()
    with open(args.r, "rb") as fh:
        frames = [bytes(f) for _, f in dpkt.pcap.Reader(fh)][:args.frames]
    empty = None
    if ok:
        fd, err = kernel._prog_load(PASS_ALL, "GPL", "dp_pass_all")
        if fd is None:
            ok, why = False, f"cannot load an empty program: errno {err[0]}"
        else:
            empty = kernel_ns(lambda f, n: kernel._test_run_fd(fd, f, n), frames, args.repeat)
    print(f"capture {args.r}; kernel: {'empty program %.1f ns/run' % empty if ok else why}")
    print(f"{'object':<14} {'ours ns':>8} {'kernel ns':>10} {'ratio':>6}   (empty program "
          "subtracted on both sides)")
    tmp = tempfile.TemporaryDirectory()
    captures = frame_captures(frames, tmp.name)
    harness = load_program("pass_all")
    for obj in sorted((ROOT / "programs" / "bpf").glob("*.o")):
        if obj.stem in SKIP:
            continue
        ours = ours_ns(obj, captures, harness)
        line = f"{obj.stem:<14} {ours:8.1f}"
        if ok and moves_packet(obj):
            line += "          -      -   (moves the packet: the kernel's repeat times a refusal)"
        elif ok:
            with kernel.KernelObject(str(obj)) as k:
                name = ENTRY.get(obj.stem, k.programs[0])
                theirs = kernel_ns(lambda f, n: k.test_run(name, f, n), frames, args.repeat) \
                    - empty
            ratio = f"{ours / theirs:6.2f}" if min(ours, theirs) >= NOISE_NS else "     ~"
            line += f" {theirs:10.1f} {ratio}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
