"""The eBPF verifier (dataplane.ebpf.verifier): what it rejects, where, and why.

Programs are written in assembly (dataplane.ebpf.asm) and start as an XDP
program does: R1 = the context (struct xdp_md: data @0 and data_end @4, read
with 32-bit loads), R10 = the frame pointer. The map is a HASH with 4-byte keys
and 8-byte values, referenced as ``lddw %r1, map_idx[0]``.

A rejection must name the offending instruction: ``_at(text)`` finds the
instruction index of the line marked ``# <-`` (counting LDDW as two slots, as
the kernel does), so the expected index is written next to the instruction
rather than counted by hand.

This verifier lets unproven packet (and variable-offset stack) accesses run
with a run-time check instead of rejecting them: ``Analysis.checks[pc]``.
Loops are allowed; the JIT bounds them with a budget of backward jumps.

The fuzz tests at the end feed seeded random and mutated programs: ``verify``
returns an Analysis or raises VerifierError, never anything else, never hangs.
"""

import ctypes
import glob
import random
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from llvmlite import ir

from dataplane.ebpf import elf, isa, jit
from dataplane.ebpf.asm import assemble
from dataplane.ebpf.program import EBPF_HELPERS, MapInfo, map_infos
from dataplane.ebpf.verifier import (Analysis, VerifierError, check_structure, prune_points,
                                     verify)

MAPS = [MapInfo("m", 1, 4, 8)]
ROOT = Path(__file__).resolve().parents[1]
OBJECTS = sorted(glob.glob(str(ROOT / "programs" / "bpf" / "*.o")))

# R2 = data, R3 = data_end (slots 0 and 1)
PROLOGUE = """
    ldxw %r2, [%r1]
    ldxw %r3, [%r1+4]
"""
# a 4-byte key at fp-4, R0 = lookup(map 0, key): slots 0-5, the call at 5
LOOKUP = """
    stw [%r10-4], 1
    mov %r2, %r10
    add %r2, -4
    lddw %r1, map_idx[0]
    call 1
"""


def check(text, maps=MAPS, helpers=EBPF_HELPERS, strict=False):
    return verify(assemble(text), maps, "t", helpers, strict)


def _at(text, mark="# <-"):
    """The slot index of the line carrying ``mark``."""
    slot = 0
    for line in text.splitlines():
        if mark in line:
            return slot
        body = line.split("#")[0].split(";")[0].strip()
        while ":" in body and not body.startswith(("[", "%")):  # labels
            head, _, rest = body.partition(":")
            if " " in head.strip() or "[" in head:
                break
            body = rest.strip()
        if body:
            slot += 2 if body.split()[0].lower() == "lddw" else 1
    raise AssertionError(f"no line marked {mark!r}")


def rejects(text, reason, insn=None, maps=MAPS, helpers=EBPF_HELPERS, strict=False):
    """Assert ``text`` is rejected at ``insn`` (default: the marked line) with
    ``reason`` in the message; returns the error."""
    want = _at(text) if insn is None else insn
    with pytest.raises(VerifierError) as info:
        check(text, maps, helpers, strict)
    err = info.value
    assert err.insn == want, f"rejected at insn {err.insn}, want {want}: {err}"
    assert reason in str(err), str(err)
    assert f"insn {want}:" in str(err)
    return err


