"""programs/l4lb (the Katran-like L4 load balancer) end to end, driven through
its control plane (dataplane.lb.control.LoadBalancer).

Frames are built with scapy; outputs are decoded with dpkt (and scapy where it
recomputes a checksum that needs a pseudo-header): the independent oracles.
Nothing here reuses the program's own helpers to compute an expected value.

The program is compiled once for the module (~30 s the first time); every test
starts from ``configure()``, which applies a fresh LbConfig and empties the
connection tables and the counters.
"""

import ipaddress
import random

import dpkt
import numpy as np
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_RR
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest,
                                ICMPv6PacketTooBig, IPv6, IPv6ExtHdrFragment)
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from dataplane import PacketBatch, XdpAction, load_program
from dataplane.lb import layout as L
from dataplane.lb.config import LbConfig, LbError, from_dict, to_dict
from dataplane.lb.control import CONN_TABLES, LoadBalancer

TX, PASS, DROP = XdpAction.XDP_TX, XdpAction.XDP_PASS, XdpAction.XDP_DROP

LB_MAC = bytes.fromhex("020000000001")    # the balancer's own MAC: the frames' destination
PEER_MAC = bytes.fromhex("020000000002")  # the router that hands it the frames
GW_MAC = "02:00:00:00:00:fe"
GW = bytes.fromhex(GW_MAC.replace(":", ""))

VIP4, VIP4_ANY = "10.200.1.1", "10.200.1.2"
VIP6, VIP6_ANY = "fc00:1::1", "fc00:1::2"
REALS4 = ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
REALS6 = ["fc00::2", "fc00::3", "fc00::4"]
OUTER4 = ipaddress.ip_network("172.16.0.0/16")
OUTER6 = ipaddress.ip_network("100::/64")


def reals(addresses):
    return [{"address": a, "weight": 1} for a in addresses]


def doc(vips, **settings):
    d = {"gateway_mac": GW_MAC}
    d.update(settings)
    d["vip"] = vips
    return d


# VIPs of the packet-path tests: exact and port-0 VIPs, both families.
PATH_VIPS = [
    {"address": VIP4, "port": 80, "proto": "tcp", "reals": reals(REALS4)},
    {"address": VIP4, "port": 53, "proto": "udp", "reals": reals(REALS4)},
    {"address": VIP4_ANY, "port": 0, "proto": "tcp", "reals": reals(REALS4)},
    {"address": VIP6, "port": 80, "proto": "tcp", "reals": reals(REALS6)},
    {"address": VIP6, "port": 53, "proto": "udp", "reals": reals(REALS6)},
    {"address": VIP6_ANY, "port": 0, "proto": "udp", "reals": reals(REALS6)},
]


# -- fixtures -------------------------------------------------------------------

@pytest.fixture(scope="module")
def prog():
    return load_program("l4lb")


@pytest.fixture(scope="module")
def lb(prog):
    return LoadBalancer(prog.maps, LbConfig())


def configure(prog, lb, document):
    """Apply ``document`` and start from empty connection tables and counters."""
    prog.use_capture_time(False)
    lb.set_trace(False)
    lb.apply(from_dict(document, "test"))
    for name in ("lb_stats", "vip_stats", "real_stats", "fallback_conns", "fallback_conns_v6",
                 "flood"):
        prog.maps[name].clear()
    for tables in CONN_TABLES:
        for table in prog.maps[tables].inner_maps:
            table.clear()
    prog.maps["server_ids"].clear()
    prog.maps["lb_trace"].read()
    return lb.cfg


@pytest.fixture
def path_lb(prog, lb):
    configure(prog, lb, doc(PATH_VIPS))
    return lb


def counters(prog):
    total = prog.maps["lb_stats"].values.sum(axis=0)
    return {name: int(total[i]) for i, name in enumerate(L.COUNTERS)}


def moved(before, after, names=L.COUNTERS):
    """The counters (of ``names``) that changed, with by how much."""
    return {k: after[k] - before[k] for k in names if after[k] != before[k]}


def conn_table(prog, v6=False):
    """Worker 0's connection table of IPv4 flows (IPv6 ones: ``v6``)."""
    return prog.maps[CONN_TABLES[v6]].inner_maps[0]


# -- frames ---------------------------------------------------------------------

def ip_layer(src, dst, tos=0, **kw):
    if ipaddress.ip_address(src).version == 4:
        return IP(src=src, dst=dst, tos=tos, ttl=50, **kw)
    return IPv6(src=src, dst=dst, tc=tos, hlim=50, **kw)


def ether(packet, pad_to=0):
    """An Ethernet frame to the balancer carrying ``packet`` (a scapy packet, built
    here: lengths and checksums filled in), zero-padded to ``pad_to`` bytes."""
    raw = bytes(packet)
    etype = b"\x08\x00" if raw[0] >> 4 == 4 else b"\x86\xdd"
    frame = LB_MAC + PEER_MAC + etype + raw
    return frame + bytes(max(0, pad_to - len(frame)))


def tcp(src, dst, sport, dport, flags="S", tos=0, payload=b"", pad_to=0):
    return ether(ip_layer(src, dst, tos) / TCP(sport=sport, dport=dport, flags=flags, seq=1000)
                 / Raw(payload), pad_to)


def udp(src, dst, sport, dport, tos=0, payload=b"x" * 16, pad_to=0):
    return ether(ip_layer(src, dst, tos) / UDP(sport=sport, dport=dport) / Raw(payload), pad_to)


def client4(i):
    return f"192.168.{i // 250}.{i % 250 + 1}"


def client6(i):
    return str(ipaddress.IPv6Address(0x20010DB8 << 96 | (i + 1)))


def run(prog, frame):
    r = prog.test_run(frame)
    return r[0], r[1]


def run_many(prog, frames, ts=None):
    """Run ``frames`` as one batch (with capture timestamps ``ts``): [(action, bytes)]."""
    b = PacketBatch(len(frames))
    for i, f in enumerate(frames):
        assert b.append(f, ts_ns=0 if ts is None else ts[i])
    prog.run_batch(b)
    return [(XdpAction(int(b.action[i])), b.packet(i)) for i in range(len(frames))]


# -- decoding the encapsulated output (dpkt / scapy) --------------------------------

def ipv4_header_csum_ok(hdr):
    """dpkt recomputes the IPv4 header checksum with the field zeroed."""
    return dpkt.in_cksum(hdr[:10] + b"\0\0" + hdr[12:]) == int.from_bytes(hdr[10:12], "big")


