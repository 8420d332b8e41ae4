#!/usr/bin/env python3
"""Deterministic benchmark capture and config for an L4 load balancer (Katran-like).

``python pcaps/gen_l4lb.py OUT.pcap --config OUT.toml [--packets N] [--flows N] [--seed S]``
(defaults: 1,000,000 packets, 100,000 flows, seed 1) writes a classic pcap
(little-endian, microsecond timestamps, linktype Ethernet, snaplen 65535) of
client-to-VIP traffic as the load balancer receives it, and the matching
TOML config of VIPs and their reals.  The output depends only on the three
numbers: the same arguments give the same bytes on every run
(``random.Random(seed)``, fixed epoch, no wall clock, no hash-ordered
containers).

The config (read with ``tomllib``)::

    gateway_mac = "02:00:00:00:00:fe"
    [[vip]]
    address = "10.200.0.1"
    port = 80
    proto = "tcp"
    flags = []
    reals = [
      { address = "10.0.1.7", weight = 2 },
      ...
    ]

* 16 VIPs, one service each: IPv4 10.200.0.1 .. 10.200.0.12 cycle through
  tcp/80, tcp/443, udp/443 (4 of each); IPv6 fc00:200::1 .. fc00:200::4 are
  tcp/80, tcp/443, udp/443, tcp/443.  These do not depend on the seed.
* 100 reals: 80 IPv4 (10.0.1.1 .. 10.0.1.80) and 20 IPv6 (fc00:1::1 ..
  fc00:1::14).  Each IPv4 VIP gets 12-20 reals from the whole pool (both
  families), each IPv6 VIP 12-20 of the IPv6 reals only; weights 1-3.  Every
  real of the pool serves at least one VIP.  Which reals and weights depends
  on the seed.

The capture (every frame from 02:00:00:00:00:02 to the load balancer's MAC
02:00:00:00:00:01, client to VIP only):

* ``--flows`` client flows (5-tuples, all distinct).  Clients come from
  192.168.0.0/16 or 100.64.0.0/10 (IPv4) and 2001:db8::/32 (IPv6), source
  ports 1024-65535; the destination is a VIP's address, port and protocol
  (uniform over the VIPs of the flow's family).  Exactly one flow in every
  block of ten consecutive flows is IPv6, so 10% of flows are IPv6.
* Every flow's first packet is its "new flow" packet: a TCP SYN (MSS, SACK
  permitted, timestamps, window scale; 74 bytes over IPv4) or, for UDP, the
  flow's first datagram (QUIC-Initial sized, 1200 bytes of payload).  Exactly
  ``--flows`` packets are first packets, so new/all = flows/packets: 10% with
  the defaults; for other arguments the ratio is flows/packets, not 10%
  (``--flows`` must be between 1 and ``--packets``).  Their positions are
  random (each remaining packet is a new-flow packet with probability
  remaining flows / remaining packets; the very first packet always is).
* Every other packet belongs to a flow already started: TCP ACK (no payload),
  ACK with a full-size segment, or PSH|ACK with a small, medium or full-size
  payload, all carrying the timestamp option; UDP datagrams, mostly small.
  The family is IPv6 with probability 0.1, then the flow is picked among that
  family's started flows with skewed popularity (the flows started first are
  hottest, index = n * r * r), so about 10% of all packets are IPv6.
* IPv4: IHL 5, DF, no fragments, TTL 64, random IP ID; IPv6: hop limit 64 and
  a per-flow flow label.  Every checksum is real (IPv4 header, TCP and UDP
  with the pseudo-header).  Frames are 64 to 1500 bytes with no padding (a
  pure ACK is 66 bytes over IPv4, 86 over IPv6); most are small.
* Timestamps increase by exponential gaps (at least 1 us, mean ~10 us), so a
  million packets span about 10 s (less than a 30 s UDP flow timeout).

Frames are built from ``struct`` templates with checksums summed incrementally
(payloads are slices of one seeded random buffer with precomputed 16-bit
prefix sums), so the default million packets take seconds, not minutes.
"""

import argparse
import ipaddress
import itertools
import math
import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen import csum_fold, csum_words, cumulative, payload_slice, pick, write_pcap  # pcaps/gen.py

