"""Parsing helpers and byte-order loads/stores (dataplane.parse), run compiled on
the checked packet view: against dpkt's decoding of every frame of
pcaps/small.pcap and scapy's layer offsets for IPv6 extension-header chains;
every prefix of a few frames of each kind, and offsets outside the packet,
must give "truncated" (-1) and never fault; stores round-trip with loads and
are all or nothing; the helpers work from a checked program; and LLVM drops
the view's checks behind their guards."""

import random
import struct
import textwrap
from pathlib import Path

import dpkt
import numpy as np
import pytest
from numba import njit

import dataplane.parse as dp
from dataplane import PacketBatch, XdpAction, load_program
from dataplane.kernels import parse as kp
from dataplane.kernels.context import make_xdp_md
from dataplane.kernels.layout import SCRATCH_FAULT
from dataplane.kernels.runner import new_scratch

SMALL = Path(__file__).resolve().parent.parent / "pcaps" / "small.pcap"

#: Output columns of run_helpers, in the order it writes them.
HELPERS = [("parse_ethhdr", 2), ("parse_ethhdr_vlan", 5), ("parse_iphdr", 2),
           ("parse_iphdr_fields", 9), ("parse_ip6hdr", 2), ("parse_ip6hdr_ext", 3),
           ("parse_tcphdr", 7), ("parse_udphdr", 4), ("parse_icmphdr", 5),
           ("parse_icmp6hdr", 5), ("parse_l4", 4)]
COLUMN = {}
_c = 0
for _name, _w in HELPERS:
    COLUMN[_name] = slice(_c, _c + _w)
    _c += _w
NCOLS = _c

_pe, _pev, _pi, _pif = (kp.parse_ethhdr.dispatcher, kp.parse_ethhdr_vlan.dispatcher,
                        kp.parse_iphdr.dispatcher, kp.parse_iphdr_fields.dispatcher)
_p6, _p6x, _pt, _pu = (kp.parse_ip6hdr.dispatcher, kp.parse_ip6hdr_ext.dispatcher,
                       kp.parse_tcphdr.dispatcher, kp.parse_udphdr.dispatcher)
_pic, _pic6, _pl4 = (kp.parse_icmphdr.dispatcher, kp.parse_icmp6hdr.dispatcher,
                     kp.parse_l4.dispatcher)


@njit
def _put(out, faults, scratch, i, c, h, t):
    for k in range(len(t)):
        out[i, c + k] = t[k]
    if scratch[SCRATCH_FAULT] != 0:
        faults[i] |= 1 << h
        scratch[SCRATCH_FAULT] = 0
    return c + len(t)


@njit
def _run_helpers(buf, meta, scratch, n, offs, out, faults):
    for i in range(n):
        pkt = make_xdp_md(buf, meta, scratch, i).pkt
        l3, l4 = offs[i, 0], offs[i, 1]
        c = _put(out, faults, scratch, i, 0, 0, _pe(pkt))
        c = _put(out, faults, scratch, i, c, 1, _pev(pkt))
        c = _put(out, faults, scratch, i, c, 2, _pi(pkt, l3))
        c = _put(out, faults, scratch, i, c, 3, _pif(pkt, l3))
        c = _put(out, faults, scratch, i, c, 4, _p6(pkt, l3))
        c = _put(out, faults, scratch, i, c, 5, _p6x(pkt, l3))
        c = _put(out, faults, scratch, i, c, 6, _pt(pkt, l4))
        c = _put(out, faults, scratch, i, c, 7, _pu(pkt, l4))
        c = _put(out, faults, scratch, i, c, 8, _pic(pkt, l4))
        c = _put(out, faults, scratch, i, c, 9, _pic6(pkt, l4))
        _put(out, faults, scratch, i, c, 10, _pl4(pkt))


def run_helpers(frames, offsets):
    """Every helper on every frame: ({helper: int64 array (n, width)}, fault bitmask per frame)."""
    b = PacketBatch(capacity=len(frames))
    for f in frames:
        assert b.append(f)
    offs = np.array(offsets, np.int64).reshape(len(frames), 2)
    out = np.full((len(frames), NCOLS), -7, np.int64)
    faults = np.zeros(len(frames), np.int64)
    _run_helpers(b.buf, b.meta, new_scratch(), len(frames), offs, out, faults)
    return {name: out[:, COLUMN[name]] for name, _ in HELPERS}, faults


