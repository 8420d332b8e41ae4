"""XDP helpers: bpf_xdp_adjust_head/tail/meta with the kernel's limits and error
codes, bpf_get_prandom_u32 seeding, bpf_ktime_get_ns sources."""

import textwrap
import time

import numpy as np
import pytest

from dataplane import PacketBatch, XdpAction, load_program
from dataplane import config

HEADER = """
from dataplane import *
"""


def load(tmp_path, body, name="helpers_prog.py"):
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body))
    return load_program(str(path))


def run_one(prog, frame):
    b = prog.new_batch(1)  # as replay lays it out: the head's limits hold in its layout
    assert b.append(frame)
    prog.run_batch(b)
    return b


# The program puts the helper's return code in byte 0 of the (new) packet.
ADJUST = """
@xdp
def prog(ctx):
    delta = (ctx.pkt[0] << 8 | ctx.pkt[1]) - 32768
    which = ctx.pkt[2]
    if which == 0:
        r = bpf_xdp_adjust_head(ctx, delta)
    elif which == 1:
        r = bpf_xdp_adjust_tail(ctx, delta)
    else:
        r = bpf_xdp_adjust_meta(ctx, delta)
    pkt = ctx.pkt
    pkt[0] = r & 0xFF
    return XDP_PASS
"""


def frame(which, delta, size=60):
    d = delta + 32768
    return bytes([d >> 8, d & 0xFF, which]) + bytes(range(3, size))


HEADROOM, XDP_FRAME = config.HEADROOM, 40


@pytest.mark.parametrize("delta, ok", [
    (-(HEADROOM - XDP_FRAME), True),       # all the usable headroom
    (-(HEADROOM - XDP_FRAME) - 1, False),  # one byte more: -EINVAL
    (46, True),                            # shrink to 14 bytes
    (47, False),                           # below ETH_HLEN
    (0, True),
])
def test_adjust_head_limits(tmp_path, delta, ok):
    prog = load(tmp_path, ADJUST)
    b = run_one(prog, frame(0, delta))
    out = b.packet(0)
    if ok:
        assert out[0] == 0 and len(out) == 60 - delta
        if delta < 0:  # the old bytes follow the new head, unchanged after byte 0
            assert out[-delta + 3:] == bytes(range(3, 60))
    else:
        assert out[0] == (-22) & 0xFF and len(out) == 60  # -EINVAL, nothing moved


# growth ends where the kernel's frame does: a page less skb_shared_info from
# the slot's start, 3520 bytes of data (BPF_PROG_TEST_RUN grows a 64-byte frame
# by 3456; 256 bytes of tailroom refused 257 and up)
@pytest.mark.parametrize("delta, ok", [(-46, True), (-47, False), (200, True), (257, True),
                                       (3460, True), (3461, False), (10**4, False)])
def test_adjust_tail_limits_and_zeroed_growth(tmp_path, delta, ok):
    prog = load(tmp_path, ADJUST)
    b = run_one(prog, frame(1, delta))
    out = b.packet(0)
    if ok:
        assert out[0] == 0 and len(out) == 60 + delta
        if delta > 0:
            assert out[60:] == bytes(delta)
    else:
        assert out[0] == (-22) & 0xFF and len(out) == 60


# up to the headroom (256 less the 40 bytes of struct xdp_frame), as kernel 6.18
# runs it (its meta_len limit, 252, is past the headroom); 32 was older kernels'
@pytest.mark.parametrize("delta, code", [(-4, 0), (-32, 0), (-36, 0), (-216, 0), (-220, -22),
                                         (-6, -13), (4, -22)])
def test_adjust_meta(tmp_path, delta, code):
    prog = load(tmp_path, ADJUST)
    b = run_one(prog, frame(2, delta))
    assert b.packet(0)[0] == code & 0xFF
    assert int(b.data[0] - b.data_meta[0]) == (-delta if code == 0 else 0)


def test_meta_is_visible_and_moves_with_head(tmp_path):
    prog = load(tmp_path, """
        @xdp
        def prog(ctx):
            if bpf_xdp_adjust_meta(ctx, -8) != 0:
                return XDP_ABORTED
            meta = ctx.meta
            for i in range(8):
                meta[i] = 0xA0 + i
            if bpf_xdp_adjust_head(ctx, -20) != 0:
                return XDP_ABORTED
            meta = ctx.meta
            if len(meta) != 8 or meta[7] != 0xA7:
                return XDP_DROP
            return XDP_PASS
        """)
    b = run_one(prog, bytes(60))
    assert b.action[0] == XdpAction.XDP_PASS
    m = b.buf[b.data_meta[0]:b.data[0]]
    assert bytes(m) == bytes(range(0xA0, 0xA8)) and int(b.data_end[0] - b.data[0]) == 80


