"""pcapng reader against scapy and against hand-built blocks (struct) with known truth."""

import struct
from fractions import Fraction

import numpy as np
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, RawPcapNgReader

from dataplane.io.batch import PacketBatch
from dataplane.io.capture import open_capture
from dataplane.io.pcapng import PcapngReader

T0 = 1_700_000_000


def frames(n, lo=60, hi=1514, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, int(rng.integers(lo, hi + 1)), np.uint8).tobytes()
            for _ in range(n)]


# -- blocks, built with struct (o is the section's byte order: "<" or ">") ----
def block(o, btype, body):
    body += b"\0" * (-len(body) % 4)
    return struct.pack(o + "II", btype, len(body) + 12) + body + struct.pack(o + "I", len(body) + 12)


def option(o, code, value):
    return struct.pack(o + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def shb(o):
    return block(o, 0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1)
                 + option(o, 1, b"a comment") + option(o, 0, b""))


def idb(o, linktype=1, snaplen=0, tsresol=None, tsoffset=None):
    opts = option(o, 2, b"eth0")
    if tsresol is not None:
        opts += option(o, 9, bytes([tsresol]))
    if tsoffset is not None:
        opts += option(o, 14, struct.pack(o + "q", tsoffset))
    return block(o, 1, struct.pack(o + "HHI", linktype, 0, snaplen) + opts + option(o, 0, b""))


def epb(o, ifid, units, data, orig=None):
    return block(o, 6, struct.pack(o + "IIIII", ifid, units >> 32, units & 0xFFFFFFFF, len(data),
                                   len(data) if orig is None else orig) + data
                 + option(o, 1, b"epb comment") + option(o, 0, b""))


def opb(o, ifid, units, data):
    return block(o, 2, struct.pack(o + "HHIIII", ifid, 0, units >> 32, units & 0xFFFFFFFF,
                                   len(data), len(data)) + data)


def spb(o, data, orig=None):
    return block(o, 3, struct.pack(o + "I", len(data) if orig is None else orig) + data)


def skipped(o):
    """An NRB, an ISB, a custom block and a DSB: no packets."""
    return (block(o, 4, struct.pack(o + "HH4s", 1, 4, b"\x0a\0\0\x01") + b"host\0\0\0\0"
                  + struct.pack(o + "HH", 0, 0))
            + block(o, 5, struct.pack(o + "III", 0, 0, 0))
            + block(o, 0x00000BAD, struct.pack(o + "I", 32473) + b"custom data!")
            + block(o, 10, struct.pack(o + "II", 0x544C534B, 4) + b"keys"))


def ns_of(units, tsresol, tsoffset=0):
    """Truth, with exact fractions: units of 10^-r or 2^-r seconds -> ns (floor)."""
    per_s = 2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10 ** tsresol
    return int(Fraction(units * 10**9, per_s)) + tsoffset * 10**9


def read_all(reader, capacity=64, buffer_bytes=None):
    batch = PacketBatch(capacity, buffer_bytes)
    out = []
    while n := reader.read_batch(batch):
        for i in range(n):
            assert batch.frame_start[i] == (batch.frame_end[i - 1] if i else 0)
            assert batch.data[i] == batch.frame_start[i] + batch.headroom
            assert batch.rx_queue[i] == 0
            out.append((batch.packet(i), int(batch.ts_ns[i]), int(batch.snap_cut[i]),
                        int(batch.ifindex[i])))
    return out


def one_section(o, pkts):
    """SHB, 3 interfaces (ns, default us, 2^-20 s), then EPB/OPB/SPB among skipped blocks."""
    resol = [9, None, 0x80 | 20]
    body = [shb(o), idb(o, snaplen=1600, tsresol=9), idb(o, tsresol=None),
            idb(o, tsresol=0x80 | 20), skipped(o)]
    truth = []
    for i, p in enumerate(pkts):
        k = i % 3
        units = {0: T0 * 10**9 + i * 1_000_000_007, 1: T0 * 10**6 + i * 999, 2: (T0 + i) << 20 | i}[k]
        if i % 10 == 9:
            body.append(spb(o, p[:1600], orig=len(p)))
            truth.append((p[:1600], 0, max(len(p) - 1600, 0), 0))
            continue
        body.append(opb(o, k, units, p) if i % 10 == 4 else epb(o, k, units, p))
        truth.append((p, ns_of(units, resol[k] if resol[k] is not None else 6), 0, k))
        if i % 7 == 0:
            body.append(skipped(o))
    return b"".join(body), truth


