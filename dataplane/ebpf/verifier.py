"""The verifier: what must hold before an eBPF program runs (kernel/bpf/verifier.c).

Two passes, as Documentation/bpf/verifier.rst describes the kernel's:

1. structural (``check_structure``): known opcodes with valid fields, registers
   0-10 and R10 never written, LDDW pairs intact, jumps inside their function
   and never into an LDDW's second slot, no fall-through past a function's
   end, no unreachable instruction, no recursion, call depth at most 8,
   known helper ids;
2. types and ranges (``Verifier.run``): every path is simulated over abstract
   register types (the kernel's NOT_INIT, SCALAR_VALUE, PTR_TO_CTX,
   PTR_TO_PACKET, PTR_TO_PACKET_END, PTR_TO_STACK, PTR_TO_MAP_VALUE(_OR_NULL),
   CONST_PTR_TO_MAP), joined where paths meet and widened in loops. No read of
   an uninitialised register, context loads only of xdp_md's fields, map
   values within their size and NULL-checked, stack within 512 bytes, helper
   arguments of the prototype's types, R0 a scalar at exit. A stack byte read
   before it is written is allowed, as the kernel allows a privileged loader
   (``allow_uninit_stack``: a key struct's padding, passed to a map helper, is
   the common case), and reads as zero here: ``Analysis.zero_slots``.

Where the kernel would reject an access it cannot prove, this verifier lets
the program run with a run-time check instead, when the memory is known
(packet bytes, the stack frame): the JIT tests the address and a failing
access turns the packet into XDP_ABORTED. ``Analysis.checks`` lists them; a
packet access proven by a comparison with data_end has no check.
Loops are allowed: the JIT bounds them with an instruction budget.

A rejection is a ``VerifierError`` naming the instruction index, its
disassembly and the reason, like the kernel's log.
"""

from ..errors import ProgramError
from . import isa
from .isa import (ALU, ALU64, CALL, CALL_LOCAL, END, EXIT, JA, JMP, JMP32, LD, LDX, MODE_ATOMIC,
                  MODE_MEM, MODE_MEMSX, ST, STX)

MAX_INSNS = 1_000_000
U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
MAX_PACKET_OFF = 0xffff
#: States kept apart at one instruction (one call context) before they are joined.
PATHS_PER_INSN = 16
#: Changes of a joined state before its scalars are widened (loops converge).
WIDEN_AFTER = 8
#: States the type pass may process before it gives up (the kernel's 1M insns).
MAX_STATES = 200_000
#: Strict, paths are never joined: the kernel's own limit of instructions processed.
MAX_STRICT_INSNS = 1_000_000

#: struct xdp_md: offset -> field (all u32; data, data_end and data_meta become pointers)
XDP_MD_FIELDS = {0: "data", 4: "data_end", 8: "data_meta", 12: "ingress_ifindex",
                 16: "rx_queue_index", 20: "egress_ifindex"}

# Helper prototypes: argument kinds R1.. and the return kind.
# map: CONST_PTR_TO_MAP; key/value: pointer to key_size/value_size readable bytes
# of the map in the first argument; ctx: the context; mem+size: a pointer and the
# next argument its size (constant); any: an initialised scalar.
HELPERS = {
    1: ("bpf_map_lookup_elem", ("map", "key"), "value_or_null"),
    2: ("bpf_map_update_elem", ("map", "key", "value", "any"), "scalar"),
    3: ("bpf_map_delete_elem", ("map", "key"), "scalar"),
    5: ("bpf_ktime_get_ns", (), "scalar"),
    6: ("bpf_trace_printk", ("mem", "size", "any?", "any?", "any?"), "scalar"),
    7: ("bpf_get_prandom_u32", (), "scalar"),
    8: ("bpf_get_smp_processor_id", (), "scalar"),
    12: ("bpf_tail_call", ("ctx", "map", "any"), "scalar"),
    23: ("bpf_redirect", ("any", "any"), "scalar"),
    28: ("bpf_csum_diff", ("mem?", "size", "mem?", "size", "any"), "scalar"),
    44: ("bpf_xdp_adjust_head", ("ctx", "any"), "scalar"),
    51: ("bpf_redirect_map", ("map", "any", "any"), "scalar"),
    54: ("bpf_xdp_adjust_meta", ("ctx", "any"), "scalar"),
    65: ("bpf_xdp_adjust_tail", ("ctx", "any"), "scalar"),
    # wvalue: a pointer to value_size bytes of the map's the helper writes
    # (ARG_PTR_TO_MAP_VALUE | MEM_UNINIT)
    87: ("bpf_map_push_elem", ("map", "value", "any"), "scalar"),
    88: ("bpf_map_pop_elem", ("map", "wvalue"), "scalar"),
    89: ("bpf_map_peek_elem", ("map", "wvalue"), "scalar"),
    130: ("bpf_ringbuf_output", ("map", "mem", "size", "any"), "scalar"),
    131: ("bpf_ringbuf_reserve", ("map", "size", "any"), "reservation_or_null"),
    132: ("bpf_ringbuf_submit", ("reservation", "any"), "void"),
    133: ("bpf_ringbuf_discard", ("reservation", "any"), "void"),
    160: ("bpf_ktime_get_coarse_ns", (), "scalar"),
    # func: a callback (lddw of a function's address); stack?: a pointer to the
    # caller's stack, or NULL (ARG_PTR_TO_STACK_OR_NULL)
    164: ("bpf_for_each_map_elem", ("map", "func", "stack?", "any"), "scalar"),
    181: ("bpf_loop", ("any", "func", "stack?", "any"), "scalar"),
    # wmem: a pointer to size bytes the helper writes (ARG_PTR_TO_UNINIT_MEM)
    188: ("bpf_xdp_get_buff_len", ("ctx",), "scalar"),
    189: ("bpf_xdp_load_bytes", ("ctx", "any", "wmem", "size"), "scalar"),
    190: ("bpf_xdp_store_bytes", ("ctx", "any", "mem", "size"), "scalar"),
}
#: Map types a helper's map argument must have, or must not (the kernel's
#: check_map_func_compatibility): 3 PROG_ARRAY, 14/25 DEVMAP(_HASH), 27 RINGBUF,
#: 22/23 QUEUE / STACK (which take no other helper).
HELPER_MAP_TYPES = {12: {3}, 51: {14, 25}, 130: {27}, 131: {27},
                    87: {22, 23}, 88: {22, 23}, 89: {22, 23},
                    164: {1, 2, 5, 6, 9, 10}}  # (hash and array maps, per-CPU or not)
#: Helpers that release a ring buffer reservation (the kernel's release funcs).
RELEASES = frozenset({132, 133})
HELPER_REFUSED_MAP_TYPES = {1: {3, 22, 23, 27}, 2: {3, 12, 13, 14, 22, 23, 25, 27},
                            3: {3, 12, 13, 14, 22, 23, 25, 27}}
#: Helpers whose memory arguments may point into the packet (the kernel's
#: ``pkt_access`` in their bpf_func_proto); others refuse a packet pointer.
HELPER_PKT_ACCESS = frozenset({1, 2, 3, 28, 87})
#: Helpers whose size argument must be a known constant here: what the call
#: reads is taken at load time (bpf_trace_printk's format, the record size of
#: bpf_ringbuf_output). Elsewhere a size known by its bounds passes, checked
#: at its largest, as in the kernel.
CONSTANT_SIZES = frozenset({6, 130})
#: The kernel's BPF_MAX_VAR_SIZ: a size bound at or above it is "unbounded".
MAX_VAR_SIZE = 1 << 29
#: Helpers that run a callback (bpf_for_each_map_elem, bpf_loop): Verifier.loop_call.
CALLBACK_HELPERS = frozenset({isa.BPF_FUNC_for_each_map_elem, isa.BPF_FUNC_loop})
#: Helpers after which every packet pointer is stale (clear_all_pkt_pointers).
MOVES_PACKET = frozenset({44, 54, 65})


#: A compare with its operands swapped (k OP r is r FLIPPED k).
_FLIPPED = {isa.JEQ: isa.JEQ, isa.JNE: isa.JNE, isa.JGT: isa.JLT, isa.JGE: isa.JLE,
            isa.JLT: isa.JGT, isa.JLE: isa.JGE, isa.JSGT: isa.JSLT, isa.JSGE: isa.JSLE,
            isa.JSLT: isa.JSGT, isa.JSLE: isa.JSGE}
#: Signed compares, and the unsigned one each is on numbers that are not negative.
_SIGNED = {isa.JSGT: isa.JGT, isa.JSGE: isa.JGE, isa.JSLT: isa.JLT, isa.JSLE: isa.JLE}


class VerifierError(ProgramError):
    """A program the verifier rejects: ``insn`` is the instruction index;
    ``too_large``: it gave up at its limit of states (no type was wrong)."""

    too_large = False

    def __init__(self, name, insns, pc, reason):
        self.insn, self.reason = pc, reason
        text = describe(insns, pc) if pc is not None and 0 <= pc < len(insns) else ""
        where = f"insn {pc}: {text}: " if text else (f"insn {pc}: " if pc is not None else "")
        super().__init__(f"{name}: {where}{reason}")


def describe(insns, pc):
    """The disassembly of one instruction, for messages."""
    try:
        from .disasm import format_insn
        return format_insn(insns, pc)
    except Exception:  # a message must not fail on a bad instruction
        i = insns[pc]
        return f"opcode {i.opcode:#04x} dst {i.dst} src {i.src} off {i.off} imm {i.imm}"


# ---------------------------------------------------------------- structure

_ALU_OPS = set(isa.ALU_NAMES)
_LOAD_SIZES = (isa.SIZE_B, isa.SIZE_H, isa.SIZE_W, isa.SIZE_DW)


