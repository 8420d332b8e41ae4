"""Tests for pcaps/gen_l4lb.py (the L4 load balancer benchmark capture and config).

dpkt is the independent oracle for the frames (parsing and checksums, which it
recomputes after the generator's values are zeroed); tomllib reads the config.
"""

import collections
import importlib.util
import ipaddress
import pathlib
import subprocess
import sys
import tomllib

import dpkt
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
GEN_PY = ROOT / 'pcaps' / 'gen_l4lb.py'

PACKETS, FLOWS = 20_000, 2_000


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


gen = _load('dataplane_pcap_gen_l4lb', GEN_PY)

CLIENT_NETS = [ipaddress.ip_network(n) for n in ('192.168.0.0/16', '100.64.0.0/10', '2001:db8::/32')]
LB_MAC = bytes.fromhex('020000000001')
PEER_MAC = bytes.fromhex('020000000002')


@pytest.fixture(scope='module')
def generated(tmp_path_factory):
    d = tmp_path_factory.mktemp('l4lb')
    pcap, toml = d / 'l4lb.pcap', d / 'l4lb.toml'
    r = subprocess.run([sys.executable, str(GEN_PY), str(pcap), '--config', str(toml),
                        '--packets', str(PACKETS), '--flows', str(FLOWS), '--seed', '3'],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return pcap, toml


@pytest.fixture(scope='module')
def config(generated):
    with open(generated[1], 'rb') as fh:
        return tomllib.load(fh)


@pytest.fixture(scope='module')
def records(generated):
    with open(generated[0], 'rb') as fh:
        reader = dpkt.pcap.Reader(fh)
        assert reader.snaplen == 65535 and reader.datalink() == dpkt.pcap.DLT_EN10MB
        return [(ts, bytes(buf)) for ts, buf in reader]


@pytest.fixture(scope='module')
def decoded(records):
    return [dpkt.ethernet.Ethernet(buf) for _, buf in records]


def _ip(addr):
    return ipaddress.ip_address(addr)


def _vip_set(config):
    return {(_ip(v['address']).packed, v['port'], v['proto']) for v in config['vip']}


def _flow_key(ip):
    return ip.src, ip.data.sport, ip.dst, ip.data.dport, ip.p


# -- the config ----------------------------------------------------------------------


def test_config_shape(config):
    assert config['gateway_mac'] == '02:00:00:00:00:fe'
    vips = config['vip']
    assert len(vips) == 16
    assert [v['address'] for v in vips] == (['10.200.0.%d' % i for i in range(1, 13)]
                                            + ['fc00:200::%d' % i for i in range(1, 5)])
    services = collections.Counter((v['port'], v['proto']) for v in vips)
    assert set(services) == {(80, 'tcp'), (443, 'tcp'), (443, 'udp')}
    assert all(n >= 4 for n in services.values())
    assert len({(v['address'], v['port'], v['proto']) for v in vips}) == 16
    for v in vips:
        assert set(v) == {'address', 'port', 'proto', 'flags', 'reals'}
        assert v['flags'] == []
        reals = v['reals']
        assert 12 <= len(reals) <= 20
        assert len({r['address'] for r in reals}) == len(reals)
        for r in reals:
            assert set(r) == {'address', 'weight'} and r['weight'] in (1, 2, 3)


def test_config_reals_pool(config):
    pool4 = {_ip('10.0.1.0') + i for i in range(1, 81)}
    pool6 = {_ip('fc00:1::') + i for i in range(1, 21)}
    used = set()
    for v in config['vip']:
        reals = {_ip(r['address']) for r in v['reals']}
        used |= reals
        assert reals <= pool4 | pool6
        if _ip(v['address']).version == 6:
            assert all(a.version == 6 for a in reals), v['address']
    # Both families serve the IPv4 VIPs somewhere in the config.
    assert {a.version for v in config['vip'] if _ip(v['address']).version == 4
            for a in map(_ip, (r['address'] for r in v['reals']))} == {4, 6}
    assert used == pool4 | pool6          # all 100 reals serve some VIP


# -- the frames ----------------------------------------------------------------------


def test_count_timestamps_and_sizes(records):
    assert len(records) == PACKETS
    stamps = [ts for ts, _ in records]
    assert all(a < b for a, b in zip(stamps, stamps[1:]))
    sizes = [len(buf) for _, buf in records]
    assert min(sizes) >= 64 and max(sizes) <= 1500
    small = sum(n < 200 for n in sizes)
    large = sum(n > 1000 for n in sizes)
    assert small > PACKETS // 2, 'most frames should be small'
    assert large > PACKETS // 20, 'some frames should be large'


def test_every_frame_parses_with_valid_checksums(decoded, records):
    for eth, (_, buf) in zip(decoded, records):
        assert eth.dst == LB_MAC and eth.src == PEER_MAC
        ip = eth.data
        assert isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)), eth
        if isinstance(ip, dpkt.ip.IP):
            assert ip.hl == 5 and ip.ttl == 64 and not ip.mf and ip.offset == 0
            assert ip.len == len(buf) - 14
        else:
            assert ip.hlim == 64 and ip.nxt == ip.p
            assert ip.plen == len(buf) - 54
        l4 = ip.data
        assert isinstance(l4, dpkt.tcp.TCP if ip.p == 6 else dpkt.udp.UDP), (ip.p, l4)
        if ip.p == 17:
            assert l4.ulen == len(bytes(l4))
        # Zero the checksums and let dpkt recompute them on re-serialisation.
        ip_sum, l4_sum = getattr(ip, 'sum', None), l4.sum
        if isinstance(ip, dpkt.ip.IP):
            ip.sum = 0
        l4.sum = 0
        again = bytes(ip)
        if isinstance(ip, dpkt.ip.IP):
            assert ip.sum == ip_sum
        if ip.p == 17 and l4.sum == 0:        # dpkt's IPv6 path leaves a computed 0 as 0
            l4.sum = 0xFFFF
        assert l4.sum == l4_sum
        assert again == buf[14:]