sys.path.pop(0)

EPOCH_S = 1_700_000_000          # first timestamp (2023-11-14T22:13:20Z)
MEAN_GAP_US = 10                 # mean inter-packet gap (exponential, >= 1 us)
MIN_FRAME = 64
MAX_FRAME = 1500
PAY_BUF = 1 << 16

DEFAULT_PACKETS = 1_000_000
DEFAULT_FLOWS = 100_000

LB_MAC = bytes.fromhex('020000000001')       # the load balancer (destination)
PEER_MAC = bytes.fromhex('020000000002')     # the upstream router (source)
GATEWAY_MAC = '02:00:00:00:00:fe'            # where the load balancer sends encapsulated packets

ETH_IP4 = 0x0800
ETH_IP6 = 0x86DD
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_NAMES = {PROTO_TCP: 'tcp', PROTO_UDP: 'udp'}
TTL = 64
IP_DF = 0x4000
TCP_SYN, TCP_PSH, TCP_ACK = 0x02, 0x08, 0x10
SYN_WIN = 64240
QUIC_INITIAL = 1200              # payload bytes of a UDP flow's first datagram

# VIPs: (address, port, proto).  IPv4 ones cycle tcp/80, tcp/443, udp/443.
_SERVICES = ((80, PROTO_TCP), (443, PROTO_TCP), (443, PROTO_UDP))
VIPS4 = tuple(('10.200.0.%d' % (i + 1),) + _SERVICES[i % 3] for i in range(12))
VIPS6 = (('fc00:200::1', 80, PROTO_TCP), ('fc00:200::2', 443, PROTO_TCP),
         ('fc00:200::3', 443, PROTO_UDP), ('fc00:200::4', 443, PROTO_TCP))
REALS4 = tuple(str(ipaddress.IPv4Address('10.0.1.0') + i) for i in range(1, 81))
REALS6 = tuple(str(ipaddress.IPv6Address('fc00:1::') + i) for i in range(1, 21))
REALS_PER_VIP = (12, 20)
WEIGHTS = (1, 3)

# Client prefixes: (network, weight).
CLIENTS4 = (('192.168.0.0/16', 1), ('100.64.0.0/10', 1))
CLIENTS6 = (('2001:db8::/32', 1),)
V6_SHARE = 0.1                   # of flows (exactly, per block of 10) and of established packets

ETH4 = LB_MAC + PEER_MAC + struct.pack('!H', ETH_IP4)
ETH6 = LB_MAC + PEER_MAC + struct.pack('!H', ETH_IP6)
ETH_LEN = 14
TS_OPT_LEN = 12                  # NOP, NOP, timestamp (kind 8, len 10)
SYN_OPT_LEN = 20                 # MSS, SACK-permitted, timestamp, NOP, window scale 7

P_IP4 = struct.Struct('!BBHHHBBH4s4s').pack
P_IP6 = struct.Struct('!IHBB16s16s').pack
P_TCP = struct.Struct('!HHIIHHHH').pack
P_UDP = struct.Struct('!HHHH').pack
P_TS_OPT = struct.Struct('!HHII').pack            # 0x0101, 0x080a, TSval, TSecr
P_SYN_OPT = struct.Struct('!HHHHIIBBBB').pack     # MSS, SACK-perm, TS, NOP, WS






class Flow:
    """One client flow to a VIP, with its precomputed header pieces and TCP state."""

    __slots__ = ('v6', 'proto', 'src', 'dst', 'sport', 'dport', 'eth', 'ip_base',
                 'l4_base', 'label', 'seq', 'ack', 'win', 'tsoff', 'tsecr', 'mss')


