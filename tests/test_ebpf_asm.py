"""The eBPF assembler and disassembler (dataplane.ebpf.asm / disasm).

Encodings in ENCODINGS are worked out by hand from RFC 9669 (opcode = class |
source/size | operation/mode; byte 1 = src << 4 | dst; offset s16 LE; imm s32
LE); test_llvm_mc_agrees checks a sample against LLVM's BPF assembler when one
is installed. The bpf_conformance vectors are read in place from
../shared/conformance/tests, never copied here.
"""

import random
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from dataplane.ebpf import isa
from dataplane.ebpf.asm import AsmError, assemble
from dataplane.ebpf.disasm import HELPER_NAMES, disassemble, format_insn
from dataplane.errors import ProgramError

VECTORS = Path(__file__).parents[2] / "shared" / "conformance" / "tests"
MANIFEST = VECTORS.parent / "manifest.tsv"
NO_VECTORS = f"bpf_conformance vectors not found at {VECTORS}"


def _vector_params():
    if not VECTORS.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=NO_VECTORS))]
    return [pytest.param(p, id=p.name) for p in sorted(VECTORS.glob("*.data"))]


def _sections(path):
    """A vector file's ``-- name`` sections -> {name: text}."""
    out, current = {}, None
    for line in path.read_text().splitlines():
        if line.startswith("-- "):
            current = line[3:].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {name: "\n".join(lines) for name, lines in out.items()}


def _code(text, name="<test>"):
    return isa.encode(assemble(text, name))


# -- (a) and (b): the conformance vectors

@pytest.mark.parametrize("path", _vector_params())
def test_vector_assembles(path):
    sections = _sections(path)
    insns = assemble(sections["asm"], path.name)
    if "raw" in sections:
        raw = b"".join(int(w, 16).to_bytes(8, "little") for w in sections["raw"].split())
        assert isa.encode(insns) == raw
    if MANIFEST.is_file():
        counts = dict(line.split("\t")[::3] for line in MANIFEST.read_text().splitlines()[1:])
        assert len(insns) == int(counts[path.name])  # the manifest counts slots


@pytest.mark.parametrize("path", _vector_params())
def test_vector_round_trips(path):
    insns = assemble(_sections(path)["asm"], path.name)
    for labels in (True, False):
        lines = disassemble(insns, labels=labels)
        assert not [line for line in lines if line.startswith(".raw")]
        assert _code("\n".join(lines)) == isa.encode(insns)


# -- (c): one row per instruction form; the text is what the disassembler prints

