"""Disassembler: instruction slots back to the text ``asm.assemble`` reads.

``disassemble(insns)`` gives lines that assemble to the same bytes, for any
input: a slot with no mnemonic (unknown opcode, a reserved field set, a
register above r10, a broken LDDW pair) prints as ``.raw 0xWORD  # invalid``,
its 8 bytes as a little-endian u64 (an LDDW head takes its tail along:
``.raw 0xHEAD, 0xTAIL``).

Annotations are comments, so they never change what the text assembles to:
``call 1  # bpf_map_lookup_elem`` (with ``helper_name``), and for an LDDW
whose src names a map, ``lddw %r1, map_fd[3]  # map NAME`` (with ``map_name``).
"""

from dataplane.ebpf import isa
from dataplane.ebpf.isa import (
    ALU, ALU64, JMP, JMP32, LD, LDX, ST, STX, LDDW, MODE_ABS, MODE_IND, MODE_MEM, MODE_MEMSX,
    MODE_ATOMIC, SIZE_W, SIZE_DW)

# Kernel helper ids (include/uapi/linux/bpf.h, the order of __BPF_FUNC_MAPPER).
HELPER_NAMES = {1: "bpf_map_lookup_elem", 2: "bpf_map_update_elem", 3: "bpf_map_delete_elem",
                5: "bpf_ktime_get_ns", 6: "bpf_trace_printk", 7: "bpf_get_prandom_u32",
                8: "bpf_get_smp_processor_id", 12: "bpf_tail_call", 23: "bpf_redirect",
                25: "bpf_perf_event_output", 28: "bpf_csum_diff", 44: "bpf_xdp_adjust_head",
                51: "bpf_redirect_map",
                54: "bpf_xdp_adjust_meta", 65: "bpf_xdp_adjust_tail", 87: "bpf_map_push_elem",
                88: "bpf_map_pop_elem", 89: "bpf_map_peek_elem", 130: "bpf_ringbuf_output",
                131: "bpf_ringbuf_reserve", 132: "bpf_ringbuf_submit",
                133: "bpf_ringbuf_discard", 160: "bpf_ktime_get_coarse_ns",
                164: "bpf_for_each_map_elem", 181: "bpf_loop",
                188: "bpf_xdp_get_buff_len", 189: "bpf_xdp_load_bytes",
                190: "bpf_xdp_store_bytes"}

_ALU_NAMES = {op: name for op, name in isa.ALU_NAMES.items() if op not in (isa.NEG, isa.END)}
_PSEUDO_NAMES = {1: "map_fd", 2: "map_value", 3: "btf_id", 4: "func", 5: "map_idx",
                 6: "map_idx_value"}
_MAP_SOURCES = (isa.PSEUDO_MAP_FD, isa.PSEUDO_MAP_VALUE, isa.PSEUDO_MAP_IDX,
                isa.PSEUDO_MAP_IDX_VALUE)
_ATOMIC_NAMES = {isa.ATOMIC_ADD: "add", isa.ATOMIC_OR: "or", isa.ATOMIC_AND: "and",
                 isa.ATOMIC_XOR: "xor", isa.ATOMIC_XCHG: "xchg", isa.ATOMIC_CMPXCHG: "cmpxchg"}


def format_insn(insns, i, helper_name=None, map_name=None):
    """The text of slot ``i`` of ``insns``, jump targets as ``+off``/``-off``.

    ``helper_name(id) -> str | None`` and ``map_name(insn) -> str | None``
    add a trailing comment. An LDDW tail slot gives ``""``; a slot with no
    mnemonic gives a ``.raw`` line. Never raises on content.
    """
    return _line(insns, i, helper_name, map_name, {})


def disassemble(insns, helper_name=None, map_name=None, labels=True):
    """Lines for a whole program; with ``labels`` every in-range jump or
    local-call target gets a label line (``L7:``, ``fn12:`` for call targets)
    and the jumps name it. ``assemble("\\n".join(lines))`` gives back the
    same bytes."""
    names = _label_names(insns) if labels else {}
    out = []
    for i, ins in enumerate(insns):
        if i in names:
            out.append(f"{names[i]}:")
        if not ins.is_lddw_tail:
            out.append(_line(insns, i, helper_name, map_name, names))
    if len(insns) in names:
        out.append(f"{names[len(insns)]}:")
    return out