def _check_insn(insns, pc, insn, helpers, callx=False):
    """The reason slot ``pc`` is malformed, or None."""
    c, op = insn.cls, insn.op
    if insn.dst > 10 or insn.src > 10:
        return f"invalid register R{max(insn.dst, insn.src)}"
    if c in (ALU, ALU64):
        if op not in _ALU_OPS:
            return f"invalid ALU operation {op:#x}"
        if op == END:
            if insn.imm not in (16, 32, 64):
                return f"invalid byte swap width {insn.imm}"
            if c == ALU64 and insn.uses_reg_src:
                return "invalid BSWAP encoding"
        elif op == isa.MOV and insn.off:
            if not insn.uses_reg_src or insn.off not in ((8, 16, 32) if c == ALU64 else (8, 16)):
                return f"invalid MOVSX offset {insn.off}"
        elif op in (isa.DIV, isa.MOD):
            if insn.off not in (0, 1):
                return f"invalid division offset {insn.off}"
        elif insn.off:
            return "reserved offset field used"
        if op == isa.NEG and insn.uses_reg_src:
            return "invalid NEG encoding"
        if insn.dst == 10:
            return "frame pointer is read only"
        return None
    if c == LD:
        if not insn.is_lddw:
            return "legacy packet loads (LD_ABS/LD_IND) are not allowed in XDP programs"
        if pc + 1 >= len(insns) or not insns[pc + 1].is_lddw_tail:
            return "invalid BPF_LD_IMM insn: missing its second half"
        t = insns[pc + 1]
        if t.opcode or t.dst or t.src or t.off:
            return "invalid BPF_LD_IMM insn: bad second half"
        if insn.src > isa.PSEUDO_MAP_IDX_VALUE or insn.src == isa.PSEUDO_BTF_ID:
            return f"unsupported lddw source {insn.src}"
        if insn.src == isa.PSEUDO_FUNC:
            tgt = pc + 1 + insn.imm
            if not 0 <= tgt < len(insns) or insns[tgt].is_lddw_tail:
                return f"function address of insn {tgt}, out of range"
        if insn.dst == 10:
            return "frame pointer is read only"
        return None
    if c in (LDX, ST, STX):
        if (insn.opcode & 0x18) not in _LOAD_SIZES:
            return "invalid size"
        mode = insn.mode
        if c == LDX:
            if mode not in (MODE_MEM, MODE_MEMSX):
                return f"invalid load mode {mode:#x}"
            if mode == MODE_MEMSX and insn.size == 8:
                return "invalid sign-extending load of 8 bytes"
            if insn.dst == 10:
                return "frame pointer is read only"
        elif c == ST and mode != MODE_MEM:
            return f"invalid store mode {mode:#x}"
        elif c == STX and mode not in (MODE_MEM, MODE_ATOMIC):
            return f"invalid store mode {mode:#x}"
        if c == STX and mode == MODE_ATOMIC:
            if insn.size not in (4, 8):
                return "atomic operations need 4 or 8 bytes"
            if insn.imm not in isa.ATOMIC_OPS:
                return f"invalid atomic operation {insn.imm:#x}"
        return None
    if c in (JMP, JMP32):
        if op not in isa.JMP_NAMES:
            return f"invalid jump operation {op:#x}"
        if op == CALL:
            if c == JMP32:
                return "invalid call in JMP32"
            if insn.uses_reg_src:  # callx: the helper's id is in the register
                return None if callx else "indirect calls (callx) are not allowed"
            if insn.src == CALL_LOCAL:
                tgt = pc + 1 + insn.imm
                if not 0 <= tgt < len(insns) or insns[tgt].is_lddw_tail:
                    return f"call to insn {tgt}, out of range"
            elif insn.src == isa.CALL_HELPER:
                if insn.imm not in helpers:
                    from .disasm import HELPER_NAMES
                    name = HELPER_NAMES.get(insn.imm)
                    return (f"helper {insn.imm} ({name}) is not supported here" if name
                            else f"unknown helper id {insn.imm}")
            else:
                return "kfunc calls are not supported"
            return None
        if op == EXIT:
            return None
        if op == JA and c == JMP32:
            tgt = pc + 1 + insn.imm
        else:
            tgt = pc + 1 + insn.off
        if not 0 <= tgt < len(insns):
            return f"jump out of range from insn {pc} to {tgt}"
        if insns[tgt].is_lddw_tail:
            return f"jump into the middle of an lddw at insn {tgt}"
        return None
    return f"invalid opcode {insn.opcode:#04x}"


def successors(insns, pc):
    """Instructions control may reach next inside the function (not the callee)."""
    insn = insns[pc]
    c, op = insn.cls, insn.op
    if insn.is_lddw:
        return [pc + 2]
    if c in (JMP, JMP32):
        if op == EXIT:
            return []
        if op == CALL:
            return [pc + 1]
        if op == JA:
            return [pc + 1 + (insn.imm if c == JMP32 else insn.off)]
        return [pc + 1, pc + 1 + insn.off]
    return [pc + 1]


def prune_points(insns, funcs):
    """Where paths are compared (the kernel's prune points): function entries and
    the instructions a jump leads to (its target and, for a conditional one, the
    next). A path between two of them meets no other path: comparing it at every
    instruction cost a 3,700-instruction program 539,000 state comparisons."""
    points = set(funcs)
    for pc, insn in enumerate(insns):
        if insn.cls in (JMP, JMP32) and insn.op not in (CALL, EXIT) \
                and not insn.is_lddw_tail:
            points.update(successors(insns, pc))
    return points


def check_structure(insns, name="prog", helpers=HELPERS, raw=False):
    """Pass 1; returns {function entry: end} (ebpf/jit.functions). ``raw``: a
    bare ISA run's checks (conformance): indirect helper calls (callx) and
    unreachable instructions are allowed, as the ISA has them."""
    from .jit import functions

    if not insns:
        raise VerifierError(name, insns, None, "empty program")
    if len(insns) > MAX_INSNS:
        raise VerifierError(name, insns, None, f"program too large ({len(insns)} insns)")
    for pc, insn in enumerate(insns):
        if insn.is_lddw_tail:
            if pc == 0 or not insns[pc - 1].is_lddw:
                raise VerifierError(name, insns, pc, "invalid BPF_LD_IMM insn")
            continue
        reason = _check_insn(insns, pc, insn, helpers, callx=raw)
        if reason:
            raise VerifierError(name, insns, pc, reason)
    funcs = functions(insns)
    calls = {}
    for start, end in funcs.items():
        seen, todo = set(), [start]
        calls[start] = set()
        while todo:
            pc = todo.pop()
            if pc in seen:
                continue
            seen.add(pc)
            insn = insns[pc]
            if insn.names_function:  # (a callback's address: its caller's too)
                calls[start].add((pc, pc + 1 + insn.imm))  # (call insn, callee)
            for s in successors(insns, pc):
                if not start <= s < end:
                    what = "falls off the end of the function" if s == end else \
                        f"jumps out of its function to insn {s}"
                    raise VerifierError(name, insns, pc, f"control {what}")
                todo.append(s)
        for pc in range(start, end):
            if pc not in seen and not insns[pc].is_lddw_tail and not raw:
                raise VerifierError(name, insns, pc, "unreachable insn")

    # A rejection names the call instruction that recurses or goes one frame
    # too deep (as the kernel's log does), not the callee's first instruction.
    # ``ok_at``: the deepest chain length at which a function's calls were all
    # explored without a rejection; from there or shallower it is not explored
    # again (the chains of a layered call graph are exponentially many: with
    # ten functions per layer, seven layers took 4 s, and each more ten times).
    ok_at = {}

    def depth(f, chain, at):
        if f in chain:
            raise VerifierError(name, insns, at, "recursive call")
        if len(chain) >= isa.MAX_CALL_DEPTH:
            raise VerifierError(name, insns, at, f"call depth over {isa.MAX_CALL_DEPTH}")
        if ok_at.get(f, -1) >= len(chain):
            return
        for pc, g in sorted(calls[f]):
            depth(g, chain + (f,), pc)
        ok_at[f] = len(chain)
    depth(0, (), None)
    return funcs


# ---------------------------------------------------------------- liveness

def _uses_defs(insn, helpers):
    """(registers read, registers written) by one instruction, as bit masks."""
    c, op = insn.cls, insn.op
    bit = lambda r: 1 << r  # noqa: E731
    src = bit(insn.src) if insn.uses_reg_src else 0
    if c in (ALU, ALU64):
        if op == isa.MOV:
            return src, bit(insn.dst)
        return bit(insn.dst) | src, bit(insn.dst)
    if c == LD:
        return 0, bit(insn.dst)
    if c == LDX:
        return bit(insn.src), bit(insn.dst)
    if c == ST:
        return bit(insn.dst), 0
    if c == STX:
        uses, defs = bit(insn.dst) | bit(insn.src), 0
        if insn.mode == MODE_ATOMIC:
            if insn.imm == isa.ATOMIC_CMPXCHG:
                uses, defs = uses | 1, 1
            elif insn.imm & isa.ATOMIC_FETCH:
                defs = bit(insn.src)
        return uses, defs
    if op == EXIT:
        return 1, 0
    if op == CALL:
        if insn.src == CALL_LOCAL:
            return 0b111110, 0b111111
        nargs = len(helpers[insn.imm][1]) if insn.imm in helpers else 5
        return sum(1 << r for r in range(1, nargs + 1)), 0b111111
    if op == JA:
        return 0, 0
    return bit(insn.dst) | src, 0


def liveness(insns, funcs, helpers=HELPERS):
    """{pc: mask of registers possibly read before written from pc on} in each
    function (a pruned path differs from an explored one only in dead registers)."""
    live = [0x7ff] * len(insns)
    for start, end in funcs.items():
        pcs = [pc for pc in range(start, end) if not insns[pc].is_lddw_tail]
        ud = {pc: _uses_defs(insns[pc], helpers) for pc in pcs}
        succ = {pc: [s for s in successors(insns, pc) if start <= s < end] for pc in pcs}
        cur = {pc: 0 for pc in pcs}
        changed = True
        while changed:
            changed = False
            for pc in reversed(pcs):
                out = 0
                for s_ in succ[pc]:
                    out |= cur[s_]
                uses, defs = ud[pc]
                v = uses | (out & ~defs) | (1 << 10)
                if v != cur[pc]:
                    cur[pc], changed = v, True
        for pc in pcs:
            live[pc] = cur[pc]
    return live


# ---------------------------------------------------------------- types

