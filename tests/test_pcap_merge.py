"""merge_pcaps (mergecap): a k-way merge by timestamp in bounded memory.
Oracles: heapq.merge over the records as dpkt reads them, and tracemalloc."""

import decimal
import heapq
import struct
import tracemalloc

import dpkt
import numpy as np
import pytest

from dataplane.errors import CaptureError
from dataplane.io.pcap import PcapWriter
from dataplane.io.pcap_merge import merge_pcaps


def _source(path, stamps, seed, nanosecond=True, snaplen=262144):
    """A pcap of frames at ``stamps`` (ns), random bytes and lengths; returns
    [(ts_ns, frame)] in file order."""
    rng = np.random.default_rng(seed)
    records = [(int(t), rng.integers(0, 256, int(rng.integers(60, 1515)), np.uint8).tobytes())
               for t in stamps]
    with PcapWriter(path, nanosecond=nanosecond, snaplen=snaplen) as w:
        for t, frame in records:
            w.write(frame, t)
    return records


def _read(path):
    """[(ts_ns, frame)] as dpkt reads them (a nanosecond file's times are Decimals)."""
    with open(path, "rb") as f:
        r = dpkt.pcap.Reader(f)
        nano = isinstance(r._divisor, decimal.Decimal)
        return [(int(ts * 10**9) if nano else round(ts * 1e6) * 1000, bytes(b)) for ts, b in r]


