"""Classic BPF (tcpdump filter expressions) as eBPF XDP programs.

``dataplane replay -f 'tcp port 80'``: tcpdump compiles the expression to
classic BPF (``tcpdump -ddd -y EN10MB EXPR``: a count, then ``code jt jf k``
per line), ``translate`` turns that into eBPF instructions for an XDP program,
and ``load_filter`` verifies and compiles them (program.load_insns_program).
A filter that returns non-zero accepts the packet (XDP_PASS), zero rejects it
(XDP_DROP): the kernel's meaning of a socket filter's result.

Classic BPF (Documentation/networking/filter.rst): a 32-bit accumulator A, an
index register X, scratch memory M[0..15]; packet loads are big-endian, and a
load past the end of the packet ends the filter with 0, as does a division by
X = 0. The translation:

==================  ===============================================================
classic             eBPF
==================  ===============================================================
entry               r6 = ctx->data, r7 = ctx->data_end (ldxw), A = X = 0,
                    M[] zeroed (only when the program uses it)
A, X, M[i]          r8, r9 (ALU32 operations: values stay 32 bits, zero-extended),
                    the word at [r10 - 4 * (16 - i)]
ld[bhw] [k]         r2 = r6 + k + size; if r2 > r7 goto return-0;
                    A = *(size *)(r2 - size); be16/be32 A
ld[bhw] [x + k]     r2 = (u32)(X + k); r2 += r6; r2 += size; the same check and load
ldxb 4*([k]&0xf)    the byte load into X; X &= 0xf; X <<= 2
ld/ldx #k, M[k]     mov32; ldxw from the M[k] slot
ld/ldx #len         data_end - data
st/stx M[k]         stxw to the M[k] slot
alu op k / x        the ALU32 operation; div/mod by X first: if X == 0 goto return-0
jeq/jgt/jge/jset    JMP32 compare of A with k or X (no sign extension of k), the
                    classic jt/jf offsets patched to the eBPF index of their target
ja k                ja
ret #k / ret a      r0 = XDP_PASS if the value is non-zero else XDP_DROP; exit
tax / txa           mov32
==================  ===============================================================

Absolute offsets above 0x7fffffff (negative to the kernel: its SKF_AD_OFF,
SKF_NET_OFF and SKF_LL_OFF extensions) are rejected. An indirect load's offset
is X + k in 32 bits (a negative k with a larger X is an ordinary offset, as in
the kernel); one that lands above 0x7fffffff is past any frame: return 0 (the
kernel would read its extension areas there). A shift by X takes X modulo 32
(eBPF's ALU32 shift, as in the kernel's translation); by a constant of 32 or
more, or a division by a constant 0, is rejected, as bpf_check_classic does.
``len`` is the frame the program sees (a capture's caplen; tcpdump's ``len`` on
a savefile is the original length, which differs only for truncated captures).
"""

import shutil
import subprocess
from typing import NamedTuple

from ..action import XDP_DROP, XDP_PASS
from ..errors import ProgramError, UsageError
from . import isa
from .isa import (ALU, ALU64, JMP, JMP32, LDX, SRC_K, SRC_X, ST, STX, MODE_MEM, SIZE_B, SIZE_DW,
                  SIZE_H, SIZE_W, make)

#: The kernel's limit on a classic program (BPF_MAXINSNS).
MAX_INSNS = 4096
#: Scratch memory words (BPF_MEMWORDS).
MEMWORDS = 16

# -- classic opcode fields
C_LD, C_LDX, C_ST, C_STX, C_ALU, C_JMP, C_RET, C_MISC = range(8)
C_W, C_H, C_B = 0x00, 0x08, 0x10
C_IMM, C_ABS, C_IND, C_MEM, C_LEN, C_MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xa0
C_K, C_X, C_A = 0x00, 0x08, 0x10
C_ADD, C_SUB, C_MUL, C_DIV, C_OR, C_AND, C_LSH, C_RSH, C_NEG, C_MOD, C_XOR = (
    0x00, 0x10, 0x20, 0x30, 0x40, 0x50, 0x60, 0x70, 0x80, 0x90, 0xa0)
C_JA, C_JEQ, C_JGT, C_JGE, C_JSET = 0x00, 0x10, 0x20, 0x30, 0x40
C_TAX, C_TXA = 0x00, 0x80

