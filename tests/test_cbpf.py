"""Classic BPF filters (``dataplane replay -f EXPR``) translated to eBPF.

The oracle is tcpdump itself: the packets ``tcpdump -r X -w Y EXPR`` keeps
are exactly the ones the translated filter passes (libpcap's own classic BPF
interpreter against this translation). Hand-written classic programs check
what tcpdump's compiler does not emit (division by X, scratch memory, RET A)
against values worked out here.
"""

import subprocess
from pathlib import Path

import dpkt
import pytest

from dataplane import XdpAction
from dataplane.cli.main import main
from dataplane.ebpf import cbpf, verifier
from dataplane.ebpf.cbpf import CInsn, translate
from dataplane.ebpf.program import load_insns_program
from dataplane.errors import ProgramError

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "pcaps" / "small.pcap"
TCPDUMP = cbpf.find_tcpdump()
needs_tcpdump = pytest.mark.skipif(TCPDUMP is None, reason="tcpdump is not installed "
                                   "(make deps)")
PASS, DROP = XdpAction.XDP_PASS, XdpAction.XDP_DROP

EXPRESSIONS = [
    "udp",
    "tcp port 80",
    "ip6",
    "vlan and udp",
    "tcp[tcpflags] & tcp-syn != 0",
    "ip[6:2] & 0x1fff = 0",
    "icmp or arp",
    "net 10.0.0.0/8",
    "greater 200",
    "len < 100",
    "ether[0] & 1 = 1",
    "tcp port 80 and not src net 10.0.0.0/8",
    "tcp dst port 443",                              # ldxb 4*([14]&0xf); ldh [x + 16]
    "tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x16",       # tax: an offset computed in A
    "ip[2:2] / 4 > 300",
    "ip[2:2] % 7 = 3",
    "ip and ip[0] & 0xf > 5",
    "vlan and vlan",
    "udp[8:2] = 0",                                  # matches nothing in small.pcap
]


def read_frames(path):
    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path, "rb") as fh:
        return [bytes(f) for _, f in dpkt.pcap.Reader(fh)]


def tcpdump_keeps(capture, expr, tmp_path):
    out = tmp_path / "tcpdump.pcap"
    subprocess.run([TCPDUMP, "-nn", "-r", str(capture), "-w", str(out), "--", expr],
                   check=True, capture_output=True, timeout=60)
    return read_frames(out)


def dataplane_passes(capture, expr, tmp_path):
    out = tmp_path / "out"
    assert main(["replay", "-r", str(capture), "-f", expr, "-w", str(out), "-q"]) == 0
    assert not (out / "aborted.pcap").exists()
    return read_frames(out / "pass.pcap"), read_frames(out / "drop.pcap")


@needs_tcpdump
@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_same_packets_as_tcpdump(expr, tmp_path):
    expected = tcpdump_keeps(SMALL, expr, tmp_path)
    passed, dropped = dataplane_passes(SMALL, expr, tmp_path)
    assert passed == expected
    assert len(passed) + len(dropped) == len(read_frames(SMALL))


@needs_tcpdump
def test_expressions_are_not_vacuous(tmp_path):
    """Most expressions above keep some packets and drop others."""
    sizes = [len(tcpdump_keeps(SMALL, e, tmp_path)) for e in EXPRESSIONS[:14]]
    assert all(0 < n < 4000 for n in sizes), sizes