def test_neighbours_untouched_by_head_and_tail_moves(tmp_path):
    prog = load(tmp_path, ADJUST)
    frames = [frame(0, -100), frame(1, 200), frame(0, -300), frame(1, 10**4)]
    b = PacketBatch(len(frames))
    for f in frames:
        b.append(f)
    before = b.buf.copy()
    prog.run_batch(b)
    # bytes outside each packet's own slot are unchanged
    for i in range(b.count):
        s, e = int(b.frame_start[i]), int(b.frame_end[i])
        before[s:e] = b.buf[s:e]
    assert np.array_equal(before, b.buf)


def test_prandom_is_reproducible_from_the_seed(tmp_path):
    prog = load(tmp_path, """
        @xdp
        def prog(ctx):
            pkt = ctx.pkt
            for i in range(8):
                pkt[i] = bpf_get_prandom_u32() & 0xFF
            return XDP_PASS
        """)

    def draws(seed):
        prog.seed_prandom(seed)
        return [run_one(prog, bytes(60)).packet(0)[:8] for _ in range(3)]

    a, b, c = draws(7), draws(7), draws(8)
    assert a == b and a != c
    assert len(set(a)) == 3  # successive packets draw new numbers


@pytest.mark.parametrize("helper", ["bpf_ktime_get_ns", "bpf_ktime_get_coarse_ns"])
def test_ktime_monotonic_or_capture_time(tmp_path, helper):
    prog = load(tmp_path, """
        @xdp
        def prog(ctx):
            t = HELPER()""".replace("HELPER", helper) + """
            pkt = ctx.pkt
            for i in range(8):
                pkt[i] = (t >> (8 * i)) & 0xFF
            return XDP_PASS
        """)
    b = PacketBatch(2)
    b.append(bytes(60), ts_ns=1_700_000_000_123_456_789)
    b.append(bytes(60), ts_ns=1_700_000_000_999_000_000)
    prog.use_capture_time(True)
    prog.run_batch(b)
    got = [int.from_bytes(b.packet(i)[:8], "little") for i in range(2)]
    assert got == [1_700_000_000_123_456_789, 1_700_000_000_999_000_000]
    prog.use_capture_time(False)
    prog.run_batch(b)
    t0, t1 = (int.from_bytes(b.packet(i)[:8], "little") for i in range(2))
    assert 0 < t0 <= t1 < 1_700_000_000_000_000_000  # CLOCK_MONOTONIC, not the epoch
    assert abs(t0 - time.clock_gettime_ns(time.CLOCK_MONOTONIC)) < 10**9


def test_coarse_clock_is_read_every_coarse_every_packets(tmp_path):
    """In a batch, bpf_ktime_get_coarse_ns gives the coarse clock as the loop
    read it every config.COARSE_EVERY packets: packets that each take ~0.3 ms
    span several timer ticks, and the value moves only where the loop reads."""
    from dataplane import config

    CLOCK_MONOTONIC_COARSE = 6  # Linux's clock id (the time module names none)
    prog = load(tmp_path, """
        @xdp
        def prog(ctx):
            x = 0x9E3779B9
            for _ in range(200000):  # ~0.3 ms: no closed form for LLVM to find
                x ^= (x << 13) & 0xFFFFFFFF
                x ^= x >> 17
                x ^= (x << 5) & 0xFFFFFFFF
            t = bpf_ktime_get_coarse_ns()
            pkt = ctx.pkt
            for i in range(8):
                pkt[i] = (t >> (8 * i)) & 0xFF
            pkt[8] = x & 0xFF
            return XDP_PASS
        """)
    n = 3 * config.COARSE_EVERY
    b = PacketBatch(n)
    for _ in range(n):
        b.append(bytes(60))
    before = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)
    prog.run_batch(b)
    after = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)
    got = [int.from_bytes(b.packet(i)[:8], "little") for i in range(n)]
    assert before <= got[0] and got[-1] <= after and got == sorted(got)
    assert all(got[i] == got[i - 1] for i in range(n) if i % config.COARSE_EVERY)
    assert got[-1] > got[0]  # the run spanned ticks: the loop read the clock again