def _label_names(insns):
    jumps, calls = set(), set()
    for i, ins in enumerate(insns):
        if ins.is_lddw_tail or _body(insns, i, {}) is None:
            continue
        target, is_call = _branch(ins, i)
        # no label on an LDDW tail (no line to hang it on): that jump stays +off
        if target is not None and 0 <= target <= len(insns) and \
                (target == len(insns) or not insns[target].is_lddw_tail):
            (calls if is_call else jumps).add(target)
    names = {t: f"L{t}" for t in jumps}
    names.update({t: f"fn{t}" for t in calls})
    return names


def _branch(ins, i):
    """(target slot, is a local call) of a jump or local call, else (None, False)."""
    if ins.opcode == JMP | isa.CALL and ins.src == isa.CALL_LOCAL:
        return i + 1 + ins.imm, True
    if ins.opcode == JMP32 | isa.JA:
        return i + 1 + ins.imm, False
    if ins.cls in (JMP, JMP32) and (ins.opcode == JMP | isa.JA or ins.op in isa.CONDITIONAL_JUMPS):
        return i + 1 + ins.off, False
    return None, False


def _line(insns, i, helper_name, map_name, names):
    ins = insns[i]
    if ins.is_lddw_tail:
        return ""
    body = _body(insns, i, names)
    if body is None:
        return _raw(insns, i)
    note = None
    if helper_name and ins.opcode == JMP | isa.CALL and ins.src == isa.CALL_HELPER:
        note = helper_name(ins.imm)
    elif map_name and ins.opcode == LDDW and ins.src in _MAP_SOURCES:
        name = map_name(ins)
        note = f"map {name}" if name else None
    elif ins.is_func_address:
        note = f"function at insn {i + 1 + ins.imm}"  # (a callback: bpf_loop's, say)
    return f"{body}  # {note}" if note else body


def _raw(insns, i):
    words = [insns[i]]
    if insns[i].opcode == LDDW and i + 1 < len(insns) and insns[i + 1].is_lddw_tail:
        words.append(insns[i + 1])
    text = ", ".join(f"0x{int.from_bytes(isa.encode([w]), 'little'):016x}" for w in words)
    return f".raw {text}  # invalid"


def _body(insns, i, names):
    """The mnemonic text of slot i, or None when no mnemonic encodes it exactly."""
    ins = insns[i]
    if ins.dst > 10 or ins.src > 10:
        return None
    return _BY_CLASS[ins.cls](insns, i, names)


def _num(v):
    """A signed immediate: small ones in decimal, others in hex."""
    return str(v) if -256 < v < 256 else f"{'-' if v < 0 else ''}0x{abs(v):x}"


def _u32(v):
    """A 32-bit immediate of a 32-bit operation, read unsigned."""
    return _num(v & 0xffffffff)


def _mem(reg, off):
    return f"[%r{reg}{off:+d}]" if off else f"[%r{reg}]"


def _target(i, rel, names):
    return names.get(i + 1 + rel, f"{rel:+d}")


def _alu(insns, i, names):
    ins = insns[i]
    cls, op, x = ins.cls, ins.op, ins.uses_reg_src
    sfx, d = ("32" if cls == ALU else ""), f"%r{ins.dst}"
    if op == isa.NEG:
        return f"neg{sfx} {d}" if not x and not (ins.src or ins.off or ins.imm) else None
    if op == isa.END:
        if ins.src or ins.off or ins.imm not in (16, 32, 64) or (cls == ALU64 and x):
            return None
        kind = ("be" if x else "le") if cls == ALU else "bswap"
        return f"{kind}{ins.imm} {d}"
    if op not in _ALU_NAMES:
        return None
    name = _ALU_NAMES[op]
    if op in (isa.DIV, isa.MOD) and ins.off == 1:
        name = "s" + name
    elif op == isa.MOV and x and ins.off in (8, 16, 32) and not (cls == ALU and ins.off == 32):
        width = "32" if cls == ALU else "64"
        return f"movsx{ins.off}{width} {d}, %r{ins.src}" if ins.imm == 0 else None
    elif ins.off:
        return None
    if x:
        return f"{name}{sfx} {d}, %r{ins.src}" if ins.imm == 0 else None
    imm = _u32(ins.imm) if cls == ALU else _num(ins.imm)
    return f"{name}{sfx} {d}, {imm}" if ins.src == 0 else None


