"""The compiled half of ``dataplane.io.pcap_merge``: a k-way merge of classic
pcap files by timestamp (Wireshark's mergecap), a window of each file at a time.

Each source k has a window of its bytes in row k of ``win`` (uint8[K * width],
rows back to back): ``pos[k]`` is its next record, ``end[k]`` the end of the
bytes read, ``eof[k]`` says no more follow. A binary heap of the sources
(``heap``, ``head_ts[k]`` the timestamp of source k's next record) gives the
next record: the earliest, ties to the lower source number, each source in its
own order (a file whose timestamps go back is not reordered, as in mergecap).
Records are copied into ``stage``; the kernel returns to Python to write a
full stage out (FLUSH) or to refill a window (NEED_MORE, ``st[ST_NEED]`` the
source), so memory stays K windows and a stage whatever the files' sizes.
Records are little-endian (the pipeline's own pcaps).
"""

import numpy as np

from ..config import KERNEL_JIT
from ..jit import kernel, lazy
from .pcap_walk import record_ts

memcpy = lazy("dataplane.kernels.memory", "memcpy")
_load32 = lazy("dataplane.kernels.memory", "load32")

DONE, FLUSH, NEED_MORE, CUT = 0, 1, 2, 3
# st slots: the stage's fill, sources in the heap, the source whose next
# record must be read before the heap is right (-1: none), the source to
# refill, records copied so far.
ST_SPOS, ST_NHEAP, ST_PENDING, ST_NEED, ST_RECORDS = range(5)
ST_SIZE = 5


@kernel(**KERNEL_JIT)
def _whole(win, p, e):
    """Bytes of the whole record at ``p`` (header included), or 0 when the
    window ends before it does."""
    if e - p < 16:
        return np.int64(0)
    size = 16 + np.int64(_load32(win, p + 8))
    return size if size <= e - p else np.int64(0)


@kernel(**KERNEL_JIT)
def _before(head_ts, a, b):
    """Source a's next record goes before source b's."""
    return head_ts[a] < head_ts[b] or (head_ts[a] == head_ts[b] and a < b)


@kernel(**KERNEL_JIT)
def _sift_down(heap, nh, head_ts, i):
    while True:
        least = i
        for c in (2 * i + 1, 2 * i + 2):
            if c < nh and _before(head_ts, heap[c], heap[least]):
                least = c
        if least == i:
            return
        heap[i], heap[least] = heap[least], heap[i]
        i = least


@kernel(**KERNEL_JIT)
def merge_start(win, width, pos, end, frac_ns, heap, head_ts, st):
    """Heap the sources whose window holds a whole first record; returns how many."""
    nh = 0
    for k in range(pos.size):
        p = k * width + pos[k]
        if _whole(win, p, k * width + end[k]):
            head_ts[k] = record_ts(win, p, False, frac_ns)
            heap[nh] = k
            nh += 1
    for i in range(nh // 2 - 1, -1, -1):
        _sift_down(heap, nh, head_ts, i)
    st[ST_SPOS] = 0
    st[ST_NHEAP] = nh
    st[ST_PENDING] = -1
    st[ST_RECORDS] = 0
    return nh


@kernel(**KERNEL_JIT)
def merge_records(win, width, pos, end, eof, frac_ns, heap, head_ts, stage, st):
    """Copy records in merged order into ``stage`` from ``st[ST_SPOS]`` until the
    sources are done (DONE), the next record does not fit the stage (FLUSH), a
    source's window ends inside its next record (NEED_MORE: refill source
    ``st[ST_NEED]``, its unread bytes moved to the front, and call again), or a
    source's file ends inside a record (CUT: source ``st[ST_NEED]``)."""
    spos = st[ST_SPOS]
    nh = st[ST_NHEAP]
    status = DONE
    while True:
        k = st[ST_PENDING]
        if k >= 0:  # source k (the heap's top) moved on: place its next record
            p, e = k * width + pos[k], k * width + end[k]
            if _whole(win, p, e):
                head_ts[k] = record_ts(win, p, False, frac_ns)
            elif eof[k] and p < e:
                st[ST_NEED] = k
                status = CUT
                break
            elif eof[k]:  # done: out of the heap
                nh -= 1
                heap[0] = heap[nh]
            else:
                st[ST_NEED] = k
                status = NEED_MORE
                break
            _sift_down(heap, nh, head_ts, 0)
            st[ST_PENDING] = -1
        if nh == 0:
            status = DONE
            break
        k = heap[0]
        p = k * width + pos[k]
        size = _whole(win, p, k * width + end[k])
        if spos + size > stage.size:
            status = FLUSH
            break
        memcpy(stage, spos, win, p, size)
        spos += size
        pos[k] += size
        st[ST_RECORDS] += 1
        st[ST_PENDING] = k
    st[ST_SPOS] = spos
    st[ST_NHEAP] = nh
    return status
