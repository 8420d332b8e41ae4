"""The per-packet loop budget, and the worker globals it is one of (numba
intrinsics; imported only when compiling; the globals: kernels/worker_state.py).

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
from .worker_state import WORKER_GLOBALS

_NAME = "dataplane_loop_budget"


def worker_global(builder, name):
    """The int64 LLVM global ``name`` of kernels/worker_state.py, shared by every
    module linked into one loop (linkonce_odr merges the copies); thread-local
    once native.py has built it into a shared object."""
    module = builder.module
    gv = module.globals.get(name)
    if gv is None:
        gv = ir.GlobalVariable(module, ir.IntType(64), name)
        gv.linkage = "linkonce_odr"
        gv.initializer = ir.Constant(ir.IntType(64), WORKER_GLOBALS[name])
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


def worker_global_reader(name):
    """An intrinsic ``() -> int64`` reading worker global ``name``."""
    @intrinsic
    def read(typingctx):
        def codegen(context, builder, signature, args):
            return builder.load(worker_global(builder, name))
        return types.int64(), codegen
    return read


def worker_global_writer(name):
    """An intrinsic ``(value) -> None`` writing worker global ``name``."""
    @intrinsic
    def write(typingctx, value):
        def codegen(context, builder, signature, args):
            v = context.cast(builder, args[0], signature.args[0], types.int64)
            builder.store(v, worker_global(builder, name))
            return context.get_dummy_value()
        return types.void(value), codegen
    return write


#: The worker running the loop (bpf_get_smp_processor_id, per-CPU map slots),
#: set by the loop from its scratch array at each call.
worker_id = worker_global_reader("dataplane_worker_id")
worker_id_set = worker_global_writer("dataplane_worker_id")
#: The current packet's index in the run, for bpf_trace_printk records.
trace_packet = worker_global_reader("dataplane_trace_packet")
trace_packet_set = worker_global_writer("dataplane_trace_packet")