class Generator:
    """Produces (timestamp_us, frame_bytes) records and the config from one seeded RNG."""

    def __init__(self, seed, packets, flows):
        if packets < 0:
            raise ValueError('packets must be >= 0')
        if packets and not 1 <= flows <= packets:
            raise ValueError('flows must be between 1 and packets (%d)' % packets)
        self.packets, self.n_flows = packets, flows if packets else 0
        self.rng = rng = random.Random(seed)
        self.rand = rng.random
        self.bits = rng.getrandbits
        self.vips = self._make_vips()
        self.pay = rng.randbytes(PAY_BUF)
        self.pay_prefix = list(itertools.accumulate(
            struct.unpack('!%dH' % (PAY_BUF // 2), self.pay), initial=0))
        self.pay_slots = (PAY_BUF - MAX_FRAME) // 2
        self.clients4 = self._prefixes(CLIENTS4)
        self.clients6 = self._prefixes(CLIENTS6)
        self.vips4 = [(ipaddress.ip_address(a).packed, p, pr) for a, p, pr, _ in self.vips if ':' not in a]
        self.vips6 = [(ipaddress.ip_address(a).packed, p, pr) for a, p, pr, _ in self.vips if ':' in a]
        self.tuples = set()
        self.started4 = []
        self.started6 = []
        self.v6_slot = 0
        self.ts = EPOCH_S * 1_000_000
        self.counts = {}                 # packets per kind (e.g. "ip4_tcp_syn"), filled by records()

    # -- setup -----------------------------------------------------------------

    def _ri(self, a, b):
        """Uniform integer in [a, b] from one random() (stable across Pythons)."""
        return a + int(self.rand() * (b - a + 1))

    def _shuffled(self, items):
        """A copy of items in random order (Fisher-Yates on random())."""
        items = list(items)
        for i in range(len(items) - 1, 0, -1):
            j = self._ri(0, i)
            items[i], items[j] = items[j], items[i]
        return items

    def _make_vips(self):
        """[(address, port, proto, [(real, weight), ...]), ...] in config order.

        Every real of the pool serves at least one VIP: the IPv4 reals are dealt
        round-robin over the IPv4 VIPs and the IPv6 reals over the IPv6 VIPs, then
        each VIP is topped up to its 12-20 reals from its pool (IPv4 VIPs: both
        families; IPv6 VIPs: IPv6 only).
        """
        order = {r: i for i, r in enumerate(REALS4 + REALS6)}
        chosen = {v: [] for v in VIPS4 + VIPS6}
        for vips, reals in ((VIPS4, REALS4), (VIPS6, REALS6)):
            for i, r in enumerate(self._shuffled(reals)):
                chosen[vips[i % len(vips)]].append(r)
        out = []
        for vip in VIPS4 + VIPS6:
            have = chosen[vip]
            pool = REALS6 if ':' in vip[0] else REALS4 + REALS6
            extra = [r for r in self._shuffled(pool) if r not in have]
            have += extra[:max(0, self._ri(*REALS_PER_VIP) - len(have))]
            have.sort(key=order.__getitem__)
            out.append(vip + ([(r, self._ri(*WEIGHTS)) for r in have],))
        return out

    def config_text(self):
        """The TOML config (one [[vip]] table per VIP)."""
        out = ['# L4 load balancer config written by pcaps/gen_l4lb.py (%d VIPs, %d reals in the pool)'
               % (len(self.vips), len(REALS4) + len(REALS6)),
               'gateway_mac = "%s"' % GATEWAY_MAC]
        for addr, port, proto, reals in self.vips:
            out += ['', '[[vip]]', 'address = "%s"' % addr, 'port = %d' % port,
                    'proto = "%s"' % PROTO_NAMES[proto], 'flags = []', 'reals = [']
            out += ['  { address = "%s", weight = %d },' % rw for rw in reals]
            out.append(']')
        return '\n'.join(out) + '\n'

    def _prefixes(self, table):
        nets = [(ipaddress.ip_network(n), w) for n, w in table]
        vals = [(int(n.network_address), n.max_prefixlen - n.prefixlen, n.max_prefixlen // 8)
                for n, _ in nets]
        return vals, cumulative(nets)[1]

    def _addr(self, table):
        base, host_bits, nbytes = pick(table[0], table[1], self.rand())
        host = self.bits(host_bits)
        if host in (0, (1 << host_bits) - 1):       # no network / all-ones host parts
            host = 1
        return (base | host).to_bytes(nbytes, 'big')

    def _new_flow(self, index):
        if index % 10 == 0:
            self.v6_slot = self._ri(0, 9)
        f = Flow()
        f.v6 = v6 = index % 10 == self.v6_slot
        vips = self.vips6 if v6 else self.vips4
        f.dst, f.dport, f.proto = vips[self._ri(0, len(vips) - 1)]
        while True:
            f.src = self._addr(self.clients6 if v6 else self.clients4)
            f.sport = self._ri(1024, 65535)
            key = (f.src, f.sport, f.dst, f.dport, f.proto)
            if key not in self.tuples:
                self.tuples.add(key)
                break
        addr_sum = csum_words(f.src) + csum_words(f.dst)
        f.eth = ETH6 if v6 else ETH4
        # IPv4 header sum without total length, ID and checksum.
        f.ip_base = 0x4500 + IP_DF + (TTL << 8) + f.proto + addr_sum
        # L4 sum of the pseudo-header (without length) and the ports.
        f.l4_base = addr_sum + f.proto + f.sport + f.dport
        f.label = self.bits(20)
        f.seq = self.bits(32)
        f.ack = self.bits(32)
        f.win = (502, 501, 2048, 1024, 64240, 65535)[self._ri(0, 5)]
        f.tsoff = self.bits(32)
        f.tsecr = self.bits(32)
        f.mss = 1440 if v6 else 1460
        return f

    # -- per-packet builders ---------------------------------------------------

    _payload = payload_slice

    def _frame(self, f, l4):
        """Ethernet and IP headers around the L4 segment l4 of flow f."""
        n = len(l4)
        if f.v6:
            return f.eth + P_IP6(0x60000000 | f.label, n, f.proto, TTL, f.src, f.dst) + l4
        total = 20 + n
        ip_id = self.bits(16)
        return f.eth + P_IP4(0x45, 0, total, ip_id, IP_DF, TTL, f.proto,
                             csum_fold(f.ip_base + total + ip_id), f.src, f.dst) + l4

    def _tsval(self, f):
        return (f.tsoff + self.ts // 1000) & 0xFFFFFFFF

    def _syn(self, f):
        tsval = self._tsval(f)
        opts = P_SYN_OPT(0x0204, f.mss, 0x0402, 0x080A, tsval, 0, 1, 3, 3, 7)
        hlen = 20 + SYN_OPT_LEN
        offflags = ((hlen >> 2) << 12) | TCP_SYN
        seq = f.seq
        s = (f.l4_base + hlen + (seq >> 16) + (seq & 0xFFFF) + offflags + SYN_WIN
             + 0x0204 + f.mss + 0x0402 + 0x080A + (tsval >> 16) + (tsval & 0xFFFF) + 0x0103 + 0x0307)
        f.seq = (seq + 1) & 0xFFFFFFFF
        f.ack = (f.ack + 1) & 0xFFFFFFFF
        return P_TCP(f.sport, f.dport, seq, 0, offflags, SYN_WIN, csum_fold(s), 0) + opts

    def _tcp(self, f):
        room = MAX_FRAME - ETH_LEN - (40 if f.v6 else 20) - 20 - TS_OPT_LEN
        r = self.rand()
        if r < 0.40:
            flags, n, kind = TCP_ACK, 0, 'tcp_ack'
        elif r < 0.50:
            flags, n, kind = TCP_ACK, room, 'tcp_ack_data'
        else:
            flags, kind = TCP_PSH | TCP_ACK, 'tcp_pshack'
            r = self.rand()
            if r < 0.75:
                n = self._ri(1, 200)
            elif r < 0.92:
                n = self._ri(200, 1000)
            else:
                n = self._ri(1000, room)
        payload, psum = self._payload(n)
        if self.rand() < 0.3:                      # the server sent something meanwhile
            f.ack = (f.ack + self._ri(1, 1400)) & 0xFFFFFFFF
        tsval = self._tsval(f)
        tsecr = f.tsecr = (f.tsecr + self._ri(0, 3)) & 0xFFFFFFFF
        hlen = 20 + TS_OPT_LEN
        offflags = ((hlen >> 2) << 12) | flags
        seq, ack = f.seq, f.ack
        s = (f.l4_base + hlen + n + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF)
             + offflags + f.win + 0x0101 + 0x080A + (tsval >> 16) + (tsval & 0xFFFF)
             + (tsecr >> 16) + (tsecr & 0xFFFF) + psum)
        f.seq = (seq + n) & 0xFFFFFFFF
        return (P_TCP(f.sport, f.dport, seq, ack, offflags, f.win, csum_fold(s), 0)
                + P_TS_OPT(0x0101, 0x080A, tsval, tsecr) + payload), kind

    def _udp(self, f, n):
        payload, psum = self._payload(n)
        ulen = 8 + n
        c = csum_fold(f.l4_base + ulen + ulen + psum) or 0xFFFF
        return P_UDP(f.sport, f.dport, ulen, c) + payload

    def _udp_len(self, f):
        room = MAX_FRAME - ETH_LEN - (40 if f.v6 else 20) - 8
        r = self.rand()
        if r < 0.70:
            return self._ri(MIN_FRAME - ETH_LEN - 20 - 8, 200)
        if r < 0.90:
            return self._ri(200, 1000)
        return self._ri(1000, room)

    # -- driver ------------------------------------------------------------------

    def records(self):
        """Yield (ts_us, frame) for all packets."""
        rand = self.rand
        counts = self.counts
        left_new, left = self.n_flows, self.packets
        started4, started6 = self.started4, self.started6
        index = 0
        while left:
            self.ts += 1 + int(-MEAN_GAP_US * math.log(1.0 - rand()))
            if not index or rand() * left < left_new:
                f = self._new_flow(index)
                index += 1
                left_new -= 1
                (started6 if f.v6 else started4).append(f)
                if f.proto == PROTO_TCP:
                    l4, kind = self._syn(f), 'tcp_syn'
                else:
                    l4, kind = self._udp(f, QUIC_INITIAL), 'udp_first'
            else:
                v6 = rand() < V6_SHARE
                flows = (started6 if v6 else started4) or started4 or started6
                r = rand()
                f = flows[int(len(flows) * r * r)]
                if f.proto == PROTO_TCP:
                    l4, kind = self._tcp(f)
                else:
                    l4, kind = self._udp(f, self._udp_len(f)), 'udp'
            left -= 1
            kind = ('ip6_' if f.v6 else 'ip4_') + kind
            counts[kind] = counts.get(kind, 0) + 1
            yield self.ts, self._frame(f, l4)



def generate(path, config_path, packets=DEFAULT_PACKETS, flows=DEFAULT_FLOWS, seed=1):
    """Write the capture to path and the config to config_path; return the Generator."""
    g = Generator(seed, packets, flows)
    with open(config_path, 'w', encoding='ascii', newline='\n') as fh:
        fh.write(g.config_text())
    with open(path, 'wb') as fh:
        write_pcap(fh, g.records())
    return g


def generate_bytes(packets=DEFAULT_PACKETS, flows=DEFAULT_FLOWS, seed=1):
    """(pcap bytes, config text) that generate() would write (for tests)."""
    import io
    g = Generator(seed, packets, flows)
    buf = io.BytesIO()
    config = g.config_text()
    write_pcap(buf, g.records())
    return buf.getvalue(), config


def main(argv=None):
    ap = argparse.ArgumentParser(
        description='Write a deterministic benchmark capture (classic pcap) and matching '
                    'TOML config for an L4 load balancer: 16 VIPs, 100 reals, client '
                    'flows of which each first packet is a SYN (TCP) or first datagram '
                    '(UDP). The same --packets, --flows and --seed always give the same bytes.')
    ap.add_argument('output', help='output pcap path')
    ap.add_argument('--config', required=True, help='output TOML config path')
    ap.add_argument('--packets', type=int, default=DEFAULT_PACKETS,
                    help='number of packets (default %d)' % DEFAULT_PACKETS)
    ap.add_argument('--flows', type=int, default=DEFAULT_FLOWS,
                    help='number of client flows = number of new-flow packets (default %d)'
                         % DEFAULT_FLOWS)
    ap.add_argument('--seed', type=int, default=1, help='random seed (default 1)')
    args = ap.parse_args(argv)
    if args.packets < 0:
        ap.error('--packets must be >= 0')
    if args.packets and not 1 <= args.flows <= args.packets:
        ap.error('--flows must be between 1 and --packets (%d)' % args.packets)
    generate(args.output, args.config, args.packets, args.flows, args.seed)
    return 0


if __name__ == '__main__':
    sys.exit(main())
