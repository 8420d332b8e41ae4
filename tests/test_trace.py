"""bpf_trace_printk: formats checked at load (file:line), lines decoded exactly
with the packet's index in the run, the kernel's return value, a full trace ring
counted, and replay printing the lines (stderr, and "trace" with -j)."""

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import reference
from dataplane import PacketBatch, ProgramError, XdpAction, load_program
from dataplane.io.capture import open_capture
from dataplane.kernels.runner import TRACE_RECORD, TRACE_RING_BYTES
from dataplane.pipeline import replay

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "pcaps" / "small.pcap"
HEADER = "import numpy as np\nfrom dataplane import *\nfrom dataplane.maps import *\n"


def write(tmp_path, body, name="trace_prog.py"):
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def load(tmp_path, body, name="trace_prog.py"):
    return load_program(str(write(tmp_path, body, name)))


# ---------------------------------------------------------------- formats

# Each call's return value (the line's length, or -errno) goes to byte k of the
# packet, so the test checks the kernel's result too.
FORMATS = """
def put(pkt, k, r):
    pkt[k] = r & 0xFF

@xdp
def prog(ctx):
    pkt = ctx.pkt
    if len(pkt) < 16:
        return XDP_ABORTED
    m1 = 0 - 1                  # all 64 bits set
    big = (1 << 32) + 5         # %d reads the low 32 bits, as the kernel's int
    put(pkt, 0, bpf_trace_printk("d=%d i=%i u=%u\\n", m1, big, m1))
    put(pkt, 1, bpf_trace_printk("x=%x X=%X lx=%lx", m1, 0xABC, big))
    put(pkt, 2, bpf_trace_printk("lld=%lld llu=%llu llx=%llx", m1, m1, m1))
    put(pkt, 3, bpf_trace_printk("c=%c%c 100%%", 72, 0x169))
    put(pkt, 4, bpf_printk("no arguments"))
    put(pkt, 5, bpf_trace_printk("ld=%ld li=%li lu=%lu", 0 - 7, 8, 9))
    put(pkt, 6, bpf_trace_printk("pkt[6]=%u len=%d", pkt[6], len(pkt)))
    put(pkt, 7, bpf_trace_printk("d=%d", 0x80000000))   # INT_MIN
    put(pkt, 8, bpf_trace_printk("[%5d|%-5d|%05x]", 42, -42, 255))
    return XDP_PASS
"""

EXPECTED = [
    "d=-1 i=5 u=4294967295\n",
    "x=ffffffff X=ABC lx=100000005",
    "lld=-1 llu=18446744073709551615 llx=ffffffffffffffff",
    "c=Hi 100%",
    "no arguments",
    "ld=-7 li=8 lu=9",
    "pkt[6]=77 len=20",
    "d=-2147483648",
    "[   42|-42  |000ff]",
]


def test_formats_and_arguments_decode_exactly(tmp_path):
    prog = load(tmp_path, FORMATS)
    frame = bytes(6) + bytes([77]) + bytes(13)
    action, out = prog.test_run(frame)
    assert action == XdpAction.XDP_PASS
    lines = prog.trace_lines()
    assert [ln.text for ln in lines] == [t.rstrip("\n") for t in EXPECTED]
    assert {ln.packet for ln in lines} == {0}
    assert str(lines[0]) == "packet 0: d=-1 i=5 u=4294967295"
    # the result is the kernel's: the formatted line's length in bytes (newline included)
    assert list(out[:9]) == [len(t.encode()) & 0xFF for t in EXPECTED]
    assert prog.trace_lines() == []  # drained
    assert prog.trace_formats[0] == "d=%d i=%i u=%u\n" and len(prog.trace_formats) == 9
    assert prog.trace_dropped == 0


def test_trace_from_a_function_of_the_file_and_unchecked_mode(tmp_path):
    path = write(tmp_path, """
        def note(x, y):
            return bpf_trace_printk("x=%d y=%x", x, y)

        @xdp
        def prog(ctx):
            note(len(ctx.pkt), 31)
            return XDP_DROP
        """)
    for checked in (True, False):
        prog = load_program(str(path), checked=checked)
        assert prog.test_run(bytes(5))[0] == XdpAction.XDP_DROP
        assert [str(ln) for ln in prog.trace_lines()] == ["packet 0: x=5 y=1f"]