# A register's type is a tuple; its first item the kind:
NOT_INIT = ("N",)
UNKNOWN = ("S", 0, U64)      # ("S", umin, umax): a scalar with unsigned bounds
CTX = ("C", 0)               # ("C", off): PTR_TO_CTX
PKT_END = ("E",)             # PTR_TO_PACKET_END
# ("P", base, off): PTR_TO_PACKET: ``base`` names the variable part (0: data
# itself, "meta": data_meta, other: a pointer moved by an unknown amount)
# ("K", depth, off): PTR_TO_STACK of frame ``depth`` (off < 0), off None: variable,
#   and ("K", depth, None, lo, hi): variable within lo..hi (a bounded index)
# ("V", map, lo, hi, id, nullable): PTR_TO_MAP_VALUE(_OR_NULL), offsets lo..hi
# ("M", inner, 0, 0, id, nullable): an inner map found in a map of maps (the
#   kernel's CONST_PTR_TO_MAP from a lookup), ``inner`` its index in Verifier.maps
# ("D", map): CONST_PTR_TO_MAP
# ("F", entry): PTR_TO_FUNC, the address of the function at insn ``entry`` (a callback)
# ("X",): a value no instruction may use but to move it (a merge of types, or a
# packet pointer a helper made stale)
MIXED = ("X",)


def scalar(lo=0, hi=U64):
    return ("S", lo, hi)


def const(v):
    v &= U64
    return ("S", v, v)


def is_const(t):
    return t[0] == "S" and t[1] == t[2]


def _join(a, b, pc, reg):
    """The least type covering a and b (a loop head or a merge)."""
    if a == b:
        return a
    ka, kb = a[0], b[0]
    if ka == "N" or kb == "N":
        return NOT_INIT
    if ka == kb == "S":
        return ("S", min(a[1], b[1]), max(a[2], b[2]))
    if ka == kb == "P" and a[1] != "meta" and b[1] != "meta":
        return ("P", ("join", pc, reg), 0)  # an unknown offset: accesses checked at run time
    if ka == kb == "K" and a[1] == b[1]:
        sa, sb = _stack_span(a), _stack_span(b)
        if sa is None or sb is None:
            return ("K", a[1], None)
        return ("K", a[1], None, min(sa[0], sb[0]), max(sa[1], sb[1]))
    for v, o in ((a, b), (b, a)):  # a pointer on one path, NULL on the other
        if v[0] in "VM" and o == ("S", 0, 0):
            return v[:5] + (True,)
        if v[0] in "PZ" and o == ("S", 0, 0):
            return v if v[0] == "Z" else ("Z", v)
    if ka == "Z" or kb == "Z":
        pa, pb = (a[1] if ka == "Z" else a), (b[1] if kb == "Z" else b)
        inner = _join(pa, pb, pc, reg)
        return ("Z", inner) if inner[0] == "P" else MIXED
    if ka == kb and ka in "VM" and a[1] == b[1]:
        return (ka, a[1], min(a[2], b[2]), max(a[3], b[3]), a[4] if a[4] == b[4]
                else ("join", pc, reg), a[5] or b[5])
    return MIXED


def _covers_type(old, new, old_st, new_st):
    """True when anything safe for ``old`` is safe for ``new``."""
    if old == new:
        if old[0] == "P":  # the same pointer: proven at least as far on the new path
            return new_st.range_of(old[1]) >= old_st.range_of(old[1])
        return True
    if old[0] in "NX":  # never used on the old path (it would have been rejected)
        return True
    if old[0] == "S" and new[0] == "S":
        return old[1] <= new[1] and new[2] <= old[2]
    return False


def covers(old, new, live=0x7ff):
    """True when state ``new`` needs no exploring: ``old`` (explored, or being
    explored) is at least as general (the kernel's states_equal / regsafe).
    Registers outside the ``live`` mask are never read again: ignored."""
    if old.frames != new.frames or old.refs != new.refs:
        return False
    ro, rn = old.regs, new.regs
    if ro != rn:  # (most comparisons fail here, on one register)
        r = 0
        for a, b in zip(ro, rn):
            if a != b and live >> r & 1:
                k = a[0]
                if k == "S":  # _covers_type's cases inline: the hottest loop of a load
                    if b[0] != "S" or b[1] < a[1] or a[2] < b[2]:
                        return False
                elif k != "N" and k != "X":
                    return False
            r += 1
    if old.ranges != new.ranges:  # the same pointer: proven at least as far now
        for r in range(len(ro)):
            a = ro[r]
            if a[0] == "P" and a == rn[r] and live >> r & 1 and \
                    new.range_of(a[1]) < old.range_of(a[1]):
                return False
        # data (base 0) loaded again from a context still held takes the range
        # proven for it, whether or not a register holds data now; a caller's
        # saved pointer takes its base's after the return
        saved = [t for _, regs in old.frames for t in regs]
        bases = {t[1] for t in saved if t[0] == "P"}
        if any(t[0] == "C" for t in saved) or \
                any(t[0] == "C" and live >> r & 1 for r, t in enumerate(ro)) or \
                any(v[0] == "spill" and v[1][0] == "C" for s in old.stacks for v in s.values()):
            bases.add(0)
        if any(new.range_of(b) < old.range_of(b) for b in bases):
            return False
        # a branch the old path knew could not be taken (data_end below base +
        # n) may be taken on the new one
        for k, n in old.ranges:
            if _is_short(k) and (new.short_of(k[1]) is None or new.short_of(k[1]) > n):
                return False
    for so, sn in zip(old.stacks, new.stacks):
        for off, info in so.items():
            other = sn.get(off)
            if other is None:
                return False
            if info == other:
                continue
            full = other[0] in ("spill", "init") or other == ("bytes", 0xff)
            if info[0] == "spill":
                if other[0] != "spill" or not _covers_type(info[1], other[1], old, new):
                    return False
            elif info[0] == "init":
                if not full:
                    return False
            elif not full and info[1] & ~other[1]:
                return False
    return True


def _max_and(hi, mask):
    """The largest ``x & mask`` for 0 <= x <= hi (``len & ~7`` of a length up to
    63 is at most 56: a range keeps what the kernel's known bits would give):
    ``hi`` itself, or ``hi`` with one of its bits cleared and every lower bit set."""
    if mask & (mask + 1) == 0:  # 0xff, 0xffffffff...: the low bits of hi
        return min(hi, mask)
    best = hi & mask
    for i in range(hi.bit_length()):
        if hi >> i & 1:
            best = max(best, ((hi & ~((2 << i) - 1)) | ((1 << i) - 1)) & mask)
    return best


def _name(t):
    return {"N": "uninitialised", "S": "scalar", "C": "ctx", "E": "pkt_end", "P": "pkt",
            "K": "fp", "V": "map_value", "D": "map_ptr", "X": "mixed", "M": "map_ptr",
            "Z": "pkt_or_null", "F": "func"}[t[0]] + \
        ("_or_null" if t[0] in "VM" and t[5] else "")


#: Bounds a growing scalar is widened to, the smallest that holds it (widening
#: with thresholds: a flag that was 1 and is now 0 or 1 stays [0, 1], which a
#: callback's return must be; a loop still converges, in at most five steps).
WIDEN_STEPS = (1, 0xff, 0xffff, U32)


def _widen(t):
    if t[0] == "S":
        for hi in WIDEN_STEPS:
            if t[2] <= hi:
                return scalar(0, hi)
        return UNKNOWN
    if t[0] == "K" and len(t) == 5:  # a stack pointer a loop moves: anywhere
        return t[:3]
    return t


class State:
    """Registers of the current frame, every frame's stack, packet ranges."""

    __slots__ = ("regs", "stacks", "ranges", "frames", "refs", "path")

    def __init__(self, regs, stacks, ranges, frames, refs):
        self.path = None        # strict: the states of the path to here (_no_repeat)
        self.regs = regs        # tuple of 11 types
        self.stacks = stacks    # tuple per frame of dict slot byte offset (-512..-1) -> info
        # frozenset of (base, n): bytes [0, n) from base proven; and of
        # (("short", base), n): data_end is below base + n (a failed check)
        self.ranges = ranges
        self.frames = frames    # tuple of (return pc, saved R6-R9) of the callers
        # frozenset of the identities of ring buffer reservations not yet
        # submitted or discarded (the kernel's acquired references)
        self.refs = refs
        # (strict only, set by Verifier.run: the states the path was in at
        # its prune points, a linked list)

    def with_reg(self, r, t):
        """This state with register ``r`` holding ``t``."""
        regs = list(self.regs)
        regs[r] = t
        return State(tuple(regs), self.stacks, self.ranges, self.frames, self.refs)

    def short_of(self, base):
        """n when data_end is known to be below base + n, else None."""
        for b, n in self.ranges:
            if b == ("short", base):
                return n
        return None

    def range_of(self, base):
        for b, n in self.ranges:
            if b == base:
                return n
        return 0


def _map_types(st, f, ranges):
    """``st`` with every register, spilled value and caller's saved register
    ``t`` as ``f(t)``, and ``ranges``."""
    regs = tuple(f(t) for t in st.regs)
    stacks = tuple({o: ("spill", f(v[1])) if v[0] == "spill" else v for o, v in s.items()}
                   for s in st.stacks)
    frames = tuple((ret, tuple(f(t) for t in saved)) for ret, saved in st.frames)
    return State(regs, stacks, ranges, frames, st.refs)


def _retire(st, stale, drop_range=None):
    """``st`` with every register, spilled value and caller's saved register
    for which ``stale(type)`` holds made unusable (MIXED), and no proven range
    for ``drop_range``: for a name (packet base, lookup identity) an
    instruction gives out again."""
    ranges = st.ranges if drop_range is None else \
        frozenset((b, n) for b, n in st.ranges if b != drop_range and b != ("short", drop_range))
    return _map_types(st, lambda t: MIXED if stale(t) else t, ranges)


def _stack_span(t):
    """(lo, hi): the offsets a stack pointer may hold, or None: unknown."""
    if t[2] is not None:
        return t[2], t[2]
    return (t[3], t[4]) if len(t) == 5 else None


def _forget_spills(st, t=None, off=0, size=8):
    """``st`` after a stack write at a variable offset through ``t``: the spilled
    values it may land on are now initialised bytes of an unknown number. All of
    them, in every frame (the run-time check only bounds the address to a
    stack), unless ``t`` is known to stay inside its frame (a bounded index)."""
    span = None if t is None else _stack_span(t)
    if span is not None and -isa.STACK_SIZE <= span[0] + off and span[1] + off + size <= 0:
        first, end = span[0] + off, span[1] + off + size
        stacks = list(st.stacks)
        stacks[t[1]] = {o: ("init",) if v[0] == "spill" and o < end and o + 8 > first else v
                        for o, v in stacks[t[1]].items()}
        return State(st.regs, tuple(stacks), st.ranges, st.frames, st.refs)
    stacks = tuple({o: ("init",) if v[0] == "spill" else v for o, v in s.items()}
                   for s in st.stacks)
    return State(st.regs, stacks, st.ranges, st.frames, st.refs)


