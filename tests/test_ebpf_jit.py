"""The eBPF JIT against RFC 9669, opcode family by opcode family.

Every expected value here is worked out independently, with plain Python
integers (the ``ref_*`` functions below), never by asking the JIT or the
verifier. Operands come from a fixed list of edge values (0, 1, -1,
INT32_MIN/MAX, INT64_MIN/MAX, 2^32, ...) plus seeded random ones, so a failure
reproduces.

Programs read their operands from the memory block (R1 = its address, as in
the bpf_conformance runtime), so one compiled program serves many operand
pairs: ``_Compiled`` compiles once with ``jit.compile_raw`` and runs it on each
memory block exactly as ``conformance.run`` does (test_run_matches_conformance
checks that the two agree). Immediate forms compile one program per immediate
and go through ``conformance.run`` itself.

The bpf_conformance vectors (../shared/conformance/tests) run at the end, as an
external check, with the ``dataplane conformance`` command.
"""

import ctypes
import io
import random
import struct
import subprocess
import sys
import zlib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from dataplane.ebpf import conformance, isa, jit
from dataplane.ebpf.asm import assemble

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "conformance" / "tests"
NO_VECTORS = f"bpf_conformance vectors not found at {VECTORS}"

M8, M16, M32, M64 = 0xff, 0xffff, (1 << 32) - 1, (1 << 64) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1

# -------------------------------------------------------------- operands

EDGE = [0, 1, 2, 3, 7, -1, -2, -3, 0x7f, 0x80, 0xff, 0x100, 0x7fff, 0x8000, 0xffff, 0x10000,
        INT32_MAX, INT32_MIN, INT32_MAX + 1, M32, 1 << 32, (1 << 32) + 1, -(1 << 32),
        INT64_MAX, INT64_MIN, INT64_MIN + 1, 31, 32, 33, 63, 64, 65, 0x123456789abcdef0,
        0x8000000080000000, 0x00000000ffff0000, 0xfedcba9876543210]
EDGE = sorted({v & M64 for v in EDGE})


def _seed(*parts):
    """A seed that does not change between runs (``hash`` of a str does)."""
    return zlib.crc32(repr(parts).encode())


def _random_values(seed, n):
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        kind = rnd.randrange(5)
        if kind == 0:
            v = rnd.getrandbits(64)
        elif kind == 1:
            v = rnd.getrandbits(32)
        elif kind == 2:
            v = -rnd.getrandbits(rnd.randrange(1, 64))
        elif kind == 3:
            v = rnd.choice(EDGE) + rnd.randrange(-3, 4)
        else:
            v = rnd.getrandbits(rnd.randrange(1, 17))
        out.append(v & M64)
    return out


def operand_pairs(seed, n_random=300):
    """Every pair of a sample of edge values, then seeded random pairs."""
    edge = EDGE
    pairs = [(a, b) for a in edge for b in edge]
    rnd = random.Random(seed)
    vals = _random_values(seed, 2 * n_random)
    pairs += [(vals[2 * i], vals[2 * i + 1]) for i in range(n_random)]
    # dividing by a value near the dividend, and by 0/-1 on random dividends
    pairs += [(v, rnd.choice([0, M64, M32, 1])) for v in vals[:60]]
    return pairs


IMMEDIATES = [0, 1, -1, 2, -2, 5, -7, 31, 32, 63, 64, 0x7fff, -0x8000, INT32_MAX, INT32_MIN,
              0x12345678, -0x12345678]

# -------------------------------------------------------------- the reference


