"""Capture files in: the streaming machinery shared by the readers, and ``open_capture``.

``open_capture`` is libpcap's ``pcap_open_offline``: it sniffs the magic and
returns a ``PcapReader`` (classic pcap) or a ``PcapngReader``. Both stream the
file through a reused chunk buffer (``config.READ_CHUNK``): memory stays
bounded whatever the file's size, and Python runs once per batch while a
compiled walker (``dataplane.kernels.pcap_walk``) does the per-packet work.

The next chunk is read ahead, into a spare buffer, on a background thread
(io/background.py) while the walker parses the current one; when the walker
reaches the end, the unread tail (a record cut by the chunk's end) is copied
in front of the new data and the two buffers swap. The read() calls, a
quarter of a 1-worker replay's own time on a capture in the page cache, move
to the second core (shared with the write-back): a whole replay -p drop_udp of
the 1M-packet capture went 0.53-0.55 -> 0.50 s.
"""

import os
import stat

import numpy as np

from .. import config
from ..errors import CaptureError
from ..kernels import pcap_walk as K
from .background import READAHEAD

PCAP_MAGICS = (0xA1B2C3D4, 0xD4C3B2A1, 0xA1B23C4D, 0x4D3CB2A1)
PCAPNG_MAGIC = 0x0A0D0D0A
#: Bytes kept free in front of a chunk read ahead, for the tail it continues.
#: A longer tail (a record above 256 KiB cut by the chunk's end) is read again.
READ_RESERVE = 1 << 18
#: Chunks smaller than this are not read ahead (a header check, tests' tiny chunks).
READ_AHEAD_MIN = 1 << 20


