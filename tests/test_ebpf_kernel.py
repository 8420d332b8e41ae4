"""The kernel as a reference oracle (dataplane.ebpf.kernel): every object in
programs/bpf/ loads (the kernel verifier accepts it), runs frames built with
scapy through BPF_PROG_TEST_RUN with the verdicts its C source intends, and
matches its Python twin packet for packet on the bundled capture.

Needs root, bpf() and bpftool: skipped (with the reason) otherwise. The
object-structure checks (a .text subprogram, a loop's back-edge) need
neither and always run.
"""

import glob
import os
import shutil
import struct
import subprocess
from pathlib import Path

import dpkt
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                                IPv6ExtHdrHopByHop, IPv6ExtHdrRouting)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether

from dataplane.ebpf.kernel import (KernelError, KernelLoadError, KernelObject,
                                   kernel_available)
from test_ebpf_verifier import CSUM_OF_A_BOUNDED_SIZE, KERNEL_LOADS, STRICT_REJECTS

ROOT = Path(__file__).resolve().parent.parent
BPF = ROOT / "programs" / "bpf"
SMALL = ROOT / "pcaps" / "small.pcap"

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = 0, 1, 2, 3, 4

OK, WHY = kernel_available()
needs_kernel = pytest.mark.skipif(not OK, reason=f"kernel oracle unavailable: {WHY}")

OBJECTS = sorted(p.stem for p in BPF.glob("*.c"))


def obj(name):
    return BPF / f"{name}.o"


def eth(**kw):
    kw = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02", **kw}
    return Ether(**kw)


def our_pin_dirs():
    return glob.glob(f"/sys/fs/bpf/dataplane-kernel-{os.getpid()}-*")


# ---------------------------------------------------------------- frames

UDP4 = bytes(eth() / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1234, dport=53) / (b"q" * 20))
TCP4 = bytes(eth() / IP(src="192.0.2.1", dst="192.0.2.2") / TCP(sport=1234, dport=80))
UDP6 = bytes(eth() / IPv6(src="2001:db8::1", dst="2001:db8::2") / UDP(sport=5, dport=53))
TCP6 = bytes(eth() / IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(sport=5, dport=443))
ICMP4 = bytes(eth() / IP(src="192.0.2.1", dst="192.0.2.2") / ICMP())
ARP_ = bytes(eth(dst="ff:ff:ff:ff:ff:ff") / ARP(psrc="192.0.2.1", pdst="192.0.2.2"))
VLAN_UDP4 = bytes(eth() / Dot1Q(vlan=10) / IP() / UDP())
VLAN_TCP4 = bytes(eth() / Dot1Q(vlan=10) / IP() / TCP())
VLAN_UDP6 = bytes(eth() / Dot1Q(vlan=10) / IPv6() / UDP())
QINQ_UDP4 = bytes(eth() / Dot1AD(vlan=100) / Dot1Q(vlan=10) / IP() / UDP())
TRIPLE_UDP4 = bytes(eth() / Dot1Q(vlan=1) / Dot1Q(vlan=2) / Dot1Q(vlan=3) / IP() / UDP())
ETH_ONLY_IP = bytes(eth(type=0x0800))                      # 14 bytes, no IPv4 header
TRUNC_UDP4 = UDP4[:14 + 19]                                # one byte short of 20
JUST_UDP4 = UDP4[:14 + 20]                                 # exactly the IPv4 header
TRUNC_UDP6 = UDP6[:14 + 39]
TRUNC_VLAN = bytes(eth(type=0x8100)) + b"\x00\x0a"         # the tag's TCI, no EtherType


DROP_UDP_CASES = [
    ("udp4", UDP4, XDP_DROP), ("tcp4", TCP4, XDP_PASS), ("udp6", UDP6, XDP_DROP),
    ("tcp6", TCP6, XDP_PASS), ("icmp4", ICMP4, XDP_PASS), ("arp", ARP_, XDP_PASS),
    ("vlan-udp4", VLAN_UDP4, XDP_DROP), ("vlan-tcp4", VLAN_TCP4, XDP_PASS),
    ("vlan-udp6", VLAN_UDP6, XDP_DROP), ("qinq-udp4", QINQ_UDP4, XDP_DROP),
    ("3-tags-udp4", TRIPLE_UDP4, XDP_PASS), ("eth-only", ETH_ONLY_IP, XDP_PASS),
    ("trunc-udp4", TRUNC_UDP4, XDP_PASS), ("just-ipv4-hdr-udp", JUST_UDP4, XDP_DROP),
    ("trunc-udp6", TRUNC_UDP6, XDP_PASS), ("trunc-vlan", TRUNC_VLAN, XDP_PASS),
]