_SIZE = {C_W: (4, SIZE_W), C_H: (2, SIZE_H), C_B: (1, SIZE_B)}
_ALU_OPS = {C_ADD: isa.ADD, C_SUB: isa.SUB, C_MUL: isa.MUL, C_DIV: isa.DIV, C_OR: isa.OR,
            C_AND: isa.AND, C_LSH: isa.LSH, C_RSH: isa.RSH, C_MOD: isa.MOD, C_XOR: isa.XOR}
_JMP_OPS = {C_JEQ: isa.JEQ, C_JGT: isa.JGT, C_JGE: isa.JGE, C_JSET: isa.JSET}
_INVERSE = {isa.JEQ: isa.JNE, isa.JGT: isa.JLE, isa.JGE: isa.JLT}  # JSET has none

#: Every opcode the kernel's bpf_check_classic accepts (ancillary loads aside).
VALID_CODES = frozenset(
    [C_LD | C_W | C_IMM, C_LD | C_W | C_MEM, C_LD | C_W | C_LEN]
    + [C_LD | s | m for s in (C_W, C_H, C_B) for m in (C_ABS, C_IND)]
    + [C_LDX | C_W | C_IMM, C_LDX | C_W | C_MEM, C_LDX | C_W | C_LEN, C_LDX | C_B | C_MSH]
    + [C_ST, C_STX]
    + [C_ALU | op | src for op in _ALU_OPS for src in (C_K, C_X)] + [C_ALU | C_NEG]
    + [C_JMP | C_JA] + [C_JMP | op | src for op in _JMP_OPS for src in (C_K, C_X)]
    + [C_RET | C_K, C_RET | C_A, C_MISC | C_TAX, C_MISC | C_TXA])

# -- eBPF registers of the translation
R_RET, R_CTX, R_PTR = 0, 1, 2
R_DATA, R_END, R_A, R_X = 6, 7, 8, 9
FP = 10
MAX_PACKET_OFF = 0xffff  # the verifier's bound on a packet pointer's constant offset


class CInsn(NamedTuple):
    """One classic BPF instruction (struct sock_filter)."""

    code: int
    jt: int
    jf: int
    k: int


# ---------------------------------------------------------------- tcpdump

def find_tcpdump():
    """The tcpdump executable, or None (also looked for in the sbin
    directories a user's PATH may lack)."""
    found = shutil.which("tcpdump")
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/usr/local/bin"):
        found = shutil.which("tcpdump", path=d)
        if found:
            return found
    return None