def check_encap(out, frame, encap="ipip"):
    """Check everything about an encapsulated output frame: returns the real
    (the outer destination address, as text)."""
    inner = frame[14:]
    inner_v6 = frame[12:14] == b"\x86\xdd"
    if inner_v6:
        inner_len = 40 + int.from_bytes(inner[4:6], "big")
        tos = ((inner[0] & 0x0F) << 4) | (inner[1] >> 4)
    else:
        inner_len = int.from_bytes(inner[2:4], "big")
        tos = inner[1]
    gue = encap == "gue"
    e = dpkt.ethernet.Ethernet(out)
    assert e.dst == GW, "outer Ethernet destination: the gateway"
    assert e.src == frame[:6], "outer Ethernet source: the frame's original destination"
    if out[12:14] == b"\x08\x00":
        hdr = out[14:34]
        ip = dpkt.ip.IP(out[14:])
        assert (ip.v, ip.hl, ip.ttl, ip.tos) == (4, 5, 64, tos)
        assert not ip.mf and ip.offset == 0  # not a fragment
        assert ip.p == (17 if gue else 4)
        assert ip.len == 20 + 8 * gue + inner_len
        assert ipv4_header_csum_ok(hdr)
        assert ipaddress.ip_address(ip.src) in OUTER4
        real, l3 = ipaddress.ip_address(ip.dst), 20
    else:
        assert out[12:14] == b"\x86\xdd"
        ip = dpkt.ip6.IP6(out[14:])
        tclass = ((out[14] & 0x0F) << 4) | (out[15] >> 4)
        assert (ip.v, ip.hlim, tclass) == (6, 64, tos)
        assert ip.nxt == (17 if gue else (41 if inner_v6 else 4))
        assert ip.plen == 8 * gue + inner_len
        assert ipaddress.ip_address(ip.src) in OUTER6
        real, l3 = ipaddress.ip_address(ip.dst), 40
    if gue:
        u = dpkt.udp.UDP(out[14 + l3:14 + l3 + 8])
        assert u.dport == 6080 and u.ulen == 8 + inner_len
        if l3 == 40:  # an IPv6 UDP checksum is mandatory: scapy recomputes it
            p = IPv6(out[14:14 + 40 + 8 + inner_len])
            stored = p[UDP].chksum
            p[UDP].chksum = None
            assert stored != 0 and IPv6(bytes(p))[UDP].chksum == stored
        l3 += 8
    assert out[14 + l3:] == frame[14:], "the inner packet must be the input's, untouched"
    return str(real)


def real_of(out):
    """The outer destination of an encapsulated frame."""
    if out[12:14] == b"\x08\x00":
        return str(ipaddress.ip_address(out[30:34]))
    return str(ipaddress.ip_address(out[38:54]))


# -- 1. encapsulation -----------------------------------------------------------

ENCAP_CASES = [
    # (VIP, reals, client, outer ethertype, encap)
    (VIP4, REALS4, client4, "ipip"),   # IPIP
    (VIP4, REALS6, client4, "ipip"),   # 4in6
    (VIP6, REALS6, client6, "ipip"),   # ip6ip6
    (VIP4, REALS4, client4, "gue"),
    (VIP4, REALS6, client4, "gue"),
    (VIP6, REALS6, client6, "gue"),
]


@pytest.mark.parametrize("vip,real_list,client,encap", ENCAP_CASES,
                         ids=["ipip", "4in6", "ip6ip6", "gue-4", "gue-4in6", "gue-6in6"])
def test_encapsulation(prog, lb, vip, real_list, client, encap):
    configure(prog, lb, doc([
        {"address": vip, "port": 80, "proto": "tcp", "reals": reals(real_list)},
        {"address": vip, "port": 443, "proto": "udp", "reals": reals(real_list)},
    ], encap=encap))
    seen = set()
    for i in range(40):
        tos = (0x00, 0xB8, 0x2E << 2 | 1, 0xFF)[i % 4]
        if i % 3 == 2:  # a short UDP packet padded to the minimum frame
            frame = udp(client(i), vip, 5000 + i, 443, tos=tos, payload=b"q", pad_to=60)
        else:
            frame = tcp(client(i), vip, 5000 + i, 80, flags="S" if i % 2 else "PA", tos=tos,
                        payload=bytes(range(i * 7 % 256)) * 2)
        action, out = run(prog, frame)
        assert action == TX, i
        real = check_encap(out, frame, encap)
        assert real in real_list
        seen.add(real)
    assert seen == set(real_list)  # 40 flows over 3 reals: each one used
    c = counters(prog)
    assert c["tx"] == 40 and c["conn_miss"] == 40 and c["new_conn"] == 40


def test_outer_source_carries_client_entropy(prog, path_lb):
    """The outer source varies with the client's address and with its port (the
    real's RSS spreads the flows)."""
    def sources(frames):
        out = [o for _, o in run_many(prog, frames)]
        return {o[26:30] if o[12:14] == b"\x08\x00" else o[22:38] for o in out}

    for vip, client in ((VIP4, client4), (VIP6, client6)):
        assert len(sources([tcp(client(i), vip, 40000, 80) for i in range(32)])) == 32
        assert len(sources([tcp(client(1), vip, 40000 + i, 80) for i in range(32)])) == 32


def test_set_gateway_mac(prog, path_lb):
    path_lb.set_gateway_mac("02:00:00:00:00:ab")
    frame = tcp(client4(1), VIP4, 1234, 80)
    action, out = run(prog, frame)
    assert action == TX and out[:12] == bytes.fromhex("0200000000ab") + frame[:6]


def test_trace_records_each_verdict(prog, path_lb):
    path_lb.set_trace(True)
    frames = [tcp(client4(1), VIP4, 1234, 80), tcp(client4(1), "10.9.9.9", 1234, 80),
              LB_MAC + PEER_MAC]
    got = run_many(prog, frames)
    assert [a for a, _ in got] == [TX, PASS, DROP]
    records = prog.maps["lb_trace"].read()
    assert [L.REASONS[r] for r in records["reason"]] == ["tx", "pass_no_vip", "drop_short"]
    rid = {r["address"]: r["id"] for v in path_lb.list() for r in v["reals"]}
    assert records["real"][0] == rid[real_of(got[0][1])]
    path_lb.set_trace(False)


# -- 2. packet-path rules ---------------------------------------------------------

def expect(prog, frame, action, reason):
    before = counters(prog)
    got, out = run(prog, frame)
    assert got == action
    assert moved(before, counters(prog), L.REASONS) == {reason: 1}
    if action in (PASS, DROP):
        assert out == frame
    return out


def test_short_frame_dropped(prog, path_lb):
    expect(prog, LB_MAC + PEER_MAC + b"\x08", DROP, "drop_short")
    expect(prog, b"\x00", DROP, "drop_short")


def test_non_ip_passes(prog, path_lb):
    arp = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src="02:00:00:00:00:02")
                / ARP(op=1, psrc="10.0.0.9", pdst=VIP4))
    expect(prog, arp, PASS, "pass_not_ip")


def test_ipv4_options_dropped(prog, path_lb):
    frame = ether(IP(src=client4(1), dst=VIP4, options=[IPOption_RR()])
                  / TCP(sport=1234, dport=80, flags="S"))
    assert frame[14] != 0x45
    expect(prog, frame, DROP, "drop_ip_options")


@pytest.mark.parametrize("flags,frag", [("MF", 0), (0, 100), ("MF", 100)])
def test_ipv4_fragments_dropped(prog, path_lb, flags, frag):
    frame = ether(IP(src=client4(1), dst=VIP4, flags=flags, frag=frag)
                  / TCP(sport=1234, dport=80, flags="S"))
    expect(prog, frame, DROP, "drop_fragment")


def test_ipv4_dont_fragment_is_not_a_fragment(prog, path_lb):
    frame = ether(IP(src=client4(1), dst=VIP4, flags="DF") / TCP(sport=1234, dport=80))
    out = expect(prog, frame, TX, "tx")
    check_encap(out, frame)


def test_ipv6_fragment_header_dropped(prog, path_lb):
    frame = ether(IPv6(src=client6(1), dst=VIP6) / IPv6ExtHdrFragment(m=1, id=7)
                  / TCP(sport=1234, dport=80, flags="S"))
    assert frame[14 + 6] == 44
    expect(prog, frame, DROP, "drop_fragment")


def test_truncated_headers_dropped(prog, path_lb):
    syn4 = tcp(client4(1), VIP4, 1234, 80)
    syn6 = tcp(client6(1), VIP6, 1234, 80)
    for frame in (syn4[:14 + 19], syn6[:14 + 39], syn4[:14 + 20 + 13], syn6[:14 + 40 + 7]):
        expect(prog, frame, DROP, "drop_truncated")


