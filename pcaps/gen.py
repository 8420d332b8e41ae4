#!/usr/bin/env python3
"""Deterministic synthetic capture generator for the dataplane's tests and benchmarks.

``python pcaps/gen.py -o OUT.pcap --count N --seed S`` writes a classic pcap
(little-endian, microsecond timestamps, linktype Ethernet, snaplen 65535) with a
realistic traffic mix.  The output depends only on ``--count`` and ``--seed``:
the same arguments give the same bytes on every run (``random.Random(seed)``,
fixed epoch, no wall clock, no hash-ordered containers).

The mix (approximate shares of packets):

* IPv4 ~73%: TCP and UDP flows (thousands of them) plus ICMP echo request/reply,
  a few fragmented datagrams (first fragment with MF, later ones with a non-zero
  offset) and a few headers with options (IHL > 5);
* IPv6 ~23%: TCP and UDP flows, ICMPv6 echo request/reply, neighbour
  solicitations, and a few packets with a hop-by-hop or destination-options
  extension header in front of TCP/UDP;
* ARP ~4% requests and replies;
* ~5% of flows are VLAN tagged: single 802.1Q (0x8100), a few single 802.1ad
  (0x88a8), and QinQ (0x88a8 outer + 0x8100 inner).

TCP packets carry SYN, SYN/ACK, ACK, PSH/ACK, FIN/ACK and RST(/ACK); UDP carries
DNS-sized (60-120 B payload, port 53) and larger datagrams up to full size.
Frames range from 60 bytes (short frames are zero-padded) to 1514 bytes.

Frames are built from ``struct`` templates rather than a packet library so a
million packets take well under a minute.  Every checksum is real: the IPv4
header checksum, and the TCP, UDP, ICMP and ICMPv6 checksums (with the
pseudo-header where one applies; for fragmented datagrams the L4 checksum is
computed over the whole datagram before it is split).  Payload bytes are slices
of one seeded random buffer whose 16-bit prefix sums are precomputed, so a
payload's contribution to a checksum costs O(1).
"""

import argparse
import ipaddress
import itertools
import math
import random
import struct
import sys

EPOCH_S = 1_700_000_000          # first timestamp (2023-11-14T22:13:20Z)
MEAN_GAP_US = 250                # mean inter-packet gap
SNAPLEN = 65535
LINKTYPE_ETHERNET = 1
MIN_FRAME = 60
MAX_FRAME = 1514
MAX_PAYLOAD = 4096                # longest payload slice (fragmented datagrams)

ETH_IP4 = 0x0800
ETH_ARP = 0x0806
ETH_IP6 = 0x86DD
ETH_8021Q = 0x8100
ETH_8021AD = 0x88A8

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMP6 = 58
IP6_HOPOPTS = 0
IP6_DSTOPTS = 60

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 0x01, 0x02, 0x04, 0x08, 0x10
IP_DF = 0x4000
IP_MF = 0x2000

PCAP_GLOBAL = struct.Struct('<IHHiIII')
PCAP_REC = struct.Struct('<IIII').pack
P_IP4 = struct.Struct('!BBHHHBBH4s4s').pack
P_IP6 = struct.Struct('!IHBB16s16s').pack
P_TCP = struct.Struct('!HHIIHHHH').pack
P_UDP = struct.Struct('!HHHH').pack
P_ICMP = struct.Struct('!BBHHH').pack          # type, code, checksum, id, seq
P_ARP = struct.Struct('!HHBBH6s4s6s4s').pack
P_TAG = struct.Struct('!HH').pack              # (TCI, next type) after a TPID

# Source prefixes: (network, weight).  Several are denied by the bundled
# firewall program (203.0.113.0/24, 198.51.100.0/25, 10.66.0.0/16,
# 2001:db8:bad::/48, fd00:dead::/32); 198.51.100.0/24 straddles its /25 rule.
SRC4 = (('10.0.0.0/8', 26), ('10.66.0.0/16', 3), ('192.168.0.0/16', 22),
        ('172.16.0.0/12', 14), ('203.0.113.0/24', 5), ('198.51.100.0/24', 6),
        ('100.64.0.0/10', 8), ('192.0.2.0/24', 6), ('10.67.0.0/16', 2))
