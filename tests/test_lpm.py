"""BPF_MAP_TYPE_LPM_TRIE: the kernel's semantics (kernel/bpf/lpm_trie.c) from
Python and from programs, against a brute-force longest-prefix reference, and
the acl_lpm program against a dpkt + ipaddress reference."""

import ipaddress
import json
import random
import re
import struct
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import reference
from dataplane import PacketBatch, ProgramError, XdpAction, load_program
from dataplane.kernels import htab
from dataplane.kernels import lpm as lpm_kernels
from dataplane.maps import (BPF_ANY, BPF_EXIST, BPF_MAP_TYPE_LPM_TRIE, BPF_NOEXIST, LPM_V4,
                            LPM_V6, Map, MapError)

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "pcaps" / "small.pcap"
ENOENT, EEXIST, EINVAL, ENOSPC = 2, 17, 22, 28


def lpm(name="acl", key=LPM_V4, value=np.uint32, max_entries=16):
    return Map(name, BPF_MAP_TYPE_LPM_TRIE, key=key, value=value, max_entries=max_entries)


# ---------------------------------------------------------------- reference

class BruteForce:
    """Longest-prefix match by checking every stored network (ipaddress decodes
    them; numpy compares the address with all of them at once)."""

    def __init__(self, nets):
        self.nets = list(nets)
        self.version = self.nets[0].version if self.nets else 4
        words = [self._words(int(n.network_address)) + self._words(int(n.netmask))
                 for n in self.nets]
        a = np.array(words, np.uint64).reshape(-1, 4)
        self.net_hi, self.net_lo, self.mask_hi, self.mask_lo = a.T
        self.plen = np.array([n.prefixlen for n in self.nets])

    def _words(self, x):
        return [x >> 64, x & 0xFFFFFFFFFFFFFFFF] if self.version == 6 else [x, 0]

    def longest(self, addr, maxlen=128):
        """The longest stored network of at most ``maxlen`` bits holding ``addr`` (an
        ipaddress address), or None."""
        hi, lo = (np.uint64(w) for w in self._words(int(addr)))
        hit = ((hi & self.mask_hi) == self.net_hi) & ((lo & self.mask_lo) == self.net_lo) \
            & (self.plen <= maxlen)
        if not hit.any():
            return None
        return self.nets[int(np.argmax(np.where(hit, self.plen, -1)))]


def random_networks(rng, version, count):
    """Random networks of every length, half of them nested in 10.0.0.0/8 or
    2001:db8::/32 (many levels of nesting), deduplicated."""
    bits = 32 if version == 4 else 128
    cluster = ipaddress.ip_network("10.0.0.0/8" if version == 4 else "2001:db8::/32")
    nets = set()
    while len(nets) < count:
        plen = rng.randint(0, bits)
        addr = rng.getrandbits(bits)
        if rng.random() < 0.5:
            plen = rng.randint(cluster.prefixlen, bits)
            addr = int(cluster.network_address) | (addr >> cluster.prefixlen)
        cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
        nets.add(cls((addr >> (bits - plen) << (bits - plen), plen)))
    return sorted(nets)


def random_addresses(rng, nets, count):
    """Addresses inside stored networks (random host bits) and anywhere."""
    version = nets[0].version
    bits = 32 if version == 4 else 128
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    out = []
    for i in range(count):
        if i % 2:
            out.append(make(rng.getrandbits(bits)))
        else:
            n = rng.choice(nets)
            out.append(make(int(n.network_address) | rng.getrandbits(bits - n.prefixlen)))
    return out


# ---------------------------------------------------------------- from Python

