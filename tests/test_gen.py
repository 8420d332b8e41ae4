"""Tests for pcaps/gen.py (the capture generator) and the committed fixture pcaps/small.pcap.

Also checks that small.pcap drives every branch of the bundled programs'
spec, as computed by the independent oracle in tests/reference.py.
"""

import collections
import importlib.util
import ipaddress
import pathlib
import random
import struct
import subprocess
import sys

import dpkt
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
GEN_PY = ROOT / 'pcaps' / 'gen.py'
SMALL = ROOT / 'pcaps' / 'small.pcap'


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _load('dataplane_pcap_gen', GEN_PY)
reference = _load('dataplane_test_reference', pathlib.Path(__file__).resolve().parent / 'reference.py')

DENIED_NETS = [ipaddress.ip_network(n) for n in
               ('203.0.113.0/24', '198.51.100.0/25', '10.66.0.0/16',
                '2001:db8:bad::/48', 'fd00:dead::/32')]
TABLE_PORTS = (53, 80, 443, 8080)
DENY_PORTS = (23, 3306, 6379)


# -- helpers ---------------------------------------------------------------------


def _records(path):
    with open(path, 'rb') as fh:
        return [(ts, bytes(buf)) for ts, buf in dpkt.pcap.Reader(fh)]


@pytest.fixture(scope='module')
def small_records():
    return _records(SMALL)


@pytest.fixture(scope='module')
def small_frames(small_records):
    return [buf for _, buf in small_records]


@pytest.fixture(scope='module')
def decoded(small_frames):
    return [dpkt.ethernet.Ethernet(f) for f in small_frames]


def _is_fragment(ip):
    return bool(ip.mf or ip.offset)


def _pseudo_cksum_ok(src, dst, proto, segment):
    """True if segment's TCP/UDP/ICMPv6 checksum verifies with the pseudo-header."""
    if len(src) == 4:
        pseudo = src + dst + struct.pack('!xBH', proto, len(segment))
    else:
        pseudo = src + dst + struct.pack('!I3xB', len(segment), proto)
    return dpkt.in_cksum(pseudo + segment) == 0


def _classify(eth):
    """Set of mix labels for one dpkt-decoded frame."""
    kinds = set()
    tags = getattr(eth, 'vlan_tags', [])
    if tags:
        kinds.add('vlan')
        if len(tags) == 2 and eth.type == dpkt.ethernet.ETH_TYPE_8021AD:
            kinds.add('qinq')
    ip = eth.data
    if isinstance(ip, dpkt.arp.ARP):
        kinds.add('arp')
        kinds.add('arp_request' if ip.op == dpkt.arp.ARP_OP_REQUEST else 'arp_reply')
        return kinds
    if isinstance(ip, dpkt.ip.IP):
        kinds.add('ipv4')
        src = ipaddress.IPv4Address(ip.src)
        if _is_fragment(ip):
            kinds.add('fragment')
            if ip.offset:
                kinds.add('fragment_nonfirst')
        if ip.hl > 5:
            kinds.add('ip_options')
        proto = ip.p
    elif isinstance(ip, dpkt.ip6.IP6):
        kinds.add('ipv6')
        src = ipaddress.IPv6Address(ip.src)
        proto = ip.p
        if ip.nxt != ip.p:
            kinds.add('ipv6_ext_hdr')
    else:
        kinds.add('other')
        return kinds
    for net in DENIED_NETS:
        if src in net:
            kinds.add('src_%s' % net)
    l4 = ip.data
    if proto == 6 and isinstance(l4, dpkt.tcp.TCP):
        kinds.add('tcp')
        names = {0x02: 'syn', 0x12: 'synack', 0x10: 'ack', 0x18: 'pshack', 0x11: 'finack',
                 0x04: 'rst', 0x14: 'rst'}
        kinds.add(names.get(l4.flags & 0x3F, 'tcp_other_flags'))
    elif proto == 17 and isinstance(l4, dpkt.udp.UDP):
        kinds.add('udp')
        if 53 in (l4.sport, l4.dport) and 60 <= len(l4.data) <= 120:
            kinds.add('udp_dns')
        if len(l4.data) > 1000:
            kinds.add('udp_large')
    elif proto == 1:
        kinds.add('icmp')
        if isinstance(l4, dpkt.icmp.ICMP) and l4.type in (0, 8):
            kinds.add('icmp_echo_reply' if l4.type == 0 else 'icmp_echo_request')
    elif proto == 58:
        kinds.add('icmp6')
        if isinstance(l4, dpkt.icmp6.ICMP6):
            kinds.add({128: 'icmp6_echo_request', 129: 'icmp6_echo_reply',
                       135: 'icmp6_ns'}.get(l4.type, 'icmp6_other'))
    if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)) and not (isinstance(ip, dpkt.ip.IP) and ip.offset):
        if l4.dport in TABLE_PORTS + DENY_PORTS + (22, 123):
            kinds.add('dport_%d' % l4.dport)
        elif l4.dport >= 1024:
            kinds.add('dport_high')
    return kinds