DST4 = (('10.1.0.0/16', 30), ('192.168.1.0/24', 20), ('172.20.0.0/16', 15),
        ('192.0.2.0/24', 15), ('203.0.113.0/24', 5), ('100.64.0.0/10', 15))
SRC6 = (('2001:db8::/32', 40), ('2001:db8:bad::/48', 8), ('2001:db8:bae::/48', 2),
        ('fd00::/8', 34), ('fd00:dead::/32', 8), ('fd00:deae::/32', 2))
DST6 = (('2001:db8:1::/48', 45), ('fd00:1::/32', 35), ('2001:db8:bad::/48', 5),
        ('2001:db8::/32', 15))

# Destination ports: (port or None for a random high port, weight).
TCP_DPORTS = ((443, 30), (80, 20), (22, 6), (8080, 6), (3306, 4), (23, 2),
              (6379, 3), (25, 2), (5432, 2), (8443, 2), (None, 18))
UDP_DPORTS = ((53, 42), (123, 10), (443, 8), (6379, 1), (23, 1), (3306, 1),
              (514, 3), (5353, 3), (80, 1), (8080, 1), (None, 20))

# TCP options on SYN and SYN/ACK: MSS 1460, NOP, WS 7, NOP, NOP, SACK-permitted.
SYN_OPTS = bytes.fromhex('020405b4010303070101' '0402')
# IPv4 options: router alert (IHL 6), and record route + EOL (IHL 8).
IP4_OPTS = (bytes.fromhex('94040000'), bytes.fromhex('070b04') + bytes(8) + b'\x00')
# IPv6 extension headers (8 bytes; the first byte, next header, is patched in):
# hop-by-hop with router alert + PadN, destination options with PadN.
IP6_EXT = ((IP6_HOPOPTS, bytes.fromhex('0000050200000100')),
           (IP6_DSTOPTS, bytes.fromhex('0000010400000000')))


