"""eBPF to LLVM IR: the JIT (the kernel's arch/x86/net/bpf_jit_comp.c, through LLVM).

``emit(builder, insns, target)`` writes a program's instructions into the
function the builder is in, and leaves the builder in a block where the
returned value (R0 at ``exit``) is available. It is called from two places:

- inside the numba batch loop (ebpf/program.py's intrinsic), so that LLVM
  inlines and optimises the program together with the loop, the way a Python
  program is inlined (numba-notes.md: 1.3x faster than the kernel's JIT);
- into a bare llvmlite function (``compile_raw``), for the ISA conformance
  vectors: R1 = a memory block, R2 = its length.

What a program may touch outside its registers and stack comes from the
``Target``: context loads, helper calls, map references, the run-time checks
the verifier asks for, the fault path. Registers and the 512-byte stack frame
are allocas: LLVM promotes registers to SSA values. Calls to subprograms
(bpf-to-bpf) are inlined at each call site with their own frame, as the
verifier guarantees no recursion. Every backward jump spends one unit of the
loop budget (config.LOOP_BUDGET); an empty budget aborts the packet.

The edge semantics are RFC 9669's: division by zero gives 0, modulo by zero
leaves dst, INT_MIN / -1 = INT_MIN and INT_MIN % -1 = 0, shift counts are
masked, every 32-bit result is zero-extended. No instruction is emitted as an
LLVM operation with undefined behaviour on some input (udiv by 0, shl by 64).
"""

import errno
import itertools

from llvmlite import ir

from ..errors import ProgramError
from . import isa
from .isa import (ADD, ALU, ALU64, AND, ARSH, CALL, CALL_LOCAL, DIV, END, EXIT, JA, JEQ, JGE,
                  JGT, JLE, JLT, JMP, JMP32, JNE, JSET, JSGE, JSGT, JSLE, JSLT, LD, LDX, LSH,
                  MOD, MODE_ATOMIC, MODE_MEM, MODE_MEMSX, MOV, MUL, NEG, OR, RSH, ST, STX, SUB,
                  XOR)

I8, I16, I32, I64, I1 = (ir.IntType(n) for n in (8, 16, 32, 64, 1))
_WIDTH = {1: I8, 2: I16, 4: I32, 8: I64}
#: ALU operations that are one LLVM instruction as they are (IRBuilder methods).
_PLAIN_ALU = {ADD: "add", SUB: "sub", MUL: "mul", OR: "or_", AND: "and_", XOR: "xor"}
#: bpf_loop's limit of turns (BPF_MAX_LOOPS in kernel/bpf/bpf_iter.c).
BPF_MAX_LOOPS = 1 << 23
#: -EINVAL and -E2BIG as the 64-bit R0 a helper returns.
_EINVAL, _E2BIG = (-e & 0xffffffffffffffff for e in (errno.EINVAL, errno.E2BIG))


class JitError(ProgramError):
    """An instruction the JIT cannot emit (the verifier rejects these first).

    A ProgramError (it was a bare Exception), so that the CLI reports an
    unverified program it cannot compile (``dataplane conformance --plugin``)
    as one ``error:`` line with exit code 1, not a traceback."""


class Target:
    """What a program runs against. The base class is the bare ISA: no context,
    no maps, helper calls refused; subclasses override what they provide."""

    #: Backward jumps a run may take before it is aborted (None: unlimited).
    loop_budget = None
    #: True when no other thread writes the memory the program's atomic
    #: instructions touch: they are then plain read-modify-writes (a locked x86
    #: instruction drains the store buffer, and the next packets' cache misses
    #: could no longer overlap this one's).
    single_writer = False

    def ctx_load(self, builder, pc, offset, size):
        """A load from the context at ``offset`` (the verifier typed it): i64."""
        raise JitError(f"insn {pc}: no context in this target")

    def helper_call(self, builder, pc, helper, args):
        """Call helper ``helper`` with R1-R5 (i64 values): the i64 R0."""
        raise JitError(f"insn {pc}: helper {helper} is not available here")

    def map_ref(self, builder, pc, index):
        """The value an ``lddw rX, map`` puts in a register."""
        raise JitError(f"insn {pc}: no maps in this target")

    def map_value_ref(self, builder, pc, index, offset):
        """The address of byte ``offset`` of map ``index``'s first value (global data)."""
        raise JitError(f"insn {pc}: no maps in this target")

    def access_ok(self, builder, pc, addr, size, write):
        """An i1 telling whether ``size`` bytes at ``addr`` may be accessed, or
        None when the verifier proved the access (no check)."""
        return None

    def ends_program(self, helper):
        """True when a call of ``helper`` that returns 0 ends the program
        (bpf_tail_call: the next program runs instead)."""
        return False

    def fault(self, builder, pc, kind):
        """Record a fault of packet (``kind``: "access" or "loop"); the program
        then ends with R0 = 0, which the loop turns into XDP_ABORTED."""


