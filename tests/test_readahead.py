"""Capture readers reading ahead (io/capture.py, io/background.py) against dpkt
and scapy: small chunks and a small reserve make every refill a swap of read-
ahead buffers, records cut by a chunk's end, and tails longer than the reserve
(read again), so the packets read must be exactly those the oracles read."""

import os
import signal
import struct

import dpkt
import numpy as np
import pytest
from scapy.layers.l2 import Ether
from scapy.utils import PcapNgWriter, RawPcapNgReader

from dataplane.errors import CaptureError
from dataplane.io import capture
from dataplane.io.background import READAHEAD, WRITEBACK
from dataplane.io.batch import PacketBatch
from dataplane.io.capture import CaptureReader, open_capture
from dataplane.io.pcap import PcapReader, split_pcap

T0 = 1_700_000_000
RESERVE = 2048


@pytest.fixture
def swaps(monkeypatch):
    """Read-ahead on for any chunk, a 2 KiB reserve; counts the swaps taken
    and the read-aheads wasted (tail or record too long)."""
    monkeypatch.setattr(capture, "READ_AHEAD_MIN", 0)
    monkeypatch.setattr(capture, "READ_RESERVE", RESERVE)
    count = {"taken": 0, "wasted": 0}
    take = CaptureReader._take_ahead

    def counted(self, need):
        pending = self._ahead is not None
        ok = take(self, need)
        if pending:
            count["taken" if ok else "wasted"] += 1
        return ok
    monkeypatch.setattr(CaptureReader, "_take_ahead", counted)
    return count