def _truncated_capture(path):
    """Frames cut short at every interesting place: loads past the end must
    make the filter return 0 (no match), never read outside the frame."""
    tcp = dpkt.tcp.TCP(sport=1234, dport=443, flags=dpkt.tcp.TH_SYN, data=b"\x16" + b"x" * 30)
    ip = dpkt.ip.IP(src=bytes([10, 1, 2, 3]), dst=bytes([192, 0, 2, 1]), p=6, data=tcp)
    ip_opts = dpkt.ip.IP(src=bytes([192, 0, 2, 9]), dst=bytes([10, 0, 0, 1]), p=6,
                         opts=b"\x01" * 40, data=dpkt.tcp.TCP(sport=80, dport=443))
    ip_opts.hl = 15  # a 60-byte header: the TCP ports are loaded at X + k with X = 60
    udp = dpkt.udp.UDP(sport=53, dport=80, data=b"\x00" * 20)
    ip_udp = dpkt.ip.IP(src=bytes([10, 9, 9, 9]), dst=bytes([10, 0, 0, 2]), p=17, data=udp)
    ip6 = dpkt.ip6.IP6(src=b"\x20\x01" + b"\x00" * 14, dst=b"\xfd" + b"\x01" * 15, nxt=6,
                       hlim=64, data=dpkt.tcp.TCP(sport=80, dport=443))
    ip6.plen = len(ip6.data)
    eth = [bytes(dpkt.ethernet.Ethernet(type=0x0800, data=ip)),
           bytes(dpkt.ethernet.Ethernet(type=0x0800, data=ip_opts)),
           bytes(dpkt.ethernet.Ethernet(dst=b"\x01" * 6, type=0x0800, data=ip_udp)),
           bytes(dpkt.ethernet.Ethernet(type=0x86dd, data=ip6))]
    vlan = eth[2][:12] + b"\x81\x00\x00\x07" + eth[2][12:]
    frames = []
    for whole in eth + [vlan]:
        cuts = sorted({1, 6, 12, 13, 14, 15, 20, 23, 24, 26, 30, 34, 35, 36, 37, 38, 40, 47,
                       48, 50, 54, 55, 56, 57, 58, 60, 70, 74, 75, 76, 77, 78, len(whole)})
        frames += [whole[:n] for n in cuts if n <= len(whole)]
    with open(path, "wb") as fh:
        w = dpkt.pcap.Writer(fh, snaplen=65535, linktype=dpkt.pcap.DLT_EN10MB)
        for i, f in enumerate(frames):
            w.writepkt(f, ts=1 + i / 1000)
    return frames


@needs_tcpdump
@pytest.mark.parametrize("expr", [
    "tcp port 80", "tcp dst port 443", "ip6", "vlan and udp", "tcp[tcpflags] & tcp-syn != 0",
    "tcp[((tcp[12:1] & 0xf0) >> 2):1] = 0x16", "udp port 80", "ether[0] & 1 = 1",
    "ip[6:2] & 0x1fff = 0", "tcp port 80 and not src net 10.0.0.0/8", "ip6 and tcp port 80",
    "len < 40", "net 10.0.0.0/8", "ip[60] = 1 or ip[59] = 1", "ether[70000] = 0"])
def test_truncated_frames_as_tcpdump(expr, tmp_path):
    capture = tmp_path / "short.pcap"
    frames = _truncated_capture(capture)
    expected = tcpdump_keeps(capture, expr, tmp_path)
    passed, dropped = dataplane_passes(capture, expr, tmp_path)
    assert passed == expected
    assert len(passed) + len(dropped) == len(frames)


# ---------------------------------------------------------------- hand-written programs

def run(prog, frame=b"\x00" * 60):
    insns = translate([CInsn(*i) for i in prog])
    verifier.verify(insns)
    return load_insns_program(insns, "cbpf_test").test_run(frame)[0]


# classic opcodes (Documentation/networking/filter.rst)
LD_IMM, LDX_IMM, LD_MEM, LDX_MEM, LD_LEN, LDX_LEN = 0x00, 0x01, 0x60, 0x61, 0x80, 0x81
LDB_ABS, LDH_ABS, LDW_ABS, LDB_IND, LDH_IND, LDW_IND, LDX_MSH = (
    0x30, 0x28, 0x20, 0x50, 0x48, 0x40, 0xb1)
ST_, STX_ = 0x02, 0x03
ALU_K = dict(add=0x04, sub=0x14, mul=0x24, div=0x34, or_=0x44, and_=0x54, lsh=0x64, rsh=0x74,
             mod=0x94, xor=0xa4)
ALU_X = {k: v | 0x08 for k, v in ALU_K.items()}
NEG = 0x84
JA, JEQ_K, JGT_K, JGE_K, JSET_K = 0x05, 0x15, 0x25, 0x35, 0x45
JEQ_X, JGT_X, JGE_X, JSET_X = 0x1d, 0x2d, 0x3d, 0x4d
RET_K, RET_A, TAX, TXA = 0x06, 0x16, 0x07, 0x87


def expect(value):
    """Instructions ending a program: pass if A == value, else drop."""
    return [(JEQ_K, 0, 1, value), (RET_K, 0, 0, 1), (RET_K, 0, 0, 0)]