@contextmanager
def deadline(seconds):
    """Fail (instead of hanging) when the block runs past ``seconds``."""
    def expired(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")
    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _calls_of(name, thunk):
    """How many times functions named ``name`` were called while ``thunk`` ran: a
    count of the work done, the same on any machine (a timing is not)."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        if event == "call" and frame.f_code.co_name == name:
            count += 1
    old = sys.getprofile()
    sys.setprofile(profile)
    try:
        thunk()
    finally:
        sys.setprofile(old)
    return count


def test_marker_counting():
    text = "mov %r0, 0\nlddw %r1, 5\nL: ja +0 # <-\nexit"
    assert _at(text) == 3


# ---------------------------------------------------------------- packet bounds

def test_unchecked_packet_access_gets_a_runtime_check():
    """No comparison with data_end: the access runs, checked (not rejected)."""
    text = PROLOGUE + """
        ldxb %r0, [%r2+12]   # <-
        exit"""
    a = check(text)
    assert a.checks == {_at(text): "packet"}
    assert a.ctx_loads == {0: "data", 1: "data_end"}


def test_checked_packet_access_has_no_runtime_check():
    text = PROLOGUE + """
        mov %r4, %r2
        add %r4, 14
        jgt %r4, %r3, drop
        ldxh %r0, [%r2+12]   # proven: 12 + 2 <= 14
        ldxb %r5, [%r2+13]
        ldxb %r6, [%r2+14]   # <- one byte past the proof
        exit
    drop:
        mov %r0, 1
        exit"""
    a = check(text)
    assert a.checks == {_at(text): "packet"}


@pytest.mark.parametrize("cmp,taken_is_ok", [
    ("jgt %r4, %r3, out", False),   # data + 14 > end: out
    ("jge %r4, %r3, out", False),
    ("jle %r4, %r3, out", True),    # data + 14 <= end: out is the proven side
    ("jlt %r3, %r4, out", False),   # end < data + 14: out
    ("jge %r3, %r4, out", True),    # end >= data + 14
])
def test_packet_range_from_either_comparison(cmp, taken_is_ok):
    body = "ldxw %r0, [%r2+10]"
    text = PROLOGUE + f"""
        mov %r4, %r2
        add %r4, 14
        {cmp}
        {'mov %r0, 0' if taken_is_ok else body + '   # <-'}
        exit
    out:
        {body + '   # <-' if taken_is_ok else 'mov %r0, 0'}
        exit"""
    assert check(text).checks == {}


def test_negative_packet_offset_is_checked():
    text = PROLOGUE + """
        mov %r4, %r2
        add %r4, 14
        jgt %r4, %r3, out
        ldxb %r0, [%r2-1]   # <-
        exit
    out:
        mov %r0, 0
        exit"""
    assert check(text).checks == {_at(text): "packet"}


def test_packet_pointer_moved_by_unknown_amount_is_checked():
    text = PROLOGUE + """
        mov %r4, %r2
        add %r4, 64
        jgt %r4, %r3, out
        ldxb %r5, [%r2]
        and %r5, 15
        add %r2, %r5
        ldxb %r0, [%r2]   # <- data + 0..15: the proof was about data + 0
        exit
    out:
        mov %r0, 0
        exit"""
    assert check(text).checks == {_at(text): "packet"}


# ---------------------------------------------------------------- maps

def test_unchecked_lookup_result_is_rejected():
    text = LOOKUP + """
        ldxdw %r0, [%r0]   # <-
        exit"""
    rejects(text, "map_value_or_null")


def test_null_checked_lookup_verifies():
    text = LOOKUP + """
        jeq %r0, 0, out
        ldxdw %r0, [%r0]
        exit
    out:
        mov %r0, 0
        exit"""
    a = check(text)
    assert a.checks == {}
    assert a.map_args == {5: {0}}


@pytest.mark.parametrize("use,reason", [
    ("add %r0, 4   # <-", "map_value_or_null"),
    ("stw [%r0], 1   # <-", "map_value_or_null"),
    ("mov %r3, %r0\nlddw %r1, map_idx[0]\nmov %r2, %r10\nadd %r2, -4\nmov %r4, 0\n"
     "call 2   # <-", "map_value_or_null as argument"),
])
def test_lookup_result_used_before_null_check(use, reason):
    rejects(LOOKUP + use + "\nmov %r0, 0\nexit", reason)


def test_map_value_access_out_of_bounds():
    text = LOOKUP + """
        jeq %r0, 0, out
        ldxdw %r0, [%r0+4]   # <- 8-byte value, bytes 4..11
        exit
    out:
        mov %r0, 0
        exit"""
    rejects(text, "invalid access to map value")


def test_map_index_out_of_range():
    rejects("lddw %r1, map_idx[3]   # <-\nmov %r0, 0\nexit", "map index 3 out of range")


def test_lookup_key_never_written_is_zeroed():
    text = """
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx[0]
        call 1
        mov %r0, 0
        exit"""
    assert check(text).zero_slots == {-8}


def test_helper_wants_a_map():
    text = """
        stw [%r10-4], 1
        mov %r2, %r10
        add %r2, -4
        mov %r1, 0
        call 1   # <-
        mov %r0, 0
        exit"""
    rejects(text, "expected=map_ptr")


# ---------------------------------------------------------------- registers, stack

def test_read_of_uninitialised_register():
    rejects("mov %r0, %r5   # <-\nexit", "R5 !read_ok")
    rejects("mov %r0, 0\nadd %r0, %r7   # <-\nexit", "R7 !read_ok")
    rejects("mov %r0, 0\njeq %r8, 0, +0   # <-\nexit", "R8 !read_ok")


def test_helper_call_clobbers_r1_to_r5():
    rejects("mov %r3, 1\ncall 5\nmov %r0, %r3   # <-\nexit", "R3 !read_ok")
    check("mov %r6, 1\ncall 5\nmov %r0, %r6\nexit")  # R6-R9 survive


def test_read_of_uninitialised_stack_is_zeroed_first():
    """Allowed, as the kernel allows a privileged loader (allow_uninit_stack);
    the slots read before written start zeroed (zero_slots), and only those."""
    assert check("ldxdw %r0, [%r10-8]\nexit").zero_slots == {-8}
    # 4 of the 8 bytes written; 2 bytes read across two slots
    assert check("stw [%r10-8], 1\nldxdw %r0, [%r10-8]\nexit").zero_slots == {-8}
    assert check("ldxh %r0, [%r10-17]\nexit").zero_slots == {-24, -16}
    assert check("stw [%r10-8], 1\nstw [%r10-4], 2\nldxdw %r0, [%r10-8]\nexit").zero_slots \
        == set()
    # through a helper: a 4-byte key of which 2 bytes were written (a struct's padding)
    padded = "sth [%r10-4], 1\n" + LOOKUP.replace("stw [%r10-4], 1\n", "") + \
        "mov %r0, 2\nexit"
    assert check(padded).zero_slots == {-8}
    # only on the path that reads it before writing it
    one_path = """
        ldxw %r4, [%r1+12]
        jeq %r4, 1, +1
        stdw [%r10-16], 7
        ldxdw %r0, [%r10-16]
        exit"""
    assert check(one_path).zero_slots == {-16}
    # part of a spilled pointer is still no number
    rejects("stxdw [%r10-8], %r1\nldxw %r0, [%r10-8]   # <-\nexit", "invalid size of register fill")


def test_write_to_r10():
    rejects("mov %r10, 0   # <-\nmov %r0, 0\nexit", "frame pointer is read only")
    rejects("add %r10, -8   # <-\nmov %r0, 0\nexit", "frame pointer is read only")
    rejects("ldxdw %r10, [%r10-8]   # <-\nmov %r0, 0\nexit", "frame pointer is read only")
    rejects("lddw %r10, 1   # <-\nmov %r0, 0\nexit", "frame pointer is read only")


@pytest.mark.parametrize("access", ["stdw [%r10-520], 0", "stb [%r10-513], 0",
                                    "stdw [%r10-4], 0", "stb [%r10+0], 0"])
def test_stack_access_out_of_the_frame(access):
    rejects(f"mov %r0, 0\n{access}   # <-\nexit", "invalid stack access")


def test_stack_bottom_is_usable():
    check("stdw [%r10-512], 7\nldxdw %r0, [%r10-512]\nexit")


# ---------------------------------------------------------------- structure

def test_jump_out_of_range():
    rejects("mov %r0, 0\nja +5   # <-\nexit", "jump out of range")
    rejects("mov %r0, 0\njeq %r0, 0, -3   # <-\nexit", "jump out of range")
    rejects("mov %r0, 0\nja32 +7   # <-\nexit", "jump out of range")


def test_jump_into_the_middle_of_lddw():
    rejects("mov %r0, 0\njeq %r0, 1, +1   # <-\nlddw %r1, 0x100000000\nexit",
            "jump into the middle of an lddw")


def test_lddw_missing_its_second_half():
    code = isa.decode(isa.encode(isa.make_lddw(0, 5)[:1]))
    with pytest.raises(VerifierError) as info:
        verify(code, MAPS, "t", EBPF_HELPERS)
    assert info.value.insn == 0 and "second half" in str(info.value)


def test_unreachable_code():
    rejects("mov %r0, 0\nexit\nmov %r0, 1   # <-\nexit", "unreachable insn")
    rejects("mov %r0, 0\nja +1\nmov %r0, 1   # <-\nexit", "unreachable insn")


def test_falling_off_the_end():
    rejects("mov %r0, 0   # <-", "falls off the end")
    rejects("mov %r0, 0\njeq %r1, 0, +1\nexit\nmov %r0, 1   # <-", "falls off the end")


def test_unknown_helper():
    rejects("call 9999   # <-\nmov %r0, 0\nexit", "unknown helper id 9999")
    # bpf_perf_event_output is a kernel helper, but not one an XDP object may call here yet
    rejects("call 25   # <-\nmov %r0, 0\nexit",
            "helper 25 (bpf_perf_event_output) is not supported here")


LOOP_CALL = """
mov %r1, 4
lddw %r2, func[{cb}]
mov %r3, 0
mov %r4, 0
call 181
exit
{callback}
"""


@pytest.mark.parametrize("text, reason", [
    # a callback's address is for bpf_loop only: no arithmetic, no compare
    ("lddw %r2, func[4]\nadd %r2, 8   # <-\nmov %r0, 0\nexit\nmov %r0, 0\nexit",
     "R2 pointer arithmetic on func prohibited"),
    ("lddw %r2, func[4]\njeq %r2, 0, +0   # <-\nmov %r0, 0\nexit\nmov %r0, 0\nexit",
     "pointer comparison with func prohibited"),
    ("lddw %r2, func[3]\nmov %r0, %r2\nexit   # <-\nmov %r0, 0\nexit",
     "R0 is func at exit, not a scalar"),
    ("mov %r1, 1\nmov %r2, 0\nmov %r3, 0\nmov %r4, 0\ncall 181   # <-\nexit",
     "bpf_loop: R2 type=scalar expected=func"),
    (LOOP_CALL.format(cb=5, callback="mov %r0, 0\nexit").replace("mov %r3, 0", "mov %r3, 1")
     .replace("call 181", "call 181   # <-"),
     "bpf_loop: R3 type=scalar expected=fp or NULL"),
    # the callback must answer 0 (go on) or 1 (stop), and set R0 on every path
    (LOOP_CALL.format(cb=5, callback="mov %r0, 2\nexit   # <-"),
     "At callback return the register R0 is a scalar in [2, 2], should have been in [0, 1]"),
    (LOOP_CALL.format(cb=5, callback="mov %r0, %r1\nexit   # <-"),
     "At callback return the register R0 is a scalar in [0, 18446744073709551615]"),
    (LOOP_CALL.format(cb=5, callback="exit   # <-"), "R0 !read_ok"),
])
def test_bpf_loop_callbacks_refused(text, reason):
    rejects(text, reason)


def test_a_callbacks_index_is_any_number():
    """R1 is the index as the kernel has it, an unknown scalar: strict refuses
    it as a stack index (the kernel's words), else a run-time check."""
    body = "mov %r3, %r10\nadd %r3, %r1   # <-\nstb [%r3-8], 0\nmov %r0, 0\nexit"
    text = LOOP_CALL.format(cb=5, callback=body)
    rejects(text, "math between fp pointer and register with unbounded min value", strict=True)
    assert check(text).checks == {9: "stack"}


def test_bpf_loop_callback_may_write_the_callers_stack_it_was_given():
    check(LOOP_CALL.replace("mov %r3, 0", "mov %r3, %r10\nadd %r3, -8\nstdw [%r10-8], 0")
          .replace("exit\n{callback}", "ldxdw %r0, [%r10-8]\nexit\n{callback}")
          .format(cb=8, callback="ldxdw %r1, [%r2]\nadd %r1, 1\nstxdw [%r2], %r1\n"
                                 "mov %r0, 0\nexit"))


def test_invalid_encodings():
    rejects("mov %r0, 0\nldabsw 12   # <-\nexit", "legacy packet loads")
    rejects("mov %r0, 0\ncall %r1   # <-\nexit", "callx")
    rejects("mov %r0, 0\n.raw 0x00000000000000ff   # <-\nexit", "invalid ALU operation 0xf0")
    rejects("mov %r0, 0\n.raw 0x0000000000000bb7   # <- mov r11, 0\nexit", "invalid register")
    rejects("mov %r0, 0\n.raw 0x00000000000000e7   # <- ALU64 op 0xe0\nexit",
            "invalid ALU operation")


def test_empty_program():
    with pytest.raises(VerifierError, match="empty program"):
        verify([], MAPS, "t", EBPF_HELPERS)


# ---------------------------------------------------------------- exit

def test_r0_not_set_at_exit():
    rejects("exit   # <-", "R0 !read_ok")
    rejects("mov %r2, 0\njeq %r2, 0, +1\nmov %r0, 0\nexit   # <-", "R0 !read_ok")


@pytest.mark.parametrize("setup", [
    "mov %r0, %r1",                            # ctx
    "ldxw %r0, [%r1]",                         # packet
    "ldxw %r0, [%r1+4]",                       # packet end
    "mov %r0, %r10",                           # stack
    "lddw %r0, map_idx[0]",                    # map
])
def test_pointer_in_r0_at_exit(setup):
    rejects(f"{setup}\nexit   # <-", "not a scalar")


# ---------------------------------------------------------------- ctx

def test_ctx_write():
    rejects("mov %r0, 0\nstw [%r1], 0   # <-\nexit", "write into ctx")
    rejects("mov %r0, 0\nstxw [%r1+4], %r0   # <-\nexit", "write into ctx")


@pytest.mark.parametrize("load", ["ldxw %r0, [%r1+24]", "ldxw %r0, [%r1+2]",
                                  "ldxh %r0, [%r1]", "ldxdw %r0, [%r1]", "ldxw %r0, [%r1-4]"])
def test_invalid_ctx_offset(load):
    rejects(f"{load}   # <-\nexit", "invalid bpf_context access")


def test_ctx_fields():
    text = """
        ldxw %r2, [%r1+12]
        ldxw %r3, [%r1+16]
        ldxw %r4, [%r1+20]
        mov %r0, %r2
        add %r0, %r3
        add %r0, %r4
        exit"""
    assert check(text).ctx_loads == {0: "ingress_ifindex", 1: "rx_queue_index",
                                     2: "egress_ifindex"}


def test_ctx_pointer_moved_by_a_constant():
    a = check("add %r1, 4\nldxw %r3, [%r1+0]\nldxw %r2, [%r1-4]\nmov %r0, 0\nexit")
    assert a.ctx_loads == {1: "data_end", 2: "data"}


# ---------------------------------------------------------------- calls

def test_recursion():
    text = """
        mov %r0, 0
        call local f
        exit
    f:
        mov %r0, 0
        call local f   # <-
        exit"""
    rejects(text, "recursive call")


def test_mutual_recursion():
    text = """
        call local f
        exit
    f:
        call local g
        exit
    g:
        mov %r0, 1
        call local f   # <-
        exit"""
    rejects(text, "recursive call")


def _chain(frames, mark_at=None):
    """main + (frames - 1) nested subprograms; the call made by frame
    ``mark_at`` (1: main) is marked."""
    lines = [f"call local f2{'   # <-' if mark_at == 1 else ''}", "exit"]
    for k in range(2, frames + 1):
        lines.append(f"f{k}:")
        if k < frames:
            lines.append(f"call local f{k + 1}{'   # <-' if mark_at == k else ''}")
        else:
            lines.append("mov %r0, 0")
        lines.append("exit")
    return "\n".join(lines)


def test_call_depth():
    check(_chain(8))  # eight frames: the limit
    # the ninth frame: rejected at the call that makes it (in frame 8)
    rejects(_chain(9, mark_at=8), "call depth over 8")


def test_many_call_paths_do_not_hang():
    """Layers of subprograms each calling every one of the next layer: 10^6
    call chains, but few functions; the structural pass must not walk every
    chain (it took seconds, and grew tenfold per extra layer)."""
    k, layers = 10, 7
    lines = ["mov %r0, 0"] + [f"call local f1_{j}" for j in range(k)] + ["exit"]
    for i in range(1, layers + 1):
        for j in range(k):
            lines.append(f"f{i}_{j}:")
            if i < layers:
                lines += [f"call local f{i + 1}_{m}" for m in range(k)]
            lines += ["mov %r0, 0", "exit"]
    insns = assemble("\n".join(lines))
    with deadline(60):
        steps = _calls_of("depth", lambda: check_structure(insns, "t", EBPF_HELPERS))
    # a step a call edge (611), not a step a chain (10^7)
    edges = k + (layers - 1) * k * k
    assert steps <= 1 + edges, steps
    with deadline(60):
        try:  # the type pass follows call contexts: it may give up, not hang
            verify(insns, MAPS, "t", EBPF_HELPERS)
        except VerifierError as exc:
            assert "too complex" in str(exc)


def test_paths_are_compared_only_where_they_can_meet():
    """Prune points (the kernel's): entries, jump targets and the instruction after
    a conditional jump; not straight-line code, a call's return nor an exit."""
    insns = assemble("""
        mov %r0, 0
        ldxw %r2, [%r1+0]
        jeq %r2, 1, one
        add %r0, 1
        ja out
    one:
        call local f
        add %r0, 2
    out:
        exit
    f:
        mov %r0, 7
        exit""")
    funcs = check_structure(insns, "t", EBPF_HELPERS)
    # 3: after the jeq; 5: its target; 7: ja's target; 8: f's entry
    assert prune_points(insns, funcs) == {0, 3, 5, 7, 8}
    assert verify(insns, MAPS, "t", EBPF_HELPERS).states >= 8  # every instruction stepped


def test_call_local_frames():
    """Each frame has its own stack; R1-R5 pass in, R6-R9 are restored, R0 returns."""
    text = """
        stdw [%r10-8], 3
        mov %r6, 5
        mov %r1, %r10
        add %r1, -8
        call local f
        ldxdw %r2, [%r10-8]
        add %r0, %r2
        add %r0, %r6
        exit
    f:
        ldxdw %r0, [%r1]     # the caller's stack through a pointer
        stdw [%r10-8], 9     # its own
        ldxdw %r2, [%r10-8]
        add %r0, %r2
        exit"""
    check(text)
    # the callee's stack starts empty: what it reads before writing starts zeroed
    assert check("stdw [%r10-8], 1\ncall local f\nexit\nf:\nldxdw %r0, [%r10-8]\nexit") \
        .zero_slots == {-8}
    # R6 is not passed in
    rejects("mov %r6, 1\ncall local f\nexit\nf:\nmov %r0, %r6   # <-\nexit", "R6 !read_ok")
    # R1-R5 do not come back
    rejects("mov %r0, 0\ncall local f\nmov %r0, %r1   # <-\nexit\nf:\nmov %r1, 1\n"
            "mov %r0, 0\nexit", "R1 !read_ok")


def test_a_subprogram_returns_r0_as_it_is():
    """As the kernel's prepare_func_exit: a subprogram may exit with R0 unset
    (clang drops a return value no caller reads: it was refused, 24 of the
    fuzzer's kernel-loaded programs) or holding a pointer the caller uses, but
    not a pointer into a stack."""
    check("call local f\nmov %r0, 2\nexit\nf:\nmov %r1, 0\nexit")
    rejects("call local f\nmov %r0, %r0   # <-\nexit\nf:\nexit", "R0 !read_ok")
    check(PROLOGUE + """
        call local f         # R2, R3: data, data_end
        jeq %r0, 0, out
        ldxb %r0, [%r0+13]
        exit
    out:
        mov %r0, 2
        exit
    f:
        mov %r0, %r2         # data, where 14 bytes are there; else 0
        mov %r4, %r2
        add %r4, 14
        jgt %r4, %r3, none
        exit
    none:
        mov %r0, 0
        exit""")
    rejects("mov %r1, %r10\nadd %r1, -8\ncall local f\nexit\nf:\nmov %r0, %r1\n"
            "exit   # <-", "cannot return stack pointer to the caller")


def test_callee_stack_pointer_into_the_callers_frame():
    """A pointer to the callee's stack stored in the caller's stack outlives the
    frame (it was accepted, and the fill after the return raised IndexError)."""
    text = """
        mov %r1, %r10
        add %r1, -8
        call local f
        ldxdw %r2, [%r10-8]
        ldxdw %r0, [%r2]
        exit
    f:
        stdw [%r10-16], 5
        mov %r2, %r10
        add %r2, -16
        stxdw [%r1], %r2   # <-
        mov %r0, 0
        exit"""
    rejects(text, "pointer to a callee's stack")


# ---------------------------------------------------------------- pointer arithmetic

@pytest.mark.parametrize("text,reason", [
    ("mov %r2, %r1\nmul %r2, 2   # <-", "pointer arithmetic with mul prohibited"),
    ("mov %r2, %r1\nor %r2, 1   # <-", "pointer arithmetic with or prohibited"),
    ("mov %r2, %r1\nlsh %r2, 1   # <-", "pointer arithmetic with lsh prohibited"),
    ("mov %r2, %r10\nand %r2, -8   # <-", "pointer arithmetic with and prohibited"),
    ("mov %r2, %r1\nadd %r2, %r1   # <-", "arithmetic on two pointers"),
    ("mov %r2, %r1\nneg %r2   # <-", "neg prohibited"),
    ("mov %r2, %r1\nbe16 %r2   # <-", "byte swap of a pointer"),
    ("mov %r2, %r1\nadd32 %r2, 1   # <-", "32-bit pointer arithmetic prohibited"),
    ("mov %r2, 1\nsub %r2, %r1   # <-", "scalar minus a pointer"),
    ("mov %r2, 3\nmul %r2, %r1   # <-", "scalar mul with a pointer"),
    ("ldxw %r2, [%r1+4]\nadd %r2, 1   # <-", "pointer arithmetic on pkt_end"),
    ("lddw %r2, map_idx[0]\nadd %r2, 8   # <-", "pointer arithmetic on map_ptr"),
    ("ldxw %r3, [%r1+12]\nmov %r2, %r1\nadd %r2, %r3   # <-", "pointer arithmetic on ctx"),
    ("mov %r2, %r1\nmovsx864 %r2, %r2   # <-", "sign extension of a pointer"),
])
def test_pointer_arithmetic_prohibited(text, reason):
    rejects(text + "\nmov %r0, 0\nexit", reason)


def test_map_value_plus_unbounded_scalar():
    text = LOOKUP + """
        jeq %r0, 0, out
        ldxdw %r3, [%r0]
        add %r0, %r3   # <-
        ldxb %r0, [%r0]
        exit
    out:
        mov %r0, 0
        exit"""
    rejects(text, "unbounded offset into map value")


def test_map_value_plus_bounded_scalar():
    """A masked offset keeps map accesses provable; one byte too far is rejected."""
    ok = LOOKUP + """
        jeq %r0, 0, out
        ldxdw %r3, [%r0]
        and %r3, 7
        add %r0, %r3
        ldxb %r0, [%r0]
        exit
    out:
        mov %r0, 0
        exit"""
    assert check(ok).checks == {}
    rejects(ok.replace("ldxb %r0, [%r0]", "ldxh %r0, [%r0]   # <-"),
            "invalid access to map value")


def test_pointer_comparison_in_32_bits():
    rejects(PROLOGUE + "mov %r0, 0\njgt32 %r2, %r3, +0   # <-\nexit", "pointer comparison")


def test_storing_a_pointer_into_a_map_value():
    text = LOOKUP + """
        jeq %r0, 0, out
        stxdw [%r0], %r10   # <-
    out:
        mov %r0, 0
        exit"""
    rejects(text, "leaks a pointer")


# ---------------------------------------------------------------- positive cases

PARSE = PROLOGUE + """
    mov %r4, %r2
    add %r4, 34              # ethernet (14) + IPv4 (20)
    jgt %r4, %r3, pass
    ldxh %r5, [%r2+12]       # ethertype
    jne %r5, 0x0008, pass
    ldxb %r5, [%r2+23]       # IP protocol
    jne %r5, 17, pass
    ldxw %r6, [%r2+26]       # source address
    stxw [%r10-4], %r6
    mov %r2, %r10
    add %r2, -4
    lddw %r1, map_idx[0]
    call 1
    jeq %r0, 0, pass
    ldxdw %r1, [%r0]
    add %r1, 1
    stxdw [%r0], %r1
    mov %r1, 1
    lock add [%r0], %r1
    mov %r0, 1               # XDP_DROP
    exit
pass:
    mov %r0, 2               # XDP_PASS
    exit
"""


def test_typical_parse_verifies_without_runtime_checks():
    a = check(PARSE)
    assert isinstance(a, Analysis)
    assert a.checks == {}
    assert a.ctx_loads == {0: "data", 1: "data_end"}
    call = _at(PARSE.replace("call 1", "call 1   # <-"))
    assert a.map_args == {call: {0}}
    assert not a.zero_stack


BOUNDED_LOOP = """
    mov %r0, 0
    mov %r2, 0
loop:
    stxdw [%r10-8], %r2
    ldxdw %r3, [%r10-8]
    add %r0, %r3
    add %r2, 1
    jlt %r2, 100, loop
    exit
"""


def test_bounded_loop_verifies():
    a = check(BOUNDED_LOOP)
    assert a.checks == {}


def test_loop_over_packet_bytes():
    text = PROLOGUE + """
        mov %r0, 0
        mov %r4, %r2
    loop:
        mov %r5, %r4
        add %r5, 1
        jgt %r5, %r3, done
        ldxb %r6, [%r4]     # <- proven at every turn
        add %r0, %r6
        mov %r4, %r5
        ja loop
    done:
        exit"""
    a = check(text)
    # the pointer's offset grows until the states are joined: from then on the
    # access is checked at run time, never unchecked without a proof
    assert set(a.checks) <= {_at(text)}


def test_spill_and_fill_keep_pointer_types():
    text = PROLOGUE + """
        stxdw [%r10-8], %r1      # ctx
        stxdw [%r10-16], %r2     # packet
        stxdw [%r10-24], %r3     # packet end
        mov %r1, 0
        mov %r2, 0
        mov %r3, 0
        ldxdw %r7, [%r10-8]
        ldxw %r0, [%r7+12]       # a ctx load through the filled pointer
        ldxdw %r2, [%r10-16]
        ldxdw %r3, [%r10-24]
        mov %r4, %r2
        add %r4, 4
        jgt %r4, %r3, out
        ldxw %r0, [%r2]          # proven through filled packet pointers
        exit
    out:
        exit"""
    a = check(text)
    assert a.checks == {}
    assert a.ctx_loads[_at(text.replace("ldxw %r0, [%r7+12]", "ldxw %r0, [%r7+12] # <-"))] \
        == "ingress_ifindex"


def test_partial_overwrite_of_a_spill_makes_it_a_number():
    text = """
        stxdw [%r10-8], %r1
        stw [%r10-4], 0
        ldxdw %r1, [%r10-8]
        ldxw %r0, [%r1]   # <-
        exit"""
    rejects(text, "invalid mem access 'scalar'")


# ---------------------------------------------------------------- unsound paths found here

def test_variable_offset_stack_write_forgets_spills():
    """A write at a variable stack offset may overwrite a spilled pointer: the
    fill must not give back the pointer type (it did: an arbitrary number was
    then dereferenced as a map value)."""
    text = LOOKUP + """
        jeq %r0, 0, out
        stxdw [%r10-16], %r0
        ldxw %r6, [%r0]
        and %r6, 8
        mov %r7, %r10
        add %r7, -16
        sub %r7, %r6
        lddw %r8, 0x100000
        stxdw [%r7], %r8
        ldxdw %r9, [%r10-16]
        ldxdw %r0, [%r9]   # <-
    out:
        mov %r0, 0
        exit"""
    rejects(text, "invalid mem access 'scalar'")
    a = check(text.replace("ldxdw %r0, [%r9]   # <-", "mov %r0, %r9"))
    assert a.checks == {}  # fp-24 .. fp-16: inside the frame, no run-time check


@pytest.mark.parametrize("index,reaches", [
    ("and %r6, 15\nlsh %r6, 2", False),   # hist[i & 15] of a u32 hist[16] at fp-64
    ("and %r6, 31\nlsh %r6, 2", True),    # up to fp+60: past the array, onto the spill
    ("mov %r6, %r6", True),                # no bound at all
])
def test_variable_offset_stack_write_forgets_only_spills_it_can_reach(index, reaches):
    """A bounded index into a stack array writes only within its span: a
    packet pointer spilled beside the array keeps its type (clang spills such
    pointers next to a histogram on the stack; the kernel loads that), one the
    write may reach does not."""
    text = PROLOGUE + """
        mov %r4, %r2
        add %r4, 16
        jgt %r4, %r3, out
        stxdw [%r10-72], %r2
        ldxb %r6, [%r2+12]
        """ + index + """
        mov %r7, %r10
        add %r7, -64
        add %r7, %r6
        stw [%r7], 1
        ldxdw %r9, [%r10-72]
        ldxb %r0, [%r9+14]   # <-
    out:
        mov %r0, 2
        exit"""
    if reaches:
        rejects(text, "invalid mem access")
    else:
        assert check(text).checks == {}  # the span stays in the frame: proven


def test_a_loop_moving_a_stack_pointer_converges():
    check("""
        mov %r0, 0
        mov %r6, %r10
        add %r6, -256
        mov %r7, 0
    loop:
        stb [%r6], 1
        ldxb %r1, [%r1+0]
        and %r1, 3
        add %r6, %r1
        add %r7, 1
        jlt %r7, 64, loop
        exit""".replace("ldxb %r1, [%r1+0]", "mov %r1, %r7"))


@pytest.mark.parametrize("op", ["lock add [%r10-16], %r1", "lock xchg [%r10-16], %r1",
                                "lock fetch or [%r10-16], %r1"])
def test_atomic_on_a_spilled_pointer_makes_it_a_number(op):
    text = LOOKUP + f"""
        jeq %r0, 0, out
        stxdw [%r10-16], %r0
        mov %r1, 4096
        {op}
        ldxdw %r9, [%r10-16]
        ldxdw %r0, [%r9]   # <-
    out:
        mov %r0, 0
        exit"""
    rejects(text, "invalid mem access 'scalar'")


def test_atomic_on_a_spilled_scalar_forgets_its_bounds():
    text = LOOKUP + """
        jeq %r0, 0, out
        stdw [%r10-16], 0
        mov %r1, 4096
        lock add [%r10-16], %r1
        ldxdw %r2, [%r10-16]
        add %r0, %r2   # <- 0 + 4096 past an 8-byte value
        ldxb %r0, [%r0]
        exit
    out:
        mov %r0, 0
        exit"""
    rejects(text, "unbounded offset into map value")


def test_packet_range_does_not_carry_over_a_loop_turn():
    """``add %r4, %r6`` names its unknown-offset result after the instruction:
    the range proven on the first turn was used for the next turn's pointer
    (4096 bytes further) without a run-time check."""
    text = PROLOGUE + """
        ldxw %r6, [%r1+12]
        mov %r9, 0
        mov %r0, 0
    loop:
        mov %r4, %r2
        add %r4, %r6
        jeq %r9, 0, check
        ldxdw %r0, [%r4]   # <- a new offset: not proven
        exit
    check:
        mov %r5, %r4
        add %r5, 8
        jgt %r5, %r3, out
        mov %r9, 1
        add %r6, 4096
        ja loop
    out:
        exit"""
    assert check(text).checks == {_at(text): "packet"}


def test_lookup_in_a_loop_checks_each_result():
    """The NULL check of the second lookup said nothing about the first one's
    result (same instruction, same identity): it was dereferenced unchecked."""
    text = """
        mov %r9, 0
        mov %r6, 0
        stw [%r10-4], 1
    loop:
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx[0]
        call 1
        jeq %r9, 0, first
        jeq %r0, 0, out
        ldxdw %r0, [%r6]   # <- the first turn's result, never checked
        ja out
    first:
        mov %r6, %r0
        mov %r9, 1
        stw [%r10-4], 2
        ja loop
    out:
        mov %r0, 0
        exit"""
    rejects(text, "invalid mem access")
    # checking both is fine
    ok = text.replace("ldxdw %r0, [%r6]   # <- the first turn's result, never checked",
                      "ldxdw %r0, [%r0]")
    assert check(ok).checks == {}


def test_partial_fill_of_a_spilled_pointer_is_rejected():
    """Reading 4 bytes of a spilled pointer made its address a number (the
    kernel: "invalid size of register fill"); a spilled number may be read in
    part."""
    text = """
        stxdw [%r10-8], %r10
        ldxw %r3, [%r10-8]   # <-
        mov %r0, 2
        exit"""
    rejects(text, "invalid size of register fill")
    assert check(text.replace("stxdw [%r10-8], %r10", "stdw [%r10-8], 7")).checks == {}


def test_csum_diff_takes_null_only_with_size_0():
    """bpf_csum_diff(NULL, 64, ...) was accepted and read address 0."""
    text = """
        mov %r1, 0
        mov %r2, 64
        mov %r3, 0
        mov %r4, 0
        mov %r5, 0
        call 28   # <-
        mov %r0, 2
        exit"""
    rejects(text, "R1 NULL with R2 not 0")
    assert check(text.replace("mov %r2, 64", "mov %r2, 0")).checks == {}


# bpf_csum_diff over the first ``ihl * 4``-like bytes of the packet: a size
# known only by its bounds (0 .. 60 here), checked at its largest
CSUM_OF_A_BOUNDED_SIZE = PROLOGUE + """
    mov %r4, %r2
    add %r4, 60
    jgt %r4, %r3, out
    ldxb %r4, [%r2+14]
    and %r4, 60
    mov %r3, %r2
    mov %r1, 0
    mov %r2, 0
    mov %r5, 0
    call 28   # <-
out:
    mov %r0, 2
    exit"""


def test_a_size_known_by_its_bounds_is_checked_at_its_largest():
    """The kernel passes a helper's size argument known only by its bounds
    (check_mem_size_reg) and checks the buffer at the largest; here it was
    refused ("not supported yet")."""
    text = CSUM_OF_A_BOUNDED_SIZE
    assert check(text).checks == {}
    rejects(text.replace("add %r4, 60", "add %r4, 59"), "R3 packet range of 60 bytes not proven")
    rejects(text.replace("and %r4, 60", "and %r4, 63"), "R3 packet range of 63 bytes not proven")
    rejects(text.replace("ldxb %r4, [%r2+14]", "ldxw %r4, [%r1+12]").replace("and %r4, 60", ""),
            "R4 unbounded memory access, use 'var &= const' or 'if (var < const)'")
    # a stack buffer: 16 bytes at fp-16, a size of at most 16, then 24
    stack = """
        ldxw %r2, [%r1+12]
        and %r2, SIZE
        mov %r1, %r10
        add %r1, -16
        mov %r3, 0
        mov %r4, 0
        mov %r5, 0
        call 28   # <-
        mov %r0, 2
        exit"""
    assert check(stack.replace("SIZE", "16")).checks == {}
    rejects(stack.replace("SIZE", "24"), "stack buffer of 24 bytes at -16 is out of the stack")
    # what the program reads at load time still needs a constant: a record size
    rb = [MapInfo("rb", 27, 0, 0)]
    rejects("""
        ldxw %r3, [%r1+12]
        and %r3, 8
        stdw [%r10-8], 0
        mov %r2, %r10
        add %r2, -8
        lddw %r1, map_idx[0]
        mov %r4, 0
        call 130   # <-
        mov %r0, 2
        exit""", "R3 size must be a known constant", maps=rb)


def test_a_store_reached_with_a_fixed_and_a_variable_offset_takes_its_address():
    """The JIT wrote through the fixed slot one path recorded, on every path; and
    a variable offset whose span stays in its frame needs no run-time check."""
    text = """
        stdw [%r10-8], 0
        ldxw %r3, [%r1+12]
        and %r3, 7
        mov %r4, %r10
        add %r4, -8
        jeq %r3, 0, fixed
        add %r4, %r3
    fixed:
        stb [%r4], 1   # <-
        ldxdw %r0, [%r10-8]
        exit"""
    a = check(text)
    assert a.stack_slots[_at(text)] is None and a.checks == {}
    a = check(text.replace("and %r3, 7", "and %r3, 15"))  # up to 7 bytes past the frame
    assert a.checks == {_at(text): "stack"}


def test_pruning_keeps_the_range_of_data_reloaded_from_the_context():
    """Two paths prove 4000 and 8 bytes of data and meet where no packet
    pointer is live: the 8-byte one was pruned as covered by the other, and
    data loaded again from the context kept 4000 bytes."""
    text = """
        mov %r6, %r1
        ldxw %r8, [%r6+12]
        ldxw %r2, [%r6]
        ldxw %r3, [%r6+4]
        jgt %r8, 5, long
        mov %r4, %r2
        add %r4, 8
        jgt %r4, %r3, out
        ja join
    long:
        mov %r4, %r2
        add %r4, 4000
        jgt %r4, %r3, out
    join:
        ldxw %r2, [%r6]
        stdw [%r2+2880], 1   # <-
    out:
        mov %r0, 2
        exit"""
    assert check(text).checks == {_at(text): "packet"}


def test_a_join_in_a_subprogram_called_twice_starts_without_a_range():
    """Five bit tests make 32 paths, more than are kept apart: the subprogram's
    pointer is joined under a name of its instruction. The range the first
    call proved for that name passed to the second call's pointer (4608 bytes
    further), whose write then went unchecked."""
    bits = "".join(f"""
        jset %r5, {1 << k}, set{k}
        ja d{k}
    set{k}:
        add %r4, {1 << k}
        add %r9, {1 << k}
    d{k}:""" for k in range(5))
    text = """
        mov %r6, %r1
        mov %r2, 0
        call local f
        jeq %r0, 0, out
        mov %r1, %r6
        mov %r2, 1
        call local f
    out:
        mov %r0, 2
        exit
    f:
        mov %r7, %r2
        ldxw %r4, [%r1]
        ldxw %r3, [%r1+4]
        mov %r5, %r3
        sub %r5, %r4
        mov %r9, 0
        jeq %r7, 0, near
        add %r4, 4608
    near:""" + bits + """
        jeq %r9, 0, hit
        mov %r0, 0
        exit
    hit:
        jne %r7, 0, far
        mov %r8, %r4
        add %r8, 8
        jgt %r8, %r3, fail
        mov %r0, 1
        exit
    fail:
        mov %r0, 0
        exit
    far:
        stdw [%r4], 1   # <-
        mov %r0, 1
        exit"""
    assert _at(text) in check(text).checks


#: clang output the kernel loads (for root) and this verifier refused, found by
#: differential fuzzing; test_ebpf_kernel loads the same in the kernel.
KERNEL_LOADS = {
    "select then re-check": PROLOGUE + """
        mov %r9, 0
        mov %r4, %r2
        add %r4, 54
        jgt %r4, %r3, +1
        mov %r9, %r2
        jgt %r4, %r3, +2
        ldxb %r0, [%r9+8]
        exit
        mov %r0, 2
        exit""",
    "a length from pointers adjust_head invalidated": PROLOGUE + """
        mov %r7, %r2
        mov %r8, %r3
        mov %r2, -4
        call 44
        sub %r8, %r7
        mov %r0, %r8
        and %r0, 3
        exit""",
    "a 32-bit difference of packet pointers": PROLOGUE + """
        sub32 %r3, %r2
        mov %r0, %r3
        and %r0, 3
        exit""",
    "a csum_diff size known by its bounds": CSUM_OF_A_BOUNDED_SIZE,
    "reads of stack never written": """
        ldxdw %r0, [%r10-8]
        ldxb %r1, [%r10-511]
        stw [%r10-16], 1
        ldxdw %r2, [%r10-16]
        add %r0, %r1
        add %r0, %r2
        and %r0, 3
        exit""",
}


def test_a_failed_packet_check_decides_the_same_check_later():
    """clang's select then re-check (found against the kernel, which loads it):
    r9 is the packet pointer only where p + 54 <= data_end; the second test
    of p + 54 > data_end goes out on the other path. The kernel knows the
    first failure decides the second (is_pkt_ptr_branch_taken); ours joined
    both and rejected the load through r9."""
    assert check(KERNEL_LOADS["select then re-check"]).checks == {}
    # a weaker check than the one that failed decides nothing: both sides run
    weaker = PROLOGUE + """
        mov %r9, 0
        mov %r5, %r2
        add %r5, 14
        mov %r4, %r2
        add %r4, 54
        jgt %r4, %r3, +1
        mov %r9, %r2
        jgt %r5, %r3, out
        ldxb %r0, [%r9+8]   # <-
        exit
    out:
        mov %r0, 2
        exit"""
    rejects(weaker, "invalid mem access 'scalar'")


def test_packet_pointers_are_numbers_after_adjust_head():
    """A length computed before bpf_xdp_adjust_head, moved after the call by
    clang: the kernel makes the old pointers numbers (for root) and loads it;
    ours called them 'mixed' and refused the subtraction. They still cannot
    be dereferenced."""
    text = KERNEL_LOADS["a length from pointers adjust_head invalidated"]
    assert check(text).checks == {}
    rejects(text.replace("sub %r8, %r7", "ldxb %r0, [%r7]   # <-"),
            "invalid mem access 'scalar'")


def test_32_bit_difference_of_packet_pointers_is_a_number():
    """__u32 len = data_end - data compiles to w3 -= w2 (-mcpu=v3): the kernel
    gives a number (for root); ours refused 32-bit pointer arithmetic."""
    assert check(KERNEL_LOADS["a 32-bit difference of packet pointers"]).checks == {}
    rejects(PROLOGUE + """
        add32 %r3, %r2   # <-
        mov %r0, 0
        exit""", "32-bit pointer arithmetic prohibited")


# ---------------------------------------------------------------- loops and the budget

def test_infinite_loop_verifies_quickly():
    text = "mov %r0, 0\nL: ja L"
    with deadline(60):  # a hang guard, not a timing: terminating is what matters
        try:
            check(text)
        except VerifierError:
            pass  # rejecting it would do too


class _BudgetTarget(jit.RawTarget):
    """The bare ISA with a loop budget; a fault writes a marker into the memory
    block (so the test sees it at run time) and is recorded at compile time."""

    loop_budget = 1000
    MARK = 0xFA17

    def __init__(self):
        self.faults = []

    def fault(self, builder, pc, kind):
        self.faults.append((pc, kind))
        mem = builder.function.args[0]
        ptr = builder.inttoptr(mem, ir.IntType(64).as_pointer())
        builder.store(ir.Constant(ir.IntType(64), self.MARK), ptr)


def _run_with_budget(text, memory=8):
    target = _BudgetTarget()
    fn = jit.compile_raw(assemble(text), target)
    buf = ctypes.create_string_buffer(memory)
    r0 = fn(ctypes.addressof(buf), memory)
    return r0, int.from_bytes(buf.raw[:8], "little"), target.faults


@pytest.mark.parametrize("text", [
    "mov %r0, 7\nL: ja L",
    "mov %r0, 7\nL: ja32 L",
    "mov %r0, 7\nL: add %r0, 1\njne %r0, 0, L\nexit",
    "mov %r0, 7\nL: call local f\nja L\nf: mov %r0, 1\nexit",
])
def test_jit_loop_budget_aborts_an_endless_loop(text):
    with deadline(10):
        r0, mark, faults = _run_with_budget(text)
    assert r0 == 0
    assert mark == _BudgetTarget.MARK
    assert faults and all(kind == "loop" for _, kind in faults)


def test_jit_loop_budget_lets_a_short_loop_finish():
    r0, mark, faults = _run_with_budget(BOUNDED_LOOP.replace("100", "500"))
    assert r0 == sum(range(500)) and mark == 0
    assert faults  # the fault path exists, it is not taken


# ---------------------------------------------------------------- fuzz

_ALU_OPS = ["add", "sub", "mul", "div", "sdiv", "or", "and", "lsh", "rsh", "mod", "smod",
            "xor", "mov", "arsh"]
_JMP_OPS = ["jeq", "jne", "jgt", "jge", "jlt", "jle", "jset", "jsgt", "jsge", "jslt", "jsle"]


def _random_insn(rnd, pc, n):
    """Assembly for one (mostly valid) instruction at slot ``pc`` of ``n``."""
    dst = lambda: f"%r{rnd.randrange(10)}"  # noqa: E731
    src = lambda: f"%r{rnd.randrange(11)}"  # noqa: E731
    base = lambda: f"%r{rnd.choice([10, 10, 10, 2, 2, 0, 1, 6, rnd.randrange(11)])}"  # noqa: E731
    imm = lambda: str(rnd.choice([0, 1, -1, 2, 4, 8, 14, 34, 64, 512, -8, -512,  # noqa: E731
                                  0x7fffffff, rnd.randrange(-600, 600)]))
    off = lambda: rnd.choice([-8, -16, -24, -4, -1, 0, 4, 8, 12, 14, 23, -512,  # noqa: E731
                              rnd.randrange(-520, 40)])
    kind = rnd.randrange(100)
    w = rnd.choice(["", "", "32"])
    size = rnd.choice(["b", "h", "w", "dw"])
    # a jump target: a label, mostly a little forward (L{n} is the epilogue)
    t = min(n, pc + 1 + rnd.randrange(8)) if rnd.random() < 0.85 else rnd.randrange(n + 1)
    rel = f"L{t}"
    if kind < 30:
        op = rnd.choice(_ALU_OPS)
        return f"{op}{w} {dst()}, {src() if rnd.random() < 0.4 else imm()}"
    if kind < 35:
        return rnd.choice([f"neg{w} {dst()}", f"be16 {dst()}", f"le32 {dst()}",
                           f"bswap64 {dst()}", f"movsx864 {dst()}, {src()}",
                           f"movsx1632 {dst()}, {src()}"])
    if kind < 50:
        sx = rnd.choice(["", "", "s"]) if size != "dw" else ""
        return f"ldx{sx}{size} {dst()}, [{base()}{off():+d}]"
    if kind < 58:
        return f"st{size} [{base()}{off():+d}], {imm()}"
    if kind < 68:
        return f"stx{size} [{base()}{off():+d}], {src()}"
    if kind < 71:
        return f"lock {rnd.choice(['', 'fetch '])}{rnd.choice(['add', 'or', 'xchg', 'cmpxchg'])}" \
               f"{rnd.choice(['', '32'])} [{base()}{off():+d}], {src()}"
    if kind < 84:
        return f"{rnd.choice(_JMP_OPS)}{w} {src()}, {src() if rnd.random() < 0.4 else imm()}, " \
               f"{rel}"
    if kind < 85:
        return f"ja {rel}"
    if kind < 92:
        call = f"call {rnd.choice([1, 1, 2, 3, 5, 7, 8, 23, 28, 44, 51, 65, 160, 6])}"
        if rnd.random() < 0.7:  # arguments a map helper takes, and R2-R5 set again after it
            call = "lddw %r1, map_idx[0]\nmov %r2, %r10\nadd %r2, -8\nmov %r3, %r10\n" \
                   f"add %r3, -16\nmov %r4, 0\n{call}\nmov %r2, 0\nmov %r3, %r10\n" \
                   "mov %r4, 1\nmov %r5, 2"
        return call
    if kind < 93:
        return rnd.choice(["call local Lf", f"call local {rel}"])
    if kind < 99:
        return rnd.choice(["lddw %r1, map_idx[0]", "lddw %r1, map_idx[1]",
                           "lddw %r2, map_idx_value[0, 4]", f"lddw {dst()}, 0x1234567890"])
    return "exit"


def _random_program(rnd):
    """Some set-up (initialised registers and stack, packet pointers, a lookup)
    so that many programs get deep into the type pass, then random insns."""
    lines = ["mov %r0, 0"]
    if rnd.random() < 0.9:  # R6-R9 (they survive helper calls), and some stack
        for r in range(6, 10):
            lines.append(rnd.choice([f"mov %r{r}, {rnd.randrange(-4, 64)}",
                                     f"mov %r{r}, %r10\nadd %r{r}, -{8 * rnd.randrange(1, 9)}",
                                     f"ldxw %r{r}, [%r1+12]", f"mov %r{r}, %r1",
                                     f"ldxw %r{r}, [%r1]"]))
        lines.append("stdw [%r10-8], 0\nstdw [%r10-16], 0\nstdw [%r10-24], 0")
    if rnd.random() < 0.6:
        lines += PROLOGUE.strip().splitlines()
    if rnd.random() < 0.3:
        lines += LOOKUP.strip().splitlines() + ["jeq %r0, 0, +1" if rnd.random() < 0.8
                                                 else "ja +0"]
    for r in range(1, 6):
        if rnd.random() < 0.6:
            lines.append(f"mov %r{r}, {rnd.randrange(0, 40)}")
    lines = "\n".join(lines).splitlines()
    n = rnd.randrange(1, 24)
    body = [f"L{k}: {_random_insn(rnd, k, n)}" for k in range(n)]
    sub = ["Lf: mov %r0, 1", "stxdw [%r10-8], %r0", "ldxdw %r0, [%r10-8]", "exit"] \
        if any("call local Lf" in line for line in body) else []
    return "\n".join(lines + body + [f"L{n}: mov %r0, 0", "exit"] + sub)


def _assert_verifies_or_rejects(insns, maps, label, strict=False):
    try:
        out = verify(insns, maps, "fuzz", EBPF_HELPERS, strict)
    except VerifierError as exc:
        assert exc.insn is None or 0 <= exc.insn < len(insns), (label, str(exc))
        return False
    except Exception as exc:  # noqa: BLE001: any other exception is the failure here
        raise AssertionError(f"{label}: {type(exc).__name__}: {exc}") from exc
    assert isinstance(out, Analysis), label
    return True


def test_fuzz_random_programs():
    rnd = random.Random(20240917)
    accepted = total = 0
    with deadline(120):
        for i in range(3000):
            text = _random_program(rnd)
            try:
                insns = assemble(text)
            except Exception:  # noqa: BLE001: a generated line the assembler refuses
                continue
            total += 1
            ok = _assert_verifies_or_rejects(insns, MAPS, f"program {i}:\n{text}")
            accepted += ok
            # strict refuses more, never less, and as cleanly
            strict_ok = _assert_verifies_or_rejects(insns, MAPS, f"strict {i}:\n{text}", True)
            assert ok or not strict_ok, f"program {i}: only strict accepts it:\n{text}"
    assert total > 2500
    assert accepted > 50  # some get all the way through the type pass


def _mutate(rnd, insns):
    """One random change to an instruction list (re-decoded, so LDDW pairs come
    out as isa.decode makes them)."""
    slots = [(i.opcode, i.dst, i.src, i.off, i.imm) for i in insns]
    k = rnd.randrange(len(slots))
    opcode, dst, src, off, imm = slots[k]
    what = rnd.randrange(9)
    if what == 0:
        opcode = rnd.randrange(256)
    elif what == 1:
        dst = rnd.randrange(16) if rnd.random() < 0.2 else rnd.randrange(11)
    elif what == 2:
        src = rnd.randrange(16) if rnd.random() < 0.2 else rnd.randrange(11)
    elif what == 3:
        off += rnd.choice([-8, -4, -2, -1, 1, 2, 4, 8, 64, -off])
    elif what == 4:
        imm = rnd.choice([0, 1, -1, imm + 1, imm - 1, imm ^ 0x80000000, 16, 32, 64, 0xe1,
                          rnd.randrange(-2 ** 31, 2 ** 31)])
    elif what == 5:
        del slots[k]
    elif what == 6:
        slots.insert(k, slots[rnd.randrange(len(slots))])
    elif what == 7:
        j = rnd.randrange(len(slots))
        slots[k], slots[j] = slots[j], slots[k]
    else:
        slots = slots[:k + 1]
    if what < 5:
        off = max(-32768, min(32767, off))
        imm = ((imm + 2 ** 31) % 2 ** 32) - 2 ** 31
        slots[k] = (opcode, dst, src, off, imm)
    if not slots:
        slots = [(0x95, 0, 0, 0, 0)]
    return isa.decode(isa.encode([isa.Insn(*s) for s in slots]))


@pytest.mark.skipif(not OBJECTS, reason="no programs/bpf/*.o")
def test_fuzz_mutated_objects():
    rnd = random.Random(7)
    programs = []
    for path in OBJECTS:
        obj = elf.load_object(path)
        maps = map_infos(obj.maps)
        for prog in obj.programs.values():
            programs.append((Path(path).name, prog.insns, maps))
    with deadline(120):
        for i in range(3000):
            name, insns, maps = programs[i % len(programs)]
            mutant = insns
            for _ in range(rnd.choice([1, 1, 1, 2, 3])):
                mutant = _mutate(rnd, mutant)
            _assert_verifies_or_rejects(mutant, maps, f"{name} mutant {i}")


@pytest.mark.skipif(not OBJECTS, reason="no programs/bpf/*.o")
def test_objects_verify():
    """The example objects (except map-in-map, not supported here) verify."""
    for path in OBJECTS:
        obj = elf.load_object(path)
        maps = map_infos(obj.maps)
        for prog in obj.programs.values():
            if "map_in_map" in path:
                continue
            assert isinstance(verify(prog.insns, maps, prog.name, EBPF_HELPERS), Analysis)


# ---------------------------------------------------------------- ring buffer reservations

RING_MAPS = MAPS + [MapInfo("rb", 27, 0, 0)]
# R0 = bpf_ringbuf_reserve(map 1, 16 bytes, 0): slots 0-4, the call at 4
RESERVE = """
    lddw %r1, map_idx[1]
    mov %r2, 16
    mov %r3, 0
    call 131
"""
SUBMIT_R0 = """
    mov %r1, %r0
    mov %r2, 0
    call 132
"""


def test_reservation_filled_then_submitted_or_discarded():
    a = check(RESERVE + "jeq %r0, 0, out\nstdw [%r0], 1\nstdw [%r0+8], 2\n" + SUBMIT_R0
              + "out:\nmov %r0, 2\nexit", RING_MAPS)
    assert a.record_sizes == {1: {16}} and a.map_args == {4: {1}, 10: {1}}
    # through a spill, discarded
    check(RESERVE + """
        stxdw [%r10-8], %r0
        jeq %r0, 0, out
        ldxdw %r1, [%r10-8]
        mov %r2, 0
        call 133
    out:
        mov %r0, 2
        exit""", RING_MAPS)


@pytest.mark.parametrize("body,reason", [
    # never submitted on the non-NULL path (the kernel's "Unreleased reference")
    ("jeq %r0, 0, out\nstdw [%r0], 1\nout:\nmov %r0, 2\nexit   # <-",
     "unreleased reference: the ring buffer reservation of insn 4"),
    ("mov %r1, %r0\nmov %r2, 0\ncall 132   # <-\nmov %r0, 2\nexit",
     "ringbuf_mem_or_null as argument (null-check it)"),
    ("jeq %r0, 0, out\nstdw [%r0+16], 1   # <-\n" + SUBMIT_R0 + "out:\nmov %r0, 2\nexit",
     "invalid access to memory, mem_size=16 off=16..16 size=8"),
    ("jeq %r0, 0, out\nmov %r6, %r0\n" + SUBMIT_R0 + "mov %r1, %r6\nmov %r2, 0\n"
     "call 133   # <-\nout:\nmov %r0, 2\nexit", "R1 type=mixed expected=ringbuf_mem"),
    ("jeq %r0, 0, out\nmov %r6, %r0\n" + SUBMIT_R0 + "stdw [%r6], 1   # <-\nout:\n"
     "mov %r0, 2\nexit", "R6 invalid mem access 'mixed'"),
    ("jeq %r0, 0, out\nadd %r0, 8\nmov %r1, %r0\nmov %r2, 0\ncall 132   # <-\nout:\n"
     "mov %r0, 2\nexit", "R1 must have zero offset when passed to release func"),
])
def test_reservation_misuse(body, reason):
    rejects(RESERVE + body, reason, maps=RING_MAPS)


def test_tail_call_with_a_reservation_held():
    rejects("mov %r7, %r1\n" + RESERVE + """
        jeq %r0, 0, out
        mov %r6, %r0
        mov %r1, %r7
        lddw %r2, map_idx[2]
        mov %r3, 0
        call 12   # <-
        mov %r1, %r6
        mov %r2, 0
        call 132
    out:
        mov %r0, 2
        exit""", "tail_call would lead to reference leak",
            maps=RING_MAPS + [MapInfo("progs", 3, 4, 4)])


def test_reservation_arguments():
    rejects("ldxw %r2, [%r1+12]\nlddw %r1, map_idx[1]\nmov %r3, 0\ncall 131   # <-\n"
            "mov %r0, 2\nexit", "R2 size must be a known constant", maps=RING_MAPS)
    rejects("lddw %r1, map_idx[0]\nmov %r2, 8\nmov %r3, 0\ncall 131   # <-\nmov %r0, 2\nexit",
            "map 'm' of type 1 cannot be used here", maps=RING_MAPS)
    rejects("stw [%r10-4], 1\nmov %r2, %r10\nadd %r2, -4\nlddw %r1, map_idx[0]\ncall 1\n"
            "jeq %r0, 0, out\n" + SUBMIT_R0.replace("call 132", "call 132   # <-")
            + "out:\nmov %r0, 2\nexit", "R1 type=map_value expected=ringbuf_mem",
            maps=RING_MAPS)


# ---------------------------------------------------------------- strict: the kernel's rejections

#: What the kernel's verifier rejects and this one runs under a run-time check,
#: unless strict: (program, the reason, the kernel log's line).
STRICT_REJECTS = {
    "packet read without a data_end check": (
        PROLOGUE + "ldxb %r0, [%r2+12]   # <-\nexit",
        "invalid access to packet, off=12 size=1, proven r=0: R2 offset is outside",
        "R2 offset is outside of the packet"),
    "a check one byte short": (
        PROLOGUE + """
        mov %r4, %r2
        add %r4, 12
        jgt %r4, %r3, out
        ldxb %r0, [%r2+12]   # <-
        exit
    out:
        mov %r0, 2
        exit""", "invalid access to packet, off=12 size=1, proven r=12",
        "R2 offset is outside of the packet"),
    "a jump to itself": (
        "mov %r0, 0\nL: ja L   # <-", "infinite loop detected at insn 1",
        "infinite loop detected at insn 1"),
    "a loop that changes nothing": (
        "mov %r0, 0\nL: jeq %r0, 1, out   # <-\nja L\nout: exit",
        "infinite loop detected at insn 1", "infinite loop detected at insn 1"),
}
# A stack index through BPF_MOD or BPF_DIV: bounded here, not by the kernel's
# verifier (6.18), which refuses the pointer arithmetic (found by the second
# differential campaign: clang's buf[x % 12] as x - x / 12 * 12, and w %= 10)
_STACK_INDEX = PROLOGUE + """
    mov %r4, %r2
    add %r4, 16
    jgt %r4, %r3, out
    ldxb %r5, [%r2+12]
    OP
    mov %r6, %r10
    add %r6, -256
    add %r6, %r5   # <-
    stb [%r6], 1
out:
    mov %r0, 2
    exit"""
for _op in ("mod %r5, 10", "div %r5, 4", "mod32 %r5, 10"):
    STRICT_REJECTS[f"a stack index through {_op.split()[0]}"] = (
        _STACK_INDEX.replace("OP", _op),
        "R6 math between fp pointer and register with unbounded min value is not allowed",
        "math between fp pointer and register with unbounded min value is not allowed")


@pytest.mark.parametrize("case", sorted(STRICT_REJECTS))
def test_strict_rejects_at_the_instruction(case):
    text, reason, _ = STRICT_REJECTS[case]
    rejects(text, reason, strict=True)
    check(text)  # runs, under its run-time check or the loop budget


def test_strict_loads_loops_the_kernel_walks_through():
    """Strict explores paths apart, as the kernel does (no joins): a bounded
    loop over packet bytes proves each turn's access, where a join would lose
    the range; what the kernel loads, strict loads."""
    loop = PROLOGUE + """
        mov %r0, 0
        mov %r4, 0
    next:
        mov %r5, %r2
        add %r5, %r4
        mov %r6, %r5
        add %r6, 1
        jgt %r6, %r3, out
        ldxb %r7, [%r5]
        add %r0, %r7
        add %r4, 1
        jlt %r4, 24, next
    out:
        and %r0, 3
        exit"""
    assert check(loop, strict=True).checks == {}
    assert check(BOUNDED_LOOP, strict=True).checks == {}
    for text in KERNEL_LOADS.values():
        check(text, strict=True)


@pytest.mark.parametrize("path", OBJECTS, ids=lambda p: Path(p).stem)
def test_strict_verifies_every_bundled_object(path):
    """programs/bpf/*.o load into the kernel (test_ebpf_kernel.py): so under strict."""
    obj = elf.load_object(path)
    for prog in obj.programs.values():
        verify(prog.insns, map_infos(obj.maps), prog.name, EBPF_HELPERS, strict=True)


# ---------------------------------------------------------------- bounds from compares

HIST_MAPS = [MapInfo("m", 1, 4, 8), MapInfo("hist", 2, 4, 64)]
# R0 = a 64-byte value of map 1 (null-checked), R7 = the packet's length
HIST = """
    ldxw %r2, [%r1]
    ldxw %r7, [%r1+4]
    sub %r7, %r2
    stw [%r10-4], 0
    mov %r2, %r10
    add %r2, -4
    lddw %r1, map_idx[1]
    call 1
    jeq %r0, 0, out
"""
INDEX = """
    add %r0, %r7
    ldxdw %r1, [%r0]
out:
    mov %r0, 2
    exit"""


@pytest.mark.parametrize("bound", [
    # "if (b >= 8) b = 7", b counting 8-byte words: clang keeps the 7 in a register
    "rsh %r7, 6\nmov %r1, 7\njgt %r1, %r7, +1\nmov %r7, 7\nlsh %r7, 3",
    # a 32-bit compare (-mcpu=v3) on a 32-bit result, then the word's offset masked
    "sub32 %r7, 0\njgt32 %r7, 63, out\nand32 %r7, -8",
    # signed, both sides not negative
    "and %r7, 0xffff\njsgt %r7, 56, out",
    "and %r7, 7\nmov %r1, 7\njslt %r1, %r7, out\nlsh %r7, 3",
])
def test_a_compare_bounds_an_index_into_a_map_value(bound):
    """Ways clang writes a bounded index (found against the kernel, which loads
    each): the index into a 64-byte value is proven, no rejection."""
    assert check(HIST + bound + INDEX, HIST_MAPS).checks == {}


def test_an_unbounded_index_is_still_refused():
    end = "\nout:\nmov %r0, 2\nexit"
    rejects(HIST + "sub32 %r7, 0\njgt32 %r7, 64, out\nadd %r0, %r7\nldxdw %r1, [%r0]   # <-"
            + end, "invalid access to map value, value_size=64 off=0..64 size=8",
            maps=HIST_MAPS)
    # a 32-bit compare says nothing of a register wider than 32 bits
    rejects(HIST + "lsh %r7, 32\njgt32 %r7, 63, out\nadd %r0, %r7   # <-" + end,
            "unbounded offset into map value", maps=HIST_MAPS)
    # nor a signed compare of a number that may be negative
    rejects(HIST + "jsgt %r7, 56, out\nadd %r0, %r7   # <-" + end,
            "unbounded offset into map value", maps=HIST_MAPS)


# ---------------------------------------------------------------- bpf_xdp_load_bytes / store_bytes

LOAD_BYTES = """
    mov %r2, 0
    mov %r3, %r10
    add %r3, -16
    mov %r4, 14
    call 189
"""


def test_load_bytes_initialises_the_buffer_it_writes():
    """bpf_xdp_load_bytes writes its buffer (the kernel's ARG_PTR_TO_UNINIT_MEM):
    the bytes it wrote read as initialised after the call, not zeroed first."""
    a = check(LOAD_BYTES + "ldxdw %r0, [%r10-16]\nldxh %r1, [%r10-3]\nexit")
    assert a.zero_slots == {-8}  # it wrote fp-16..fp-3: fp-2 was not written
    assert check(LOAD_BYTES + "ldxdw %r0, [%r10-16]\nexit").zero_slots == set()


@pytest.mark.parametrize("text,reason", [
    (LOAD_BYTES.replace("mov %r4, 14", "mov %r4, 0").replace("call 189", "call 189   # <-")
     + "mov %r0, 2\nexit", "invalid zero-sized read"),
    (LOAD_BYTES.replace("add %r3, -16", "add %r3, -8").replace("call 189", "call 189   # <-")
     + "mov %r0, 2\nexit", "stack buffer of 14 bytes at -8 is out of the stack"),
    (PROLOGUE + "mov %r6, %r2\nadd %r6, 14\njgt %r6, %r3, out\nmov %r3, %r2\nmov %r2, 0\n"
     "mov %r4, 14\ncall 190   # <-\nout:\nmov %r0, 2\nexit",
     "helper access to the packet is not allowed"),
])
def test_load_and_store_bytes_arguments(text, reason):
    rejects(text, reason)


def test_load_bytes_into_a_read_only_map_value_is_refused():
    ro = [MapInfo("cfg", 2, 4, 16, True)]
    rejects("""
        stw [%r10-4], 0
        mov %r2, %r10
        add %r2, -4
        lddw %r1, map_idx[0]
        call 1
        jeq %r0, 0, out
        mov %r3, %r0
        mov %r1, %r6
        mov %r2, 0
        mov %r4, 8
        call 189   # <-
    out:
        mov %r0, 2
        exit""".replace("stw [%r10-4], 0", "mov %r6, %r1\nstw [%r10-4], 0"),
            "write into map 'cfg', which is read-only", maps=ro)


EACH_CALL = """
lddw %r1, map_fd[{m}]
lddw %r2, func[{cb}]
mov %r3, 0
mov %r4, 0
call 164   # <-
exit
{callback}
"""


def test_bpf_for_each_map_elem_takes_hash_and_array_maps_only():
    """Hash and array maps (per-CPU or not) have a walk; an LPM trie is refused
    at the call, as the kernel's check_map_func_compatibility does. The
    callback's key is read-only, its value writable."""
    maps = [MapInfo("h", 1, 4, 8), MapInfo("lpm", 11, 8, 8), MapInfo("a", 2, 4, 8)]
    walk = "ldxw %r5, [%r2]\nldxdw %r0, [%r3]\nadd %r0, %r5\nstxdw [%r3], %r0\nmov %r0, 0\nexit"
    for m in (0, 2):
        check(EACH_CALL.format(m=m, cb=5, callback=walk), maps)
    rejects(EACH_CALL.format(m=1, cb=5, callback=walk), "map 'lpm' of type 11 cannot be used here",
            maps=maps)
    rejects(EACH_CALL.format(m=0, cb=5, callback="stw [%r2], 1\nmov %r0, 0\nexit"),
            "write into read-only map 'h key'", insn=8, maps=maps)
