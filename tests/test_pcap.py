"""Classic pcap reader and writer against dpkt and tcpdump, byte for byte."""

import os
import shutil
import struct
import subprocess

import dpkt
import numpy as np
import pytest

from dataplane.io.batch import PacketBatch
from dataplane.io.capture import open_capture
from dataplane.io.pcap import PcapReader, PcapWriter

US, NS = 0xA1B2C3D4, 0xA1B23C4D
T0 = 1_700_000_000


def frames(n, lo=60, hi=1514, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, int(rng.integers(lo, hi + 1)), np.uint8).tobytes()
            for _ in range(n)]


def pcap_bytes(records, magic=US, order="<", snaplen=65535, linktype=1):
    """A pcap file built with struct: records are (sec, frac, data[, orig_len])."""
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for sec, frac, data, *orig in records:
        out.append(struct.pack(order + "IIII", sec, frac, len(data), orig[0] if orig else len(data)))
        out.append(data)
    return b"".join(out)


def dpkt_ns(ts):
    """dpkt's timestamp in ns: a Decimal for nanosecond files, a float (exact to the us) else."""
    if isinstance(ts, float):
        return round(ts * 1e6) * 1000
    return int(ts * 10**9)


def read_all(reader, capacity=64, buffer_bytes=None):
    """Every packet as (bytes, ts_ns, snap_cut, ifindex), checking each batch's slot layout."""
    batch = PacketBatch(capacity, buffer_bytes)
    out = []
    while True:
        n = reader.read_batch(batch)
        assert n == batch.count <= capacity
        if not n:
            return out
        for i in range(n):
            start = batch.frame_end[i - 1] if i else 0
            assert batch.frame_start[i] == start
            assert batch.data[i] == start + batch.headroom
            # tailroom reaches the next 64-byte boundary, so every data start is aligned
            slack = batch.frame_end[i] - batch.data_end[i] - batch.tailroom
            assert 0 <= slack < 64 and batch.frame_end[i] % 64 == 0
            assert batch.data[i] % 64 == 0
            assert batch.frame_end[i] <= batch.buf.size and batch.rx_queue[i] == 0
            out.append((batch.packet(i), int(batch.ts_ns[i]), int(batch.snap_cut[i]),
                        int(batch.ifindex[i])))


@pytest.mark.parametrize("magic,order", [(US, "<"), (NS, "<"), (US, ">"), (NS, ">")],
                         ids=["us-le", "ns-le", "us-be", "ns-be"])
def test_read_matches_dpkt(tmp_path, magic, order):
    pkts = frames(200)
    scale = 1000 if magic == US else 1
    fracs = [(i * 7919) % (1_000_000 if magic == US else 1_000_000_000) for i in range(200)]
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap_bytes([(T0 + i, f, p) for i, (f, p) in enumerate(zip(fracs, pkts))],
                                magic, order))
    with open_capture(path) as r:
        got = read_all(r, capacity=37)
        assert (r.linktype, r.snaplen, r.nanosecond) == (1, 65535, magic == NS)
        assert r.packets == 200 and r.offset == r.size == path.stat().st_size
        assert r.warnings == []
    with open(path, "rb") as f:
        ref = list(dpkt.pcap.Reader(f))
    assert [g[0] for g in got] == [buf for _, buf in ref]
    assert [g[1] for g in got] == [(T0 + i) * 10**9 + f * scale for i, f in enumerate(fracs)]
    assert [g[1] for g in got] == [dpkt_ns(ts) for ts, _ in ref]
    assert all(g[2] == 0 and g[3] == 0 for g in got)


def test_snap_truncated_records_are_kept(tmp_path):
    pkts = frames(10, 100, 200)
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap_bytes([(T0, 0, p[:96], len(p)) for p in pkts], snaplen=96))
    with PcapReader(path) as r:
        got = read_all(r)
        assert [g[0] for g in got] == [p[:96] for p in pkts]
        assert [g[2] for g in got] == [len(p) - 96 for p in pkts]
        assert r.warnings == ["10 of 10 records shorter than on the wire (cut by the snap length)"]


def test_small_chunk_and_batches_refill_across_records(tmp_path):
    pkts = frames(300, 1400, 1514, seed=1)
    path = tmp_path / "many.pcap"
    path.write_bytes(pcap_bytes([(T0 + i, i, p) for i, p in enumerate(pkts)]))
    with open_capture(path, chunk_bytes=4096) as r:
        batch = PacketBatch(7)
        sizes, got = [], []
        while n := r.read_batch(batch):
            sizes.append(n)
            got += [batch.packet(i) for i in range(n)]
        assert r._chunk.size == 4096  # bounded: the chunk never grew
    assert got == pkts
    assert sizes == [7] * 42 + [6]
    assert batch.buf.size == 7 * (batch.slot_overhead + 2048)


def test_batch_stops_when_its_buffer_is_full(tmp_path):
    pkts = frames(20, 1000, 1000)
    path = tmp_path / "full.pcap"
    path.write_bytes(pcap_bytes([(T0, 0, p) for p in pkts]))
    with PcapReader(path) as r:
        batch = PacketBatch(16, buffer_bytes=3 * 1512 + 100)
        sizes = []
        while n := r.read_batch(batch):
            sizes.append(n)
    assert sizes == [3] * 6 + [2]


def test_record_larger_than_chunk_and_batch_buffer(tmp_path):
    pkts = [b"a" * 100, b"j" * 9000, b"b" * 100]
    path = tmp_path / "jumbo.pcap"
    path.write_bytes(pcap_bytes([(T0, 0, p) for p in pkts]))
    with open_capture(path, chunk_bytes=4096) as r:
        got = read_all(r, capacity=4, buffer_bytes=2048)
    assert [g[0] for g in got] == pkts