# ---------------------------------------------------------------- dpkt oracle

def _ip6_walk(ip6, l3):
    """parse_ip6hdr_ext's expected (result, bytes needed) from dpkt's extension headers."""
    nxt, off, fragment = ip6.nxt, l3 + 40, 0
    for ext in ip6.all_extension_headers:
        if nxt == dpkt.ip.IP_PROTO_ESP:
            break                      # dpkt walks into ESP; the kernel (and we) stop there
        if isinstance(ext, dpkt.ip6.IP6FragmentHeader):
            if ext.frag_off or ext.m_flag:
                fragment = 1
            if ext.frag_off:
                return (ext.nxt, -1, 1), off + 8
        off += ext.length
        nxt = ext.nxt
    return (nxt, off, fragment), off


def oracle(frame):
    """What each helper must return on ``frame``, from dpkt.

    Returns (offsets (l3, l4) to call the helpers with, {helper: (expected
    tuple, bytes of the frame it needs)}); helpers missing from the dict are
    not compared (an L4 parser pointed at another protocol's header).
    """
    eth = dpkt.ethernet.Ethernet(frame)
    tags = getattr(eth, "vlan_tags", [])
    h_proto = tags[-1].type if tags else eth.type
    l3 = 14 + 4 * len(tags)
    ids = [t.id for t in tags] + [-1, -1]
    none = (-1,) * 9
    exp = {"parse_ethhdr": ((h_proto, l3), l3),
           "parse_ethhdr_vlan": ((h_proto, l3, len(tags), ids[0], ids[1]), l3),
           "parse_iphdr": (none[:2], 0), "parse_iphdr_fields": (none, 0),
           "parse_ip6hdr_ext": (none[:3], 0)}
    l4, ipproto, l3_need, l4hdr = -1, -1, l3, None
    if isinstance(eth.data, dpkt.ip.IP):
        ip = eth.data
        ihl = ip.hl * 4
        l4 = l3 + ihl if ip.offset == 0 else -1
        ipproto, l3_need = ip.p, l3 + ihl
        exp["parse_iphdr"] = ((ip.p, l4), l3_need)
        exp["parse_iphdr_fields"] = (
            (ip.p, l4, ihl, ip.len, ip.ttl, ip.offset * 8, ip.mf,  # dpkt: 8-byte units
             int.from_bytes(ip.src, "big"), int.from_bytes(ip.dst, "big")), l3_need)
        l4hdr = ip.data if l4 >= 0 else None
    elif isinstance(eth.data, dpkt.ip6.IP6):
        ip6 = eth.data
        exp["parse_ip6hdr"] = ((ip6.nxt, l3 + 40), l3 + 40)
        (ipproto, l4, _), l3_need = walk = _ip6_walk(ip6, l3)
        exp["parse_ip6hdr_ext"] = walk
        l4hdr = ip6.data if l4 >= 0 else None
    if isinstance(l4hdr, dpkt.tcp.TCP):
        t = l4hdr
        exp["parse_tcphdr"] = ((t.sport, t.dport, t.off * 4, t.flags & 0xFF, t.seq, t.ack,
                                t.win), l4 + t.off * 4)
    elif isinstance(l4hdr, dpkt.udp.UDP):
        u = l4hdr
        exp["parse_udphdr"] = ((u.sport, u.dport, u.ulen, l4 + 8), l4 + 8)
    elif isinstance(l4hdr, (dpkt.icmp.ICMP, dpkt.icmp6.ICMP6)):
        m = l4hdr
        echo = getattr(m, "echo", None)
        if echo is not None:
            ident, seq = echo.id, echo.seq
        else:                          # neighbour solicitation: its reserved word
            ident, seq = struct.unpack("!HH", bytes(m)[4:8])
        name = "parse_icmphdr" if isinstance(m, dpkt.icmp.ICMP) else "parse_icmp6hdr"
        exp[name] = ((m.type, m.code, ident, seq, l4 + 8), l4 + 8)
    is_ip = isinstance(eth.data, (dpkt.ip.IP, dpkt.ip6.IP6))
    exp["parse_l4"] = ((h_proto, ipproto if is_ip else -1, l3, l4), (l3, l3_need if is_ip else l3))
    return (l3, l4), exp