def open_file(path):
    """Open ``path`` unbuffered for reading -> (file, size), or raise a one-line
    CaptureError (missing, a directory, not a regular file, no permission,
    empty). A FIFO is refused before it is opened: open() waited for a writer
    for ever, and a pipe's size says nothing of its bytes."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = None  # open() below names the reason
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else \
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a special file"
        raise CaptureError(path, f"is {kind}, not a capture file")
    try:
        f = open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise CaptureError(path, "no such file") from None
    except IsADirectoryError:
        raise CaptureError(path, "is a directory, not a capture file") from None
    except PermissionError:
        raise CaptureError(path, "permission denied") from None
    except OSError as e:
        raise CaptureError(path, f"cannot open: {(e.strerror or str(e)).lower()}") from None
    size = os.fstat(f.fileno()).st_size
    if size == 0:
        f.close()
        raise CaptureError(path, "empty file, not a capture")
    return f, size


def open_capture(path, chunk_bytes=config.READ_CHUNK, start=None, end=None):
    """Open a pcap or pcapng file by its magic (libpcap's pcap_open_offline).

    ``start``/``end`` read one byte range of a classic pcap file (a part from
    ``split_pcap``, see ``PcapReader``); pcapng has no such ranges.
    Raises CaptureError for a missing or unreadable file, an empty file and a
    magic that is neither pcap (either byte order, us or ns) nor pcapng.
    """
    path = str(path)
    f, _ = open_file(path)
    with f:
        head = f.read(4)
    if len(head) < 4:
        raise CaptureError(path, f"truncated file header: {len(head)} of 4 magic bytes", offset=0)
    magic = int.from_bytes(head, "little")
    if magic in PCAP_MAGICS:
        from .pcap import PcapReader
        return PcapReader(path, chunk_bytes, start=start, end=end)
    if magic == PCAPNG_MAGIC:
        if start is not None or end is not None:
            raise CaptureError(path, "byte ranges are for classic pcap files, not pcapng")
        from .pcapng import PcapngReader
        return PcapngReader(path, chunk_bytes)
    raise CaptureError(path, f"not a pcap or pcapng file (magic 0x{magic:08x})", offset=0)


class CaptureReader:
    """Base of the capture readers: one file, one reused chunk, batches out.

    Attributes: ``path``, ``size`` (file bytes), ``offset`` (bytes consumed),
    ``packets`` (records delivered), ``linktype``, ``snaplen``, ``nanosecond``,
    ``warnings`` (one-line strings). Subclasses parse the file header in
    ``_start()`` and run their walker in ``_walk(batch, n)``.
    """

    def __init__(self, path, chunk_bytes=config.READ_CHUNK):
        self.path = str(path)
        self.linktype = 1
        self.snaplen = 0
        self.nanosecond = False
        self.warnings = []
        self.packets = 0
        self._f, self.size = open_file(self.path)
        # np.empty touches no page until read into: a small file costs little.
        self._chunk = np.empty(max(int(chunk_bytes), 64), np.uint8)
        self._base = 0     # file offset of chunk[0]
        self._pos = 0      # next unread byte in the chunk
        self._end = 0      # bytes of the chunk holding file data
        self._limit = None  # file offset where reading stops (None: end of file)
        self._eof = False
        self._done = False
        self._error = None  # a fault found after the packets before it were delivered
        self._spare = None  # the buffer read ahead into (allocated on first use)
        self._ahead = None  # (Job, file offset) of the read ahead under way
        self._st = np.zeros(K.ST_SIZE, np.int64)
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    @property
    def output_snaplen(self):
        """The snap length for pcaps written from this capture: its own (so a
        pass-everything replay copies a pcap byte for byte), or the maximum
        when it has none (0)."""
        return self.snaplen if self.snaplen > 0 else config.MAX_SNAPLEN

    @property
    def offset(self):
        """Bytes of the file consumed so far (for progress)."""
        return self._base + self._pos

    # -- chunk management (Python, once per refill) --------------------------
    def _fill(self, need):
        """Make ``need`` bytes available at ``_pos``; False at end of file.

        Takes the chunk read ahead when it continues this one, else moves the
        unread tail to the front and reads after it (growing the chunk for a
        record larger than it, bounded by the record checks); then starts
        reading the next chunk ahead.
        """
        if self._end - self._pos >= need:
            return True
        if self._eof:
            return False
        if not self._take_ahead(need):
            rest = self._end - self._pos
            if self._pos:
                self._chunk[:rest] = self._chunk[self._pos:self._end]
                self._base += self._pos
                self._pos, self._end = 0, rest
            if need > self._chunk.size:
                grown = np.empty(need, np.uint8)
                grown[:rest] = self._chunk[:rest]
                self._chunk = grown
        view = memoryview(self._chunk)
        stop = self._chunk.size
        if self._limit is not None:  # a byte range: read nothing past its end
            stop = min(stop, self._limit - self._base)
        if self._end < stop:
            got = self._read_at(view[self._end:stop], self._base + self._end)
            self._end += got
            if self._end < stop:
                self._eof = True
        if self._limit is not None and self._base + self._end >= self._limit:
            self._eof = True
        self._read_ahead()
        return self._end - self._pos >= need

    def _read_ahead(self):
        """Start reading the bytes after the chunk into the spare buffer."""
        if self._eof or self._chunk.size < READ_AHEAD_MIN:
            return
        if self._spare is None:
            self._spare = np.empty(self._chunk.size, np.uint8)
        offset = self._base + self._end
        stop = self.size if self._limit is None else self._limit
        n = min(self._spare.size - READ_RESERVE, stop - offset)
        if n <= 0:
            return
        view = memoryview(self._spare)[READ_RESERVE:READ_RESERVE + n]
        self._ahead = (READAHEAD.submit(lambda: self._read_at(view, offset)), offset)

    def _take_ahead(self, need):
        """Swap in the chunk read ahead, the unread tail copied in front of it;
        False (the read wasted) when it does not continue the chunk or the
        tail or ``need`` does not fit."""
        if self._ahead is None:
            return False
        job, offset = self._ahead
        try:
            got = job.wait()
        finally:
            if job.done.is_set():  # (interrupted, it stays noted: close() waits for it)
                self._ahead = None
        rest, spare = self._end - self._pos, self._spare
        if offset != self._base + self._end or rest > READ_RESERVE or \
                need > spare.size - READ_RESERVE + rest:
            return False
        spare[READ_RESERVE - rest:READ_RESERVE] = self._chunk[self._pos:self._end]
        self._spare, self._chunk = self._chunk, spare
        self._base = offset - READ_RESERVE
        self._pos, self._end = READ_RESERVE - rest, READ_RESERVE + got
        return True

    def _read_at(self, view, offset):
        """Read into ``view`` from file offset ``offset`` until it is full or the
        file ends: the bytes read. pread, not read: the reader and its read-ahead
        thread share no file position (close() waits for the thread's read before
        closing the file). A failed read is a one-line CaptureError."""
        got, fd = 0, self._f.fileno()
        try:
            while got < len(view):
                n = os.preadv(fd, [view[got:]], offset + got)
                if n == 0:
                    break
                got += n
        except OSError as e:
            raise CaptureError(self.path, f"read failed: {(e.strerror or str(e)).lower()}",
                               offset=offset + got) from None
        return got

    def _skip(self, nbytes):
        """Consume ``nbytes`` from ``_pos``; past the chunk, reading goes on from there."""
        inside = self._end - self._pos
        if nbytes <= inside:
            self._pos += nbytes
            return
        self._base += self._end + (nbytes - inside)
        self._pos = self._end = 0

    def _truncated(self, need, n):
        """Note a record cut short by the end of the file (reading ends there)."""
        have = self.size - self.offset
        self.warnings.append(
            f"truncated record at end of file: offset {self.offset}, packet {self.packets + n}"
            f" ({have} of {need} bytes present)")

    def _error_at(self, message, n):
        return CaptureError(self.path, message, offset=self.offset, index=self.packets + n)

    # -- public API -----------------------------------------------------------
    def read_batch(self, batch):
        """Fill ``batch`` from index 0 with the next records; return the count (0 at end).

        A fault raises CaptureError, after the packets before it were returned
        by this call. A record cut by the end of the file ends reading with a
        warning in ``warnings``.
        """
        if self._error is not None:
            raise self._error
        n = 0
        st = self._st
        while not self._done:
            status = self._walk(batch, n)
            n = int(st[K.ST_COUNT])
            self._pos = int(st[K.ST_POS])
            if status == K.FULL:
                break
            try:
                if status == K.NEED_MORE:
                    self._more(int(st[K.ST_NEED]), n)
                elif status == K.NEED_BUFFER:
                    batch.ensure_buffer(int(st[K.ST_NEED]))
                elif status == K.ERROR:
                    raise self._error_at(self._fault_message(), n)
                else:
                    self._block(n)
            except CaptureError as e:
                self._error = e
                self._done = True
                if n == 0:
                    raise
        batch.count = n
        self.packets += n
        return n

    def _more(self, need, n):
        """The walker stopped at a record not wholly in the chunk: refill, or end there."""
        stop = self.size if self._limit is None else self._limit
        if self.offset + need <= stop and self._fill(need):
            return
        if self.offset < stop:
            self._truncated(need, n)
        self._done = True
        cut = int(self._st[K.ST_SNAPCUT])
        if cut:
            self.warnings.append(f"{cut} of {self.packets + n} records shorter than on the wire"
                                 f" (cut by the snap length)")

    def _fault_message(self):
        """One line for the walker's fault in st (the faults both formats share)."""
        code, b, c = (int(v) for v in self._st[K.ST_A:K.ST_C + 1])
        if code == K.E_ZERO:
            return f"zero-length record (original length {b})"
        if code == K.E_SNAPLEN:
            return f"record length {b} exceeds maximum snap length {c}"
        if code == K.E_ORIGLEN:
            return f"record length {b} exceeds original length {c}"
        return self._format_fault(code, b, c)

    def _format_fault(self, code, b, c):
        return f"bad record (fault {code}: {b}, {c})"

    def _block(self, n):
        raise NotImplementedError  # only pcapng stops the walker at a block

    def close(self):
        """Close the file (the reader keeps its counters)."""
        if self._ahead is not None:  # its thread reads the file: let it finish first
            job, self._ahead = self._ahead[0], None
            try:
                job.wait()
            except CaptureError:
                pass
        if self._f is not None:
            self._f.close()
            self._f = None
        self._done = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"{type(self).__name__}({self.path!r}, packets={self.packets}, "
                f"offset={self.offset}/{self.size})")