def _ident(t):
    """The name a type carries: a packet pointer's base, a lookup's identity."""
    if t[0] == "P":
        return t[1]
    if t[0] == "Z":
        return t[1][1]
    return t[4] if t[0] in "VM" else None


def _is_short(key):
    return isinstance(key, tuple) and key[0] == "short"


def _join_states(a, b, pc):
    minted = set()

    def join(x, y, slot):
        t = _join(x, y, pc, slot)
        if _ident(t) == ("join", pc, slot):
            minted.add(t)
        return t
    regs = a.regs if a.regs == b.regs else tuple(
        x if x == y else join(x, y, i) for i, (x, y) in enumerate(zip(a.regs, b.regs)))
    stacks = []
    for sa, sb in zip(a.stacks, b.stacks):
        if sa == sb:
            stacks.append(sa)
            continue
        s = {}
        for off in sa.keys() & sb.keys():
            x, y = sa[off], sb[off]
            if x == y:
                s[off] = x
            elif x[0] == "spill" and y[0] == "spill":
                s[off] = ("spill", join(x[1], y[1], 100 + off))
            else:
                s[off] = ("init",)
        stacks.append(s)
    if a.ranges == b.ranges:
        ranges = a.ranges
    else:
        ra, rb = dict(a.ranges), dict(b.ranges)  # what both paths know
        ranges = frozenset((k, (max if _is_short(k) else min)(ra[k], rb[k]))
                           for k in ra.keys() & rb.keys())
    # a reservation held on one path only stays held: released later, the
    # other path's copy (joined with a number, unusable) cannot be passed; never
    # released, the exit finds it
    st = State(regs, tuple(stacks), ranges, a.frames, a.refs | b.refs)
    for t in minted:
        # A name this join gives out again (a loop, a subprogram called from
        # two sites) is a new value: the range proven for the last one, and
        # anything still holding that one, must not pass to it.
        name = _ident(t)
        st = _retire(st, lambda x, t=t, name=name: x != t and _ident(x) == name, name)
    return st


class _PrunePoint:
    """What reached one prune point: the states kept apart (also filed by their
    live constant registers: ``files[mask][their values]``), then the summary
    and how many times it changed."""

    __slots__ = ("states", "files", "summary", "changes")

    def __init__(self):
        self.states, self.files, self.summary, self.changes = [], {}, None, 0


#: What a constant folds to under each ALU op: f(x, y, bits) before masking.
_CONST_OPS = {
    isa.ADD: lambda x, y, bits: x + y, isa.SUB: lambda x, y, bits: x - y,
    isa.MUL: lambda x, y, bits: x * y, isa.OR: lambda x, y, bits: x | y,
    isa.AND: lambda x, y, bits: x & y, isa.XOR: lambda x, y, bits: x ^ y,
    isa.LSH: lambda x, y, bits: x << (y & (bits - 1)),
    isa.RSH: lambda x, y, bits: x >> (y & (bits - 1)),
    isa.DIV: lambda x, y, bits: x // y if y else 0,
    isa.MOD: lambda x, y, bits: x % y if y else x,
}

_mask_registers = {}  # mask -> the register numbers it holds


def _constants(st, mask):
    """The registers of ``mask``, in order: the key of a file of kept states."""
    regs = _mask_registers.get(mask)
    if regs is None:
        regs = _mask_registers[mask] = tuple(r for r in range(11) if mask >> r & 1)
    sr = st.regs
    return tuple([sr[r] for r in regs])


def _agree(table, key, slot):
    """Record ``slot`` (a stack offset in the running frame, or None) at ``key``:
    one that differs from what another path recorded there becomes None."""
    if table.get(key, slot) != slot:
        slot = None
    table[key] = slot


class Reservation:
    """What a bpf_ringbuf_reserve call gives: ``value_size`` bytes of ring
    ``ring`` (a map index), typed as a map value of this pseudo-map (the
    kernel's PTR_TO_MEM | MEM_RINGBUF), released by submit or discard."""

    read_only = False
    key_size = 0
    type = None

    def __init__(self, ring, size, name):
        self.ring, self.value_size = ring, size
        self.name = f"{name} record"


class MapKey:
    """A map's key as a callback of bpf_for_each_map_elem gets it: key_size
    bytes it may read, not write (the kernel's PTR_TO_MAP_KEY)."""

    read_only = True
    key_size = 0
    type = None

    def __init__(self, m):
        self.value_size = m.key_size
        self.name = f"{m.name} key"


def expand_maps(maps):
    """The maps an instruction or a register may name: the program's, then the
    inner map template of each map of maps (``.inner``, a MapInfo-like object).
    Returns (list, {outer index: its inner's index})."""
    out, inner_of = list(maps), {}
    for k, m in enumerate(maps):
        inner = getattr(m, "inner", None)
        if inner is not None:
            inner_of[k] = len(out)
            out.append(inner)
    return out, inner_of


class Analysis:
    """What the type pass found, for the JIT.

    ``ctx_loads``: {pc: field name} of context loads (rewritten to host values);
    ``checks``: {pc: "packet" | "meta" | "stack"}: accesses checked at run time;
    ``map_args``: {pc: set of map indices} a helper call's map argument may hold;
    ``zero_stack``: the stack must start zeroed (a variable-offset stack read);
    ``zero_slots``: offsets from R10 of the 8-byte stack slots some path reads,
    directly or through a helper, before writing all their bytes: each frame
    starts with them zeroed;
    ``trace_formats``: {pc: (map index, offset, size)} of each bpf_trace_printk
    call's format, a constant string in read-only global data;
    ``record_sizes``: {map index: set of sizes} bpf_ringbuf_output writes;
    ``stack_slots``: {pc: offset from R10 or None} of stack accesses: a fixed
    offset in the running function's own frame on every path, or None.
    ``stack_args``: {(pc, register): offset from R10 or None} of helper call
    arguments, the same way (a map key or value on the stack).
    ``callbacks``: {pc: entry pc} of the function each bpf_loop or
    bpf_for_each_map_elem call runs.
    """

    def __init__(self):
        self.ctx_loads = {}
        self.checks = {}
        self.map_args = {}
        self.zero_stack = False
        self.zero_slots = set()
        self.trace_formats = {}
        self.record_sizes = {}
        self.stack_slots = {}
        self.stack_args = {}
        self.callbacks = {}
        self.states = 0


