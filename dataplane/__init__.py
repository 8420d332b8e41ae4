"""dataplane: an XDP-style packet-processing dataplane in Python, compiled with numba.

The public API: write a program with ``@xdp``, load it with ``load_program``,
run it on a ``PacketBatch`` or one frame (``Program.test_run``).
"""

__version__ = "0.1.0"

from .action import (XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX,  # noqa: F401
                     XdpAction)
from .errors import DataplaneError, ProgramError, UsageError, CaptureError  # noqa: F401
from .helpers import (bpf_get_prandom_u32, bpf_get_smp_processor_id,  # noqa: F401
                      bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_redirect,
                      bpf_xdp_adjust_head, bpf_xdp_adjust_meta, bpf_xdp_adjust_tail)
from .helpers import bpf_printk, bpf_trace_printk  # noqa: F401
from .io.batch import PacketBatch  # noqa: F401
from .program import Program, ProgramSpec, load_program, xdp  # noqa: F401