ENCODINGS = [
    # ALU64 / ALU32, immediate and register sources
    ("add %r1, 5", "0701000005000000"),
    ("add %r1, %r2", "0f21000000000000"),
    ("add32 %r1, 0xffffffff", "04010000ffffffff"),
    ("add32 %r1, %r2", "0c21000000000000"),
    ("sub %r2, %r3", "1f32000000000000"),
    ("sub32 %r2, 7", "1402000007000000"),
    ("mul %r0, 3", "2700000003000000"),
    ("mul32 %r0, %r9", "2c90000000000000"),
    ("div %r0, 2", "3700000002000000"),
    ("div32 %r0, %r1", "3c10000000000000"),
    ("sdiv %r0, -3", "37000100fdffffff"),
    ("sdiv32 %r0, %r1", "3c10010000000000"),
    ("or %r0, 0x1000", "4700000000100000"),
    ("or32 %r0, %r1", "4c10000000000000"),
    ("and %r0, 255", "57000000ff000000"),
    ("and32 %r0, %r1", "5c10000000000000"),
    ("lsh %r0, 32", "6700000020000000"),
    ("lsh32 %r0, %r1", "6c10000000000000"),
    ("rsh %r0, 1", "7700000001000000"),
    ("rsh32 %r0, %r1", "7c10000000000000"),
    ("neg %r0", "8700000000000000"),
    ("neg32 %r3", "8403000000000000"),
    ("mod %r0, 10", "970000000a000000"),
    ("mod32 %r0, %r1", "9c10000000000000"),
    ("smod %r0, %r1", "9f10010000000000"),
    ("smod32 %r0, 0xfffffff9", "94000100f9ffffff"),
    ("xor %r0, %r0", "af00000000000000"),
    ("xor32 %r0, 1", "a400000001000000"),
    ("mov %r0, -1", "b7000000ffffffff"),
    ("mov %r0, -0x80000000", "b700000000000080"),
    ("mov32 %r0, 0x87654321", "b400000021436587"),
    ("mov %r6, %r1", "bf16000000000000"),
    ("mov32 %r6, %r1", "bc16000000000000"),
    ("arsh %r0, 3", "c700000003000000"),
    ("arsh32 %r0, %r2", "cc20000000000000"),
    # MOVSX: MOV with the register source and the width in the offset
    ("movsx832 %r0, %r1", "bc10080000000000"),
    ("movsx1632 %r0, %r1", "bc10100000000000"),
    ("movsx864 %r0, %r1", "bf10080000000000"),
    ("movsx1664 %r0, %r1", "bf10100000000000"),
    ("movsx3264 %r0, %r1", "bf10200000000000"),
    # END: ALU le (source K) / be (source X), ALU64 bswap; the width in imm
    ("le16 %r0", "d400000010000000"),
    ("le32 %r0", "d400000020000000"),
    ("le64 %r0", "d400000040000000"),
    ("be16 %r1", "dc01000010000000"),
    ("be32 %r1", "dc01000020000000"),
    ("be64 %r1", "dc01000040000000"),
    ("bswap16 %r2", "d702000010000000"),
    ("bswap32 %r2", "d702000020000000"),
    ("bswap64 %r2", "d702000040000000"),
    # loads (MEM, MEMSX) and stores
    ("ldxb %r0, [%r1+4]", "7110040000000000"),
    ("ldxh %r0, [%r1+2]", "6910020000000000"),
    ("ldxw %r0, [%r10-4]", "61a0fcff00000000"),
    ("ldxdw %r0, [%r1]", "7910000000000000"),
    ("ldxdw %r2, [%r1+32767]", "7912ff7f00000000"),
    ("ldxb %r2, [%r1-32768]", "7112008000000000"),
    ("ldxsb %r0, [%r1+1]", "9110010000000000"),
    ("ldxsh %r0, [%r1+2]", "8910020000000000"),
    ("ldxsw %r0, [%r1+4]", "8110040000000000"),
    ("stb [%r10-1], 18", "720affff12000000"),
    ("sth [%r10-2], -1", "6a0afeffffffffff"),
    ("stw [%r1+8], 0x11223344", "6201080044332211"),
    ("stdw [%r10-8], 0x7fffffff", "7a0af8ffffffff7f"),
    ("stxb [%r1+2], %r2", "7321020000000000"),
    ("stxh [%r1+2], %r2", "6b21020000000000"),
    ("stxw [%r10-4], %r0", "630afcff00000000"),
    ("stxdw [%r10-16], %r3", "7b3af0ff00000000"),
    # atomics: STX | ATOMIC | W (0xc3) or DW (0xdb), the operation in imm
    ("lock add [%r10-8], %r1", "db1af8ff00000000"),
    ("lock fetch add [%r10-8], %r1", "db1af8ff01000000"),
    ("lock or [%r10-8], %r1", "db1af8ff40000000"),
    ("lock fetch or [%r10-8], %r1", "db1af8ff41000000"),
    ("lock and [%r10-8], %r1", "db1af8ff50000000"),
    ("lock fetch and [%r10-8], %r1", "db1af8ff51000000"),
    ("lock xor [%r10-8], %r1", "db1af8ffa0000000"),
    ("lock fetch xor [%r10-8], %r1", "db1af8ffa1000000"),
    ("lock xchg [%r10-8], %r1", "db1af8ffe1000000"),
    ("lock cmpxchg [%r10-8], %r1", "db1af8fff1000000"),
    ("lock add32 [%r10-4], %r1", "c31afcff00000000"),
    ("lock fetch add32 [%r10-4], %r1", "c31afcff01000000"),
    ("lock or32 [%r10-4], %r1", "c31afcff40000000"),
    ("lock fetch or32 [%r10-4], %r1", "c31afcff41000000"),
    ("lock and32 [%r10-4], %r1", "c31afcff50000000"),
    ("lock fetch and32 [%r10-4], %r1", "c31afcff51000000"),
    ("lock xor32 [%r10-4], %r1", "c31afcffa0000000"),
    ("lock fetch xor32 [%r10-4], %r1", "c31afcffa1000000"),
    ("lock xchg32 [%r10-4], %r1", "c31afcffe1000000"),
    ("lock cmpxchg32 [%r10-4], %r1", "c31afcfff1000000"),
    # LDDW: two slots, the second carries the upper 32 bits
    ("lddw %r0, 0x1122334455667788", "1800000088776655" "0000000044332211"),
    ("lddw %r1, 0xffffffffffffffff", "18010000ffffffff" "00000000ffffffff"),
    ("lddw %r2, 0xfffffffffffffffe", "18020000feffffff" "00000000ffffffff"),
    ("lddw %r3, 0x8000000000000000", "1803000000000000" "0000000000000080"),
    ("lddw %r4, 0x80000000", "1804000000000080" "0000000000000000"),
    ("lddw %r1, map_fd[3]", "1811000003000000" "0000000000000000"),
    ("lddw %r1, map_idx[0]", "1851000000000000" "0000000000000000"),
    ("lddw %r2, map_value[1, 8]", "1822000001000000" "0000000008000000"),
    ("lddw %r2, map_idx_value[2, 16]", "1862000002000000" "0000000010000000"),
    # jumps
    ("ja +3", "0500030000000000"),
    ("ja -1", "0500ffff00000000"),
    ("ja32 +100000", "06000000a0860100"),
    ("ja32 -2", "06000000feffffff"),
    ("jeq %r1, 5, +2", "1501020005000000"),
    ("jeq %r1, %r2, -3", "1d21fdff00000000"),
    ("jgt %r1, 1, +1", "2501010001000000"),
    ("jge %r1, %r2, +1", "3d21010000000000"),
    ("jset %r1, 128, +1", "4501010080000000"),
    ("jne %r1, -1, +1", "55010100ffffffff"),
    ("jsgt %r1, %r2, +1", "6d21010000000000"),
    ("jsge %r1, 0, +1", "7501010000000000"),
    ("jlt %r1, %r2, +1", "ad21010000000000"),
    ("jle %r1, 7, +1", "b501010007000000"),
    ("jslt %r1, %r2, +1", "cd21010000000000"),
    ("jsle %r1, -2, +1", "d5010100feffffff"),
    ("jeq32 %r1, 5, +2", "1601020005000000"),
    ("jgt32 %r1, %r2, +1", "2e21010000000000"),
    ("jge32 %r1, 1, +1", "3601010001000000"),
    ("jset32 %r1, %r2, +1", "4e21010000000000"),
    ("jne32 %r1, %r2, +1", "5e21010000000000"),
    ("jsgt32 %r1, 0xffffffff, +1", "66010100ffffffff"),
    ("jsge32 %r1, %r2, +1", "7e21010000000000"),
    ("jlt32 %r1, 4, +1", "a601010004000000"),
    ("jle32 %r1, %r2, +1", "be21010000000000"),
    ("jslt32 %r1, 0xfffffffe, +1", "c6010100feffffff"),
    ("jsle32 %r1, %r2, +1", "de21010000000000"),
    # calls and exit
    ("call 1", "8500000001000000"),
    ("call local +5", "8510000005000000"),
    ("call local -3", "85100000fdffffff"),
    ("call kfunc 7", "8520000007000000"),
    ("call %r2", "8d02000000000000"),
    ("exit", "9500000000000000"),
    # legacy packet loads: ABS (imm only), IND (offset register in src)
    ("ldabsb 12", "300000000c000000"),
    ("ldabsh 12", "280000000c000000"),
    ("ldabsw 12", "200000000c000000"),
    ("ldabsdw 12", "380000000c000000"),
    ("ldindb %r1, 4", "5010000004000000"),
    ("ldindh %r1, 4", "4810000004000000"),
    ("ldindw %r1, 4", "4010000004000000"),
    ("ldinddw %r1, 4", "5810000004000000"),
]

