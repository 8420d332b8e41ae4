"""The live path's compiled kernels on rings built in memory (no root, no sockets):
the TPACKET_V3 walker, the TX-ring filler and the redirect splitter."""

import struct

import numpy as np

from dataplane.io.batch import PacketBatch
from dataplane.kernels import tpacket as K

BLOCK = 4096


def _frame(i, size=60):
    return bytes([0x02, 0, 0, 0, 0, i]) + bytes([0x02, 0, 0, 0, 1, i]) + b"\x08\x00" + \
        bytes([i]) * (size - 14)


def _block(ring, b, frames, status=K.TP_STATUS_USER):
    """Write block ``b``: frames is a list of (bytes, tp_status, pkttype, (tci, tpid))."""
    base = b * BLOCK
    struct.pack_into("<IIIII", ring, base, 3, 0, status, len(frames), 48)
    off = 48
    for k, (data, tpst, pkttype, vlan) in enumerate(frames):
        mac = 80
        nxt = 0 if k == len(frames) - 1 else (mac + len(data) + 15) & ~15
        tci, tpid = vlan or (0, 0)
        struct.pack_into("<IIIIIIHHIIH", ring, base + off, nxt, 1000 + k, 500 + k, len(data),
                         len(data) + 4 * (k == 0), tpst, mac, mac + 14, 0, tci, tpid)
        ring[base + off + K.H3_SLL + K.SLL_PKTTYPE] = pkttype
        ring[base + off + mac:base + off + mac + len(data)] = np.frombuffer(data, np.uint8)
        off += nxt


def test_walk_v3_copies_frames_restores_vlan_skips_outgoing_and_resumes():
    ring = np.zeros(3 * BLOCK, np.uint8)
    vlan = K.TP_STATUS_USER | K.TP_STATUS_VLAN_VALID | K.TP_STATUS_VLAN_TPID_VALID
    _block(ring, 0, [(_frame(1), K.TP_STATUS_USER, 0, None),
                     (_frame(2), vlan, 0, (0x0064, 0x88A8)),
                     (_frame(3), K.TP_STATUS_USER, K.PACKET_OUTGOING, None)])
    _block(ring, 1, [(_frame(4, 1000), K.TP_STATUS_USER, 3, None)])
    st = np.zeros(K.ST_SIZE, np.int64)
    b = PacketBatch(2)
    status = K.walk_v3(ring, BLOCK, 3, 7, b.buf, b.meta, 0, 2, b.headroom, b.tailroom, st, 0)
    assert status == K.FULL and st[K.ST_COUNT] == 2
    b.count = 2
    assert b.packet(0) == _frame(1)
    f2 = _frame(2)
    assert b.packet(1) == f2[:12] + b"\x88\xa8\x00\x64" + f2[12:]   # the tag is back
    assert list(b.ifindex[:2]) == [7, 7]
    assert b.ts_ns[0] == 1000 * 10**9 + 500 and b.snap_cut[0] == 4 and b.snap_cut[1] == 0
    assert st[K.ST_BYTES] == 60 + 64
    assert ring[K.BD_STATUS] == K.TP_STATUS_USER       # block 0 not done: not handed back
    status = K.walk_v3(ring, BLOCK, 3, 7, b.buf, b.meta, 0, 2, b.headroom, b.tailroom, st, 0)
    assert status == K.EMPTY and st[K.ST_COUNT] == 1
    b.count = 1
    assert b.packet(0) == _frame(4, 1000)
    assert st[K.ST_SKIPPED] == 1 and st[K.ST_BLOCKS] == 2
    assert ring[K.BD_STATUS] == 0 and ring[BLOCK + K.BD_STATUS] == 0   # handed back
    assert st[K.ST_BLOCK] == 2
    assert K.walk_v3(ring, BLOCK, 3, 7, b.buf, b.meta, 0, 2, b.headroom, b.tailroom,
                     st, 0) == K.EMPTY