def mix(frames):
    """Counter of mix labels over frames (used by the tests and to report the mix)."""
    c = collections.Counter()
    for f in frames:
        c.update(_classify(dpkt.ethernet.Ethernet(f)))
        if len(f) == 60:
            c['frame_60'] += 1
    return c


# -- generator -------------------------------------------------------------------


def test_help():
    out = subprocess.run([sys.executable, str(GEN_PY), '--help'], capture_output=True,
                         text=True, check=True).stdout
    assert '--count' in out and '--seed' in out and '-o' in out


def test_same_seed_same_bytes_different_seed_different(tmp_path):
    a = gen.generate_bytes(1500, seed=7)
    assert a == gen.generate_bytes(1500, seed=7)
    assert a != gen.generate_bytes(1500, seed=8)
    # The CLI writes exactly what the library builds.
    out = tmp_path / 'x.pcap'
    subprocess.run([sys.executable, str(GEN_PY), '-o', str(out), '--count', '1500', '--seed', '7'],
                   check=True)
    assert out.read_bytes() == a


def test_count_is_exact():
    for n in (0, 1, 2, 3, 257):
        assert len(_records_from_bytes(gen.generate_bytes(n, seed=3))) == n


def _records_from_bytes(data):
    import io
    return list(dpkt.pcap.Reader(io.BytesIO(data)))


def test_small_pcap_matches_generator():
    """pcaps/small.pcap is exactly `gen.py --count 4000 --seed 1` (regenerate it if not)."""
    assert SMALL.read_bytes() == gen.generate_bytes(4000, seed=1)


def test_pcap_file_format(small_records):
    raw = SMALL.read_bytes()
    magic, vmaj, vmin, thiszone, sigfigs, snaplen, linktype = struct.unpack('<IHHiIII', raw[:24])
    assert (magic, vmaj, vmin, thiszone, sigfigs, snaplen, linktype) == \
        (0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    assert len(small_records) == 4000
    # Record headers: caplen == wirelen == frame length, usec < 1e6, time moves forward.
    off, prev = 24, None
    while off < len(raw):
        sec, usec, caplen, wirelen = struct.unpack('<IIII', raw[off:off + 16])
        assert caplen == wirelen and usec < 1_000_000
        t = sec * 1_000_000 + usec
        assert sec >= gen.EPOCH_S and (prev is None or t > prev)
        prev = t
        off += 16 + caplen
    assert off == len(raw)


def test_sizes_span_60_to_1514(small_frames):
    sizes = [len(f) for f in small_frames]
    assert min(sizes) == 60 and max(sizes) == 1514
    # Spread: each 200-byte band of the range holds some frames.
    for lo in range(60, 1514, 200):
        assert any(lo <= s < lo + 200 for s in sizes), lo
    assert sum(s == 60 for s in sizes) >= 50
    assert sum(s == 1514 for s in sizes) >= 50


def test_every_frame_decodes_and_checksums_verify(small_frames, decoded):
    """dpkt re-computes every checksum (sums zeroed, packet re-packed) to the stored value."""
    fragments = collections.defaultdict(list)
    checked = collections.Counter()
    for frame, eth in zip(small_frames, decoded):
        ip = eth.data
        assert isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6, dpkt.arp.ARP)), frame.hex()
        if isinstance(ip, dpkt.arp.ARP):
            continue
        # Header and L4 checksums: zero them and let dpkt compute them again.
        stored_ip = ip.sum if isinstance(ip, dpkt.ip.IP) else None
        l4 = ip.data
        fragment = isinstance(ip, dpkt.ip.IP) and _is_fragment(ip)
        assert isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP, dpkt.icmp.ICMP, dpkt.icmp6.ICMP6)) \
            or fragment, frame.hex()
        stored_l4 = None if fragment else l4.sum
        if stored_ip is not None:
            ip.sum = 0
        if stored_l4 is not None:
            l4.sum = 0
        repacked = bytes(eth)
        # The re-packed frame is the original (plus the original's zero padding).
        assert frame[:len(repacked)] == repacked, frame.hex()
        assert frame[len(repacked):] == bytes(len(frame) - len(repacked))
        assert len(frame) == max(60, len(repacked))
        if stored_ip is not None:
            checked['ipv4_header'] += 1
        if stored_l4 is not None:
            checked[type(l4).__name__] += 1
        if fragment:
            fragments[(ip.src, ip.dst, ip.id, ip.p)].append((ip.offset * 8, ip.mf, bytes(ip.data)))
    assert checked['ipv4_header'] > 2000 and checked['TCP'] > 1500 and checked['UDP'] > 500
    assert checked['ICMP'] > 20 and checked['ICMP6'] > 20
    # Fragmented datagrams reassemble and their L4 checksum covers the whole datagram.
    assert fragments
    for (src, dst, _, proto), pieces in fragments.items():
        pieces.sort()
        assert pieces[0][0] == 0 and pieces[-1][1] == 0 and all(p[1] for p in pieces[:-1])
        datagram = b''
        for off, _, data in pieces:
            assert off == len(datagram)
            datagram += data
        assert _pseudo_cksum_ok(src, dst, proto, datagram)


