"""Background write-back: file writes overlap the compiled work of the next batch.

write() releases the GIL and so do the compiled kernels (called through ctypes),
so one writer thread lets the page-cache copy of a full staging buffer run on
the second core while the main thread reads, runs and packs the next batches.
Jobs run in submission order; an error is re-raised to whoever waits on its job.
"""

import queue
import threading


class Job:
    """One submitted write; ``wait()`` returns when done or re-raises its error."""

    def __init__(self, fn):
        self.fn = fn
        self.error = None
        self.done = threading.Event()

    def wait(self):
        self.done.wait()
        if self.error is not None:
            error, self.error = self.error, None
            raise error


_jobs = queue.SimpleQueue()
_thread = None
_lock = threading.Lock()


def _worker():
    while True:
        job = _jobs.get()
        try:
            job.fn()
        except BaseException as exc:  # handed to the waiter, never lost
            job.error = exc
        job.done.set()


def submit(fn):
    """Run ``fn()`` on the write-back thread; returns its Job."""
    global _thread
    if _thread is None:
        with _lock:
            if _thread is None:
                _thread = threading.Thread(target=_worker, name="dataplane-writeback",
                                           daemon=True)
                _thread.start()
    job = Job(fn)
    _jobs.put(job)
    return job