def _stamps(rng, n, start=1_700_000_000 * 10**9):
    # increasing, with ties inside the file and with the other files (a coarse grid)
    return start + np.sort(rng.integers(0, max(n // 2, 1), n)) * 1000


@pytest.mark.parametrize("window, stage", [(1 << 20, 8 << 20), (4096, 8192), (1600, 1600)],
                         ids=["default", "small", "one-record"])
def test_merge_equals_heapq_merge(tmp_path, window, stage):
    rng = np.random.default_rng(1)
    sources, want = [], []
    for k, n in enumerate((700, 0, 1, 450, 900)):
        p = tmp_path / f"s{k}.pcap"
        want.append(_source(p, _stamps(rng, n), seed=k))
        sources.append(p)
    # mergecap's rule: the earliest next record, ties to the earlier source
    expected = [rec for _, _, rec in heapq.merge(
        *[[(t, k, (t, b)) for t, b in recs] for k, recs in enumerate(want)])]
    n = merge_pcaps(sources, tmp_path / "out.pcap", window_bytes=window, stage_bytes=stage)
    assert n == len(expected) == 2051
    assert _read(tmp_path / "out.pcap") == expected


def test_a_source_out_of_order_keeps_its_order(tmp_path):
    a = _source(tmp_path / "a.pcap", [50, 10, 30], seed=1)  # goes back in time
    b = _source(tmp_path / "b.pcap", [20, 40], seed=2)
    merge_pcaps([tmp_path / "a.pcap", tmp_path / "b.pcap"], tmp_path / "out.pcap")
    got = _read(tmp_path / "out.pcap")
    # heads compared as mergecap does: b's 20 and 40 go before a's 50, then a in its order
    assert got == [b[0], b[1], a[0], a[1], a[2]]


def test_memory_is_windows_not_files(tmp_path):
    rng = np.random.default_rng(2)
    paths = []
    for k in range(4):
        paths.append(tmp_path / f"s{k}.pcap")
        _source(paths[-1], _stamps(rng, 6000), seed=k)  # ~4.6 MB each
    total = sum(p.stat().st_size for p in paths)
    tracemalloc.start()
    try:
        merge_pcaps(paths, tmp_path / "out.pcap", window_bytes=64 << 10, stage_bytes=256 << 10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert total > 16 << 20 and peak < 1 << 20, (total, peak)
    assert (tmp_path / "out.pcap").stat().st_size == total - 3 * 24


def test_microsecond_sources(tmp_path):
    a = _source(tmp_path / "a.pcap", [1000, 3000, 5000], seed=1, nanosecond=False)
    b = _source(tmp_path / "b.pcap", [2000, 4000], seed=2, nanosecond=False)
    assert merge_pcaps([tmp_path / "a.pcap", tmp_path / "b.pcap"], tmp_path / "o.pcap") == 5
    assert _read(tmp_path / "o.pcap") == [a[0], b[0], a[1], b[1], a[2]]
    assert (tmp_path / "o.pcap").read_bytes()[:24] == (tmp_path / "a.pcap").read_bytes()[:24]


@pytest.mark.parametrize("window", [None, 2048], ids=["whole-file-window", "refilled"])
def test_a_record_cut_short_is_an_error_naming_it(tmp_path, window):
    _source(tmp_path / "a.pcap", [1000, 3000, 5000], seed=1)
    b = _source(tmp_path / "b.pcap", [2000, 4000], seed=2)
    data = (tmp_path / "b.pcap").read_bytes()
    (tmp_path / "b.pcap").write_bytes(data[:-10])  # its last record cut short
    with pytest.raises(CaptureError) as ei:
        merge_pcaps([tmp_path / "a.pcap", tmp_path / "b.pcap"], tmp_path / "o.pcap",
                    window_bytes=window)
    at = 24 + 16 + len(b[0][1])
    assert str(ei.value) == f"{tmp_path / 'b.pcap'} (offset {at}): record cut short by the end" \
        " of the file"


def test_many_sources_get_smaller_windows(tmp_path, monkeypatch):
    from dataplane.io import pcap_merge
    monkeypatch.setattr(pcap_merge, "MERGE_MEMORY", 64 << 10)  # 4 sources: 16 KiB each
    rng = np.random.default_rng(3)
    paths, want = [], []
    for k in range(4):
        paths.append(tmp_path / f"s{k}.pcap")
        want.append(_source(paths[-1], _stamps(rng, 300), seed=k, snaplen=1514 if k else 3000))
    seen = []
    real = pcap_merge._merge
    monkeypatch.setattr(pcap_merge, "_merge", lambda s, d, width, stage: (
        seen.append(width), real(s, d, width, stage))[1])
    assert merge_pcaps(paths, tmp_path / "out.pcap") == 1200
    assert seen == [16 << 10]
    monkeypatch.setattr(pcap_merge, "MERGE_MEMORY", 4 << 10)  # 1 KiB each: below a record
    merge_pcaps(paths, tmp_path / "out.pcap")
    assert seen[-1] == 16 + 3000  # the largest snap length of the sources
    expected = [rec for _, _, rec in heapq.merge(
        *[[(t, k, (t, b)) for t, b in recs] for k, recs in enumerate(want)])]
    assert _read(tmp_path / "out.pcap") == expected


def test_bad_sources_are_one_line_errors(tmp_path):
    good = tmp_path / "good.pcap"
    _source(good, [1, 2], seed=1)
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"not a capture at all, not even close")
    us = tmp_path / "us.pcap"
    _source(us, [1], seed=2, nanosecond=False)
    big = tmp_path / "big.pcap"
    _source(big, [1, 2], seed=3)
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    # opening errors are open_capture's own (io/capture.py open_file)
    cases = [([good, junk], junk, "not a little-endian classic pcap file"),
             ([good, tmp_path / "missing.pcap"], tmp_path / "missing.pcap", ": no such file"),
             ([good, tmp_path], tmp_path, ": is a directory, not a capture file"),
             ([good, empty], empty, ": empty file, not a capture"),
             ([good, us], good, "sources differ in timestamp precision")]
    for sources, where, text in cases:
        with pytest.raises(CaptureError) as ei:
            merge_pcaps(sources, tmp_path / "out.pcap")
        msg = str(ei.value)
        assert msg.startswith(str(where)) and text in msg and "\n" not in msg, msg
    # a record larger than the window: named by file and offset
    first = struct.unpack_from("<I", big.read_bytes(), 24 + 8)[0]
    with pytest.raises(CaptureError) as ei:
        merge_pcaps([good, big], tmp_path / "out.pcap", window_bytes=first)
    assert str(ei.value).startswith(f"{big} (offset 24): record longer than {first - 16} bytes")
