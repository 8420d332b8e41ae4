"""dataplane: an XDP-style packet-processing dataplane in Python, compiled with numba.

The public API: write a program with ``@xdp``, load it with ``load_program``,
run it on a ``PacketBatch`` or one frame (``Program.test_run``).
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys

# numpy's bundled OpenBLAS starts a thread per core at import, and each spins
# for a while waiting for work (15% of a replay's CPU samples, on the cores the
# pipeline and its write-back thread run on). dataplane never calls BLAS; a
# user who wants it threaded sets OPENBLAS_NUM_THREADS, or imports numpy first.
if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from .action import (XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,  # noqa: F401
                     XdpAction)
from .errors import DataplaneError, ProgramError, UsageError, CaptureError  # noqa: F401
from .helpers import (bpf_get_prandom_u32, bpf_get_smp_processor_id,  # noqa: F401
                      bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_redirect,
                      bpf_xdp_adjust_head, bpf_xdp_adjust_meta, bpf_xdp_adjust_tail)
from .helpers import bpf_printk, bpf_trace_printk  # noqa: F401
from .io.batch import PacketBatch  # noqa: F401
from .program import Program, ProgramSpec, load_program, xdp  # noqa: F401
