"""Every numba flag and environment knob of the project, in one place.

Compiled kernels import their options from here so that a change of policy
(fastmath, error model, caching) is made once.
"""

import os

#: Options for I/O and runner kernels: no reference counting in the hot loops
#: (it costs an incref/decref per call with array tuples), no GIL.
KERNEL_JIT = dict(nogil=True, cache=True, error_model="numpy", _nrt=False)

#: Options for the per-program batch loop (see kernels/runner.py). Python's error
#: model so that a program's exception propagates to Python, which aborts that
#: packet and resumes the batch after it.
RUNNER_JIT = dict(nogil=True, cache=True, error_model="python", _nrt=False)

#: Options for small kernels that are called from other kernels and must be inlined
#: by LLVM (numba-level inlining breaks exception handling, see numba-notes.md).
INLINE_JIT = dict(nogil=True, cache=True, error_model="numpy")

#: Options for users' programs: Python's error model, so a division by zero or a
#: tuple index out of range raises, and the runner turns it into XDP_ABORTED.
PROGRAM_JIT = dict(nogil=True, cache=True, error_model="python", _nrt=False)

#: XDP_PACKET_HEADROOM: room in front of every packet for bpf_xdp_adjust_head.
HEADROOM = 256
#: Room behind every packet for bpf_xdp_adjust_tail to grow into.
TAILROOM = 256
#: Default packets per batch.
BATCH_SIZE = 256
#: Largest record a capture may hold (libpcap's MAXIMUM_SNAPLEN).
MAX_SNAPLEN = 262144
#: Bytes read from a capture file per read() into a reused buffer.
READ_CHUNK = 8 << 20
#: Loop iterations one program invocation may run before it is aborted.
LOOP_BUDGET = 1 << 20
#: Packets ahead of the current one whose headers the runner prefetches.
PREFETCH_AHEAD = 16

#: Where compiled programs are cached (keyed on the program's source hash).
CACHE_DIR = os.environ.get(
    "DATAPLANE_CACHE_DIR",
    os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "dataplane"),
)