def test_checksums_with_scapy_sample(small_frames, decoded):
    """scapy, a second implementation, recomputes the checksums of ~200 frames identically."""
    scapy_all = pytest.importorskip('scapy.all')
    from scapy.packet import NoPayload

    rng = random.Random(2024)
    candidates = [f for f, e in zip(small_frames, decoded)
                  if not (isinstance(e.data, dpkt.ip.IP) and _is_fragment(e.data))]
    sample = rng.sample(candidates, 200)
    for frame in sample:
        pkt = scapy_all.Ether(frame)
        layer = pkt
        while not isinstance(layer, NoPayload):
            for name in ('chksum', 'cksum'):
                if any(f.name == name for f in layer.fields_desc):
                    setattr(layer, name, None)
            layer = layer.payload
        rebuilt = bytes(pkt)
        assert rebuilt == frame, (frame.hex(), rebuilt.hex())


def test_mix_contains_every_required_kind(small_frames):
    c = mix(small_frames)
    n = len(small_frames)
    required = ['vlan', 'qinq', 'ipv4', 'ipv6', 'arp', 'arp_request', 'arp_reply',
                'icmp_echo_request', 'icmp_echo_reply', 'icmp6_echo_request', 'icmp6_echo_reply',
                'icmp6_ns', 'fragment', 'fragment_nonfirst', 'ip_options', 'ipv6_ext_hdr',
                'syn', 'synack', 'ack', 'pshack', 'finack', 'rst', 'udp_dns', 'udp_large',
                'frame_60', 'dport_high', 'dport_22', 'dport_123']
    required += ['dport_%d' % p for p in TABLE_PORTS + DENY_PORTS]
    required += ['src_%s' % net for net in DENIED_NETS]
    missing = [k for k in required if c[k] == 0]
    assert not missing, (missing, c)
    assert 'other' not in c and 'tcp_other_flags' not in c and 'icmp6_other' not in c
    # Rough shares.
    assert 0.65 <= c['ipv4'] / n <= 0.80
    assert 0.15 <= c['ipv6'] / n <= 0.27
    assert 0.02 <= c['vlan'] / n <= 0.09
    assert c['ipv4'] + c['ipv6'] + c['arp'] == n


def test_many_flows(decoded):
    flows = set()
    for eth in decoded:
        ip, l4 = eth.data, getattr(eth.data, 'data', None)
        if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
            a, b = (ip.src, l4.sport), (ip.dst, l4.dport)
            flows.add((min(a, b), max(a, b), ip.p))
    assert len(flows) >= 1000


