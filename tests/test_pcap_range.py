"""Reading a classic pcap in byte ranges (split_pcap + PcapReader(start=, end=)) against dpkt.

The ranges of one split, read one after the other, must give exactly the
records dpkt reads from the whole file; split points are checked against a
plain struct walk of the record headers.
"""

import struct
import subprocess
import sys
from pathlib import Path

import dpkt
import numpy as np
import pytest

from dataplane import config
from dataplane.errors import CaptureError
from dataplane.io.batch import PacketBatch
from dataplane.io.capture import open_capture
from dataplane.io.pcap import PcapReader, split_pcap

ROOT = Path(__file__).resolve().parent.parent
GEN_PY = ROOT / "pcaps" / "gen.py"
US, NS = 0xA1B2C3D4, 0xA1B23C4D


def pcap_bytes(records, magic=US, order="<"):
    """A pcap file built with struct: records are (sec, frac, data[, orig_len])."""
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, 1)]
    for sec, frac, data, *orig in records:
        out.append(struct.pack(order + "IIII", sec, frac, len(data), orig[0] if orig else len(data)))
        out.append(data)
    return b"".join(out)


def dpkt_records(path):
    """(ts_ns, bytes) of every record, as dpkt reads them."""
    with open(path, "rb") as f:
        out = []
        for ts, buf in dpkt.pcap.Reader(f):
            # a Decimal for nanosecond files, a float (exact to the us) else
            ns = round(ts * 1e6) * 1000 if isinstance(ts, float) else int(ts * 10**9)
            out.append((ns, bytes(buf)))
        return out


def boundaries(data, order):
    """Offsets of the records' starts, by walking their headers with struct."""
    out, pos = [], 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from(order + "I", data, pos + 8)[0]
        out.append(pos)
        pos += 16 + caplen
    return out


def read_range(path, start, end, chunk_bytes=config.READ_CHUNK, capacity=64):
    """(ts_ns, bytes) of the records of one range, and the reader (closed)."""
    batch = PacketBatch(capacity)
    out = []
    with PcapReader(path, chunk_bytes, start=start, end=end) as r:
        assert r.range == (start, end) and r.offset == start
        while r.read_batch(batch):
            out += [(int(batch.ts_ns[i]), batch.packet(i)) for i in range(batch.count)]
        assert r.packets == len(out)
        assert r.offset == end or r.warnings  # a truncated last record is left unread
    return out, r


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """gen.py's capture (little-endian, us) and the same records big-endian and in ns."""
    d = tmp_path_factory.mktemp("range")
    le_us = d / "gen.pcap"
    subprocess.run([sys.executable, str(GEN_PY), "-o", str(le_us), "--count", "3000",
                    "--seed", "11"], check=True)
    recs = dpkt_records(le_us)
    rng = np.random.default_rng(3)
    files = {("<", US): le_us}
    for order, magic in ((">", US), ("<", NS), (">", NS)):
        rows = []
        for ts, buf in recs:
            sec, frac = divmod(ts, 10**9)
            if magic == NS:
                frac += int(rng.integers(0, 1000))  # below the microsecond
            else:
                frac //= 1000
            rows.append((sec, frac, buf))
        path = d / f"gen-{'be' if order == '>' else 'le'}-{'ns' if magic == NS else 'us'}.pcap"
        path.write_bytes(pcap_bytes(rows, magic, order))
        files[(order, magic)] = path
    return files