def test_longest_match_wins():
    m = lpm()
    for i, net in enumerate(("0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24")):
        m.update(net, i)
    assert [m.lookup(a) for a in ("10.1.2.3", "10.1.3.3", "10.2.0.1", "11.0.0.1",
                                  "255.255.255.255", "0.0.0.0")] == [3, 2, 1, 0, 0, 0]
    assert m.lookup(0x0A010203) == 3 and "10.1.2.3" in m
    # a key with a shorter prefixlen matches only prefixes at most that long (the kernel's)
    assert m.lookup("10.1.2.3/16") == 2 and m.lookup("10.1.2.3/15") == 1
    assert m.lookup((24, "10.1.2.0")) == 3 and m.lookup("10.1.2.3/33") is None
    m.delete("10.1.0.0/16")   # the /24 stays, the rest of the /16 falls back to the /8
    assert [m.lookup(a) for a in ("10.1.2.3", "10.1.3.3")] == [3, 1]
    m.delete("0.0.0.0/0")
    assert m.lookup("11.0.0.1") is None and "11.0.0.1" not in m
    m.update("10.1.0.0/16", 7)
    assert m.lookup("10.1.3.3") == 7 and len(m) == 3


def test_update_flags_delete_and_errors():
    m = lpm(max_entries=3)
    m.update("10.0.0.0/8", 1, BPF_NOEXIST)
    with pytest.raises(MapError, match=r"map 'acl': update '10.0.0.0/8': key exists "
                                       r"\(-EEXIST\)") as e:
        m.update("10.0.0.0/8", 2, BPF_NOEXIST)
    assert e.value.errno == EEXIST
    with pytest.raises(MapError, match=r"no such key \(-ENOENT\)"):
        m.update("10.0.0.0/9", 2, BPF_EXIST)
    # host bits past prefixlen: the same entry, its key's bytes now these (the
    # kernel's trie puts a node with the update's key in the old one's place)
    m.update("10.9.9.9/8", 3, BPF_EXIST)
    assert m.items() == [("10.9.9.9/8", 3)] and m.lookup("10.200.0.1/32") == 3
    with pytest.raises(MapError, match=r"update '10.0.0.0/33': invalid argument \(-EINVAL\)"):
        m.update("10.0.0.0/33", 1)
    with pytest.raises(MapError, match=r"-EINVAL"):
        m.update("10.0.0.0/8", 1, 3)  # unknown flags
    m.update("10.0.0.0/16", 4)
    m.update("10.0.0.0/24", 5)
    with pytest.raises(MapError, match=r"update '11.0.0.0/8': map is full \(3 entries\) "
                                       r"\(-ENOSPC\)") as e:
        m.update("11.0.0.0/8", 6)
    assert e.value.errno == ENOSPC
    with pytest.raises(MapError, match=r"-ENOENT"):  # BPF_EXIST is checked before room
        m.update("11.0.0.0/8", 6, BPF_EXIST)
    m.update("10.0.0.0/16", 8)  # replacing needs no room
    with pytest.raises(MapError, match=r"delete '10.0.0.0/12': no such key \(-ENOENT\)"):
        m.delete("10.0.0.0/12")  # delete is exact: the /8 and /16 around it stay
    with pytest.raises(MapError, match=r"-EINVAL"):
        m.delete((40, 0))
    m.delete("10.0.0.0/24")
    m.update("11.0.0.0/8", 6)  # room again
    assert sorted(m.items()) == [("10.0.0.0/16", 8), ("10.9.9.9/8", 3), ("11.0.0.0/8", 6)]
    m.clear()
    assert len(m) == 0 and m.items() == [] and m.lookup("10.0.0.1") is None


def test_ipv6():
    m = lpm(key=LPM_V6)
    m.update("::/0", 0)
    m.update("2001:db8::/32", 1)
    m.update("2001:db8:bad::/48", 2)
    m.update("2001:db8:bad:0:8000::/65", 3)   # a prefix across the 64-bit halves
    m.update("2001:db8:bad::1", 4)            # an address: /128
    assert [m.lookup(a) for a in ("2001:db8:bad::1", "2001:db8:bad::2", "2001:db8:bad:0:8000::9",
                                  "2001:db8:bae::", "fe80::1")] == [4, 2, 3, 1, 0]
    assert m.lookup((1 << 128) - 1) == 0
    with pytest.raises(MapError, match=r"-EINVAL"):
        m.update("2001:db8::/129", 1)
    m.delete("2001:db8:bad::/48")
    assert m.lookup("2001:db8:bad::2") == 1 and m.lookup("2001:db8:bad:0:8000::9") == 3
    assert sorted(m.to_json(), key=str) == sorted([
        {"key": "::/0", "value": 0}, {"key": "2001:db8::/32", "value": 1},
        {"key": "2001:db8:bad:0:8000::/65", "value": 3},
        {"key": "2001:db8:bad::1/128", "value": 4}], key=str)


