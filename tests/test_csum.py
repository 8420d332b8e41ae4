"""Checksum helpers (dataplane.csum) against independent oracles.

Oracles: the checksums stored in pcaps/small.pcap (every one real), a plain-
Python RFC 1071 sum written here, dpkt recomputing zeroed checksums, a literal
Python model of the kernel's lib/checksum.c + bpf_csum_diff (Linux 6.13) run in
little-endian host order, and the kernel selftest's bpf_csum_diff vectors
(tools/testing/selftests/bpf/prog_tests/test_csum_diff.c).
"""

import ctypes
import ctypes.util
import random
import struct
import textwrap
from pathlib import Path

import dpkt
import numpy as np
import pytest
from numba import njit

from dataplane import PacketBatch, XdpAction, load_program
from dataplane.kernels import csum as K
from dataplane.kernels.context import make_xdp_md
from dataplane.kernels.layout import SCRATCH_FAULT
from dataplane.kernels.runner import new_scratch

SMALL = Path(__file__).resolve().parent.parent / "pcaps" / "small.pcap"
M16, M32 = 0xFFFF, 0xFFFFFFFF

csum_fold = K.csum_fold.dispatcher
csum_add = K.csum_add.dispatcher
csum_sub = K.csum_sub.dispatcher
csum_partial = K.csum_partial.dispatcher
csum_replace2 = K.csum_replace2.dispatcher
csum_replace4 = K.csum_replace4.dispatcher
csum_diff_words = K.csum_diff_words.dispatcher
csum_diff_packet = K.csum_diff_packet.dispatcher
ipv4_csum = K.ipv4_csum.dispatcher
ipv4_csum_set = K.ipv4_csum_set.dispatcher
l4_csum_ipv4 = K.l4_csum_ipv4.dispatcher
l4_csum_ipv6 = K.l4_csum_ipv6.dispatcher


# -- plain-Python oracles --------------------------------------------------------

def rfc1071_sum(data):
    """Unfolded sum of big-endian 16-bit words; an odd last byte is a high byte."""
    if len(data) % 2:
        data = data + b"\x00"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def fold(s):
    while s >> 16:
        s = (s & M16) + (s >> 16)
    return s


def inet_csum(data, extra=0):
    """The Internet checksum (RFC 1071) of data plus an unfolded extra sum."""
    return ~fold(rfc1071_sum(data) + extra) & M16


def swap16(x):
    return ((x & 0xFF) << 8) | (x >> 8)


def swap_halves_bytes(x):
    """A 32-bit __wsum seen from the other byte order: bytes swapped within each half."""
    return (swap16(x >> 16) << 16) | swap16(x & M16)


# Linux, little-endian host, translated from the C (lib/checksum.c, checksum.h, filter.c).
def k_do_csum(buff):
    """lib/checksum.c do_csum() for a 4-byte aligned buffer on a little-endian host."""
    n, i, result = len(buff), 0, 0
    if n <= 0:
        return 0
    if n >= 2:
        if n >= 4:
            end, carry = n & ~3, 0
            while i < end:
                w = struct.unpack_from("<I", buff, i)[0]
                i += 4
                result = (result + carry) & M32
                result = (result + w) & M32
                carry = int(w > result)
            result = (result + carry) & M32
            result = (result & M16) + (result >> 16)
        if n & 2:
            result += struct.unpack_from("<H", buff, i)[0]
            i += 2
    if n & 1:
        result += buff[i]
    result = (result & M16) + (result >> 16)   # from32to16
    return (result & M16) + (result >> 16)


def k_csum_partial(buff, wsum):
    result = (k_do_csum(buff) + wsum) & M32
    if wsum > result:
        result = (result + 1) & M32
    return result


def k_csum_add(a, b):
    r = (a + b) & M32
    return (r + (r < b)) & M32


def k_csum_from32to16(s):          # include/net/checksum.h
    s = (s + (((s >> 16) | (s << 16)) & M32)) & M32
    return s >> 16


def k_bpf_csum_diff(frm, to, seed):
    """net/core/filter.c bpf_csum_diff() since Linux 6.13 ("homogenize for all archs")."""
    ret = seed
    if frm and to:
        ret = k_csum_add(k_csum_partial(to, ret), ~k_csum_partial(frm, 0) & M32)
    elif to:
        ret = k_csum_partial(to, ret)
    elif frm:
        ret = ~k_csum_partial(frm, ~ret & M32) & M32
    return k_csum_from32to16(ret)