def test_ipv6_share(decoded):
    v6 = sum(isinstance(eth.data, dpkt.ip6.IP6) for eth in decoded)
    assert 0.07 <= v6 / len(decoded) <= 0.13, v6 / len(decoded)


def test_destinations_are_vips_and_sources_clients(decoded, config):
    vips = _vip_set(config)
    proto_names = {6: 'tcp', 17: 'udp'}
    hits = collections.Counter()
    for eth in decoded:
        ip = eth.data
        dst = (ip.dst, ip.data.dport, proto_names[ip.p])
        assert dst in vips
        hits[dst] += 1
        src = _ip(ip.src)
        assert any(src in net for net in CLIENT_NETS), src
        assert 1024 <= ip.data.sport <= 65535
    assert set(hits) == vips              # every VIP gets traffic


def test_flows_start_with_syn_and_ratio(decoded):
    seen = set()
    firsts = 0
    for eth in decoded:
        ip = eth.data
        key = _flow_key(ip)
        first = key not in seen
        seen.add(key)
        firsts += first
        if ip.p == 6:
            if first:
                assert ip.data.flags == dpkt.tcp.TH_SYN and not ip.data.data
            else:
                assert ip.data.flags in (dpkt.tcp.TH_ACK, dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH)
                if ip.data.flags & dpkt.tcp.TH_PUSH:
                    assert ip.data.data
    assert len(seen) == FLOWS
    assert firsts == FLOWS                 # new/all == flows/packets exactly (10% here)
    # New flows are spread through the capture, not bunched at the start.
    first_half = set()
    for eth in decoded[:PACKETS // 2]:
        first_half.add(_flow_key(eth.data))
    assert 0.4 * FLOWS < len(first_half) < 0.6 * FLOWS


def test_tcp_sequence_numbers_continue(decoded):
    next_seq = {}
    for eth in decoded:
        ip = eth.data
        if ip.p != 6:
            continue
        tcp, key = ip.data, _flow_key(ip)
        if tcp.flags == dpkt.tcp.TH_SYN:
            next_seq[key] = (tcp.seq + 1) & 0xFFFFFFFF
        else:
            assert tcp.seq == next_seq[key]
            next_seq[key] = (tcp.seq + len(tcp.data)) & 0xFFFFFFFF


# -- determinism and the command line --------------------------------------------------


def test_script_output_matches_generate_bytes(generated):
    pcap, toml = gen.generate_bytes(PACKETS, FLOWS, seed=3)
    assert generated[0].read_bytes() == pcap
    assert generated[1].read_text() == toml


def test_deterministic():
    a = gen.generate_bytes(3000, 300, seed=5)
    assert gen.generate_bytes(3000, 300, seed=5) == a
    b = gen.generate_bytes(3000, 300, seed=6)
    assert b[0] != a[0] and b[1] != a[1]


def test_other_ratio_keeps_flows_over_packets():
    pcap, _ = gen.generate_bytes(1000, 370, seed=2)
    import io
    seen = set()
    for _, buf in dpkt.pcap.Reader(io.BytesIO(pcap)):
        seen.add(_flow_key(dpkt.ethernet.Ethernet(buf).data))
    assert len(seen) == 370
    pcap, _ = gen.generate_bytes(50, 50, seed=2)       # every packet a new flow
    assert len(list(dpkt.pcap.Reader(io.BytesIO(pcap)))) == 50


@pytest.mark.parametrize('args', [['--packets', '10', '--flows', '11'],
                                  ['--packets', '10', '--flows', '0'],
                                  ['--packets', '-1']])
def test_bad_arguments(tmp_path, args):
    r = subprocess.run([sys.executable, str(GEN_PY), str(tmp_path / 'x.pcap'),
                        '--config', str(tmp_path / 'x.toml'), *args],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and 'error' in r.stderr
