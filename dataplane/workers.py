"""Several workers running one program on a batch, in parallel: XDP's one
program instance per receive queue, on threads.

Each batch is steered RSS-style (kernels/steer.py: a symmetric flow hash, a
stable partition), and worker k runs its range of the partition with the
program's ordinary batch loop in its own thread. The loop is native code
called through ctypes, which releases the GIL, so the workers run at once;
their per-worker state (loop budget, tail calls, random state, the number
bpf_get_smp_processor_id returns) is thread-local (native.py), per-CPU maps
give each worker its own slot, and shared maps take their lock for inserts
and deletes as the kernel's do. Threads, not processes: the maps, the batch
and the control plane are shared without copies, and a batch's hand-off costs
two lock operations (~10 us), not a pickle.

After the workers are done, the verdicts are put back in capture order, so
sinks, counters and traces see the batch exactly as one worker leaves it.
"""

import functools
import os
import threading

import numpy as np

from . import config, native
from .errors import DataplaneError, UsageError
from .kernels import layout, runner as runner_kernels
from .kernels.steer import count_verdicts, steer, unsteer


def parse_workers(value, where="--workers"):
    """``N`` or ``auto`` (the cores this process may run on) -> int >= 1."""
    text = str(value).strip().lower()
    if text == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 1024:
        raise UsageError(f"{where}: expected a number of workers from 1 to 1024 or 'auto', "
                         f"not {value!r}")
    return n


def check_workers(n):
    """Refuse N > 1 where worker state cannot be thread-local (no C compiler:
    kernels then run through numba's JIT, whose globals are shared)."""
    if n > 1 and native.compiler() is None:
        raise DataplaneError(f"--workers {n}: needs a C compiler (cc) to build thread-local "
                             f"worker state; without one only --workers 1 runs")


def use_workers(n):
    """Programs loaded from now on run on ``n`` workers: per-CPU maps get ``n``
    slots, eBPF atomics are locked when ``n`` > 1. Call before loading."""
    check_workers(n)
    config.WORKERS = n


class _SteeredBatch:
    """The batch as a worker's loop sees it: the same buffer, meta's columns
    in steered order (Program._call reads only ``native_args``)."""

    def __init__(self, batch, meta):
        self.native_args = (batch.buf.ctypes.data, batch.buf.size, meta.ctypes.data,
                            meta.shape[0], meta.shape[1])


class WorkerThreads:
    """``n`` workers: the calling thread is worker 0, ``n - 1`` threads the rest.

    ``run_all(jobs)`` runs ``jobs[k]()`` on worker k, all at once, and returns
    when every one is done (a job is Python around native calls, which run
    without the GIL). ``close()`` ends the threads.
    """

    def __init__(self, n):
        check_workers(n)
        self.n = n
        self._jobs = [None] * n
        self._errors = [None] * n
        self._start = [threading.Lock() for _ in range(n)]
        self._done = [threading.Lock() for _ in range(n)]
        self._closing = False
        self._threads = []
        for k in range(1, n):
            self._start[k].acquire()
            self._done[k].acquire()
            t = threading.Thread(target=self._serve, args=(k,), name=f"dataplane-worker-{k}",
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, k):
        start, done = self._start[k], self._done[k]
        while True:
            start.acquire()
            if self._closing:
                done.release()
                return
            try:
                self._jobs[k]()
            except BaseException as exc:  # handed to the caller of run_all
                self._errors[k] = exc
            done.release()

    def run_all(self, jobs):
        self._jobs = jobs
        for k in range(1, self.n):
            self._start[k].release()
        try:
            jobs[0]()
        finally:
            for k in range(1, self.n):
                self._done[k].acquire()
        for k, exc in enumerate(self._errors):
            if exc is not None:
                self._errors[k] = None
                raise exc

    def close(self):
        """End the threads (idle between run_all calls)."""
        if self._closing:
            return
        self._closing = True
        for k in range(1, self.n):
            self._start[k].release()
        for t in self._threads:
            t.join()


class Workers:
    """``n`` workers running ``program`` (its maps shared, per-CPU maps per worker).

    ``run_batch(batch, base_index)`` is Program.run_batch run by all of them;
    ``packets[k]`` and ``actions[k]`` (per verdict) count what worker k ran.
    ``close()`` ends the threads.
    """

    def __init__(self, program, n):
        short = [name for name, m in program.maps.items() if getattr(m, "ncpu", 1) < n
                 and getattr(m, "percpu", False)]
        if short:  # its per-CPU maps were made for fewer workers: their slots would overflow
            raise UsageError(f"{program.name}: loaded for {config.WORKERS} worker(s), not {n} "
                             f"(per-CPU map '{short[0]}'): call use_workers({n}) before "
                             f"loading it")
        self.program, self.n = program, n
        self.threads = WorkerThreads(n)
        self.views = [program.for_worker(k) for k in range(n)]
        self.packets = np.zeros(n, np.int64)
        self.actions = np.zeros((n, 5), np.int64)
        self._bounds = np.zeros(n + 1, np.int64)
        self._capacity = 0
        self._batch = self._batch_of = None

    # the program's face, for the pipeline
    def __getattr__(self, name):
        return getattr(self.program, name)

    def _arrays(self, batch):
        if batch.capacity != self._capacity:
            self._capacity = c = batch.capacity
            self._worker_of = np.zeros(c, np.int64)
            self._perm = np.zeros(c, np.int64)
            self._meta = np.zeros((layout.ROWS, c), np.int64)
            self._batch_of = None
        if self._batch_of is not batch or self._batch.native_args[0] != batch.buf.ctypes.data:
            self._batch, self._batch_of = _SteeredBatch(batch, self._meta), batch
        return self._batch

    def run_batch(self, batch, base_index=0):
        """Program.run_batch with the packets spread over the workers."""
        program, n, count = self.program, self.n, batch.count
        batch.ran_by(program.numbered_maps)
        steered = self._arrays(batch)
        steer(batch.buf, batch.meta, count, n, self._worker_of, self._perm, self._bounds,
              self._meta)
        main = program._scratch
        seed = int(main[layout.SCRATCH_SEED])
        for k, v in enumerate(self.views):  # what the program's own scratch asks for
            if seed:  # a seed per worker, as each CPU has its own generator state
                v._scratch[layout.SCRATCH_SEED] = (seed * (2 * k + 1)) & 0x7FFFFFFFFFFFFFFF or 1
            v._scratch[layout.SCRATCH_KTIME] = main[layout.SCRATCH_KTIME]
        main[layout.SCRATCH_SEED] = 0
        if program._trace is not None:
            program._trace.hdr[runner_kernels.TRACE_BASE] = base_index
        b = self._bounds
        self.threads.run_all([functools.partial(v._call, steered, int(b[k]), int(b[k + 1]))
                              for k, v in enumerate(self.views)])
        count_verdicts(self._meta, b, n, self.actions)  # (adds to the counts)
        self.packets += np.diff(b)
        for v in self.views:
            program.take_counters(base_index, v._scratch, self._perm)
        unsteer(batch.meta, count, self._perm, self._meta)
        if program._trace is not None:
            program._take_trace(base_index, self._perm)

    def per_worker(self):
        """[{worker, packets, actions{name: count}}] for stats and -j."""
        from .action import ACTION_NAMES
        return [{"worker": k, "packets": int(self.packets[k]),
                 "actions": {ACTION_NAMES[a]: int(self.actions[k, a]) for a in range(5)}}
                for k in range(self.n)]

    def close(self):
        """End the worker threads (idle between batches)."""
        self.threads.close()