def k_csum16_add(c, a):
    r = (c + a) & M16
    return (r + (r < a)) & M16


def k_csum_replace2(check, old, new):
    return ~k_csum16_add(k_csum16_add(~check & M16, ~old & M16), new) & M16


def k_csum_fold(s):
    s = (s & M16) + (s >> 16)
    s = (s & M16) + (s >> 16)
    return ~s & M16


def k_csum_replace4(check, old, new):
    tmp = k_csum_add(~check & M32, ~old & M32)     # ~csum_unfold(check): 32-bit NOT
    return k_csum_fold(k_csum_add(tmp, new))


# -- packets ---------------------------------------------------------------------

def batch_of(frames):
    b = PacketBatch(len(frames), buffer_bytes=sum(len(f) + 640 for f in frames))
    for f in frames:
        assert b.append(f)
    return b


def small_frames():
    with open(SMALL, "rb") as fh:
        return [bytes(buf) for _, buf in dpkt.pcap.Reader(fh)]


IP6_EXT = {0: "hop", 43: "routing", 60: "dstopts"}


def layout_of(frame):
    """(kind, ip_off, l4_off, l4_len, proto) parsed by hand: kind 4, 6 or 0; l4_off
    -1 when the L4 checksum cannot be checked here (a fragment)."""
    off = 12
    etype = struct.unpack_from("!H", frame, off)[0]
    while etype in (0x8100, 0x88A8):
        off += 4
        etype = struct.unpack_from("!H", frame, off)[0]
    ip = off + 2
    if etype == 0x0800:
        ihl = (frame[ip] & 15) * 4
        total = struct.unpack_from("!H", frame, ip + 2)[0]
        frag = struct.unpack_from("!H", frame, ip + 6)[0] & 0x3FFF
        proto = frame[ip + 9]
        if frag or proto not in (1, 6, 17):
            return 4, ip, -1, 0, proto
        return 4, ip, ip + ihl, total - ihl, proto
    if etype == 0x86DD:
        plen = struct.unpack_from("!H", frame, ip + 4)[0]
        nxt, l4 = frame[ip + 6], ip + 40
        while nxt in IP6_EXT:
            nxt, l4 = frame[l4], l4 + (frame[l4 + 1] + 1) * 8
        if nxt not in (6, 17, 58):
            return 6, ip, -1, 0, nxt
        return 6, ip, l4, plen - (l4 - ip - 40), nxt
    return 0, -1, -1, 0, 0


CSUM_FIELD = {6: 16, 17: 6, 1: 2, 58: 2}


@njit
def _verify(buf, meta, scratch, n, lay, seeds, out):
    for i in range(n):
        ctx = make_xdp_md(buf, meta, scratch, i)
        pkt = ctx.pkt
        kind, ip, l4, l4_len, proto = lay[i, 0], lay[i, 1], lay[i, 2], lay[i, 3], lay[i, 4]
        out[i, 4] = csum_partial(pkt, 0, len(pkt), seeds[i])
        out[i, 5] = csum_partial(pkt, 1, len(pkt) - 1, 0)
        if kind == 4:
            out[i, 0] = ipv4_csum(pkt, ip)
            out[i, 2] = csum_fold(csum_partial(pkt, ip, (pkt[ip] & 15) * 4, 0))
            if l4 >= 0:
                out[i, 1] = l4_csum_ipv4(pkt, ip, l4, l4_len, proto)
        elif kind == 6 and l4 >= 0:
            out[i, 1] = l4_csum_ipv6(pkt, ip, l4, l4_len, proto)
        if l4 >= 0:  # the whole segment with its checksum folds to 0 (verification)
            if kind == 4 and proto == 1:
                out[i, 3] = csum_fold(csum_partial(pkt, l4, l4_len, 0))
            elif kind == 4:
                pseudo = csum_partial(pkt, ip + 12, 8, proto + l4_len)
                out[i, 3] = csum_fold(csum_partial(pkt, l4, l4_len, pseudo))
            else:
                pseudo = csum_partial(pkt, ip + 8, 32, proto + l4_len)
                out[i, 3] = csum_fold(csum_partial(pkt, l4, l4_len, pseudo))
    return scratch[SCRATCH_FAULT]


