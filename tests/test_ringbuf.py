"""BPF_MAP_TYPE_RINGBUF: declarations with the kernel's rules, records written by
programs and read from Python exactly (wrapping around the ring), -EAGAIN and
the drop counter when full, flags, misuse refused at load, pinned rings read
by another process."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dataplane import PacketBatch, ProgramError, XdpAction, load_program
from dataplane.maps import (BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_RINGBUF, BPF_RB_FORCE_WAKEUP,
                            BPF_RB_NO_WAKEUP, BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT,
                            RB_CONSUMER, RB_PRODUCER, Map, MapError, RingBuf)
from dataplane.pin import open_pinned

ROOT = Path(__file__).resolve().parent.parent
EVENT = np.dtype([("seq", "<u4"), ("port", ">u2"), ("delta", "<i8")])


# ---------------------------------------------------------------- from Python

def test_declaration_follows_the_kernel():
    for key in (None, 0, np.dtype("V0")):
        m = Map("events", BPF_MAP_TYPE_RINGBUF, key=key, value=EVENT, max_entries=8192)
        assert isinstance(m, RingBuf) and isinstance(m, Map)
        assert m.type_name == "ringbuf" and m.max_entries == 8192
    assert m.record_bytes == 24  # 8-byte header, 14 bytes of record padded to 16
    assert len(m) == 0 and m.dropped == 0 and m.items() == [] and m.to_json() == []
    empty = m.read()
    assert empty.dtype == EVENT and empty.shape == (0,)


@pytest.mark.parametrize("kwargs, message, err", [
    (dict(max_entries=1000), "a power of 2 and a multiple of 4096, not 1000 (-EINVAL)", 22),
    (dict(max_entries=2048), "a power of 2 and a multiple of 4096, not 2048 (-EINVAL)", 22),
    (dict(max_entries=3 * 4096), "not 12288 (-EINVAL)", 22),
    (dict(key=np.uint32), "ringbuf maps have no key: give key=None", 22),
    (dict(value=np.float32), "value type float32 must be an integer", None),
])
def test_bad_declarations(kwargs, message, err):
    args = dict(key=None, value=EVENT, max_entries=4096)
    args.update(kwargs)
    with pytest.raises(MapError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        Map("events", BPF_MAP_TYPE_RINGBUF, **args)
    assert e.value.errno == err


def test_element_operations_are_not_supported():
    m = Map("events", BPF_MAP_TYPE_RINGBUF, key=None, value=np.uint64, max_entries=4096)
    for op in (lambda: m.lookup(0), lambda: m.update(0, 1), lambda: m.delete(0), m.dump,
               lambda: 0 in m):
        with pytest.raises(MapError, match=r"map 'events': .*a ringbuf has no keys.*"
                                           r"\(-ENOTSUPP\)") as e:
            op()
        assert e.value.errno == 524


# ---------------------------------------------------------------- from programs

PROGRAM = """
import numpy as np
from dataplane import *
from dataplane.maps import *

EVENT = np.dtype([("seq", "<u4"), ("port", ">u2"), ("delta", "<i8")])
events = Map("events", BPF_MAP_TYPE_RINGBUF, key=None, value=EVENT, max_entries=4096)
lens = Map("lens", BPF_MAP_TYPE_RINGBUF, key=0, value=np.uint16, max_entries=4096)
lost = Map("lost", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=np.uint64, max_entries=1)

def emit(pkt, seq):
    # the helper's result goes to byte 5 of the packet; refused records are counted
    r = bpf_ringbuf_output(events, (seq, (pkt[2] << 8) | pkt[3], 0 - seq), pkt[4])
    pkt[5] = r & 0xFF
    if r != 0:
        c = bpf_map_lookup_elem(lost, 0)
        if c is not None:
            c[0] += 1

@xdp
def prog(ctx):
    pkt = ctx.pkt
    if len(pkt) < 8:
        return XDP_ABORTED
    emit(pkt, pkt[0] | (pkt[1] << 8))
    bpf_ringbuf_output(lens, len(pkt), BPF_RB_NO_WAKEUP)
    return XDP_PASS
