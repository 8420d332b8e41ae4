"""The eBPF instruction set (RFC 9669): opcode fields, decoding, encoding.

An instruction is 8 bytes, little-endian: opcode u8, dst:4 (low nibble) and
src:4, offset s16, imm s32. LDDW takes two slots; its second slot's imm is the
upper 32 bits. ``decode`` keeps one ``Insn`` per slot, so jump offsets and
instruction indices mean what they mean to the kernel (``bpftool prog dump``,
the verifier's log); the second slot of an LDDW is an ``Insn`` with
``is_lddw_tail`` set.
"""

import struct
from typing import NamedTuple

# -- classes (opcode & 0x07)
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = range(8)
CLASS_NAMES = ("ld", "ldx", "st", "stx", "alu", "jmp", "jmp32", "alu64")

# -- load/store: size (opcode & 0x18) and mode (opcode & 0xe0)
SIZE_W, SIZE_H, SIZE_B, SIZE_DW = 0x00, 0x08, 0x10, 0x18
SIZE_BYTES = {SIZE_W: 4, SIZE_H: 2, SIZE_B: 1, SIZE_DW: 8}
SIZE_SUFFIX = {SIZE_W: "w", SIZE_H: "h", SIZE_B: "b", SIZE_DW: "dw"}
MODE_IMM, MODE_ABS, MODE_IND, MODE_MEM, MODE_MEMSX, MODE_ATOMIC = 0x00, 0x20, 0x40, 0x60, 0x80, \
    0xc0

# -- ALU / ALU64 operations (opcode & 0xf0); source (opcode & 0x08)
SRC_K, SRC_X = 0x00, 0x08
ADD, SUB, MUL, DIV, OR, AND, LSH, RSH, NEG, MOD, XOR, MOV, ARSH, END = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0)
ALU_NAMES = {ADD: "add", SUB: "sub", MUL: "mul", DIV: "div", OR: "or", AND: "and", LSH: "lsh",
             RSH: "rsh", NEG: "neg", MOD: "mod", XOR: "xor", MOV: "mov", ARSH: "arsh",
             END: "end"}

# -- JMP / JMP32 operations (opcode & 0xf0)
JA, JEQ, JGT, JGE, JSET, JNE, JSGT, JSGE, CALL, EXIT, JLT, JLE, JSLT, JSLE = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0, 0xb0, 0xc0, 0xd0)
JMP_NAMES = {JA: "ja", JEQ: "jeq", JGT: "jgt", JGE: "jge", JSET: "jset", JNE: "jne",
             JSGT: "jsgt", JSGE: "jsge", CALL: "call", EXIT: "exit", JLT: "jlt", JLE: "jle",
             JSLT: "jslt", JSLE: "jsle"}
CONDITIONAL_JUMPS = frozenset(JMP_NAMES) - {JA, CALL, EXIT}

# -- CALL's src field
CALL_HELPER, CALL_LOCAL, CALL_KFUNC = 0, 1, 2

# -- atomic operations (imm of STX|ATOMIC)
ATOMIC_ADD, ATOMIC_OR, ATOMIC_AND, ATOMIC_XOR = 0x00, 0x40, 0x50, 0xa0
ATOMIC_FETCH = 0x01
ATOMIC_XCHG, ATOMIC_CMPXCHG = 0xe0 | ATOMIC_FETCH, 0xf0 | ATOMIC_FETCH
ATOMIC_OPS = frozenset({ATOMIC_ADD, ATOMIC_OR, ATOMIC_AND, ATOMIC_XOR,
                        ATOMIC_ADD | ATOMIC_FETCH, ATOMIC_OR | ATOMIC_FETCH,
                        ATOMIC_AND | ATOMIC_FETCH, ATOMIC_XOR | ATOMIC_FETCH,
                        ATOMIC_XCHG, ATOMIC_CMPXCHG})

# -- LDDW's src field (what the 64-bit immediate means)
PSEUDO_IMM64, PSEUDO_MAP_FD, PSEUDO_MAP_VALUE, PSEUDO_BTF_ID, PSEUDO_FUNC, \
    PSEUDO_MAP_IDX, PSEUDO_MAP_IDX_VALUE = range(7)