def test_key_forms_and_dump():
    m = lpm(value=np.dtype([("rule", "<u4"), ("hits", "<u8")]))
    m.update(ipaddress.ip_network("192.0.2.0/24"), (1, 0))
    m.update((16, "198.51.0.0"), (2, 0))
    m.update((8, 0x0A000000), (3, 0))
    m.update((32, bytes([203, 0, 113, 7])), (4, 0))
    assert m.lookup(ipaddress.ip_address("192.0.2.9")) == {"rule": 1, "hits": 0}
    assert m.lookup((32, "198.51.3.4")) == {"rule": 2, "hits": 0}
    keys, values = m.dump()
    assert keys.dtype == LPM_V4 and values["rule"].tolist() == [1, 2, 3, 4]
    assert keys[2]["prefixlen"] == 8 and keys[2]["data"].tolist() == [10, 0, 0, 0]
    assert keys[3].tobytes() == struct.pack("<I", 32) + bytes([203, 0, 113, 7])
    assert dict(m.items())["203.0.113.7/32"] == {"rule": 4, "hits": 0}
    other = lpm(value=m.value_dtype)
    other.update_batch(keys, values)           # records of the key dtype round-trip
    assert other.items() == m.items()
    other.update_batch(["1.0.0.0/8", "2.0.0.0/8"], [(5, 0), (6, 0)])
    assert other.lookup("2.2.2.2") == {"rule": 6, "hits": 0}
    for bad in ("2001:db8::/32", "10.0.0.0/x", "300.0.0.0/8", 1 << 32, (8, 1 << 40),
                ipaddress.ip_network("::/0"), ("10.0.0.0",), 1.5, (-1, 0)):
        with pytest.raises(MapError, match=r"map 'acl': bad key .* for a 32-bit lpm_trie"):
            m.update(bad, (0, 0))


def test_custom_key_width():
    # a 48-bit key (a MAC address, say) declared as prefixlen + big-endian data
    key = np.dtype([("prefixlen", "<u4"), ("data", "u1", (6,))])
    m = lpm(key=key)
    m.update((24, 0x001122000000), 1)
    m.update((48, 0x001122334455), 2)
    assert m.lookup(0x0011223344FF) == 1 and m.lookup(0x001122334455) == 2
    assert sorted(m.items()) == [("0x001122000000/24", 1), ("0x001122334455/48", 2)]
    with pytest.raises(MapError, match=r"-EINVAL"):
        m.update((49, 0), 1)


@pytest.mark.parametrize("key", [
    np.uint32, np.dtype([("prefixlen", "<u4")]), LPM_V4.descr + [("x", "u1")],
    np.dtype([("plen", "<u4"), ("data", "u1", (4,))]),
    np.dtype([("prefixlen", ">u4"), ("data", "u1", (4,))]),
    np.dtype([("prefixlen", "<u4"), ("data", "<u4")]),
    np.dtype([("prefixlen", "<u4"), ("data", "u1", (17,))]),
])
def test_bad_lpm_declarations(key):
    with pytest.raises(MapError, match=re.escape("map 'acl': lpm_trie keys are a "
                                                 "('prefixlen', '<u4') field")):
        lpm(key=np.dtype(key))