@pytest.fixture(scope="module")
def small():
    frames = small_frames()
    lay = np.array([layout_of(f) for f in frames], np.int64)
    return frames, lay


def test_recomputed_checksums_equal_the_stored_ones(small):
    frames, lay = small
    b = batch_of(frames)
    rng = random.Random(1)
    seeds = np.array([rng.choice([0, 1, M16, M32, rng.getrandbits(32)]) for _ in frames],
                     np.int64)
    out = np.full((len(frames), 6), -1, np.int64)
    assert _verify(b.buf, b.meta, new_scratch(), len(frames), lay, seeds, out) == 0
    seen = {4: 0, 6: 0, (4, 1): 0, (4, 6): 0, (4, 17): 0, (6, 6): 0, (6, 17): 0, (6, 58): 0,
            "opts": 0, "odd": 0}
    for i, f in enumerate(frames):
        kind, ip, l4, l4_len, proto = lay[i]
        # csum_partial: the generic representative, against the Python sum
        assert out[i, 4] == k_csum_add(fold(rfc1071_sum(f)), int(seeds[i])), i
        assert out[i, 5] == fold(rfc1071_sum(f[1:])), i
        seen["odd"] += len(f) % 2
        if kind:
            seen[int(kind)] += 1
        if kind == 4:
            hl = (f[ip] & 15) * 4
            seen["opts"] += hl > 20
            stored = struct.unpack_from("!H", f, ip + 10)[0]
            hdr = f[ip:ip + 10] + b"\0\0" + f[ip + 12:ip + hl]
            assert out[i, 0] == stored == inet_csum(hdr), i
            assert out[i, 2] == 0, i
        if l4 >= 0:
            seen[(kind, proto)] += 1
            seg = bytearray(f[l4:l4 + l4_len])
            stored = struct.unpack_from("!H", seg, CSUM_FIELD[proto])[0]
            seg[CSUM_FIELD[proto]:CSUM_FIELD[proto] + 2] = b"\0\0"
            if kind == 4 and proto == 1:
                pseudo = 0
            elif kind == 4:
                pseudo = rfc1071_sum(f[ip + 12:ip + 20]) + proto + l4_len
            else:
                pseudo = rfc1071_sum(f[ip + 8:ip + 40]) + proto + l4_len
            expect = inet_csum(bytes(seg), pseudo)
            if proto == 17 and expect == 0:
                expect = M16
            assert out[i, 1] == stored == expect, (i, kind, proto)
            assert out[i, 3] == 0, i
    assert all(v > 0 for v in seen.values()), seen


@njit
def _rewrite(buf, meta, scratch, n, lay, new_addr, out):
    """NAT-style rewrites with incremental updates only: TTL - 1 (IPv4), source
    address -> new_addr (IPv4: one word; IPv6: four), source port (TCP/UDP) or
    ICMP id += 0x1111."""
    for i in range(n):
        ctx = make_xdp_md(buf, meta, scratch, i)
        pkt = ctx.pkt
        kind, ip, l4, proto = lay[i, 0], lay[i, 1], lay[i, 2], lay[i, 4]
        field = -1
        if l4 >= 0:
            field = l4 + 16 if proto == 6 else (l4 + 6 if proto == 17 else l4 + 2)
        l4sum = -1
        if field >= 0:
            l4sum = (pkt[field] << 8) | pkt[field + 1]
        udp_nosum = proto == 17 and l4sum == 0
        if kind == 4:
            check = (pkt[ip + 10] << 8) | pkt[ip + 11]
            old = (pkt[ip + 8] << 8) | pkt[ip + 9]
            new = old - 0x100 if pkt[ip + 8] > 0 else old
            check = csum_replace2(check, old, new)
            pkt[ip + 8] = new >> 8
            src = (pkt[ip + 12] << 24) | (pkt[ip + 13] << 16) | (pkt[ip + 14] << 8) | pkt[ip + 15]
            na = new_addr[i, 0]
            check = csum_replace4(check, src, na)
            if field >= 0 and proto != 1 and not udp_nosum:
                l4sum = csum_replace4(l4sum, src, na)
            for k in range(4):
                pkt[ip + 12 + k] = na >> (24 - 8 * k)
            pkt[ip + 10] = check >> 8
            pkt[ip + 11] = check
        elif kind == 6 and field >= 0:
            for w in range(4):
                a = ip + 8 + 4 * w
                src = (pkt[a] << 24) | (pkt[a + 1] << 16) | (pkt[a + 2] << 8) | pkt[a + 3]
                na = new_addr[i, w]
                if not udp_nosum:
                    l4sum = csum_replace4(l4sum, src, na)
                for k in range(4):
                    pkt[a + k] = na >> (24 - 8 * k)
        if field >= 0 and not udp_nosum:
            p = l4 if proto != 1 and proto != 58 else l4 + 4   # sport, or the ICMP id
            old = (pkt[p] << 8) | pkt[p + 1]
            new = (old + 0x1111) & 0xFFFF
            l4sum = csum_replace2(l4sum, old, new)
            pkt[p] = new >> 8
            pkt[p + 1] = new
            if proto == 17 and l4sum == 0:
                l4sum = 0xFFFF        # UDP: a computed 0 is sent as 0xFFFF
            pkt[field] = l4sum >> 8
            pkt[field + 1] = l4sum
        out[i] = l4sum
    return scratch[SCRATCH_FAULT]