class Verifier:
    """The type and range pass over a structurally valid program.

    ``maps``: the program's maps as objects with ``type``, ``key_size``,
    ``value_size`` (and ``name``), indexed as the lddw instructions refer to them.
    """

    def __init__(self, insns, maps=(), name="prog", helpers=HELPERS, strict=False,
                 apart=False):
        self.insns, self.name, self.helpers = insns, name, helpers
        self.strict = strict
        # paths never joined: strict's way, or ``apart`` (verify's second try)
        self.apart = strict or apart
        self.max_states = MAX_STRICT_INSNS if strict else MAX_STATES
        self.maps, self.inner_of = expand_maps(maps)
        self.nmaps = len(maps)  # what lddw may name (the inner templates come after)
        self.reservations = {}  # (ring, size) -> index of its Reservation in self.maps
        self.key_views = {}     # map -> index of its MapKey in self.maps
        self.reentered = None   # a callback's first state the last step made
        self.callback_entries = {pc + 1 + i.imm for pc, i in enumerate(insns)
                                 if i.is_func_address}
        self.out = Analysis()

    def fail(self, pc, reason):
        raise VerifierError(self.name, self.insns, pc, reason)

    def run(self):
        funcs = check_structure(self.insns, self.name, self.helpers)
        self.live = liveness(self.insns, funcs, self.helpers)
        prune = prune_points(self.insns, funcs)
        regs = [NOT_INIT] * 11
        regs[1] = CTX
        regs[10] = ("K", 0, 0)
        start = State(tuple(regs), ({},), frozenset(), (), frozenset())
        # Paths are followed apart, as the kernel does (a parse that took the
        # VLAN branch keeps its own offsets), and a path whose state an earlier
        # one at the same instruction covers is pruned. Past PATHS_PER_INSN
        # states an instruction joins what reaches it into one summary, widened
        # after WIDEN_AFTER changes: loops converge.
        seen = {}     # (frames' return pcs, pc) -> _PrunePoint
        todo = [(0, start)]
        strict = self.strict
        while todo:
            pc, st = todo.pop()
            if pc in prune:
                if strict:
                    st = self._no_repeat(pc, st)
                st = self._arrive(seen, pc, st)
                if st is None:
                    continue
            self.out.states += 1
            if self.out.states > self.max_states:
                err = VerifierError(self.name, self.insns, pc,
                                    "BPF program is too large: over 1000000 instructions "
                                    "processed (the kernel's limit)" if self.strict else
                                    f"program too complex: over {MAX_STATES} states")
                err.too_large = True
                raise err
            self.reentered = None
            successors = self.step(pc, st)
            if strict:
                for _, s in successors:
                    s.path = None if s is self.reentered else st.path
            todo.extend(successors)
        return self.out

    @staticmethod
    def _where(pc, st):
        """A prune point's key: one per call context; outside any call the pc
        alone (no tuple to build)."""
        return (tuple([f[0] for f in st.frames]), pc) if st.frames else pc

    def _no_repeat(self, pc, st):
        """With ``strict``: fail when ``st`` is the state its path was in at
        ``pc`` before (the kernel's "infinite loop detected"); returns a copy
        of ``st`` whose path (``st.path``: (where, state, the path before) at
        each prune point) has it added. Strict keeps every point's states exact: once a point
        joins them (never, strict), a bounded loop's joined state may come back
        unchanged."""
        where = self._where(pc, st)
        key = (st.regs, st.stacks, st.ranges, st.frames, st.refs)
        a = st.path
        while a is not None:
            if a[0] == where and a[1] == key:
                self.fail(pc, f"infinite loop detected at insn {pc} (the loop comes back "
                              "to a state it was in)")
            a = a[2]
        new = State(*key)  # (a successor may be this very object on another branch)
        new.path = (where, key, st.path)
        return new

    def _arrive(self, seen, pc, st):
        """The state to explore from prune point ``pc`` when ``st`` arrives there:
        None when one already explored covers it, ``st`` while fewer than
        PATHS_PER_INSN are kept apart, else the summary joined with it."""
        where = self._where(pc, st)
        point = seen.get(where)
        if point is None:
            point = seen[where] = _PrunePoint()
        live = self.live[pc]
        if point.summary is None:
            # A state covers another only if every live register constant in it
            # holds that constant in the other: only the one file can cover.
            for mask, files in point.files.items():
                near = files.get(_constants(st, mask))
                if near and any(covers(old, st, live) for old in near):
                    return None
            # (strict: never joined, as the kernel's are not: a join loses the
            # range a loop's next turn proves, and the kernel would have it)
            # (a callback's entry joins even so: each run of it comes back with
            # the caller's stack as the last left it, a count one higher, and
            # without precision tracking such states never repeat)
            if len(point.states) < PATHS_PER_INSN or \
                    self.apart and pc not in self.callback_entries:
                point.states.append(st)
                mask = sum(1 << r for r, t in enumerate(st.regs)
                           if live >> r & 1 and t[0] == "S" and t[1] == t[2])
                point.files.setdefault(mask, {}).setdefault(_constants(st, mask), []).append(st)
                return st
            for old in point.states:
                st = _join_states(st, old, pc)
            point.summary = st
            return st
        summary = point.summary
        if covers(summary, st, live):
            return None
        merged = _join_states(summary, st, pc)
        if merged.regs == summary.regs and merged.stacks == summary.stacks and \
                merged.ranges == summary.ranges and merged.refs == summary.refs:
            # (frames: the summary's, by construction)
            return None
        point.changes += 1
        if point.changes > WIDEN_AFTER:
            # widen what still grows; what the join left alone stays (a NULL
            # spilled by a caller became an unknown number, and its non-NULL
            # branch a store through a scalar: refused where the kernel loads)
            merged = State(tuple(t if t == o else _widen(t)
                                 for t, o in zip(merged.regs, summary.regs)), tuple(
                {o: ("spill", _widen(v[1])) if v[0] == "spill" and was.get(o) != v else v
                 for o, v in s.items()} for s, was in zip(merged.stacks, summary.stacks)),
                merged.ranges, merged.frames, merged.refs)
        point.summary = merged
        return merged

    # -- registers
    def read(self, st, pc, r):
        t = st.regs[r]
        if t[0] == "N":
            self.fail(pc, f"R{r} !read_ok (read of an uninitialised register)")
        return t

    def step(self, pc, st):
        insn = self.insns[pc]
        c = insn.cls
        if c in (ALU, ALU64):
            return [(pc + 1, self.alu(pc, st, insn, c == ALU64))]
        if c == LD:
            return [(pc + 2, self.lddw(pc, st, insn))]
        if c == LDX:
            return [(pc + 1, self.load(pc, st, insn))]
        if c in (ST, STX):
            return [(pc + 1, self.store(pc, st, insn))]
        return self.jmp(pc, st, insn)

    def lddw(self, pc, st, insn):
        kind = insn.src
        if kind == isa.PSEUDO_IMM64:
            t = const(insn.imm64)
        elif kind == isa.PSEUDO_FUNC:
            t = ("F", pc + 1 + insn.imm)
        elif kind in (isa.PSEUDO_MAP_IDX, isa.PSEUDO_MAP_FD):
            if not 0 <= insn.imm < self.nmaps:
                self.fail(pc, f"map index {insn.imm} out of range ({self.nmaps} maps)")
            t = ("D", insn.imm)
        else:
            if not 0 <= insn.imm < self.nmaps:
                self.fail(pc, f"map index {insn.imm} out of range ({self.nmaps} maps)")
            off = self.insns[pc + 1].imm & U32
            m = self.maps[insn.imm]
            if off >= m.value_size:
                self.fail(pc, f"offset {off} outside map '{m.name}' value of {m.value_size}")
            t = ("V", insn.imm, off, off, ("lddw", pc), False)
        return st.with_reg(insn.dst, t)

    # -- arithmetic
    def alu(self, pc, st, insn, wide):
        op, d = insn.op, insn.dst
        if op == isa.MOV:
            if insn.uses_reg_src:
                t = self.read(st, pc, insn.src)
                if insn.off or not wide:
                    if t[0] != "S":
                        if not wide and not insn.off:
                            t = scalar(0, U32)  # a pointer's low half: a number
                        else:
                            self.fail(pc, f"sign extension of a pointer (R{insn.src} {_name(t)})")
                    else:
                        t = self._narrow(t, wide, insn.off)
            else:
                t = const(insn.imm if wide else insn.imm & U32)
            return st.with_reg(d, t)
        if op == END:
            t = self.read(st, pc, d)
            if t[0] != "S":
                self.fail(pc, f"byte swap of a pointer (R{d} {_name(t)})")
            return st.with_reg(d, scalar(0, (1 << insn.imm) - 1))
        dt = self.read(st, pc, d)
        if op == isa.NEG:
            if dt[0] != "S":
                self.fail(pc, f"R{d} pointer arithmetic with neg prohibited")
            return st.with_reg(d, UNKNOWN if wide else scalar(0, U32))
        if insn.uses_reg_src:
            s = self.read(st, pc, insn.src)
        else:
            s = const(insn.imm)  # sign-extended
        if dt[0] == "F" or s[0] == "F":
            self.fail(pc, f"R{d} pointer arithmetic on func prohibited")
        if dt[0] == "S" and s[0] == "S":
            t = self._scalar_op(op, dt, s, wide, insn.off)
            if self.strict and op in (isa.DIV, isa.MOD) and not is_const(t):
                t = UNKNOWN if wide else scalar(0, U32)  # (6.18's verifier bounds neither)
            return st.with_reg(d, t)
        if not wide:
            if op == isa.SUB:  # (w6 -= w7: clang's __u32 len = data_end - data)
                return st.with_reg(d, scalar(0, U32))  # a number, as the kernel for root
            self.fail(pc, f"R{d} 32-bit pointer arithmetic prohibited")
        self.minted = None
        t = self._pointer_op(pc, op, dt, s, d)
        if self.minted is not None:
            # The base is named by this insn and register: in a loop the name
            # comes back for a new, unrelated offset. The range proven for the
            # previous one (and copies of it) must not carry over to it.
            base = self.minted
            st = _retire(st, lambda x: x[0] == "P" and x[1] == base or
                         x[0] == "Z" and x[1][1] == base, drop_range=base)
        return st.with_reg(d, t)

    @staticmethod
    def _narrow(t, wide, off):
        if off:
            return UNKNOWN if wide else scalar(0, U32)
        return t if t[2] <= U32 else scalar(0, U32)

    @staticmethod
    def _scalar_op(op, a, b, wide, off):
        top = U64 if wide else U32
        mask = top
        if not wide:
            a = a if a[2] <= U32 else scalar(0, U32)
            b = (b[1] & U32, b[2] & U32) if b[1] == b[2] else (0, U32)
            b = ("S",) + b
        if is_const(a) and is_const(b) and op not in (isa.DIV, isa.MOD) or \
                (is_const(a) and is_const(b) and off == 0):
            r = _CONST_OPS.get(op)
            if r is not None:
                return const(r(a[1], b[1], 64 if wide else 32) & mask)
        lo, hi = a[1], a[2]
        if op == isa.AND:
            return scalar(0, _max_and(hi, b[1]) if is_const(b) else min(hi, b[2]))
        if op == isa.RSH and is_const(b):
            k = b[1] & (63 if wide else 31)
            return scalar(lo >> k, hi >> k)
        if op == isa.LSH and is_const(b):
            k = b[1] & (63 if wide else 31)
            return scalar(lo << k, hi << k) if hi << k <= top else scalar(0, top)
        if op == isa.ADD and hi + b[2] <= top:
            return scalar(lo + b[1], hi + b[2])
        if op in (isa.DIV, isa.RSH) and off == 0:
            return scalar(0, hi)
        if op == isa.MOD and is_const(b) and b[1] and off == 0:
            return scalar(0, min(hi, b[1] - 1))
        return scalar(0, top)

    def _pointer_op(self, pc, op, p, s, d):
        if op not in (isa.ADD, isa.SUB):
            if p[0] == "S":
                self.fail(pc, f"R{d} scalar {isa.ALU_NAMES[op]} with a pointer prohibited")
            self.fail(pc, f"R{d} pointer arithmetic with {isa.ALU_NAMES[op]} prohibited")
        if p[0] == "S":  # scalar + pointer: commutative for add
            if op == isa.SUB:
                self.fail(pc, f"R{d} scalar minus a pointer prohibited")
            p, s = s, p
        if s[0] != "S":  # pointer - pointer of the same packet: a length
            if op == isa.SUB and p[0] in "PE" and s[0] in "PE":
                return scalar(0, U64)
            self.fail(pc, f"R{d} arithmetic on two pointers ({_name(p)}, {_name(s)}) prohibited")
        known = is_const(s)
        delta = s[1] if op == isa.ADD else -s[1]
        if known and delta >= 1 << 63:
            delta -= 1 << 64
        kind = p[0]
        if kind in "NX":
            self.fail(pc, f"R{d} invalid pointer arithmetic on {_name(p)}")
        if kind == "Z":  # a packet pointer on one path, NULL on another
            self.fail(pc, f"R{d} pointer arithmetic on pkt_or_null prohibited, null-check it "
                          "first")
        if kind in "CDEM":
            if kind == "C" and known:
                return ("C", p[1] + delta)
            self.fail(pc, f"R{d} pointer arithmetic on {_name(p)} prohibited")
        if kind == "P":
            if known and abs(delta) <= MAX_PACKET_OFF and abs(p[2] + delta) <= MAX_PACKET_OFF:
                return ("P", p[1], p[2] + delta)
            self.minted = ("var", pc, d)  # (alu() retires the previous pointer of this name)
            return ("P", self.minted, 0)  # checked at run time unless compared again
        if kind == "K":
            if known and p[2] is not None:
                return ("K", p[1], p[2] + delta)
            span = _stack_span(p)
            if span is not None and s[2] <= isa.STACK_SIZE:  # a bounded index
                lo, hi = (s[1], s[2]) if op == isa.ADD else (-s[2], -s[1])
                return ("K", p[1], None, span[0] + lo, span[1] + hi)
            if self.strict:  # (without: any offset, checked at run time)
                self.fail(pc, f"R{d} math between fp pointer and register with unbounded min "
                              "value is not allowed")
            return ("K", p[1], None)
        # map value: offsets must stay within the value (no run-time check here)
        if p[5]:
            self.fail(pc, f"R{d} pointer arithmetic on map_value_or_null prohibited, null-check "
                          "it first")
        if op == isa.SUB and not known:
            self.fail(pc, f"R{d} subtraction of an unknown value from a map value pointer")
        lo = p[2] + (delta if known else s[1])
        hi = p[3] + (delta if known else s[2])
        if hi > 1 << 29 or lo < -(1 << 29):
            self.fail(pc, f"R{d} unbounded offset into map value (add a bounds check)")
        return ("V", p[1], lo, hi, p[4], p[5])

    # -- memory
    def access(self, pc, st, reg, off, size, write, insn):
        """Check an access through register ``reg``; returns the loaded type."""
        t = self.read(st, pc, reg)
        kind = t[0]
        if kind == "C":
            if write:
                self.fail(pc, "write into ctx is not allowed")
            field = XDP_MD_FIELDS.get(t[1] + off)
            if field is None or size != 4:
                self.fail(pc, f"invalid bpf_context access off={t[1] + off} size={size}")
            prev = self.out.ctx_loads.get(pc)
            if prev not in (None, field):
                self.fail(pc, "same insn reads different context fields")
            self.out.ctx_loads[pc] = field
            return {"data": ("P", 0, 0), "data_end": PKT_END,
                    "data_meta": ("P", "meta", 0)}.get(field, scalar(0, U32))
        if pc in self.out.ctx_loads:
            self.fail(pc, "same insn is used with ctx and non-ctx pointers")
        if kind == "P":
            lo = t[2] + off
            if t[1] == "meta":
                self.out.checks[pc] = "meta"
            elif lo < 0 or lo + size > st.range_of(t[1]):
                if self.strict:
                    self.fail(pc, f"invalid access to packet, off={lo} size={size}, proven "
                                  f"r={st.range_of(t[1])}: R{reg} offset is outside of the "
                                  "packet (compare with data_end first; the kernel's verifier "
                                  "rejects this, dataplane without --strict checks it at run "
                                  "time)")
                self.out.checks[pc] = "packet"
            return scalar(0, (1 << (8 * size)) - 1)
        if kind == "K":
            return self.stack_access(pc, st, t, off, size, write, insn)
        if kind == "V":
            if t[5]:
                self.fail(pc, f"R{reg} invalid mem access 'map_value_or_null' (null-check "
                              "the lookup's result first)")
            m = self.maps[t[1]]
            if t[2] + off < 0 or t[3] + off + size > m.value_size:
                what = "memory, mem_size" if isinstance(m, Reservation) else \
                    "map value, value_size"
                self.fail(pc, f"invalid access to {what}={m.value_size} "
                              f"off={t[2] + off}..{t[3] + off} size={size}")
            if write and getattr(m, "read_only", False):
                self.fail(pc, f"write into read-only map '{m.name}'")
            return scalar(0, (1 << (8 * size)) - 1)
        self.fail(pc, f"R{reg} invalid mem access '{_name(t)}'")

    def stack_access(self, pc, st, t, off, size, write, insn):
        depth = t[1]
        if t[2] is None:
            # an address, never a fixed slot of the running frame (another path
            # may have come here with one); inside the frame by its span, else
            # checked at run time to lie in a frame of the call chain
            _agree(self.out.stack_slots, pc, None)
            span = _stack_span(t)
            if span is None or span[0] + off < -isa.STACK_SIZE or span[1] + off + size > 0:
                self.out.checks[pc] = "stack"
            if not write:
                self.out.zero_stack = True
            return scalar(0, (1 << (8 * size)) - 1)
        start = t[2] + off
        if start < -isa.STACK_SIZE or start + size > 0:
            self.fail(pc, f"invalid stack access off={start} size={size}")
        # the JIT addresses a fixed slot of the running frame from its alloca (LLVM
        # can then keep it in registers); any other case stays an address
        _agree(self.out.stack_slots, pc, start if depth == len(st.frames) else None)
        stack = st.stacks[depth]
        if write:
            return None
        if size == 8 and start % 8 == 0 and stack.get(start, ("",))[0] == "spill":
            return stack[start][1]
        for b in range(start, start + size):
            slot = b - ((b % 8) + 8) % 8
            info = stack.get(slot)
            if info is None or (info[0] == "bytes" and not info[1] >> (b - slot) & 1):
                self.out.zero_slots.add(slot)
            elif info[0] == "spill" and info[1][0] != "S":  # part of a pointer: a number
                self.fail(pc, "invalid size of register fill")
        return scalar(0, (1 << (8 * size)) - 1)

    def _stack_write(self, st, t, off, size, value):
        """The state after writing ``value`` (a type, or None for bytes) to the stack."""
        depth, start = t[1], t[2] + off
        stacks = list(st.stacks)
        s = dict(stacks[depth])
        if size == 8 and start % 8 == 0 and value is not None:
            s[start] = ("spill", value)
        else:
            for b in range(start, start + size):
                slot = b - ((b % 8) + 8) % 8
                info = s.get(slot)
                mask = 0 if info is None else (0xff if info[0] != "bytes" else info[1])
                s[slot] = ("bytes", mask | (1 << (b - slot)))
        stacks[depth] = s
        return State(st.regs, tuple(stacks), st.ranges, st.frames, st.refs)

    def load(self, pc, st, insn):
        t = self.access(pc, st, insn.src, insn.off, insn.size, False, insn)
        if insn.mode == MODE_MEMSX and t[0] == "S":
            t = UNKNOWN
        return st.with_reg(insn.dst, t)

    def store(self, pc, st, insn):
        if insn.cls == ST:
            value = const(insn.imm)
        else:
            value = self.read(st, pc, insn.src)
        if insn.mode == MODE_ATOMIC:
            if value[0] != "S":
                self.fail(pc, "atomic operation with a pointer operand")
            dt = self.read(st, pc, insn.dst)
            if dt[0] == "K" and dt[2] is not None:
                self.access(pc, st, insn.dst, insn.off, insn.size, False, insn)
            self.access(pc, st, insn.dst, insn.off, insn.size, True, insn)
            # The slot now holds a number (a spilled pointer or a scalar's
            # bounds there are gone): the write was not recorded before, so a
            # fill after ``lock add`` on a spilled pointer gave the pointer type.
            if dt[0] == "K" and dt[2] is not None:
                st = self._stack_write(st, dt, insn.off, insn.size, None)
            elif dt[0] == "K":
                st = _forget_spills(st, dt, insn.off, insn.size)
            if insn.imm == isa.ATOMIC_CMPXCHG:
                self.read(st, pc, 0)
                return st.with_reg(0, UNKNOWN if insn.size == 8 else scalar(0, U32))
            if insn.imm & isa.ATOMIC_FETCH:
                return st.with_reg(insn.src, UNKNOWN if insn.size == 8 else scalar(0, U32))
            return st
        dt = self.read(st, pc, insn.dst)
        if value[0] != "S" and dt[0] != "K":
            self.fail(pc, f"R{insn.src} leaks a pointer into {_name(dt)}")
        if value[0] == "K" and dt[0] == "K" and value[1] > dt[1]:
            # After the callee returns its frame is gone (IndexError in
            # stack_access on the fill); the kernel refuses this too.
            self.fail(pc, f"R{insn.src} pointer to a callee's stack spilled into the "
                          "stack of a caller")
        self.access(pc, st, insn.dst, insn.off, insn.size, True, insn)
        if dt[0] == "K" and dt[2] is None:
            # A write at a variable offset may land on any slot it can reach: no
            # spill there keeps its type, or a number written over a spilled
            # pointer was filled as that pointer.
            return _forget_spills(st, dt, insn.off, insn.size)
        if dt[0] == "K" and dt[2] is not None:
            if value[0] != "S" and insn.size != 8:
                value = None
            return self._stack_write(st, dt, insn.off, insn.size,
                                     value if insn.size == 8 else None)
        return st

    # -- control flow
    def jmp(self, pc, st, insn):
        c, op = insn.cls, insn.op
        if op == EXIT:
            if not st.frames:
                r0 = self.read(st, pc, 0)
                if r0[0] != "S":
                    self.fail(pc, f"R0 is {_name(r0)} at exit, not a scalar (leaks a pointer)")
                if st.refs:
                    self.fail(pc, "unreleased reference: the ring buffer reservation of insn "
                                  f"{min(r[1] for r in st.refs)} (submit or discard it on "
                                  "every path)")
                return []
            if isinstance(st.frames[-1][0], tuple):
                return self.callback_exit(pc, st)
            # a subprogram returns R0 as it is, as the kernel's prepare_func_exit:
            # unset (clang drops a return value no caller reads) or a pointer
            # the caller may use, but not into the frame being left
            r0 = st.regs[0]
            if r0[0] == "K":
                self.fail(pc, "cannot return stack pointer to the caller")
            (ret, saved), frames = st.frames[-1], st.frames[:-1]
            fp = st.regs[10][:1] + (len(frames), 0)
            regs = (r0,) + (NOT_INIT,) * 5 + tuple(saved) + (fp,)
            return [(ret, State(regs, st.stacks[:-1], st.ranges, frames, st.refs))]
        if op == JA:
            return [(pc + 1 + (insn.imm if c == JMP32 else insn.off), st)]
        if op == CALL:
            if insn.src == CALL_LOCAL:
                return [self.call_local(pc, st, insn)]
            if insn.imm in CALLBACK_HELPERS:
                return self.loop_call(pc, st, insn.imm)
            return [(pc + 1, self.helper(pc, st, insn.imm))]
        d = self.read(st, pc, insn.dst)
        s = self.read(st, pc, insn.src) if insn.uses_reg_src else const(insn.imm)
        taken, fall = self.refine(pc, st, insn, d, s)
        out = []
        if fall is not None:
            out.append((pc + 1, fall))
        if taken is not None:
            out.append((pc + 1 + insn.off, taken))
        return out

    def call_local(self, pc, st, insn):
        depth = len(st.frames) + 1
        regs = (NOT_INIT,) + st.regs[1:6] + (NOT_INIT,) * 4 + (("K", depth, 0),)
        frames = st.frames + ((pc + 1, st.regs[6:10]),)
        return (pc + 1 + insn.imm, State(regs, st.stacks + ({},), st.ranges, frames, st.refs))

    def loop_call(self, pc, st, hid):
        """bpf_loop(nr, callback, ctx, flags) and bpf_for_each_map_elem(map,
        callback, ctx, flags): the paths on from the call, the callback not run
        (nr 0, an empty map, flags refused) and run once; each run's return
        leads to both again (callback_exit). As the kernel's verifier (since
        6.8), it checks the callback for any number of runs: its states at
        entry converge as a loop's do."""
        name = self.helpers[hid][0]
        after = self.helper(pc, st, hid)
        entry = st.regs[2][1]
        if self.out.callbacks.setdefault(pc, entry) != entry:
            self.fail(pc, f"{name}: the callback differs between paths (one per call "
                          "instruction is supported)")
        each = None
        if hid == isa.BPF_FUNC_for_each_map_elem:
            if st.regs[1][0] != "D" or len(self.out.map_args[pc]) > 1:
                self.fail(pc, f"{name}: one map per call, named by the object, is supported")
            each = st.regs[1][1]
        return [(pc + 1, after), self._enter_callback(pc, st, entry, st.regs[3], each)]

    def _key_view(self, m):
        """The index in self.maps of map ``m``'s key as memory a callback reads
        (the kernel's PTR_TO_MAP_KEY: read-only, key_size bytes)."""
        j = self.key_views.get(m)
        if j is None:
            j = self.key_views[m] = len(self.maps)
            self.maps.append(MapKey(self.maps[m]))
        return j

    def _enter_callback(self, pc, st, entry, ctx_t, each=None):
        """The callback's first state; its frame notes the call. bpf_loop: R1
        the index (any number, as the kernel has it), R2 the context the call
        passed. bpf_for_each_map_elem (``each``: the map): R1 the map, R2 a key
        (read-only), R3 its value, R4 the context."""
        depth = len(st.frames) + 1
        if each is None:
            args = (UNKNOWN, ctx_t, NOT_INIT, NOT_INIT)
        else:
            args = (("D", each), ("V", self._key_view(each), 0, 0, ("key", pc, depth), False),
                    ("V", each, 0, 0, ("element", pc, depth), False), ctx_t)
        regs = (NOT_INIT,) + args + (NOT_INIT,) * 5 + (("K", depth, 0),)
        frames = st.frames + ((("callback", pc, entry, ctx_t, st.refs, each), st.regs[6:10]),)
        new = State(regs, st.stacks + ({},), st.ranges, frames, st.refs)
        self.reentered = new  # (strict: a new run is no repeat of the one before)
        return (entry, new)

    def callback_exit(self, pc, st):
        """A callback's ``exit``: R0 must be 0 (go on) or 1 (stop); back in
        the caller after the helper call, or in the callback again."""
        (ret, saved), frames = st.frames[-1], st.frames[:-1]
        _, call, entry, ctx_t, refs, each = ret
        r0 = self.read(st, pc, 0)
        if r0[0] != "S" or r0[2] > 1:
            what = _name(r0) if r0[0] != "S" else f"a scalar in [{r0[1]}, {r0[2]}]"
            self.fail(pc, f"At callback return the register R0 is {what}, should have been "
                          "in [0, 1]")
        if st.refs != refs:
            self.fail(pc, "unreleased reference: a ring buffer reservation of the callback "
                          "(submit or discard it before the callback returns)")
        regs = (UNKNOWN,) + (NOT_INIT,) * 5 + tuple(saved) + (("K", len(frames), 0),)
        caller = State(regs, st.stacks[:-1], st.ranges, frames, st.refs)
        return [(call + 1, caller), self._enter_callback(call, caller, entry, ctx_t, each)]

    def refine(self, pc, st, insn, d, s):
        """(state if taken, state if not), None for a branch that cannot happen."""
        op, wide = insn.op, insn.cls == JMP
        kinds = d[0] + s[0]
        if "F" in kinds:
            self.fail(pc, "pointer comparison with func prohibited")
        if kinds != "SS":
            if not wide:
                self.fail(pc, "pointer comparison in 32 bits prohibited")
            return self.refine_pointers(pc, st, insn, d, s)
        reg = insn.dst
        if is_const(d) and not is_const(s):  # clang's "r1 = 7; if r1 > r7": r7 < 7
            op, d, s, reg = _FLIPPED.get(op), s, d, insn.src
        if op is None or op == isa.JSET or not is_const(s):
            return st, st
        k = s[1]
        lo, hi = d[1], d[2]
        if not wide:  # a 32-bit compare tells of a register that fits in 32 bits
            if hi > U32:
                return st, st
            k &= U32
        if op in _SIGNED:  # the unsigned compare, where both sides are not negative
            if hi > (U64 >> 1 if wide else U32 >> 1) or k > (U64 >> 1 if wide else U32 >> 1):
                return st, st
            op = _SIGNED[op]
        # unsigned compare with a constant: narrow the register on each side
        fixed = lo == hi == k  # the register holds k: one side cannot happen
        if op == isa.JEQ:
            sides = ((k, k), "never" if fixed else None)
        elif op == isa.JNE:
            sides = ("never" if fixed else None, (k, k))
        elif op == isa.JGT:
            sides = ((k + 1, hi), (lo, k))
        elif op == isa.JGE:
            sides = ((k, hi), (lo, k - 1))
        elif op == isa.JLT:
            sides = ((lo, k - 1), (k, hi))
        elif op == isa.JLE:
            sides = ((lo, k), (k + 1, hi))
        else:  # (none other reaches here)
            return st, st
        out = []
        for side, default in zip(sides, (st, st)):
            if side is None:
                out.append(default)
                continue
            if side == "never":
                out.append(None)
                continue
            nlo, nhi = max(lo, side[0]), min(hi, side[1])
            if nlo > nhi:
                out.append(None)  # this side cannot be taken
            else:
                out.append(st.with_reg(reg, ("S", nlo, nhi)))
        return tuple(out)

    def refine_pointers(self, pc, st, insn, d, s):
        op = insn.op
        # NULL checks: map_value_or_null compared with 0
        for ptr, other in ((d, s), (s, d)):
            if ptr[0] in "VM" and ptr[5] and is_const(other) and other[1] == 0 \
                    and op in (isa.JEQ, isa.JNE):
                null, nonnull = self._null_split(st, ptr[4])
                return (null, nonnull) if op == isa.JEQ else (nonnull, null)
        # a packet pointer or NULL (paths joined) compared with 0
        for r, ptr, other in ((insn.dst, d, s), (insn.src, s, d)):
            if ptr[0] == "Z" and is_const(other) and other[1] == 0 and op in (isa.JEQ, isa.JNE):
                null, nonnull = st.with_reg(r, const(0)), \
                    st.with_reg(r, ptr[1])
                return (null, nonnull) if op == isa.JEQ else (nonnull, null)
        # packet pointer against data_end: grows the proven range
        rel = {isa.JGT: ">", isa.JGE: ">=", isa.JLT: "<", isa.JLE: "<=", isa.JEQ: "==",
               isa.JNE: "!="}.get(op)
        if rel and {d[0], s[0]} == {"P", "E"}:
            p = d if d[0] == "P" else s
            if p[1] == "meta":
                return st, st
            flip = {">": "<", ">=": "<=", "<": ">", "<=": ">=", "==": "==", "!=": "!="}
            neg = {">": "<=", ">=": "<", "<": ">=", "<=": ">", "==": "!=", "!=": "=="}
            r_taken = rel if d[0] == "P" else flip[rel]   # p REL end when taken
            r_fall = neg[r_taken]
            base, off = p[1], p[2]
            out = []
            for r in (r_taken, r_fall):
                if self._pkt_end_false(st, base, off, r):  # settled by an earlier
                    out.append(None)  # check (the kernel's is_pkt_ptr_branch_taken)
                    continue
                ranges = dict(st.ranges)
                if r in ("<", "<=", "=="):  # end >= base + off
                    if off > ranges.get(base, 0):
                        ranges[base] = off
                elif r in (">", ">="):  # end < base + off (+ 1 for >=)
                    n = off + (r == ">=")
                    short = ranges.get(("short", base))
                    ranges[("short", base)] = n if short is None else min(short, n)
                out.append(State(st.regs, st.stacks, frozenset(ranges.items()), st.frames,
                                 st.refs))
            return tuple(out)
        if d[0] in "NX" or s[0] in "NX":
            self.fail(pc, f"comparison of {_name(d)} and {_name(s)}")
        return st, st

    @staticmethod
    def _pkt_end_false(st, base, off, rel):
        """True when ``base + off REL data_end`` cannot hold: data_end is at
        least base + range_of(base), and below base + short_of(base)."""
        proven, short = st.range_of(base), st.short_of(base)
        gt = (short is not None and off >= short, off <= proven)   # (true, false) of ">"
        ge = (short is not None and off >= short - 1, off < proven)  # of ">="
        return {">": gt[1], ">=": ge[1], "<": ge[0], "<=": gt[0]}.get(rel, False)

    def _null_split(self, st, ident):
        """States where lookup ``ident`` returned NULL, and where it did not."""
        def subst(nonnull):
            def f(t):
                if t[0] in "VM" and t[4] == ident and t[5]:
                    return t[:5] + (False,) if nonnull else const(0)
                return t
            regs = tuple(f(t) for t in st.regs)
            stacks = tuple({o: ("spill", f(v[1])) if v[0] == "spill" else v
                            for o, v in s.items()} for s in st.stacks)
            # a reservation that failed holds nothing (the kernel releases it)
            refs = st.refs if nonnull else st.refs - {ident}
            return State(regs, stacks, st.ranges, st.frames, refs)
        return subst(False), subst(True)

    # -- helpers
    def helper(self, pc, st, hid):
        name, args, ret = self.helpers[hid]
        map_index = None
        written = []  # (pointer, size) of the memory the helper writes
        for r in range(1, len(args) + 1):
            t = st.regs[r]
            _agree(self.out.stack_args, (pc, r),
                   t[2] if t[0] == "K" and t[1] == len(st.frames) else None)
        for i, kind in enumerate(args):
            r = i + 1
            optional = kind.endswith("?")
            kind = kind.rstrip("?")
            t = st.regs[r]
            if t[0] == "N":
                if optional and kind == "any":
                    continue
                self.fail(pc, f"{name}: R{r} !read_ok (argument {r} not set)")
            if kind == "map":
                if t[0] == "M" and t[5]:
                    self.fail(pc, f"{name}: R{r} type={_name(t)}: null-check the inner map "
                                  "first")
                if t[0] not in "DM":
                    self.fail(pc, f"{name}: R{r} type={_name(t)} expected=map_ptr")
                map_index = t[1]
                mtype = self.maps[map_index].type
                allowed = HELPER_MAP_TYPES.get(hid)
                if (allowed is not None and mtype not in allowed) or \
                        mtype in HELPER_REFUSED_MAP_TYPES.get(hid, ()):
                    self.fail(pc, f"{name}: map '{self.maps[map_index].name}' of type "
                                  f"{mtype} cannot be used here")
                self.out.map_args.setdefault(pc, set()).add(t[1])
            elif kind == "ctx":
                if t != CTX:
                    self.fail(pc, f"{name}: R{r} type={_name(t)} expected=ctx")
            elif kind == "func":
                if t[0] != "F":
                    self.fail(pc, f"{name}: R{r} type={_name(t)} expected=func")
            elif kind == "stack":
                if not (t[0] == "K" or optional and t == const(0)):
                    self.fail(pc, f"{name}: R{r} type={_name(t)} expected=fp"
                                  + (" or NULL" if optional else ""))
            elif kind in ("key", "value", "wvalue", "mem", "wmem") and t[0] in "PZ" and \
                    hid not in HELPER_PKT_ACCESS:
                self.fail(pc, f"{name}: R{r} helper access to the packet is not allowed")
            elif kind in ("key", "value"):
                m = self.maps[map_index]
                size = m.key_size if kind == "key" else m.value_size
                self.check_mem_arg(pc, st, r, t, size, name)
            elif kind == "wvalue":
                size = self.maps[map_index].value_size
                self.check_mem_arg(pc, st, r, t, size, name, True)
                written.append((t, size))
            elif kind in ("mem", "wmem"):
                size_t = st.regs[r + 1]
                if optional and is_const(t) and t[1] == 0:  # NULL: nothing to read
                    if size_t != const(0):
                        self.fail(pc, f"{name}: R{r} NULL with R{r + 1} not 0: "
                                      f"type={_name(t)} expected=pointer to memory")
                    continue
                if size_t[0] != "S":
                    self.fail(pc, f"{name}: R{r + 1} type={_name(size_t)} expected=scalar")
                if not is_const(size_t) and (hid in CONSTANT_SIZES or kind == "wmem"):
                    self.fail(pc, f"{name}: R{r + 1} size must be a known constant (a size "
                                  "known only by its bounds is not supported yet)")
                if size_t[2] >= MAX_VAR_SIZE:  # (the kernel's check_mem_size_reg)
                    self.fail(pc, f"{name}: R{r + 1} unbounded memory access, use 'var &= "
                                  "const' or 'if (var < const)'")
                if hid in (189, 190) and size_t[1] == 0:
                    self.fail(pc, f"{name}: R{r + 1} invalid zero-sized read")
                if kind == "wmem":
                    written.append((t, size_t[1]))
                # a size known by its bounds: the buffer must hold the largest
                self.check_mem_arg(pc, st, r, t, size_t[2], name, kind == "wmem")
                if hid == 6:
                    self.trace_format(pc, st, t, size_t[1])
                elif hid == 130:
                    self.out.record_sizes.setdefault(map_index, set()).add(size_t[1])
            elif kind in ("any", "size"):
                if t[0] != "S":
                    self.fail(pc, f"{name}: R{r} type={_name(t)} expected=scalar")
        regs = list(st.regs)
        for r in range(1, 6):
            regs[r] = NOT_INIT
        new = State(tuple(regs), st.stacks, st.ranges, st.frames, st.refs)
        for t, size in written:  # stack bytes the helper wrote are initialised now
            if t[0] == "K":
                new = self._stack_write(new, t, 0, size, None)
        if hid in RELEASES:
            new = self.release(pc, new, st.regs[1])
        if hid == 12 and st.refs:
            self.fail(pc, "tail_call would lead to reference leak (submit or discard the ring "
                          "buffer reservation first)")
        if ret == "void":
            new = new.with_reg(0, NOT_INIT)
        elif ret == "reservation_or_null":
            new = self.reserve(pc, new, map_index, st.regs[2])
        elif ret == "value_or_null":
            ident = ("lookup", pc, len(st.frames))
            # The identity is this insn's: a result of an earlier run of it (a
            # loop, a subprogram called twice) still unchecked would be taken
            # for non-NULL by the NULL check of this one (and the other way).
            new = _retire(new, lambda x: x[0] in "VM" and x[4] == ident and x[5])
            if map_index in self.inner_of:  # a map of maps gives an inner map
                new = new.with_reg(0, ("M", self.inner_of[map_index], 0, 0, ident, True))
            else:
                new = new.with_reg(0, ("V", map_index, 0, 0, ident, True))
        else:
            new = new.with_reg(0, UNKNOWN)
        if hid in MOVES_PACKET:
            # Packet pointers from before are numbers now, as the kernel makes
            # them for a privileged loader (mark_reg_invalid): clang may still
            # subtract two of them (a length computed before the call, moved
            # after it), and no number can be dereferenced.
            new = _map_types(new, lambda t: UNKNOWN if t[0] in "PEZ" else t, frozenset())
        return new

    def reserve(self, pc, st, ring, size_t):
        """``st`` after bpf_ringbuf_reserve on ring ``ring``: R0 a record of the
        constant size asked for, or NULL, held until submitted or discarded."""
        if not is_const(size_t):
            self.fail(pc, "bpf_ringbuf_reserve: R2 size must be a known constant")
        size = size_t[1]
        self.out.record_sizes.setdefault(ring, set()).add(size)
        ident = ("reserve", pc, len(st.frames))
        if ident in st.refs:
            self.fail(pc, "unreleased reference: the reservation of this call's last run "
                          "(submit or discard it first)")
        j = self.reservations.get((ring, size))
        if j is None:
            j = self.reservations[ring, size] = len(self.maps)
            self.maps.append(Reservation(ring, size, self.maps[ring].name))
        st = State(st.regs, st.stacks, st.ranges, st.frames, st.refs | {ident})
        return st.with_reg(0, ("V", j, 0, 0, ident, True))

    def release(self, pc, st, t):
        """``st`` after bpf_ringbuf_submit / discard of ``t``: the reservation
        is no longer held, and no copy of its pointer can be used."""
        name = self.helpers[self.insns[pc].imm][0]
        if t[0] != "V" or not isinstance(self.maps[t[1]], Reservation):
            self.fail(pc, f"{name}: R1 type={_name(t)} expected=ringbuf_mem (what "
                          "bpf_ringbuf_reserve returned)")
        if t[5]:
            self.fail(pc, f"{name}: R1 ringbuf_mem_or_null as argument (null-check it)")
        if t[2] != 0 or t[3] != 0:
            self.fail(pc, f"{name}: R1 must have zero offset when passed to release func")
        if t[4] not in st.refs:
            self.fail(pc, f"{name}: R1 is not a reservation held here (released twice?)")
        rings = self.out.map_args.setdefault(pc, set())
        rings.add(self.maps[t[1]].ring)
        if len(rings) > 1:
            self.fail(pc, f"{name}: records of two ring buffers at one call are not "
                          "supported yet")
        ident = t[4]
        st = _retire(st, lambda x: x[0] == "V" and x[4] == ident)
        return State(st.regs, st.stacks, st.ranges, st.frames, st.refs - {ident})

    def trace_format(self, pc, st, t, size):
        """bpf_trace_printk's format must be a constant: read-only global data
        at a known offset (libbpf's bpf_printk puts it in .rodata)."""
        if t[0] != "V" or t[2] != t[3] or not getattr(self.maps[t[1]], "read_only", False):
            self.fail(pc, "bpf_trace_printk: the format must be a constant string in "
                          ".rodata (bpf_printk's static const), not " + _name(t))
        where = (t[1], t[2], size)
        if self.out.trace_formats.get(pc, where) != where:
            self.fail(pc, "bpf_trace_printk: one call site, two different formats")
        self.out.trace_formats[pc] = where

    def check_mem_arg(self, pc, st, r, t, size, name, write=False):
        """A helper's pointer argument to ``size`` readable bytes (``write``:
        bytes the helper writes, which need not be initialised)."""
        if t[0] == "K":
            if t[2] is None:
                self.fail(pc, f"{name}: R{r} variable stack offset as a helper argument")
            start = t[2]
            if start < -isa.STACK_SIZE or start + size > 0:
                self.fail(pc, f"{name}: R{r} stack buffer of {size} bytes at {start} is out "
                              "of the stack")
            stack = st.stacks[t[1]]
            for b in range(start, start + size):
                slot = b - ((b % 8) + 8) % 8
                info = stack.get(slot)
                if write:
                    continue
                if info is None or (info[0] == "bytes" and not info[1] >> (b - slot) & 1):
                    self.out.zero_slots.add(slot)  # (a key's padding, say)
        elif t[0] == "V":
            if t[5]:
                self.fail(pc, f"{name}: R{r} map_value_or_null as argument (null-check it)")
            m = self.maps[t[1]]
            if t[2] < 0 or t[3] + size > m.value_size:
                self.fail(pc, f"{name}: R{r} {size} bytes past map value of {m.value_size}")
            if write and getattr(m, "read_only", False):
                self.fail(pc, f"{name}: R{r} write into map '{m.name}', which is read-only")
        elif t[0] == "P":
            if t[1] == "meta" or t[2] < 0 or t[2] + size > st.range_of(t[1]):
                self.fail(pc, f"{name}: R{r} packet range of {size} bytes not proven "
                              "(compare with data_end first)")
        else:
            self.fail(pc, f"{name}: R{r} type={_name(t)} expected=pointer to memory")


def verify(insns, maps=(), name="prog", helpers=HELPERS, strict=False):
    """Both passes -> Analysis (VerifierError on a rejection). ``strict``: also
    reject what the kernel's verifier rejects and this one would let run under
    a run-time check: a packet access not proven by a comparison with
    data_end, a loop that comes back to a state it was in (no progress).

    Without ``strict``, a program refused once is tried again with its paths
    never joined (as the kernel follows them, up to MAX_STATES): a loop of
    more turns than PATHS_PER_INSN whose counter indexes a map value loses the
    counter's bound where the turns join (the kernel follows each turn). The
    first refusal is the one reported."""
    try:
        return Verifier(insns, maps, name, helpers, strict).run()
    except VerifierError as refused:
        if strict or refused.too_large:  # (paths kept apart are only more)
            raise
        try:
            return Verifier(insns, maps, name, helpers, apart=True).run()
        except VerifierError:
            raise refused from None