@pytest.mark.parametrize("encap", ["ipip", "gue"])
def test_ip_length_beyond_frame_dropped(prog, lb, encap):
    """An IP length that claims more than the frame holds: DROP (it used to fault,
    XDP_ABORTED, with GUE to an IPv6 real, and to claim bytes that are not there
    in the outer header otherwise)."""
    configure(prog, lb, doc([
        {"address": VIP4, "port": 80, "proto": "tcp", "reals": reals(REALS6)},
        {"address": VIP6, "port": 80, "proto": "tcp", "reals": reals(REALS6)},
    ], encap=encap))
    faults = prog.faults
    f4 = bytearray(tcp(client4(1), VIP4, 1234, 80))
    f4[16:18] = (len(f4) - 14 + 100).to_bytes(2, "big")
    f6 = bytearray(tcp(client6(1), VIP6, 1234, 80))
    f6[18:20] = (len(f6) - 54 + 100).to_bytes(2, "big")
    for frame in (bytes(f4), bytes(f6)):
        expect(prog, frame, DROP, "drop_truncated")
    assert prog.faults == faults


def test_icmp_echo_to_vip_answered(prog, path_lb):
    req = ether(IP(src=client4(3), dst=VIP4, ttl=50)
                / ICMP(type=8, id=0x1234, seq=7) / Raw(b"ping-payload" * 3))
    out = expect(prog, req, TX, "icmp_echo")
    e = dpkt.ethernet.Ethernet(out)
    assert e.dst == PEER_MAC and e.src == LB_MAC and len(out) == len(req)
    ip = e.data
    assert ip.src == ipaddress.ip_address(VIP4).packed
    assert ip.dst == ipaddress.ip_address(client4(3)).packed
    assert ipv4_header_csum_ok(out[14:34])
    icmp = ip.data
    assert (icmp.type, icmp.code) == (0, 0)
    raw_icmp = out[34:]
    assert dpkt.in_cksum(raw_icmp[:2] + b"\0\0" + raw_icmp[4:]) == icmp.sum
    assert raw_icmp[4:] == req[38:]  # id, seq and data kept


def test_icmpv6_echo_to_vip_answered(prog, path_lb):
    req = ether(IPv6(src=client6(3), dst=VIP6, hlim=50)
                / ICMPv6EchoRequest(id=0x4321, seq=9, data=b"ping6" * 5))
    out = expect(prog, req, TX, "icmp_echo")
    e = dpkt.ethernet.Ethernet(out)
    assert e.dst == PEER_MAC and e.src == LB_MAC and len(out) == len(req)
    p = IPv6(out[14:])
    assert (p.src, p.dst) == (str(ipaddress.ip_address(VIP6)),
                               str(ipaddress.ip_address(client6(3))))
    reply = p[ICMPv6EchoReply]
    assert (reply.type, reply.code, reply.id, reply.seq, reply.data) == \
        (129, 0, 0x4321, 9, b"ping6" * 5)
    stored = reply.cksum
    reply.cksum = None
    assert IPv6(bytes(p))[ICMPv6EchoReply].cksum == stored


def test_icmp_echo_to_non_vip_passes(prog, path_lb):
    expect(prog, ether(IP(src=client4(3), dst="10.9.9.9") / ICMP(type=8)), PASS,
           "pass_no_vip")
    expect(prog, ether(IPv6(src=client6(3), dst="fc00:9::9") / ICMPv6EchoRequest()), PASS,
           "pass_no_vip")


def test_echo_survives_removal_of_another_vip_on_the_address(prog, lb):
    """Two VIPs share an address: removing one keeps the address answering echo."""
    configure(prog, lb, doc(PATH_VIPS))
    lb.remove_vip(f"{VIP4}:53/udp")
    expect(prog, ether(IP(src=client4(3), dst=VIP4) / ICMP(type=8)), TX, "icmp_echo")
    lb.remove_vip(f"{VIP4}:80/tcp")
    expect(prog, ether(IP(src=client4(3), dst=VIP4) / ICMP(type=8)), PASS, "pass_no_vip")


def test_other_icmp_and_l4_pass(prog, path_lb):
    expect(prog, ether(IP(src=client4(3), dst=VIP4) / ICMP(type=13)), PASS, "pass_not_l4")
    expect(prog, ether(IP(src=client4(3), dst=VIP4, proto=47) / Raw(b"\0" * 8)), PASS,
           "pass_not_l4")
    expect(prog, ether(IPv6(src=client6(3), dst=VIP6, nh=47) / Raw(b"\0" * 8)), PASS,
           "pass_not_l4")


def icmp4_error(client, cport, vport=80, proto=TCP, vip=VIP4):
    """ICMP fragmentation-needed from a router on the path, quoting a packet the
    real sent from the VIP to the client (its IP header and first 8 bytes)."""
    quoted = bytes(IP(src=vip, dst=client) / proto(sport=vport, dport=cport) / Raw(b"r" * 40))
    return ether(IP(src="198.51.100.1", dst=vip) / ICMP(type=3, code=4, nexthopmtu=1400)
                 / Raw(quoted[:28]))


def icmp6_error(client, cport, vport=80, kind=ICMPv6PacketTooBig, proto=TCP, vip=VIP6):
    quoted = bytes(IPv6(src=vip, dst=client) / proto(sport=vport, dport=cport) / Raw(b"r" * 40))
    icmp = kind(mtu=1280) if kind is ICMPv6PacketTooBig else kind(code=4)
    return ether(IPv6(src="2001:db8:ffff::1", dst=vip) / icmp / Raw(quoted[:48 + 16]))


@pytest.mark.parametrize("family", [4, 6])
def test_icmp_errors_follow_their_flow(prog, path_lb, family):
    """An ICMP error about a flow reaches the real that has the flow."""
    flows = {}
    for i in range(30):
        if family == 4:
            frame = tcp(client4(i), VIP4, 30000 + i, 80)
        else:
            frame = tcp(client6(i), VIP6, 30000 + i, 80)
        action, out = run(prog, frame)
        assert action == TX
        flows[i] = check_encap(out, frame)
    assert len(set(flows.values())) > 1
    before = counters(prog)
    for i, real in flows.items():
        if family == 4:
            err = icmp4_error(client4(i), 30000 + i)
        else:
            err = icmp6_error(client6(i), 30000 + i,
                              kind=ICMPv6PacketTooBig if i % 2 else ICMPv6DestUnreach)
        action, out = run(prog, err)
        assert action == TX, i
        assert check_encap(out, err) == real, i
    c = moved(before, counters(prog))
    assert c["icmp_balanced"] == 30 and c["tx"] == 30 and c["conn_hit"] == 30
    assert "new_conn" not in c  # an ICMP error creates no flow


def test_icmp_error_for_udp_flow(prog, path_lb):
    frame = udp(client4(5), VIP4, 5353, 53)
    _, out = run(prog, frame)
    real = real_of(out)
    action, out = run(prog, icmp4_error(client4(5), 5353, vport=53, proto=UDP))
    assert action == TX and real_of(out) == real


def test_icmp_error_quoting_non_vip_passes(prog, path_lb):
    expect(prog, icmp4_error(client4(1), 1234, vip="10.9.9.9"), PASS, "pass_no_vip")
    expect(prog, icmp6_error(client6(1), 1234, vip="fc00:9::9"), PASS, "pass_no_vip")