def dpkt_recompute(frame, l4_ok=True):
    """The frame with every checksum zeroed and recomputed by dpkt (the L4 one only
    with ``l4_ok``: not for fragments)."""
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    if not l4_ok:
        if isinstance(ip, dpkt.ip.IP):
            ip.sum = 0
        return with_padding(bytes(eth), frame)
    if isinstance(ip, dpkt.ip.IP):
        ip.sum = 0
        if isinstance(ip.data, (dpkt.tcp.TCP, dpkt.udp.UDP, dpkt.icmp.ICMP)) \
                and not ip.mf and not ip.offset:
            ip.data.sum = 0
    elif isinstance(ip, dpkt.ip6.IP6) and isinstance(ip.data, (dpkt.tcp.TCP, dpkt.udp.UDP,
                                                               dpkt.icmp6.ICMP6)):
        ip.data.sum = 0
        bytes(ip)
        if isinstance(ip.data, dpkt.udp.UDP) and ip.data.sum == 0:
            ip.data.sum = M16       # dpkt applies RFC 768's rule to IPv4 only
    return with_padding(bytes(eth), frame)


def with_padding(packed, frame):
    """dpkt drops the Ethernet padding behind the IP datagram: put it back."""
    return packed + frame[len(packed):]


def test_incremental_updates_equal_a_recompute(small):
    frames, lay = small
    b = batch_of(frames)
    rng = np.random.default_rng(7)
    new_addr = rng.integers(0, 1 << 32, (len(frames), 4), dtype=np.int64)
    new_addr[:8, 0] = [0, M32, 0x0A000001, 0xFFFF0000, 0x0000FFFF, 1, 0x80000000, 0x7FFFFFFF]
    out = np.zeros(len(frames), np.int64)
    assert _rewrite(b.buf, b.meta, new_scratch(), len(frames), lay, new_addr, out) == 0
    changed = 0
    for i, f in enumerate(frames):
        if lay[i, 0] == 0:
            continue
        got = b.packet(i)
        assert dpkt_recompute(got, lay[i, 2] >= 0) == got, (i, lay[i])
        changed += got != f
    assert changed > 3000


def test_checksum_primitives_edge_cases():
    @njit
    def prims(a, b):
        return (csum_fold(a), csum_add(a, b), csum_sub(a, b), csum_replace2(a, b, a ^ b),
                csum_replace4(a, b, a ^ b))

    assert prims(0, 0)[0] == M16 and prims(M16, 0)[0] == 0 and prims(M32, 0)[0] == 0
    assert prims(0x0001FFFF, 0)[0] == ~1 & M16
    assert prims(M32, 1)[1] == 1 and prims(0, 0)[1] == 0 and prims(0, 0)[2] == M32
    assert prims(0x80000000, 0x80000000)[1] == 1
    # csum_replace2 keeps the kernel's 0xFFFF corner: ~HC = 0, m = 0xFFFF, m' = 0
    assert K.csum_replace2(M16, M16, 0) == M16
    assert K.csum_replace2(0, 0, 0) == 0
    edges = [0, 1, 2, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, M16, 0x10000, 0xFFFF0000,
             0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, M32]
    rng = random.Random(3)
    values = edges + [rng.getrandbits(32) for _ in range(40)]
    for a in values:
        for b_ in values[:30]:
            fo, ad, su, r2, r4 = prims(a, b_)
            assert fo == k_csum_fold(a & M32)
            assert ad == k_csum_add(a & M32, b_ & M32)
            assert su == k_csum_add(a & M32, ~b_ & M32)
            assert r2 == k_csum_replace2(a & M16, b_ & M16, (a ^ b_) & M16)
            assert r4 == k_csum_replace4(a & M16, b_ & M32, (a ^ b_) & M32)


