"""The verifier in a forked child (ebpf/forked_verify.py): the same analyses
and the same errors as verifying in this process, nothing left behind.

Oracle: verifier.verify run here on the same instructions."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataplane.ebpf import asm, elf, forked_verify, verifier
from dataplane.ebpf.program import EBPF_HELPERS, map_infos

ROOT = Path(__file__).resolve().parents[1]
BPF = ROOT / "programs" / "bpf"

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")


def _jobs(name):
    obj = elf.load_object(str(BPF / f"{name}.o"))
    prog = obj.program(None)
    return [(prog.name, prog.insns)], map_infos(obj.maps)


def _same(a, b):
    return vars(a) == vars(b)


@pytest.fixture
def forks(monkeypatch):
    """The pids os.fork returned in this process."""
    pids, real = [], os.fork

    def fork():
        pid = real()
        pids.append(pid)
        return pid
    monkeypatch.setattr(os, "fork", fork)
    return pids


@pytest.mark.parametrize("name", ["flow_counter", "firewall", "lpm_acl", "bounded_loop",
                                  "map_in_map", "printk", "ringbuf"])
def test_the_child_finds_what_this_process_finds(name, forks, monkeypatch):
    jobs, maps = _jobs(name)
    warmed, here_calls, real = [], [], verifier.verify

    def counted(*a):  # (the child's calls count in the child's copy)
        here_calls.append(a)
        return real(*a)
    monkeypatch.setattr(verifier, "verify", counted)
    got = forked_verify.verify_all(jobs, maps, EBPF_HELPERS, lambda: warmed.append(1),
                                   fork=True)
    assert len(forks) == 1 and warmed == [1]
    assert not here_calls  # the child's answer, not a second verification here
    here = [real(insns, maps, n, EBPF_HELPERS) for n, insns in jobs]
    assert len(got) == len(here) == 1
    assert _same(got[0], here[0])
    with pytest.raises(ChildProcessError):  # reaped: no zombie left
        os.waitpid(forks[0], os.WNOHANG)


def test_a_rejection_is_the_verifiers_own_error_raised_here(forks):
    insns = asm.assemble("mov %r0, 0\nmov %r0, %r2\nexit")  # R2 never written
    with pytest.raises(verifier.VerifierError) as here:
        verifier.verify(insns, [], "bad", EBPF_HELPERS)
    with pytest.raises(verifier.VerifierError) as forked:
        forked_verify.verify_all([("bad", insns)], [], EBPF_HELPERS, lambda: None, fork=True)
    assert str(forked.value) == str(here.value) and "insn 1" in str(here.value)
    assert len(forks) == 1


def test_an_error_while_warming_still_reaps_the_child(forks):
    jobs, maps = _jobs("flow_counter")

    def warm():
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        forked_verify.verify_all(jobs, maps, EBPF_HELPERS, warm, fork=True)
    with pytest.raises(ChildProcessError):
        os.waitpid(forks[0], os.WNOHANG)


def test_no_fork_once_numba_is_started(forks, monkeypatch):
    """Nothing to overlap: numba is in this process already (and small
    programs never pay for the fork)."""
    monkeypatch.setattr(forked_verify, "MIN_INSNS", 0)
    jobs, maps = _jobs("firewall")
    __import__("numba")  # (the test process has it anyway)
    got = forked_verify.verify_all(jobs, maps, EBPF_HELPERS, lambda: pytest.fail("warmed"))
    assert not forks and got[0].states > 0


CHILD = """
import sys
from dataplane.ebpf import forked_verify
forked_verify.MIN_INSNS = 0
calls = []
real = forked_verify._in_child
forked_verify._in_child = lambda *a: calls.append(real(*a)) or calls[-1]
from dataplane import XdpAction, load_program
prog = load_program(sys.argv[1])
assert "numba" in sys.modules  # started while the child verified
frame = bytes.fromhex("ffffffffffff0200000000010800" "4500001c000100004011f9c90a0000010a000002"
                      "0035003500080000")
print(len(calls), bool(calls and calls[0]), prog.test_run(frame).action.name)
"""


def test_a_cold_load_verifies_in_the_child(tmp_path):
    """A fresh process, an empty cache: the object is verified in the child
    while numba starts, and the program compiled from its analysis runs."""
    env = dict(os.environ, DATAPLANE_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", CHILD, str(BPF / "drop_udp.o")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "True", "XDP_DROP"]


def test_one_core_verifies_here(forks, monkeypatch):
    """A child on the same core only adds its fork to the same work."""
    monkeypatch.setattr(forked_verify, "MIN_INSNS", 0)
    monkeypatch.setattr(forked_verify, "_cores", lambda: 1)
    monkeypatch.delitem(sys.modules, "numba")  # as a fresh process would be
    jobs, maps = _jobs("firewall")
    got = forked_verify.verify_all(jobs, maps, EBPF_HELPERS, lambda: pytest.fail("warmed"))
    assert not forks and got[0].states > 0
    monkeypatch.setattr(forked_verify, "_cores", lambda: 2)
    assert forked_verify._pays(jobs)  # the same with two cores would fork