def test_non_vip_tcp_udp_pass(prog, path_lb):
    for frame in (tcp(client4(1), "10.9.9.9", 1234, 80),
                  udp(client4(1), "10.9.9.9", 1234, 53),
                  tcp(client4(1), VIP4, 1234, 81),     # VIP address, another port
                  udp(client4(1), VIP4, 1234, 80),     # VIP address and port, another proto
                  udp(client4(1), VIP4_ANY, 1234, 80),  # the port-0 VIP is TCP only
                  tcp(client6(1), "fc00:9::9", 1234, 80),
                  udp(client6(1), VIP6, 1234, 54),
                  tcp(client6(1), VIP6_ANY, 1234, 80)):
        expect(prog, frame, PASS, "pass_no_vip")


def test_port_wildcard_vip(prog, path_lb):
    for port in (1, 22, 80, 443, 8080, 65535):
        frame = tcp(client4(port % 200), VIP4_ANY, 20000, port)
        action, out = run(prog, frame)
        assert action == TX and check_encap(out, frame) in REALS4
        frame = udp(client6(port % 200), VIP6_ANY, 20000, port)
        action, out = run(prog, frame)
        assert action == TX and check_encap(out, frame) in REALS6


def test_exact_vip_preferred_over_wildcard(prog, lb):
    configure(prog, lb, doc([
        {"address": VIP4, "port": 80, "proto": "tcp", "reals": reals(REALS4[:1])},
        {"address": VIP4, "port": 0, "proto": "tcp", "reals": reals(REALS4[1:2])},
    ]))
    _, out = run(prog, tcp(client4(1), VIP4, 1000, 80))
    assert real_of(out) == REALS4[0]
    _, out = run(prog, tcp(client4(1), VIP4, 1000, 81))
    assert real_of(out) == REALS4[1]


def test_established_flows_see_each_vip_change_a_lookup_would(prog, lb):
    """An established flow's packets skip the VIP lookup while the VIP that took
    the flow stands unchanged (the tag in its entry): every change that would
    make the lookup find another VIP, none, or a VIP that skips the table, is
    seen as if the lookup had been made. Trace and counters say which VIP."""
    keeper = {"address": VIP4_ANY, "port": 443, "proto": "tcp", "reals": reals(REALS4[:2])}
    wild = {"address": VIP4, "port": 0, "proto": "tcp", "reals": reals(REALS4[1:2])}
    exact = {"address": VIP4, "port": 80, "proto": "tcp", "reals": reals(REALS4[:1])}
    other = {"address": VIP4_ANY, "port": 80, "proto": "tcp", "reals": reals(REALS4[:1])}
    configure(prog, lb, doc([keeper, wild]))  # keeper: the reals stay, and their ids
    lb.set_trace(True)
    syn, ack = tcp(client4(1), VIP4, 1000, 80), tcp(client4(1), VIP4, 1000, 80, flags="A")

    def send(frame):
        action, out = run(prog, frame)
        rec = prog.maps["lb_trace"].read()[-1]
        vips = {v["number"]: v["vip"] for v in lb.list()}
        return (action, real_of(out) if action == TX else None,
                vips.get(int(rec["vip_num"])), L.CONN_STATES[rec["conn"]])

    def use(*vips):
        lb.apply(from_dict(doc(list(vips)), "test"))

    exact_name, wild_name = f"{VIP4}:80/tcp", f"{VIP4}:0/tcp"
    assert send(syn) == (TX, REALS4[1], wild_name, "miss")  # a SYN never reads the table
    assert send(ack) == (TX, REALS4[1], wild_name, "hit")
    # an exact VIP added after a port-0 VIP took the flow: the lookup finds it;
    # the flow keeps its real (the table's word, as for any hit)
    use(keeper, wild, exact)
    assert send(ack) == (TX, REALS4[1], exact_name, "hit")
    assert {v["vip"]: v["packets"] for v in lb.stats()["vips"]} == \
        {f"{VIP4_ANY}:443/tcp": 0, wild_name: 2, exact_name: 1}
    assert send(syn) == (TX, REALS4[0], exact_name, "miss")
    assert send(ack) == (TX, REALS4[0], exact_name, "hit")
    # a flag that skips the table, set on the VIP the entry names, and cleared
    use(keeper, wild, dict(exact, flags=["lru_bypass"]))
    assert send(ack) == (TX, REALS4[0], exact_name, "bypass")
    use(keeper, wild, exact)
    assert send(ack) == (TX, REALS4[0], exact_name, "hit")
    # the exact VIP removed and its number given to another VIP: the lookup finds
    # the port-0 VIP again
    use(keeper, wild, other)
    assert lb.list()[-1]["number"] == 2 and lb.list()[-1]["vip"] == f"{VIP4_ANY}:80/tcp"
    assert send(ack) == (TX, REALS4[0], wild_name, "hit")
    # no VIP left for the address: whatever the table remembers, PASS
    use(keeper, other)
    assert send(ack) == (PASS, None, None, "-")
    # the VIP the entry names removed, its number not taken again
    use(keeper, exact)
    assert send(syn) == (TX, REALS4[0], exact_name, "miss")
    assert send(ack) == (TX, REALS4[0], exact_name, "hit")
    use(keeper)
    assert send(ack) == (PASS, None, None, "-")
    lb.set_trace(False)


def test_established_flow_to_an_address_that_is_no_vip_passes(prog, path_lb):
    before = counters(prog)
    for flags in ("S", "A", "A"):
        expect(prog, tcp(client4(3), "10.9.9.9", 1000, 80, flags=flags), PASS, "pass_no_vip")
    assert moved(before, counters(prog)) == {"pass_no_vip": 3}


def test_frame_above_max_pkt_size_dropped(prog, lb):
    configure(prog, lb, doc(PATH_VIPS))  # max_pkt_size: 1514 by default
    for src, dst in ((client4(1), VIP4), (client6(1), VIP6)):
        room = 1514 - len(tcp(src, dst, 1234, 80))
        fits = tcp(src, dst, 1234, 80, payload=b"z" * room)
        assert len(fits) == 1514
        action, out = run(prog, fits)
        assert action == TX
        check_encap(out, fits)
        big = tcp(src, dst, 1234, 80, payload=b"z" * (room + 1))
        assert len(big) == 1515
        expect(prog, big, DROP, "drop_too_big")
    configure(prog, lb, doc(PATH_VIPS, max_pkt_size=200))
    expect(prog, tcp(client4(1), VIP4, 1234, 80, payload=b"z" * 200), DROP, "drop_too_big")
    expect(prog, tcp(client4(1), VIP4, 1234, 80, payload=b"z" * 100), TX, "tx")


def test_vip_without_reals_drops(prog, lb):
    """A VIP whose reals were all removed drops new flows and established ones
    (the connection table still names the removed reals)."""
    udp_reals = ["10.0.1.2", "10.0.1.3"]
    configure(prog, lb, doc([
        {"address": VIP4, "port": 80, "proto": "tcp", "reals": reals(REALS4)},
        {"address": VIP6, "port": 80, "proto": "tcp", "reals": reals(REALS6)},
        {"address": VIP4, "port": 53, "proto": "udp", "reals": reals(udp_reals)},
    ]))
    name4, name6, nameu = f"{VIP4}:80/tcp", f"[{VIP6}]:80/tcp", f"{VIP4}:53/udp"
    established = [tcp(client4(1), VIP4, 1234, 80, flags="A"),
                   tcp(client6(1), VIP6, 1234, 80, flags="A"),
                   udp(client4(1), VIP4, 1234, 53)]
    for frame in (tcp(client4(1), VIP4, 1234, 80), tcp(client6(1), VIP6, 1234, 80),
                  established[2]):
        assert run(prog, frame)[0] == TX
    assert (len(conn_table(prog)), len(conn_table(prog, v6=True))) == (2, 1)
    for name, addresses in ((name4, REALS4), (name6, REALS6), (nameu, udp_reals)):
        for a in addresses:
            lb.remove_real(name, a)
    assert all(not v["reals"] for v in lb.list())
    for frame in (tcp(client4(2), VIP4, 1234, 80), tcp(client6(2), VIP6, 1234, 80),
                  udp(client4(2), VIP4, 1234, 53)):
        expect(prog, frame, DROP, "drop_no_real")
    for frame in established:
        action, out = run(prog, frame)
        assert action == DROP, f"sent to {real_of(out)}" if action == TX else action
    assert counters(prog)["drop_no_real"] == 6