def csum_words(b):
    """Sum of the big-endian 16-bit words of b (zero-padded to even length)."""
    if len(b) & 1:
        b += b'\x00'
    return sum(struct.unpack('!%dH' % (len(b) // 2), b))


def csum_fold(s):
    """Finish an Internet checksum from an unfolded ones'-complement sum."""
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def cumulative(pairs):
    """(values, cumulative weights) for a weighted pick via one random()."""
    vals = [v for v, _ in pairs]
    tot = float(sum(w for _, w in pairs))
    cum = list(itertools.accumulate(w / tot for _, w in pairs))
    cum[-1] = 1.0
    return vals, cum


def pick(vals, cum, r):
    for i, c in enumerate(cum):
        if r < c:
            return vals[i]
    return vals[-1]


def payload_slice(g, n):
    """(bytes, word sum) of an n-byte slice of generator g's payload buffer
    (``pay``, its 16-bit prefix sums ``pay_prefix``, ``pay_slots``), starting at a
    random even offset."""
    if n <= 0:
        return b'', 0
    i = int(g.rand() * g.pay_slots)
    off = i << 1
    s = g.pay_prefix[i + (n >> 1)] - g.pay_prefix[i]
    if n & 1:
        s += g.pay[off + n - 1] << 8
    return g.pay[off:off + n], s


class Flow:
    """A bidirectional 5-tuple plus its precomputed header pieces."""

    __slots__ = ('v6', 'proto', 'src', 'dst', 'sport', 'dport', 'smac', 'dmac',
                 'tags', 'l2_fwd', 'l2_rev', 'ttl', 'ip4_base', 'addr_sum',
                 'seq_c', 'seq_s', 'win', 'label')


class Generator:
    """Produces (timestamp_us, frame_bytes) records from one seeded RNG."""

    def __init__(self, seed, count):
        self.rng = rng = random.Random(seed)
        self.rand = rng.random
        self.bits = rng.getrandbits
        # Payload source: a random buffer and prefix sums of its 16-bit words.
        self.pay = rng.randbytes(1 << 16)
        self.pay_prefix = list(itertools.accumulate(
            struct.unpack('!%dH' % (len(self.pay) // 2), self.pay), initial=0))
        self.pay_slots = (len(self.pay) - MAX_PAYLOAD) // 2
        self.src4 = self._prefixes(SRC4)
        self.dst4 = self._prefixes(DST4)
        self.src6 = self._prefixes(SRC6)
        self.dst6 = self._prefixes(DST6)
        self.tcp_ports = cumulative(TCP_DPORTS)
        self.udp_ports = cumulative(UDP_DPORTS)
        self.routers = [bytes([0x00, 0x1b, 0x21]) + rng.randbytes(3) for _ in range(4)]
        n_flows = max(256, min(20000, count // 2))
        self.flows = [self._new_flow() for _ in range(n_flows)]
        self.flows4 = [f for f in self.flows if not f.v6]
        self.flows6 = [f for f in self.flows if f.v6]
        self.ts = EPOCH_S * 1_000_000

    # -- setup helpers ---------------------------------------------------------

    def _prefixes(self, table):
        nets = [(ipaddress.ip_network(n), w) for n, w in table]
        vals = [(int(n.network_address), n.max_prefixlen - n.prefixlen, n.max_prefixlen // 8)
                for n, _ in nets]
        cum = cumulative(nets)[1]
        return vals, cum

    def _addr(self, table):
        base, host_bits, nbytes = pick(table[0], table[1], self.rand())
        return (base | self.bits(host_bits)).to_bytes(nbytes, 'big')

    def _port(self, table):
        p = pick(table[0], table[1], self.rand())
        return p if p is not None else self._ri(1024, 65535)

    def _ri(self, a, b):
        """Uniform integer in [a, b] from one random() (stable across Pythons)."""
        return a + int(self.rand() * (b - a + 1))

    def _mac(self):
        # Locally administered unicast.
        return bytes([(self.bits(8) & 0xFC) | 0x02]) + self.bits(40).to_bytes(5, 'big')

    def _tags(self):
        r = self.rand()
        if r >= 0.05:
            return b''
        vid = self._ri(2, 4000)
        pcp = self.bits(3)
        r /= 0.05
        if r < 0.62:                                     # single 802.1Q
            return struct.pack('!HH', ETH_8021Q, (pcp << 13) | vid)
        if r < 0.70:                                     # single 802.1ad
            return struct.pack('!HH', ETH_8021AD, (pcp << 13) | vid)
        svid = self._ri(100, 200)                        # QinQ: S-tag then C-tag
        return struct.pack('!HHHH', ETH_8021AD, svid, ETH_8021Q, (pcp << 13) | vid)

    def _new_flow(self):
        f = Flow()
        f.v6 = self.rand() < 0.23
        f.proto = PROTO_TCP if self.rand() < 0.68 else PROTO_UDP
        if f.v6:
            f.src, f.dst = self._addr(self.src6), self._addr(self.dst6)
        else:
            f.src, f.dst = self._addr(self.src4), self._addr(self.dst4)
        f.dport = self._port(self.tcp_ports if f.proto == PROTO_TCP else self.udp_ports)
        f.sport = self._ri(32768, 60999)
        f.smac = self._mac()
        f.dmac = self.routers[self.bits(2)]
        f.tags = self._tags()
        et = struct.pack('!H', ETH_IP6 if f.v6 else ETH_IP4)
        f.l2_fwd = f.dmac + f.smac + f.tags + et
        f.l2_rev = f.smac + f.dmac + f.tags + et
        f.ttl = 255 if self.rand() < 0.03 else (128 if self.rand() < 0.3 else 64)
        f.addr_sum = csum_words(f.src) + csum_words(f.dst)
        # IPv4 header sum without proto/total length/id/flags: 0x45,tos=0 | ttl | addrs.
        f.ip4_base = 0x4500 + (f.ttl << 8) + f.addr_sum
        f.seq_c = self.bits(32)
        f.seq_s = self.bits(32)
        f.win = (64240, 65535, 29200, 502, 8192, 1024)[self._ri(0, 5)]
        f.label = self.bits(20)
        return f

    def _flow(self, flows):
        # Skewed popularity: low indices are picked more often.
        r = self.rand()
        return flows[int(len(flows) * r * r)]

    # -- per-packet builders -----------------------------------------------------

    _payload = payload_slice

    def _l3(self, f, rev, proto, l4, ip_flags=IP_DF, ip_id=None, opts=b'', opts_sum=0):
        """Wrap l4 bytes in an IPv4 or IPv6 header for flow f (src/dst swapped if rev)."""
        src, dst = (f.dst, f.src) if rev else (f.src, f.dst)
        if f.v6:
            return P_IP6(0x60000000 | f.label, len(l4), proto, f.ttl, src, dst) + l4
        ihl = 5 + (len(opts) >> 2)
        total = 20 + len(opts) + len(l4)
        if ip_id is None:
            ip_id = self.bits(16)
        s = f.ip4_base + ((ihl - 5) << 8) + proto + total + ip_id + ip_flags + opts_sum
        return P_IP4(0x40 | ihl, 0, total, ip_id, ip_flags, f.ttl, proto, csum_fold(s),
                     src, dst) + opts + l4

    def _max_l4(self, f, extra=0):
        """Largest L4 segment (header included) that keeps the frame <= 1514 bytes."""
        return MAX_FRAME - len(f.l2_fwd) - (40 if f.v6 else 20) - extra

    def _tcp_seg(self, f, rev, l3_extra=0):
        r = self.rand()
        if r < 0.07:
            flags, rev = TCP_SYN, False
        elif r < 0.13:
            flags, rev = TCP_SYN | TCP_ACK, True
        elif r < 0.53:
            flags = TCP_ACK
        elif r < 0.91:
            flags = TCP_PSH | TCP_ACK
        elif r < 0.97:
            flags = TCP_FIN | TCP_ACK
        else:
            flags = TCP_RST if self.rand() < 0.5 else TCP_RST | TCP_ACK
        opts = SYN_OPTS if flags & TCP_SYN else b''
        hlen = 20 + len(opts)
        room = self._max_l4(f, l3_extra) - hlen
        n = 0
        if flags == TCP_PSH | TCP_ACK or (flags == TCP_ACK and self.rand() < 0.4):
            r = self.rand()
            if r < 0.45:
                n = self._ri(1, 300)
            elif r < 0.7:
                n = self._ri(300, 1200)
            else:
                n = room
            n = min(n, room)
        payload, psum = self._payload(n)
        if rev:
            sport, dport, seq, ack = f.dport, f.sport, f.seq_s, f.seq_c
            f.seq_s = (f.seq_s + n + (1 if flags & (TCP_SYN | TCP_FIN) else 0)) & 0xFFFFFFFF
        else:
            sport, dport, seq, ack = f.sport, f.dport, f.seq_c, f.seq_s
            f.seq_c = (f.seq_c + n + (1 if flags & (TCP_SYN | TCP_FIN) else 0)) & 0xFFFFFFFF
        if not flags & TCP_ACK:
            ack = 0
        offflags = ((hlen >> 2) << 12) | flags
        win = 0 if flags == TCP_RST else f.win
        seglen = hlen + n
        s = (f.addr_sum + PROTO_TCP + seglen + sport + dport + (seq >> 16) + (seq & 0xFFFF)
             + (ack >> 16) + (ack & 0xFFFF) + offflags + win + psum)
        if opts:
            s += csum_words(opts)
        return P_TCP(sport, dport, seq, ack, offflags, win, csum_fold(s), 0) + opts + payload, rev

    def _udp_len(self, f, rev, room):
        if f.dport == 53:
            return self._ri(60, 120)
        r = self.rand()
        if r < 0.3:
            n = self._ri(8, 200)
        elif r < 0.7:
            n = self._ri(200, room)
        else:
            n = room - self._ri(0, 40)
        return min(n, room)

    def _udp_seg(self, f, rev, n):
        payload, psum = self._payload(n)
        sport, dport = (f.dport, f.sport) if rev else (f.sport, f.dport)
        ulen = 8 + n
        c = csum_fold(f.addr_sum + PROTO_UDP + ulen + sport + dport + ulen + psum) or 0xFFFF
        return P_UDP(sport, dport, ulen, c) + payload

    def _frame(self, f, rev, l3):
        frame = (f.l2_rev if rev else f.l2_fwd) + l3
        if len(frame) < MIN_FRAME:
            frame += bytes(MIN_FRAME - len(frame))
        return frame

    def flow_packet(self):
        f = self._flow(self.flows)
        if f.proto == PROTO_TCP:
            seg, rev = self._tcp_seg(f, self.rand() < 0.4)
        else:
            rev = self.rand() < 0.3
            seg = self._udp_seg(f, rev, self._udp_len(f, rev, self._max_l4(f) - 8))
        flags = IP_DF if f.proto == PROTO_TCP else (IP_DF if self.rand() < 0.5 else 0)
        return [self._frame(f, rev, self._l3(f, rev, f.proto, seg, ip_flags=flags))]

    def icmp4_echo(self):
        f = self._flow(self.flows4)
        rev = self.rand() < 0.45
        n = 56 if self.rand() < 0.8 else self._ri(0, self._max_l4(f) - 8)
        payload, psum = self._payload(n)
        typ = 0 if rev else 8
        ident, seq = f.sport, self.bits(16)
        c = csum_fold((typ << 8) + ident + seq + psum)
        icmp = P_ICMP(typ, 0, c, ident, seq) + payload
        return [self._frame(f, rev, self._l3(f, rev, PROTO_ICMP, icmp, ip_flags=0))]

    def icmp6_echo(self):
        f = self._flow(self.flows6)
        rev = self.rand() < 0.45
        n = 56 if self.rand() < 0.8 else self._ri(0, self._max_l4(f) - 8)
        payload, psum = self._payload(n)
        typ = 129 if rev else 128
        ident, seq = f.sport, self.bits(16)
        ln = 8 + n
        c = csum_fold(f.addr_sum + PROTO_ICMP6 + ln + (typ << 8) + ident + seq + psum)
        icmp = P_ICMP(typ, 0, c, ident, seq) + payload
        return [self._frame(f, rev, self._l3(f, rev, PROTO_ICMP6, icmp))]

    def icmp6_ns(self):
        f = self._flow(self.flows6)
        target = f.dst
        if self.rand() < 0.5:
            src = b'\xfe\x80' + bytes(6) + f.smac[:3] + b'\xff\xfe' + f.smac[3:]
        else:
            src = f.src
        dst = bytes.fromhex('ff0200000000000000000001ff') + target[13:]
        body = struct.pack('!I16sBB6s', 0, target, 1, 1, f.smac)   # reserved, target, SLLA
        ln = 4 + len(body)
        c = csum_fold(csum_words(src) + csum_words(dst) + PROTO_ICMP6 + ln + (135 << 8) + csum_words(body))
        icmp = struct.pack('!BBH', 135, 0, c) + body
        l3 = P_IP6(0x60000000, len(icmp), PROTO_ICMP6, 255, src, dst) + icmp
        l2 = b'\x33\x33\xff' + target[13:] + f.smac + f.tags + struct.pack('!H', ETH_IP6)
        return [l2 + l3]

    def arp(self):
        f = self._flow(self.flows4)
        spa = f.src
        tpa = spa[:3] + bytes([self._ri(1, 254)])
        tags = f.tags + struct.pack('!H', ETH_ARP)
        if self.rand() < 0.6:       # who-has tpa tell spa
            pkt = P_ARP(1, ETH_IP4, 6, 4, 1, f.smac, spa, bytes(6), tpa)
            l2 = b'\xff' * 6 + f.smac + tags
        else:                       # tpa is-at its MAC, to spa
            mac = f.dmac
            pkt = P_ARP(1, ETH_IP4, 6, 4, 2, mac, tpa, f.smac, spa)
            l2 = f.smac + mac + tags
        frame = l2 + pkt
        return [frame + bytes(MIN_FRAME - len(frame))] if len(frame) < MIN_FRAME else [frame]

    def ip4_options(self):
        f = self._flow(self.flows4)
        opts = IP4_OPTS[self.bits(1)]
        if f.proto == PROTO_TCP:
            seg, rev = self._tcp_seg(f, self.rand() < 0.4, l3_extra=len(opts))
        else:
            rev = self.rand() < 0.3
            seg = self._udp_seg(f, rev, self._udp_len(f, rev, self._max_l4(f, len(opts)) - 8))
        l3 = self._l3(f, rev, f.proto, seg, ip_flags=0, opts=opts, opts_sum=csum_words(opts))
        return [self._frame(f, rev, l3)]

    def ip4_fragments(self):
        f = self._flow(self.flows4)
        rev = self.rand() < 0.2
        # A whole datagram of 1.2 to 3 MTUs (or a small one cut into small pieces).
        small = self.rand() < 0.3
        n = self._ri(200, 600) if small else self._ri(1600, 4000)
        if f.proto == PROTO_TCP:
            payload, psum = self._payload(n)
            sport, dport = (f.dport, f.sport) if rev else (f.sport, f.dport)
            seq, ack = self.bits(32), self.bits(32)
            offflags = (5 << 12) | TCP_PSH | TCP_ACK
            s = (f.addr_sum + PROTO_TCP + 20 + n + sport + dport + (seq >> 16) + (seq & 0xFFFF)
                 + (ack >> 16) + (ack & 0xFFFF) + offflags + f.win + psum)
            seg = P_TCP(sport, dport, seq, ack, offflags, f.win, csum_fold(s), 0) + payload
        else:
            seg = self._udp_seg(f, rev, n)
        step = ((self._max_l4(f) if not small else self._ri(64, 200)) // 8) * 8
        ip_id = self.bits(16)
        frames = []
        for off in range(0, len(seg), step):
            piece = seg[off:off + step]
            more = IP_MF if off + step < len(seg) else 0
            l3 = self._l3(f, rev, f.proto, piece, ip_flags=more | (off >> 3), ip_id=ip_id)
            frames.append(self._frame(f, rev, l3))
        if self.rand() < 0.15:
            frames.reverse()        # out-of-order arrival
        return frames

    def ip6_ext(self):
        f = self._flow(self.flows6)
        first, ext = IP6_EXT[self.bits(1)]
        ext = bytes([f.proto]) + ext[1:]
        if f.proto == PROTO_TCP:
            seg, rev = self._tcp_seg(f, self.rand() < 0.4, l3_extra=len(ext))
        else:
            rev = self.rand() < 0.3
            seg = self._udp_seg(f, rev, self._udp_len(f, rev, self._max_l4(f, len(ext)) - 8))
        src, dst = (f.dst, f.src) if rev else (f.src, f.dst)
        l3 = P_IP6(0x60000000 | f.label, len(ext) + len(seg), first, f.ttl, src, dst) + ext + seg
        return [self._frame(f, rev, l3)]

    # -- driver ------------------------------------------------------------------

    def records(self, count):
        """Yield (ts_us, frame) for count packets."""
        rand = self.rand
        kinds = ((0.040, self.arp), (0.062, self.icmp4_echo), (0.078, self.icmp6_echo),
                 (0.085, self.icmp6_ns), (0.090, self.ip4_fragments), (0.098, self.ip4_options),
                 (0.103, self.ip6_ext))
        done = 0
        while done < count:
            r = rand()
            maker = self.flow_packet
            if r < 0.103:
                for bound, fn in kinds:
                    if r < bound:
                        maker = fn
                        break
            for frame in maker():
                if done >= count:
                    break
                # Exponential gaps, at least 1 us, from one random() each.
                self.ts += 1 + int(-MEAN_GAP_US * math.log(1.0 - rand()))
                done += 1
                yield self.ts, frame


def write_pcap(fh, records):
    """Write a classic little-endian microsecond pcap to the binary file fh."""
    fh.write(PCAP_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET))
    chunk = []
    for ts, frame in records:
        n = len(frame)
        chunk.append(PCAP_REC(ts // 1_000_000, ts % 1_000_000, n, n))
        chunk.append(frame)
        if len(chunk) >= 16384:
            fh.write(b''.join(chunk))
            chunk.clear()
    fh.write(b''.join(chunk))


def generate(path, count=4000, seed=1):
    """Write count packets generated from seed to path."""
    with open(path, 'wb') as fh:
        write_pcap(fh, Generator(seed, count).records(count))


def generate_bytes(count=4000, seed=1):
    """The pcap file generate() would write, as bytes (for tests)."""
    import io
    buf = io.BytesIO()
    write_pcap(buf, Generator(seed, count).records(count))
    return buf.getvalue()


def main(argv=None):
    ap = argparse.ArgumentParser(
        description='Write a deterministic synthetic Ethernet capture (classic pcap, '
                    'microsecond timestamps). The same --count and --seed always give '
                    'the same bytes.')
    ap.add_argument('-o', '--output', required=True, help='output pcap path')
    ap.add_argument('--count', type=int, default=4000, help='number of packets (default 4000)')
    ap.add_argument('--seed', type=int, default=1, help='random seed (default 1)')
    args = ap.parse_args(argv)
    if args.count < 0:
        ap.error('--count must be >= 0')
    generate(args.output, args.count, args.seed)
    return 0


if __name__ == '__main__':
    sys.exit(main())
