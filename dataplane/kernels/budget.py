"""The per-packet loop budget (numba intrinsics; imported only when compiling).

The kernel verifier bounds eBPF loops; Python programs get a budget instead:
the program checker puts ``if loop_budget_tick(): break`` at the top of every
loop body. The counter is one LLVM global (linkonce_odr, so the copies in the
program's and the runner's modules merge), reset by the runner for each packet;
once it passes config.LOOP_BUDGET every loop breaks at once, the program
returns, and the runner turns the verdict into XDP_ABORTED. No exception is
needed, so it costs a load, an add and a compare per iteration.
"""

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .. import config

_NAME = "dataplane_loop_budget"


def worker_global(builder, name, initial=0):
    """An int64 LLVM global shared by every module linked into one loop
    (linkonce_odr merges the copies): per-worker state of compiled code."""
    module = builder.module
    gv = module.globals.get(name)
    if gv is None:
        gv = ir.GlobalVariable(module, ir.IntType(64), name)
        gv.linkage = "linkonce_odr"
        gv.initializer = ir.Constant(ir.IntType(64), initial)
    return gv


def _counter(builder):
    return worker_global(builder, _NAME)


@intrinsic
def loop_budget_tick(typingctx):
    """Count one iteration; True once the packet's budget is spent."""
    def codegen(context, builder, signature, args):
        gv = _counter(builder)
        n = builder.add(builder.load(gv), ir.Constant(ir.IntType(64), 1))
        builder.store(n, gv)
        return builder.icmp_signed(">", n, ir.Constant(ir.IntType(64), config.LOOP_BUDGET))
    return types.boolean(), codegen


@intrinsic
def loop_budget_reset(typingctx):
    """Start a packet's budget (runner only)."""
    def codegen(context, builder, signature, args):
        builder.store(ir.Constant(ir.IntType(64), 0), _counter(builder))
        return context.get_dummy_value()
    return types.void(), codegen


@intrinsic
def loop_budget_spent(typingctx):
    """True when the packet's program ran out of loop budget (runner only)."""
    def codegen(context, builder, signature, args):
        n = builder.load(_counter(builder))
        return builder.icmp_signed(">", n, ir.Constant(ir.IntType(64), config.LOOP_BUDGET))
    return types.boolean(), codegen