# Other spellings the assembler takes for the same bytes.
ALIASES = [
    ("swap16 %r2", "d702000010000000"),
    ("swap32 %r2", "d702000020000000"),
    ("swap64 %r2", "d702000040000000"),
    ("add64 %r1, 5", "0701000005000000"),
    ("neg64 %r0", "8700000000000000"),
    ("MOV %r0, 1", "b700000001000000"),
    ("mov32 %r0, -1", "b4000000ffffffff"),
    ("mov %r0, 0xffffffff", "b7000000ffffffff"),
    ("jeq %r1, 0x80000000, +1", "1501010000000080"),
    ("add32 %r1, -1", "04010000ffffffff"),
    ("stb [%r10-1], 0x12", "720affff12000000"),
    ("ldxdw %r0, [%r1+0]", "7910000000000000"),
    ("ldxh %r0, [ %r1 + 0x2 ]", "6910020000000000"),
    ("callx %r2", "8d02000000000000"),
    ("call helper 1", "8500000001000000"),
    ("call runtime 7", "8520000007000000"),
    ("lock fetch xchg [%r10-8], %r1", "db1af8ffe1000000"),
    ("lddw %r1, -1", "18010000ffffffff" "00000000ffffffff"),
    ("lddw %r0, 2147483648", "1800000000000080" "0000000000000000"),
    ("lddw %r1, map_fd[3, 0]", "1811000003000000" "0000000000000000"),
    (".raw 0x0000000000000095", "9500000000000000"),
    (".raw 0x0000000000000018, 0x1122334400000000", "1800000000000000" "0000000044332211"),
]