def test_div_and_mod_by_x_zero_return_0():
    assert run([(LD_IMM, 0, 0, 10), (LDX_IMM, 0, 0, 0), (ALU_X["div"], 0, 0, 0),
                (RET_K, 0, 0, 1)]) == DROP
    assert run([(LD_IMM, 0, 0, 10), (LDX_IMM, 0, 0, 0), (ALU_X["mod"], 0, 0, 0),
                (RET_K, 0, 0, 1)]) == DROP
    assert run([(LD_IMM, 0, 0, 10), (LDX_IMM, 0, 0, 3), (ALU_X["div"], 0, 0, 0)]
               + expect(3)) == PASS
    assert run([(LD_IMM, 0, 0, 10), (LDX_IMM, 0, 0, 3), (ALU_X["mod"], 0, 0, 0)]
               + expect(1)) == PASS


def test_alu_is_32_bit_unsigned():
    """Every operation, K and X forms, chained in one program: each result is
    compared with Python's u32 arithmetic; the first mismatch drops."""
    M = 0xffffffff
    ops = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
           "div": lambda a, b: a // b, "or_": lambda a, b: a | b, "and_": lambda a, b: a & b,
           "lsh": lambda a, b: a << b, "rsh": lambda a, b: a >> b, "mod": lambda a, b: a % b,
           "xor": lambda a, b: a ^ b}
    cases = [(0xfffffff0, 0x20), (7, 0xfffffffe), (0x80000000, 3), (0x12345678, 31),
             (0, 1), (0xdeadbeef, 0x9abcdef1)]
    checks = []
    for name, fn in ops.items():
        for a, b in cases:
            if name in ("lsh", "rsh"):
                b &= 31
            checks.append(([(LD_IMM, 0, 0, a), (ALU_K[name], 0, 0, b)], fn(a, b) & M))
            checks.append(([(LD_IMM, 0, 0, a), (LDX_IMM, 0, 0, b), (ALU_X[name], 0, 0, 0)],
                           fn(a, b) & M))
    for a, _ in cases:
        checks.append(([(LD_IMM, 0, 0, a), (NEG, 0, 0, 0)], -a & M))
    prog = []
    for body, value in checks:
        prog += body + [(JEQ_K, 1, 0, value), (RET_K, 0, 0, 0)]  # mismatch: return 0
    prog.append((RET_K, 0, 0, 0xffff))
    assert run(prog) == PASS
    # and the chain does fail when one expected value is wrong
    bad = prog[:-1] + [(LD_IMM, 0, 0, 5), (JEQ_K, 1, 0, 6), (RET_K, 0, 0, 0),
                       (RET_K, 0, 0, 1)]
    assert run(bad) == DROP


def test_unsigned_compares_with_large_k():
    """k is a u32: no sign extension in JGT/JGE/JEQ/JSET."""
    big = 0x80000000
    assert run([(LD_IMM, 0, 0, big), (JGT_K, 0, 1, 0x7fffffff), (RET_K, 0, 0, 1),
                (RET_K, 0, 0, 0)]) == PASS
    assert run([(LD_IMM, 0, 0, 0xffffffff), (JGE_K, 0, 1, 0xffffffff), (RET_K, 0, 0, 1),
                (RET_K, 0, 0, 0)]) == PASS
    assert run([(LD_IMM, 0, 0, 5), (JGT_K, 0, 1, big), (RET_K, 0, 0, 1),
                (RET_K, 0, 0, 0)]) == DROP
    assert run([(LD_IMM, 0, 0, 5), (LDX_IMM, 0, 0, 0xfffffffb), (JGT_X, 0, 1, 0),
                (RET_K, 0, 0, 0), (RET_K, 0, 0, 1)]) == PASS
    assert run([(LD_IMM, 0, 0, 7), (LDX_IMM, 0, 0, 7), (JEQ_X, 1, 0, 0), (RET_K, 0, 0, 0),
                (JGE_X, 0, 1, 0), (RET_K, 0, 0, 1), (RET_K, 0, 0, 0)]) == PASS