def expected_at(exp, name, length):
    """The expected result of helper ``name`` on the frame's first ``length`` bytes."""
    result, need = exp[name]
    if name == "parse_l4":
        eth_need, ip_need = need
        if length < eth_need:
            return (-1, -1, -1, -1)
        if length < ip_need:
            return (result[0], -1, result[2], -1)
        return result
    return result if length >= need else (-1,) * len(result)


def check(frames, lengths=None):
    """Run every helper on ``frames`` (cut to ``lengths``) and compare with the oracle."""
    oracles = [oracle(f) for f in frames]
    lengths = lengths or [len(f) for f in frames]
    cut = [f[:n] for f, n in zip(frames, lengths)]
    got, faults = run_helpers(cut, [o[0] for o in oracles])
    assert not faults.any(), [(i, bin(m)) for i, m in enumerate(faults) if m][:5]
    compared = 0
    for i, ((_, exp), n) in enumerate(zip(oracles, lengths)):
        for name in exp:
            want = expected_at(exp, name, n)
            assert tuple(got[name][i]) == want, (name, i, n, frames[i][:n].hex())
            compared += 1
    return oracles, compared


@pytest.fixture(scope="module")
def small_frames():
    with open(SMALL, "rb") as f:
        return [bytes(buf) for _, buf in dpkt.pcap.Reader(f)]


# ---------------------------------------------------------------- parsers on the capture

def test_every_frame_of_the_capture_matches_dpkt(small_frames):
    oracles, compared = check(small_frames)
    assert compared > 7 * len(small_frames)
    # The capture exercises every branch the helpers have.
    kinds = {}
    for (_, exp) in oracles:
        tags = exp["parse_ethhdr_vlan"][0][2]
        h = exp["parse_l4"][0]
        f = exp["parse_iphdr_fields"][0]
        for kind, present in (
                (f"vlan{tags}", True), ("arp", h[0] == dp.ETH_P_ARP),
                ("ip4_options", f[2] > 20), ("first_fragment", f[5] == 0 and f[6] == 1),
                ("later_fragment", f[5] > 0),
                ("ip6_ext", h[0] == dp.ETH_P_IPV6 and h[3] > h[2] + 40),
                ("tcp", "parse_tcphdr" in exp), ("tcp_options", "parse_tcphdr" in exp
                                                 and exp["parse_tcphdr"][0][2] > 20),
                ("udp", "parse_udphdr" in exp), ("icmp", "parse_icmphdr" in exp),
                ("icmp6", "parse_icmp6hdr" in exp)):
            kinds[kind] = kinds.get(kind, 0) + bool(present)
    assert all(kinds[k] > 0 for k in kinds) and kinds.get("vlan1") and kinds.get("vlan2"), kinds


def _samples(frames):
    """A few frames of each kind in the capture."""
    picked, seen = [], {}
    for f in frames:
        (_, _), exp = oracle(f)
        h, fields = exp["parse_l4"][0], exp["parse_iphdr_fields"][0]
        kind = (exp["parse_ethhdr_vlan"][0][2], h[0], h[1], h[3] < 0, fields[2] > 20,
                h[0] == dp.ETH_P_IPV6 and h[3] > h[2] + 40)
        if seen.get(kind, 0) < 2:
            seen[kind] = seen.get(kind, 0) + 1
            picked.append(f)
    return picked


def test_every_prefix_is_truncated_never_a_fault(small_frames):
    samples = _samples(small_frames)
    assert len(samples) >= 20
    frames, lengths = [], []
    for f in samples:
        for n in range(min(len(f), 150) + 1):
            frames.append(f)
            lengths.append(n)
    check(frames, lengths)