# -- helpers that run a function of the program (enum bpf_func_id): its address
# is an lddw of PSEUDO_FUNC, and the verifier and the JIT treat the call apart
BPF_FUNC_for_each_map_elem, BPF_FUNC_loop = 164, 181

LDDW = LD | SIZE_DW | MODE_IMM  # 0x18
STACK_SIZE = 512
MAX_CALL_DEPTH = 8
INSN_SIZE = 8


class Insn(NamedTuple):
    """One instruction slot. For an LDDW, ``imm64`` is the whole 64-bit
    immediate (``imm`` its low half); the next slot is its tail."""

    opcode: int
    dst: int
    src: int
    off: int
    imm: int
    imm64: int = 0
    is_lddw_tail: bool = False

    @property
    def cls(self):
        return self.opcode & 0x07

    @property
    def op(self):
        """ALU/JMP operation (opcode & 0xf0)."""
        return self.opcode & 0xf0

    @property
    def size(self):
        """Load/store width in bytes."""
        return SIZE_BYTES[self.opcode & 0x18]

    @property
    def mode(self):
        return self.opcode & 0xe0

    @property
    def uses_reg_src(self):
        return bool(self.opcode & SRC_X)

    @property
    def is_lddw(self):
        return self.opcode == LDDW and not self.is_lddw_tail

    @property
    def is_func_address(self):
        """An lddw of a function's address (PSEUDO_FUNC: a callback's)."""
        return self.is_lddw and self.src == PSEUDO_FUNC

    @property
    def names_function(self):
        """A call of a subprogram or the address of one: the function starts
        at this instruction's pc + 1 + imm."""
        return self.cls == JMP and self.op == CALL and self.src == CALL_LOCAL \
            or self.is_func_address


_STRUCT = struct.Struct("<BBhi")


def decode(code):
    """Bytes (a multiple of 8) -> list of Insn, one per slot.

    An LDDW whose tail slot is missing decodes its head with ``imm64`` from the
    low half only; the verifier rejects it (the decoder never raises on content).
    """
    if len(code) % INSN_SIZE:
        raise ValueError(f"code of {len(code)} bytes is not a whole number of instructions")
    out = []
    words = [_STRUCT.unpack_from(code, i) for i in range(0, len(code), INSN_SIZE)]
    i = 0
    while i < len(words):
        opcode, regs, off, imm = words[i]
        dst, src = regs & 0x0f, regs >> 4
        if opcode == LDDW and i + 1 < len(words):
            hi = words[i + 1][3] & 0xffffffff
            imm64 = (hi << 32) | (imm & 0xffffffff)
            out.append(Insn(opcode, dst, src, off, imm, imm64))
            t = words[i + 1]
            out.append(Insn(t[0], t[1] & 0x0f, t[1] >> 4, t[2], t[3], is_lddw_tail=True))
            i += 2
            continue
        out.append(Insn(opcode, dst, src, off, imm, imm & 0xffffffffffffffff))
        i += 1
    return out


def encode(insns):
    """list of Insn (one per slot, as ``decode`` gives) -> bytes."""
    return b"".join(_STRUCT.pack(i.opcode, (i.src << 4) | i.dst, i.off, i.imm) for i in insns)


def make(opcode, dst=0, src=0, off=0, imm=0):
    """One slot from its fields (imm taken as s32)."""
    imm = ((imm + (1 << 31)) & 0xffffffff) - (1 << 31)
    return Insn(opcode, dst, src, off, imm, imm & 0xffffffffffffffff)


def make_lddw(dst, imm64, src=PSEUDO_IMM64):
    """The two slots of ``lddw dst, imm64``."""
    imm64 &= 0xffffffffffffffff
    lo, hi = imm64 & 0xffffffff, imm64 >> 32
    s32 = lambda v: v - (1 << 32) if v & 0x80000000 else v  # noqa: E731
    return [Insn(LDDW, dst, src, 0, s32(lo), imm64),
            Insn(0, 0, 0, 0, s32(hi), is_lddw_tail=True)]
