"""Background lanes: file reads and writes that overlap the compiled work.

read(), write() and the compiled kernels (called through ctypes) all release
the GIL, so a thread doing a file's system calls runs on the second core
while the main thread walks, runs and packs batches. Two lanes, each one
thread running its jobs in submission order:

- ``WRITEBACK``: a pcap writer's full staging buffer goes to its file
  (io/pcap.py PcapWriter.flush) while the kernel packs into the other one;
- ``READAHEAD``: a capture reader's next chunk is read into its spare buffer
  (io/capture.py) while the walker parses the current one.

Apart, so that a read never waits behind megabytes of queued writes. An
error is re-raised to whoever waits on its job.
"""

import os
import queue
import threading


class Job:
    """One submitted call; ``wait()`` returns its result when done or re-raises its error."""

    def __init__(self, fn):
        self.fn = fn
        self.result = None
        self.error = None
        self.done = threading.Event()

    def wait(self):
        self.done.wait()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return self.result


class Lane:
    """A thread running submitted calls one after another (started on first use)."""

    def __init__(self, name):
        self.name = name
        self._jobs = queue.SimpleQueue()
        self._thread = None
        self._lock = threading.Lock()

    def _serve(self):
        while True:
            job = self._jobs.get()
            try:
                job.result = job.fn()
            except BaseException as exc:  # handed to the waiter, never lost
                job.error = exc
            job.done.set()

    def submit(self, fn):
        """Run ``fn()`` on this lane's thread; returns its Job."""
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._serve, name=self.name,
                                                    daemon=True)
                    self._thread.start()
        job = Job(fn)
        self._jobs.put(job)
        return job

    def _forget(self):
        # a forked child has none of the parent's threads: start afresh on first use
        self._jobs, self._thread, self._lock = queue.SimpleQueue(), None, threading.Lock()


WRITEBACK = Lane("dataplane-writeback")
READAHEAD = Lane("dataplane-readahead")
os.register_at_fork(after_in_child=lambda: (WRITEBACK._forget(), READAHEAD._forget()))