def test_flows_of_a_removed_real_move_to_a_live_one(prog, lb):
    """Established flows (TCP ACKs, UDP) of a removed real are re-balanced onto the
    reals left, not sent to the removed one's emptied map row."""
    configure(prog, lb, doc([
        {"address": VIP4, "port": 80, "proto": "tcp", "reals": reals(REALS4)},
        {"address": VIP4, "port": 53, "proto": "udp", "reals": reals(REALS4)},
    ]))
    first = {}
    for i in range(60):
        for key, frame in ((("t", i), tcp(client4(i), VIP4, 2000 + i, 80)),
                           (("u", i), udp(client4(i), VIP4, 2000 + i, 53))):
            action, out = run(prog, frame)
            assert action == TX
            first[key] = real_of(out)
    gone = REALS4[0]
    lb.remove_real(f"{VIP4}:80/tcp", gone)
    lb.remove_real(f"{VIP4}:53/udp", gone)
    assert sum(r == gone for r in first.values()) > 5
    before = counters(prog)
    for (kind, i), real in first.items():
        frame = tcp(client4(i), VIP4, 2000 + i, 80, flags="A") if kind == "t" \
            else udp(client4(i), VIP4, 2000 + i, 53)
        action, out = run(prog, frame)
        assert action == TX
        now = check_encap(out, frame)
        if real == gone:
            assert now in REALS4[1:]
        else:
            assert now == real  # flows of the reals left stay where they are
    assert moved(before, counters(prog))["conn_hit"] == \
        sum(r != gone for r in first.values())


def test_rst_creates_no_flow(prog, path_lb):
    before = counters(prog)
    action, _ = run(prog, tcp(client4(1), VIP4, 1234, 80, flags="R"))
    assert action == TX and len(conn_table(prog)) == 0
    assert moved(before, counters(prog)) == {"tx": 1, "conn_miss": 1}


def test_flood_guard(prog, lb):
    """Past max_new_conns new flows a second, flows are balanced but not remembered."""
    configure(prog, lb, doc(PATH_VIPS, max_new_conns=5))
    prog.use_capture_time(True)
    frames = [tcp(client4(i), VIP4, 1000 + i, 80) for i in range(12)]
    got = run_many(prog, frames, ts=[10**18 + i for i in range(12)])
    assert all(a == TX for a, _ in got)
    c = counters(prog)
    assert (c["new_conn"], c["flood_skip"], len(conn_table(prog))) == (5, 7, 5)
    # a second later, the guard lets new flows in again
    got = run_many(prog, [tcp(client4(50), VIP4, 1000, 80)], ts=[10**18 + 2 * 10**9])
    assert counters(prog)["new_conn"] == 6 and len(conn_table(prog)) == 6
    prog.use_capture_time(False)


# -- 3. flow stickiness ------------------------------------------------------------

def test_tcp_flow_stickiness_across_add_real(prog, lb):
    name = f"{VIP4}:80/tcp"
    configure(prog, lb, doc([{"address": VIP4, "port": 80, "proto": "tcp",
                              "reals": reals(REALS4)}]))
    rnd = random.Random(11)
    flows = [(f"192.168.{rnd.randrange(256)}.{rnd.randrange(1, 255)}", rnd.randrange(1024, 65536))
             for _ in range(300)]
    flows = list(dict.fromkeys(flows))

    def send(flags, which=flows):
        got = run_many(prog, [tcp(c, VIP4, p, 80, flags=flags) for c, p in which])
        assert all(a == TX for a, _ in got)
        return [real_of(out) for _, out in got]

    first = send("S")
    assert set(first) == set(REALS4)
    for _ in range(2):
        assert send("A") == first
    assert len(conn_table(prog)) == len(flows)

    new_real = "10.0.0.9"
    lb.add_real(name, new_real)
    # established flows keep their real (connection-table hits)
    before = counters(prog)
    assert send("A") == first
    assert moved(before, counters(prog)) == {"tx": len(flows), "conn_hit": len(flows)}

    # new flows spread over every real, the new one included
    rnd2 = random.Random(12)
    fresh = [(f"100.64.{rnd2.randrange(256)}.{rnd2.randrange(1, 255)}",
              rnd2.randrange(1024, 65536)) for _ in range(300)]
    spread = send("S", fresh)
    assert set(spread) == set(REALS4) | {new_real}
    assert spread.count(new_real) > 30

    # a SYN of an existing flow re-hashes: it goes where a flow the table does
    # not know goes (the ring's current choice), and the table follows it
    resyn = send("S")
    saved = conn_table(prog).buffer.copy()
    conn_table(prog).clear()
    ring_choice = send("A")
    assert resyn == ring_choice
    conn_table(prog).buffer[:] = saved
    moved_flows = [i for i in range(len(flows)) if resyn[i] != first[i]]
    assert moved_flows and sum(resyn[i] == new_real for i in moved_flows) > len(moved_flows) // 2
    assert send("A") == resyn


def test_ipv6_flow_stickiness(prog, lb):
    name = f"[{VIP6}]:80/tcp"
    configure(prog, lb, doc([{"address": VIP6, "port": 80, "proto": "tcp",
                              "reals": reals(REALS6)}]))
    flows = [(client6(i * 7919), 1024 + i) for i in range(150)]
    frames_syn = [tcp(c, VIP6, p, 80) for c, p in flows]
    frames_ack = [tcp(c, VIP6, p, 80, flags="A") for c, p in flows]
    first = [real_of(o) for _, o in run_many(prog, frames_syn)]
    assert set(first) == set(REALS6)
    lb.add_real(name, "fc00::9")
    assert [real_of(o) for _, o in run_many(prog, frames_ack)] == first
    again = [real_of(o) for _, o in run_many(prog, frames_syn)]
    assert "fc00::9" in again


