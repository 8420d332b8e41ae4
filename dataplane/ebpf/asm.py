"""Assembler for the uBPF / bpf_conformance eBPF assembly syntax.

One instruction per line: ``mov32 %r0, 1``, ``ldxw %r0, [%r1+4]``,
``jne %r0, 0xa5, exit``, ``lock fetch add [%r10-8], %r1``, ``lddw %r0, 0x1``.
Labels are ``name:`` (alone or before an instruction); comments run from
``#``, ``;`` or ``//`` to the end of the line. A jump target is a label or a
signed slot offset (``+3``, ``-1``); the target ``exit`` is the program's last
``exit`` instruction unless a label of that name is defined.

Beyond the vectors' syntax it reads everything ``disasm`` prints: ``lddw``
with a pseudo source (``lddw %r1, map_fd[3]``, ``map_value[3, 8]``),
``call kfunc N`` and ``.raw 0xWORD[, 0xWORD]`` for slots that have no mnemonic
(a word is the slot read as a little-endian u64, as in a vector's ``-- raw``).
"""

import re
import struct

from dataplane.ebpf import isa
from dataplane.ebpf.isa import (
    ALU, ALU64, JMP, JMP32, LD, LDX, ST, STX, SRC_K, SRC_X, MODE_ABS, MODE_IND, MODE_MEM,
    MODE_MEMSX, MODE_ATOMIC, SIZE_B, SIZE_H, SIZE_W, SIZE_DW, LDDW)
from dataplane.errors import ProgramError


class AsmError(ProgramError):
    """Source text that does not assemble; the message is
    ``NAME:LINE: reason: 'source line'``."""

    def __init__(self, name, lineno, reason, source):
        super().__init__(f"{name}:{lineno}: {reason}: '{source}'")
        self.name, self.lineno, self.reason, self.source = name, lineno, reason, source


class _Fail(Exception):
    """A reason without a place; ``assemble`` adds the name and line."""


ALU_OPS = {"add": (isa.ADD, 0), "sub": (isa.SUB, 0), "mul": (isa.MUL, 0), "div": (isa.DIV, 0),
           "sdiv": (isa.DIV, 1), "or": (isa.OR, 0), "and": (isa.AND, 0), "lsh": (isa.LSH, 0),
           "rsh": (isa.RSH, 0), "mod": (isa.MOD, 0), "smod": (isa.MOD, 1), "xor": (isa.XOR, 0),
           "mov": (isa.MOV, 0), "arsh": (isa.ARSH, 0)}
JMP_OPS = {name: op for op, name in isa.JMP_NAMES.items() if op in isa.CONDITIONAL_JUMPS}
ATOMIC_OPS = {"add": isa.ATOMIC_ADD, "or": isa.ATOMIC_OR, "and": isa.ATOMIC_AND,
              "xor": isa.ATOMIC_XOR, "xchg": isa.ATOMIC_XCHG, "cmpxchg": isa.ATOMIC_CMPXCHG}
SIZES = {"b": SIZE_B, "h": SIZE_H, "w": SIZE_W, "dw": SIZE_DW}
# LDDW's src field by the name the disassembler prints (RFC 9669 section 5.4)
PSEUDO_SOURCES = {"map_fd": isa.PSEUDO_MAP_FD, "map_value": isa.PSEUDO_MAP_VALUE,
                  "btf_id": isa.PSEUDO_BTF_ID, "func": isa.PSEUDO_FUNC,
                  "map_idx": isa.PSEUDO_MAP_IDX, "map_idx_value": isa.PSEUDO_MAP_IDX_VALUE}

_LABEL_DEF = re.compile(r"([A-Za-z_.$][\w.$]*)\s*:(.*)\Z")
_LABEL = re.compile(r"[A-Za-z_.$][\w.$]*\Z")
_NUMBER = re.compile(r"[+-]?(0[xX][0-9a-fA-F]+|[0-9]+)\Z")
_MEM = re.compile(r"\[\s*([^\]+\-\s]+)\s*(?:([+-])\s*(0[xX][0-9a-fA-F]+|[0-9]+))?\s*\]\Z")
_PSEUDO = re.compile(r"(\w+)\s*\[(.*)\]\Z")
_SLOT = struct.Struct("<BBhi")
S16 = (-(1 << 15), (1 << 15) - 1)
S32 = (-(1 << 31), (1 << 31) - 1)
IMM32 = (-(1 << 31), (1 << 32) - 1)  # s32 or u32 spelling of the same 32 bits
IMM64 = (-(1 << 63), (1 << 64) - 1)