def test_frames_are_what_they_claim():
    assert QINQ_UDP4[12:14] == b"\x88\xa8" and QINQ_UDP4[16:18] == b"\x81\x00"
    assert len(ETH_ONLY_IP) == 14 and len(TRUNC_VLAN) == 16 and JUST_UDP4[23] == 17


# ---------------------------------------------------------------- objects (no kernel)

def _elf(name):
    """(open file, ELFFile): close the file after use (``with f:``)."""
    from elftools.elf.elffile import ELFFile
    f = open(obj(name), "rb")  # noqa: SIM115 - the ELFFile reads it lazily
    return f, ELFFile(f)


def test_every_source_has_its_object():
    assert len(OBJECTS) >= 9
    for name in OBJECTS:
        assert obj(name).is_file(), f"{name}.o missing: run make bpf"
        f, elf = _elf(name)
        with f:
            assert elf["e_machine"] == "EM_BPF"
            assert elf.get_section_by_name("xdp") is not None


def test_bpf2bpf_calls_a_text_subprogram():
    f, elf = _elf("bpf2bpf")
    with f:
        text = elf.get_section_by_name(".text").data()
        code = elf.get_section_by_name("xdp").data()
        rel = elf.get_section_by_name(".relxdp")
        symtab = elf.get_section_by_name(".symtab")
        targets = {elf.get_section(symtab.get_symbol(r["r_info_sym"])["st_shndx"]).name
                   for r in rel.iter_relocations()}
    calls = [i for i in range(0, len(code), 8) if code[i] == 0x85 and code[i + 1] >> 4 == 1]
    assert len(text) > 0 and len(calls) == 2 and ".text" in targets


def _has_cycle(code):
    """Whether the control-flow graph of one section's code has a cycle (a loop),
    not just a backward jump (clang also jumps back to a shared tail block)."""
    n = len(code) // 8
    succ = []
    for pc in range(n):
        op = code[pc * 8]
        off = struct.unpack_from("<h", code, pc * 8 + 2)[0]
        cls, kind = op & 0x07, op & 0xF0
        if op == 0x18:                                   # lddw: two slots
            succ.append([pc + 2])
        elif cls in (0x05, 0x06) and kind == 0x90:       # exit
            succ.append([])
        elif cls == 0x05 and kind == 0x00:               # ja
            succ.append([pc + 1 + off])
        elif cls in (0x05, 0x06) and kind != 0x80:       # conditional jumps
            succ.append([pc + 1, pc + 1 + off])
        else:                                            # calls, ALU, loads, stores
            succ.append([pc + 1])
    state = [0] * n                                      # 0 new, 1 on the path, 2 done
    stack = [(0, iter(succ[0]))]
    state[0] = 1
    while stack:
        pc, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            state[pc] = 2
            stack.pop()
        elif state[nxt] == 1:
            return True
        elif state[nxt] == 0:
            state[nxt] = 1
            stack.append((nxt, iter(succ[nxt])))
    return False


@pytest.mark.parametrize("name", OBJECTS)
def test_only_bounded_loop_has_a_loop(name):
    f, elf = _elf(name)
    with f:
        code = elf.get_section_by_name("xdp").data()
    assert _has_cycle(code) == (name == "bounded_loop")


# ---------------------------------------------------------------- loading and cleanup

@needs_kernel
@pytest.mark.parametrize("name", OBJECTS)
def test_object_loads_and_unpins(name):
    with KernelObject(obj(name)) as k:
        assert name in k.programs
        pin = k.pin_dir
        assert pin.is_dir() and (pin / name).exists()
        retval, _, _ = k.test_run(name, TCP4)
        # (port_pool's pool starts empty: a SYN is dropped)
        want = {"xdp_drop": (XDP_DROP,), "flood": (XDP_REDIRECT,),
                "port_pool": (XDP_DROP,)}.get(name, (XDP_PASS, XDP_TX))
        assert retval in want
    assert not pin.exists() and k.closed
    assert our_pin_dirs() == []