def test_incremental_update_on_random_headers():
    """RFC 1624: for any data, replacing a 16/32-bit word incrementally gives
    exactly the from-scratch checksum (no 0xFFFF / 0x0000 confusion)."""
    rng = random.Random(11)
    cases = []
    for n in range(400):
        data = bytearray(rng.getrandbits(8) for _ in range(20))
        data[0] |= 1                               # non-zero data, like any real header
        if n % 7 == 0:                             # a sum that folds to 0xFFFF: checksum 0
            data[2:4] = b"\0\0"
            data[2:4] = struct.pack("!H", ~fold(rfc1071_sum(data)) & M16)
        k = rng.randrange(0, 5) * 4
        new = rng.choice([0, M32, rng.getrandbits(32)])
        cases.append((bytes(data), k, new))

    @njit
    def both(check, old32, new32):
        return (csum_replace2(check, old32 >> 16, new32 >> 16),
                csum_replace4(check, old32, new32))

    for data, k, new in cases:
        check = inet_csum(data)
        old = struct.unpack_from("!I", data, k)[0]
        after4 = data[:k] + struct.pack("!I", new) + data[k + 4:]
        after2 = data[:k] + struct.pack("!H", new >> 16) + data[k + 2:]
        r2, r4 = both(check, old, new)
        assert r4 == inet_csum(after4), (data.hex(), k, new)
        assert r2 == inet_csum(after2), (data.hex(), k, new)


# -- bpf_csum_diff ---------------------------------------------------------------

@njit
def _diff_in_packet(buf, meta, scratch, n, args, out, faults):
    for i in range(n):
        scratch[SCRATCH_FAULT] = 0
        ctx = make_xdp_md(buf, meta, scratch, i)
        out[i] = csum_diff_packet(ctx.pkt, args[i, 0], args[i, 1], args[i, 2], args[i, 3],
                                  args[i, 4])
        faults[i] = scratch[SCRATCH_FAULT]


def run_diff_in_packet(frames, args):
    b = batch_of(frames)
    out = np.zeros(len(frames), np.int64)
    faults = np.zeros(len(frames), np.int64)
    _diff_in_packet(b.buf, b.meta, new_scratch(), len(frames), np.array(args, np.int64), out,
                    faults)
    return out, faults


def ours_vs_kernel(frm, to, seed_be):
    """The Python kernel model's answer for network-order buffers, in our byte order."""
    return swap16(k_bpf_csum_diff(frm, to, swap_halves_bytes(seed_be)))


def test_csum_diff_packet_against_the_kernel_model():
    rng = random.Random(5)
    frames, args, expect = [], [], []
    for n in range(600):
        fw, tw = rng.randrange(0, 20), rng.randrange(0, 20)
        frm = bytes(rng.getrandbits(8) for _ in range(4 * fw))
        to = bytes(rng.getrandbits(8) for _ in range(4 * tw))
        if n % 10 == 1 and fw:      # a 'from' that is one's-complement zero, not all zero
            x = rng.getrandbits(16)
            frm = struct.pack("!HH", x, ~x & M16) + b"\0" * (len(frm) - 4)
        if n % 10 == 2:
            to = b"\0" * len(to)
        if n % 10 == 3:
            frm = b"\xff" * len(frm)
        seed = rng.choice([0, 1, M16, 0xFFFF0000, M32, rng.getrandbits(16), rng.getrandbits(32)])
        pad = rng.randrange(0, 7)                  # unaligned offsets
        frame = bytes(rng.getrandbits(8) for _ in range(pad)) + frm + b"\x5a" + to
        frames.append(frame)
        args.append((pad, len(frm), pad + len(frm) + 1, len(to), seed))
        expect.append(ours_vs_kernel(frm, to, seed))
    out, faults = run_diff_in_packet(frames, args)
    assert not faults.any()
    assert list(out) == expect


