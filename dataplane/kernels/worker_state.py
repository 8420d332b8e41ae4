"""The per-worker state of compiled code: the LLVM globals intrinsics keep
between calls (a packet's loop budget, its pending tail call, the random
generator, the capture clock, the worker's number).

Each is one int64 named here with its initial value (no numba: native.py
reads the table too). In the numba module a global is a plain linkonce_odr
global (kernels/budget.py ``worker_global``); in a native shared object it is
thread-local (native.py): one copy per worker thread, as the kernel keeps per
CPU the state a program's helpers carry (bpf_get_prandom_u32's rnd_state, the
tail-call count in the run context).
"""

#: name -> initial value of every per-worker global.
WORKER_GLOBALS = {
    "dataplane_loop_budget": 0,
    "dataplane_prandom_state": 0x853C49E6748FEA9B,
    "dataplane_ktime_capture": 0,
    "dataplane_coarse_now": 0,
    "dataplane_tail_target": 0,
    "dataplane_tail_count": 0,
    "dataplane_prefetch_memo": 0,
    "dataplane_lookup_hint": 0,
    "dataplane_worker_id": 0,
    "dataplane_trace_packet": 0,
}