@needs_kernel
def test_unpinned_on_exception_and_close_is_idempotent():
    with pytest.raises(RuntimeError), KernelObject(obj("flow_counter")) as k:
        pin = k.pin_dir
        assert (pin / "maps" / "flows").exists()
        raise RuntimeError("boom")
    assert not pin.exists()
    k.close()
    with pytest.raises(KernelError, match="closed"):
        k.test_run("flow_counter", TCP4)


@needs_kernel
def test_errors_are_one_line():
    with KernelObject(obj("drop_udp")) as k:
        with pytest.raises(KernelError) as e:
            k.test_run("drop_udp", b"\x00" * 10)      # shorter than an Ethernet header
        assert "\n" not in str(e.value) and e.value.errno == 22
        with pytest.raises(KernelError, match="no program 'nope'"):
            k.test_run("nope", UDP4)
    with pytest.raises(KernelError, match="no such object file"):
        KernelObject(BPF / "missing.o")


@needs_kernel
@pytest.mark.skipif(shutil.which("clang") is None, reason="clang not installed")
def test_verifier_reject_is_a_clean_error(tmp_path):
    src = tmp_path / "oob.c"
    src.write_text('#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n'
                   'SEC("xdp") int oob(struct xdp_md *ctx)\n'
                   '{ unsigned char *p = (void *)(long)ctx->data;\n'
                   '  return p[20] == 1 ? XDP_DROP : XDP_PASS; }\n'
                   'char LICENSE[] SEC("license") = "GPL";\n')
    out = tmp_path / "oob.o"
    subprocess.run(["clang", "-O2", "-g", "-target", "bpf", "-I/usr/include/x86_64-linux-gnu",
                    "-c", str(src), "-o", str(out)], check=True)
    with pytest.raises(KernelLoadError) as e:
        KernelObject(out)
    msg = str(e.value)
    assert "\n" not in msg and "program 'oob'" in msg and "outside of the packet" in msg
    assert "processed" in e.value.log          # the whole verifier log is kept
    assert our_pin_dirs() == []


# ---------------------------------------------------------------- verdicts

@pytest.fixture(scope="module")
def loaded():
    objs = {}
    if OK:
        for name in OBJECTS:
            objs[name] = KernelObject(obj(name))
    yield objs
    for k in objs.values():
        k.close()


@needs_kernel
@pytest.mark.parametrize("prog", ["drop_udp", "bpf2bpf"])
@pytest.mark.parametrize("case,frame,want", DROP_UDP_CASES, ids=[c[0] for c in DROP_UDP_CASES])
def test_drop_udp_verdicts(loaded, prog, case, frame, want):
    retval, out, _ = loaded[prog].test_run(prog, frame)
    assert retval == want
    assert out == frame


FIREWALL_CASES = [
    ("deny-src-203.0.113/24", eth() / IP(src="203.0.113.7", dst="192.0.2.1") / TCP(dport=80),
     XDP_DROP),
    ("deny-src-198.51.100/25", eth() / IP(src="198.51.100.127") / ICMP(), XDP_DROP),
    ("allow-198.51.100.128", eth() / IP(src="198.51.100.128") / ICMP(), XDP_PASS),
    ("deny-src-10.66/16", eth() / Dot1Q() / IP(src="10.66.200.1") / UDP(dport=53), XDP_DROP),
    ("allow-10.67", eth() / IP(src="10.67.0.1") / UDP(dport=53), XDP_PASS),
    ("deny-telnet", eth() / IP(src="192.0.2.9") / TCP(dport=23), XDP_DROP),
    ("deny-mysql-udp", eth() / IP(src="192.0.2.9") / UDP(dport=3306), XDP_DROP),
    ("deny-redis-v6", eth() / IPv6(src="2001:db8::9") / TCP(dport=6379), XDP_DROP),
    ("allow-https", eth() / IP(src="192.0.2.9") / TCP(dport=443), XDP_PASS),
    ("sport-23-allowed", eth() / IP(src="192.0.2.9") / TCP(sport=23, dport=80), XDP_PASS),
    ("ip-options-then-23", eth() / IP(src="192.0.2.9", options=b"\x01\x01\x01\x00")
     / TCP(dport=23), XDP_DROP),
    ("non-first-fragment", eth() / IP(src="192.0.2.9", frag=100, proto=6) / (b"\x00\x17" * 10),
     XDP_PASS),
    ("deny-v6-2001:db8:bad::/48", eth() / IPv6(src="2001:db8:bad:ffff::1") / UDP(dport=53),
     XDP_DROP),
    ("allow-v6-2001:db8:bae::", eth() / IPv6(src="2001:db8:bae::1") / UDP(dport=53), XDP_PASS),
    ("deny-v6-fd00:dead::/32", eth() / IPv6(src="fd00:dead:1::1") / ICMP(), XDP_DROP),
    ("bad-version-passes", eth(type=0x0800) / (b"\x65" + bytes(19) + b"\x00\x00\x00\x17"),
     XDP_PASS),
    ("truncated-l4", eth() / IP(src="192.0.2.9", proto=6) / b"\x00\x17", XDP_PASS),
    ("arp", ARP_, XDP_PASS),
]