"""


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    path = tmp_path_factory.mktemp("ringbuf") / "ringbuf_prog.py"
    path.write_text(textwrap.dedent(PROGRAM))
    return load_program(str(path))


def frame(seq, port=0x1234, flags=0, size=20):
    return bytes([seq & 0xFF, seq >> 8, port >> 8, port & 0xFF, flags, 0xEE]) + bytes(size - 6)


def run(prog, frames):
    b = PacketBatch(len(frames))
    for f in frames:
        assert b.append(f)
    prog.run_batch(b)
    assert all(b.action[:len(frames)] == XdpAction.XDP_PASS)
    return [b.packet(i)[5] for i in range(len(frames))]


def reset(prog):
    for name in ("events", "lens", "lost"):
        prog.maps[name].clear()


def test_records_decode_exactly_and_read_drains(prog):
    reset(prog)
    events, lens = prog.maps["events"], prog.maps["lens"]
    assert run(prog, [frame(1, 80), frame(2, 443, size=60), frame(3, 0xFFFF, size=9)]) == [0] * 3
    assert len(events) == 3 and len(lens) == 3
    want = [{"seq": 1, "port": 80, "delta": -1}, {"seq": 2, "port": 443, "delta": -2},
            {"seq": 3, "port": 65535, "delta": -3}]
    assert events.items() == want and events.to_json() == want  # not drained
    peeked = events.peek()
    assert peeked.dtype == EVENT and peeked.tolist() == [(1, 80, -1), (2, 443, -2),
                                                         (3, 65535, -3)]
    got = events.read()
    assert np.array_equal(got, peeked) and len(events) == 0 and events.read().size == 0
    assert lens.read().tolist() == [20, 60, 9] and lens.read().dtype == np.uint16
    assert events.written == 3 and events.dropped == 0


def test_records_wrap_around_the_ring(prog):
    reset(prog)
    events = prog.maps["events"]
    start = int(events.hdr[RB_PRODUCER])  # positions only grow: clear() keeps them
    written = read = 0
    for rnd in range(16):  # ~1,000 records of 24 bytes through 4,096 bytes
        n = 40 + (rnd * 13) % 50
        run(prog, [frame(written + i, port=written + i) for i in range(n)])
        written += n
        got = events.read(25 if rnd % 2 else None)  # part, then all the rest
        seqs = got["seq"].tolist()
        assert seqs == list(range(read, read + len(got)))
        assert got["port"].tolist() == seqs and got["delta"].tolist() == [-s for s in seqs]
        read += len(got)
        assert read + len(events) == written
    assert int(events.hdr[RB_PRODUCER]) - start == 24 * written > 5 * 4096
    assert events.dropped == 0 and prog.maps["lost"].lookup(0) == 0


def test_full_ring_gives_eagain_and_counts_drops(prog):
    reset(prog)
    events, lens = prog.maps["events"], prog.maps["lens"]
    fits = (4096 - 1) // 24
    codes = run(prog, [frame(i) for i in range(200)])
    assert codes == [0] * fits + [(-11) & 0xFF] * (200 - fits)  # -EAGAIN
    assert len(events) == fits and events.dropped == 200 - fits
    assert prog.maps["lost"].lookup(0) == 200 - fits  # the program counted them too
    assert events.read()["seq"].tolist() == list(range(fits))
    assert run(prog, [frame(500)]) == [0]  # room again
    assert events.read()["seq"].tolist() == [500]
    assert len(lens) == 201 and lens.dropped == 0  # 255 records of 16 bytes fit
    events.clear()
    assert events.dropped == 0 and len(events) == 0


def test_flags(prog):
    reset(prog)
    codes = run(prog, [frame(1, flags=BPF_RB_NO_WAKEUP), frame(2, flags=BPF_RB_FORCE_WAKEUP),
                       frame(3, flags=4), frame(4, flags=3)])
    assert codes == [0, 0, (-22) & 0xFF, 0]  # unknown flags: -EINVAL, nothing written
    assert prog.maps["events"].read()["seq"].tolist() == [1, 2, 4]


def test_unchecked_mode_loads_with_rings(prog):
    unchecked = load_program(str(prog.source_path), checked=False)
    reset(unchecked)
    assert unchecked.test_run(frame(9))[0] == XdpAction.XDP_PASS
    assert unchecked.maps["events"].read()["seq"].tolist() == [9]


# ---------------------------------------------------------------- misuse at load

@pytest.mark.parametrize("line, message", [
    ("bpf_map_lookup_elem(events, 0)",
     "map 'events' is a ringbuf: it has no elements for bpf_map_lookup_elem"),
    ("bpf_map_update_elem(events, 0, 1, 0)",
     "map 'events' is a ringbuf: it has no elements for bpf_map_update_elem"),
    ("bpf_ringbuf_output(table, 1, 0)",
     "bpf_ringbuf_output needs a ringbuf map: 'table' is a hash"),
])
def test_misuse_is_rejected_with_file_and_line(tmp_path, line, message):
    path = tmp_path / "misuse.py"
    path.write_text(textwrap.dedent(f"""
        import numpy as np
        from dataplane import *
        from dataplane.maps import *
        events = Map("events", BPF_MAP_TYPE_RINGBUF, key=None, value=np.uint64, max_entries=4096)
        table = Map("table", BPF_MAP_TYPE_HASH, key=np.uint32, value=np.uint64, max_entries=4)

        @xdp
        def prog(ctx):
            {line}
            return XDP_PASS
        """))
    with pytest.raises(ProgramError) as e:
        load_program(str(path))
    assert f"{path}:10: in prog(): {message}" in str(e.value)


@pytest.mark.parametrize("data, message", [
    ("(1, 2)", "takes a record as a tuple of 3 ints (seq, port, delta), not UniTuple"),
    ("7", "takes a record as a tuple of 3 ints (seq, port, delta), not int64"),
])
def test_record_shape_is_checked_at_load(tmp_path, data, message):
    path = tmp_path / "shape.py"
    path.write_text(textwrap.dedent(f"""
        import numpy as np
        from dataplane import *
        from dataplane.maps import *
        EVENT = np.dtype([("seq", "<u4"), ("port", ">u2"), ("delta", "<i8")])
        events = Map("events", BPF_MAP_TYPE_RINGBUF, key=None, value=EVENT, max_entries=4096)

        @xdp
        def prog(ctx):
            bpf_ringbuf_output(events, {data}, 0)
            return XDP_PASS
        """))
    with pytest.raises(ProgramError, match=r"map 'events': bpf_ringbuf_output " + message
                       .replace("(", r"\(").replace(")", r"\)")):
        load_program(str(path))


# ---------------------------------------------------------------- pinned

def test_a_pinned_ring_is_drained_by_another_reader(tmp_path, prog):
    pin = tmp_path / "pinned"
    pinned = load_program(str(prog.source_path), pin=pin)
    b = PacketBatch(3)
    for i in range(3):
        b.append(frame(10 + i, port=7))
    pinned.run_batch(b)
    # another process sees the pending records, decoded, without draining them
    r = subprocess.run([sys.executable, "-m", "dataplane.cli.main", "map", "dump", "events",
                        "--pin", pin, "-j"], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{"seq": s, "port": 7, "delta": -s} for s in (10, 11, 12)]
    # another reader of the same file drains them: the program's ring has room again
    other = open_pinned(pin, "events")
    assert isinstance(other, RingBuf) and other.read()["seq"].tolist() == [10, 11, 12]
    assert len(pinned.maps["events"]) == 0
    pinned.run_batch(b)
    assert other.read()["seq"].tolist() == [10, 11, 12]


def test_reader_skips_discarded_and_waits_at_busy_records():
    """Records an eBPF object reserved (bpf_ringbuf_reserve): one discarded (its
    header's discard bit) is skipped; one still busy (not submitted yet) is not
    read, nor any after it, until it is submitted."""
    ring = Map("held", BPF_MAP_TYPE_RINGBUF, key=None, value=np.uint64, max_entries=4096)
    heads = [8, 8 | BPF_RINGBUF_DISCARD_BIT, 8, 8 | BPF_RINGBUF_BUSY_BIT, 8]
    for i, head in enumerate(heads):
        ring.ring[2 * i], ring.ring[2 * i + 1] = head, 100 + i
    ring.hdr[RB_PRODUCER] = ring.record_bytes * len(heads)
    assert list(ring.peek()) == [100, 102] and len(ring) == 2
    assert list(ring.read()) == [100, 102]
    assert ring.hdr[RB_CONSUMER] == 3 * ring.record_bytes
    ring.ring[6] = 8  # submitted
    assert list(ring.read()) == [103, 104] and len(ring) == 0


def test_control_plane_cannot_declare_a_hash_with_no_key():
    with pytest.raises(MapError):
        Map("h", BPF_MAP_TYPE_HASH, key=np.dtype("V0"), value=np.uint64, max_entries=4)