def test_scratch_memory():
    prog = [(LD_IMM, 0, 0, 0x11223344), (ST_, 0, 0, 3), (LDX_IMM, 0, 0, 99), (STX_, 0, 0, 15),
            (LD_IMM, 0, 0, 0), (LDX_IMM, 0, 0, 0),
            (LD_MEM, 0, 0, 3), (JEQ_K, 1, 0, 0x11223344), (RET_K, 0, 0, 0),
            (LDX_MEM, 0, 0, 15), (TXA, 0, 0, 0), (JEQ_K, 1, 0, 99), (RET_K, 0, 0, 0),
            (LD_MEM, 0, 0, 7)]  # never written: M[] starts at 0
    assert run(prog + expect(0)) == PASS


def test_ret_a_and_jset_tax_txa():
    frame = bytes([0x80, 0x00, 0x05]) + b"\x00" * 57
    # RET A: the first byte (0x80, non-zero: pass), the second (0: drop)
    assert run([(LDB_ABS, 0, 0, 0), (RET_A, 0, 0, 0)], frame) == PASS
    assert run([(LDB_ABS, 0, 0, 1), (RET_A, 0, 0, 0)], frame) == DROP
    # JSET: 0x80 & 0x80 set, 0x80 & 0x7f clear
    assert run([(LDB_ABS, 0, 0, 0), (JSET_K, 0, 1, 0x80), (RET_K, 0, 0, 1),
                (RET_K, 0, 0, 0)], frame) == PASS
    assert run([(LDB_ABS, 0, 0, 0), (JSET_K, 0, 1, 0x7f), (RET_K, 0, 0, 1),
                (RET_K, 0, 0, 0)], frame) == DROP
    assert run([(LDB_ABS, 0, 0, 0), (LDX_IMM, 0, 0, 0x81), (JSET_X, 1, 0, 0),
                (RET_K, 0, 0, 0), (RET_K, 0, 0, 1)], frame) == PASS
    # TAX / TXA: X = P[2] = 5; ldb [x + 0] = P[5] = 0; TXA brings back 5
    assert run([(LDB_ABS, 0, 0, 2), (TAX, 0, 0, 0), (LD_IMM, 0, 0, 0), (TXA, 0, 0, 0)]
               + expect(5), frame) == PASS
    # JA over a return; jt == jf
    assert run([(JA, 0, 0, 1), (RET_K, 0, 0, 0), (LD_IMM, 0, 0, 1), (JEQ_K, 0, 0, 1),
                (RET_A, 0, 0, 0)]) == PASS


def test_packet_loads_are_big_endian_and_bounded():
    frame = bytes(range(1, 61))
    assert run([(LDW_ABS, 0, 0, 2)] + expect(0x03040506), frame) == PASS
    assert run([(LDH_ABS, 0, 0, 58)] + expect(0x3b3c), frame) == PASS
    assert run([(LDB_ABS, 0, 0, 59)] + expect(60), frame) == PASS
    # one byte past the end: the filter returns 0 whatever comes after
    assert run([(LDH_ABS, 0, 0, 59), (RET_K, 0, 0, 1)], frame) == DROP
    assert run([(LDW_ABS, 0, 0, 57), (RET_K, 0, 0, 1)], frame) == DROP
    assert run([(LDB_ABS, 0, 0, 60), (RET_K, 0, 0, 1)], frame) == DROP
    assert run([(LDB_ABS, 0, 0, 70000), (RET_K, 0, 0, 1)], frame) == DROP
    # indirect: X + k, checked against the end
    assert run([(LDX_IMM, 0, 0, 50), (LDW_IND, 0, 0, 6)] + expect(0x393a3b3c), frame) == PASS
    assert run([(LDX_IMM, 0, 0, 50), (LDW_IND, 0, 0, 7), (RET_K, 0, 0, 1)], frame) == DROP
    assert run([(LDX_IMM, 0, 0, 0x7fffffff), (LDB_IND, 0, 0, 1), (RET_K, 0, 0, 1)],
               frame) == DROP
    assert run([(LDX_IMM, 0, 0, 3), (LDH_IND, 0, 0, 0)] + expect(0x0405), frame) == PASS
    # X + k in 32 bits: a negative k under a larger X is an ordinary offset (20 - 16)
    assert run([(LDX_IMM, 0, 0, 20), (LDB_IND, 0, 0, 0xfffffff0)] + expect(5), frame) == PASS
    # MSH: X = 4 * (P[k] & 0xf); P[0] = 1 -> 4, then ldb [x + 0] = P[4] = 5
    assert run([(LDX_MSH, 0, 0, 0), (LDB_IND, 0, 0, 0)] + expect(5), frame) == PASS
    assert run([(LDX_MSH, 0, 0, 60), (RET_K, 0, 0, 1)], frame) == DROP
    # len, in A and in X
    assert run([(LD_LEN, 0, 0, 0)] + expect(60), frame) == PASS
    assert run([(LDX_LEN, 0, 0, 0), (TXA, 0, 0, 0)] + expect(60), frame) == PASS