def frames(n, seed, jumbo_every=0):
    """Random frames of 60..1514 bytes; every ``jumbo_every``-th one 9000 bytes
    (longer than the reserve: cut by a chunk's end it is read again)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        size = 9000 if jumbo_every and i % jumbo_every == jumbo_every - 1 else \
            int(rng.integers(60, 1515))
        out.append(rng.integers(0, 256, size, np.uint8).tobytes())
    return out


def write_pcap(path, pkts, magic=0xA1B2C3D4, order="<"):
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)]
    for i, p in enumerate(pkts):
        out.append(struct.pack(order + "IIII", T0 + i, i, len(p), len(p)) + p)
    path.write_bytes(b"".join(out))


def read_all(reader, capacity=7):
    """(ts_ns, bytes) of every packet, in batches of ``capacity``."""
    batch, got = PacketBatch(capacity), []
    while n := reader.read_batch(batch):
        got += [(int(batch.ts_ns[i]), batch.packet(i)) for i in range(n)]
    return got


def dpkt_records(path):
    with open(path, "rb") as f:
        return [(round(ts * 1e6) * 1000 if isinstance(ts, float) else int(ts * 10**9),
                 bytes(buf)) for ts, buf in dpkt.pcap.Reader(f)]


@pytest.mark.parametrize("chunk", [4096, 6000, 20000])
@pytest.mark.parametrize("magic,order", [(0xA1B2C3D4, "<"), (0xA1B23C4D, ">")])
def test_pcap_read_ahead_gives_the_records_dpkt_reads(tmp_path, swaps, chunk, magic, order):
    path = tmp_path / "c.pcap"
    write_pcap(path, frames(400, seed=chunk, jumbo_every=37), magic, order)
    with open_capture(path, chunk_bytes=chunk) as r:
        got = read_all(r)
        assert not r.warnings
    assert got == dpkt_records(path)
    assert swaps["taken"] > 10  # the refills did come from the read-ahead
    assert swaps["wasted"] > 0  # and a jumbo record cut by a chunk's end was read again


def test_ranges_read_ahead_stop_at_their_ends(tmp_path, swaps):
    path = tmp_path / "r.pcap"
    write_pcap(path, frames(600, seed=5, jumbo_every=50))
    got = []
    for start, end in split_pcap(path, 3):
        with PcapReader(path, chunk_bytes=5000, start=start, end=end) as r:
            got += read_all(r, capacity=5)
            assert r.offset == end
    assert got == dpkt_records(path)
    assert swaps["taken"] > 10


def test_pcapng_read_ahead_gives_the_packets_scapy_reads(tmp_path, swaps):
    path = str(tmp_path / "c.pcapng")
    pkts = frames(300, seed=9, jumbo_every=41)
    w = PcapNgWriter(path)
    for i, p in enumerate(pkts):
        e = Ether(p)  # (random bytes: scapy keeps them as they are)
        e.time = T0 + i
        w.write(e)
    w.close()
    with open_capture(path, chunk_bytes=5000) as r:
        got = [b for _, b in read_all(r)]
    assert got == [bytes(b) for b, _ in RawPcapNgReader(path)] == pkts
    assert swaps["taken"] > 10


def test_a_truncated_last_record_warns_as_without_read_ahead(tmp_path, swaps):
    path = tmp_path / "t.pcap"
    pkts = frames(200, seed=3)
    write_pcap(path, pkts)
    data = path.read_bytes()
    path.write_bytes(data[:-100])  # the last record loses its last 100 bytes
    with open_capture(path, chunk_bytes=4096) as r:
        got = read_all(r)
        assert len(r.warnings) == 1 and "truncated record at end of file" in r.warnings[0]
        assert f"packet {len(pkts) - 1}" in r.warnings[0]
    assert [b for _, b in got] == pkts[:-1]


def test_close_waits_for_the_read_ahead(tmp_path, swaps):
    path = tmp_path / "c.pcap"
    write_pcap(path, frames(200, seed=4))
    r = open_capture(path, chunk_bytes=4096)
    assert r.read_batch(PacketBatch(3)) == 3
    job = r._ahead[0]  # reading the next chunk now
    r.close()
    assert job.done.is_set() and r._ahead is None and r._f is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.parametrize("lane", [READAHEAD, WRITEBACK], ids=["readahead", "writeback"])
def test_a_forked_child_gets_its_own_lane_thread(lane):
    """A lane used before fork() serves the child too (its thread is not
    inherited: without a new one the child's first job would wait forever)."""
    assert lane.submit(lambda: 1).wait() == 1  # the parent's thread runs
    pid = os.fork()
    if pid == 0:  # the child: exit 0 when the job ran, 3 when it hung
        signal.alarm(10)
        signal.signal(signal.SIGALRM, lambda *_: os._exit(3))
        os._exit(0 if lane.submit(lambda: 2).wait() == 2 else 4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("ahead", [True, False], ids=["read-ahead", "synchronous"])
def test_a_failing_read_is_one_capture_error_after_the_packets_before(
        tmp_path, monkeypatch, swaps, ahead):
    """An I/O error (EIO) on the fourth read, in the read-ahead thread or not:
    the packets read before it come out, then a CaptureError naming the file,
    the reason and the offset; the reader closes cleanly."""
    if not ahead:
        monkeypatch.setattr(capture, "READ_AHEAD_MIN", 1 << 30)
    path = tmp_path / "e.pcap"
    pkts = frames(100, seed=6)
    write_pcap(path, pkts)
    real, calls = os.preadv, []

    def failing(fd, buffers, offset):
        calls.append(offset)
        if len(calls) == 4:
            raise OSError(5, "Input/output error")
        return real(fd, buffers, offset)
    monkeypatch.setattr(os, "preadv", failing)
    got, batch = [], PacketBatch(1000)
    with open_capture(path, chunk_bytes=4096) as r:
        with pytest.raises(CaptureError) as err:
            while n := r.read_batch(batch):
                got += [batch.packet(i) for i in range(n)]
    assert str(err.value) == f"{path} (offset {calls[3]}): read failed: input/output error"
    assert got == pkts[:len(got)] and 0 < len(got) < len(pkts)
