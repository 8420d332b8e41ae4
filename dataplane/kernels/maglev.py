"""Maglev ring fill (Katran's MaglevV2 ``generateHashRing``; Maglev paper, 3.4).

Real ``i`` walks its own permutation of the ring, ``(offset[i] + j * skip[i]) % N``
for j = 0, 1, ...: with N prime and 1 <= skip < N that visits every slot once.
Reals take turns in the order given; each turn a real adds its weight to an
accumulator and, while the accumulator is at least the largest weight, pays
that much for the next still-free slot of its permutation. Slot share is then
proportional to weight; with equal weights every real takes one slot a turn,
which is classic Maglev.
"""

import numpy as np

from .. import config
from ..jit import kernel


@kernel(**config.KERNEL_JIT)
def maglev_fill(offsets, skips, weights, ids, ring, nexts, acc):
    """Fill ``ring`` (uint32[N], N prime) with ``ids`` (>= 1) of reals with these
    ``offsets``, ``skips`` (1..N-1) and ``weights`` (>= 1). ``nexts`` and ``acc``
    (int64, one per real) are scratch: a real's next candidate slot and its
    accumulated weight. Returns the number of slots filled (N, or 0 without reals).
    """
    n = ring.size
    reals = offsets.size
    for s in range(n):
        ring[s] = 0
    if reals == 0:
        return np.int64(0)
    max_weight = np.int64(0)
    for i in range(reals):
        nexts[i] = offsets[i]
        acc[i] = 0
        max_weight = max(max_weight, weights[i])
    filled = np.int64(0)
    while True:
        for i in range(reals):
            acc[i] += weights[i]
            while acc[i] >= max_weight:
                acc[i] -= max_weight
                # the permutation is a running sum (no multiply, no modulo):
                # it always meets a free slot while the ring is not full
                slot = nexts[i]
                while ring[slot] != 0:
                    slot += skips[i]
                    if slot >= n:
                        slot -= n
                ring[slot] = ids[i]
                nxt = slot + skips[i]
                nexts[i] = nxt - n if nxt >= n else nxt
                filled += 1
                if filled == n:
                    return filled
