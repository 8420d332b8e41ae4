"""Merge classic pcap files by timestamp into one (Wireshark's mergecap).

``merge_pcaps(sources, dest)`` reads each source a window at a time and a
compiled k-way merge (kernels/pcap_merge.py) copies the records into a staging
buffer written out when full: memory is one window per source and the stage,
whatever the files' sizes (a cluster's parts of a week of traffic). The
earliest record goes first, ties to the earlier source; each source keeps its
own order, as mergecap does with inputs that are each in time order.
"""

import struct

import numpy as np

from .. import config
from ..errors import CaptureError
from .capture import open_file
from ..kernels import pcap_merge as K
from .pcap import HEADER, MAGIC_NS, MAGIC_US, create_output, write_all

#: Bytes of each source read at a time, while the windows of all the sources
#: fit in MERGE_MEMORY; never less than one record of the sources' snap length.
WINDOW_BYTES = 1 << 20
MERGE_MEMORY = 256 << 20
#: Bytes of merged records per write().
STAGE_BYTES = 8 << 20


class _Source:
    """One input: its file, its header, and how much of it is in its window."""

    def __init__(self, path):
        self.path = str(path)
        self.f, _ = open_file(self.path)  # its errors are open_capture's
        self.header = self.f.read(HEADER)
        magic = struct.unpack_from("<I", self.header)[0] if len(self.header) == HEADER else None
        if magic not in (MAGIC_US, MAGIC_NS):
            self.f.close()
            raise CaptureError(self.path, "not a little-endian classic pcap file", offset=0)
        self.nanosecond = magic == MAGIC_NS
        self.consumed = HEADER  # file offset of the window's first byte


def merge_pcaps(sources, dest, window_bytes=None, stage_bytes=STAGE_BYTES):
    """Merge the pcap files ``sources`` by timestamp into ``dest``; returns the
    number of records written. The output's header is the first source's; all
    must have its precision (microseconds or nanoseconds). ``window_bytes``
    (default: WINDOW_BYTES, less for many sources, at least a record of the
    largest snap length) is read of each source at a time; a record longer
    than that, or cut short by the end of its file, is an error."""
    opened = []
    try:
        for path in sources:
            opened.append(_Source(path))
        if not opened:
            raise ValueError("no sources to merge")
        if len({s.nanosecond for s in opened}) > 1:
            raise CaptureError(opened[0].path, "sources differ in timestamp precision"
                               " (microseconds and nanoseconds)")
        if window_bytes is None:
            # a snap length of 0 says nothing: any record up to the maximum
            snap = max(struct.unpack_from("<I", s.header, 16)[0] or config.MAX_SNAPLEN
                       for s in opened)
            window_bytes = max(min(WINDOW_BYTES, MERGE_MEMORY // len(opened)), 16 + snap)
        width = max(int(window_bytes), 32)
        return _merge(opened, str(dest), width, max(int(stage_bytes), width))
    finally:
        for s in opened:
            s.f.close()


def _merge(sources, dest, width, stage_bytes):
    n = len(sources)
    win = np.empty(n * width, np.uint8)
    pos, end = np.zeros(n, np.int64), np.zeros(n, np.int64)
    eof = np.zeros(n, np.bool_)
    heap, head_ts = np.zeros(n, np.int64), np.zeros(n, np.int64)
    st = np.zeros(K.ST_SIZE, np.int64)
    stage = np.empty(stage_bytes, np.uint8)
    frac = 1 if sources[0].nanosecond else 1000
    for k in range(n):
        _refill(sources[k], win, width, k, pos, end, eof)
    nh = K.merge_start(win, width, pos, end, frac, heap, head_ts, st)
    for k in sorted(set(range(n)) - set(heap[:nh].tolist())):
        if not eof[k]:  # a full window and not one whole record
            _too_long(sources[k], width)
        if end[k]:
            _cut(sources[k])
    with create_output(dest) as out:
        write_all(out, dest, sources[0].header)
        while True:
            status = K.merge_records(win, width, pos, end, eof, frac, heap, head_ts, stage, st)
            if status == K.NEED_MORE:
                k = int(st[K.ST_NEED])
                if pos[k] == 0 and end[k] == width:  # a whole window and not one record
                    _too_long(sources[k], width)
                _refill(sources[k], win, width, k, pos, end, eof)
                continue
            if status == K.CUT:
                k = int(st[K.ST_NEED])
                _cut(sources[k], int(pos[k]))
            write_all(out, dest, stage[:int(st[K.ST_SPOS])].data)
            st[K.ST_SPOS] = 0
            if status == K.DONE:
                return int(st[K.ST_RECORDS])


def _too_long(s, width):
    raise CaptureError(s.path, f"record longer than {width - 16} bytes", offset=s.consumed)


def _cut(s, at=0):
    raise CaptureError(s.path, "record cut short by the end of the file",
                       offset=s.consumed + at)


def _refill(s, win, width, k, pos, end, eof):
    """Move source k's unread bytes to the front of its window and read on."""
    row = memoryview(win)[k * width:(k + 1) * width]
    rest = int(end[k] - pos[k])
    if pos[k]:
        win[k * width:k * width + rest] = win[k * width + pos[k]:k * width + end[k]]
        s.consumed += int(pos[k])
    filled = rest
    while filled < width:
        try:
            got = s.f.readinto(row[filled:])
        except OSError as e:
            raise CaptureError(s.path, f"read failed: {(e.strerror or str(e)).lower()}",
                               offset=s.consumed + filled) from None
        if not got:
            eof[k] = True
            break
        filled += got
    pos[k], end[k] = 0, filled