def assemble(text, name="<asm>"):
    """Assemble source text into a list of ``Insn`` (one per slot, as
    ``isa.decode`` gives). Raises ``AsmError`` naming ``name`` and the line."""
    slots, labels, fixups, exits = [], {}, [], []
    for lineno, line in enumerate(text.splitlines(), 1):
        source = line.strip()
        try:
            body = _strip_comment(line).strip()
            while (m := _LABEL_DEF.match(body)):
                if m.group(1) in labels:
                    raise _Fail(f"duplicate label '{m.group(1)}'")
                labels[m.group(1)] = len(slots)
                body = m.group(2).strip()
            if not body:
                continue
            new, ref = _encode_line(body)
        except _Fail as e:
            raise AsmError(name, lineno, str(e), source) from None
        if ref is not None:
            fixups.append((len(slots), ref, lineno, source))
        if body.split()[0].lower() == "exit":
            exits.append(len(slots))
        slots.extend(new)
    for index, (field, label), lineno, source in fixups:
        if label in labels:
            target = labels[label]
        elif label == "exit" and exits:
            # The last exit, as the vectors' README says. bpf_conformance's own
            # assembler binds the first one; no vector's result depends on it
            # (every jump to 'exit' in a many-exit vector is a not-taken branch).
            target = exits[-1]
        else:
            raise AsmError(name, lineno, f"undefined label '{label}'", source)
        rel = target - index - 1
        lo, hi = S16 if field == "off" else S32
        if not lo <= rel <= hi:
            bits = 16 if field == "off" else 32
            raise AsmError(name, lineno, f"jump out of s{bits} range ({rel:+d})", source)
        opcode, dst, src, off, imm = slots[index]
        slots[index] = (opcode, dst, src, rel, imm) if field == "off" else \
            (opcode, dst, src, off, rel)
    # Through bytes and back, so LDDW pairs (also ones written as .raw) come out
    # exactly as isa.decode would give them for the same program.
    return isa.decode(isa.encode([isa.make(*s) for s in slots]))


def _strip_comment(line):
    cut = len(line)
    for mark in ("#", ";", "//"):
        at = line.find(mark)
        if at >= 0:
            cut = min(cut, at)
    return line[:cut]


def _encode_line(body):
    """One instruction's text -> (list of slot tuples, (field, label) or None)."""
    parts = body.split(None, 1)
    mnemonic, rest = parts[0].lower(), (parts[1] if len(parts) > 1 else "")
    if mnemonic == "lock":
        return _lock(rest), None
    if mnemonic == "call":
        return _call(rest)
    if mnemonic == ".raw":
        words = _operands(rest)
        if not words:
            raise _Fail("missing operand")
        return [_raw_word(w) for w in words], None
    ops = _operands(rest)
    for pattern, handler in _TABLE:
        m = pattern.fullmatch(mnemonic)
        if m:
            return handler(m, ops)
    raise _Fail(f"unknown mnemonic '{parts[0]}'")