class _Frame:
    """One activation of a (sub)program: its registers and stack, and the
    frame of its caller (None for the program's own)."""

    def __init__(self, builder, depth, caller=None):
        self.caller = caller
        # allocas in the entry block (before its branch): LLVM promotes them
        with builder.goto_entry_block():
            self.regs = [builder.alloca(I64, name=f"r{i}_{depth}") for i in range(11)]
            stack = builder.alloca(ir.ArrayType(I8, isa.STACK_SIZE), name=f"stack_{depth}")
        stack.align = 16
        self.stack = stack


class _Emitter:
    def __init__(self, builder, insns, target, funcs):
        self.b = builder
        self.insns = insns
        self.t = target
        self.fn = builder.function
        if builder.block is self.fn.entry_basic_block:
            raise JitError("emit() needs a builder outside the entry block (allocas go there)")
        self.funcs = funcs  # entry pc -> end pc (exclusive) of every (sub)program
        self.known_block, self.known_values = None, {}
        self.budget = None
        if target.loop_budget is not None:
            with builder.goto_entry_block():
                self.budget = builder.alloca(I64, name="loop_budget")

    # -- registers
    def get(self, frame, r):
        """Register ``r``: the value last put in this LLVM block, else a load."""
        known = self.known()
        v = known.get((frame, r))
        if v is None:
            v = known[frame, r] = self.b.load(frame.regs[r])
        return v

    def put(self, frame, r, v):
        if v.type != I64:
            v = self.b.zext(v, I64)
        self.b.store(v, frame.regs[r])
        self.known()[frame, r] = v

    def known(self):
        """{(frame, register): value} valid at the builder's position: values
        loaded or stored earlier in the same block. Reusing them instead of a
        load per use makes the IR a third smaller; LLVM would have removed the
        loads (mem2reg), but writing, printing and parsing them took time."""
        if self.b.block is not self.known_block:
            self.known_block, self.known_values = self.b.block, {}
        return self.known_values

    def src_value(self, frame, insn, wide):
        """The source operand: register, or imm sign-extended (ALU64/JMP) or as 32 bits."""
        if insn.uses_reg_src:
            v = self.get(frame, insn.src)
            return v if wide else self.b.trunc(v, I32)
        return ir.Constant(I64 if wide else I32, insn.imm & (0xffffffffffffffff if wide
                                                             else 0xffffffff))

    # -- the whole program
    def run(self, r1, r2):
        if self.budget is not None:
            self.b.store(ir.Constant(I64, self.t.loop_budget), self.budget)
        done = self.fn.append_basic_block("bpf_done")
        self.top_exits, self.top_done = [], done
        result = self.emit_function(0, [r1, r2], done, 0)
        self.b.position_at_end(done)
        phi = self.b.phi(I64, name="bpf_r0")
        for v, blk in result + self.top_exits:
            phi.add_incoming(v, blk)
        return phi

    def emit_function(self, start, args, done, depth, caller=None):
        """Emit the (sub)program at ``start``; returns [(r0, block)] of its exits,
        each ending with a branch to ``done``."""
        if depth > isa.MAX_CALL_DEPTH:
            raise JitError(f"insn {start}: call depth over {isa.MAX_CALL_DEPTH}")
        end = self.funcs[start]
        self.check_no_fall_off(start, end)
        frame = _Frame(self.b, depth, caller)
        for i, v in enumerate(args):
            if v is not None:
                self.put(frame, i + 1, v)
        if getattr(self.t, "zero_stack", False):  # a variable-offset read may see any byte
            self.b.store(ir.Constant(frame.stack.type.pointee, None), frame.stack)
        else:  # slots read before written (LLVM: an undefined value, not even a number)
            for off in sorted(getattr(self.t, "zero_slots", ())):
                slot = self.b.gep(frame.stack, [I32(0), I32(isa.STACK_SIZE + off)])
                self.b.store(ir.Constant(I64, 0), self.b.bitcast(slot, I64.as_pointer()))
        top = self.b.ptrtoint(self.b.gep(frame.stack, [I32(0), I32(isa.STACK_SIZE)]), I64)
        self.put(frame, 10, top)
        blocks = {}
        for pc in self.leaders(start, end):
            blocks[pc] = self.fn.append_basic_block(f"d{depth}_pc{pc}")
        self.b.branch(blocks[start])
        exits = []
        pc = start
        while pc < end:
            if pc in blocks:
                if not self.b.block.is_terminated:
                    self.b.branch(blocks[pc])
                self.b.position_at_end(blocks[pc])
            insn = self.insns[pc]
            if insn.is_lddw_tail:
                pc += 1
                continue
            if self.b.block.is_terminated:  # unreachable code after a jump: skip to a leader
                pc += 1
                continue
            self.emit_insn(frame, pc, insn, blocks, exits, done, depth)
            pc += 1
        if not self.b.block.is_terminated:  # fell off the end: the verifier rejects this
            self.b.unreachable()
        return exits

    def check_no_fall_off(self, start, end):
        """JitError when a path can run past the (sub)program's last slot.

        The verifier rejects such programs, but ISA runs (conformance.run, the
        ``--plugin`` mode) are not verified: the ``unreachable`` emitted at the
        end would then be reached, undefined behaviour that crashed the process
        (``mov %r0, 1`` with no ``exit``: SIGSEGV)."""
        seen, todo = set(), [start]
        while todo:
            pc = todo.pop()
            if pc in seen or not start <= pc < end:
                continue  # a jump out of the function: jump() raises for it
            seen.add(pc)
            insn = self.insns[pc]
            c, op = insn.cls, insn.op
            following = pc + 2 if insn.is_lddw else pc + 1
            if c in (JMP, JMP32) and op == EXIT:
                nxt = []
            elif c in (JMP, JMP32) and op == JA:
                nxt = [pc + 1 + (insn.imm if c == JMP32 else insn.off)]
            elif c in (JMP, JMP32) and op != CALL:
                nxt = [following, pc + 1 + insn.off]
            else:
                nxt = [following]
            if following in nxt and following >= end:
                raise JitError(f"insn {pc}: falls off the end of the function")
            todo.extend(nxt)

    def leaders(self, start, end):
        out = {start}
        for pc in range(start, end):
            insn = self.insns[pc]
            if insn.is_lddw_tail:
                continue
            c = insn.cls
            if c in (JMP, JMP32):
                op = insn.op
                if op == EXIT:
                    out.add(pc + 1)
                elif op == CALL:
                    out.add(pc + 1)
                elif op == JA:
                    tgt = pc + 1 + (insn.imm if c == JMP32 else insn.off)
                    out.update((tgt, pc + 1))
                else:
                    out.update((pc + 1 + insn.off, pc + 1))
        return sorted(p for p in out if start <= p < end)

    def jump(self, pc, target, blocks):
        """Branch to ``target``; a backward jump spends the loop budget."""
        if target not in blocks:
            raise JitError(f"insn {pc}: jump to {target}, outside the function")
        if target <= pc and self.budget is not None:
            left = self.b.sub(self.b.load(self.budget), I64(1))
            self.b.store(left, self.budget)
            out = self.fn.append_basic_block(f"pc{pc}_budget_spent")
            cont = self.fn.append_basic_block(f"pc{pc}_back")
            self.b.cbranch(self.b.icmp_signed("<=", left, I64(0)), out, cont)
            self.b.position_at_end(out)
            self.fault_exit(pc, "loop")
            self.b.position_at_end(cont)
        self.b.branch(blocks[target])

    def fault_exit(self, pc, kind):
        """End the whole program (not only the subprogram) with R0 = 0."""
        self.t.fault(self.b, pc, kind)
        self.top_exits.append((I64(0), self.b.block))
        self.b.branch(self.top_done)

    # -- one instruction
    def emit_insn(self, frame, pc, insn, blocks, exits, done, depth):
        self.frame = frame  # (inlined calls change it; each insn sets it back)
        reason = _field_error(insn)
        if reason:
            raise JitError(f"insn {pc}: {reason}")
        c = insn.cls
        if c in (ALU, ALU64):
            self.alu(frame, insn, c == ALU64)
        elif c == LD:
            self.ld(frame, pc, insn)
        elif c == LDX:
            addr = self.b.add(self.get(frame, insn.src), I64(insn.off & 0xffffffffffffffff))
            v = self.load(frame, pc, addr, insn.size, insn.mode == MODE_MEMSX, insn)
            self.put(frame, insn.dst, v)
        elif c == ST:
            addr = self.b.add(self.get(frame, insn.dst), I64(insn.off & 0xffffffffffffffff))
            self.store(pc, addr, insn.size, ir.Constant(I64, insn.imm & 0xffffffffffffffff))
        elif c == STX:
            addr = self.b.add(self.get(frame, insn.dst), I64(insn.off & 0xffffffffffffffff))
            if insn.mode == MODE_ATOMIC:
                self.atomic(frame, pc, insn, addr)
            elif insn.mode == MODE_MEM:
                self.store(pc, addr, insn.size, self.get(frame, insn.src))
            else:
                raise JitError(f"insn {pc}: store mode {insn.mode:#x}")
        else:
            self.jmp(frame, pc, insn, blocks, exits, done, depth)

    def checked(self, pc, addr, size, write):
        if getattr(self.t, "checks", {}).get(pc) == "stack":
            # a variable offset: inside a frame of the call chain (a callee may
            # write its caller's buffer). addr <= base + 512 - size, not addr +
            # size <= base + 512: near 2**64 the sum wraps round and passes (an
            # address made of a leaked pointer: 0 - base - 4 + base)
            ok, frame = None, self.frame
            while frame is not None:
                base = self.b.ptrtoint(self.b.gep(frame.stack, [I32(0), I32(0)]), I64)
                last = self.b.add(base, I64(isa.STACK_SIZE - size))
                inside = self.b.and_(self.b.icmp_unsigned(">=", addr, base),
                                     self.b.icmp_unsigned("<=", addr, last))
                ok = inside if ok is None else self.b.or_(ok, inside)
                frame = frame.caller
        else:
            ok = self.t.access_ok(self.b, pc, addr, size, write)
        if ok is None:
            return
        bad = self.fn.append_basic_block(f"pc{pc}_fault")
        good = self.fn.append_basic_block(f"pc{pc}_ok")
        self.b.cbranch(ok, good, bad)
        self.b.position_at_end(bad)
        self.fault_exit(pc, "access")
        self.b.position_at_end(good)

    def load(self, frame, pc, addr, size, signed, insn):
        v = self.t.ctx_load(self.b, pc, insn.off, size) if self.is_ctx(pc) else None
        if v is not None:
            return v
        self.checked(pc, addr, size, False)
        v = self.b.load(self.pointer(pc, addr, size), align=1)
        return self.b.sext(v, I64) if signed and size < 8 else (
            v if size == 8 else self.b.zext(v, I64))

    def is_ctx(self, pc):
        return pc in getattr(self.t, "ctx_loads", ())

    def pointer(self, pc, addr, size):
        """The access's pointer: into the frame's alloca for a fixed stack slot
        (the verifier's stack_slots: LLVM then sees which bytes it touches and
        can keep them in registers or merge byte stores), else the address."""
        off = getattr(self.t, "stack_slots", {}).get(pc)
        if off is not None:
            p = self.b.gep(self.frame.stack, [I32(0), I32(isa.STACK_SIZE + off)])
            return self.b.bitcast(p, _WIDTH[size].as_pointer())
        return self.b.inttoptr(addr, _WIDTH[size].as_pointer())

    def store(self, pc, addr, size, value):
        self.checked(pc, addr, size, True)
        ptr = self.pointer(pc, addr, size)
        self.b.store(value if size == 8 else self.b.trunc(value, _WIDTH[size]), ptr, align=1)

    def atomic(self, frame, pc, insn, addr):
        size, op = insn.size, insn.imm
        if size not in (4, 8) or op not in isa.ATOMIC_OPS:
            raise JitError(f"insn {pc}: atomic operation {op:#x} of {size} bytes")
        self.checked(pc, addr, size, True)
        ty = _WIDTH[size]
        ptr = self.b.inttoptr(addr, ty.as_pointer())
        src = self.get(frame, insn.src)
        if size == 4:
            src = self.b.trunc(src, I32)
        plain = getattr(self.t, "single_writer", False)
        if op == isa.ATOMIC_CMPXCHG:
            expected = self.get(frame, 0)
            if size == 4:
                expected = self.b.trunc(expected, I32)
            if plain:
                old = self.b.load(ptr, align=1)
                same = self.b.icmp_unsigned("==", old, expected)
                self.b.store(self.b.select(same, src, old), ptr, align=1)
                self.put(frame, 0, old)
                return
            pair = self.b.cmpxchg(ptr, expected, src, "seq_cst", "seq_cst")
            self.put(frame, 0, self.b.extract_value(pair, 0))
            return
        rmw = {isa.ATOMIC_ADD: "add", isa.ATOMIC_OR: "or", isa.ATOMIC_AND: "and",
               isa.ATOMIC_XOR: "xor", isa.ATOMIC_XCHG & ~isa.ATOMIC_FETCH: "xchg"}[
            op & ~isa.ATOMIC_FETCH]
        if plain:  # one writer: a locked instruction would only stall the pipeline
            old = self.b.load(ptr, align=1)
            ops = {"add": self.b.add, "or": self.b.or_, "and": self.b.and_, "xor": self.b.xor}
            new = src if rmw == "xchg" else ops[rmw](old, src)
            self.b.store(new, ptr, align=1)
        else:
            old = self.b.atomic_rmw(rmw, ptr, src, "seq_cst")
        if op & isa.ATOMIC_FETCH:
            self.put(frame, insn.src, old)

    def ld(self, frame, pc, insn):
        if not insn.is_lddw:
            raise JitError(f"insn {pc}: legacy packet load (mode {insn.mode:#x})")
        kind = insn.src
        if kind == isa.PSEUDO_IMM64:
            v = ir.Constant(I64, insn.imm64)
        elif kind in (isa.PSEUDO_MAP_IDX, isa.PSEUDO_MAP_FD):
            v = self.t.map_ref(self.b, pc, insn.imm)
        elif kind in (isa.PSEUDO_MAP_IDX_VALUE, isa.PSEUDO_MAP_VALUE):
            off = self.insns[pc + 1].imm & 0xffffffff
            v = self.t.map_value_ref(self.b, pc, insn.imm, off)
        elif kind == isa.PSEUDO_FUNC:  # a callback's address: its entry (only
            v = ir.Constant(I64, pc + 1 + insn.imm)  # bpf_loop takes it: verified)
        else:
            raise JitError(f"insn {pc}: lddw with src {kind} is not supported")
        self.put(frame, insn.dst, v)

    # -- arithmetic
    def alu(self, frame, insn, wide):
        b, op = self.b, insn.op
        ty = I64 if wide else I32
        bits = 64 if wide else 32
        if op == END:
            self.endian(frame, insn, wide)
            return
        if op == MOV:
            if insn.off and insn.uses_reg_src:  # MOVSX
                v = self.get(frame, insn.src)
                small = b.trunc(v, _WIDTH[insn.off // 8])
                res = b.sext(small, ty)
            else:
                res = self.src_value(frame, insn, wide)
            self.put(frame, insn.dst, res)
            return
        d = self.get(frame, insn.dst)
        if not wide:
            d = b.trunc(d, I32)
        if op == NEG:
            self.put(frame, insn.dst, b.neg(d))
            return
        s = self.src_value(frame, insn, wide)
        zero, one, ones = ir.Constant(ty, 0), ir.Constant(ty, 1), ir.Constant(ty, -1)
        if op in _PLAIN_ALU:
            res = getattr(b, _PLAIN_ALU[op])(d, s)
        elif op in (LSH, RSH, ARSH):  # the count masked to the width, as the ISA says
            n = b.and_(s, ir.Constant(ty, bits - 1))
            res = {LSH: b.shl, RSH: b.lshr, ARSH: b.ashr}[op](d, n)
        elif op in (DIV, MOD):
            by_zero = b.icmp_unsigned("==", s, zero)
            safe = b.select(by_zero, one, s)
            if insn.off == 1:  # signed: SDIV / SMOD, truncating toward zero
                minus_one = b.icmp_signed("==", s, ones)
                safe = b.select(minus_one, one, safe)
                if op == DIV:
                    q = b.select(minus_one, b.neg(d), b.sdiv(d, safe))
                    res = b.select(by_zero, zero, q)
                else:
                    r = b.select(minus_one, zero, b.srem(d, safe))
                    res = b.select(by_zero, d, r)
            elif op == DIV:
                res = b.select(by_zero, zero, b.udiv(d, safe))
            else:
                res = b.select(by_zero, d, b.urem(d, safe))
        else:
            raise JitError(f"ALU operation {op:#x}")
        self.put(frame, insn.dst, res)

    def endian(self, frame, insn, wide):
        b = self.b
        width = insn.imm
        if width not in (16, 32, 64):
            raise JitError(f"byte swap of {width} bits")
        v = b.trunc(self.get(frame, insn.dst), _WIDTH[width // 8]) if width < 64 \
            else self.get(frame, insn.dst)
        # ALU64 END is BSWAP; ALU END with SRC_X is to-big-endian; with SRC_K to
        # little-endian, which on this (little-endian) host only truncates.
        if wide or insn.uses_reg_src:
            fn = _intrinsic(b.module, f"llvm.bswap.i{width}", ir.FunctionType(v.type, [v.type]))
            v = b.call(fn, [v])
        self.put(frame, insn.dst, v)

    # -- control flow
    def jmp(self, frame, pc, insn, blocks, exits, done, depth):
        b, op, c = self.b, insn.op, insn.cls
        if op == EXIT:
            exits.append((self.get(frame, 0), b.block))
            b.branch(done)
            return
        if op == JA:
            self.jump(pc, pc + 1 + (insn.imm if c == JMP32 else insn.off), blocks)
            return
        if op == CALL:
            self.call(frame, pc, insn, depth)
            return
        wide = c == JMP
        d = self.get(frame, insn.dst)
        if not wide:
            d = b.trunc(d, I32)
        s = self.src_value(frame, insn, wide)
        if op == JSET:
            cond = b.icmp_unsigned("!=", b.and_(d, s), ir.Constant(d.type, 0))
        else:
            pred = {JEQ: "==", JNE: "!=", JGT: ">", JGE: ">=", JLT: "<", JLE: "<=",
                    JSGT: ">", JSGE: ">=", JSLT: "<", JSLE: "<="}[op]
            cmp = b.icmp_signed if op in (JSGT, JSGE, JSLT, JSLE) else b.icmp_unsigned
            cond = cmp(pred, d, s)
        target = pc + 1 + insn.off
        if target not in blocks or pc + 1 not in blocks:
            raise JitError(f"insn {pc}: jump to {target}, outside the function")
        if target <= pc and self.budget is not None:
            back = self.fn.append_basic_block(f"pc{pc}_taken")
            b.cbranch(cond, back, blocks[pc + 1])
            b.position_at_end(back)
            self.jump(pc, target, blocks)
        else:
            b.cbranch(cond, blocks[target], blocks[pc + 1])

    def call(self, frame, pc, insn, depth):
        b = self.b
        if insn.src == CALL_LOCAL:
            start = pc + 1 + insn.imm
            if start not in self.funcs:
                raise JitError(f"insn {pc}: call to {start}, not a function")
            args = [self.get(frame, r) for r in range(1, 6)]
            ret = self.fn.append_basic_block(f"d{depth}_pc{pc}_return")
            exits = self.emit_function(start, args, ret, depth + 1, frame)
            b.position_at_end(ret)
            phi = b.phi(I64)
            for v, blk in exits:
                phi.add_incoming(v, blk)
            self.put(frame, 0, phi)
            return
        if insn.src == isa.CALL_HELPER and insn.imm == isa.BPF_FUNC_loop:
            self.bpf_loop(frame, pc, depth)
            return
        if insn.src == isa.CALL_HELPER and insn.imm == isa.BPF_FUNC_for_each_map_elem:
            self.for_each_map_elem(frame, pc, depth)
            return
        args = [self.stack_arg(frame, pc, r) for r in range(1, 6)]
        if insn.uses_reg_src:  # callx: the helper id is in a register
            self.put(frame, 0, self.t.helper_call(b, pc, None, args + [self.get(frame, insn.dst)]))
            return
        if insn.src != isa.CALL_HELPER:
            raise JitError(f"insn {pc}: call with src {insn.src} (kfuncs) is not supported")
        ret = self.t.helper_call(b, pc, insn.imm, args)
        self.put(frame, 0, ret)
        if self.t.ends_program(insn.imm):  # bpf_tail_call: on success, no return
            out = self.fn.append_basic_block(f"pc{pc}_tail_call")
            cont = self.fn.append_basic_block(f"pc{pc}_no_tail_call")
            b.cbranch(b.icmp_unsigned("==", ret, I64(0)), out, cont)
            b.position_at_end(out)
            self.top_exits.append((I64(0), b.block))
            b.branch(self.top_done)
            b.position_at_end(cont)

    def bpf_loop(self, frame, pc, depth):
        """``bpf_loop(nr, callback, ctx, flags)`` (helper 181) as the kernel's
        (kernel/bpf/bpf_iter.c): flags other than 0 give -EINVAL, more than
        BPF_MAX_LOOPS turns -E2BIG; else the callback (the verifier's
        ``callbacks``: one function per call) runs with R1 = 0, 1, ... and R2 =
        ctx, inlined in a loop, until it returns non-zero (then R0 = turns
        run) or ``nr`` turns (R0 = nr). The turns are bounded: no loop budget."""
        b = self.b
        nr = b.zext(b.trunc(self.get(frame, 1), I32), I64)  # (a u32 argument)
        ctx, flags = self.get(frame, 3), self.get(frame, 4)
        bad_flags = b.icmp_unsigned("!=", flags, I64(0))
        error = b.select(bad_flags, I64(_EINVAL), I64(_E2BIG))
        refused = b.or_(bad_flags, b.icmp_unsigned(">", nr, I64(BPF_MAX_LOOPS)))
        start, (head, body, ret, after) = b.block, self._loop_blocks(pc, depth)
        b.cbranch(refused, after, head)
        b.position_at_end(head)
        i = b.phi(I64, name=f"pc{pc}_turn")
        i.add_incoming(I64(0), start)
        b.cbranch(b.icmp_unsigned("<", i, nr), body, after)
        b.position_at_end(body)
        r0 = self._run_callback(frame, pc, depth, [i, ctx], ret)
        turns = b.add(i, I64(1))
        i.add_incoming(turns, ret)
        b.cbranch(b.icmp_unsigned("!=", r0, I64(0)), after, head)
        b.position_at_end(after)
        result = b.phi(I64, name=f"pc{pc}_loop_r0")
        result.add_incoming(error, start)
        result.add_incoming(i, head)
        result.add_incoming(turns, ret)
        self.put(frame, 0, result)

    def _loop_blocks(self, pc, depth):
        """The blocks of a callback helper's loop: its head, the body that runs
        the callback, where the callback returns, and after the loop."""
        return tuple(self.fn.append_basic_block(f"pc{pc}_{what}") for what in
                     ("loop", "loop_body", f"d{depth}_callback_return", "loop_done"))

    def _run_callback(self, frame, pc, depth, args, ret):
        """The callback of the helper at ``pc`` (the verifier's ``callbacks``)
        inlined with ``args``, returning to block ``ret``: its R0 there."""
        entry = getattr(self.t, "callbacks", {}).get(pc)
        if entry is None or entry not in self.funcs:
            raise JitError(f"insn {pc}: a callback helper without a known callback")
        exits = self.emit_function(entry, args, ret, depth + 1, frame)
        self.b.position_at_end(ret)
        r0 = self.b.phi(I64)
        for v, blk in exits:
            r0.add_incoming(v, blk)
        return r0

    def for_each_map_elem(self, frame, pc, depth):
        """``bpf_for_each_map_elem(map, callback, ctx, flags)`` (helper 164) as
        the kernel's (bpf_for_each_array_elem / bpf_for_each_hash_elem): flags
        other than 0 give -EINVAL; else the callback runs on each element in
        turn, R1 the map, R2 its key, R3 its value, R4 ctx, until it returns
        non-zero; R0 = the elements it ran on. An array's key is the index,
        written to a u32 of this call's."""
        b = self.b
        token, ctx, flags = self.get(frame, 1), self.get(frame, 3), self.get(frame, 4)
        with b.goto_entry_block():
            index = b.alloca(I32, name=f"pc{pc}_array_key")
        bad_flags = b.icmp_unsigned("!=", flags, I64(0))
        start, (head, body, ret, after) = b.block, self._loop_blocks(pc, depth)
        b.cbranch(bad_flags, after, head)
        b.position_at_end(head)
        cursor = b.phi(I64, name=f"pc{pc}_cursor")
        cursor.add_incoming(I64(-1 & 0xffffffffffffffff), start)
        count = b.phi(I64, name=f"pc{pc}_elements")
        count.add_incoming(I64(0), start)
        nxt = self.t.map_each(b, pc, token, "next", cursor)
        head_end = b.block
        b.cbranch(b.icmp_signed("<", nxt, I64(0)), after, body)
        b.position_at_end(body)
        key = self.t.map_each(b, pc, token, "key", nxt)
        b.store(b.trunc(nxt, I32), index)
        key = b.select(b.icmp_unsigned("==", key, I64(0)), b.ptrtoint(index, I64), key)
        value = self.t.map_each(b, pc, token, "value", nxt)
        r0 = self._run_callback(frame, pc, depth, [token, key, value, ctx], ret)
        ran = b.add(count, I64(1))
        cursor.add_incoming(nxt, ret)
        count.add_incoming(ran, ret)
        b.cbranch(b.icmp_unsigned("!=", r0, I64(0)), after, head)
        b.position_at_end(after)
        result = b.phi(I64, name=f"pc{pc}_each_r0")
        result.add_incoming(I64(_EINVAL), start)
        result.add_incoming(count, head_end)
        result.add_incoming(ran, ret)
        self.put(frame, 0, result)

    def stack_arg(self, frame, pc, r):
        """Helper argument ``r``: a pointer to a fixed stack slot (the verifier's
        stack_args) as the address of the frame's alloca slot, which the inlined
        helper's load then reads as that slot: LLVM forwards the key just stored
        there instead of storing it and loading it back."""
        off = getattr(self.t, "stack_args", {}).get((pc, r))
        if off is None:
            return self.get(frame, r)
        return self.b.ptrtoint(self.b.gep(frame.stack, [I32(0), I32(isa.STACK_SIZE + off)]),
                               I64)


def _field_error(insn):
    """Why the JIT cannot emit ``insn`` as encoded, or None.

    Unverified programs (conformance runs) reach the JIT with any bytes; fields
    out of range used to escape as IndexError (register 11-15), KeyError (MOVSX
    offset, jump operation 0xe0/0xf0) or an LLVM parse error (``sext i32 to
    i32`` for a 32-bit MOVSX of 32 bits) instead of a JitError."""
    c, op = insn.cls, insn.op
    if insn.dst > 10 or insn.src > 10:
        return f"invalid register r{max(insn.dst, insn.src)}"
    if c in (ALU, ALU64):
        if op not in isa.ALU_NAMES:
            return f"invalid ALU operation {op:#x}"
        if op == MOV and insn.off and insn.uses_reg_src and \
                insn.off not in ((8, 16, 32) if c == ALU64 else (8, 16)):
            return f"invalid MOVSX offset {insn.off}"
    elif c in (JMP, JMP32):
        if op not in isa.JMP_NAMES:
            return f"invalid jump operation {op:#x}"
    elif c == LDX and insn.mode not in (MODE_MEM, MODE_MEMSX):
        return f"invalid load mode {insn.mode:#x}"
    elif c == ST and insn.mode != MODE_MEM:
        return f"invalid store mode {insn.mode:#x}"
    return None


def _intrinsic(module, name, fnty):
    try:
        return module.get_global(name)
    except KeyError:
        return ir.Function(module, fnty, name)


def functions(insns):
    """{entry pc: end pc} of the program (entry 0) and of every subprogram a
    ``call local`` names or an lddw takes the address of (a callback): each runs
    up to the next one's entry."""
    starts = {0}
    for pc, insn in enumerate(insns):
        if insn.names_function:
            starts.add(pc + 1 + insn.imm)
    ordered = sorted(s for s in starts if 0 <= s < len(insns))
    return {s: (ordered[k + 1] if k + 1 < len(ordered) else len(insns))
            for k, s in enumerate(ordered)}


def emit(builder, insns, target, r1, r2=None):
    """Emit ``insns`` at the builder's position; returns R0 (i64) at exit,
    with the builder positioned after the program."""
    return _Emitter(builder, insns, target, functions(insns)).run(r1, r2)


# ---------------------------------------------------------------- bare ISA runs

#: The helpers of RawTarget: 5, the conformance suite's "unwind".
RAW_HELPERS = frozenset({5})


class RawTarget(Target):
    """The conformance vectors' runtime: memory block in R1, its length in R2,
    helper 5 returns its first argument (the suite's "unwind" helper)."""

    def helper_call(self, builder, pc, helper, args):
        if helper is None or helper in RAW_HELPERS:  # callx: only helper 5 exists here
            return args[0]
        raise JitError(f"insn {pc}: helper {helper} is not available here")


def compile_raw(insns, target=None):
    """Compile ``insns`` into a native function ``f(mem_address, mem_len) -> r0``
    (uint64), for ISA runs without maps or context (conformance)."""
    import ctypes
    import llvmlite.binding as llvm

    name = f"bpf_raw_{next(_raw_names)}"  # one engine holds every compiled vector
    module = ir.Module(name=name)
    fn = ir.Function(module, ir.FunctionType(I64, [I64, I64]), name=name)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    body = fn.append_basic_block("body")
    b.branch(body)
    b.position_at_end(body)
    r0 = emit(b, insns, target or RawTarget(), fn.args[0], fn.args[1])
    b.ret(r0)
    engine, tm = _engine()
    mod = llvm.parse_assembly(str(module))
    mod.verify()
    pm = llvm.create_pass_builder(tm, llvm.PipelineTuningOptions(speed_level=2))
    pm.getModulePassManager().run(mod, pm)
    engine.add_module(mod)
    engine.finalize_object()
    addr = engine.get_function_address(name)
    return ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64)(addr)


_raw_names = itertools.count()
_engine_cache = []


def _engine():
    import llvmlite.binding as llvm
    if not _engine_cache:
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        tm = llvm.Target.from_default_triple().create_target_machine(opt=2)
        _engine_cache.append((llvm.create_mcjit_compiler(llvm.parse_assembly(""), tm), tm))
    return _engine_cache[0]
