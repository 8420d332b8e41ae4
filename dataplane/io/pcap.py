"""Classic pcap files: ``PcapReader`` (libpcap's sf-pcap.c) and ``PcapWriter`` (pcap_dump).

File layout: a 24-byte header (magic, version 2.4, thiszone, sigfigs,
snaplen, linktype) then records of a 16-byte header (ts_sec, ts_frac, caplen,
orig_len) and caplen bytes. The magic gives the byte order and the precision:
0xa1b2c3d4 microseconds, 0xa1b23c4d nanoseconds.
"""

import itertools
import mmap
import os
import stat
import struct

import numpy as np

from .. import config
from ..errors import CaptureError
from ..kernels import pcap_walk as K
from .background import WRITEBACK
from .capture import CaptureReader

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
HEADER = 24
#: Staging buffer of the writer: records are packed here, then one write().
STAGE_BYTES = 2 << 20


class PcapReader(CaptureReader):
    """Stream a classic pcap file into PacketBatches (libpcap's pcap_open_offline + pcap_next_ex).

    Both byte orders, microsecond and nanosecond magic. ``ifindex`` is 0 for
    every packet. Only Ethernet (link type 1) is accepted.

    ``start``/``end`` (file offsets) read one part of the file, so that separate
    processes can each replay one range from ``split_pcap``: exactly the records
    that begin in [start, end), ``end`` acting as the end of the file (a record
    running past it is an error unless ``end`` is the file's end). ``start`` must
    be a record boundary (its first two record headers are checked for
    plausibility, not proof) and defaults to the end of the 24-byte header,
    which is still read from offset 0.
    ``range`` is (start, end); ``offset`` stays a file offset and ``size`` the
    file's size; ``packets`` and the packet index of an error count from start.
    """

    def __init__(self, path, chunk_bytes=config.READ_CHUNK, *, start=None, end=None):
        self._want = (start, end)
        super().__init__(path, chunk_bytes)

    def _start(self):
        ranged = self._want != (None, None)
        if ranged:
            self._limit = HEADER  # read the header alone: the range may be far from it
        if not self._fill(HEADER):
            raise CaptureError(self.path, f"truncated file header: {self._end} of {HEADER} bytes",
                               offset=0)
        head = self._chunk[:HEADER].tobytes()
        for order in "<>":
            magic = struct.unpack_from(order + "I", head)[0]
            if magic in (MAGIC_US, MAGIC_NS):
                break
        else:
            raise CaptureError(self.path, f"not a pcap file (magic 0x{magic:08x})", offset=0)
        major, minor, _, _, snaplen, linktype = struct.unpack_from(order + "HHiIII", head, 4)
        if major != 2:
            raise CaptureError(self.path, f"unsupported pcap version {major}.{minor}", offset=4)
        self._swap = order == ">"
        self.nanosecond = magic == MAGIC_NS
        self._frac_ns = 1 if self.nanosecond else 1000
        self.snaplen = snaplen
        # The top 6 bits of the field carry FCS information (LT_LINKTYPE).
        self.linktype = linktype & 0x03FFFFFF
        if self.linktype != 1:
            raise CaptureError(self.path, f"link type {self.linktype} is not supported"
                               " (only ethernet, 1)", offset=20)
        self._pos = HEADER
        self.range = (HEADER, self.size)
        if ranged:
            self._seek_range(*self._want)

    def _seek_range(self, start, end):
        """Check the range, seek to its start and stop reading at its end."""
        start = HEADER if start is None else int(start)
        end = self.size if end is None else int(end)
        if not HEADER <= start <= self.size:
            raise CaptureError(self.path, f"range start {start} is outside the records"
                               f" (offsets {HEADER} to {self.size})", offset=start)
        if not start <= end <= self.size:
            raise CaptureError(self.path, f"range end {end} is outside offsets {start} to"
                               f" {self.size}", offset=end)
        self.range = (start, end)
        self._limit, self._eof = end, False
        self._skip(start - HEADER)
        # Two record headers (one plausible header by chance is not rare) must
        # pass the walker's length checks: split_pcap never starts a range
        # right before a fault. A start 4 bytes past a boundary can still pass.
        p = start
        for first in (True, False):
            if p + 16 > end or not self._fill(p - start + 16):
                break
            caplen, orig = struct.unpack_from(">II" if self._swap else "<II", self._chunk,
                                              self._pos + p - start + 8)
            if not 0 < caplen <= min(orig, config.MAX_SNAPLEN):
                what = "" if first else f", or its next record (offset {p}) is corrupt"
                raise CaptureError(self.path, f"range start {start} is not a record boundary"
                                   f"{what}: record length {caplen}, original length {orig}",
                                   offset=start)
            p += 16 + caplen

    def _truncated(self, need, n):
        end = self.range[1]
        if end < self.size:  # ranges come from split points, which are record boundaries
            raise self._error_at(f"record runs past the range end {end} (not a record"
                                 " boundary)", n)
        super()._truncated(need, n)

    def _walk(self, batch, n):
        return K.walk_pcap(
            self._chunk, self._pos, self._end, self._swap, self._frac_ns, config.MAX_SNAPLEN,
            batch.buf, batch.meta, n, batch.capacity, batch.headroom, batch.tailroom, self._st)