def _operands(text):
    """Split on commas outside brackets (``[%r1+2]``, ``map_value[3, 8]``)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    last = "".join(cur).strip()
    if parts or last:
        parts.append(last)
    if "" in parts:
        raise _Fail("missing operand")
    return parts


def _want(ops, count):
    if len(ops) < count:
        raise _Fail("missing operand")
    if len(ops) > count:
        raise _Fail("too many operands")
    return ops


def _number(text, bounds, what="immediate"):
    if not _NUMBER.fullmatch(text):
        raise _Fail(f"bad number '{text}'")
    try:
        value = int(text, 16 if "x" in text.lower() else 10)
    except ValueError:  # only past Python's cap on digits in a str -> int
        raise _Fail(f"bad number '{text[:20]}...'") from None
    if not bounds[0] <= value <= bounds[1]:
        raise _Fail(f"{what} out of range ({text})")
    return value


def _reg(text):
    m = re.fullmatch(r"%r([0-9]+)", text)
    if not m or int(m.group(1)) > 10:
        raise _Fail(f"bad register '{text}'")
    return int(m.group(1))


def _mem(text):
    """``[%rN]``, ``[%rN+off]`` or ``[%rN-off]`` -> (register, s16 offset)."""
    m = _MEM.fullmatch(text)
    if not m:
        raise _Fail(f"bad memory operand '{text}'")
    off = 0
    if m.group(2):
        off = _number(m.group(2) + m.group(3), S16, "offset")
    return _reg(m.group(1)), off


def _src(text):
    """A register or a 32-bit immediate -> (SRC_X or SRC_K, src, imm)."""
    if text.startswith("%"):
        return SRC_X, _reg(text), 0
    return SRC_K, 0, _number(text, IMM32)


def _target(text, field):
    """A jump target -> (offset, None) or (0, (field, label))."""
    if text[:1] in "+-":
        bits = 16 if field == "off" else 32
        rel = _number(text, IMM64, "jump offset")
        if not -(1 << (bits - 1)) <= rel < 1 << (bits - 1):
            raise _Fail(f"jump out of s{bits} range ({rel:+d})")
        return rel, None
    if _LABEL.fullmatch(text):
        return 0, (field, text)
    raise _Fail(f"bad jump target '{text}' (want a label or +N/-N)")


def _alu(m, ops):
    cls = ALU if m.group(2) == "32" else ALU64
    op, off = ALU_OPS[m.group(1)]
    dst, (x, src, imm) = _reg(_want(ops, 2)[0]), _src(ops[1])
    return [(cls | op | x, dst, src, off, imm)], None


def _neg(m, ops):
    cls = ALU if m.group(1) == "32" else ALU64
    return [(cls | isa.NEG, _reg(_want(ops, 1)[0]), 0, 0, 0)], None


def _movsx(m, ops):
    bits, width = int(m.group(1)), m.group(2)
    if bits == 32 and width == "32":
        raise _Fail("unknown mnemonic 'movsx3232'")
    dst = _reg(_want(ops, 2)[0])
    if not ops[1].startswith("%"):
        raise _Fail("movsx takes a register source")
    cls = ALU if width == "32" else ALU64
    return [(cls | isa.MOV | SRC_X, dst, _reg(ops[1]), bits, 0)], None


def _end(m, ops):
    # le/be are ALU END with the source bit choosing the byte order; bswap
    # (the vectors also say swap) is ALU64 END, an unconditional swap.
    opcode = {"le": ALU | isa.END | SRC_K, "be": ALU | isa.END | SRC_X}.get(
        m.group(1), ALU64 | isa.END | SRC_K)
    return [(opcode, _reg(_want(ops, 1)[0]), 0, 0, int(m.group(2)))], None


def _jcond(m, ops):
    cls = JMP32 if m.group(2) else JMP
    dst, (x, src, imm) = _reg(_want(ops, 3)[0]), _src(ops[1])
    off, ref = _target(ops[2], "off")
    return [(cls | JMP_OPS[m.group(1)] | x, dst, src, off, imm)], ref


def _ja(m, ops):
    if m.group(1):  # ja32: JMP32 class, the offset is the 32-bit imm
        imm, ref = _target(_want(ops, 1)[0], "imm")
        return [(JMP32 | isa.JA, 0, 0, 0, imm)], ref
    off, ref = _target(_want(ops, 1)[0], "off")
    return [(JMP | isa.JA, 0, 0, off, 0)], ref


def _exit(m, ops):
    _want(ops, 0)
    return [(JMP | isa.EXIT, 0, 0, 0, 0)], None


def _callx(m, ops):
    return [(JMP | isa.CALL | SRC_X, _reg(_want(ops, 1)[0]), 0, 0, 0)], None


def _call(rest):
    """``call N`` / ``call helper N`` (src 0), ``call local TARGET`` (src 1,
    imm relative), ``call kfunc N`` or ``call runtime N`` (src 2), ``call %rX``
    (callx, register in dst as bpf_conformance and LLVM encode it)."""
    words = rest.split()
    if not words:
        raise _Fail("missing operand")
    kind = words[0].lower()
    if kind in ("local", "helper", "kfunc", "runtime"):
        if len(words) < 2:
            raise _Fail("missing operand")
        words = words[1:]
    elif words[0].startswith("%"):
        kind = "callx"
    if len(words) > 1:
        raise _Fail("too many operands")
    if kind == "callx":
        return [(JMP | isa.CALL | SRC_X, _reg(words[0]), 0, 0, 0)], None
    if kind == "local":
        imm, ref = _target(words[0], "imm")
        return [(JMP | isa.CALL, 0, isa.CALL_LOCAL, 0, imm)], ref
    src = isa.CALL_KFUNC if kind in ("kfunc", "runtime") else isa.CALL_HELPER
    return [(JMP | isa.CALL, 0, src, 0, _number(words[0], IMM32))], None


def _lock(rest):
    """``lock [fetch] OP[32] [%rD+off], %rS``; xchg and cmpxchg always fetch."""
    m = re.match(r"(fetch\s+)?([A-Za-z]\w*)\s*(.*)\Z", rest.strip())
    if not m:
        raise _Fail("missing operand")
    op = re.fullmatch(r"(add|or|and|xor|xchg|cmpxchg)(32|64)?", m.group(2).lower())
    if not op:
        raise _Fail(f"unknown mnemonic 'lock {m.group(2)}'")
    ops = _want(_operands(m.group(3)), 2)
    (dst, off), src = _mem(ops[0]), _reg(ops[1])
    imm = ATOMIC_OPS[op.group(1)] | (isa.ATOMIC_FETCH if m.group(1) else 0)
    size = SIZE_W if op.group(2) == "32" else SIZE_DW
    return [(STX | MODE_ATOMIC | size, dst, src, off, imm)]


def _lddw(m, ops):
    dst = _reg(_want(ops, 2)[0])
    p = _PSEUDO.fullmatch(ops[1])
    if p is None:
        value = _number(ops[1], IMM64) & 0xffffffffffffffff
        src, lo, hi = isa.PSEUDO_IMM64, value & 0xffffffff, value >> 32
    else:
        if p.group(1) not in PSEUDO_SOURCES:
            raise _Fail(f"unknown lddw source '{p.group(1)}'")
        halves = _operands(p.group(2))
        if not 1 <= len(halves) <= 2:
            raise _Fail("missing operand" if not halves else "too many operands")
        src = PSEUDO_SOURCES[p.group(1)]
        lo, hi = (_number(h, IMM32) for h in halves + ["0"] * (2 - len(halves)))
    return [(LDDW, dst, src, 0, lo), (0, 0, 0, 0, hi)], None


def _ldx(m, ops):
    if m.group(1) and m.group(2) == "dw":
        raise _Fail("unknown mnemonic 'ldxsdw'")
    mode = MODE_MEMSX if m.group(1) else MODE_MEM
    dst, (src, off) = _reg(_want(ops, 2)[0]), _mem(ops[1])
    return [(LDX | mode | SIZES[m.group(2)], dst, src, off, 0)], None


def _st(m, ops):
    (dst, off), imm = _mem(_want(ops, 2)[0]), _number(ops[1], IMM32)
    return [(ST | MODE_MEM | SIZES[m.group(1)], dst, 0, off, imm)], None


def _stx(m, ops):
    (dst, off), src = _mem(_want(ops, 2)[0]), _reg(ops[1])
    return [(STX | MODE_MEM | SIZES[m.group(1)], dst, src, off, 0)], None


def _ldpkt(m, ops):
    """Legacy packet loads: ``ldabsw IMM`` and ``ldindw %rS, IMM`` (the
    offset register goes in src, as the kernel's BPF_LD_IND has it)."""
    size = SIZES[m.group(2)]
    if m.group(1) == "abs":
        return [(LD | MODE_ABS | size, 0, 0, 0, _number(_want(ops, 1)[0], IMM32))], None
    src, imm = _reg(_want(ops, 2)[0]), _number(ops[1], IMM32)
    return [(LD | MODE_IND | size, 0, src, 0, imm)], None


def _raw_word(text):
    word = _number(text, (0, (1 << 64) - 1), "raw word")
    opcode, regs, off, imm = _SLOT.unpack(word.to_bytes(8, "little"))
    return opcode, regs & 0x0f, regs >> 4, off, imm


_TABLE = [(re.compile(p), h) for p, h in (
    (r"(add|sub|mul|div|sdiv|or|and|lsh|rsh|mod|smod|xor|mov|arsh)(32|64)?", _alu),
    (r"neg(32|64)?", _neg),
    (r"movsx(8|16|32)(32|64)", _movsx),
    (r"(le|be|bswap|swap)(16|32|64)", _end),
    (r"(" + "|".join(JMP_OPS) + r")(32)?", _jcond),
    (r"ja(32)?", _ja),
    (r"exit", _exit),
    (r"callx", _callx),
    (r"lddw", _lddw),
    (r"ldx(s?)(b|h|w|dw)", _ldx),
    (r"st(b|h|w|dw)", _st),
    (r"stx(b|h|w|dw)", _stx),
    (r"ld(abs|ind)(b|h|w|dw)", _ldpkt),
)]