def test_connection_entries(prog, lb):
    """An IPv4 flow's entry is in the IPv4 table (32-byte rows, two a cache
    line), an IPv6 flow's in the IPv6 one; each keeps its real's id and its
    VIP's tag in one word, and its last packet's time in milliseconds mod 2**32."""
    configure(prog, lb, doc(PATH_VIPS))
    assert (conn_table(prog).keys.strides[0], conn_table(prog, v6=True).keys.strides[0]) \
        == (32, 64)
    ids = {str(a): i for a, i in lb.real_ids().items()}
    numbers = {v["vip"]: v["number"] for v in lb.list()}
    t = 10**18 + 123_456_789
    prog.use_capture_time(True)
    try:
        for v6, client, vip, name in ((False, client4(1), VIP4, f"{VIP4}:80/tcp"),
                                      (True, client6(1), VIP6, f"[{VIP6}]:80/tcp")):
            (action, out), = run_many(prog, [tcp(client, vip, 1234, 80)], ts=[t])
            assert action == TX
            (key, conn), = conn_table(prog, v6).items()
            tag = int(prog.maps["vip_tags"].lookup(numbers[name])["tag"])
            assert tag >> L.TAG_BITS and ids[real_of(out)]
            assert conn == {"real_tag": ids[real_of(out)] | tag << L.REAL_BITS,
                            "atime_ms": t // 10**6 % 2**32}
            assert key == {"saddr": client, "daddr": vip, "sport": 1234, "dport": 80, "proto": 6}
    finally:
        prog.use_capture_time(False)


@pytest.mark.parametrize("before,after", [(4094, 4095), (4095, 1)])
def test_vip_tags_fit_beside_the_real(prog, lb, before, after):
    """A VIP number taken again gets the next generation of tag, which wraps
    (never to 0) before it outgrows the bits an entry keeps beside its real."""
    assert (1 << L.TAG_WIDTH - L.TAG_BITS) - 1 == 4095
    configure(prog, lb, doc([]))
    tags = prog.maps["vip_tags"]
    tags.update(0, (L.F_REMOVED, before << L.TAG_BITS))  # number 0's last VIP was removed
    name = f"{VIP4}:80/tcp"
    lb.add_vip(name)
    lb.add_real(name, REALS4[0])
    assert lb.list()[0]["number"] == 0 and tags.lookup(0)["tag"] == after << L.TAG_BITS
    run(prog, tcp(client4(1), VIP4, 1000, 80))
    before_ack = counters(prog)
    action, out = run(prog, tcp(client4(1), VIP4, 1000, 80, flags="A"))
    assert action == TX and real_of(out) == REALS4[0]
    assert moved(before_ack, counters(prog)) == {"tx": 1, "conn_hit": 1}
    (_, conn), = conn_table(prog).items()
    assert conn["real_tag"] >> L.REAL_BITS == after << L.TAG_BITS


# ms-wrap: the entries' milliseconds (mod 2**32) wrap 2 s after t0, between the
# last refresh and the packet 1.1 s later that finds the entry expired
@pytest.mark.parametrize("t0", [10**18, (2**32 - 2000) * 10**6], ids=["", "ms-wrap"])
def test_udp_entries_expire(prog, lb, t0):
    """A UDP connection-table entry older than udp_timeout is ignored; one used
    within it is refreshed (capture timestamps make the clock deterministic)."""
    name = f"{VIP4}:53/udp"
    configure(prog, lb, doc([{"address": VIP4, "port": 53, "proto": "udp",
                              "reals": reals(REALS4)}], udp_timeout=1))
    prog.use_capture_time(True)
    try:
        flows = [udp(client4(i), VIP4, 3000 + i, 53) for i in range(120)]
        n = len(flows)
        sec = 10**9

        def send(t):
            got = run_many(prog, flows, ts=[t] * n)
            assert all(a == TX for a, _ in got)
            return [real_of(o) for _, o in got]

        first = send(t0)
        lb.add_real(name, "10.0.0.9")  # the ring moves some of the flows
        before = counters(prog)
        assert send(t0 + sec * 8 // 10) == first  # within the timeout: remembered
        assert send(t0 + sec * 16 // 10) == first  # refreshed by the last packet
        assert moved(before, counters(prog))["conn_hit"] == 2 * n
        before = counters(prog)
        late = send(t0 + sec * 16 // 10 + sec + sec // 10)  # 1.1 s since the last packet
        c = moved(before, counters(prog))
        assert c["conn_miss"] == n and "conn_hit" not in c
        assert late != first and "10.0.0.9" in late
        # the re-hashed choice is remembered again from then on
        assert send(t0 + 3 * sec) == late
        # TCP entries do not expire
        before = counters(prog)
        syn = tcp(client4(1), VIP4, 999, 53)
        lb.add_vip(f"{VIP4}:53/tcp")
        lb.add_real(f"{VIP4}:53/tcp", REALS4[0])
        lb.add_real(f"{VIP4}:53/tcp", REALS4[1])
        got = run_many(prog, [syn, tcp(client4(1), VIP4, 999, 53, flags="A")],
                       ts=[t0, t0 + 100 * sec])
        assert counters(prog)["conn_hit"] - before["conn_hit"] == 1
        assert real_of(got[0][1]) == real_of(got[1][1])
    finally:
        prog.use_capture_time(False)


# -- 4. VIP flags ------------------------------------------------------------------

def test_hash_no_src_port(prog, lb):
    configure(prog, lb, doc([
        {"address": VIP4, "port": 80, "proto": "tcp", "flags": ["hash_no_src_port", "lru_bypass"],
         "reals": reals(REALS4)},
        {"address": VIP4, "port": 81, "proto": "tcp", "flags": ["lru_bypass"],
         "reals": reals(REALS4)},
        {"address": VIP6, "port": 80, "proto": "tcp", "flags": ["hash_no_src_port", "lru_bypass"],
         "reals": reals(REALS6)},
    ]))
    per_client = []
    for i in range(30):
        for vip, client in ((VIP4, client4(i)), (VIP6, client6(i))):
            got = run_many(prog, [tcp(client, vip, 1024 + 97 * p, 80) for p in range(12)])
            used = {real_of(o) for _, o in got}
            assert len(used) == 1, (client, used)
            per_client.append(used.pop())
    assert len(set(per_client)) == 6  # clients still spread over the reals
    # without the flag, one client's ports spread
    got = run_many(prog, [tcp(client4(0), VIP4, 1024 + 97 * p, 81) for p in range(12)])
    assert len({real_of(o) for _, o in got}) > 1
    assert len(conn_table(prog)) == 0


def test_lru_bypass(prog, lb):
    name = f"{VIP4}:80/tcp"
    configure(prog, lb, doc([{"address": VIP4, "port": 80, "proto": "tcp",
                              "flags": ["lru_bypass"], "reals": reals(REALS4)}]))
    syns = [tcp(client4(i), VIP4, 4000 + i, 80) for i in range(100)]
    acks = [tcp(client4(i), VIP4, 4000 + i, 80, flags="A") for i in range(100)]
    first = [real_of(o) for _, o in run_many(prog, syns)]
    assert [real_of(o) for _, o in run_many(prog, acks)] == first  # the ring is stable
    assert len(conn_table(prog)) == 0 and len(prog.maps["fallback_conns"]) == 0
    c = counters(prog)
    assert c["tx"] == 200 and c["conn_hit"] == c["conn_miss"] == c["new_conn"] == 0
    # nothing remembers the flows: after a ring change established flows follow it
    lb.add_real(name, "10.0.0.9")
    after = [real_of(o) for _, o in run_many(prog, acks)]
    assert after != first and "10.0.0.9" in after
    assert after == [real_of(o) for _, o in run_many(prog, syns)]


def test_hash_dport_only(prog, lb):
    configure(prog, lb, doc([
        {"address": VIP4, "port": 0, "proto": "tcp", "flags": ["hash_dport_only"],
         "reals": reals(REALS4)},
        {"address": VIP6, "port": 0, "proto": "udp", "flags": ["hash_dport_only"],
         "reals": reals(REALS6)}]))
    by_port4, by_port6 = {}, {}
    for dport in range(1000, 1030):
        got = run_many(prog, [tcp(client4(i), VIP4, 1024 + 31 * i, dport) for i in range(10)])
        used = {real_of(o) for _, o in got}
        assert len(used) == 1, dport
        by_port4[dport] = used.pop()
        got = run_many(prog, [udp(client6(i), VIP6, 1024 + 31 * i, dport) for i in range(10)])
        used = {real_of(o) for _, o in got}
        assert len(used) == 1, dport
        by_port6[dport] = used.pop()
    assert set(by_port4.values()) == set(REALS4)
    assert set(by_port6.values()) == set(REALS6)


def quic_short(server_id, version=1, tail=b"\x5a" * 24):
    """A QUIC short-header packet whose destination connection id carries
    ``server_id`` (id version in the first byte's top 2 bits)."""
    width = {1: 2, 2: 3, 3: 4}[version]
    cid = bytes([version << 6 | 0x15]) + server_id.to_bytes(width, "big") + b"\x77" * 4
    return b"\x41" + cid + tail


def quic_long(server_id, packet_type, tail=b"\x5a" * 24):
    """A QUIC long-header packet (Initial 0, 0-RTT 1, Handshake 2, Retry 3)."""
    cid = bytes([1 << 6 | 0x15]) + server_id.to_bytes(2, "big") + b"\x77" * 5
    return bytes([0xC0 | packet_type << 4]) + b"\x00\x00\x00\x01" + bytes([len(cid)]) + cid \
        + b"\x00" + tail


@pytest.mark.parametrize("vip,real_list,client", [(VIP4, REALS4, client4),
                                                    (VIP6, REALS6, client6)])
def test_quic_routes_by_server_id(prog, lb, vip, real_list, client):
    configure(prog, lb, doc([{"address": vip, "port": 443, "proto": "udp", "flags": ["quic"],
                              "reals": reals(real_list)}]))
    target = real_list[1]
    lb.set_quic_server_id(0x1234, target)
    lb.set_quic_server_id(0x0042, real_list[2])

    def send(payloads):
        got = run_many(prog, [udp(client(i), vip, 7000 + i, 443, payload=p)
                              for i, p in enumerate(payloads)])
        assert all(a == TX for a, _ in got)
        return [real_of(o) for _, o in got]

    before = counters(prog)
    assert set(send([quic_short(0x1234)] * 60)) == {target}
    assert set(send([quic_short(0x0042)] * 60)) == {real_list[2]}
    assert set(send([quic_short(0x1234, version=2)] * 20)) == {target}
    assert set(send([quic_short(0x1234, version=3)] * 20)) == {target}
    assert set(send([quic_long(0x1234, 2)] * 20)) == {target}  # Handshake
    c = moved(before, counters(prog))
    assert c["quic_routed"] == 180 and "conn_miss" not in c  # the id wins over the table
    # Initial and 0-RTT: the client chose the id: hashed like any flow
    before = counters(prog)
    for kind in (0, 1):
        assert len(set(send([quic_long(0x1234, kind)] * 60))) > 1
    # an unknown server id, or an id version 0: hashed too
    assert len(set(send([quic_short(0x0999)] * 60))) > 1
    assert len(set(send([quic_short(0x1234, version=1)[:1] + b"\x15\x12\x34" + b"\0" * 30]
                        * 60))) > 1
    assert "quic_routed" not in moved(before, counters(prog))


def test_quic_server_id_of_removed_real_falls_back_to_hashing(prog, lb):
    configure(prog, lb, doc([{"address": VIP4, "port": 443, "proto": "udp", "flags": ["quic"],
                              "reals": reals(REALS4)}]))
    lb.set_quic_server_id(0x1234, REALS4[0])
    lb.remove_real(f"{VIP4}:443/udp", REALS4[0])
    got = run_many(prog, [udp(client4(i), VIP4, 7000 + i, 443, payload=quic_short(0x1234))
                          for i in range(30)])
    assert all(a == TX for a, _ in got)
    assert {real_of(o) for _, o in got} <= set(REALS4[1:])


# -- 5. control-plane errors ----------------------------------------------------------

STATE_MAPS = ("vip_map", "vip_addrs", "reals", "ch_rings", "ctl", "server_ids")


def snapshot(prog, lb):
    return ({n: prog.maps[n].buffer.copy() for n in STATE_MAPS}, lb.list(), to_dict(lb.cfg))


def assert_unchanged(prog, lb, snap):
    maps, listing, cfg = snap
    for n in STATE_MAPS:
        assert np.array_equal(prog.maps[n].buffer, maps[n]), f"map {n} changed"
    assert lb.list() == listing and to_dict(lb.cfg) == cfg


@pytest.fixture
def ctl_lb(prog, lb):
    configure(prog, lb, doc([
        {"address": VIP4, "port": 80, "proto": "tcp", "reals": reals(REALS4[:2])},
        {"address": VIP6, "port": 80, "proto": "tcp", "reals": reals(REALS6[:2])},
    ]))
    return lb


CONTROL_ERRORS = [
    ("unknown VIP", lambda lb: lb.add_real("10.9.9.9:80/tcp", "10.0.0.7"), r"10\.9\.9\.9:80/tcp"),
    ("unknown VIP, remove", lambda lb: lb.remove_real(f"{VIP4}:81/tcp", REALS4[0]),
     r"10\.200\.1\.1:81/tcp"),
    ("duplicate real", lambda lb: lb.add_real(f"{VIP4}:80/tcp", REALS4[0]),
     r"10\.0\.0\.2"),
    ("weight 0", lambda lb: lb.add_real(f"{VIP4}:80/tcp", "10.0.0.7", weight=0),
     r"10\.0\.0\.7.*weight 0"),
    ("set weight 0", lambda lb: lb.set_weight(f"{VIP4}:80/tcp", REALS4[0], 0),
     r"10\.0\.0\.2.*weight 0"),
    ("malformed real", lambda lb: lb.add_real(f"{VIP4}:80/tcp", "10.0.0.300"), r"10\.0\.0\.300"),
    ("malformed VIP", lambda lb: lb.add_vip("10.0.0.300:80/tcp"), r"10\.0\.0\.300"),
    # a zone index: the maps keep 16 bytes, so the real was never found again
    # and each change of its VIP gave it one more id (found by fuzzing)
    ("real with a zone index", lambda lb: lb.add_real(f"[{VIP6}]:80/tcp", "fe80::1%eth0"),
     r"fe80::1%eth0.*zone index"),
    ("VIP with a zone index", lambda lb: lb.add_vip("[fe80::1%eth0]:80/tcp"), r"zone index"),
    # all zeros is how the reals map marks an empty row: such a real was lost too
    ("unspecified real", lambda lb: lb.add_real(f"[{VIP6}]:80/tcp", "::"), r"'::'.*unspecified"),
    ("unspecified VIP", lambda lb: lb.add_vip("0.0.0.0:80/tcp"), r"0\.0\.0\.0.*unspecified"),
    # stored as the IPv4 address it maps, then found as that: the same leak
    ("IPv4-mapped real", lambda lb: lb.add_real(f"[{VIP6}]:80/tcp", "::ffff:10.0.0.7"),
     r"IPv4-mapped address: give the IPv4 address \(10\.0\.0\.7\)"),
    ("bad VIP port", lambda lb: lb.add_vip("10.0.0.30:70000/tcp"), r"70000"),
    ("bad VIP proto", lambda lb: lb.add_vip("10.0.0.30:80/sctp"), r"sctp"),
    ("bad flag", lambda lb: lb.add_vip("10.0.0.30:80/tcp", ["fast"]), r"fast"),
    ("IPv4 real on IPv6 VIP", lambda lb: lb.add_real(f"[{VIP6}]:80/tcp", "10.0.0.7"),
     r"fc00:1::1.*10\.0\.0\.7"),
    ("duplicate VIP", lambda lb: lb.add_vip(f"{VIP4}:80/tcp"), r"10\.200\.1\.1:80/tcp"),
    ("unknown real", lambda lb: lb.remove_real(f"{VIP4}:80/tcp", "10.0.0.77"), r"10\.0\.0\.77"),
    ("QUIC id of a non-real", lambda lb: lb.set_quic_server_id(5, "10.0.0.77"), r"10\.0\.0\.77"),
    ("QUIC id out of range", lambda lb: lb.set_quic_server_id(70000, REALS4[0]), r"70000"),
    ("bad gateway mac", lambda lb: lb.set_gateway_mac("02:00:00:00:00"), r"02:00:00:00:00"),
]


@pytest.mark.parametrize("what,call,match", CONTROL_ERRORS, ids=[c[0] for c in CONTROL_ERRORS])
def test_control_errors_change_nothing(prog, ctl_lb, what, call, match):
    snap = snapshot(prog, ctl_lb)
    with pytest.raises(LbError, match=match):
        call(ctl_lb)
    assert_unchanged(prog, ctl_lb, snap)


def test_full_vip_table(prog, ctl_lb):
    lb = ctl_lb
    for i in range(L.MAX_VIPS - 2):
        lb.add_vip(f"10.201.{i // 200}.{i % 200 + 1}:80/tcp")
    assert len(lb.list()) == L.MAX_VIPS
    snap = snapshot(prog, lb)
    with pytest.raises(LbError, match=r"10\.202\.0\.1:80/tcp.*full"):
        lb.add_vip("10.202.0.1:80/tcp")
    assert_unchanged(prog, lb, snap)
    # the VIPs there still work
    assert run(prog, tcp(client4(1), VIP4, 1234, 80))[0] == TX



def test_a_new_load_balancer_replaces_what_the_maps_hold(prog, ctl_lb):
    """A configuration applied by a second LoadBalancer over the same maps (a
    program loaded again in one process is the same one, maps and all) is what
    the maps then say: VIPs it lacks are gone, even a full table's worth that
    the first one added (before, they stayed and balanced traffic, and the
    table had no number left for a new VIP: StopIteration)."""
    for i in range(L.MAX_VIPS - 2):
        ctl_lb.add_vip(f"10.201.{i // 200}.{i % 200 + 1}:80/tcp")
    assert run(prog, tcp(client4(1), VIP4, 1234, 80))[0] == TX
    fresh = LoadBalancer(prog.maps, from_dict(doc([
        {"address": "10.203.0.1", "port": 80, "proto": "tcp", "reals": reals(REALS4[:1])}]),
        "test"))
    assert [k["addr"] for k, _ in prog.maps["vip_map"].items()] == ["10.203.0.1"]
    assert [v["vip"] for v in fresh.list()] == ["10.203.0.1:80/tcp"]
    assert run(prog, tcp(client4(1), VIP4, 1234, 80))[0] == PASS  # no VIP there now
    assert run(prog, tcp(client4(1), "10.203.0.1", 1234, 80))[0] == TX
    assert not prog.maps["ch_rings"].values[0, L.RING_SIZE:].any()  # others' rings emptied


BAD_DOCS = [
    ({"gateway_mac": GW_MAC, "colour": "blue"}, r"colour"),
    ({"vip": [{"address": VIP4, "port": 80, "proto": "sctp"}]}, r"sctp"),
    ({"gateway_mac": "02:00:00:00:00:zz"}, r"02:00:00:00:00:zz"),
    ({"encap": "vxlan"}, r"vxlan"),
    ({"vip": [{"address": VIP4, "port": 80, "proto": "tcp", "weight": 3}]}, r"weight"),
    ({"vip": [{"address": "10.0.0.300", "port": 80}]}, r"10\.0\.0\.300"),
    ({"vip": [{"address": VIP6, "port": 80, "reals": [{"address": "10.0.0.2"}]}]},
     r"10\.0\.0\.2"),
    ({"vip": [{"address": VIP4, "port": 80, "reals": [{"address": "10.0.0.2", "weight": 0}]}]},
     r"weight 0"),
    ({"vip": [{"address": VIP4, "port": 80}, {"address": VIP4, "port": 80}]},
     r"10\.200\.1\.1:80/tcp"),
    ({"max_pkt_size": 10}, r"max_pkt_size"),
    ({"udp_timeout": 0}, r"udp_timeout"),
    ({"udp_timeout": 0.0005}, r"udp_timeout 0\.0005 must be seconds from 0\.001 to 2147483"),
    ({"udp_timeout": 2147484}, r"udp_timeout 2147484"),
    # TOML has inf and nan, and arrays where a string belongs (found by fuzzing)
    ({"vip": [{"address": VIP4, "port": 80, "reals": [{"address": "10.0.0.2",
                                                        "weight": 2**32}]}]},
     r"weight 4294967296 must be an integer in 1\.\.4294967295"),
    ({"udp_timeout": float("inf")}, r"udp_timeout inf"),
    ({"udp_timeout": float("nan")}, r"udp_timeout nan"),
    ({"udp_timeout": 1e300}, r"udp_timeout 1e\+300"),
    ({"encap": ["ipip"]}, r"encap \['ipip'\]"),
    ({"vip": [{"address": VIP4, "port": 80, "proto": ["tcp"]}]}, r"proto \['tcp'\]"),
    ({"vip": [{"address": VIP4, "port": 80, "flags": [["quic"]]}]}, r"flags \[\['quic'\]\]"),
]


@pytest.mark.parametrize("document,match", BAD_DOCS)
def test_bad_config_document(prog, ctl_lb, document, match):
    snap = snapshot(prog, ctl_lb)
    with pytest.raises(LbError, match=match) as info:
        from_dict(document, "bad.toml")
    assert str(info.value).startswith("bad.toml")
    assert_unchanged(prog, ctl_lb, snap)


# -- 6. per-VIP and per-real stats ----------------------------------------------------

def test_vip_and_real_stats(prog, lb):
    configure(prog, lb, doc([
        {"address": VIP4, "port": 80, "proto": "tcp", "reals": reals(REALS4)},
        {"address": VIP6, "port": 53, "proto": "udp", "reals": reals(REALS6)},
        {"address": VIP4_ANY, "port": 0, "proto": "tcp", "reals": reals(REALS4)},
    ]))
    rnd = random.Random(5)
    frames = []
    for i in range(80):
        size = rnd.randrange(0, 900)
        if i % 2:
            frames.append(tcp(client4(i % 25), VIP4, 6000 + i % 25, 80, flags="A",
                              payload=b"p" * size))
        else:
            frames.append(udp(client6(i % 25), VIP6, 6000 + i % 25, 53, payload=b"p" * size))
    # packets that are not balanced count nowhere
    noise = [tcp(client4(1), "10.9.9.9", 1, 80), tcp(client4(1), VIP4, 1, 80, payload=b"z" * 1500),
             ether(IP(src=client4(1), dst=VIP4) / ICMP(type=8))]
    got = run_many(prog, frames + noise)
    want_vip = {f"{VIP4}:80/tcp": [0, 0], f"[{VIP6}]:53/udp": [0, 0], f"{VIP4_ANY}:0/tcp": [0, 0]}
    want_real = {r: [0, 0] for r in REALS4 + REALS6}
    for frame, (action, out) in zip(frames, got):
        assert action == TX
        name = f"{VIP4}:80/tcp" if frame[12:14] == b"\x08\x00" else f"[{VIP6}]:53/udp"
        for w in (want_vip[name], want_real[real_of(out)]):
            w[0] += 1
            w[1] += len(frame)
    s = lb.stats()
    assert {v["vip"]: [v["packets"], v["bytes"]] for v in s["vips"]} == want_vip
    assert {r["real"]: [r["packets"], r["bytes"]] for r in s["reals"]} == want_real
    assert sum(p for p, _ in want_real.values()) == len(frames)
    assert s["counters"]["tx"] == len(frames)
    assert (s["counters"]["pass_no_vip"], s["counters"]["drop_too_big"],
            s["counters"]["icmp_echo"]) == (1, 1, 1)