def test_offsets_outside_the_packet_give_truncated_never_a_fault(small_frames):
    frame = next(f for f in small_frames if oracle(f)[1]["parse_l4"][0][1] == dp.IPPROTO_TCP)
    offs = [-1, -2, -(1 << 62), len(frame), len(frame) + 1, (1 << 62), (1 << 63) - 1]
    got, faults = run_helpers([frame] * len(offs), [(o, o) for o in offs])
    assert not faults.any()
    for name, _ in HELPERS:
        if name not in ("parse_ethhdr", "parse_ethhdr_vlan", "parse_l4"):
            assert (got[name] == -1).all(), name


# ---------------------------------------------------------------- IPv6 extension headers

def _ext_frames():
    """scapy frames with the extension headers the capture lacks, and the expected
    (nexthdr, l4_offset, fragment) with the bytes needed, from scapy's layer offsets."""
    from scapy.layers.inet import TCP, UDP
    from scapy.layers.inet6 import (ICMPv6EchoRequest, IPv6, IPv6ExtHdrDestOpt,
                                    IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPv6ExtHdrRouting,
                                    MIP6MH_BRR)
    from scapy.layers.ipsec import AH, ESP
    from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
    from scapy.packet import Raw

    def eth(vlan=0):
        e = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
        if vlan == 1:
            e = e / Dot1Q(vlan=7)
        elif vlan == 2:
            e = e / Dot1AD(vlan=100) / Dot1Q(vlan=7)
        return e

    ip6 = IPv6(src="2001:db8::1", dst="2001:db8::2")
    tcp = TCP(sport=1234, dport=80, flags="S")
    udp = UDP(sport=5353, dport=53) / Raw(b"q" * 12)

    def at(p, layer):
        return len(bytes(p)) - len(bytes(p[layer]))

    cases = []

    def add(p, nexthdr, upper, fragment=0):
        raw = bytes(p)
        l4 = at(p, upper)
        cases.append((raw, at(p, IPv6), (nexthdr, l4, fragment), l4))

    add(eth() / ip6 / IPv6ExtHdrRouting(nh=6, addresses=["2001:db8::3", "2001:db8::4"]) / tcp,
        6, TCP)
    add(eth(1) / ip6 / IPv6ExtHdrFragment(nh=17, offset=0, m=1, id=9) / udp, 17, UDP, 1)
    add(eth() / ip6 / IPv6ExtHdrFragment(nh=6, offset=0, m=0, id=9) / tcp, 6, TCP, 0)  # atomic
    add(eth() / ip6 / AH(nh=6, payloadlen=4, spi=1, seq=1, icv=b"\0" * 12) / tcp, 6, TCP)
    # scapy counts the payload in a mobility header's length: set it (0: 8 bytes)
    add(eth() / ip6 / MIP6MH_BRR(nh=17, len=0) / udp, 17, UDP)
    add(eth(2) / ip6 / IPv6ExtHdrHopByHop(nh=60) / IPv6ExtHdrDestOpt(nh=58)
        / ICMPv6EchoRequest(id=5), 58, ICMPv6EchoRequest)
    add(eth() / ip6 / IPv6ExtHdrDestOpt(nh=59) / Raw(b"z" * 8), 59, Raw)
    add(eth() / ip6 / ESP(spi=7, seq=1, data=b"e" * 24), 50, ESP)
    eight = (IPv6ExtHdrHopByHop(nh=60) / IPv6ExtHdrDestOpt(nh=43) / IPv6ExtHdrRouting(nh=44)
             / IPv6ExtHdrFragment(nh=51, offset=0, m=1) / AH(nh=135, payloadlen=4, icv=b"\0" * 12)
             / MIP6MH_BRR(nh=60, len=0) / IPv6ExtHdrDestOpt(nh=60) / IPv6ExtHdrDestOpt(nh=6))
    add(eth() / ip6 / eight / tcp, 6, TCP, 1)
    # A later fragment: the walk stops after its fragment header.
    p = eth() / ip6 / IPv6ExtHdrHopByHop(nh=44) / IPv6ExtHdrFragment(offset=100, m=1, nh=6) \
        / Raw(b"f" * 40)
    cases.append((bytes(p), at(p, IPv6), (6, -1, 1), at(p, IPv6ExtHdrFragment) + 8))
    # More than IPV6_EXTHDR_MAX extension headers: not parsed.
    p = eth() / ip6 / IPv6ExtHdrDestOpt(nh=0) / eight / tcp
    cases.append((bytes(p), at(p, IPv6), (-1, -1, -1), 0))
    return cases


