"""A packet's slot in a PacketBatch buffer, as every source fills it: headroom,
the data, tailroom up to a SLOT_ALIGN boundary, slots back to back
(io/batch.py ``append`` is the same layout from Python)."""

from ..config import KERNEL_JIT, SLOT_ALIGN
from ..jit import kernel
from .layout import (ACTION, DATA, DATA_END, DATA_META, FRAME_END, FRAME_START, IFINDEX,
                     REDIRECT, RX_QUEUE, SNAP_CUT)


@kernel(**KERNEL_JIT)
def slot_end(d, length, tailroom):
    """End of the slot whose data is ``length`` bytes at ``d``: the next slot's start."""
    return (d + length + tailroom + SLOT_ALIGN - 1) & -SLOT_ALIGN


@kernel(**KERNEL_JIT)
def set_slot(meta, n, fs, d, length, fe, snap_cut, ifindex):
    """Packet ``n``: slot ``fs``..``fe``, data ``length`` bytes at ``d``, no
    metadata, ``snap_cut`` bytes the capture did not keep, receive queue 0, no
    verdict yet. The source sets the timestamp."""
    meta[FRAME_START, n] = fs
    meta[DATA, n] = d
    meta[DATA_META, n] = d
    meta[DATA_END, n] = d + length
    meta[FRAME_END, n] = fe
    meta[SNAP_CUT, n] = snap_cut
    meta[IFINDEX, n] = ifindex
    meta[RX_QUEUE, n] = 0
    meta[ACTION, n] = 0
    meta[REDIRECT, n] = 0