def split_pcap(path, parts):
    """Cut a classic pcap file into at most ``parts`` byte ranges [(start, end), ...]
    for ``PcapReader(path, start=, end=)``, one per task of a cluster.

    The ranges are contiguous from the end of the file header to the end of the
    file and start on record boundaries: split point k is the first boundary at or
    after k * size / parts, so parts are of about equal bytes. A compiled walk over
    a read-only map of the file reads the 16-byte record headers alone (a pcap has
    no index). A record the reader would refuse (bad length) or find cut by the end
    of the file stops the walk: it, the record before it and all after belong to
    the last range, whose reader reports it as a whole-file reader would.
    """
    path = str(path)
    parts = int(parts)
    if parts < 1:
        raise ValueError(f"parts must be at least 1, not {parts}")
    with PcapReader(path, chunk_bytes=64) as head:  # checks the header, gives the byte order
        swap, size = head._swap, head.size
    out = np.empty(0, np.int64)
    if parts > 1 and size > HEADER:
        # ceil(k * size / parts) without overflowing int64
        k = np.arange(1, parts, dtype=np.int64)
        targets = k * (size // parts) + (k * (size % parts) + parts - 1) // parts
        out = np.full(parts - 1, -1, np.int64)
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            data = np.frombuffer(mm, np.uint8)
            try:
                size = data.size
                K.split_points(data, HEADER, swap, config.MAX_SNAPLEN, targets, out)
            finally:
                del data  # the map cannot close while an array exports it
    out = out[out > HEADER]  # ascending; -1 past the walk's stop
    points = [HEADER] + out[np.diff(out, prepend=0) != 0].tolist() + [size]
    return list(itertools.pairwise(points))


def _replace_regular_file(path):
    """Unlink an existing plain file (one link, not a device, FIFO or symlink).

    A new file rather than a truncated one: ext4 forces out, on close, a file
    that was truncated and rewritten (auto_da_alloc), ~0.1 s per 100 MB. Any
    other kind of path is opened and truncated as usual.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
        os.unlink(path)


def create_output(path):
    """A new, unbuffered file at ``path`` for writing (an old plain file there is
    replaced, not truncated: see _replace_regular_file), or a one-line CaptureError."""
    try:
        _replace_regular_file(path)
        return open(path, "wb", buffering=0)
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        raise CaptureError(path, f"cannot create: {reason}") from None


def write_all(f, path, data):
    """Write all of ``data`` to the unbuffered file ``f`` (of ``path``), or raise
    a one-line CaptureError naming the offset."""
    view = memoryview(data)
    try:
        while len(view):
            view = view[f.write(view):]
    except OSError as e:
        reason = (e.strerror or str(e)).lower()
        raise CaptureError(path, f"write failed: {reason}", offset=f.tell()) from None


class PcapWriter:
    """Write packets to a classic little-endian pcap file (libpcap's pcap_dump_open + pcap_dump).

    ``nanosecond`` picks the magic (0xa1b23c4d) and keeps ts_ns whole;
    otherwise timestamps are truncated to microseconds. Packets longer than
    ``snaplen`` are cut to it (orig_len keeps their length). Records are packed
    by a compiled kernel into a reused staging buffer that goes to the
    unbuffered file in one write() when full and at ``flush()``/``close()``.
    Counters: ``packets`` written and ``bytes`` of file (header included).
    """

    def __init__(self, path, nanosecond=True, snaplen=config.MAX_SNAPLEN, linktype=1,
                 stage_bytes=STAGE_BYTES):
        self.path = str(path)
        self.nanosecond = bool(nanosecond)
        self.snaplen = int(snaplen)
        self.linktype = int(linktype)
        self._f = create_output(self.path)
        # Two staging buffers: one is written back in the background while the
        # kernel packs into the other (io/background.py).
        self._stages = [np.empty(max(int(stage_bytes), HEADER), np.uint8) for _ in range(2)]
        self._stage = self._stages[0]
        self._pending = None
        self._st = np.zeros(K.ST_SIZE, np.int64)
        magic = MAGIC_NS if self.nanosecond else MAGIC_US
        self._stage[:HEADER] = np.frombuffer(
            struct.pack("<IHHiIII", magic, 2, 4, 0, 0, self.snaplen, self.linktype), np.uint8)
        self._spos = HEADER
        self.packets = 0
        self.bytes = HEADER

    def write_batch(self, batch, indices, n=None, start=0):
        """Write ``batch`` packets ``indices[start:n]`` as the program left them.

        Pass a whole index array with ``start``/``n`` rather than a slice: a new
        array per call costs a pointer look-up (~1 us) on the way to the kernel.
        """
        if self._f is None:
            raise CaptureError(self.path, "write to a closed pcap writer")
        indices = np.asarray(indices)
        n = len(indices) if n is None else int(n)
        if not 0 <= start <= n <= len(indices):
            raise ValueError(f"indices {start}..{n} outside the {len(indices)} given")
        i = int(start)
        while i < n:
            j = K.pack_pcap(self._stage, self._spos, batch.buf, batch.meta, batch.count, indices,
                            i, n, self.nanosecond, self.snaplen, self._st)
            spos = int(self._st[K.ST_POS])
            self.bytes += spos - self._spos
            self.packets += j - i
            self._spos = spos
            if self._st[K.ST_A]:
                raise IndexError(f"index {int(indices[j])} outside the batch of {batch.count}")
            if j < n:
                if j == i and spos == 0:  # larger than the whole staging buffer
                    k = int(indices[j])
                    d, e = int(batch.data[k]), int(batch.data_end[k])
                    self._record(memoryview(batch.buf)[d:e], int(batch.ts_ns[k]),
                                 e - d + int(batch.snap_cut[k]))
                    j += 1
                else:
                    self.flush()
            i = j

    def write(self, frame_bytes, ts_ns=0, orig_len=None):
        """Write one frame from Python (tests, tools); ``orig_len`` defaults to its length."""
        if self._f is None:
            raise CaptureError(self.path, "write to a closed pcap writer")
        frame = memoryview(bytes(frame_bytes))
        self._record(frame, int(ts_ns), len(frame) if orig_len is None else int(orig_len))

    def _record(self, frame, ts_ns, orig_len):
        frame = frame[:self.snaplen]
        sec, frac = divmod(ts_ns, 1_000_000_000)
        if not self.nanosecond:
            frac //= 1000
        head = struct.pack("<IIII", sec & 0xFFFFFFFF, frac, len(frame), min(orig_len, 0xFFFFFFFF))
        size = len(head) + len(frame)
        if self._spos + size > self._stage.size:
            self.flush()
        if size > self._stage.size:
            self._write_all(head)
            self._write_all(frame)
        else:
            s = self._spos
            self._stage[s:s + 16] = np.frombuffer(head, np.uint8)
            self._stage[s + 16:s + size] = np.frombuffer(frame, np.uint8)
            self._spos += size
        self.packets += 1
        self.bytes += size

    def _write_now(self, data):
        write_all(self._f, self.path, data)

    def _wait(self):
        if self._pending is not None:
            job, self._pending = self._pending, None
            job.wait()

    def _write_all(self, data):
        self._wait()  # keep file order behind a background write
        self._write_now(data)

    def flush(self, wait=False):
        """Hand the staged records to the write-back thread (and wait if asked)."""
        if self._spos and self._f is not None:
            self._wait()
            view = memoryview(self._stage)[:self._spos]
            self._pending = WRITEBACK.submit(lambda: self._write_now(view))
            self._stage = self._stages[1] if self._stage is self._stages[0] else self._stages[0]
            self._spos = 0
        if wait:
            self._wait()

    def close(self):
        """Flush, wait for the file's writes and close it."""
        if self._f is not None:
            try:
                self.flush(wait=True)
            finally:
                self._f.close()
                self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        # A writer dropped without close() still writes its staged records.
        if getattr(self, "_f", None) is not None:
            self.close()

    def __repr__(self):
        return f"PcapWriter({self.path!r}, packets={self.packets}, bytes={self.bytes})"