def test_csum_diff_words_against_the_kernel_model():
    @njit
    def shapes(w, seed):
        return (csum_diff_words((), (w[0],), seed),
                csum_diff_words((w[0],), (w[1],), seed),
                csum_diff_words((w[0], w[1], w[2], w[3]), (), seed),
                csum_diff_words((np.uint32(w[5]), w[6]), (w[2], w[3], np.uint32(w[4])), seed))

    def be(*ws):
        return b"".join(struct.pack("!I", x & M32) for x in ws)

    rng = random.Random(9)
    for n in range(300):
        w = [rng.choice([0, M32, rng.getrandbits(32)]) for _ in range(8)]
        if n % 5 == 0:
            w[1] = ~w[0] & M32
        seed = rng.choice([0, M16, M32, rng.getrandbits(16), rng.getrandbits(32)])
        got = shapes(np.array(w, np.int64), seed)
        want = (ours_vs_kernel(b"", be(w[0]), seed), ours_vs_kernel(be(w[0]), be(w[1]), seed),
                ours_vs_kernel(be(*w[:4]), b"", seed),
                ours_vs_kernel(be(w[5], w[6]), be(w[2], w[3], w[4]), seed))
        assert got == want, (w, seed)
    # words above 32 bits are taken modulo 2**32, as the C cast does
    assert shapes(np.array([1 << 40 | 5, 7, 0, 0, 0, 0, 0, 0], np.int64), 0)[1] == \
        shapes(np.array([5, 7, 0, 0, 0, 0, 0, 0], np.int64), 0)[1]