@needs_kernel
@pytest.mark.parametrize("case,frame,want", FIREWALL_CASES, ids=[c[0] for c in FIREWALL_CASES])
def test_firewall_verdicts(loaded, case, frame, want):
    assert loaded["firewall"].test_run("firewall", bytes(frame))[0] == want


@needs_kernel
def test_flow_counter_counts_per_flow():
    with KernelObject(obj("flow_counter")) as k:
        info = k.maps["flows"]
        assert (info.type_name, info.key_size, info.value_size, info.max_entries) == \
            ("lru_hash", 37, 16, 65536)
        for frame in (UDP4, UDP4, TCP6, ARP_, VLAN_TCP4):
            assert k.test_run("flow_counter", frame)[0] == XDP_PASS
        items = dict(k.map_items("flows"))
    key4 = (bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 1]) + bytes(10) + b"\xff\xff"
            + bytes([192, 0, 2, 2]) + struct.pack(">HHB", 1234, 53, 17))
    assert struct.unpack("<QQ", items[key4]) == (2, 2 * len(UDP4))
    key6 = (bytes.fromhex("20010db8000000000000000000000001")
            + bytes.fromhex("20010db8000000000000000000000002") + struct.pack(">HHB", 5, 443, 6))
    assert struct.unpack("<QQ", items[key6]) == (1, len(TCP6))
    assert len(items) == 3            # + the VLAN-tagged TCP flow; ARP is not counted


def _ext_chain(n, last):
    pkt = IPv6(src="2001:db8::1", dst="2001:db8::2")
    for i in range(n):
        pkt = pkt / (IPv6ExtHdrHopByHop() if i == 0 else IPv6ExtHdrDestOpt())
    return bytes(eth() / pkt / last)


BOUNDED_LOOP_CASES = [
    ("udp6-no-ext", UDP6, XDP_DROP),
    ("udp6-behind-hbh", _ext_chain(1, UDP(dport=53)), XDP_DROP),
    ("tcp6-behind-2", _ext_chain(2, TCP()), XDP_PASS),
    ("udp6-behind-8", _ext_chain(8, UDP()), XDP_DROP),
    ("udp6-behind-9", _ext_chain(9, UDP()), XDP_ABORTED),
    ("udp6-behind-routing",
     bytes(eth() / IPv6() / IPv6ExtHdrRouting(addresses=["2001:db8::7"]) / UDP()), XDP_DROP),
    ("first-fragment-udp", bytes(eth() / IPv6() / IPv6ExtHdrFragment(offset=0, m=1) / UDP()),
     XDP_DROP),
    ("later-fragment-udp", bytes(eth() / IPv6() / IPv6ExtHdrFragment(offset=10, nh=17)
                                 / (b"x" * 16)), XDP_DROP),
    ("truncated-ext", _ext_chain(2, UDP())[:14 + 40 + 8 + 4], XDP_PASS),
    ("vlan-udp6-behind-hbh", bytes(eth() / Dot1Q() / IPv6() / IPv6ExtHdrHopByHop() / UDP()),
     XDP_DROP),
    ("udp4", UDP4, XDP_PASS),
    ("arp", ARP_, XDP_PASS),
]


@needs_kernel
@pytest.mark.parametrize("name", ["bounded_loop", "exthdr_loop"])
@pytest.mark.parametrize("case,frame,want", BOUNDED_LOOP_CASES,
                         ids=[c[0] for c in BOUNDED_LOOP_CASES])
def test_bounded_loop_verdicts(loaded, case, frame, want, name):
    """bounded_loop's rolled loop and exthdr_loop's bpf_loop callback walk alike."""
    assert loaded[name].test_run(name, frame)[0] == want