def signed(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


def sext(v, bits):
    """``v``'s low ``bits`` bits sign-extended, as an unsigned 64-bit value."""
    return signed(v, bits) & M64


def tdiv(a, b):
    """Signed division truncating toward zero (Python's // floors)."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def tmod(a, b):
    """The remainder of tdiv: takes the dividend's sign."""
    return a - b * tdiv(a, b)


def udiv(a, b, bits):
    return 0 if b == 0 else a // b


def umod(a, b, bits):
    return a if b == 0 else a % b


def sdiv(a, b, bits):
    if b == 0:
        return 0
    return tdiv(signed(a, bits), signed(b, bits))  # INT_MIN / -1 wraps back to INT_MIN


def smod(a, b, bits):
    if b == 0:
        return a
    return tmod(signed(a, bits), signed(b, bits))  # INT_MIN % -1 == 0


REF_ALU = {
    "add": lambda a, b, n: a + b,
    "sub": lambda a, b, n: a - b,
    "mul": lambda a, b, n: a * b,
    "div": udiv,
    "sdiv": sdiv,
    "mod": umod,
    "smod": smod,
    "or": lambda a, b, n: a | b,
    "and": lambda a, b, n: a & b,
    "xor": lambda a, b, n: a ^ b,
    "lsh": lambda a, b, n: a << (b % n),
    "rsh": lambda a, b, n: a >> (b % n),
    "arsh": lambda a, b, n: signed(a, n) >> (b % n),
    "mov": lambda a, b, n: b,
}


def ref_alu(name, dst, src, bits):
    """RFC 9669 ALU/ALU64: operands cut to ``bits``, the result too (ALU32
    results zero-extend into the 64-bit register)."""
    mask = (1 << bits) - 1
    return REF_ALU[name](dst & mask, src & mask, bits) & mask


def ref_imm(imm, bits):
    """An ALU immediate as the source operand: sign-extended to 64 bits for
    ALU64 (also for DIV/MOD: then read unsigned), its 32 bits for ALU32."""
    return sext(imm, 32) if bits == 64 else imm & M32


def bswap(v, nbytes):
    return int.from_bytes((v & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little"), "big")


def ref_jmp(name, a, b, bits):
    mask = (1 << bits) - 1
    a, b = a & mask, b & mask
    sa, sb = signed(a, bits), signed(b, bits)
    return {"jeq": a == b, "jne": a != b, "jgt": a > b, "jge": a >= b, "jlt": a < b,
            "jle": a <= b, "jset": bool(a & b), "jsgt": sa > sb, "jsge": sa >= sb,
            "jslt": sa < sb, "jsle": sa <= sb}[name]


# -------------------------------------------------------------- running


class _Compiled:
    """One program compiled once, run on many memory blocks (as conformance.run)."""

    def __init__(self, text):
        self.insns = assemble(text)
        self.fn = jit.compile_raw(self.insns)

    def __call__(self, memory=b""):
        return self.run(memory)[0]

    def run(self, memory=b""):
        """-> (r0, the memory block after the run)."""
        buf = ctypes.create_string_buffer(bytes(memory), max(len(memory), 1))
        r0 = self.fn(ctypes.addressof(buf) if memory else 0, len(memory))
        return r0, buf.raw[:len(memory)]


def mem64(*values):
    return b"".join(struct.pack("<Q", v & M64) for v in values)


def run_asm(text, memory=b""):
    return conformance.run(assemble(text), memory)


def _check_many(prog, cases, what):
    """cases: [(memory, expected r0, label)]: all failures in one message."""
    bad = []
    for memory, want, label in cases:
        got = prog(memory)
        if got != want:
            bad.append(f"{label}: got {got:#x}, want {want:#x}")
    assert not bad, f"{what}: {len(bad)} of {len(cases)} wrong:\n" + "\n".join(bad[:20])


# -------------------------------------------------------------- ALU

BINARY = ["add", "sub", "mul", "div", "sdiv", "mod", "smod", "or", "and", "xor", "lsh", "rsh",
          "arsh", "mov"]


@pytest.mark.parametrize("bits", [64, 32])
@pytest.mark.parametrize("op", BINARY)
def test_alu_register(op, bits):
    """``op[32] %r3, %r4`` over edge and random operand pairs; the dst's and
    src's upper halves are set too, so ALU32 must ignore them and zero-extend."""
    suffix = "32" if bits == 32 else ""
    prog = _Compiled(f"""
        ldxdw %r3, [%r1]
        ldxdw %r4, [%r1+8]
        {op}{suffix} %r3, %r4
        mov %r0, %r3
        exit""")
    cases = [(mem64(a, b), ref_alu(op, a, b, bits), f"{a:#x} {op}{suffix} {b:#x}")
             for a, b in operand_pairs(_seed(op, bits))]
    _check_many(prog, cases, f"{op}{suffix}")


@pytest.mark.parametrize("bits", [64, 32])
@pytest.mark.parametrize("op", BINARY)
def test_alu_immediate(op, bits):
    """``op[32] %r0, IMM``: ALU64 sign-extends the immediate (DIV/MOD then read
    it unsigned), ALU32 takes its 32 bits."""
    suffix = "32" if bits == 32 else ""
    dsts = EDGE[::3] + _random_values(bits * 7 + len(op), 8)
    for imm in IMMEDIATES:
        prog = _Compiled(f"ldxdw %r0, [%r1]\n{op}{suffix} %r0, {imm}\nexit")
        src = ref_imm(imm, bits)
        cases = [(mem64(a), ref_alu(op, a, src, bits), f"{a:#x} {op}{suffix} {imm}")
                 for a in dsts]
        _check_many(prog, cases, f"{op}{suffix} imm {imm}")


@pytest.mark.parametrize("op,bits,dst,imm,want", [
    ("div", 64, 7, 0, 0),                        # division by zero: 0
    ("div", 32, 0xffffffff00000007, 0, 0),
    ("mod", 64, 7, 0, 7),                        # modulo by zero: dst unchanged
    ("mod", 32, 0xffffffff00000007, 0, 7),       # ... cut to 32 bits and zero-extended
    ("sdiv", 64, 1 << 63, -1, 1 << 63),          # INT64_MIN / -1 = INT64_MIN
    ("smod", 64, 1 << 63, -1, 0),                # INT64_MIN % -1 = 0
    ("sdiv", 32, 0x80000000, -1, 0x80000000),    # INT32_MIN / -1 = INT32_MIN
    ("smod", 32, 0x80000000, -1, 0),
    ("sdiv", 64, -7 & M64, 2, -3 & M64),         # toward zero, not floor
    ("smod", 64, -7 & M64, 2, -1 & M64),         # the dividend's sign
    ("smod", 64, 7, -2, 1),
    ("sdiv", 32, -7 & M32, 2, -3 & M32),
    ("smod", 32, -7 & M32, 2, -1 & M32),
    ("div", 64, M64, -1, 1),                     # ALU64 DIV: -1 is 2^64-1, unsigned
    ("div", 32, M32, -1, 1),                     # ALU32 DIV: -1 is 2^32-1
    ("div", 64, 1 << 40, -1, 0),
    ("mod", 64, 5, -1, 5),
    ("lsh", 64, 1, 65, 2),                       # shift counts are masked
    ("lsh", 32, 1, 33, 2),
    ("rsh", 32, 0xffffffff80000000, 63, 1),      # 63 & 31 = 31
    ("arsh", 32, 0x80000000, 4, 0xf8000000),     # sign of bit 31, then zero-extended
    ("arsh", 64, 1 << 63, 63, M64),
    ("add", 32, M32, 1, 0),                      # wraps in 32 bits
    ("mov", 32, M64, -1, M32),                   # mov32 zero-extends
    ("mov", 64, 0, -1, M64),                     # mov sign-extends
    ("mul", 32, 0x10000, 0x10000, 0),
])
def test_alu_edges(op, bits, dst, imm, want):
    suffix = "32" if bits == 32 else ""
    assert run_asm(f"lddw %r0, {dst:#x}\n{op}{suffix} %r0, {imm}\nexit") == want


@pytest.mark.parametrize("bits", [64, 32])
def test_neg(bits):
    suffix = "32" if bits == 32 else ""
    prog = _Compiled(f"ldxdw %r0, [%r1]\nneg{suffix} %r0\nexit")
    mask = (1 << bits) - 1
    _check_many(prog, [(mem64(a), (-(a & mask)) & mask, f"neg{suffix} {a:#x}")
                       for a in EDGE + _random_values(bits, 100)], "neg")


@pytest.mark.parametrize("bits,width", [(64, 8), (64, 16), (64, 32), (32, 8), (32, 16)])
def test_movsx(bits, width):
    """MOVSX: the source's low ``width`` bits sign-extended to 64 bits (ALU64)
    or to 32 bits then zero-extended (ALU)."""
    prog = _Compiled(f"ldxdw %r5, [%r1]\nmov %r0, -1\nmovsx{width}{bits} %r0, %r5\nexit")
    mask = (1 << bits) - 1
    _check_many(prog, [(mem64(a), sext(a, width) & mask, f"movsx{width}{bits} {a:#x}")
                       for a in EDGE + _random_values(width + bits, 100)], "movsx")


def test_alu32_clears_upper_half():
    """Every ALU32 result, also of a no-op like ``or32 r0, 0``, zero-extends."""
    for op in ("add", "sub", "or", "xor", "lsh", "rsh", "arsh", "mul", "div", "mod"):
        imm = 1 if op in ("mul", "div") else 0
        got = run_asm(f"lddw %r0, 0xdeadbeef00000005\n{op}32 %r0, {imm}\nexit")
        assert got == ref_alu(op, 0xdeadbeef00000005, imm, 32), op
        assert got >> 32 == 0, op


# -------------------------------------------------------------- byte order

@pytest.mark.parametrize("width", [16, 32, 64])
@pytest.mark.parametrize("kind", ["le", "be", "bswap"])
def test_byte_swaps(kind, width):
    """le: on this (little-endian) host only truncates to ``width``; be: swaps
    the low ``width`` bits; bswap (ALU64 END): swaps unconditionally."""
    assert sys.byteorder == "little"
    prog = _Compiled(f"ldxdw %r0, [%r1]\n{kind}{width} %r0\nexit")
    n = width // 8

    def want(v):
        return v & ((1 << width) - 1) if kind == "le" else bswap(v, n)

    _check_many(prog, [(mem64(a), want(a), f"{kind}{width} {a:#x}")
                       for a in EDGE + _random_values(width, 60)], f"{kind}{width}")


def test_byte_swap_known_values():
    v = "0x0123456789abcdef"
    assert run_asm(f"lddw %r0, {v}\nbe16 %r0\nexit") == 0xefcd
    assert run_asm(f"lddw %r0, {v}\nbe32 %r0\nexit") == 0xefcdab89
    assert run_asm(f"lddw %r0, {v}\nbe64 %r0\nexit") == 0xefcdab8967452301
    assert run_asm(f"lddw %r0, {v}\nle16 %r0\nexit") == 0xcdef
    assert run_asm(f"lddw %r0, {v}\nle32 %r0\nexit") == 0x89abcdef
    assert run_asm(f"lddw %r0, {v}\nle64 %r0\nexit") == 0x0123456789abcdef
    assert run_asm(f"lddw %r0, {v}\nbswap16 %r0\nexit") == 0xefcd
    assert run_asm(f"lddw %r0, {v}\nbswap32 %r0\nexit") == 0xefcdab89
    assert run_asm(f"lddw %r0, {v}\nbswap64 %r0\nexit") == 0xefcdab8967452301


# -------------------------------------------------------------- loads and stores

@pytest.mark.parametrize("size,nbytes", [("b", 1), ("h", 2), ("w", 4), ("dw", 8)])
@pytest.mark.parametrize("off", [0, 1, 3, 8])
def test_ldx_zero_extends(size, nbytes, off):
    prog = _Compiled(f"mov %r0, -1\nldx{size} %r0, [%r1+{off}]\nexit")
    rnd = random.Random(nbytes * 100 + off)
    cases = []
    for _ in range(40):
        mem = bytes(rnd.getrandbits(8) for _ in range(16))
        cases.append((mem, int.from_bytes(mem[off:off + nbytes], "little"), mem.hex()))
    cases.append((b"\xff" * 16, (1 << (8 * nbytes)) - 1, "all ones"))
    _check_many(prog, cases, f"ldx{size}")


@pytest.mark.parametrize("size,nbytes", [("b", 1), ("h", 2), ("w", 4)])
@pytest.mark.parametrize("off", [0, 2, 5])
def test_ldxs_sign_extends(size, nbytes, off):
    """MEMSX: ldxsb/ldxsh/ldxsw load and sign-extend to 64 bits."""
    prog = _Compiled(f"mov %r0, 0\nldxs{size} %r0, [%r1+{off}]\nexit")
    rnd = random.Random(nbytes * 1000 + off)
    cases = []
    for _ in range(40):
        mem = bytes(rnd.getrandbits(8) for _ in range(16))
        raw = int.from_bytes(mem[off:off + nbytes], "little")
        cases.append((mem, sext(raw, 8 * nbytes), mem.hex()))
    for top in (0x7f, 0x80, 0xff, 0x00):
        mem = bytearray(16)
        mem[off + nbytes - 1] = top
        raw = int.from_bytes(mem[off:off + nbytes], "little")
        cases.append((bytes(mem), sext(raw, 8 * nbytes), bytes(mem).hex()))
    _check_many(prog, cases, f"ldxs{size}")


def test_ldxs_from_stack():
    assert run_asm("stdw [%r10-8], -2\nldxsb %r0, [%r10-8]\nexit") == M64 - 1
    assert run_asm("sth [%r10-2], 0x8001\nldxsh %r0, [%r10-2]\nexit") == sext(0x8001, 16)
    assert run_asm("stw [%r10-4], 0x7fffffff\nldxsw %r0, [%r10-4]\nexit") == 0x7fffffff


@pytest.mark.parametrize("size,nbytes", [("b", 1), ("h", 2), ("w", 4), ("dw", 8)])
def test_stores_write_only_their_bytes(size, nbytes):
    """st (immediate) and stx (register) write ``nbytes`` at the offset and no more."""
    rnd = random.Random(nbytes)
    value = rnd.getrandbits(64)
    imm = signed(rnd.getrandbits(32), 32)
    before = bytes(range(0xa0, 0xb8))
    for text, v in ((f"lddw %r2, {value:#x}\nstx{size} [%r1+3], %r2", value),
                    (f"st{size} [%r1+3], {imm}", sext(imm, 32))):
        prog = _Compiled(text + "\nmov %r0, 0\nexit")
        r0, after = prog.run(before)
        want = bytearray(before)
        want[3:3 + nbytes] = (v & ((1 << (8 * nbytes)) - 1)).to_bytes(nbytes, "little")
        assert after == bytes(want), text


def test_stack_store_and_load():
    text = """
        stdw [%r10-8], 0x11223344
        stw [%r10-12], -1
        sth [%r10-14], 0x5566
        stb [%r10-15], 0x77
        ldxdw %r0, [%r10-8]
        ldxw %r2, [%r10-12]
        add %r0, %r2
        ldxh %r2, [%r10-14]
        add %r0, %r2
        ldxb %r2, [%r10-15]
        add %r0, %r2
        exit"""
    assert run_asm(text) == 0x11223344 + 0xffffffff + 0x5566 + 0x77


def test_stack_is_512_bytes():
    text = """
        stdw [%r10-512], 41
        ldxdw %r0, [%r10-512]
        add %r0, 1
        exit"""
    assert run_asm(text) == 42


# -------------------------------------------------------------- lddw

@pytest.mark.parametrize("value", EDGE + _random_values(99, 20))
def test_lddw(value):
    assert run_asm(f"lddw %r0, {value:#x}\nexit") == value
    # the two halves go to the right places also when the low half looks negative
    assert run_asm(f"mov %r0, 0\nlddw %r3, {value:#x}\nmov %r0, %r3\nexit") == value


def test_lddw_raw_encoding():
    """The second slot's imm is the upper half (encoded by hand here)."""
    code = isa.decode(struct.pack("<BBhi", 0x18, 0, 0, -2) + struct.pack("<BBhi", 0, 0, 0, 0x12)
                      + struct.pack("<BBhi", 0x95, 0, 0, 0))
    assert conformance.run(code, b"") == 0x12fffffffe


# -------------------------------------------------------------- jumps

CONDS = ["jeq", "jne", "jgt", "jge", "jlt", "jle", "jset", "jsgt", "jsge", "jslt", "jsle"]


@pytest.mark.parametrize("bits", [64, 32])
@pytest.mark.parametrize("op", CONDS)
def test_jump_register(op, bits):
    suffix = "32" if bits == 32 else ""
    prog = _Compiled(f"""
        ldxdw %r2, [%r1]
        ldxdw %r3, [%r1+8]
        mov %r0, 1
        {op}{suffix} %r2, %r3, taken
        mov %r0, 0
        taken:
        exit""")
    pairs = operand_pairs(len(op) * 31 + bits, 200)
    pairs += [(a, a) for a in EDGE]  # equal operands
    pairs += [(a, a ^ (1 << 32)) for a in EDGE]  # equal in the low half only
    cases = [(mem64(a, b), int(ref_jmp(op, a, b, bits)), f"{a:#x} {op}{suffix} {b:#x}")
             for a, b in pairs]
    _check_many(prog, cases, f"{op}{suffix}")


@pytest.mark.parametrize("bits", [64, 32])
@pytest.mark.parametrize("op", CONDS)
def test_jump_immediate(op, bits):
    """JMP sign-extends the immediate to 64 bits; JMP32 compares with its 32 bits."""
    suffix = "32" if bits == 32 else ""
    dsts = EDGE[::2] + _random_values(len(op) + bits, 6)
    for imm in IMMEDIATES:
        prog = _Compiled(f"""
            ldxdw %r2, [%r1]
            mov %r0, 1
            {op}{suffix} %r2, {imm}, taken
            mov %r0, 0
            taken:
            exit""")
        b = sext(imm, 32)
        cases = [(mem64(a), int(ref_jmp(op, a, b, bits)), f"{a:#x} {op}{suffix} {imm}")
                 for a in dsts + [b, b & M32, b ^ (1 << 40)]]
        _check_many(prog, cases, f"{op}{suffix} imm {imm}")


@pytest.mark.parametrize("op,dst,imm,taken", [
    ("jeq", M64, -1, True),          # JMP: -1 is 0xffffffffffffffff
    ("jeq", M32, -1, False),
    ("jeq32", M32, -1, True),         # JMP32: -1 is 0xffffffff
    ("jeq32", M64, -1, True),
    ("jgt", M32, -1, False),          # unsigned against 2^64-1
    ("jgt32", 1 << 32, -1, False),    # the low half is 0
    ("jsgt", 0, -1, True),
    ("jslt", M32, 0, False),          # 2^32-1 is positive in 64 bits
    ("jslt32", M32, 0, True),         # ... and -1 in 32 bits
    ("jsle32", 0x80000000, INT32_MIN, True),
    ("jset", 1 << 40, -1, True),
    ("jset32", 1 << 40, -1, False),
])
def test_jump_negative_immediates(op, dst, imm, taken):
    text = f"lddw %r2, {dst:#x}\nmov %r0, 1\n{op} %r2, {imm}, +1\nmov %r0, 0\nexit"
    assert run_asm(text) == int(taken)


def test_ja_forward_and_backward():
    text = """
        mov %r0, 1
        ja fwd
        mov %r0, 99
    back:
        add %r0, 10
        exit
    fwd:
        add %r0, 2
        ja back"""
    assert run_asm(text) == 13


def test_ja32_takes_its_target_from_imm():
    text = """
        mov %r0, 1
        ja32 fwd
        mov %r0, 99
    back:
        add %r0, 10
        exit
    fwd:
        add %r0, 2
        ja32 back"""
    assert run_asm(text) == 13
    insns = assemble(text)
    ja32 = [i for i in insns if i.opcode == (isa.JMP32 | isa.JA)]
    assert ja32 and all(i.off == 0 and i.imm for i in ja32)


def test_ja32_raw_with_offset_field_set_uses_imm():
    """A JA32 with a nonzero ``off`` still jumps by ``imm`` (RFC 9669: the
    offset field is unused by the 32-bit JA)."""
    code = [isa.make(isa.ALU64 | isa.MOV, 0, imm=1),
            isa.make(isa.JMP32 | isa.JA, off=5, imm=1),
            isa.make(isa.ALU64 | isa.MOV, 0, imm=2),
            isa.make(isa.JMP | isa.EXIT)]
    assert conformance.run(code) == 1


def test_jump_over_lddw():
    text = "mov %r0, 1\nja +2\nlddw %r0, 0x100000000\nexit"
    assert run_asm(text) == 1


# -------------------------------------------------------------- atomics

ATOMIC = ["add", "or", "and", "xor"]
REF_ATOMIC = {"add": lambda m, v: m + v, "or": lambda m, v: m | v, "and": lambda m, v: m & v,
              "xor": lambda m, v: m ^ v, "xchg": lambda m, v: v}


def _atomic_cases(seed):
    return operand_pairs(seed, 60)[::7]


@pytest.mark.parametrize("bits", [64, 32])
@pytest.mark.parametrize("op,fetch", [(op, f) for op in ATOMIC for f in (False, True)]
                         + [("xchg", True)])
def test_atomic(op, bits, fetch):
    """``lock [fetch] OP[32] [%r1+8], %r2``: memory gets OP(old, src) in 4 or 8
    bytes (the rest untouched); with FETCH (xchg always) src gets the old value,
    zero-extended for 32 bits; without it src is unchanged."""
    suffix = "32" if bits == 32 else ""
    prog = _Compiled(f"""
        ldxdw %r2, [%r1]
        lock {"fetch " if fetch and op != "xchg" else ""}{op}{suffix} [%r1+8], %r2
        mov %r0, %r2
        exit""")
    mask = (1 << bits) - 1
    bad = []
    for old, v in _atomic_cases(len(op) * 3 + bits + fetch):
        guard = 0x5a5a5a5a5a5a5a5a
        r0, after = prog.run(mem64(v, old, guard))
        new = (old & ~mask) | (REF_ATOMIC[op](old & mask, v & mask) & mask)
        want_r0 = (old & mask) if fetch else v
        if (r0, after) != (want_r0, mem64(v, new, guard)):
            bad.append(f"old {old:#x} v {v:#x}: r0 {r0:#x} (want {want_r0:#x}), memory "
                       f"{after[8:16].hex()} (want {mem64(new).hex()})")
    assert not bad, "\n".join(bad[:10])


@pytest.mark.parametrize("bits", [64, 32])
def test_cmpxchg(bits):
    """``lock cmpxchg[32] [%r1+8], %r2``: R0 gets the old value (zero-extended
    for 32 bits); memory gets src when old == R0 (compared in 4 or 8 bytes)."""
    suffix = "32" if bits == 32 else ""
    prog = _Compiled(f"""
        ldxdw %r2, [%r1]
        ldxdw %r0, [%r1+16]
        lock cmpxchg{suffix} [%r1+8], %r2
        exit""")
    mask = (1 << bits) - 1
    bad = []
    rnd = random.Random(bits)
    for old, v in _atomic_cases(bits):
        for expect in (old, old ^ (1 << 40), old ^ 1, rnd.getrandbits(64)):
            r0, after = prog.run(mem64(v, old, expect))
            swap = (old & mask) == (expect & mask)
            new = (old & ~mask) | (v & mask) if swap else old
            if (r0, after[8:16]) != (old & mask, mem64(new)):
                bad.append(f"old {old:#x} v {v:#x} r0 {expect:#x}: got r0 {r0:#x} memory "
                           f"{after[8:16].hex()}")
    assert not bad, "\n".join(bad[:10])


def test_atomics_on_the_stack():
    text = """
        stdw [%r10-8], 40
        mov %r1, 2
        lock add [%r10-8], %r1
        lock fetch add [%r10-8], %r1
        ldxdw %r0, [%r10-8]
        add %r0, %r1
        exit"""
    assert run_asm(text) == 44 + 42


# -------------------------------------------------------------- calls

_CALLER = """
    mov %r6, 0x66
    mov %r7, 0x77
    mov %r8, 0x88
    mov %r9, 0x99
    stdw [%r10-8], 0x1234
    mov %r1, 5
    mov %r2, 7
    call local fn
    {after}
    exit
fn:
    mov %r6, 1
    mov %r7, 2
    mov %r8, 3
    mov %r9, 4
    stdw [%r10-8], 0x5678
    mov %r0, %r1
    mul %r0, %r2
    exit
"""


@pytest.mark.parametrize("after,want", [
    ("", 35),                                   # the callee's R0, from R1 and R2
    ("mov %r0, %r6", 0x66),                     # R6-R9 survive the call
    ("mov %r0, %r7", 0x77),
    ("mov %r0, %r8", 0x88),
    ("mov %r0, %r9", 0x99),
    ("ldxdw %r0, [%r10-8]", 0x1234),            # the callee has its own stack frame
])
def test_call_local(after, want):
    assert run_asm(_CALLER.format(after=after)) == want


def test_call_local_writes_callers_stack_through_a_pointer():
    text = """
        stdw [%r10-16], 1
        mov %r1, %r10
        add %r1, -16
        call local fn
        ldxdw %r0, [%r10-16]
        exit
    fn:
        ldxdw %r0, [%r1]
        add %r0, 41
        stxdw [%r1], %r0
        mov %r0, 0
        exit"""
    assert run_asm(text) == 42


def test_call_local_eight_frames():
    """The program and seven nested subprograms (the kernel's limit of eight
    frames), each with its own R6 and stack slot."""
    lines = ["mov %r1, 0", "call local f1", "exit"]
    for d in range(1, 7):
        lines += [f"f{d}:", f"add %r1, {d}", "mov %r6, %r1", "stxdw [%r10-8], %r1",
                  f"call local f{d + 1}", "ldxdw %r2, [%r10-8]", "add %r0, %r6",
                  "add %r0, %r2", "exit"]
    lines += ["f7:", "stdw [%r10-8], 1000", "mov %r0, %r1", "add %r0, 7", "exit"]
    # f7 returns 1+..+7 = 28; on the way back each fN adds 2 * (1+..+N)
    want = 28 + sum(d * (d + 1) for d in range(1, 7))
    assert run_asm("\n".join(lines)) == want


def test_helper_5_returns_its_first_argument():
    assert run_asm("mov %r1, 0x2a\ncall 5\nexit") == 0x2a


def test_loop_sums():
    prog = _Compiled("""
        mov %r0, 0
        ldxdw %r2, [%r1]
    loop:
        jeq %r2, 0, out
        add %r0, %r2
        sub %r2, 1
        ja loop
    out:
        exit""")
    for n in (0, 1, 2, 10, 1000, 100000):
        assert prog(mem64(n)) == n * (n + 1) // 2


def test_loop_with_conditional_back_edge():
    text = """
        mov %r0, 1
        mov %r2, 10
    loop:
        lsh %r0, 1
        sub32 %r2, 1
        jne32 %r2, 0, loop
        exit"""
    assert run_asm(text) == 1 << 10


# -------------------------------------------------------------- malformed programs

def _raw(*slots):
    """Instructions from (opcode, dst, src, off, imm) tuples, unchecked."""
    return isa.decode(isa.encode([isa.Insn(*s) for s in slots]))


EXIT = (0x95, 0, 0, 0, 0)
MOV_R0 = (0xb7, 0, 0, 0, 1)


@pytest.mark.parametrize("code,reason", [
    (_raw((0xb7, 11, 0, 0, 1), EXIT), "invalid register"),
    (_raw((0xbf, 0, 12, 0, 0), EXIT), "invalid register"),
    (_raw((0xbf, 0, 1, -1, 0), EXIT), "MOVSX offset"),
    (_raw((0xbf, 0, 1, 2, 0), EXIT), "MOVSX offset"),
    (_raw((0xbc, 0, 1, 32, 0), EXIT), "MOVSX offset"),      # movsx3232 does not exist
    (_raw((0xe7, 0, 0, 0, 0), EXIT), "ALU operation"),
    (_raw(MOV_R0, (0xe5, 0, 0, 0, 0), EXIT), "jump operation"),
    (_raw(MOV_R0, (0xf6, 0, 0, 0, 0), EXIT), "jump operation"),
    (_raw((0xd4, 0, 0, 0, 8), EXIT), "byte swap"),
    (_raw((0xc1, 0, 1, 0, 0), EXIT), "load mode"),
    (_raw((0x20, 0, 0, 0, 0), EXIT), "legacy packet load"),
    (_raw(MOV_R0, (0xdb, 1, 2, 0, 0x33), EXIT), "atomic operation"),
    (_raw(MOV_R0, (0x05, 0, 0, 5, 0), EXIT), "jump to"),
    (_raw(MOV_R0, (0x15, 0, 0, -3, 0), EXIT), "jump to"),
    (_raw(MOV_R0), "falls off the end"),
    (_raw(MOV_R0, (0x15, 1, 0, 1, 0), EXIT, MOV_R0), "falls off the end"),
    (_raw(MOV_R0, (0x18, 0, 0, 0, 1)), "falls off the end"),  # LDDW without its tail
    (_raw((0x85, 0, 1, 0, 1), EXIT, MOV_R0), "falls off the end"),  # a callee
    (_raw((0x85, 0, 1, 0, -1), EXIT), "call depth"),          # recursion
    (_raw(MOV_R0, (0x85, 0, 0, 0, 1), EXIT), "helper 1"),
])
def test_jit_refuses_malformed_programs(code, reason):
    """ISA runs are not verified: what the JIT cannot run is a JitError, never
    another exception, an LLVM error, or a crash (falling off the end of a
    program compiled to LLVM ``unreachable``, a SIGSEGV when reached)."""
    with pytest.raises(jit.JitError, match=reason):
        jit.compile_raw(code)


def test_jit_compiles_or_refuses_random_programs():
    """Seeded random slots (mostly valid opcodes, some bad fields): compiling
    gives a function or a JitError. Nothing is run (the programs are not safe)."""
    rnd = random.Random(4242)
    valid = [c | o | s for c in (isa.ALU, isa.ALU64, isa.JMP, isa.JMP32)
             for o in range(0, 0xe0, 0x10) for s in (0, 8)] + \
        [isa.LDX | m | z for m in (0x60, 0x80) for z in (0, 8, 0x10, 0x18)] + \
        [isa.ST | 0x60 | z for z in (0, 8, 0x10, 0x18)] + \
        [isa.STX | m | z for m in (0x60, 0xc0) for z in (0, 8, 0x10, 0x18)] + [0x18]
    compiled = refused = 0
    for _ in range(400):
        slots = []
        for _ in range(rnd.randrange(1, 10)):
            opcode = rnd.choice(valid) if rnd.random() < 0.9 else rnd.randrange(256)
            reg = lambda: rnd.randrange(11) if rnd.random() < 0.95 else rnd.randrange(16)  # noqa
            slots.append((opcode, reg(), reg(), rnd.choice([0, 1, -1, 2, 8, 16, 32, -2]),
                          rnd.choice([0, 1, -1, 5, 16, 32, 64, 0xe1, 0xf1, 0x41, 2])))
        slots.append(EXIT)
        code = _raw(*slots)
        try:
            jit.compile_raw(code)
            compiled += 1
        except jit.JitError:
            refused += 1
    assert compiled > 50 and refused > 50


# -------------------------------------------------------------- the harness itself

def test_run_matches_conformance():
    """_Compiled gives what conformance.run gives for the same program and memory."""
    text = "ldxdw %r0, [%r1]\nldxdw %r2, [%r1+8]\nsdiv %r0, %r2\nadd %r0, %r2\nexit"
    prog = _Compiled(text)
    for a, b in operand_pairs(5, 20)[::37]:
        memory = mem64(a, b)
        assert prog(memory) == conformance.run(assemble(text), memory)


def test_r2_is_memory_length():
    assert run_asm("mov %r0, %r2\nexit", b"\x00" * 24) == 24
    assert run_asm("mov %r0, %r2\nexit") == 0


# -------------------------------------------------------------- the vectors

needs_vectors = pytest.mark.skipif(not VECTORS.is_dir(), reason=NO_VECTORS)


def _cli(argv, stdin=""):
    """Run ``dataplane ARGV`` in-process: (exit code, stdout, stderr)."""
    from dataplane.cli.main import main
    out, err = io.StringIO(), io.StringIO()
    old_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
    finally:
        sys.stdin = old_stdin
    return code, out.getvalue(), err.getvalue()


@needs_vectors
def test_cli_conformance_folder():
    """Every bpf_conformance vector passes, through ``dataplane conformance``
    (conformance.run_folder: run once, 14 s, so not again on its own)."""
    code, out, err = _cli(["conformance", str(VECTORS)])
    assert code == 0, "\n".join(ln for ln in out.splitlines() if ln.startswith("FAIL")) + err
    assert out.splitlines()[-1] == "Passed 313 out of 313 tests."
    assert sum(ln.startswith("PASS ") for ln in out.splitlines()) == 313


@needs_vectors
def test_cli_conformance_subprocess():
    exe = Path(sys.executable).with_name("dataplane")
    if not exe.exists():
        pytest.skip(f"{exe} is not installed")
    proc = subprocess.run([str(exe), "conformance", "-q", str(VECTORS)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines() == ["Passed 313 out of 313 tests."]


def test_cli_plugin_prints_r0_in_hex():
    # ldxdw r0, [r1+8]; add r0, r2 (the memory's length); exit
    program = isa.encode(assemble("ldxdw %r0, [%r1+8]\nadd %r0, %r2\nexit")).hex()
    memory = mem64(0, 0xabcdef0000).hex()
    code, out, err = _cli(["conformance", "--plugin", memory], stdin=program + "\n")
    assert code == 0, err
    assert out.strip() == f"{0xabcdef0000 + 16:x}"
    code, out, err = _cli(["conformance", "--plugin"], stdin=isa.encode(assemble(
        "mov %r0, -1\nexit")).hex())
    assert (code, out.strip()) == (0, "f" * 16)


def test_cli_plugin_bad_hex():
    code, out, err = _cli(["conformance", "--plugin", "zz"], stdin="9500000000000000")
    assert code == 2
    assert err.startswith("error: conformance --plugin: bad hex")
    assert "Traceback" not in err


def test_cli_plugin_program_it_cannot_run():
    """No exit (this crashed the process), a register past r10: one error line."""
    for program in ("b700000001000000", "b70b000001000000" "9500000000000000"):
        code, out, err = _cli(["conformance", "--plugin", ""], stdin=program)
        assert code == 1, (program, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: program: insn 0:"), err
        assert out == ""


def test_cli_conformance_vectors_that_crash_or_loop_fail_alone(tmp_path, monkeypatch):
    """A vector's program runs unproved: one reading far outside its memory, one
    that never ends and one whose jump leaves the program each fail with the
    reason, and the rest of the folder still runs (the first crashed the whole
    process, the second hung it, the third raised KeyError in the JIT)."""
    monkeypatch.setattr(conformance, "RUN_SECONDS", 1)
    vectors = {
        "a_ok": "mov %r0, 7\nexit\n-- result\n0x7",
        "crash": "lsh %r1, 40\nldxdw %r0, [%r1]\nexit\n-- mem\n00 01\n-- result\n0x0",
        "endless": "mov %r0, 1\njeq %r0, 1, -1\nexit\n-- result\n0x1",
        "jump": "ja +5\nexit\n-- result\n0x1",
        "z_ok": "mov %r0, 1\nexit\n-- result\n0x1",
    }
    for name, body in vectors.items():
        (tmp_path / f"{name}.data").write_text(f"-- asm\n{body}\n")
    code, out, err = _cli(["conformance", str(tmp_path)])
    assert code == 1 and "Traceback" not in err
    assert out.splitlines() == [
        "PASS a_ok.data",
        "FAIL crash.data: crashed: SIGSEGV (a memory access outside the block and the stack?)",
        "FAIL endless.data: did not finish in 1 s (an endless loop?)",
        "FAIL jump.data: not compiled: program: insn 0: ja +5: jump out of range from insn 0 to 6",
        "PASS z_ok.data",
        "Passed 2 out of 5 tests."]


def test_cli_conformance_missing_folder(tmp_path):
    code, out, err = _cli(["conformance", str(tmp_path / "nope")])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: conformance:"), err
    assert "not a directory" in lines[0]


def test_cli_conformance_empty_folder(tmp_path):
    code, out, err = _cli(["conformance", str(tmp_path)])
    assert code == 2
    assert "no .data files" in err


def test_cli_conformance_no_folder():
    code, out, err = _cli(["conformance"])
    assert code == 2 and err.startswith("error: conformance:")


def test_cli_conformance_bad_vectors(tmp_path):
    """A vector with bad content is a FAIL line naming it, never a traceback;
    the others still run and the exit code is 1."""
    (tmp_path / "a_good.data").write_text("-- asm\nmov %r0, 2\nexit\n-- result\n0x2\n")
    (tmp_path / "b_badmem.data").write_text("-- asm\nmov %r0, 1\nexit\n-- mem\nzz 01\n"
                                            "-- result\n0x1\n")
    (tmp_path / "c_badasm.data").write_text("-- asm\nfrobnicate %r0\n-- result\n0x1\n")
    (tmp_path / "d_wrong.data").write_text("-- asm\nmov %r0, 1\nexit\n-- result\n0x2\n")
    (tmp_path / "e_badresult.data").write_text("-- asm\nmov %r0, 1\nexit\n-- result\nxyz\n")
    (tmp_path / "f_noprog.data").write_text("-- result\n0x1\n")
    (tmp_path / "g_badraw.data").write_text("-- raw\nnothex\n-- result\n0x1\n")
    (tmp_path / "h_binary.data").write_bytes(b"\xff\xfe\x00-- asm\n")
    # mov r11, 1; exit (an IndexError escaped the JIT) and no exit at all (SIGSEGV)
    (tmp_path / "i_badreg.data").write_text("-- raw\n0x0000000100000bb7\n0x95\n-- result\n0x1\n")
    (tmp_path / "j_noexit.data").write_text("-- asm\nmov %r0, 1\n-- result\n0x1\n")
    code, out, err = _cli(["conformance", str(tmp_path)])
    assert code == 1, out + err
    assert "Traceback" not in out + err
    lines = out.splitlines()
    assert lines[0] == "PASS a_good.data"
    for name in ("b_badmem", "c_badasm", "d_wrong", "e_badresult", "f_noprog", "g_badraw",
                 "h_binary", "i_badreg", "j_noexit"):
        assert any(ln.startswith(f"FAIL {name}.data") for ln in lines), (name, out)
    assert "expected 0x2, got 0x1" in out
    assert lines[-1] == "Passed 1 out of 10 tests."