@pytest.mark.parametrize("version", [4, 6])
def test_random_prefixes_against_brute_force(version):
    rng = random.Random(version)
    nets = random_networks(rng, version, 3000)
    m = lpm(key=LPM_V4 if version == 4 else LPM_V6, max_entries=len(nets))
    for i, n in enumerate(nets):
        m.update(str(n), i)
    value = {n: i for i, n in enumerate(nets)}
    addrs = random_addresses(rng, nets, 3000)
    ref = BruteForce(nets)
    want = [value.get(ref.longest(a)) for a in addrs]
    assert [m.lookup(a) for a in addrs] == want
    assert sum(w is not None for w in want) > 1500
    # delete a third (in random order), update some values: the rest still matches
    gone = set(rng.sample(nets, len(nets) // 3))
    for n in gone:
        m.delete(n)
    kept = [n for n in nets if n not in gone]
    for n in kept[::7]:
        value[n] += 10000
        m.update(n, value[n], BPF_EXIST)
    ref = BruteForce(kept)
    assert [m.lookup(a) for a in addrs] == [value.get(ref.longest(a)) for a in addrs]
    assert len(m) == len(kept) and sorted(k for k, _ in m.items()) == sorted(map(str, kept))


def test_many_prefixes_in_one_network_and_index_pool():
    """Thousands of prefixes under one /16 make index nodes (more than the pool
    holds, in a small map: the rest binary-searches); churn keeps them right."""
    rng = random.Random(7)
    m = lpm(max_entries=2000)
    nets = set()
    while len(nets) < 2000:
        plen = rng.choice([20, 24, 24, 26, 28, 30, 32])
        addr = 0x0A420000 | rng.getrandbits(16)
        nets.add(ipaddress.ip_network((addr >> (32 - plen) << (32 - plen), plen)))
    nets = sorted(nets)
    for n in nets:
        m.update(n, n.prefixlen)
    assert m.hdr[5] > 0  # index nodes in use (kernels/lpm.py H_NODES)
    addrs = [ipaddress.IPv4Address(0x0A420000 | rng.getrandbits(16)) for _ in range(2000)]
    stored = set(nets)
    for step in range(3):
        for n in rng.sample(nets, 300):  # delete what is there, put back what is not
            if n in stored:
                m.delete(n)
                stored.remove(n)
            else:
                m.update(n, n.prefixlen, BPF_NOEXIST)
                stored.add(n)
        assert sorted(k for k, _ in m.items()) == sorted(map(str, stored))
        ref = BruteForce(stored)
        want = [None if ref.longest(a) is None else ref.longest(a).prefixlen for a in addrs]
        assert [m.lookup(a) for a in addrs] == want


def test_index_pool_spent_still_exact():
    """Buckets that want index nodes beyond the pool binary-search; churn makes
    the map rebuild its nodes. Lookups stay exact throughout."""
    rng = random.Random(11)
    m = lpm(max_entries=64)  # 4 index nodes; 6 buckets of 20 boundaries want 6
    hosts = [ipaddress.ip_network((region << 24 | rng.getrandbits(22), 32))
             for region in (10, 20, 30, 40, 50, 60) for _ in range(10)]
    for h in hosts:
        m.update(h, int(h.network_address))
    assert m.hdr[5] == m.nhdr.shape[0] == 4  # kernels/lpm.py H_NODES: the pool is spent
    probes = [ipaddress.IPv4Address(int(h.network_address) + d) for h in hosts for d in (0, 1)]
    for step in range(8):
        ref = BruteForce(hosts)
        want = [None if ref.longest(a) is None else int(ref.longest(a).network_address)
                for a in probes]
        assert [m.lookup(a) for a in probes] == want
        for h in rng.sample(hosts, 10):
            m.delete(h)
            hosts.remove(h)
        while len(hosts) < 60:
            h = ipaddress.ip_network((rng.choice((10, 20, 30, 40, 50, 60)) << 24
                                      | rng.getrandbits(22), 32))
            if h not in hosts:
                m.update(h, int(h.network_address))
                hosts.append(h)
        probes += [ipaddress.IPv4Address(int(h.network_address)) for h in hosts[-10:]]


# ---------------------------------------------------------------- from programs

PROGRAM = """
import numpy as np
from dataplane import *
from dataplane.maps import *
from dataplane.parse import load_be32, load_be64, store_be32

REC = np.dtype([("rule", "<u4"), ("hits", "<u8")])
v4 = Map("v4", BPF_MAP_TYPE_LPM_TRIE, key=LPM_V4, value=np.uint32, max_entries=4096)
v6 = Map("v6", BPF_MAP_TYPE_LPM_TRIE, key=LPM_V6, value=np.uint32, max_entries=4096)
tiny = Map("tiny", BPF_MAP_TYPE_LPM_TRIE, key=LPM_V4, value=REC, max_entries=2)

# packet: op, prefixlen, flags, return code, address (4 or 16 bytes) at 4,
# a value at 20; a lookup writes the value found at 24 (0xFFFFFFFF: none)

@xdp
def prog(ctx):
    pkt = ctx.pkt
    if len(pkt) < 28:
        return XDP_ABORTED
    op = pkt[0]
    plen = pkt[1]
    flags = pkt[2]
    a4 = load_be32(pkt, 4)
    hi = load_be64(pkt, 4)
    lo = load_be64(pkt, 12)
    value = load_be32(pkt, 20)
    found = 0xFFFFFFFF
    if op == 1:
        v = bpf_map_lookup_elem(v4, a4)
        if v is not None:
            found = v[0]
    elif op == 2:
        v = bpf_map_lookup_elem(v6, (hi, lo))
        if v is not None:
            found = v[0]
    elif op == 3:
        v = bpf_map_lookup_elem(v4, (plen, a4))
        if v is not None:
            found = v[0]
    elif op == 4:
        v = bpf_map_lookup_elem(v6, (plen, hi, lo))
        if v is not None:
            found = v[0]
    elif op == 5:
        pkt[3] = bpf_map_update_elem(v4, (plen, a4), value, flags) & 0xFF
    elif op == 6:
        pkt[3] = bpf_map_delete_elem(v4, (plen, a4)) & 0xFF
    elif op == 7:
        pkt[3] = bpf_map_update_elem(v6, (plen, hi, lo), value, flags) & 0xFF
    elif op == 8:
        pkt[3] = bpf_map_delete_elem(v6, (plen, hi, lo)) & 0xFF
    elif op == 9:
        r = bpf_map_lookup_elem(tiny, a4)
        if r is not None:
            r.hits += 1
            found = r.rule
    elif op == 10:
        pkt[3] = bpf_map_update_elem(tiny, (plen, a4), (value, 0), flags) & 0xFF
    store_be32(pkt, 24, found)
    return XDP_PASS
"""


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    path = tmp_path_factory.mktemp("lpm") / "lpm_prog.py"
    path.write_text(textwrap.dedent(PROGRAM))
    return load_program(str(path))


def frame(op, addr=0, plen=0, flags=0, value=0):
    if isinstance(addr, ipaddress.IPv6Address):
        raw = addr.packed
    else:
        raw = int(addr).to_bytes(4, "big") + bytes(12)
    return bytes([op, plen, flags, 0]) + raw + struct.pack("!I", value) + bytes(24)


def run(prog, frames):
    """[(return code, value found or None)] of one batch of frames."""
    b = PacketBatch(len(frames), buffer_bytes=len(frames) * 640)
    for f in frames:
        assert b.append(f)
    prog.run_batch(b)
    assert prog.faults == 0 and all(int(a) == XdpAction.XDP_PASS for a in b.action[:b.count])
    out = []
    for i in range(len(frames)):
        p = b.packet(i)
        found = struct.unpack("!I", p[24:28])[0]
        out.append((p[3] - 256 if p[3] > 127 else p[3], None if found == 0xFFFFFFFF else found))
    return out


@pytest.mark.parametrize("version", [4, 6])
def test_program_lookups_against_brute_force(prog, version):
    rng = random.Random(10 + version)
    m = prog.maps["v4" if version == 4 else "v6"]
    m.clear()
    nets = random_networks(rng, version, 3000)
    for i, n in enumerate(nets):
        m.update(n, i)
    value = {n: i for i, n in enumerate(nets)}
    addrs = random_addresses(rng, nets, 4000)
    ref = BruteForce(nets)
    want = [value.get(ref.longest(a)) for a in addrs]
    op = 1 if version == 4 else 2
    assert [v for _, v in run(prog, [frame(op, a) for a in addrs])] == want
    # the kernel's full key: prefixlen first (shorter: only prefixes that long or less)
    lens = [rng.randint(0, 32 if version == 4 else 128) for _ in addrs]
    got = run(prog, [frame(op + 2, a, plen=p) for a, p in zip(addrs, lens)])
    for a, p, (_, v) in zip(addrs, lens, got):
        assert v == value.get(ref.longest(a, p)) == m.lookup((p, str(a)))


def test_program_update_delete_with_kernel_errors(prog):
    m = prog.maps["v4"]
    m.clear()
    a = 0x0A010200
    r = run(prog, [frame(5, a, 24, BPF_NOEXIST, 7), frame(5, a, 24, BPF_NOEXIST, 8),
                   frame(5, a, 16, BPF_EXIST, 9), frame(5, a, 33, BPF_ANY, 9),
                   frame(5, a, 16, 4, 9), frame(5, a, 16, BPF_ANY, 6),
                   frame(1, a + 5), frame(1, a + 256), frame(6, a, 24), frame(6, a, 24),
                   frame(6, a, 40), frame(1, a + 5), frame(3, a + 5, 15)])
    assert [c for c, _ in r] == [0, -EEXIST, -ENOENT, -EINVAL, -EINVAL, 0, 0, 0, 0, -ENOENT,
                                 -EINVAL, 0, 0]
    assert [v for _, v in r][6:8] == [7, 6] and r[11][1] == 6 and r[12][1] is None
    assert m.items() == [("10.1.2.0/16", 6)]  # the key's bytes as given, as the kernel's
    v6 = prog.maps["v6"]
    v6.clear()
    net = ipaddress.ip_network("2001:db8:bad::/48")
    r = run(prog, [frame(7, net.network_address, 48, BPF_ANY, 3),
                   frame(7, net.network_address, 129, BPF_ANY, 3),
                   frame(2, net.network_address + 5), frame(8, net.network_address, 48),
                   frame(2, net.network_address + 5)])
    assert r == [(0, None), (-EINVAL, None), (0, 3), (0, None), (0, None)]
    tiny = prog.maps["tiny"]
    tiny.clear()
    r = run(prog, [frame(10, 0x0A000000, 8, BPF_ANY, 1), frame(10, 0x0B000000, 8, BPF_ANY, 2),
                   frame(10, 0x0C000000, 8, BPF_ANY, 3), frame(9, 0x0A000001),
                   frame(9, 0x0A000002), frame(9, 0x0C000001)])
    assert [c for c, _ in r[:3]] == [0, 0, -ENOSPC]
    assert [v for _, v in r[3:]] == [1, 1, None]
    assert tiny.lookup("10.0.0.0") == {"rule": 1, "hits": 2}


def test_program_key_forms_are_checked(tmp_path):
    path = tmp_path / "bad_key.py"
    path.write_text(textwrap.dedent("""
        import numpy as np
        from dataplane import *
        from dataplane.maps import *
        m = Map("m", BPF_MAP_TYPE_LPM_TRIE, key=LPM_V6, value=np.uint32, max_entries=4)

        @xdp
        def prog(ctx):
            if bpf_map_update_elem(m, (1, 2), 0, BPF_ANY) == 0:
                return XDP_DROP
            return XDP_PASS
        """))
    with pytest.raises(ProgramError, match=r"map 'm': bpf_map_update_elem of a 128-bit "
                                           r"lpm_trie takes the full key \(prefixlen, hi, lo\)"):
        load_program(str(path))


# ---------------------------------------------------------------- acl_lpm

def acl_prefixes():
    """The prefix file, read here with ipaddress (not the program's reader)."""
    nets = []
    for line in (ROOT / "programs" / "acl_lpm_prefixes.txt").read_text().splitlines():
        text = line.partition("#")[0].strip()
        if text:
            nets.append(ipaddress.ip_network(text))
    return nets


def acl_expected():
    """Per frame of small.pcap: (verdict, longest matching prefix or None)."""
    nets = acl_prefixes()
    refs = {4: BruteForce([n for n in nets if n.version == 4]),
            6: BruteForce([n for n in nets if n.version == 6])}
    out = []
    for f in reference.frames_of_capture(SMALL):
        p = reference.parse(f)
        best = None if p.family is None else refs[p.family].longest(p.src_addr())
        out.append((reference.XDP_PASS if best is None else reference.XDP_DROP, best))
    return out


def test_acl_lpm_prefix_file_is_thousands_and_matches_some_traffic():
    nets = acl_prefixes()
    assert len([n for n in nets if n.version == 4]) > 2000
    assert len([n for n in nets if n.version == 6]) > 1000
    verdicts = Counter(v for v, _ in acl_expected())
    assert verdicts[reference.XDP_DROP] > 200 and verdicts[reference.XDP_PASS] > 2000


def test_acl_lpm_verdicts_and_counts_match_reference():
    want = acl_expected()
    r = subprocess.run([sys.executable, "-m", "dataplane.cli.main", "replay", "-r", str(SMALL),
                        "-p", "acl_lpm", "--dump-maps", "-j"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    drops = sum(v == reference.XDP_DROP for v, _ in want)
    assert d["actions"]["drop"] == drops and d["actions"]["pass"] == len(want) - drops
    counts = Counter(str(best) for _, best in want if best is not None)
    got = {e["key"]: e["value"] for name in ("acl_v4", "acl_v6") for e in d["maps"][name]}
    assert len(got) == len(acl_prefixes())
    assert {k: v for k, v in got.items() if v} == dict(counts)
    # per packet, in this process
    prog = load_program("acl_lpm")
    frames = list(reference.frames_of_capture(SMALL))
    b = PacketBatch(len(frames), buffer_bytes=len(frames) * 2200)
    for f in frames:
        assert b.append(f)
    prog.run_batch(b)
    assert b.action[:b.count].tolist() == [v for v, _ in want]


def test_a_lock_left_held_is_ebusy_not_a_hang():
    """A pinned trie keeps its lock word: one left set by a killed process made
    update and delete spin for ever; they give up after ~1 s with -EBUSY."""
    m = lpm()
    m.update("10.0.0.0/8", 1)
    m.hdr[htab.H_LOCK] = 1
    for op in (lambda: m.update("10.1.0.0/16", 2), lambda: m.delete("10.0.0.0/8")):
        with pytest.raises(MapError, match=r"update lock stayed held.*-EBUSY"):
            op()
    assert m.lookup("10.1.2.3") == 1  # lookups take no lock
    m.hdr[htab.H_LOCK] = 0
    m.update("10.1.0.0/16", 2)
    assert m.lookup("10.1.2.3") == 2


def test_check_links_passes_sound_tries_and_catches_broken_nodes():
    """Map.check_links (run on every pinned map opened) on a trie with index
    nodes: clean after inserts and deletes; a child link, an offset and the
    interval count each broken are caught (lookups would read out of bounds)."""
    rng = random.Random(5)
    m = lpm(max_entries=8000)
    for i in range(4000):
        m.update(f"10.{rng.randrange(256)}.{rng.randrange(256)}.0/{rng.choice([16, 20, 24])}", i)
    for k, _ in list(m.items())[:1500]:
        m.delete(k)
    assert m.hdr[lpm_kernels.H_NODES] > 10
    m.check_links()
    for where, value, why in ((("nent", 0, 5), 0, "index node"), (("nent", 1, 512), 1 << 30,
                              "index node"), (("hdr", lpm_kernels.H_BOUNDS), 0, "interval count")):
        array = getattr(m, where[0])
        saved = array[where[1:]]
        array[where[1:]] = value
        with pytest.raises(MapError, match=why):
            m.check_links()
        array[where[1:]] = saved
    m.check_links()