def tcpdump_compile(expr, linktype="EN10MB"):
    """``tcpdump -ddd -y LINKTYPE EXPR`` -> list of CInsn. An expression
    tcpdump refuses is a UsageError naming it; no tcpdump is a ProgramError."""
    exe = find_tcpdump()
    if exe is None:
        raise ProgramError(f"filter '{expr}': tcpdump is not installed (it compiles filter "
                           "expressions)", hint="install tcpdump (apt-get install tcpdump; "
                                                "make deps)")
    try:
        r = subprocess.run([exe, "-ddd", "-y", linktype, "--", expr], capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ProgramError(f"filter '{expr}': tcpdump did not answer in 60 s") from None
    except OSError as exc:
        raise ProgramError(f"filter '{expr}': cannot run {exe}: {exc.strerror}") from None
    if r.returncode != 0:
        lines = [ln.strip() for ln in r.stderr.splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"tcpdump exited with status {r.returncode}"
        reason = reason.removeprefix("tcpdump: ")
        raise UsageError(f"filter '{expr}': {reason}",
                         hint="the expression is tcpdump's (man pcap-filter), e.g. "
                              "'tcp port 80 and not src net 10.0.0.0/8'")
    return parse_ddd(r.stdout, source=f"tcpdump -ddd '{expr}'")


def parse_ddd(text, source="classic BPF"):
    """tcpdump -ddd's decimal output -> list of CInsn."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    try:
        count = int(lines[0][0])
        if len(lines[0]) != 1 or count != len(lines) - 1:
            raise ValueError
        out = []
        for fields in lines[1:]:
            if len(fields) != 4:
                raise ValueError
            out.append(CInsn(*(int(f) for f in fields)))
    except (ValueError, IndexError):
        raise ProgramError(f"{source}: unexpected output (not a count, then 'code jt jf k' "
                           "lines)") from None
    return out


def compile_filter(expr):
    """A tcpdump filter expression -> eBPF instructions of an XDP program.
    An error names the expression (libpcap compiles some, 'ip protochain',
    with a loop, which classic BPF for the kernel cannot hold)."""
    try:
        return translate(tcpdump_compile(expr))
    except ProgramError as exc:
        if str(exc).startswith(f"filter '{expr}'"):
            raise
        raise ProgramError(f"filter '{expr}': {exc}") from None


def load_filter(expr, checked=True):
    """A tcpdump filter expression -> Program (XDP_PASS on a match, else XDP_DROP)."""
    from .program import load_insns_program
    return load_insns_program(compile_filter(expr), name="filter", checked=checked)


# ---------------------------------------------------------------- checking

def _fail(pc, insn, reason):
    code, jt, jf, k = insn
    raise ProgramError(f"classic BPF insn {pc} ({code} {jt} {jf} {k}): {reason}")


def successors(prog, pc):
    """Classic instructions control may reach after ``pc``."""
    code, jt, jf, k = prog[pc]
    cls = code & 0x07
    if cls == C_RET:
        return []
    if cls == C_JMP:
        if code & 0xf0 == C_JA:
            return [pc + 1 + k]
        return [pc + 1 + jt, pc + 1 + jf]
    return [pc + 1]


def validate(prog):
    """ProgramError (one line, naming the instruction) unless ``prog`` is a
    classic program the kernel would accept: known opcodes, jumps inside the
    program, a RET last, M[] indices below 16, no division by a constant 0 nor
    shift by 32 or more. Returns the program as CInsn with k as a u32."""
    if not prog:
        raise ProgramError("classic BPF program is empty")
    if len(prog) > MAX_INSNS:
        raise ProgramError(f"classic BPF program too large ({len(prog)} insns, at most "
                           f"{MAX_INSNS})")
    out = []
    for pc, raw in enumerate(prog):
        try:
            code, jt, jf, k = (int(v) for v in raw)
        except (TypeError, ValueError):
            raise ProgramError(f"classic BPF insn {pc}: not four integers "
                               f"(code, jt, jf, k): {raw!r}") from None
        insn = CInsn(code, jt, jf, k)
        if not 0 <= code <= 0xffff or not 0 <= jt <= 0xff or not 0 <= jf <= 0xff:
            _fail(pc, insn, "field out of range (code u16, jt and jf u8)")
        if not -(1 << 31) <= k < 1 << 32:
            _fail(pc, insn, "k out of range (u32)")
        k &= 0xffffffff
        insn = CInsn(code, jt, jf, k)
        if code not in VALID_CODES:
            _fail(pc, insn, f"invalid opcode {code:#06x}")
        cls, mode = code & 0x07, code & 0xe0
        if cls in (C_LD, C_LDX) and mode in (C_ABS, C_MSH) and k >= 1 << 31:
            _fail(pc, insn, "negative packet offset (the kernel's SKF_AD_OFF, SKF_NET_OFF "
                            "and SKF_LL_OFF extensions are not supported)")
        if (cls in (C_ST, C_STX) or cls in (C_LD, C_LDX) and mode == C_MEM) and k >= MEMWORDS:
            _fail(pc, insn, f"scratch memory index M[{k}] out of range (0..{MEMWORDS - 1})")
        if cls == C_ALU and code & C_X == C_K:
            op = code & 0xf0
            if op in (C_DIV, C_MOD) and k == 0:
                _fail(pc, insn, "division by a constant 0")
            if op in (C_LSH, C_RSH) and k >= 32:
                _fail(pc, insn, f"shift by {k} (at most 31)")
        if cls == C_JMP:
            if code & 0xf0 == C_JA and k >= 1 << 31:  # k is unsigned: no way back
                _fail(pc, insn, f"jump back by {(1 << 32) - k} insns: classic BPF runs "
                                "forward only (a loop; the kernel refuses it too)")
            targets = [pc + 1 + k] if code & 0xf0 == C_JA else [pc + 1 + jt, pc + 1 + jf]
            for t in targets:
                if t >= len(prog):
                    _fail(pc, insn, f"jump to insn {t}, past the end ({len(prog)} insns)")
        out.append(insn)
    if out[-1].code & 0x07 != C_RET:
        _fail(len(out) - 1, out[-1], "the last instruction is not a RET")
    return out


def _reachable(prog):
    seen, todo = set(), [0]
    while todo:
        pc = todo.pop()
        if pc in seen:
            continue
        seen.add(pc)
        todo.extend(successors(prog, pc))
    return seen


# ---------------------------------------------------------------- translation

def _mem_off(i):
    return -4 * (MEMWORDS - i)


class _Emitter:
    def __init__(self):
        self.out = []
        self.fixups = []   # (eBPF index, classic target pc, or "ret0")

    def add(self, opcode, dst=0, src=0, off=0, imm=0):
        self.out.append(make(opcode, dst, src, off, imm))

    def jump(self, opcode, target, dst=0, src=0, imm=0):
        """A jump whose offset is patched later: ``target`` a classic pc or "ret0"."""
        self.fixups.append((len(self.out), target))
        self.add(opcode, dst, src, 0, imm)

    def packet_load(self, dst, size, k, indirect):
        """dst = the big-endian ``size`` bytes at k (or X + k), or return 0
        when they are not all inside the packet."""
        n, sz = _SIZE[size]
        if indirect:
            self.add(ALU | isa.MOV | SRC_X, R_PTR, R_X)          # r2 = (u32) X
            if k:
                self.add(ALU | isa.ADD | SRC_K, R_PTR, imm=k)    # r2 = (u32) (X + k)
            self.add(ALU64 | isa.ADD | SRC_X, R_PTR, R_DATA)     # r2 = data + off
            self.add(ALU64 | isa.ADD | SRC_K, R_PTR, imm=n)
        elif k + n <= MAX_PACKET_OFF:
            self.add(ALU64 | isa.MOV | SRC_X, R_PTR, R_DATA)
            self.add(ALU64 | isa.ADD | SRC_K, R_PTR, imm=k + n)
        else:  # beyond the verifier's constant offsets: as a variable one
            self.add(ALU | isa.MOV | SRC_K, R_PTR, imm=k)
            self.add(ALU64 | isa.ADD | SRC_X, R_PTR, R_DATA)
            self.add(ALU64 | isa.ADD | SRC_K, R_PTR, imm=n)
        self.jump(JMP | isa.JGT | SRC_X, "ret0", R_PTR, R_END)  # past data_end: return 0
        self.add(LDX | MODE_MEM | sz, dst, R_PTR, -n)
        if n > 1:
            self.add(ALU | isa.END | SRC_X, dst, imm=8 * n)      # be16 / be32: host order

    def length(self, dst):
        self.add(ALU64 | isa.MOV | SRC_X, dst, R_END)
        self.add(ALU64 | isa.SUB | SRC_X, dst, R_DATA)           # data_end - data


def translate(cbpf):
    """Classic BPF instructions (CInsn or ``(code, jt, jf, k)`` tuples) -> eBPF
    instructions of an XDP program: XDP_PASS where the filter returns non-zero,
    XDP_DROP where it returns 0. ProgramError for an invalid classic program."""
    prog = validate(list(cbpf))
    live = _reachable(prog)
    uses_mem = any(prog[pc].code & 0x07 in (C_ST, C_STX) or
                   prog[pc].code & 0x07 in (C_LD, C_LDX) and prog[pc].code & 0xe0 == C_MEM
                   for pc in live)
    e = _Emitter()
    e.add(LDX | MODE_MEM | SIZE_W, R_DATA, R_CTX, 0)    # data
    e.add(LDX | MODE_MEM | SIZE_W, R_END, R_CTX, 4)     # data_end
    e.add(ALU | isa.MOV | SRC_K, R_A, imm=0)
    e.add(ALU | isa.MOV | SRC_K, R_X, imm=0)
    if uses_mem:  # M[] must be written before it is read: all 16 words start at 0
        for off in range(_mem_off(0), 0, 8):
            e.add(ST | MODE_MEM | SIZE_DW, FP, off=off, imm=0)
    start = {}
    ret0 = None  # where "return 0" is: a reachable `ret #0` of the program, or a tail
    for pc, insn in enumerate(prog):
        if pc not in live:
            continue
        start[pc] = len(e.out)
        code, jt, jf, k = insn
        cls, size, mode = code & 0x07, code & 0x18, code & 0xe0
        if cls in (C_LD, C_LDX):
            dst = R_A if cls == C_LD else R_X
            if mode == C_IMM:
                e.add(ALU | isa.MOV | SRC_K, dst, imm=k)
            elif mode == C_MEM:
                e.add(LDX | MODE_MEM | SIZE_W, dst, FP, _mem_off(k))
            elif mode == C_LEN:
                e.length(dst)
            elif mode == C_ABS:
                e.packet_load(R_A, size, k, indirect=False)
            elif mode == C_IND:
                e.packet_load(R_A, size, k, indirect=True)
            else:  # C_MSH: X = 4 * (P[k] & 0xf)
                e.packet_load(R_X, C_B, k, indirect=False)
                e.add(ALU | isa.AND | SRC_K, R_X, imm=0xf)
                e.add(ALU | isa.LSH | SRC_K, R_X, imm=2)
        elif cls in (C_ST, C_STX):
            e.add(STX | MODE_MEM | SIZE_W, FP, R_A if cls == C_ST else R_X, _mem_off(k))
        elif cls == C_ALU:
            op = code & 0xf0
            if op == C_NEG:
                e.add(ALU | isa.NEG, R_A)
            elif code & C_X:
                if op in (C_DIV, C_MOD):
                    e.jump(JMP32 | isa.JEQ | SRC_K, "ret0", R_X, imm=0)
                e.add(ALU | _ALU_OPS[op] | SRC_X, R_A, R_X)
            else:
                e.add(ALU | _ALU_OPS[op] | SRC_K, R_A, imm=k)
        elif cls == C_JMP:
            op = code & 0xf0
            if op == C_JA:
                if k:
                    e.jump(JMP | isa.JA, pc + 1 + k)
                continue
            eop = _JMP_OPS[op]
            src, regs = (SRC_X, dict(src=R_X)) if code & C_X else (SRC_K, dict(imm=k))
            t, f = pc + 1 + jt, pc + 1 + jf
            if jt == jf:
                if jt:
                    e.jump(JMP | isa.JA, t)
            elif jf == 0:
                e.jump(JMP32 | eop | src, t, R_A, **regs)
            elif jt == 0 and eop in _INVERSE:
                e.jump(JMP32 | _INVERSE[eop] | src, f, R_A, **regs)
            else:
                e.jump(JMP32 | eop | src, t, R_A, **regs)
                e.jump(JMP | isa.JA, f)
        elif cls == C_RET:
            if code & 0x18 == C_A:
                e.add(ALU | isa.MOV | SRC_K, R_RET, imm=XDP_PASS)
                e.add(JMP32 | isa.JNE | SRC_K, R_A, off=1, imm=0)
                e.add(ALU | isa.MOV | SRC_K, R_RET, imm=XDP_DROP)
            else:
                if k == 0 and ret0 is None:
                    ret0 = pc
                e.add(ALU | isa.MOV | SRC_K, R_RET, imm=XDP_PASS if k else XDP_DROP)
            e.add(JMP | isa.EXIT)
        else:  # C_MISC
            if code & 0xf8 == C_TAX:
                e.add(ALU | isa.MOV | SRC_X, R_X, R_A)
            else:
                e.add(ALU | isa.MOV | SRC_X, R_A, R_X)
    if ret0 is None and any(t == "ret0" for _, t in e.fixups):
        ret0 = "tail"
        start["tail"] = len(e.out)
        e.add(ALU | isa.MOV | SRC_K, R_RET, imm=XDP_DROP)
        e.add(JMP | isa.EXIT)
    out = e.out
    for at, target in e.fixups:
        dest = start[ret0 if target == "ret0" else target]
        rel = dest - at - 1
        if not -(1 << 15) <= rel < 1 << 15:
            raise ProgramError(f"classic BPF program too large to translate: a jump of {rel} "
                               "eBPF instructions (at most 32767)")
        i = out[at]
        out[at] = make(i.opcode, i.dst, i.src, rel, i.imm)
    return out
