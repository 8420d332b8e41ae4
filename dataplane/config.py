"""Every numba flag and environment knob of the project, in one place.

Compiled kernels import their options from here so that a change of policy
(fastmath, error model, caching) is made once.
"""

import os

# numba's own cache is off everywhere: compiled kernels are cached as shared
# objects keyed on the hash of all their sources (native.py, jit.py), which
# numba's cache cannot do (it misses changes in called functions and globals).

#: Compiled functions are called from other compiled code, or from Python
#: through a C entry (jit.py): numba's CPython and C wrappers of each are not
#: built (cold l4lb: 28% of its compile). A numba dispatcher without them
#: crashes the process when Python calls it: call a kernel, not its
#: ``.dispatcher``.
_NO_WRAPPERS = dict(no_cpython_wrapper=True, no_cfunc_wrapper=True)

#: Options for I/O and runner kernels: no reference counting in the hot loops
#: (it costs an incref/decref per call with array tuples), no GIL.
KERNEL_JIT = dict(nogil=True, error_model="numpy", _nrt=False, **_NO_WRAPPERS)

#: Options for the per-program batch loop (kernels/runner.py).
RUNNER_JIT = dict(nogil=True, error_model="numpy", _nrt=False, **_NO_WRAPPERS)

#: Options for small kernels called from other kernels (inlined by LLVM;
#: numba-level inlining breaks exception handling, see numba-notes.md).
INLINE_JIT = dict(nogil=True, error_model="numpy", _nrt=False, **_NO_WRAPPERS)

#: Options for users' programs. numpy's error model gives eBPF's semantics for
#: division by zero (the result is 0, RFC 9669), not an exception.
PROGRAM_JIT = dict(nogil=True, error_model="numpy", _nrt=False, **_NO_WRAPPERS)

#: XDP_PACKET_HEADROOM: room in front of every packet for bpf_xdp_adjust_head.
HEADROOM = 256
#: Room behind every packet of a PacketBatch made without a tailroom.
TAILROOM = 256
#: Room behind every packet of a program that calls bpf_xdp_adjust_tail (the
#: others' batches keep none: Program.tailroom). Its data may reach a page less
#: skb_shared_info (4096 - 320 bytes) from the slot's start, 3520 bytes past the
#: headroom, as the kernel's BPF_PROG_TEST_RUN lets it: 256 refused a program
#: growing a 64-byte frame by 257..3456 bytes that the kernel runs.
GROW_TAILROOM = 4096 - 320 - HEADROOM
#: Packet slots start on this boundary, so data (HEADROOM further) does too and
#: the headers a program reads first share one cache line (XDP frames are pages).
SLOT_ALIGN = 64
#: A program that prepends headers (bpf_xdp_adjust_head / _meta) gets batches
#: whose data starts this far into a cache line, so that the 48 bytes in front
#: (an outer Ethernet + IPv6 header, or Ethernet + IPv4 + GUE's UDP) share the
#: line of the frame's first bytes, which the source wrote: on a line of their
#: own, they were a line nobody had touched, fetched for every packet and waited
#: for at each call's first PREFETCH_AHEAD packets (kernels/runner.py). The
#: kernel shifts a frame for its headers' sake likewise (NET_IP_ALIGN).
HEAD_LINE_OFFSET = 48
#: Buffers at least this large are backed by transparent huge pages where the
#: kernel offers them (madvise): a 1M-packet batch spans ~1 GB, and with 4 KiB
#: pages every few packets cost a TLB miss.
HUGE_PAGE_MIN = 4 << 20
#: The transparent huge page (x86-64's and arm64's PMD size with 4 KiB pages).
HUGE_PAGE = 2 << 20
#: Workers of the programs loaded from now on (per-CPU map slots, locked eBPF
#: atomics); set by workers.use_workers, from --workers.
WORKERS = 1
#: Default packets per batch. Each batch costs a few Python-level calls (~10 us
#: in all), so 1024 keeps that under 10 ns/packet; the compiled loop itself does
#: not care (bench shows both).
BATCH_SIZE = 1024
#: Largest record a capture may hold (libpcap's MAXIMUM_SNAPLEN).
MAX_SNAPLEN = 262144
#: Bytes read from a capture file per read() into a reused buffer.
READ_CHUNK = 8 << 20
#: Loop iterations a program may run on one packet before it is aborted.
LOOP_BUDGET = 1 << 20
#: Packets ahead of the current one whose headers the runner prefetches.
PREFETCH_AHEAD = 32
#: Packets between the loop's reads of CLOCK_MONOTONIC_COARSE, whose value
#: bpf_ktime_get_coarse_ns returns in between (the clock moves once a tick).
COARSE_EVERY = 64
#: A program's prefetch hook runs on the packet 2 * HOOK_AHEAD ahead of the
#: current one (its header already fetched), and the loop fetches the rows of
#: the hash buckets it fetched HOOK_AHEAD ahead: misses started in time.
HOOK_AHEAD = 8

#: The CPU that compiled code targets: numba's own NUMBA_CPU_NAME and
#: NUMBA_CPU_FEATURES when set (a cache portable across hosts, or valgrind,
#: which decodes no AVX-512), else the host's.
CPU_NAME = os.environ.get("NUMBA_CPU_NAME") or None
CPU_FEATURES = os.environ.get("NUMBA_CPU_FEATURES", "")

#: Where compiled programs are cached (keyed on the program's source hash).
CACHE_DIR = os.environ.get(
    "DATAPLANE_CACHE_DIR",
    os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "dataplane"),
)