# -- the mix drives every branch of the programs' spec -----------------------------


@pytest.fixture(scope='module')
def verdicts(small_frames):
    return {p: [reference.expected(p, f) for f in small_frames] for p in reference.PROGRAMS}


def _labels(small_frames):
    return [_classify(dpkt.ethernet.Ethernet(f)) for f in small_frames]


def test_reference_trivial_programs(small_frames, verdicts):
    for f, (a, i, out) in zip(small_frames, verdicts['pass_all']):
        assert (a, i, out) == (reference.XDP_PASS, 0, f)
    assert all(v[0] == reference.XDP_DROP for v in verdicts['drop_all'])
    for f, (a, i, out) in zip(small_frames, verdicts['mac_swap_tx']):
        assert (a, i) == (reference.XDP_TX, 0) and out == f[6:12] + f[0:6] + f[12:]
    assert reference.expected('mac_swap_tx', b'\x01' * 13)[0] == reference.XDP_DROP
    assert reference.expected('drop_udp', b'\x01' * 13)[0] == reference.XDP_PASS


def test_mix_drives_every_branch(small_frames, verdicts):
    labels = _labels(small_frames)
    DROP, PASS, REDIRECT = reference.XDP_DROP, reference.XDP_PASS, reference.XDP_REDIRECT

    def count(program, action, ifindex=None, having=(), lacking=()):
        return sum(1 for lab, (a, i, _) in zip(labels, verdicts[program])
                   if a == action and (ifindex is None or i == ifindex)
                   and all(h in lab for h in having) and not any(x in lab for x in lacking))

    # drop_udp: UDP over v4, v6, one tag, QinQ, a non-first fragment; UDP behind an
    # IPv6 extension header is not dropped (no walk).
    for having in (['ipv4', 'udp'], ['ipv6', 'udp'], ['vlan', 'udp'], ['qinq', 'udp'],
                   ['fragment_nonfirst'], ['ip_options', 'udp']):
        assert count('drop_udp', DROP, having=having) > 0, having
    assert count('drop_udp', PASS, having=['ipv6_ext_hdr', 'udp']) > 0
    assert count('drop_udp', PASS, having=['tcp']) > 0
    assert count('drop_udp', PASS, having=['arp']) > 0
    # redirect_by_port: every table entry, via v4, v6, VLAN, IPv4 options, first fragment.
    for port, ifindex in reference.REDIRECT_PORTS.items():
        for fam in ('ipv4', 'ipv6'):
            assert count('redirect_by_port', REDIRECT, ifindex, having=[fam, 'dport_%d' % port]) > 0
    for having in (['vlan'], ['qinq'], ['ip_options'], ['fragment']):
        assert count('redirect_by_port', REDIRECT, having=having) > 0, having
    assert count('redirect_by_port', PASS, having=['ipv6_ext_hdr', 'dport_53']) \
        + count('redirect_by_port', PASS, having=['ipv6_ext_hdr', 'dport_443']) \
        + count('redirect_by_port', PASS, having=['ipv6_ext_hdr', 'dport_80']) > 0
    assert count('redirect_by_port', PASS, having=['fragment_nonfirst']) > 0
    assert count('redirect_by_port', PASS, having=['dport_high']) > 0
    # firewall: each denied source prefix; each denied port from an allowed source;
    # the allowed half of 198.51.100.0/24.
    for net in DENIED_NETS:
        assert count('firewall', DROP, having=['src_%s' % net]) > 0, net
    src_labels = ['src_%s' % net for net in DENIED_NETS]
    for port in DENY_PORTS:
        assert count('firewall', DROP, having=['dport_%d' % port], lacking=src_labels) > 0, port
    upper_half = ipaddress.ip_network('198.51.100.128/25')
    assert any(isinstance(e.data, dpkt.ip.IP) and ipaddress.IPv4Address(e.data.src) in upper_half
               and v[0] == PASS
               for e, v in zip(map(dpkt.ethernet.Ethernet, small_frames), verdicts['firewall']))
    assert count('firewall', PASS, having=['ipv4']) > 0 and count('firewall', PASS, having=['ipv6']) > 0
