"""A faulting program aborts only its packet: the process survives, neighbours untouched."""

import textwrap

import numpy as np
import pytest

from dataplane import PacketBatch, XdpAction, load_program
from dataplane import config


def load(tmp_path, body):
    path = tmp_path / "faulty.py"
    path.write_text("from dataplane import *\n\n@xdp\ndef prog(ctx):\n"
                    + textwrap.indent(textwrap.dedent(body), "    "))
    return load_program(str(path))


def batch_of(frames):
    b = PacketBatch(len(frames))
    for f in frames:
        assert b.append(f)
    return b


def neighbours_intact(b, frames):
    """Every byte of the buffer outside the frames is still zero (headroom, tailroom)."""
    mask = np.ones(b.buf.size, bool)
    for i in range(b.count):
        mask[b.data[i]:b.data_end[i]] = False
    return not b.buf[mask].any() and all(b.packet(i) == f for i, f in enumerate(frames))


FRAMES = [bytes([i + 1]) * (20 + i) for i in range(8)]


@pytest.mark.parametrize("body, faulty, reason", [
    # read past the end of packets 3 and up (odd lengths past 23 read index 22)
    ("pkt = ctx.pkt\nif len(pkt) > 22:\n    return XDP_PASS\nx = pkt[22]\nreturn XDP_DROP",
     {0, 1, 2}, "access outside the packet"),
    # write before the start
    ("pkt = ctx.pkt\nif pkt[0] == 3:\n    pkt[-1] = 0xEE\nreturn XDP_PASS",
     {2}, "access outside the packet"),
    # write far past the end (a huge index must not reach memory)
    ("pkt = ctx.pkt\nif pkt[0] == 5:\n    pkt[1 << 40] = 1\nreturn XDP_PASS",
     {4}, "access outside the packet"),
    # an exception (tuple index out of range) aborts that packet only
    ("pkt = ctx.pkt\nreturn (XDP_PASS, XDP_DROP)[pkt[0] - 5]",
     {0, 1, 6, 7}, "raised an exception"),  # -2 and -1 are valid indices
    # an endless loop hits the loop budget
    ("pkt = ctx.pkt\nn = 0\nwhile pkt[0] == 8:\n    n += 1\nreturn XDP_PASS",
     {7}, "loop budget"),
])
def test_fault_aborts_only_that_packet(tmp_path, body, faulty, reason):
    prog = load(tmp_path, body)
    frames = list(FRAMES)
    b = batch_of(frames)
    prog.run_batch(b, base_index=100)
    aborted = {i for i in range(b.count) if b.action[i] == XdpAction.XDP_ABORTED}
    assert aborted == faulty
    assert prog.faults == len(faulty)
    assert prog.first_fault == 100 + min(faulty)
    assert reason in prog.fault_reason
    assert neighbours_intact(b, frames)
    others = set(range(b.count)) - faulty
    assert all(b.action[i] in (XdpAction.XDP_PASS, XdpAction.XDP_DROP) for i in others)


def test_loop_budget_is_the_configured_one():
    assert config.LOOP_BUDGET == 1 << 20


def test_loop_budget_is_per_packet_across_calls(tmp_path):
    """Nested loops share one budget: 1024 x 1024 iterations exceed 2**20."""
    prog = load(tmp_path, """
        n = 0
        for i in range(1024):
            for j in range(1024 + len(ctx.pkt)):
                n += 1
        return XDP_PASS
        """)
    assert prog.test_run(b"\x00" * 14)[0] == XdpAction.XDP_ABORTED
    assert "loop budget" in prog.fault_reason


@pytest.mark.parametrize("where", ["helper", "hook"])
def test_a_loop_outside_the_program_function_keeps_the_budget(tmp_path, where):
    """A file whose loops are all in other functions of it (a helper the program
    calls, its prefetch hook) still gets the budget: only a file without any
    loop runs without (program.py)."""
    path = tmp_path / "spin.py"
    path.write_text(textwrap.dedent(f"""
        from dataplane import *

        def spin(n):
            while n >= 0:
                n += 1
            return n

        def ahead(ctx):
            return spin(len(ctx.pkt))

        @xdp{"(prefetch=ahead)" if where == "hook" else ""}
        def prog(ctx):
            {"spin(len(ctx.pkt))" if where == "helper" else ""}
            return XDP_PASS
        """))
    prog = load_program(str(path))
    b = batch_of([b"\x00" * 60] * 40)
    prog.run_batch(b)
    if where == "helper":
        assert list(b.action) == [XdpAction.XDP_ABORTED] * 40
        assert "loop budget" in prog.fault_reason
    else:  # the hook's loop stopped by the budget; the packets go on, reset
        assert list(b.action) == [XdpAction.XDP_PASS] * 40 and prog.faults == 0


def test_division_by_zero_is_zero_as_in_ebpf(tmp_path):
    """RFC 9669: division by zero gives 0 (and modulo by zero the dividend)."""
    prog = load(tmp_path, """
        pkt = ctx.pkt
        pkt[0] = 10 // pkt[1]
        pkt[2] = 10 % pkt[1]
        return XDP_PASS
        """)
    action, out = prog.test_run(b"\x05\x00\x07")
    assert action == XdpAction.XDP_PASS and prog.faults == 0
    assert out[0] == 0


@pytest.mark.parametrize("ret, expected", [
    ("7", XdpAction.XDP_ABORTED),          # unknown action
    ("-1", XdpAction.XDP_ABORTED),
    ("XDP_REDIRECT", XdpAction.XDP_ABORTED),  # redirect without a target
    ("bpf_redirect(3, 1)", XdpAction.XDP_ABORTED),  # bad flags
    ("XDP_TX", XdpAction.XDP_TX),
])
def test_invalid_verdicts_abort(tmp_path, ret, expected):
    prog = load(tmp_path, f"return {ret}\n")
    assert prog.test_run(b"\x00" * 14)[0] == expected


def test_overflowing_guard_cannot_remove_the_bounds_check(tmp_path):
    """``off + 4 > len(pkt)`` with off near 2**63 overflows: the access must still be
    checked (programs compile with wrap-around arithmetic), so the packet aborts
    and the process lives."""
    prog = load(tmp_path, """
        pkt = ctx.pkt
        off = 0
        for i in range(8):
            off = (off << 8) | pkt[i]
        if off < 0 or off + 4 > len(pkt):
            return XDP_PASS
        return XDP_DROP if pkt[off] + pkt[off + 3] == 0 else XDP_TX
        """)
    huge = (2**63 - 2).to_bytes(8, "big") + bytes(52)
    small = (8).to_bytes(8, "big") + bytes(52)
    assert prog.test_run(huge)[0] == XdpAction.XDP_ABORTED
    assert "access outside the packet" in prog.fault_reason
    assert prog.test_run(small)[0] == XdpAction.XDP_DROP
