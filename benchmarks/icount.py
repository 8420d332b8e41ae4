"""Instructions per packet of programs' compiled loops, counted by valgrind
(callgrind): a figure that does not move with the machine's load, for A/B
tests of code changes where ns/packet on a shared VM moves 5-15%. Usage:

    python benchmarks/icount.py PROGRAM [PROGRAM ...] -r CAPTURE [--config lb.toml]
                                [-c PACKETS] [--passes N]

Each program runs over the capture's first PACKETS packets in windows of 1024
as `dataplane bench` does (heads restored before each window): one pass
untimed, then N counted. The count is of the loop's own shared object (the
program, its helpers and maps inlined into it), so Python's per-window calls
are not in it; the empty program (pass_all) is counted the same way, so each
line also gives the program's own instructions. Only instructions: neither a
cache miss nor a wait on a dependent load is in it, so read it beside ns/packet
(l4lb lost 114 instructions a packet and no time to one change).

valgrind decodes no AVX-512: the loops are compiled for NUMBA_CPU_NAME
(default haswell) into their own cache folder, separate from the host's.

``--annotate FILE`` (one program) also writes the loop's machine code (objdump)
with each instruction's executions per packet in front: where a program's
instructions go, hot path and cold (l4lb: runner ~50, prefetch hook 75-100,
the program ~430; its SYN path ~450 a SYN).
"""

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile

#: What valgrind runs: load a program, run the passes (argv: program capture config
#: packets passes); a child process, so the count covers only these passes' loop.
CHILD = """
import sys
from dataplane.bench import _one_pass, load_packets
from dataplane.program import load_configured
ref, capture, lb_config, packets, passes = sys.argv[1:6]
program = load_configured(ref, lb_config=lb_config)
chunks, n = load_packets(capture, int(packets), (program,))
for _ in range(1 + int(passes)):
    _one_pass(program, chunks, 1024, True)
print(n)
"""

#: A callgrind_annotate line: "1,234 (12.3%)  file:function [object]".
_LINE = re.compile(r"^\s*([\d,]+) .*\[(.*)\]\s*$")


def callgrind(ref, capture, lb_config, packets, passes, env, out, *options):
    """Run CHILD (1 + ``passes`` passes) under callgrind into file ``out``: the
    number of packets a pass runs."""
    cmd = ["valgrind", "--tool=callgrind", *options, f"--callgrind-out-file={out}",
           sys.executable, "-c", CHILD, ref, capture, lb_config or "", str(packets), str(passes)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"icount: {ref}: valgrind run failed: "
                 f"{(run.stderr.strip().splitlines() or ['?'])[-1]}")
    return int(run.stdout.split()[-1])


def loop_instructions(ref, capture, lb_config, packets, passes, env):
    """Instructions executed in the program's loop object over ``passes`` passes,
    from the difference of a run with 1 + passes passes and one with 1."""
    counts = []
    for p in (0, passes):
        with tempfile.NamedTemporaryFile(suffix=".cg") as out:
            n = callgrind(ref, capture, lb_config, packets, p, env, out.name)
            report = subprocess.run(["callgrind_annotate", "--threshold=100", out.name],
                                    capture_output=True, text=True, check=True).stdout
        counts.append(sum(int(m.group(1).replace(",", "")) for m in map(_LINE.match,
                      report.splitlines()) if m and "_dp_run_" in m.group(2)))
    return (counts[1] - counts[0]) / (passes * n), n