@pytest.mark.parametrize("o", ["<", ">"], ids=["little-endian", "big-endian"])
def test_one_section_matches_scapy_and_truth(tmp_path, o):
    pkts = frames(120, 60, 1700)
    data, truth = one_section(o, pkts)
    path = tmp_path / "x.pcapng"
    path.write_bytes(data)
    with open_capture(path, chunk_bytes=4096) as r:
        assert isinstance(r, PcapngReader)
        assert (r.linktype, r.snaplen, r.nanosecond) == (1, 1600, True)
        got = read_all(r, capacity=17)
        assert r.packets == 120 and r.offset == r.size
    assert got == truth
    ref = list(RawPcapNgReader(str(path)))
    assert [g[0] for g in got] == [d for d, _ in ref]
    assert [g[1] for g in got] == [
        0 if m.tshigh is None else (m.tshigh << 32 | m.tslow) * 10**9 // m.tsresol for _, m in ref]
    assert [len(g[0]) + g[2] for g in got] == [m.wirelen for _, m in ref]


@pytest.mark.parametrize("chunk", [256, 1 << 20])
def test_sections_reset_interfaces_and_byte_order(tmp_path, chunk):
    pkts = frames(30, seed=1)
    f = shb("<") + idb("<", tsresol=6) + idb("<", tsresol=9)
    truth = []
    for i in range(10):
        f += epb("<", i % 2, 1000 + i, pkts[i])
        truth.append((pkts[i], ns_of(1000 + i, 6 if i % 2 == 0 else 9), 0, i % 2))
    # Section 2, big-endian: interface 0 is now 2^-10 s with a 100 s offset.
    f += shb(">") + idb(">", tsresol=0x80 | 10, tsoffset=100) + skipped(">")
    for i in range(10, 30):
        f += epb(">", 0, (T0 << 10) + i, pkts[i])
        truth.append((pkts[i], ns_of((T0 << 10) + i, 0x80 | 10, 100), 0, 0))
    path = tmp_path / "sections.pcapng"
    path.write_bytes(f)
    with PcapngReader(path, chunk_bytes=chunk) as r:
        assert read_all(r, capacity=4) == truth
        assert r.warnings == []


@pytest.mark.parametrize("tsresol", [0, 3, 6, 9, 12, 27, 0x80 | 0, 0x80 | 30, 0x80 | 40, 0x80 | 63])
def test_timestamp_resolutions(tmp_path, tsresol):
    units = [T0, 123_456_789_123_456_789, 2**63 + 12345]
    path = tmp_path / "res.pcapng"
    path.write_bytes(shb("<") + idb("<", tsresol=tsresol, tsoffset=-5)
                     + b"".join(epb("<", 0, u, b"x" * 60) for u in units))
    with PcapngReader(path) as r:
        got = [g[1] for g in read_all(r)]
    want = [ns_of(u, tsresol, -5) for u in units]
    # Values past 2^63 ns overflow int64 like every ns clock; compare those mod 2^64.
    assert [g % 2**64 for g in got] == [w % 2**64 for w in want]


def test_file_written_by_scapy(tmp_path):
    path = tmp_path / "scapy.pcapng"
    w = PcapNgWriter(str(path))
    sent = []
    for i in range(25):
        p = Ether() / IP(dst="10.0.0.%d" % i) / UDP(dport=1000 + i) / Raw(b"p" * (i * 40))
        p.time = T0 + i / 8
        w.write(p)
        sent.append(bytes(p))
    w.close()
    with open_capture(path) as r:
        got = read_all(r, capacity=10)
    assert [g[0] for g in got] == sent
    assert [g[1] for g in got] == [(T0 * 8 + i) * 125_000_000 for i in range(25)]


def test_huge_skipped_block_is_streamed_past(tmp_path):
    big = block("<", 0x40000BAD, struct.pack("<I", 1) + b"\0" * (1 << 20))
    path = tmp_path / "bigblock.pcapng"
    path.write_bytes(shb("<") + idb("<") + epb("<", 0, 1, b"a" * 64) + big + epb("<", 0, 2, b"b" * 64))
    with PcapngReader(path, chunk_bytes=4096) as r:
        got = read_all(r)
        assert r._chunk.size == 4096
    assert [g[0] for g in got] == [b"a" * 64, b"b" * 64]


def test_a_nanosecond_interface_after_the_first_packets_keeps_its_nanoseconds(tmp_path):
    """A microsecond interface with a packet, then a nanosecond one (if_tsresol
    9): the replay's pcap was begun in microseconds, and the second packet's
    17 ns were lost. pcaps written from a pcapng are nanosecond ones; dpkt
    reads back both timestamps exactly."""
    import dpkt

    from dataplane import load_program
    from dataplane.pipeline import VerdictPcaps, replay

    f = frames(2)
    t = 1_600_000_000
    path = tmp_path / "late.pcapng"
    path.write_bytes(shb("<") + idb("<") + epb("<", 0, t * 10**6, f[0])
                     + idb("<", tsresol=9) + epb("<", 1, t * 10**9 + 17, f[1]))
    with open_capture(path) as reader:
        replay(reader, load_program("pass_all"),
               VerdictPcaps(tmp_path / "out", nanosecond=reader.nanosecond,
                            snaplen=reader.output_snaplen))
    with open(tmp_path / "out" / "pass.pcap", "rb") as fh:
        got = [(ts, bytes(buf)) for ts, buf in dpkt.pcap.Reader(fh)]
    assert [int(ts * 10**9) for ts, _ in got] == [t * 10**9, t * 10**9 + 17]
    assert [buf for _, buf in got] == f