@pytest.mark.parametrize("text,hexbytes", ENCODINGS, ids=[t for t, _ in ENCODINGS])
def test_encoding(text, hexbytes):
    assert _code(text).hex() == hexbytes
    insns = isa.decode(bytes.fromhex(hexbytes))
    assert format_insn(insns, 0) == text
    assert disassemble(insns, labels=False) == [text]
    assert _code("\n".join(disassemble(insns))).hex() == hexbytes


@pytest.mark.parametrize("text,hexbytes", ALIASES, ids=[t for t, _ in ALIASES])
def test_alias(text, hexbytes):
    assert _code(text).hex() == hexbytes


def test_every_atomic_op_and_end_width_is_covered():
    atomics = {int.from_bytes(bytes.fromhex(h)[4:8], "little") for t, h in ENCODINGS
               if t.startswith("lock")}
    assert atomics == set(isa.ATOMIC_OPS)
    ends = {t.split()[0] for t, _ in ENCODINGS if re.match(r"(le|be|bswap)\d", t)}
    assert ends == {f"{k}{w}" for k in ("le", "be", "bswap") for w in (16, 32, 64)}


def test_assemble_returns_decode_slots():
    insns = assemble("lddw %r1, 0x100000002\nexit")
    assert insns == isa.decode(isa.encode(insns))
    assert insns[0].is_lddw and insns[0].imm64 == 0x100000002 and insns[1].is_lddw_tail
    assert insns == isa.make_lddw(1, 0x100000002) + [isa.make(isa.JMP | isa.EXIT)]