def _cost_lines(path):
    """(object file, instruction address, cost) of each cost line of a callgrind
    file written with --dump-instr=yes (positions "instr line"): addresses are
    absolute, relative ("+N", "-N") or the last one ("*"); the line after a
    "calls=" line is a call's inclusive cost, not the caller's own."""
    names, obj, last, after_call = {}, None, 0, False
    for line in open(path):
        if line.startswith(("ob=", "cob=")):  # "(id) name" names an object, "(id)" recalls it
            text = line.split("=", 1)[1].strip()
            m = re.match(r"\((\d+)\)(?: (.*))?", text)
            if m and m.group(2):
                names[m.group(1)] = m.group(2)
            if line.startswith("ob="):
                obj = names.get(m.group(1)) if m else text
        elif line.startswith("calls="):
            after_call = True
        elif line[:1] in "0123456789+-*":
            word = line.split()
            a = word[0]
            last = last if a == "*" else last + int(a[1:], 0) if a[0] == "+" else \
                last - int(a[1:], 0) if a[0] == "-" else int(a, 0)
            if not after_call and len(word) == 3:
                yield obj, last, int(word[2])
            after_call = False


def annotate(ref, capture, lb_config, packets, passes, env, out):
    """Write the loop's disassembly to ``out``, each instruction with its
    executions per packet (over the 1 + passes passes run)."""
    if not shutil.which("objdump"):
        sys.exit("icount: --annotate needs objdump (apt-get install binutils)")
    with tempfile.NamedTemporaryFile(suffix=".cg") as cg:
        n = callgrind(ref, capture, lb_config, packets, passes, env, cg.name,
                      "--dump-instr=yes") * (1 + passes)
        costs, loop = collections.Counter(), None
        for obj, address, cost in _cost_lines(cg.name):
            if obj and "_dp_run_" in obj:
                costs[address] += cost
                loop = obj
    if loop is None:
        sys.exit(f"icount: {ref}: no loop object in the profile")
    asm = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-M", "intel", loop],
                         capture_output=True, text=True, check=True).stdout
    with open(out, "w") as f:
        f.write(f"# {loop}: executions per packet ({n:,} packets), then the instruction\n")
        for line in asm.splitlines():
            m = re.match(r"\s*([0-9a-f]+):\s", line)
            f.write(f"{costs[int(m.group(1), 16)] / n:7.2f} {line}\n" if m else line + "\n")
    print(f"  {ref}: annotated loop in {out} ({sum(costs.values()) / n:.1f} instructions/packet"
          " over every pass run)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("programs", nargs="+")
    ap.add_argument("-r", "--read", required=True)
    ap.add_argument("--config", help="l4lb configuration (for every program given)")
    ap.add_argument("-c", "--count", type=int, default=20000, help="packets (default 20000)")
    ap.add_argument("--passes", type=int, default=4, help="counted passes (default 4)")
    ap.add_argument("--annotate", metavar="FILE",
                    help="write the program's loop disassembly with executions per packet")
    args = ap.parse_args()
    if args.annotate and len(args.programs) != 1:
        ap.error("--annotate takes one program")
    if not shutil.which("valgrind"):
        print("icount: skipped: valgrind is not installed (apt-get install valgrind)")
        return
    env = dict(os.environ, NUMBA_CPU_NAME=os.environ.get("NUMBA_CPU_NAME", "haswell"))
    # compile outside valgrind first (under it a compile takes minutes)
    for ref, lb_config in [("pass_all", "")] + [(ref, args.config or "") for ref in args.programs]:
        run = subprocess.run([sys.executable, "-c", CHILD, ref, args.read, lb_config, "1", "0"],
                             env=env, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"icount: {ref}: {(run.stderr.strip().splitlines() or ['?'])[-1]}")
    harness, n = loop_instructions("pass_all", args.read, None, args.count, args.passes, env)
    print(f"instructions/packet, valgrind, {n:,} packets of {args.read} x {args.passes} passes, "
          f"compiled for {env['NUMBA_CPU_NAME']}; harness (pass_all) {harness:.1f}")
    for ref in args.programs:
        total, _ = loop_instructions(ref, args.read, args.config, args.count, args.passes, env)
        print(f"  {ref}: {total:.1f} instructions/packet, program's own {total - harness:.1f}")
    if args.annotate:
        annotate(args.programs[0], args.read, args.config, args.count, args.passes, env,
                 args.annotate)


if __name__ == "__main__":
    main()