def test_ipv6_extension_header_chains():
    cases = _ext_frames()
    frames, offs, lengths, want = [], [], [], []
    for raw, l3, result, need in cases:
        for n in list(range(l3, min(len(raw), need + 4) + 1)) + [len(raw)]:
            frames.append(raw[:n])
            offs.append((l3, -1))
            lengths.append(n)
            if result[0] == -1 or n >= need:
                want.append((result, (dp.ETH_P_IPV6, result[0], l3, result[1])))
            else:
                want.append(((-1, -1, -1), (dp.ETH_P_IPV6, -1, l3, -1)))
    got, faults = run_helpers(frames, offs)
    assert not faults.any()
    for i, (ext, l4) in enumerate(want):
        assert tuple(got["parse_ip6hdr_ext"][i]) == ext, (i, lengths[i], frames[i].hex())
        assert tuple(got["parse_l4"][i]) == l4, (i, lengths[i])
    # The fixed-header parser only reads the fixed header: its next header, offset + 40.
    for i, (l3, _) in enumerate(offs):
        want6 = (frames[i][l3 + 6], l3 + 40) if lengths[i] >= l3 + 40 else (-1, -1)
        assert tuple(got["parse_ip6hdr"][i]) == want6


def test_ipv4_header_that_is_not_ipv4_or_has_a_bad_ihl():
    ip = dpkt.ip.IP(p=17, src=b"\x0a\x00\x00\x01", dst=b"\x0a\x00\x00\x02",
                    data=dpkt.udp.UDP(sport=1, dport=2, data=b"x" * 30))
    good = bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800, data=ip))
    bad_version = good[:14] + bytes([0x65]) + good[15:]
    bad_ihl = good[:14] + bytes([0x44]) + good[15:]
    long_ihl = good[:14] + bytes([0x4F]) + good[15:]   # 60 bytes of header: past the end
    got, faults = run_helpers([good, bad_version, bad_ihl, long_ihl[:70]], [(14, 34)] * 4)
    assert not faults.any()
    assert tuple(got["parse_iphdr"][0]) == (17, 34)
    for i in (1, 2, 3):
        assert tuple(got["parse_iphdr"][i]) == (-1, -1)
        assert (got["parse_iphdr_fields"][i] == -1).all()
        assert tuple(got["parse_l4"][i]) == (0x0800, -1, 14, -1)


def test_tcp_data_offset_below_five_is_invalid():
    tcp = bytes(dpkt.tcp.TCP(sport=1, dport=2, flags=dpkt.tcp.TH_SYN))
    bad = tcp[:12] + bytes([0x40]) + tcp[13:]
    got, faults = run_helpers([b"\0" * 14 + tcp, b"\0" * 14 + bad], [(0, 14)] * 2)
    assert not faults.any()
    assert tuple(got["parse_tcphdr"][0][:4]) == (1, 2, 20, dp.TCP_SYN)
    assert (got["parse_tcphdr"][1] == -1).all()


# ---------------------------------------------------------------- loads and stores

_l16, _l32, _l64 = kp.load_be16.dispatcher, kp.load_be32.dispatcher, kp.load_be64.dispatcher
_s16, _s32, _s64 = kp.store_be16.dispatcher, kp.store_be32.dispatcher, kp.store_be64.dispatcher


@njit
def _loads(buf, meta, scratch, offs, out, faults):
    pkt = make_xdp_md(buf, meta, scratch, 0).pkt
    for j in range(len(offs)):
        o = offs[j]
        out[j, 0] = _l16(pkt, o)
        out[j, 1] = _l32(pkt, o)
        out[j, 2] = np.int64(_l64(pkt, o))     # the bits of the uint64
        faults[j] = scratch[SCRATCH_FAULT]
        scratch[SCRATCH_FAULT] = 0