def test_labels_and_exit_target():
    text = """
        # comments in three styles
        start: mov %r0, 0      ; a label may share the line
        jeq %r1, 0, out        // forward
        ja32 back
        back:
        call local func
        ja exit
        exit
        out:
        mov %r0, 1
        exit                   # the last exit: the target of 'exit'
        func:
        ja start               # backward
    """
    insns = assemble(text)
    assert [i.off for i in insns[1:2]] == [4]           # jeq -> out (slot 6)
    assert insns[2].imm == 0                             # ja32 -> the next slot
    assert insns[3].src == isa.CALL_LOCAL and insns[3].imm == 4   # -> func (slot 8)
    assert insns[4].off == 2                             # ja exit -> slot 7, the last exit
    assert insns[8].off == -9                            # ja start -> slot 0


def test_a_label_named_exit_wins():
    insns = assemble("ja exit\nexit:\nmov %r0, 1\nexit")
    assert insns[0].off == 0


def test_label_at_end_of_program():
    insns = assemble("ja end\nexit\nend:")
    assert insns[0].off == 1


def test_annotations():
    code = "lddw %r1, map_fd[3]\ncall 1\ncall 999\nlddw %r2, 0x5\nexit"
    insns = assemble(code)
    names = {3: "flows"}
    lines = disassemble(insns, helper_name=HELPER_NAMES.get,
                        map_name=lambda insn: names.get(insn.imm))
    assert lines == ["lddw %r1, map_fd[3]  # map flows", "call 1  # bpf_map_lookup_elem",
                     "call 999", "lddw %r2, 0x5", "exit"]
    assert _code("\n".join(lines)) == isa.encode(insns)
    assert format_insn(insns, 1) == ""                   # an LDDW tail has no line
    assert format_insn(insns, 2, helper_name=HELPER_NAMES.get) == lines[1]


def test_helper_names_match_the_kernel():
    header = Path("/usr/include/linux/bpf.h")
    if not header.is_file():
        pytest.skip("no /usr/include/linux/bpf.h to compare with")
    mapper = header.read_text().split("#define __BPF_FUNC_MAPPER", 1)[1]
    ids = {f"bpf_{name}": i for i, name in enumerate(re.findall(r"FN\((\w+)", mapper))}
    for helper_id, name in HELPER_NAMES.items():
        assert ids.get(name) == helper_id, name


def test_jump_labels_in_disassembly():
    insns = assemble("jeq %r1, 0, +1\nlddw %r0, 1\nja -4\ncall local -5\nexit")
    lines = disassemble(insns)
    assert lines[0] == "fn0:" and "L2:" not in lines     # slot 2 is an LDDW tail
    assert "jeq %r1, 0, +1" in lines                     # a target on a tail stays +off
    assert "ja fn0" in lines and "call local fn0" in lines
    assert _code("\n".join(lines)) == isa.encode(insns)
    assert disassemble(insns, labels=False)[2] == "ja -4"


LLVM_PAIRS = [
    ("r1 += 5", "add %r1, 5"),
    ("w1 += -1", "add32 %r1, -1"),
    ("r2 -= r3", "sub %r2, %r3"),
    ("r0 = -r0", "neg %r0"),
    ("w3 = -w3", "neg32 %r3"),
    ("r0 s>>= 3", "arsh %r0, 3"),
    ("w0 = w1", "mov32 %r0, %r1"),
    ("r0 = be16 r0", "be16 %r0"),
    ("r0 = le32 r0", "le32 %r0"),
    ("r0 = *(u8 *)(r1 + 4)", "ldxb %r0, [%r1+4]"),
    ("r0 = *(u32 *)(r10 - 4)", "ldxw %r0, [%r10-4]"),
    ("*(u64 *)(r10 - 16) = r3", "stxdw [%r10-16], %r3"),
    ("lock *(u64 *)(r10 - 8) += r1", "lock add [%r10-8], %r1"),
    ("lock *(u32 *)(r10 - 4) += r1", "lock add32 [%r10-4], %r1"),
    ("lock *(u64 *)(r10 - 8) |= r1", "lock or [%r10-8], %r1"),
    ("lock *(u64 *)(r10 - 8) &= r1", "lock and [%r10-8], %r1"),
    ("lock *(u64 *)(r10 - 8) ^= r1", "lock xor [%r10-8], %r1"),
    ("r1 = 0x1122334455667788 ll", "lddw %r1, 0x1122334455667788"),
    ("r1 = -2 ll", "lddw %r1, -2"),
    ("if r1 == 5 goto +2", "jeq %r1, 5, +2"),
    ("if r1 s< r2 goto -3", "jslt %r1, %r2, -3"),
    ("if w1 != w2 goto +1", "jne32 %r1, %r2, +1"),
    ("if w1 s< -2 goto +1", "jslt32 %r1, -2, +1"),
    ("goto +3", "ja +3"),
    ("call 1", "call 1"),
    ("exit", "exit"),
    ("r0 = *(u8 *)skb[12]", "ldabsb 12"),
    ("r0 = *(u32 *)skb[r1]", "ldindw %r1, 0"),
]