def test_a_program_that_does_not_trace_has_no_trace_ring():
    prog = load_program("drop_udp")
    assert not prog.traces and prog.trace_lines() == [] and prog.trace_dropped == 0


# ---------------------------------------------------------------- packet indices

INDEX = """
@xdp
def prog(ctx):
    pkt = ctx.pkt
    if len(pkt) > 200:
        bpf_trace_printk("big %d", len(pkt))
    if len(pkt) > 1000:
        bpf_trace_printk("huge")
    return XDP_PASS
"""


def test_packet_indices_are_the_runs_across_batches(tmp_path):
    prog = load(tmp_path, INDEX)
    frames = list(reference.frames_of_capture(SMALL))[:500]
    want = []
    for i, f in enumerate(frames):
        if len(f) > 200:
            want.append(f"trace: packet {i}: big {len(f)}")
        if len(f) > 1000:
            want.append(f"trace: packet {i}: huge")
    assert 20 < len(want) < 500
    out = io.StringIO()
    with open_capture(SMALL) as reader:
        stats = replay(reader, prog, batch_size=7, limit=500, trace_stream=out)
    assert out.getvalue().splitlines() == want
    assert stats.trace_lines == len(want) and stats.trace_dropped == 0
    assert [f"trace: {ln}" for ln in stats.trace] == want[:len(stats.trace)]
    d = stats.to_json()
    assert d["trace"][0] == {"packet": int(want[0].split()[2][:-1]),
                             "text": want[0].split(": ", 2)[2]}


def test_run_batch_base_index_and_start(tmp_path):
    prog = load(tmp_path, INDEX)
    b = PacketBatch(4)
    for size in (300, 10, 1200, 250):
        b.append(bytes(size))
    prog.run_batch(b, base_index=1000)
    prog.run_batch(b, base_index=2000, start=2)
    assert [str(ln) for ln in prog.trace_lines()] == [
        "packet 1000: big 300", "packet 1002: big 1200", "packet 1002: huge",
        "packet 1003: big 250", "packet 2002: big 1200", "packet 2002: huge",
        "packet 2003: big 250"]


# ---------------------------------------------------------------- a full ring

def test_a_full_trace_ring_drops_and_counts(tmp_path):
    prog = load(tmp_path, """
        @xdp
        def prog(ctx):
            pkt = ctx.pkt
            failed = 0
            for i in range(30000):
                if bpf_trace_printk("i=%d", i) < 0:
                    failed += 1
            pkt[0] = failed & 0xFF
            pkt[1] = failed >> 8
            return XDP_PASS
        """)
    action, out = prog.test_run(bytes(20))
    fits = (TRACE_RING_BYTES - 1) // (8 + TRACE_RECORD.itemsize)
    assert action == XdpAction.XDP_PASS
    assert out[0] | (out[1] << 8) == 30000 - fits  # each refused call gave -EAGAIN
    lines = prog.trace_lines()
    assert len(lines) == fits and lines[-1].text == f"i={fits - 1}"
    assert prog.trace_dropped == 30000 - fits
    # the ring was drained: the next packet's lines fit again
    prog.test_run(bytes(20))
    assert len(prog.trace_lines()) == fits
    assert prog.trace_dropped == 2 * (30000 - fits)


# ---------------------------------------------------------------- the checker