@njit
def _store(buf, meta, scratch, i, width, off, value):
    pkt = make_xdp_md(buf, meta, scratch, i).pkt
    if width == 2:
        _s16(pkt, off, value)
        return np.uint64(_l16(pkt, off))
    if width == 4:
        _s32(pkt, off, value)
        return np.uint64(_l32(pkt, off))
    _s64(pkt, off, value)
    return _l64(pkt, off)


def test_loads_are_big_endian_and_fault_outside():
    rnd = random.Random(3)
    frame = bytes(rnd.randrange(256) for _ in range(64))
    b = PacketBatch(1)
    b.append(frame)
    offs = np.arange(-2, 66, dtype=np.int64)
    out = np.zeros((len(offs), 3), np.int64)
    faults = np.zeros(len(offs), np.int64)
    _loads(b.buf, b.meta, new_scratch(), offs, out, faults)
    for j, o in enumerate(offs):
        for k, width in enumerate((2, 4, 8)):
            if 0 <= o <= len(frame) - width:
                want = int.from_bytes(frame[o:o + width], "big")
                assert int(out[j, k]) & ((1 << 64) - 1) == want, (o, width)
        assert faults[j] == (not 0 <= o <= len(frame) - 8), o   # 8: the widest load's bytes
    assert (out[:, :2] >= 0).all()   # 16/32-bit loads are never negative


def test_load_be64_is_unsigned():
    b = PacketBatch(1)
    b.append(b"\xfd\x00\xde\xad" + b"\0" * 3 + b"\x01" + b"\0" * 52)

    @njit
    def run(buf, meta, scratch):
        pkt = make_xdp_md(buf, meta, scratch, 0).pkt
        v = _l64(pkt, 0)
        return v == np.uint64(0xFD00DEAD00000001), v == 0xFD00DEAD00000001, v >> np.uint64(56)

    assert run(b.buf, b.meta, new_scratch()) == (True, True, 0xFD)


@pytest.mark.parametrize("width", [2, 4, 8])
def test_stores_round_trip_and_are_all_or_nothing(width):
    rnd = random.Random(width)
    frame = bytes(rnd.randrange(256) for _ in range(60))
    values = [0, 1, (1 << (8 * width)) - 1, 0x0123456789ABCDEF & ((1 << (8 * width)) - 1),
              -1, -2, 1 << 63, (1 << 64) - 1, 0x1122334455667788]
    offs = [0, 1, 7, len(frame) - width, len(frame) - width + 1, len(frame), -1, 1 << 62]
    b = PacketBatch(len(values) * len(offs))
    cases = [(v, o) for v in values for o in offs]
    for _ in cases:
        b.append(frame)
    s = new_scratch()
    mask = (1 << (8 * width)) - 1
    for i, (v, o) in enumerate(cases):
        val = np.uint64(v) if v >= (1 << 63) else np.int64(v)
        got = _store(b.buf, b.meta, s, i, width, o, val)
        inside = 0 <= o <= len(frame) - width
        assert s[SCRATCH_FAULT] == (0 if inside else 1), (v, o)
        s[SCRATCH_FAULT] = 0
        after = b.packet(i)
        if inside:
            assert int(got) == v & mask, (v, o)
            assert after == frame[:o] + (v & mask).to_bytes(width, "big") + frame[o + width:]
        else:
            assert after == frame, (v, o)   # nothing written


@njit
def _array_round_trip(buf, lo, off, value):
    seg = buf[lo:]   # a C-contiguous slice, as kernels/gso.py writes segments
    _s16(seg, off, value)
    _s32(seg, off + 2, value)
    _s64(seg, off + 6, value)
    return _l16(seg, off), _l32(seg, off + 2), _l64(seg, off + 6)


