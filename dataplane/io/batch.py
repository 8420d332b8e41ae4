"""PacketBatch: the unit of work of the pipeline (the kernel's xdp_buff, times N).

All packets of a batch share one contiguous uint8 buffer. Packet ``i`` owns the
slot ``buf[frame_start[i]:frame_end[i]]``: ``HEADROOM`` bytes in front of its
data (XDP_PACKET_HEADROOM, for bpf_xdp_adjust_head), the data itself in
``buf[data[i]:data_end[i]]``, then ``TAILROOM`` bytes behind it (for
bpf_xdp_adjust_tail). Slots are packed back to back, so a batch of small frames
uses little memory and a jumbo frame still fits.

Per-packet columns are rows of one int64 array ``meta`` (kernels/layout.py), also
reachable by name as views, one entry per packet, valid for ``i < count``:
``data``, ``data_end``, ``frame_start``, ``frame_end`` (offsets into ``buf``),
``ts_ns`` (capture time, ns since the epoch), ``snap_cut`` (bytes of the frame
on the wire that the capture did not keep: orig_len - caplen; a writer gives the
output record orig_len = current length + snap_cut), ``ifindex`` (ingress ifindex),
``rx_queue``; the program's results go in ``action`` and ``redirect``.
"""

import mmap

import numpy as np

from .. import config
from ..errors import DataplaneError
from ..kernels import layout