@pytest.mark.parametrize("call, message", [
    ('bpf_trace_printk("s=%s", 1)', "format 's=%s': '%s' is not supported (valid: %d %i"),
    ('bpf_trace_printk("p=%p", 1)', "'%p' is not supported"),
    ('bpf_trace_printk("f=%f", 1)', "'%f' is not supported"),
    ('bpf_trace_printk("%.3d", 1)', "'%.3d' is not supported"),
    ('bpf_trace_printk("%+d", 1)', "'%+d' is not supported"),
    ('bpf_trace_printk("%hd", 1)', "'%hd' is not supported"),
    ('bpf_trace_printk("100%", 1)', "'%' at the end is not a directive"),
    ('bpf_trace_printk("%d %d", 1)', "format '%d %d' has 2 directives for 1 argument"),
    ('bpf_trace_printk("none", 1)', "format 'none' has 0 directives for 1 argument"),
    ('bpf_trace_printk("%d%d%d%d", 1, 2, 3, 4)', "at most 3 arguments after the format"),
    ("bpf_trace_printk(7, 1)", "bpf_trace_printk's first argument must be a string constant"),
    ("bpf_trace_printk()", "bpf_trace_printk's first argument must be a string constant"),
    ('bpf_trace_printk("%d", "s")', "str constants are not allowed"),
    ('bpf_printk("%s", 1)', "bpf_printk format '%s'"),
    ('s = "text"', "str constants are not allowed"),
    ('bpf_redirect("eth0", 0)', "str constants are not allowed"),
    ('x = len("abc")', "str constants are not allowed"),
])
def test_bad_formats_and_other_strings_rejected_with_file_and_line(tmp_path, call, message):
    p = write(tmp_path, f"\n@xdp\ndef prog(ctx):\n    {call}\n    return XDP_PASS\n")
    with pytest.raises(ProgramError) as e:
        load_program(str(p))
    assert message in str(e.value)
    assert f"{p}:7: in prog()" in str(e.value)


def test_format_must_be_written_at_the_call(tmp_path):
    p = write(tmp_path, """
        @xdp
        def prog(ctx):
            fmt = 0
            bpf_trace_printk(fmt, 1)
            return XDP_PASS
        """)
    with pytest.raises(ProgramError, match=r"trace_prog.py:8: in prog\(\): bpf_trace_printk's "
                                           r"first argument must be a string constant"):
        load_program(str(p))


def test_non_integer_argument_is_a_load_error(tmp_path):
    p = write(tmp_path, """
        @xdp
        def prog(ctx):
            bpf_trace_printk("%d", 1.5)
            return XDP_PASS
        """)
    with pytest.raises(ProgramError, match=r"bpf_trace_printk: argument 1 is float64, not an "
                                           r"integer"):
        load_program(str(p))


# ---------------------------------------------------------------- the command line

CLI_PROGRAM = """
EVENT = np.dtype([("index", "<u4"), ("length", "<u2")])
events = Map("events", BPF_MAP_TYPE_RINGBUF, key=None, value=EVENT, max_entries=4096)
seen = Map("seen", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=np.uint64, max_entries=1)

@xdp
def prog(ctx):
    n = bpf_map_lookup_elem(seen, 0)
    if n is None:
        return XDP_ABORTED
    if len(ctx.pkt) > 1000:
        bpf_trace_printk("big: %d bytes, %u before", len(ctx.pkt), n[0])
        bpf_ringbuf_output(events, (n[0], len(ctx.pkt)), 0)
    n[0] += 1
    return XDP_PASS
"""


def dp(*args):
    r = subprocess.run([sys.executable, "-m", "dataplane.cli.main", *map(str, args)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r


def test_replay_prints_trace_lines_and_json_has_them(tmp_path):
    path = write(tmp_path, CLI_PROGRAM, "cli_trace.py")
    frames = list(reference.frames_of_capture(SMALL))[:300]
    big = [(i, len(f)) for i, f in enumerate(frames) if len(f) > 1000]
    assert len(big) > 5
    want = [f"big: {n} bytes, {i} before" for i, n in big]
    for run in range(2):  # the second run loads the compiled program from the cache
        r = dp("replay", "-r", SMALL, "-p", path, "-c", 300, "--batch", 64, "--dump-maps", "-j")
        d = json.loads(r.stdout)
        assert d["trace"] == [{"packet": i, "text": t} for (i, _), t in zip(big, want)]
        assert d["trace_lines"] == len(big) and d["trace_dropped"] == 0
        assert d["maps"]["events"] == [{"index": i, "length": n} for i, n in big]
        assert [ln for ln in r.stderr.splitlines() if ln.startswith("trace: ")] == \
            [f"trace: packet {i}: {t}" for (i, _), t in zip(big, want)]
    human = dp("replay", "-r", SMALL, "-p", path, "-c", 300, "--dump-maps")
    assert f"trace lines: {len(big)} (on stderr)" in human.stdout
    assert f"map events: ringbuf, {len(big)} records pending, 0 dropped, 4,096 bytes" \
        in human.stdout
    assert f"trace: packet {big[0][0]}: {want[0]}" in human.stderr
