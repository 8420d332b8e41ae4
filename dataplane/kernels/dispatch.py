"""Kernels between the program and the sinks: byte counts and verdict grouping."""

import numpy as np

from .. import config
from ..jit import kernel
from .layout import ACTION, DATA, DATA_END


@kernel(**config.KERNEL_JIT)
def captured_bytes(meta, n):
    """Sum of the captured lengths of packets 0..n-1 (before the program runs)."""
    total = np.int64(0)
    for i in range(np.uint64(n)):
        total += meta[DATA_END, i] - meta[DATA, i]
    return total


@kernel(**config.KERNEL_JIT)
def group_by_action(meta, n, order, counts, pos):
    """Counting sort of packet indices by verdict: ``order`` holds the indices of
    action 0, then 1, ... (in packet order within each); ``counts[a]`` how many.
    ``pos`` is scratch of counts' size (kernels do not allocate)."""
    for a in range(counts.size):
        counts[a] = 0
    for i in range(np.uint64(n)):
        counts[meta[ACTION, i]] += 1
    pos[0] = 0
    for a in range(1, counts.size):
        pos[a] = pos[a - 1] + counts[a - 1]
    for i in range(np.uint64(n)):
        a = meta[ACTION, i]
        order[pos[a]] = i
        pos[a] += 1