def alloc_buffer(nbytes, what="a buffer"):
    """A zeroed uint8 buffer starting a cache line (config.SLOT_ALIGN); when large
    (config.HUGE_PAGE_MIN), on huge pages from a huge page's boundary on. numpy's
    own arrays start 16 bytes into a line: every 64-byte row laid out from such a
    base straddles two lines (a hash map's hit read its value from the second:
    l4lb, a second miss a packet), and 4 KiB pages under a connection table of
    megabytes cost a TLB miss on most lookups. The kernel places a mapping whose
    length is not whole huge pages at any page, and its 4 KiB pages up to the
    first boundary stay small (l4lb's maps: 24 of their 30 MB on huge pages,
    /proc/self/smaps; all of them from a boundary)."""
    nbytes = max(int(nbytes), 1)
    huge = config.HUGE_PAGE
    try:
        if nbytes < config.HUGE_PAGE_MIN:
            raw = np.zeros(nbytes + config.SLOT_ALIGN, np.uint8)
            skip = -raw.ctypes.data % config.SLOT_ALIGN
            return raw[skip:skip + nbytes]
        # one huge page more than whole huge pages, to start on a boundary
        size = -(-nbytes // huge) * huge
        m = mmap.mmap(-1, size + huge, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    # a --batch or max_entries too large for memory (OverflowError: for mmap's ssize_t)
    except (MemoryError, OSError, OverflowError) as exc:
        raise DataplaneError(f"cannot allocate {nbytes:,} bytes for {what}: "
                             f"{getattr(exc, 'strerror', None) or 'out of memory'}") from None
    skip = -np.frombuffer(m, np.uint8, count=1).ctypes.data % huge
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            m.madvise(mmap.MADV_HUGEPAGE, skip, size)
        except OSError:
            pass
    return np.frombuffer(m, np.uint8, count=nbytes, offset=skip)


class PacketBatch:
    """A batch of packets in one buffer with per-packet headroom (xdp_buff[]).

    ``capacity`` is the most packets a batch holds; ``buffer_bytes`` the size of
    the shared buffer (default: room for ``capacity`` full-size Ethernet frames
    with their headroom and tailroom). A source fills it from index 0 and sets
    ``count``; it is reused batch after batch, never reallocated on the hot path.
    ``line_offset``: ``buf`` starts that many bytes into a cache line, and so
    does every packet's data (slots are aligned to SLOT_ALIGN within ``buf``):
    config.HEAD_LINE_OFFSET for a program that prepends headers.
    """

    def __init__(self, capacity=config.BATCH_SIZE, buffer_bytes=None,
                 headroom=config.HEADROOM, tailroom=config.TAILROOM, line_offset=0):
        if capacity < 1:
            raise ValueError("batch capacity must be at least 1")
        if not 0 <= line_offset < config.SLOT_ALIGN:
            raise ValueError(f"line offset {line_offset} outside a {config.SLOT_ALIGN}-byte line")
        self.capacity = int(capacity)
        self.headroom = int(headroom)
        self.tailroom = int(tailroom)
        self.line_offset = int(line_offset)
        if buffer_bytes is None:
            buffer_bytes = self.capacity * (self.headroom + 2048 + self.tailroom)
        self.buf = self._alloc(buffer_bytes, f"a batch of {self.capacity:,} packets (--batch)")
        self.meta = np.zeros((layout.ROWS, self.capacity), np.int64)
        m = self.meta
        self.data, self.data_end = m[layout.DATA], m[layout.DATA_END]
        self.frame_start, self.frame_end = m[layout.FRAME_START], m[layout.FRAME_END]
        self.ts_ns, self.snap_cut = m[layout.TS_NS], m[layout.SNAP_CUT]
        self.ifindex, self.rx_queue = m[layout.IFINDEX], m[layout.RX_QUEUE]
        self.action, self.redirect = m[layout.ACTION], m[layout.REDIRECT]
        self.data_meta = m[layout.DATA_META]
        #: The maps of the program that ran the batch, by number (ran_by): a
        #: broadcast's target names its device map among them (broadcast.py).
        self.maps = ()
        #: The redirected packets by device, [(ifindex, positions)], once replay
        #: has grouped them (broadcast.redirect_groups) for its counts and its
        #: sinks; None until then.
        self.redirects = None
        self.count = 0
        self._native = None

    def ran_by(self, maps):
        """A program with ``maps`` (by number) ran the batch: its redirects are
        to be grouped again."""
        self.maps, self.redirects = maps, None

    @property
    def native_args(self):
        """(buf pointer, size, meta pointer, rows, columns): a kernel call's batch arguments."""
        if self._native is None:
            self._native = (self.buf.ctypes.data, self.buf.size, self.meta.ctypes.data,
                            self.meta.shape[0], self.meta.shape[1])
        return self._native

    @property
    def slot_overhead(self):
        """Bytes a packet's slot needs besides its data."""
        return self.headroom + self.tailroom

    def _alloc(self, nbytes, what="a buffer"):
        return alloc_buffer(nbytes + self.line_offset, what)[self.line_offset:]

    def ensure_buffer(self, nbytes):
        """Grow the shared buffer to at least ``nbytes`` (only for an outsized frame).

        Only valid on an empty batch: offsets of packets already in it would
        still be right, but callers refill from index 0 after growing.
        """
        if nbytes > self.buf.size:
            self.buf = self._alloc(nbytes)
            self._native = None

    def clear(self):
        """Forget the packets (the buffer is kept for the next fill)."""
        self.count = 0

    def append(self, frame, ts_ns=0, ifindex=0, rx_queue=0, snap_cut=0):
        """Add one frame from Python (tests, test_run). Returns False when full.

        Sources on the data path fill the arrays from compiled code instead.
        """
        frame = np.frombuffer(bytes(frame), np.uint8)
        i = self.count
        start = int(self.frame_end[i - 1]) if i else 0
        align = config.SLOT_ALIGN
        end = (start + self.headroom + frame.size + self.tailroom + align - 1) // align * align
        if i >= self.capacity or end > self.buf.size:
            return False
        d = start + self.headroom
        self.buf[d:d + frame.size] = frame
        self.frame_start[i], self.data[i] = start, d
        self.meta[layout.DATA_META, i] = d
        self.data_end[i], self.frame_end[i] = d + frame.size, end
        self.ts_ns[i] = ts_ns
        self.snap_cut[i] = snap_cut
        self.ifindex[i], self.rx_queue[i] = ifindex, rx_queue
        self.action[i], self.redirect[i] = 0, 0
        self.count = i + 1
        return True

    def packet(self, i):
        """The bytes of packet ``i`` as the program left them (a copy)."""
        if not 0 <= i < self.count:
            raise IndexError(f"packet {i} not in batch of {self.count}")
        return self.buf[self.data[i]:self.data_end[i]].tobytes()

    def metadata(self, i):
        """The metadata in front of packet ``i`` (bpf_xdp_adjust_meta's; b"" for none)."""
        if not 0 <= i < self.count:
            raise IndexError(f"packet {i} not in batch of {self.count}")
        return self.buf[self.data_meta[i]:self.data[i]].tobytes()

    def __len__(self):
        return self.count
