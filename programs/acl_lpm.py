"""Drop by source prefix: IPv4 and IPv6 LPM tries of thousands of prefixes.

The prefixes come from ``acl_lpm_prefixes.txt`` next to this file (one
prefix per line, ``10.0.0.0/8`` or ``2001:db8::/32``; a bare address is a
host route; ``#`` starts a comment), loaded into the maps ``acl_v4`` and
``acl_v6`` when the program is loaded. A packet whose IPv4 or IPv6 source
address (802.1Q / QinQ tags skipped) matches a prefix is dropped, and the
longest matching prefix counts it: ``dataplane replay -r X -p acl_lpm
--dump-maps`` lists the prefixes with their packet counts. Everything else
passes (non-IP, and IP frames too short for the fixed header).

The maps are live: ``program.maps["acl_v4"].update("192.0.2.0/24", 0)`` from
Python takes effect at the next batch. ``python programs/acl_lpm.py`` writes
the prefix file again (deterministic: seeded noise prefixes, the capture's
address plan from pcaps/gen.py, host routes taken from pcaps/small.pcap).
"""

import ipaddress
import random
import struct
from pathlib import Path

import numpy as np

from dataplane import XDP_DROP, XDP_PASS, xdp
from dataplane.maps import (BPF_MAP_TYPE_LPM_TRIE, LPM_V4, LPM_V6, Map, bpf_map_lookup_elem,
                            sync_fetch_and_add)
from dataplane.parse import (ETH_P_IP, ETH_P_IPV6, header_fits, load_be32, load_be64,
                             parse_ethhdr)

#: The loader runs a copy of this file kept in its cache; ``__dataplane_source__``
#: names the original, beside which the prefix list lives.
PREFIXES_FILE = Path(globals().get("__dataplane_source__", __file__)).with_name(
    "acl_lpm_prefixes.txt")
MAX_PREFIXES = 16384

acl_v4 = Map("acl_v4", BPF_MAP_TYPE_LPM_TRIE, key=LPM_V4, value=np.uint64,
             max_entries=MAX_PREFIXES)
acl_v6 = Map("acl_v6", BPF_MAP_TYPE_LPM_TRIE, key=LPM_V6, value=np.uint64,
             max_entries=MAX_PREFIXES)


def read_prefixes(path=PREFIXES_FILE):
    """The networks of a prefix file, in file order (a bad line: ValueError naming it)."""
    nets = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if text:
            try:
                nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: {exc}") from None
    return nets


def fill(path=PREFIXES_FILE):
    """Load the prefix file into the maps (emptied first), each prefix counting 0."""
    acl_v4.clear()
    acl_v6.clear()
    for net in read_prefixes(path):
        (acl_v4 if net.version == 4 else acl_v6).update(net, 0)


@xdp
def acl_lpm(ctx):
    pkt = ctx.pkt
    proto, off = parse_ethhdr(pkt)
    if proto == ETH_P_IP:
        if not header_fits(pkt, off, 20):
            return XDP_PASS
        v = bpf_map_lookup_elem(acl_v4, load_be32(pkt, off + 12))
        if v is not None:
            sync_fetch_and_add(v, 1)  # workers share the counters
            return XDP_DROP
    elif proto == ETH_P_IPV6:
        if not header_fits(pkt, off, 40):
            return XDP_PASS
        v = bpf_map_lookup_elem(acl_v6, (load_be64(pkt, off + 8), load_be64(pkt, off + 16)))
        if v is not None:
            sync_fetch_and_add(v, 1)  # workers share the counters
            return XDP_DROP
    return XDP_PASS


# ---------------------------------------------------------------- the prefix file

#: pcaps/gen.py's address plan (sources and destinations: replies come from the
#: destinations). Noise prefixes stay clear of it, so only the listed ones match.
PLAN = ("10.0.0.0/8", "192.168.0.0/16", "172.16.0.0/12", "203.0.113.0/24", "198.51.100.0/24",
        "100.64.0.0/10", "192.0.2.0/24", "172.20.0.0/16",
        "2001:db8::/32", "fd00::/8")