@pytest.mark.parametrize("order,magic", [("<", US), (">", US), ("<", NS), (">", NS)])
@pytest.mark.parametrize("parts", [1, 2, 3, 7, 5000])
def test_ranges_read_back_every_record_once(generated, order, magic, parts):
    path = generated[(order, magic)]
    data = path.read_bytes()
    ranges = split_pcap(path, parts)
    assert 1 <= len(ranges) <= parts
    assert ranges[0][0] == 24 and ranges[-1][1] == len(data)
    assert all(a < b for a, b in ranges)
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
    # split point k: the first record boundary at or after k * size / parts
    bounds = np.array(boundaries(data, order))
    size = len(data)
    want = {int(bounds[np.searchsorted(bounds, -(-k * size // parts))])
            for k in range(1, parts) if -(-k * size // parts) <= bounds[-1]}
    assert [a for a, _ in ranges] == sorted({24} | want)
    got = []
    for start, end in ranges:
        got += read_range(path, start, end)[0]
    assert got == dpkt_records(path)


def test_more_parts_than_records_gives_one_range_per_record(tmp_path):
    rng = np.random.default_rng(5)
    rows = [(1_700_000_000 + i, i, rng.integers(0, 256, int(rng.integers(60, 200)),
                                                 np.uint8).tobytes()) for i in range(40)]
    path = tmp_path / "few.pcap"
    path.write_bytes(pcap_bytes(rows))
    size = path.stat().st_size
    ranges = split_pcap(path, size)  # a split point every byte: every boundary is one
    assert len(ranges) == 40
    assert [a for a, _ in ranges] == boundaries(path.read_bytes(), "<")
    got = []
    for start, end in ranges:
        recs, _ = read_range(path, start, end)
        assert len(recs) == 1
        got += recs
    assert got == dpkt_records(path)


def test_small_chunk_and_open_capture_respect_the_range(generated):
    """A chunk smaller than some records (it grows) and refills stop at the range end."""
    path = generated[(">", NS)]
    want = dpkt_records(path)
    got = []
    for start, end in split_pcap(path, 5):
        got += read_range(path, start, end, chunk_bytes=256, capacity=7)[0]
    assert got == want
    start, end = split_pcap(path, 3)[1]
    batch = PacketBatch(64)
    with open_capture(path, start=start, end=end) as r:
        n = r.read_batch(batch)
        assert n and r.nanosecond and (int(batch.ts_ns[0]), batch.packet(0)) in want
        assert r.range == (start, end) and r.size == path.stat().st_size


def test_empty_range_and_header_only_file(generated, tmp_path):
    path = generated[("<", US)]
    start = split_pcap(path, 2)[1][0]
    assert read_range(path, start, start)[0] == []
    size = path.stat().st_size
    assert read_range(path, size, size)[0] == []
    head = tmp_path / "head.pcap"
    head.write_bytes(pcap_bytes([]))
    assert split_pcap(head, 4) == [(24, 24)]
    assert read_range(head, 24, 24)[0] == []


def one_line(err, path, offset):
    msg = str(err)
    assert "\n" not in msg and str(path) in msg and f"offset {offset}" in msg
    return msg


def test_start_off_a_record_boundary_is_refused(generated):
    path = generated[("<", US)]
    bounds = boundaries(path.read_bytes(), "<")
    for b in bounds[1:4]:
        for start in (b + 1, b + 2, b + 3, b + 8, b + 16 + 20):
            with pytest.raises(CaptureError) as ei:
                PcapReader(path, start=start)
            assert "not a record boundary" in one_line(ei.value, path, start)


@pytest.mark.parametrize("start,end", [(0, None), (23, None), (-5, None), ("size+1", None),
                                       (24, "size+1"), ("b", 100)])
def test_range_outside_the_file_is_refused(generated, start, end):
    path = generated[("<", US)]
    size = path.stat().st_size
    b = boundaries(path.read_bytes(), "<")[5]
    start = {"size+1": size + 1, "b": b}.get(start, start)
    end = {"size+1": size + 1}.get(end, end)
    with pytest.raises(CaptureError) as ei:
        PcapReader(path, start=start, end=end)
    msg = one_line(ei.value, path, start if start in (0, 23, -5, size + 1) else end)
    assert "outside" in msg


def test_end_off_a_record_boundary_is_an_error_after_the_records_before_it(generated):
    path = generated[("<", US)]
    want = dpkt_records(path)
    bounds = boundaries(path.read_bytes(), "<")
    end = bounds[10] + 5
    batch = PacketBatch(64)
    with PcapReader(path, start=24, end=end) as r:
        assert r.read_batch(batch) == 10
        assert [(int(batch.ts_ns[i]), batch.packet(i)) for i in range(10)] == want[:10]
        with pytest.raises(CaptureError) as ei:
            r.read_batch(batch)
    assert "runs past the range end" in one_line(ei.value, path, bounds[10])


def test_fault_ends_the_walk_and_the_last_range_reports_it(tmp_path):
    rng = np.random.default_rng(9)
    rows = [(1_700_000_000, i, rng.integers(0, 256, 300, np.uint8).tobytes()) for i in range(60)]
    good = pcap_bytes(rows)
    bad_at = 24 + 40 * 316  # record 40: caplen beyond MAX_SNAPLEN
    data = bytearray(good)
    struct.pack_into("<I", data, bad_at + 8, config.MAX_SNAPLEN + 1)
    path = tmp_path / "fault.pcap"
    path.write_bytes(bytes(data))
    ranges = split_pcap(path, 6)
    # the record before the fault starts no range: a reader checks two headers
    assert ranges[-1][1] == len(data) and ranges[-1][0] <= bad_at - 316
    assert all(end <= bad_at - 316 for _, end in ranges[:-1])
    got = []
    for start, end in ranges[:-1]:
        got += read_range(path, start, end)[0]
    batch = PacketBatch(256)
    with PcapReader(path, start=ranges[-1][0], end=ranges[-1][1]) as r:
        while True:
            try:
                n = r.read_batch(batch)
            except CaptureError as e:
                msg = one_line(e, path, bad_at)
                break
            got += [(int(batch.ts_ns[i]), batch.packet(i)) for i in range(n)]
    assert "exceeds maximum snap length" in msg
    with open(tmp_path / "good.pcap", "wb") as f:
        f.write(good)
    assert got == dpkt_records(tmp_path / "good.pcap")[:40]
    with pytest.raises(CaptureError) as ei:
        PcapReader(path, start=bad_at - 316)
    assert "or its next record (offset" in one_line(ei.value, path, bad_at - 316)


def test_truncated_last_record_belongs_to_the_last_range(generated, tmp_path):
    src = generated[(">", US)]
    data = src.read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:-7])
    ranges = split_pcap(path, 4)
    assert ranges[-1][1] == len(data) - 7
    got = []
    for start, end in ranges:
        recs, r = read_range(path, start, end)
        got += recs
    assert any("truncated record" in w for w in r.warnings)
    assert got == dpkt_records(src)[:-1]


def test_pcapng_has_no_ranges(tmp_path):
    path = tmp_path / "x.pcapng"
    with open(path, "wb") as f:
        w = dpkt.pcapng.Writer(f)
        w.writepkt(b"\x00" * 60, ts=1.0)
    with pytest.raises(CaptureError) as ei:
        open_capture(path, start=28)
    msg = str(ei.value)
    assert "\n" not in msg and str(path) in msg and "classic pcap" in msg
    with pytest.raises(CaptureError, match="not a pcap file"):
        split_pcap(path, 2)