def checksum_ok(header):
    s = sum(struct.unpack(f">{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


@needs_kernel
@pytest.mark.parametrize("frame", [UDP4, TCP4, ICMP4,
                                   bytes(eth() / IP(tos=0xb8, options=b"\x01\x01\x01\x00")
                                         / TCP() / (b"p" * 900))],
                         ids=["udp4", "tcp4", "icmp4", "tos-options-900B"])
def test_adjust_head_encapsulates_ipip(loaded, frame):
    retval, out, _ = loaded["adjust_head"].test_run("adjust_head", frame)
    assert retval == XDP_TX and len(out) == len(frame) + 20
    e = dpkt.ethernet.Ethernet(out)
    outer = e.data
    assert isinstance(outer, dpkt.ip.IP) and out[:14] == frame[:14]
    assert outer.v == 4 and outer.hl == 5 and outer.p == 4 and outer.ttl == 64
    assert outer.df and outer.id == 0 and outer.tos == frame[15]
    assert dpkt.utils.inet_to_str(outer.src) == "172.16.0.1"
    assert dpkt.utils.inet_to_str(outer.dst) == "172.16.0.2"
    assert outer.len == int.from_bytes(frame[16:18], "big") + 20
    assert checksum_ok(out[14:34])
    assert out[34:] == frame[14:]                      # the inner packet, byte for byte


@needs_kernel
@pytest.mark.parametrize("frame", [UDP6, ARP_, VLAN_UDP4, TRUNC_UDP4],
                         ids=["udp6", "arp", "vlan-udp4", "trunc-udp4"])
def test_adjust_head_passes_the_rest(loaded, frame):
    assert loaded["adjust_head"].test_run("adjust_head", frame)[:2] == (XDP_PASS, frame)


@needs_kernel
def test_global_data():
    with KernelObject(obj("global_data")) as k:
        maps = k.maps
        assert {"verdicts", "global_d_bss", "global_d_data", "global_d_rodata"} <= set(maps)
        assert maps["verdicts"].type_name == "array" and maps["verdicts"].max_entries == 5
        got = [k.test_run(None, f)[0] for f in (UDP4, TCP4, UDP6, ARP_)]
        assert got == [XDP_DROP, XDP_PASS, XDP_DROP, XDP_PASS]
        assert k.map_lookup("global_d.rodata", bytes(4)) == b"\x11"       # match_proto 17
        assert k.map_lookup("global_d.bss", bytes(4)) == struct.pack("<Q", 4)  # packets
        counts = {struct.unpack("<I", key)[0]: struct.unpack("<Q", v)[0]
                  for key, v in k.map_items("verdicts")}
        assert counts == {0: 0, 1: 2, 2: 2, 3: 0, 4: 0}
        k.map_update("global_d.data", bytes(4), struct.pack("<I", XDP_TX))   # match_verdict
        assert k.test_run(None, UDP4)[0] == XDP_TX


@needs_kernel
def test_map_in_map():
    with KernelObject(obj("map_in_map")) as k:
        assert k.maps["by_family"].type_name == "array_of_maps"
        assert [k.test_run(None, f)[0] for f in (UDP4, UDP6, TCP6)] == [XDP_PASS] * 3
        k.map_update("v4_actions", struct.pack("<I", 17), struct.pack("<I", XDP_DROP))
        k.map_update("v6_actions", struct.pack("<I", 6), struct.pack("<I", XDP_TX))
        assert [k.test_run(None, f)[0] for f in (UDP4, UDP6, TCP6, TCP4, VLAN_UDP4)] == \
            [XDP_DROP, XDP_PASS, XDP_TX, XDP_PASS, XDP_DROP]


@needs_kernel
def test_legacy_maps_load_without_bpftool_support():
    with KernelObject(obj("legacy_maps")) as k:
        assert k.programs == ["legacy_maps"]
        assert k.maps["ethertype_count"][:4] == (1, 2, 8, 64)     # HASH, 2 -> 8 bytes, 64
        assert k.maps["config"][:4] == (2, 4, 4, 1)
        assert [k.test_run(None, f)[0] for f in (UDP4, ARP_, TCP6)] == [XDP_PASS] * 3
        k.map_update("config", bytes(4), struct.pack("<I", 0x0806))
        assert [k.test_run(None, f)[0] for f in (UDP4, ARP_)] == [XDP_PASS, XDP_DROP]
        counts = {key: struct.unpack("<Q", v)[0] for key, v in k.map_items("ethertype_count")}
        assert counts == {b"\x08\x00": 2, b"\x08\x06": 2, b"\x86\xdd": 1}


@needs_kernel
def test_repeat_gives_a_duration(loaded):
    retval, out, ns = loaded["drop_udp"].test_run("drop_udp", UDP4, repeat=10000)
    assert retval == XDP_DROP and out == UDP4 and 0 <= ns < 1_000_000


# ---------------------------------------------------------------- against the Python twins

@pytest.fixture(scope="module")
def capture():
    with open(SMALL, "rb") as f:
        return [bytes(b) for _, b in dpkt.pcap.Reader(f)]


@needs_kernel
@pytest.mark.parametrize("python,c", [("drop_udp", "drop_udp"), ("drop_udp", "bpf2bpf"),
                                      ("firewall", "firewall"), ("encap_ipip", "adjust_head"),
                                      ("flow_counter", "flow_counter")])
def test_matches_python_twin_on_capture(capture, python, c):
    from dataplane import load_program
    prog = load_program(python)
    if "flows" in prog.maps:  # a file's maps are shared by every load of it in this process
        prog.maps["flows"].clear()
    with KernelObject(obj(c)) as k:
        for i, frame in enumerate(capture):
            want = prog.test_run(frame)
            retval, out, _ = k.test_run(c, frame)
            assert retval == int(want.action), f"packet {i}"
            assert out == bytes(want.data), f"packet {i}"
        if c == "flow_counter":
            keys, values = prog.maps["flows"].dump()
            want_items = sorted((keys[j].tobytes(), values[j].tobytes()) for j in range(len(keys)))
            assert sorted(k.map_items("flows")) == want_items and len(want_items) > 1000


# Found against the kernel by differential fuzzing: clang output the kernel
# loads (as root) and our verifier refused. Ours must load it too.
@needs_kernel
@pytest.mark.parametrize("case", sorted(KERNEL_LOADS))
def test_loads_what_the_kernel_loads(case):
    from dataplane.ebpf import isa
    from dataplane.ebpf.asm import assemble
    from dataplane.ebpf.kernel import prog_load
    from dataplane.ebpf.program import EBPF_HELPERS
    from dataplane.ebpf.verifier import verify

    insns = assemble(KERNEL_LOADS[case])
    fd, fail = prog_load(isa.encode(insns), "GPL", "dp_agree")
    assert fd is not None, fail
    os.close(fd)
    verify(insns, (), "agree", EBPF_HELPERS)


# A helper's size known by its bounds: both refuse a bound past the buffer and
# no bound at all, at the call.
@needs_kernel
@pytest.mark.parametrize("change,ours,kernel_says", [
    (("add %r4, 60", "add %r4, 59"), "R3 packet range of 60 bytes not proven",
     "invalid access to packet, off=0 size=60"),
    (("ldxb %r4, [%r2+14]\n    and %r4, 60", "ldxw %r4, [%r1+12]"), "R4 unbounded memory access",
     "R4 unbounded memory access")],
    ids=["past the proven range", "unbounded"])
def test_refuses_a_size_bound_as_the_kernel_does(change, ours, kernel_says):
    from dataplane.ebpf import isa
    from dataplane.ebpf.asm import assemble
    from dataplane.ebpf.kernel import prog_load
    from dataplane.ebpf.program import EBPF_HELPERS
    from dataplane.ebpf.verifier import VerifierError, verify

    text = CSUM_OF_A_BOUNDED_SIZE.replace(*change)  # (the ingress ifindex: any u32)
    assert text != CSUM_OF_A_BOUNDED_SIZE
    insns = assemble(text)
    with pytest.raises(VerifierError, match=ours):
        verify(insns, (), "size", EBPF_HELPERS)
    fd, fail = prog_load(isa.encode(insns), "GPL", "dp_size", log_level=1)
    if fd is not None:
        os.close(fd)
    assert fd is None and kernel_says in fail[1], fail


# What strict verification rejects, the kernel rejects, for the same reason.
@needs_kernel
@pytest.mark.parametrize("case", sorted(STRICT_REJECTS))
def test_refuses_what_strict_refuses(case):
    from dataplane.ebpf import isa
    from dataplane.ebpf.asm import assemble
    from dataplane.ebpf.kernel import prog_load

    text, _, kernel_says = STRICT_REJECTS[case]
    fd, fail = prog_load(isa.encode(assemble(text)), "GPL", "dp_strict", log_level=1)
    if fd is not None:
        os.close(fd)
    assert fd is None and kernel_says in fail[1], fail