def _jmp(insns, i, names):
    ins = insns[i]
    opcode, cls = ins.opcode, ins.cls
    if opcode == JMP | isa.JA:
        return f"ja {_target(i, ins.off, names)}" if not (ins.dst or ins.src or ins.imm) else None
    if opcode == JMP32 | isa.JA:
        return f"ja32 {_target(i, ins.imm, names)}" if not (ins.dst or ins.src or ins.off) \
            else None
    if opcode == JMP | isa.EXIT:
        return "exit" if not (ins.dst or ins.src or ins.off or ins.imm) else None
    if opcode == JMP | isa.CALL:
        if ins.dst or ins.off:
            return None
        if ins.src == isa.CALL_LOCAL:
            return f"call local {_target(i, ins.imm, names)}"
        return {isa.CALL_HELPER: f"call {ins.imm}", isa.CALL_KFUNC: f"call kfunc {ins.imm}"}.get(
            ins.src)
    if opcode == JMP | isa.CALL | isa.SRC_X:  # callx: the register is in dst
        return f"call %r{ins.dst}" if not (ins.src or ins.off or ins.imm) else None
    if ins.op not in isa.CONDITIONAL_JUMPS:
        return None
    name = isa.JMP_NAMES[ins.op] + ("32" if cls == JMP32 else "")
    where = _target(i, ins.off, names)
    if ins.uses_reg_src:
        return f"{name} %r{ins.dst}, %r{ins.src}, {where}" if ins.imm == 0 else None
    imm = _u32(ins.imm) if cls == JMP32 else _num(ins.imm)
    return f"{name} %r{ins.dst}, {imm}, {where}" if ins.src == 0 else None


def _ld(insns, i, names):
    ins = insns[i]
    sfx = isa.SIZE_SUFFIX[ins.opcode & 0x18]
    if ins.opcode == LDDW:
        tail = insns[i + 1] if i + 1 < len(insns) else None
        if tail is None or not tail.is_lddw_tail or ins.off or ins.src > 6 or \
                tail.opcode or tail.dst or tail.src or tail.off:
            return None
        lo, hi = ins.imm & 0xffffffff, tail.imm & 0xffffffff
        if ins.src == isa.PSEUDO_IMM64:
            return f"lddw %r{ins.dst}, 0x{hi << 32 | lo:x}"
        halves = _num(lo) + (f", {_num(hi)}" if hi else "")
        return f"lddw %r{ins.dst}, {_PSEUDO_NAMES[ins.src]}[{halves}]"
    if ins.mode == MODE_ABS and not (ins.dst or ins.src or ins.off):
        return f"ldabs{sfx} {_num(ins.imm)}"
    if ins.mode == MODE_IND and not (ins.dst or ins.off):
        return f"ldind{sfx} %r{ins.src}, {_num(ins.imm)}"
    return None


def _ldx(insns, i, names):
    ins = insns[i]
    sfx = isa.SIZE_SUFFIX[ins.opcode & 0x18]
    if ins.imm or ins.mode not in (MODE_MEM, MODE_MEMSX) or \
            (ins.mode == MODE_MEMSX and sfx == "dw"):
        return None
    sx = "s" if ins.mode == MODE_MEMSX else ""
    return f"ldx{sx}{sfx} %r{ins.dst}, {_mem(ins.src, ins.off)}"


def _st(insns, i, names):
    ins = insns[i]
    if ins.mode != MODE_MEM or ins.src:
        return None
    return f"st{isa.SIZE_SUFFIX[ins.opcode & 0x18]} {_mem(ins.dst, ins.off)}, {_num(ins.imm)}"


def _stx(insns, i, names):
    ins = insns[i]
    size = ins.opcode & 0x18
    if ins.mode == MODE_MEM and not ins.imm:
        return f"stx{isa.SIZE_SUFFIX[size]} {_mem(ins.dst, ins.off)}, %r{ins.src}"
    if ins.mode != MODE_ATOMIC or size not in (SIZE_W, SIZE_DW) or ins.imm not in isa.ATOMIC_OPS:
        return None
    fetch = ""
    name = _ATOMIC_NAMES.get(ins.imm)
    if name is None:  # a fetching add/or/and/xor; xchg and cmpxchg always fetch
        fetch, name = "fetch ", _ATOMIC_NAMES[ins.imm & ~isa.ATOMIC_FETCH]
    width = "32" if size == SIZE_W else ""
    return f"lock {fetch}{name}{width} {_mem(ins.dst, ins.off)}, %r{ins.src}"


_BY_CLASS = {LD: _ld, LDX: _ldx, ST: _st, STX: _stx, ALU: _alu, JMP: _jmp, JMP32: _jmp,
             ALU64: _alu}