def glibc_random(n):
    """glibc random() after srandom(1): the kernel selftest's 512-byte buffer."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "srandom"):
        pytest.skip("no glibc")
    libc.srandom(1)
    libc.random.restype = ctypes.c_long
    out = [libc.random() for _ in range(n)]
    if out[:2] != [0x6B8B4567, 0x327B23C6]:
        pytest.skip("not glibc's random()")
    return out


DEADBEEF2 = struct.pack("<QQ", 0xDEADBEEFDEADBEEF, 0xBEEFDEADBEEFDEAD)


@pytest.mark.parametrize("name, frm, to, seed, result", [
    # test_csum_diff.c (the cases with sizes that are multiples of 4); buffers are
    # the little-endian u64 constants' bytes, seeds and results little-endian u16s
    ("push", b"", DEADBEEF2[:8], 0, 0x3B3B),
    ("push", b"", DEADBEEF2, 0x1234, 0x88AA),
    ("push", b"", "random", 0xFFFF, 0xCA45),
    ("pull", DEADBEEF2[:8], b"", 0, 0xC4C4),
    ("pull", DEADBEEF2, b"", 0x1234, 0x9BBD),
    ("pull", "random", b"", 0xFFFF, 0x35BA),
    ("diff", DEADBEEF2[:8], struct.pack("<Q", 0xABABABABABABABAB), 0, 0x7373),
    ("diff", b"\0" * 8, struct.pack("<Q", 0xABABABABABABABAB), 0, 0xAEAE),
    ("diff", DEADBEEF2[:8], b"\0" * 8, 0xFFFF, 0xC4C4),
    ("edge", b"", b"", 0, 0),
    ("edge", b"", b"", 0x1234, 0x1234),
    ("edge", b"\0" * 512, b"", 0xFFFF, 0xFFFF),
])
def test_kernel_selftest_vectors(name, frm, to, seed, result):
    if "random" in (frm, to):
        buf = struct.pack("<128I", *glibc_random(128))
        frm, to = (buf, to) if frm == "random" else (frm, buf)
    assert k_bpf_csum_diff(frm, to, seed) == result      # the model itself
    frame = b"\x01\x02" + frm + to + b"\x03"
    out, faults = run_diff_in_packet([frame], [(2, len(frm), 2 + len(frm), len(to),
                                                swap16(seed))])
    assert swap16(int(out[0])) == result and faults[0] == 0


def test_csum_diff_errors():
    frame = bytes(range(40))
    out, faults = run_diff_in_packet([frame] * 9, [
        (0, 7, 0, 0, 0),        # sizes not multiples of 4: -EINVAL, no fault
        (0, 0, 0, 15, 0),
        (0, 4, 0, 2, 0),
        (0, -4, 0, 4, 0),
        (0, 4, 38, 4, 0),       # 'to' past the end: -EFAULT and the packet faults
        (-4, 4, 0, 4, 0),       # 'from' before the start
        (0, 0, 1 << 40, 4, 0),
        (0, 0, 40, 0, 0),       # a zero size ignores its offset
        (36, 4, 0, 0, 0),       # the last 4 bytes: fine
    ])
    assert list(out[:4]) == [-22] * 4 and not faults[:4].any()
    assert list(out[4:7]) == [-14] * 3 and faults[4:7].all()
    assert out[7] == 0 and out[8] == ours_vs_kernel(frame[36:], b"", 0)
    assert not faults[7:].any()


# -- packet-level helpers: edge cases --------------------------------------------

@njit
def _headers(buf, meta, scratch, n, args, out, faults):
    for i in range(n):
        scratch[SCRATCH_FAULT] = 0
        ctx = make_xdp_md(buf, meta, scratch, i)
        pkt = ctx.pkt
        op, off, ln = args[i, 0], args[i, 1], args[i, 2]
        if op == 0:
            out[i] = ipv4_csum(pkt, off)
        elif op == 1:
            out[i] = ipv4_csum_set(pkt, off)
        elif op == 2:
            out[i] = csum_partial(pkt, off, ln, 0)
        elif op == 3:
            out[i] = l4_csum_ipv4(pkt, 0, off, ln, args[i, 3])
        else:
            out[i] = l4_csum_ipv6(pkt, 0, off, ln, args[i, 3])
        faults[i] = scratch[SCRATCH_FAULT]


def test_header_helpers_edges():
    ip = dpkt.ip.IP(src=b"\x0a\0\0\x01", dst=b"\x0a\0\0\x02", p=17, ttl=9,
                    opts=b"\x01\x01\x01\x00", data=dpkt.udp.UDP(sport=1, dport=2, data=b"abc"))
    ip.hl = 6
    good = bytes(ip)                          # IHL 6, checksums set by dpkt
    assert len(good) == 35 and good[0] == 0x46
    zeroed = good[:10] + b"\xAA\xAA" + good[10 + 2:]    # a wrong stored checksum
    bad_ihl = bytes([0x44]) + good[1:]
    frames = [good, zeroed, bad_ihl, good[:23], good, b"\x00" * 9, b"\x00" * 9, good, good]
    args = [(0, 0, 0, 0), (1, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0),
            (2, 0, len(good) + 1, 0), (2, 0, 9, 0), (2, 1, 8, 0), (3, 24, 11, 17),
            (3, 24, 12, 17)]
    b = batch_of(frames)
    out = np.zeros(len(frames), np.int64)
    faults = np.zeros(len(frames), np.int64)
    _headers(b.buf, b.meta, new_scratch(), len(frames), np.array(args, np.int64), out, faults)
    stored = struct.unpack_from("!H", good, 10)[0]
    assert out[0] == stored and out[1] == stored
    assert b.packet(1) == good                           # ipv4_csum_set wrote the field
    assert out[2] == -22 and faults[2] == 0 and b.packet(2) == bad_ihl
    assert out[3] == -14 and faults[3] == 1              # IHL 6 but 23 bytes
    assert out[4] == -14 and faults[4] == 1
    assert out[5] == 0 and out[6] == 0 and not faults[5:7].any()   # all-zero bytes: sum 0
    assert out[7] == struct.unpack_from("!H", good, 24 + 6)[0] and faults[7] == 0
    assert out[8] == -14 and faults[8] == 1


def test_udp_zero_checksum_is_sent_as_ffff():
    """Find a UDP payload whose computed checksum is 0: UDP sends 0xFFFF (RFC 768),
    TCP keeps 0; an all-zero ICMP message checksums to 0xFFFF."""
    src, dst = b"\x0a\0\0\x01", b"\x0a\0\0\x02"
    udp = dpkt.udp.UDP(sport=1, dport=2, data=b"\0\0")
    udp.ulen = 10
    hdr = bytes(udp)
    pseudo = rfc1071_sum(src + dst) + 17 + 10
    # choose the payload word so that the sum folds to 0xFFFF: checksum 0
    need = ~fold(pseudo + rfc1071_sum(hdr)) & M16
    seg = hdr[:8] + struct.pack("!H", need)
    assert inet_csum(seg, pseudo) == 0
    ip = dpkt.ip.IP(src=src, dst=dst, p=17, len=30)
    ip.sum = 0
    frame = ip.pack_hdr() + seg
    frame6 = (struct.pack("!IHBB", 0x60000000, 10, 17, 64) + b"\0" * 15 + b"\x01" +
              b"\0" * 15 + b"\x02")
    pseudo6 = rfc1071_sum(frame6[8:40]) + 17 + 10
    seg6 = hdr[:8] + struct.pack("!H", ~fold(pseudo6 + rfc1071_sum(hdr)) & M16)
    frames = [frame, frame, frame6 + seg6, frame6 + seg6, b"\0" * 28]
    args = [(3, 20, 10, 17), (3, 20, 10, 6), (4, 40, 10, 17), (4, 40, 10, 6), (3, 20, 8, 1)]
    b = batch_of(frames)
    out = np.zeros(len(frames), np.int64)
    faults = np.zeros(len(frames), np.int64)
    _headers(b.buf, b.meta, new_scratch(), len(frames), np.array(args, np.int64), out, faults)
    assert out[0] == M16 and out[2] == M16
    # the same bytes as TCP: the field is elsewhere (+16, beyond these 10 bytes), so
    # the segment is summed as it is, with the pseudo-header's protocol 6
    assert out[1] == inet_csum(seg, pseudo - 17 + 6)
    assert out[3] == inet_csum(seg6, pseudo6 - 17 + 6)
    assert out[4] == M16 and not faults.any()


# -- from a program --------------------------------------------------------------

def test_program_uses_the_helpers(tmp_path):
    """A loaded program decrements TTL and rewrites the UDP source port with the
    incremental helpers; dpkt finds every checksum right."""
    path = tmp_path / "nat.py"
    path.write_text(textwrap.dedent("""
        from dataplane import *
        from dataplane.csum import csum_replace2, csum_replace4, ipv4_csum, l4_csum_ipv4
        from dataplane.parse import ETH_P_IP, load_be16, load_be32, parse_ethhdr, parse_iphdr

        @xdp
        def nat(ctx):
            pkt = ctx.pkt
            proto, off = parse_ethhdr(pkt)
            if proto != ETH_P_IP:
                return XDP_PASS
            l4proto, l4 = parse_iphdr(pkt, off)
            if l4proto != 17 or l4 < 0 or len(pkt) < l4 + 8:
                return XDP_PASS
            old = load_be16(pkt, off + 8)
            check = csum_replace2(load_be16(pkt, off + 10), old, old - 0x100)
            pkt[off + 8] = pkt[off + 8] - 1
            src = load_be32(pkt, off + 12)
            check = csum_replace4(check, src, 0xC0A80001)
            pkt[off + 12] = 192
            pkt[off + 13] = 168
            pkt[off + 14] = 0
            pkt[off + 15] = 1
            pkt[off + 10] = check >> 8
            pkt[off + 11] = check
            if ipv4_csum(pkt, off) != check:
                return XDP_ABORTED
            usum = load_be16(pkt, l4 + 6)
            if usum != 0:
                usum = csum_replace4(usum, src, 0xC0A80001)
                usum = csum_replace2(usum, load_be16(pkt, l4), 4242)
                if usum == 0:
                    usum = 0xFFFF
                pkt[l4] = 4242 >> 8
                pkt[l4 + 1] = 4242 & 0xFF
                pkt[l4 + 6] = usum >> 8
                pkt[l4 + 7] = usum
                if l4_csum_ipv4(pkt, off, l4, load_be16(pkt, l4 + 4), 17) != usum:
                    return XDP_ABORTED
            return XDP_TX
        """))
    prog = load_program(str(path))
    frames = [f for f, lay in zip(small_frames(), map(layout_of, small_frames()))
              if lay[0] == 4 and lay[4] == 17 and lay[2] >= 0][:200]
    assert len(frames) == 200
    for f in frames:
        action, out = prog.test_run(f)
        assert action == XdpAction.XDP_TX
        ip = dpkt.ethernet.Ethernet(out).data
        assert ip.src == b"\xc0\xa8\x00\x01" and ip.data.sport == 4242
        assert dpkt_recompute(out) == out
