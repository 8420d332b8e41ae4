"""Mutated objects through the whole engine: a mutant the verifier accepts is
compiled and run on real packets, and must give a valid verdict for every one
(the verifier's promise: an accepted program cannot crash the process)."""

import random
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

from dataplane import XdpAction
from dataplane.ebpf import elf, isa, verifier
from dataplane.ebpf.program import EBPF_HELPERS, load_insns_program

ROOT = Path(__file__).resolve().parents[1]
MAPLESS = ["drop_udp", "firewall", "bpf2bpf", "bounded_loop", "adjust_head", "exthdr_loop"]
MUTANTS_RUN = 6  # accepted mutants compiled and run (about a second each)


def _mutate(insns, rng):
    out = list(insns)
    for _ in range(rng.randint(1, 3)):
        pc = rng.randrange(len(out))
        i = out[pc]
        if i.is_lddw_tail or i.is_lddw:
            continue
        field = rng.choice(("off", "imm", "dst", "src", "opcode"))
        if field == "off":
            i = i._replace(off=max(-32768, min(32767, i.off + rng.choice((-8, -4, -1, 1, 4, 8)))))
        elif field == "imm":
            imm = rng.choice((0, 1, -1, 14, 0x7fffffff, -0x80000000, i.imm + 1, i.imm - 1))
            i = isa.make(i.opcode, i.dst, i.src, i.off, imm)
        elif field == "dst":
            i = i._replace(dst=rng.randrange(11))
        elif field == "src":
            i = i._replace(src=rng.randrange(11))
        else:
            i = i._replace(opcode=i.opcode ^ (1 << rng.randrange(8)))
        out[pc] = i
    return out


def _frames():
    with open(ROOT / "pcaps" / "small.pcap", "rb") as fh:
        frames = [bytes(f) for _, f in dpkt.pcap.Reader(fh)][:150]
    return frames + [frames[0][:n] for n in (14, 20, 34, 40, 54)]


def test_accepted_mutants_run_safely():
    rng = random.Random(20261121)
    sources = {n: elf.load_object(ROOT / "programs" / "bpf" / f"{n}.o").program().insns
               for n in MAPLESS}
    accepted, rejected, tries = [], 0, 0
    while len(accepted) < MUTANTS_RUN and tries < 5000:
        tries += 1
        name = rng.choice(MAPLESS)
        mutant = _mutate(sources[name], rng)
        try:
            verifier.verify(mutant, (), name, EBPF_HELPERS)
        except verifier.VerifierError:
            rejected += 1
            continue
        if isa.encode(mutant) != isa.encode(sources[name]):
            accepted.append((name, mutant))
    assert rejected > 0 and len(accepted) == MUTANTS_RUN, (tries, rejected)
    frames = _frames()
    for k, (name, mutant) in enumerate(accepted):
        prog = load_insns_program(mutant, f"mutant{k}_{name}")
        for f in frames:
            action, _ = prog.test_run(f)
            assert action in set(XdpAction)


@pytest.mark.parametrize("seed", range(3))
def test_random_objects_never_crash_the_loader(seed, tmp_path):
    """Random bytes and flipped bytes of real objects: loaded, verified (when
    they load) or refused with a ProgramError; never anything else."""
    from dataplane.errors import ProgramError
    rng = random.Random(seed)
    base = (ROOT / "programs" / "bpf" / "flow_counter.o").read_bytes()
    for _ in range(150):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            obj = elf.load_object(bytes(data))
            for prog in obj.programs.values():
                verifier.verify(prog.insns, [], prog.name, EBPF_HELPERS)
        except ProgramError:
            pass


def _leak_by_comparisons(reg):
    """Assembly rebuilding the address in ``reg`` as a number in R6, one bit a
    comparison (a pointer may be compared with a number, as in the kernel for
    a privileged loader): the verifier sees an unknown scalar."""
    lines = ["    mov %r6, 0"]
    for k in range(63, -1, -1):
        lines += [f"    lddw %r5, {1 << k:#x}", "    or %r5, %r6",
                  f"    jgt %r5, {reg}, skip{k}", "    mov %r6, %r5", f"skip{k}:"]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("base, load", [
    ("%r10", ""),                       # a variable-offset stack access
    ("%r2", "    ldxw %r2, [%r1]\n"),   # a packet access left to a run-time check
])
def test_runtime_check_of_an_address_near_2_64(base, load, tmp_path):
    """base + (-base - 4) is 2**64 - 4: the run-time check computed the end of
    the access as address + 8, which wrapped round to 4 and passed, and the
    store to 0xfffffffffffffffc killed the process (SIGSEGV). In a child
    process, so that a regression fails this test and not the suite."""
    text = load + _leak_by_comparisons(base) + f"""
    neg %r6
    sub %r6, 4
    mov %r2, {base}
    add %r2, %r6
    stdw [%r2], 0
    mov %r0, 2
    exit"""
    (tmp_path / "leak.s").write_text(text)
    child = f"""
from dataplane.ebpf.asm import assemble
from dataplane.ebpf.program import load_insns_program
prog = load_insns_program(assemble(open({str(tmp_path / 'leak.s')!r}).read()), "leak")
print(int(prog.test_run(bytes(64))[0]))
"""
    run = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == [str(int(XdpAction.XDP_ABORTED))]