def test_walk_v3_asks_for_a_bigger_buffer_for_an_outsized_frame():
    ring = np.zeros(2 * BLOCK, np.uint8)
    _block(ring, 0, [(_frame(1, 3000), K.TP_STATUS_USER, 0, None)])
    st = np.zeros(K.ST_SIZE, np.int64)
    b = PacketBatch(1, buffer_bytes=2048)
    assert K.walk_v3(ring, BLOCK, 2, 1, b.buf, b.meta, 0, 1, b.headroom, b.tailroom,
                     st, 0) == K.NEED_BUFFER
    b.ensure_buffer(int(st[K.ST_NEED]))
    assert K.walk_v3(ring, BLOCK, 2, 1, b.buf, b.meta, 0, 1, b.headroom, b.tailroom,
                     st, 0) == K.EMPTY
    b.count = 1
    assert b.packet(0) == _frame(1, 3000)


def _super_frame(v6, payload, flags="PA"):
    """A TSO frame as a local TCP sender hands it to a packet socket."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether
    ip = IPv6(src="fc00::1", dst="fc00::2") if v6 else IP(src="10.0.0.1", dst="10.0.0.2",
                                                           id=7, flags="DF")
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / Dot1Q(vlan=3) / ip
                 / TCP(sport=4000, dport=80, seq=1000, flags=flags,
                       options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))])
                 / payload)


def test_walk_v3_cuts_tcp_super_frames_into_wire_segments():
    """scapy decodes the segments: each fits the MTU, sequence numbers advance,
    checksums verify, FIN/PSH only on the last, payloads join to the original."""
    from scapy.layers.inet import TCP
    from scapy.layers.l2 import Ether
    big = 64 * 1024
    ring = np.zeros(2 * big, np.uint8)
    payload = bytes(range(256)) * 40  # 10,240 bytes
    for v6 in (False, True):
        frame = _super_frame(v6, payload, flags="FPA")
        ring[:] = 0
        base = 0
        struct.pack_into("<IIIII", ring, base, 3, 0, K.TP_STATUS_USER, 2, 48)
        small = _frame(9)
        for k, data in enumerate((frame, small)):
            off = 48 if k == 0 else 48 + ((80 + len(frame) + 15) & ~15)
            nxt = (80 + len(frame) + 15) & ~15 if k == 0 else 0
            struct.pack_into("<IIIIIIHHIIH", ring, off, nxt, 1, 2, len(data), len(data),
                             K.TP_STATUS_USER, 80, 80 + 14, 0, 0, 0)
            ring[off + 80:off + 80 + len(data)] = np.frombuffer(data, np.uint8)
        st = np.zeros(K.ST_SIZE, np.int64)
        b = PacketBatch(64)
        status = K.walk_v3(ring, big, 2, 5, b.buf, b.meta, 0, 64, b.headroom, b.tailroom, st,
                           1500)
        assert status == K.EMPTY and st[K.ST_GSO] == 1
        n = int(st[K.ST_COUNT])
        b.count = n
        segs = [Ether(b.packet(i)) for i in range(n - 1)]
        assert b.packet(n - 1) == small               # the frame after it, untouched
        hdr = 20 + 32 if not v6 else 40 + 32
        assert n - 1 == -(-len(payload) // (1500 - hdr))
        joined = b""
        for i, seg in enumerate(segs):
            l3 = seg.payload.payload                  # under the 802.1Q tag
            tcp = l3[TCP]
            assert len(bytes(l3)) <= 1500
            assert tcp.seq == 1000 + len(joined)
            flags = str(tcp.flags)
            assert ("F" in flags and "P" in flags) == (i == n - 2)
            joined += bytes(tcp.payload)
            raw = bytes(l3)
            l3.chksum = None if not v6 else l3.chksum
            tcp.chksum = None
            rebuilt = type(l3)(bytes(l3))            # scapy recomputes: must agree
            assert rebuilt[TCP].chksum == type(l3)(raw)[TCP].chksum
            if not v6:
                assert type(l3)(raw).chksum == rebuilt.chksum and rebuilt.id == 7 + i
        assert joined == payload
        assert all(b.ts_ns[i] == b.ts_ns[0] for i in range(n - 1))


def test_ring_send_fills_free_frames_and_stops_when_full():
    size, frames = 2048, 4
    ring = np.zeros(size * frames, np.uint8)
    b = PacketBatch(8)
    for i in range(6):
        b.append(_frame(i, 60 + i))
    idx = np.arange(6, dtype=np.int64)
    st = np.zeros(K.ST_SIZE, np.int64)
    assert K.ring_send(ring, size, frames, b.buf, b.meta, idx, 0, 6, st) == K.BUSY
    assert st[K.ST_SENT] == 4 and st[K.ST_POS] == 4 and st[K.ST_HEAD] == 0
    for f in range(frames):
        status, length = struct.unpack_from("<II", ring, f * size)
        assert status == K.TP_STATUS_SEND_REQUEST and length == 60 + f
        assert ring[f * size + K.H2_DATA:f * size + K.H2_DATA + length].tobytes() == \
            _frame(f, 60 + f)
    assert K.ring_pending(ring, size, frames) == 4
    struct.pack_into("<I", ring, 0, K.TP_STATUS_AVAILABLE)   # the kernel sent frame 0
    assert K.ring_send(ring, size, frames, b.buf, b.meta, idx, 4, 6, st) == K.BUSY
    assert st[K.ST_SENT] == 1 and st[K.ST_POS] == 5


def test_split_targets_groups_redirects_by_port_unknown_last():
    b = PacketBatch(8)
    targets_of = [5, 9, 5, 42, 9, 5]
    for i, t in enumerate(targets_of):
        b.append(_frame(i))
        b.redirect[i] = t
    order = np.arange(8, dtype=np.int64)
    out = np.zeros(8, np.int64)
    counts = np.zeros(3, np.int64)
    targets = np.array([9, 5], np.int64)
    K.split_targets(b.meta, order, 0, 6, targets, 2, out, counts)
    assert list(counts) == [2, 3, 1]
    assert list(out[:6]) == [1, 4, 0, 2, 5, 3]


def _pseudo_partial(frame, l3, l4, proto, field, v6=False):
    """The frame as an offloading stack leaves it: the L4 checksum field holds the
    folded pseudo-header sum (not inverted)."""
    f = bytearray(frame)
    if v6:
        src, dst = f[l3 + 8:l3 + 24], f[l3 + 24:l3 + 40]
    else:
        src, dst = f[l3 + 12:l3 + 16], f[l3 + 16:l3 + 20]
    length = len(f) - l4
    words = bytes(src) + bytes(dst) + struct.pack("!HH", proto, length)
    s = sum(struct.unpack(f"!{len(words) // 2}H", words))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    struct.pack_into("!H", f, field, s)
    return bytes(f)


def test_complete_csum_finishes_offloaded_tcp_and_udp_checksums():
    import dpkt

    tcp = dpkt.tcp.TCP(sport=1234, dport=80, seq=7, flags=dpkt.tcp.TH_SYN, data=b"hello!x")
    ip = dpkt.ip.IP(src=b"\x0a\0\0\x01", dst=b"\x0a\0\0\x02", p=6, data=tcp)
    eth = dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, data=ip)
    good = bytes(eth)                                  # dpkt fills in the checksums
    vlan = good[:12] + b"\x81\x00\x00\x05" + good[12:]
    udp = dpkt.udp.UDP(sport=53, dport=5353, data=b"q" * 33)
    ip6 = dpkt.ip6.IP6(src=b"\xfd" + bytes(15), dst=b"\xfd" + bytes(14) + b"\x01", nxt=17,
                       hlim=64, data=udp, plen=8 + 33)
    good6 = bytes(dpkt.ethernet.Ethernet(src=b"\x02" * 6, dst=b"\x04" * 6, data=ip6,
                                         type=dpkt.ethernet.ETH_TYPE_IP6))
    cases = [(good, _pseudo_partial(good, 14, 34, 6, 34 + 16)),
             (vlan, _pseudo_partial(vlan, 18, 38, 6, 38 + 16)),
             (good6, _pseudo_partial(good6, 14, 54, 17, 54 + 6, v6=True))]
    for want, partial in cases:
        assert partial != want
        buf = np.zeros(4096, np.uint8)
        buf[100:100 + len(partial)] = np.frombuffer(partial, np.uint8)
        assert K.complete_csum(buf, 100, 100 + len(partial)) == 1
        assert buf[100:100 + len(want)].tobytes() == want
    arp = np.zeros(100, np.uint8)
    arp[12:14] = (0x08, 0x06)
    assert K.complete_csum(arp, 0, 60) == 0