#: What the list denies in the plan: the bundled firewall's sources, more specific
#: prefixes inside them (counted apart: the longest match counts), and slices.
DENY = ("203.0.113.0/24", "203.0.113.128/25", "198.51.100.0/25", "10.66.0.0/16",
        "10.66.1.0/24", "10.66.1.128/25", "100.64.0.0/16", "100.127.0.0/16",
        "2001:db8:bad::/48", "2001:db8:bad:8000::/49", "fd00:dead::/32",
        "fd00:dead:beef::/48")


def _capture_sources(pcap):
    """The IPv4 / IPv6 sources of a classic pcap (untagged and tagged Ethernet)."""
    data = Path(pcap).read_bytes()
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    off, v4, v6 = 24, set(), set()
    while off + 16 <= len(data):
        incl = struct.unpack_from(endian + "I", data, off + 8)[0]
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        l3, etype = 14, frame[12:14]
        while etype in (b"\x81\x00", b"\x88\xa8") and len(frame) >= l3 + 4:
            etype, l3 = frame[l3 + 2:l3 + 4], l3 + 4
        if etype == b"\x08\x00" and len(frame) >= l3 + 20:
            v4.add(ipaddress.IPv4Address(frame[l3 + 12:l3 + 16]))
        elif etype == b"\x86\xdd" and len(frame) >= l3 + 40:
            v6.add(ipaddress.IPv6Address(frame[l3 + 8:l3 + 24]))
    return sorted(v4), sorted(v6)


def _noise(rng, version, count, plan):
    """``count`` random prefixes with routing-table-like lengths, clear of ``plan``."""
    bits = 32 if version == 4 else 128
    lengths = ([12] + [16] * 4 + list(range(17, 24)) * 3 + [24] * 30 + [28, 32] if version == 4
               else [28] + [32] * 6 + list(range(33, 48)) + [48] * 20 + [56, 64, 64, 128])
    out, seen = [], set()
    while len(out) < count:
        plen = rng.choice(lengths)
        addr = rng.getrandbits(bits) if version == 4 else (1 << 125) | rng.getrandbits(125)
        net = ipaddress.ip_network((addr >> (bits - plen) << (bits - plen), plen))
        if net not in seen and not any(net.overlaps(p) for p in plan):
            seen.add(net)
            out.append(net)
    return out


def write_prefixes(path=PREFIXES_FILE, pcap=None, seed=2024):
    """Write the prefix file (see the module docstring)."""
    rng = random.Random(seed)
    pcap = pcap or Path(__file__).resolve().parent.parent / "pcaps" / "small.pcap"
    plan = [ipaddress.ip_network(p) for p in PLAN]
    src4, src6 = _capture_sources(pcap)
    hosts4 = sorted(rng.sample(src4, min(40, len(src4))))
    hosts6 = sorted(rng.sample(src6, min(20, len(src6))))
    slices4 = sorted({ipaddress.ip_network((0xC0A80000 | rng.getrandbits(8) << 8, 24))
                      for _ in range(24)}
                     | {ipaddress.ip_network((0xAC100000 | rng.getrandbits(8) << 12, 20))
                        for _ in range(6)})
    slices6 = sorted({ipaddress.ip_network(((0x20010DB8 << 96) | rng.getrandbits(8) << 88, 40))
                      for _ in range(6)}
                     | {ipaddress.ip_network(((0xFD << 120) | rng.getrandbits(8) << 112, 16))
                        for _ in range(3)})
    lines = ["# Source prefixes dropped by programs/acl_lpm.py: one prefix per line,",
             "# '#' starts a comment. Written by `python programs/acl_lpm.py` (seed "
             f"{seed}).", "",
             "# In the capture's address plan (pcaps/gen.py): denied networks and",
             "# more specific prefixes inside them"]
    lines += list(DENY)
    lines += ["", "# Slices of the plan's source networks"] + [str(n) for n in slices4 + slices6]
    lines += ["", "# Host routes: sources seen in pcaps/small.pcap"]
    lines += [str(a) for a in hosts4] + [str(a) for a in hosts6]
    lines += ["", "# Noise: random prefixes outside the plan"]
    lines += [str(n) for n in _noise(rng, 4, 2500, plan) + _noise(rng, 6, 1500, plan)]
    Path(path).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    write_prefixes()
    print(f"wrote {PREFIXES_FILE}")
else:
    fill()