def test_smp_processor_id_is_the_worker(tmp_path):
    prog = load(tmp_path, """
        @xdp
        def prog(ctx):
            return XDP_PASS if bpf_get_smp_processor_id() == 0 else XDP_DROP
        """)
    assert prog.test_run(bytes(60))[0] == XdpAction.XDP_PASS


def test_programs_that_grow_the_head_start_data_into_a_line(tmp_path):
    """A file that prepends headers gets batches whose data starts
    HEAD_LINE_OFFSET bytes into a cache line, so that 40 bytes prepended land in
    the line of the frame's first bytes; the others' data starts a line. Replay
    writes what the program made."""
    import dpkt
    from pathlib import Path
    from dataplane.io.capture import open_capture
    from dataplane.pipeline import VerdictPcaps, replay

    plain = load_program("drop_udp")
    enc = load(tmp_path, """
        @xdp
        def prog(ctx):
            if bpf_xdp_adjust_head(ctx, -40) != 0:
                return XDP_ABORTED
            pkt = ctx.pkt
            if len(pkt) < 40:
                return XDP_ABORTED
            for i in range(40):
                pkt[i] = 0xE0
            return XDP_TX
        """, name="encap40.py")
    assert (plain.line_offset, enc.line_offset) == (0, config.HEAD_LINE_OFFSET)
    for prog, offset in ((plain, 0), (enc, config.HEAD_LINE_OFFSET)):
        b = prog.new_batch(8)
        for k in range(8):
            assert b.append(bytes(range(60 + 7 * k)))
        before = b.buf.ctypes.data + b.data[:8]
        assert all(int(a) % 64 == offset for a in before)
    enc.run_batch(b)
    after = b.buf.ctypes.data + b.data[:8]
    assert list(after // 64) == list(before // 64) and list(after) == list(before - 40)
    small = Path(__file__).resolve().parent.parent / "pcaps" / "small.pcap"
    with open_capture(small) as r:
        stats = replay(r, enc, VerdictPcaps(tmp_path / "out"))
    assert stats.actions[XdpAction.XDP_TX] == stats.packets == 4000
    with open(small, "rb") as f, open(tmp_path / "out" / "tx.pcap", "rb") as g:
        pairs = list(zip(dpkt.pcap.Reader(f), dpkt.pcap.Reader(g)))
    assert len(pairs) == 4000 and all(after == bytes([0xE0] * 40) + before
                                      for (_, before), (_, after) in pairs)


@pytest.mark.parametrize("line_offset, line", [(config.HEAD_LINE_OFFSET, 1), (0, -1), (8, -1)])
def test_loop_fetches_the_line_a_layout_needs_besides_datas(line_offset, line):
    """The loop of a program that prepends headers fetches, besides data's line,
    the next line in its own layout (the headers go on there) and the line in
    front in a batch with data on a line's start (the outer header goes there),
    whoever laid the batch out."""
    from dataplane.kernels.runner import head_line
    b = PacketBatch(4, line_offset=line_offset)
    assert b.append(bytes(60))
    data = b.buf.ctypes.data + int(b.data[0])
    assert (data + head_line(b.buf)) // 64 == data // 64 + line


def test_tailroom_only_for_programs_that_grow_the_tail(tmp_path):
    """Batches keep room behind packets only for files that call bpf_xdp_adjust_tail;
    replaying one that grows every packet by 100 bytes still works end to end."""
    import dpkt
    from pathlib import Path
    from dataplane.io.capture import open_capture
    from dataplane.pipeline import VerdictPcaps, replay

    assert load_program("drop_udp").tailroom == 0
    grow = load(tmp_path, """
        @xdp
        def prog(ctx):
            if bpf_xdp_adjust_tail(ctx, 100) != 0:
                return XDP_ABORTED
            return XDP_PASS
        """, name="grow.py")
    assert grow.tailroom == config.GROW_TAILROOM
    small = Path(__file__).resolve().parent.parent / "pcaps" / "small.pcap"
    with open_capture(small) as r:
        stats = replay(r, grow, VerdictPcaps(tmp_path / "out", snaplen=262144))
    assert stats.actions[XdpAction.XDP_PASS] == stats.packets == 4000
    with open(small, "rb") as a, open(tmp_path / "out" / "pass.pcap", "rb") as b:
        for (_, before), (_, after) in zip(dpkt.pcap.Reader(a), dpkt.pcap.Reader(b)):
            assert after == before + bytes(100)