def test_unreachable_classic_code_is_left_out():
    prog = [(RET_K, 0, 0, 1), (LD_IMM, 0, 0, 1), (RET_A, 0, 0, 0)]
    assert run(prog) == PASS


@pytest.mark.parametrize("prog, text", [
    ([], "empty"),
    ([(0xff, 0, 0, 0), (RET_K, 0, 0, 0)], "insn 0 (255 0 0 0): invalid opcode"),
    ([(0x0e, 0, 0, 0)], "invalid opcode"),                          # RET X
    ([(LD_IMM, 0, 0, 1)], "last instruction is not a RET"),
    ([(JEQ_K, 0, 5, 1), (RET_K, 0, 0, 0)], "insn 0 (21 0 5 1): jump to insn 6, past the end"),
    ([(JA, 0, 0, 1), (RET_K, 0, 0, 0)], "jump to insn 2"),
    ([(RET_K, 0, 0, 0), (JA, 0, 0, 0xfffffffe), (RET_K, 0, 0, 0)], "jump back by 2 insns"),
    ([(ST_, 0, 0, 16), (RET_K, 0, 0, 0)], "M[16] out of range"),
    ([(LD_MEM, 0, 0, 20), (RET_K, 0, 0, 0)], "M[20] out of range"),
    ([(ALU_K["div"], 0, 0, 0), (RET_K, 0, 0, 0)], "division by a constant 0"),
    ([(ALU_K["lsh"], 0, 0, 32), (RET_K, 0, 0, 0)], "shift by 32"),
    ([(LDW_ABS, 0, 0, 0xfffff000), (RET_K, 0, 0, 0)], "SKF_AD_OFF"),
    ([(LD_IMM, 0, 300, 0), (RET_K, 0, 0, 0)], "field out of range"),
    ([(RET_K, 0, 0, 0)] * 4097, "too large"),
])
def test_invalid_classic_programs(prog, text):
    with pytest.raises(ProgramError) as exc:
        translate(prog)
    msg = str(exc.value)
    assert text in msg and "\n" not in msg


@needs_tcpdump
def test_tcpdump_output_translates_and_verifies():
    """Every expression's translation passes the verifier with no run-time
    check: every packet access is proven by a comparison with data_end."""
    for expr in EXPRESSIONS:
        analysis = verifier.verify(cbpf.compile_filter(expr), [], "filter")
        assert analysis.checks == {}, expr


# ---------------------------------------------------------------- the command line

@needs_tcpdump
def test_bad_expression_is_a_usage_error(tmp_path, capsys):
    rc = main(["replay", "-r", str(SMALL), "-f", "tcp port", "-w", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert errors == ["error: filter 'tcp port': can't parse filter expression: syntax error"]
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


@needs_tcpdump
def test_a_filter_classic_bpf_cannot_hold_is_named(tmp_path, capsys):
    """libpcap compiles 'ip protochain 6' with a backward jump (a loop): the
    error said 'jump to insn 4294967300' and not which filter."""
    rc = main(["replay", "-r", str(SMALL), "-f", "ip protochain 6", "-w", str(tmp_path / "o")])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 1 and len(lines) == 1, err
    assert lines[0].startswith("error: filter 'ip protochain 6': ") and "jump back by" in lines[0]


def test_filter_and_program_are_exclusive(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["replay", "-r", str(SMALL), "-f", "udp", "-p", "drop_udp"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_filter_or_program_is_required(capsys):
    assert main(["replay", "-r", str(SMALL)]) == 2
    err = capsys.readouterr().err
    assert "-p PROGRAM or -f EXPR" in err and "Traceback" not in err


def test_missing_tcpdump_says_to_install_it(monkeypatch, capsys):
    monkeypatch.setattr(cbpf, "find_tcpdump", lambda: None)
    assert main(["replay", "-r", str(SMALL), "-f", "udp", "-q"]) == 1
    err = capsys.readouterr().err
    assert "tcpdump is not installed" in err and "hint: install tcpdump" in err