def test_loads_and_stores_on_a_byte_array():
    """The helpers on a uint8 array (kernels/gso.py) as on a packet: unaligned,
    big-endian, the bytes around untouched."""
    buf = np.arange(40, dtype=np.uint8)
    before = bytes(buf)
    v = 0x0123456789ABCDEF
    got = _array_round_trip(buf, 3, 1, np.uint64(v))
    assert [int(x) for x in got] == [v & 0xFFFF, v & 0xFFFFFFFF, v]
    want = before[:4] + (v & 0xFFFF).to_bytes(2, "big") + (v & 0xFFFFFFFF).to_bytes(4, "big") \
        + v.to_bytes(8, "big") + before[18:]
    assert bytes(buf) == want


# ---------------------------------------------------------------- from a program

def test_helpers_from_a_checked_program(tmp_path):
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent("""
        from dataplane import XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, xdp
        from dataplane.parse import (IPPROTO_TCP, IPPROTO_UDP, TCP_SYN, load_be16,
                                     parse_ethhdr_vlan, parse_l4, parse_tcphdr,
                                     parse_udphdr, store_be16, store_be32)

        @xdp
        def prog(ctx):
            pkt = ctx.pkt
            h_proto, ipproto, l3, l4 = parse_l4(pkt)
            if ipproto == IPPROTO_UDP:
                sport, dport, ulen, payload = parse_udphdr(pkt, l4)
                if dport == 53:
                    _, _, ntags, outer, inner = parse_ethhdr_vlan(pkt)
                    store_be16(pkt, l4 + 2, 5300 + ntags * 10 + inner % 10)
                    return XDP_TX
                store_be32(pkt, len(pkt) - 3, 0)     # partly outside: faults, writes nothing
                return XDP_PASS
            if ipproto == IPPROTO_TCP:
                sport, dport, hlen, flags, seq, ack, win = parse_tcphdr(pkt, l4)
                if hlen > 0 and flags & TCP_SYN:
                    return XDP_DROP
            return XDP_PASS
        """))
    prog = load_program(str(path))
    # QinQ (S-VID 100, C-VID 7) / IPv6 / hop-by-hop (PadN) / UDP to port 53
    src6 = b"\x20\x01\x0d\xb8" + b"\0" * 11 + b"\x01"
    udp = struct.pack("!HHHH", 999, 53, 28, 0) + b"x" * 20
    hop = bytes([17, 0, 1, 4, 0, 0, 0, 0])
    ip6 = struct.pack("!IHBB", 0x60000000, len(hop) + len(udp), 0, 64) + src6 * 2 + hop + udp
    frame = (b"\x04" * 6 + b"\x02" * 6 + struct.pack("!HHHHH", 0x88A8, 100, 0x8100, 7, 0x86DD)
             + ip6)
    assert isinstance(dpkt.ethernet.Ethernet(frame).data.data, dpkt.udp.UDP)
    action, out = prog.test_run(frame)
    assert action == XdpAction.XDP_TX
    l4 = 14 + 8 + 40 + 8
    assert out == frame[:l4 + 2] + (5327).to_bytes(2, "big") + frame[l4 + 4:]

    other = frame[:l4 + 2] + (54).to_bytes(2, "big") + frame[l4 + 4:]
    action, out = prog.test_run(other)
    assert action == XdpAction.XDP_ABORTED and out == other

    syn = bytes(dpkt.ethernet.Ethernet(
        src=b"\x02" * 6, dst=b"\x04" * 6, type=0x0800,
        data=dpkt.ip.IP(p=6, src=b"\x0a\0\0\x01", dst=b"\x0a\0\0\x02",
                        data=dpkt.tcp.TCP(sport=1, dport=2, flags=dpkt.tcp.TH_SYN))))
    assert prog.test_run(syn)[0] == XdpAction.XDP_DROP


def test_everything_public_is_re_exported():
    public = {n for n in dir(kp) if not n.startswith("_") and n.isupper()
              or callable(getattr(kp, n)) and getattr(getattr(kp, n), "__dataplane_api__", 0)}
    assert public <= set(dir(dp))
    assert {"header_fits", "load_be64", "store_be16", "store_be32", "store_be64",
            "parse_ethhdr_vlan", "parse_iphdr_fields", "parse_ip6hdr_ext", "parse_tcphdr",
            "parse_udphdr", "parse_icmphdr", "parse_icmp6hdr", "parse_l4"} <= public


# ---------------------------------------------------------------- code generation