def test_llvm_mc_agrees(tmp_path):
    """LLVM 14's BPF assembler (v1-v3 only: no movsx, sdiv, ldxs*, ja32)."""
    tool = shutil.which("llvm-mc")
    if tool is None:
        pytest.skip("llvm-mc not installed")
    src = tmp_path / "t.s"
    src.write_text("\n".join(llvm for llvm, _ in LLVM_PAIRS) + "\n")
    run = subprocess.run([tool, "-triple", "bpfel", "-mcpu=v3", "-show-encoding", str(src)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    found = [bytes(int(b, 16) for b in m.split(","))
             for m in re.findall(r"encoding: \[([^\]]*)\]", run.stdout)]
    assert found == [_code(ours) for _, ours in LLVM_PAIRS]


# -- (d): bad input is an AsmError naming the line, nothing else

BAD = [
    ("mov %r0, 1\nfoo %r0, 1", 2, "unknown mnemonic"),
    ("lock nand [%r10-8], %r1", 1, "unknown mnemonic"),
    ("movsx3232 %r0, %r1", 1, "unknown mnemonic"),
    ("ldxsdw %r0, [%r1]", 1, "unknown mnemonic"),
    ("\n\n  mov %r11, 1", 3, "bad register"),
    ("ldxw %r0, [%r12+4]", 1, "bad register"),
    ("add %r1, %rx", 1, "bad register"),
    ("call %r16", 1, "bad register"),
    ("mov %r0, 0x100000000", 1, "immediate out of range"),
    ("mov32 %r0, -0x80000001", 1, "immediate out of range"),
    ("lddw %r0, 0x10000000000000000", 1, "immediate out of range"),
    ("stw [%r1], 4294967296", 1, "immediate out of range"),
    ("ldxw %r0, [%r1+32768]", 1, "offset out of range"),
    ("mov %r0, 12abc", 1, "bad number"),
    ("ldxw %r0, [6]", 1, "bad register"),
    ("ldxw %r0, %r1", 1, "bad memory operand"),
    ("ja nowhere\nexit", 1, "undefined label"),
    ("mov %r0, 0\nja exit", 2, "undefined label"),
    ("exit\ncall local nothere", 2, "undefined label"),
    ("ja +32768", 1, "jump out of s16 range"),
    ("jeq %r1, 0, -32769", 1, "jump out of s16 range"),
    ("ja 3", 1, "bad jump target"),
    ("add %r0", 1, "missing operand"),
    ("mov %r0,", 1, "missing operand"),
    ("jeq %r1, 1", 1, "missing operand"),
    ("lock add [%r10-8]", 1, "missing operand"),
    ("lock", 1, "missing operand"),
    ("call", 1, "missing operand"),
    ("call local", 1, "missing operand"),
    ("lddw %r0", 1, "missing operand"),
    ("be16", 1, "missing operand"),
    (".raw", 1, "missing operand"),
    ("exit %r0", 1, "too many operands"),
    ("neg %r0, 1", 1, "too many operands"),
    ("call 1 2", 1, "too many operands"),
    ("movsx832 %r0, 5", 1, "register source"),
    ("lddw %r1, map_foo[1]", 1, "unknown lddw source"),
    ("a:\nexit\na:", 3, "duplicate label"),
]


@pytest.mark.parametrize("text,line,reason", BAD, ids=[t for t, _, _ in BAD])
def test_bad_input(text, line, reason):
    with pytest.raises(AsmError) as err:
        assemble(text, "prog.s")
    message = str(err.value)
    source = text.splitlines()[line - 1].strip()
    assert message == f"prog.s:{line}: {err.value.reason}: '{source}'"
    assert reason in err.value.reason and "\n" not in message
    assert isinstance(err.value, ProgramError) and err.value.lineno == line


def test_jump_to_a_label_out_of_s16_range():
    text = "ja far\n" + "exit\n" * 40000 + "far:\nexit"
    with pytest.raises(AsmError, match=r"^<asm>:1: jump out of s16 range \(\+40000\)"):
        assemble(text)
    assert assemble(text.replace("ja far", "ja32 far"))[0].imm == 40000


def test_garbage_text_gives_only_asm_errors():
    rng = random.Random(7)
    tokens = ["mov", "lock", "fetch", "add32", "call", "local", "ja", "exit", "lddw", "%r1",
              "%r10", "%r99", "[%r1+4]", "[%r1", "]", ",", ":", "x:", "+1", "-0x10", "0x",
              "99999999999999999999999", "map_fd[1]", "map_fd[]", "[", ".raw", "#", "ldxw",
              "jeq", "movsx864", "be16", "\t", "abc", "ldindw", "stw", "-", "+"]
    for _ in range(3000):
        text = "\n".join(" ".join(rng.choice(tokens) for _ in range(rng.randint(0, 6)))
                         for _ in range(rng.randint(1, 4)))
        try:
            assemble(text)
        except AsmError:
            pass


# -- (e): any bytes disassemble, and the text assembles back to them

def _random_slot(rng):
    """Mostly real opcodes and plausible fields, so many slots get a mnemonic."""
    def field(bits):
        pick = rng.random()
        if pick < 0.5:
            return 0
        if pick < 0.8:
            return rng.choice([1, 8, 16, 32, 64, -1, -8, 0x41, 0xe1, 0xf1, 0x51, 0xa1])
        return rng.randint(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    regs = rng.randint(0, 11) | (rng.choice([0, 0, rng.randint(0, 11)]) << 4)
    off = field(16) if rng.random() < 0.7 else rng.randint(-3, 3)
    return struct.pack("<BBhi", rng.randint(0, 255), regs, off, field(32))


@pytest.mark.parametrize("kind", ["uniform", "plausible"])
def test_random_bytes_disassemble_and_round_trip(kind):
    rng = random.Random(1234)
    named = 0
    for _ in range(2000):
        n = rng.randint(1, 16)
        code = rng.randbytes(8 * n) if kind == "uniform" else \
            b"".join(_random_slot(rng) for _ in range(n))
        insns = isa.decode(code)
        for i in range(len(insns)):
            assert isinstance(format_insn(insns, i, HELPER_NAMES.get, lambda _: "m"), str)
        for labels in (True, False):
            lines = disassemble(insns, labels=labels)
            assert _code("\n".join(lines)) == code
        named += sum(not line.startswith(".raw") and not line.endswith(":") for line in lines)
    assert kind == "uniform" or named > 1000   # the plausible mix reaches real mnemonics


def test_invalid_slots_print_raw():
    cases = {
        "ff00000000000000": ".raw 0x00000000000000ff  # invalid",
        "b70b000000000000": ".raw 0x0000000000000bb7  # invalid",     # dst r11
        "9500010000000000": ".raw 0x0000000000010095  # invalid",     # exit with an offset
        "1800000000000000": ".raw 0x0000000000000018  # invalid",     # LDDW with no tail
        "1870000000000000" "0000000000000000":
            ".raw 0x0000000000007018, 0x0000000000000000  # invalid",  # LDDW src 7
    }
    for hexbytes, text in cases.items():
        code = bytes.fromhex(hexbytes)
        assert disassemble(isa.decode(code)) == [text]
        assert _code(text) == code
