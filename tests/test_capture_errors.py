"""Malformed captures: a one-line CaptureError naming offset and packet, or a warning.

Packets before a fault are always delivered (and counted) first.
"""

import os
import struct

import numpy as np
import pytest

from dataplane.errors import CaptureError
from dataplane.io.batch import PacketBatch
from dataplane.io.capture import open_capture
from dataplane.io.pcap import PcapReader, PcapWriter
from dataplane.io.pcapng import PcapngReader

HDR = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def rec(data, caplen=None, orig=None, ts=(1, 2)):
    caplen = len(data) if caplen is None else caplen
    return struct.pack("<IIII", *ts, caplen, caplen if orig is None else orig) + data


GOOD = [bytes([i]) * (60 + i) for i in range(5)]


def write(tmp_path, data, name="bad.pcap"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def drain(reader, capacity=2):
    """Read batch after batch; return (packets delivered, the error or None)."""
    batch, got = PacketBatch(capacity), []
    try:
        while n := reader.read_batch(batch):
            got += [batch.packet(i) for i in range(n)]
    except CaptureError as e:
        return got, e
    return got, None


def check_message(e, path, text, offset=None, index=None):
    msg = str(e)
    assert "\n" not in msg and msg.startswith(f"{path}")
    assert msg[len(str(path)):] == msg[len(str(path)):].lower()
    assert text in msg, msg
    assert (e.path, e.offset, e.index) == (str(path), offset, index)


# -- opening --------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(CaptureError) as ei:
        open_capture(tmp_path / "nope.pcap")
    check_message(ei.value, tmp_path / "nope.pcap", ": no such file")


def test_directory(tmp_path):
    with pytest.raises(CaptureError) as ei:
        open_capture(tmp_path)
    check_message(ei.value, tmp_path, "is a directory")


def test_named_pipe_and_device(tmp_path):
    """A FIFO given as a capture: open() waited for a writer for ever (replay
    and bench hung). It is refused unopened, as a device is (/dev/null's size
    0 said "empty file"); in a child process, so that a hang fails the test."""
    import subprocess
    import sys
    fifo = tmp_path / "cap.pcap"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a named pipe"), ("/dev/null", "a device")):
        run = subprocess.run([sys.executable, "-c", "import sys\n"
                              "from dataplane.io.capture import open_capture, CaptureError\n"
                              "try:\n    open_capture(sys.argv[1])\n"
                              "except CaptureError as e:\n    print(e)\n", str(path)],
                             capture_output=True, text=True, timeout=120)
        assert run.stdout.strip() == f"{path}: is {kind}, not a capture file", run.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable(tmp_path):
    path = write(tmp_path, HDR)
    path.chmod(0)
    with pytest.raises(CaptureError) as ei:
        open_capture(path)
    check_message(ei.value, path, "permission denied")


def test_empty_file(tmp_path):
    path = write(tmp_path, b"")
    for opener in (open_capture, PcapReader, PcapngReader):
        with pytest.raises(CaptureError) as ei:
            opener(path)
        check_message(ei.value, path, "empty file")


def test_random_bytes_and_wrong_magic(tmp_path):
    path = write(tmp_path, np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    with pytest.raises(CaptureError) as ei:
        open_capture(path)
    check_message(ei.value, path, "not a pcap or pcapng file (magic 0x", offset=0)
    with pytest.raises(CaptureError, match="not a pcap file"):
        PcapReader(path)
    with pytest.raises(CaptureError, match="not a pcapng file"):
        PcapngReader(path)


def test_short_files(tmp_path):
    path = write(tmp_path, b"\xd4\xc3")
    with pytest.raises(CaptureError) as ei:
        open_capture(path)
    check_message(ei.value, path, "truncated file header: 2 of 4", offset=0)
    path = write(tmp_path, HDR[:10])
    with pytest.raises(CaptureError) as ei:
        open_capture(path)
    check_message(ei.value, path, "truncated file header: 10 of 24 bytes", offset=0)


def test_unknown_link_type(tmp_path):
    path = write(tmp_path, HDR[:20] + struct.pack("<I", 101) + rec(GOOD[0]))
    with pytest.raises(CaptureError) as ei:
        open_capture(path)
    check_message(ei.value, path, "link type 101 is not supported", offset=20)


def test_unsupported_version(tmp_path):
    path = write(tmp_path, struct.pack("<IHHiIII", 0xA1B2C3D4, 3, 0, 0, 0, 65535, 1))
    with pytest.raises(CaptureError, match="unsupported pcap version 3.0"):
        open_capture(path)


# -- records ----------------------------------------------------------------------
OFF3 = 24 + sum(16 + len(p) for p in GOOD[:3])


@pytest.mark.parametrize("bad,text", [
    (rec(b"", caplen=0, orig=60), "zero-length record (original length 60)"),
    (rec(b"x" * 64, caplen=300000, orig=300000), "record length 300000 exceeds maximum snap length 262144"),
    (rec(b"x" * 64, caplen=64, orig=10), "record length 64 exceeds original length 10"),
], ids=["zero-length", "oversized", "caplen-over-orig"])
def test_bad_record_after_good_ones(tmp_path, bad, text):
    path = write(tmp_path, HDR + b"".join(rec(p) for p in GOOD[:3]) + bad + rec(GOOD[3]))
    with open_capture(path) as r:
        got, err = drain(r)
        assert got == GOOD[:3] and r.packets == 3
        check_message(err, path, text, offset=OFF3, index=3)
        with pytest.raises(CaptureError):   # it stays failed
            r.read_batch(PacketBatch(2))


def test_error_in_first_batch_raises_at_once(tmp_path):
    path = write(tmp_path, HDR + rec(b"", caplen=0))
    with open_capture(path) as r, pytest.raises(CaptureError) as ei:
        r.read_batch(PacketBatch(4))
    check_message(ei.value, path, "zero-length record", offset=24, index=0)


def test_garbage_after_header(tmp_path):
    garbage = np.random.default_rng(1).integers(0, 256, 4000, np.uint8).tobytes()
    path = write(tmp_path, HDR + rec(GOOD[0]) + garbage)
    with open_capture(path) as r:
        got, err = drain(r)
    assert got == GOOD[:1]
    assert err is not None and (err.offset, err.index) == (24 + 16 + 60, 1)


@pytest.mark.parametrize("cut", [5, 16 + 30], ids=["in-header", "in-data"])
def test_truncated_last_record_is_a_warning(tmp_path, cut):
    body = b"".join(rec(p) for p in GOOD[:4])
    path = write(tmp_path, HDR + body + rec(GOOD[4])[:cut])
    with open_capture(path) as r:
        got, err = drain(r, capacity=3)
        assert err is None and got == GOOD[:4] and r.packets == 4
        need = 16 if cut < 16 else 16 + len(GOOD[4])
        assert r.warnings == [f"truncated record at end of file: offset {24 + len(body)}, "
                              f"packet 4 ({cut} of {need} bytes present)"]
        assert r.read_batch(PacketBatch(2)) == 0


def test_bench_and_lb_trace_warn_of_a_truncated_last_record(tmp_path, capsys):
    """replay warned of the truncated last record; bench and lb trace measured
    and traced the packets before it without a word. (In this process: in a
    child each compiled its program again, 23 s of the suite.)"""
    from pathlib import Path
    from dataplane.cli.main import main
    example = Path(__file__).resolve().parents[1] / "programs" / "l4lb" / "example.toml"
    path = write(tmp_path, HDR + b"".join(rec(p) for p in GOOD[:4]) + rec(GOOD[4])[:20])
    for args in (["bench", "-p", "drop_udp", "-r", path, "--repeat", "1"],
                 ["lb", "trace", "-r", path, "--config", example]):
        assert main([str(a) for a in args]) == 0
        err = capsys.readouterr().err
        assert "warning: truncated record at end of file" in err, (args, err)


# -- pcapng ------------------------------------------------------------------------
def block(btype, body, length=None, trailer=None):
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return (struct.pack("<II", btype, n if length is None else length) + body
            + struct.pack("<I", n if trailer is None else trailer))


SHB = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(linktype=1):
    return block(1, struct.pack("<HHI", linktype, 0, 0))


def epb(ifid, data, **kw):
    return block(6, struct.pack("<IIIII", ifid, 0, 1, len(data), len(data)) + data, **kw)


def ng_good(n=3, ifid=0):
    return b"".join(epb(ifid, p) for p in GOOD[:n])


@pytest.mark.parametrize("bad,text", [
    (epb(0, b"x" * 60, length=90), "enhanced packet block length 90 is not a multiple of 4"),
    (epb(0, b"x" * 60, length=24, trailer=24), "enhanced packet block length 24 is below the minimum 32"),
    (epb(0, b"x" * 60, trailer=96), "trailing block length 96 differs from leading length 92"),
    (epb(2, b"x" * 60), "enhanced packet block on interface 2, but the section describes 2 interface(s)"),
    (epb(1, b"x" * 60), "packet on interface 1 with link type 101"),
    (block(6, struct.pack("<IIIII", 0, 0, 0, 500, 500) + b"x" * 60),
     "record length 500 does not fit in enhanced packet block length 92"),
    (epb(0, b""), "zero-length record"),
    (block(3, struct.pack("<I", 70)), "zero-length record"),
], ids=["length-not-multiple-of-4", "length-below-minimum", "trailer", "undefined-interface",
        "link-type", "caplen-beyond-block", "zero-length", "spb-zero-length"])
def test_pcapng_faults_after_good_packets(tmp_path, bad, text):
    head = SHB + idb() + idb(101)
    path = write(tmp_path, head + ng_good() + bad + ng_good(), "bad.pcapng")
    with open_capture(path) as r:
        got, err = drain(r)
    assert got == GOOD[:3]
    check_message(err, path, text, offset=len(head + ng_good()), index=3)


def test_pcapng_spb_without_interface(tmp_path):
    path = write(tmp_path, SHB + block(3, struct.pack("<I", 4) + b"abcd"), "spb.pcapng")
    with open_capture(path) as r:
        got, err = drain(r)
    assert got == []
    check_message(err, path, "simple packet block on interface 0, but the section describes 0",
                  offset=len(SHB), index=0)


def test_pcapng_bad_section_headers(tmp_path):
    path = write(tmp_path, SHB[:20], "short.pcapng")
    with pytest.raises(CaptureError) as ei:
        open_capture(path)
    check_message(ei.value, path, "truncated section header block", offset=0)
    bom = SHB[:8] + b"\x11\x22\x33\x44" + SHB[12:]
    path = write(tmp_path, bom + idb(), "bom.pcapng")
    with pytest.raises(CaptureError, match="bad byte-order magic in section header block"):
        open_capture(path)
    v2 = SHB[:12] + struct.pack("<H", 2) + SHB[14:]
    path = write(tmp_path, v2, "v2.pcapng")
    with pytest.raises(CaptureError, match="unsupported pcapng version 2.0"):
        open_capture(path)
    # A second section whose IDB is broken: the first section's packets come first.
    path = write(tmp_path, SHB + idb() + ng_good() + SHB + idb()[:-4] + b"\0\0\0\0", "s2.pcapng")
    with open_capture(path) as r:
        got, err = drain(r)
    assert got == GOOD[:3]
    check_message(err, path, "trailing block length 0 differs from leading length 20",
                  offset=len(SHB + idb() + ng_good() + SHB), index=3)


def test_pcapng_huge_packet_block_is_an_error(tmp_path):
    path = write(tmp_path, SHB + idb() + ng_good(1) + epb(0, b"x" * 64, length=8 << 20)
                 + b"\0" * (8 << 20), "huge.pcapng")
    with PcapngReader(path, chunk_bytes=4096) as r:
        got, err = drain(r)
        assert r._chunk.size == 4096
    assert got == GOOD[:1]
    check_message(err, path, "enhanced packet block length 8388608 is too large",
                  offset=len(SHB + idb() + ng_good(1)), index=1)


@pytest.mark.parametrize("cut", [6, 40], ids=["in-header", "in-body"])
def test_pcapng_truncated_last_block_is_a_warning(tmp_path, cut):
    head = SHB + idb() + ng_good(4)
    path = write(tmp_path, head + epb(0, GOOD[4])[:cut], "cut.pcapng")
    with open_capture(path, chunk_bytes=256) as r:
        got, err = drain(r, capacity=3)
        assert err is None and got == GOOD[:4] and r.packets == 4
        need = 8 if cut < 8 else len(epb(0, GOOD[4]))
        assert r.warnings == [f"truncated record at end of file: offset {len(head)}, packet 4"
                              f" ({cut} of {need} bytes present)"]


# -- writer ------------------------------------------------------------------------
def test_writer_errors(tmp_path):
    with pytest.raises(CaptureError, match=r"x\.pcap: cannot create: no such file or directory"):
        PcapWriter(tmp_path / "missing" / "x.pcap")
    if os.path.exists("/dev/full"):
        w = PcapWriter("/dev/full")
        w.write(b"x" * 60)
        with pytest.raises(CaptureError, match="write failed: no space left on device"):
            w.close()
