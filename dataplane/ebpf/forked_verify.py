"""The verifier in a forked child while numba starts in the parent.

A cold load of an object runs two long stretches of pure Python one after the
other: the verifier (0.37 s for 3,055 instructions) and numba's start (its
import and the set-up of its registries, 0.26-0.35 s, before the first
compile). One thread cannot overlap them (the GIL), two processes can: the
child verifies and sends the analyses back pickled, while the parent starts
numba. The kernel's verifier has no counterpart; this is ``make -j`` for a
cold cache.

Only where it pays: more than one core, numba not started yet, and a program
long enough to take longer to verify than a fork costs (~5 ms). A rejection
or a child that ends without an answer is verified again here, so the error
raised is the verifier's own, from this process.
"""

import os
import pickle
import sys

from . import verifier

#: Instructions (all programs together) below which the child is not worth its fork.
MIN_INSNS = 1000


def verify_all(jobs, maps, helpers, warm, fork=None):
    """``[verifier.verify(insns, maps, name, helpers) for name, insns in jobs]``,
    in a forked child while ``warm()`` runs here when ``fork`` (None: when it
    pays, see the module's docstring)."""
    if fork is None:
        fork = _pays(jobs)
    data = _in_child(jobs, maps, helpers, warm) if fork else None
    if data:
        return pickle.loads(data)
    return [verifier.verify(insns, maps, name, helpers) for name, insns in jobs]


def _pays(jobs):
    return (hasattr(os, "fork") and "numba" not in sys.modules
            and sum(len(insns) for _, insns in jobs) >= MIN_INSNS and _cores() > 1)


def _cores():
    """The cores this process may run on (os.cpu_count where the OS has no affinity)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _in_child(jobs, maps, helpers, warm):
    """The child's pickled analyses, or b"" when it gave none (a rejection)."""
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:  # no memory or no process left for it: verify here
        os.close(r)
        os.close(w)
        return b""
    if pid == 0:  # the child: only the verifier runs here, then it ends
        try:
            os.close(r)
            data = pickle.dumps([verifier.verify(insns, maps, name, helpers)
                                 for name, insns in jobs])
            with open(w, "wb") as f:
                f.write(data)
        finally:
            os._exit(0)
    os.close(w)
    try:
        warm()
    finally:  # (Ctrl-C reaches the child too: it ends without an answer)
        with open(r, "rb") as f:
            data = f.read()
        os.waitpid(pid, 0)
    return data