def test_reread_microsecond_file_is_byte_identical(tmp_path):
    src, dst = tmp_path / "src.pcap", tmp_path / "dst.pcap"
    with open(src, "wb") as f:
        w = dpkt.pcap.Writer(f, snaplen=65535)
        for i, p in enumerate(frames(500, seed=2)):
            w.writepkt(p, ts=T0 + i + (i * 1013 % 1_000_000) / 1e6)
    with PcapReader(src, chunk_bytes=8192) as r, \
            PcapWriter(dst, nanosecond=False, snaplen=r.snaplen, stage_bytes=4096) as w:
        batch = PacketBatch(33)
        while n := r.read_batch(batch):
            w.write_batch(batch, np.arange(n))
    assert (w.packets, w.bytes) == (500, src.stat().st_size)
    assert dst.read_bytes() == src.read_bytes()


def test_write_batch_as_the_program_left_it(tmp_path):
    batch = PacketBatch(8)
    pkts = frames(8, seed=3)
    for i, p in enumerate(pkts):
        batch.append(p, ts_ns=T0 * 10**9 + i * 1_000_000_123, snap_cut=i)
    batch.data[2] += 14            # adjust_head: decapsulated
    batch.data_end[3] -= 4         # adjust_tail: trimmed
    path = tmp_path / "out.pcap"
    for dtype in (np.uint32, np.int64):
        with PcapWriter(path) as w:
            w.write_batch(batch, np.array([3, 2, 5, 7], dtype), 3)
        assert w.packets == 3
        with open(path, "rb") as f:
            ref = dpkt.pcap.Reader(f)
            assert ref.datalink() == 1 and ref.snaplen == 262144
            recs = list(ref)
        assert [buf for _, buf in recs] == [pkts[3][:-4], pkts[2][14:], pkts[5]]
        with PcapReader(path) as r:
            got = read_all(r)
            assert r.nanosecond
        assert [g[1] for g in got] == [T0 * 10**9 + i * 1_000_000_123 for i in (3, 2, 5)]
        assert [g[2] for g in got] == [3, 2, 5]   # orig_len = length + snap_cut
    with PcapWriter(path) as w, pytest.raises(IndexError):
        w.write_batch(batch, np.array([9]))


def test_writer_snaplen_and_frames_larger_than_staging(tmp_path):
    path = tmp_path / "big.pcap"
    pkts = frames(50, 60, 3000, seed=4) + [b"z" * 20000]
    with PcapWriter(path, snaplen=2500, stage_bytes=1024) as w:
        for i, p in enumerate(pkts):
            w.write(p, ts_ns=i * 1000)
        batch = PacketBatch(1, buffer_bytes=30000)
        batch.append(b"y" * 20000, ts_ns=5)
        w.write_batch(batch, np.array([0]), 1)
    with PcapReader(path) as r:
        got = read_all(r, buffer_bytes=8192)
    expect = pkts + [b"y" * 20000]
    assert [g[0] for g in got] == [p[:2500] for p in expect]
    assert [g[2] for g in got] == [max(len(p) - 2500, 0) for p in expect]
    assert w.bytes == path.stat().st_size and w.packets == 52


def _tcpdump():
    return shutil.which("tcpdump") or next(
        (p for p in ("/usr/sbin/tcpdump", "/usr/bin/tcpdump") if os.path.exists(p)), None)


def _tcpdump_view(path, nano):
    """(timestamp string, bytes) per packet as tcpdump prints them with -tt -xx."""
    cmd = [_tcpdump(), "-r", str(path), "-nn", "-tt", "-xx"]
    if nano:
        cmd.append("--time-stamp-precision=nano")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    pkts = []
    for line in out.splitlines():
        if not line.startswith("\t"):
            pkts.append([line.split()[0], ""])
        else:
            pkts[-1][1] += "".join(line.split(":", 1)[1].split())
    return [(ts, bytes.fromhex(hx)) for ts, hx in pkts]


@pytest.mark.skipif(_tcpdump() is None, reason="tcpdump is not installed")
@pytest.mark.parametrize("nano", [False, True], ids=["us", "ns"])
def test_tcpdump_reads_our_files(tmp_path, nano):
    path = tmp_path / "ours.pcap"
    pkts = frames(40, seed=5)
    stamps = [T0 * 10**9 + i * 123_456_789 for i in range(40)]
    with PcapWriter(path, nanosecond=nano, stage_bytes=4096) as w:
        for p, t in zip(pkts, stamps):
            w.write(p, ts_ns=t)
    view = _tcpdump_view(path, nano)
    with open(path, "rb") as f:
        ref = list(dpkt.pcap.Reader(f))
    assert len(view) == len(ref) == 40
    digits = 9 if nano else 6
    assert [ts for ts, _ in view] == [
        f"{t // 10**9}.{(t % 10**9) // 10**(9 - digits):0{digits}d}" for t in stamps]
    assert [int(ts.replace(".", "")) * 10**(9 - digits) for ts, _ in view] == \
        [dpkt_ns(ts) for ts, _ in ref]
    assert [b for _, b in view] == [buf for _, buf in ref] == pkts


def test_writer_replaces_only_plain_files(tmp_path):
    """An existing output file is replaced; a symlink's target or a device is written in place."""
    import os
    from dataplane.io.pcap import PcapWriter
    target = tmp_path / "target.pcap"
    target.write_bytes(b"old")
    link = tmp_path / "link.pcap"
    link.symlink_to(target)
    with PcapWriter(link) as w:
        w.write(b"\x00" * 60)
    assert link.is_symlink() and target.stat().st_size == 24 + 16 + 60
    with PcapWriter(os.devnull) as w:
        w.write(b"\x00" * 60)
    assert os.path.exists(os.devnull) and not os.path.isfile(os.devnull)
