"""encap_ipip: bpf_xdp_adjust_head and the IPv4 checksum helper, end to end;
dpkt decodes every output packet and checks the outer header."""

from pathlib import Path

import dpkt

from dataplane import load_program
from dataplane.io.capture import open_capture
from dataplane.pipeline import VerdictPcaps, replay

SMALL = Path(__file__).resolve().parent.parent / "pcaps" / "small.pcap"


def frames(path):
    with open(path, "rb") as f:
        return [bytes(b) for _, b in dpkt.pcap.Reader(f)]


def checksum_ok(ip_bytes):
    ip = dpkt.ip.IP(ip_bytes)
    stored = ip.sum
    ip.sum = 0
    return dpkt.ip.IP(bytes(ip)).sum == stored


def test_encap_ipip_matches_dpkt(tmp_path):
    prog = load_program("encap_ipip")
    with open_capture(SMALL) as r:
        stats = replay(r, prog, VerdictPcaps(tmp_path, snaplen=262144))
    assert stats.faults == 0
    originals = frames(SMALL)
    encapsulated = [f for f in originals if f[12:14] == b"\x08\x00"]
    passed = [f for f in originals if f[12:14] != b"\x08\x00"]
    tx = frames(tmp_path / "tx.pcap")
    assert len(tx) == len(encapsulated) > 1000
    assert frames(tmp_path / "pass.pcap") == passed
    for before, after in zip(encapsulated, tx):
        eth = dpkt.ethernet.Ethernet(after)
        outer = eth.data
        assert after[:14] == before[:14] and isinstance(outer, dpkt.ip.IP)
        assert outer.p == 4 and outer.ttl == 64 and outer.df and outer.hl == 5
        assert dpkt.utils.inet_to_str(outer.src) == "172.16.0.1"
        assert dpkt.utils.inet_to_str(outer.dst) == "172.16.0.2"
        inner_len = int.from_bytes(before[16:18], "big")
        assert outer.len == inner_len + 20 and outer.tos == before[15]
        assert checksum_ok(after[14:34] + after[34:14 + outer.len])
        assert after[34:] == before[14:]  # the inner packet, padding included, untouched
