"""pcapng files in: ``PcapngReader`` (libpcap's sf-pcapng.c).

A file is one or more sections: a Section Header Block (SHB, its byte-order
magic sets the section's byte order) and the blocks after it. Interface
Description Blocks (IDB) number the section's interfaces 0, 1, ...; packets come
in Enhanced (EPB), Simple (SPB) and obsolete Packet Blocks (OPB). The compiled
walker copies packets and skips other blocks (NRB, ISB, DSB, custom); SHB and
IDB, rare, are parsed here in Python.
"""

import struct

import numpy as np

from .. import config
from ..errors import CaptureError
from ..kernels import pcap_walk as K
from .capture import CaptureReader

#: A non-packet block larger than the chunk and this is skipped without reading
#: it; a packet block this large is an error (a caplen is at most MAX_SNAPLEN).
LARGE_BLOCK = 1 << 20
_BOM = 0x1A2B3C4D
_NAMES = {K.SHB: "section header", K.IDB: "interface description", K.EPB: "enhanced packet",
          K.SPB: "simple packet", K.OPB: "packet"}


class PcapngReader(CaptureReader):
    """Stream a pcapng file into PacketBatches (libpcap's sf-pcapng.c).

    ``ifindex`` is the packet's interface number in its section (IDB order);
    ``linktype`` and ``snaplen`` are those of the first interface, and
    ``nanosecond`` is always true: pcaps written from a pcapng keep
    nanoseconds, since an interface described after the first packets (or in
    a later section) may be finer than 1 us, and a microsecond pcap begun
    before it lost them. A packet on a non-Ethernet interface is an error.
    """

    #: Interfaces may each have their own snap length (0: none): write with the maximum.
    output_snaplen = config.MAX_SNAPLEN

    def _start(self):
        self.nanosecond = True
        self._ifs = np.zeros((4, K.IF_COLS), np.int64)
        self._nif = 0
        self._swap = False
        self._sections = 0
        self._fill(28)
        if self._end >= 4 and self._u32(0) != K.SHB:
            raise CaptureError(self.path, f"not a pcapng file (magic 0x{self._u32(0):08x})",
                               offset=0)
        blen = self._block_len() if self._end >= 12 else 28
        if self._end < 28 or (blen <= LARGE_BLOCK and not self._fill(blen)):
            raise CaptureError(self.path, f"truncated section header block: {self._end} of"
                               f" {max(blen, 28)} bytes", offset=0)
        self._block(0)
        # The leading IDBs give linktype, snaplen and precision before any packet.
        while not self._done and self._fill(8) and self._u32(self._pos) == K.IDB:
            self._block(0)

    def _u32(self, p):
        return struct.unpack_from(">I" if self._swap else "<I", self._chunk, p)[0]

    def _block_len(self):
        # The SHB's own byte-order magic tells how to read its length.
        if self._u32(self._pos) == K.SHB and self._end - self._pos >= 12:
            self._swap = struct.unpack_from("<I", self._chunk, self._pos + 8)[0] != _BOM
        return self._u32(self._pos + 4)

    def _walk(self, batch, n):
        return K.walk_pcapng(
            self._chunk, self._pos, self._end, self._swap, self._ifs, self._nif, config.MAX_SNAPLEN,
            batch.buf, batch.meta, n, batch.capacity, batch.headroom, batch.tailroom, self._st)

    def _more(self, need, n):
        if need > max(self._chunk.size, LARGE_BLOCK):
            btype = self._u32(self._pos)
            if btype in (K.EPB, K.SPB, K.OPB):
                raise self._error_at(self._length_fault(btype, need, 0), n)
            if self.offset + need <= self.size:
                self._skip_large(need, n)
                return
        super()._more(need, n)

    def _skip_large(self, blen, n):
        """Skip a huge non-packet block by seeking past it (memory stays bounded)."""
        start = self.offset
        self._skip(blen - 4)
        self._fill(4)
        tail = self._u32(self._pos)
        if tail != blen:
            raise CaptureError(self.path, f"trailing block length {tail} differs from leading"
                               f" length {blen}", offset=start, index=self.packets + n)
        self._pos += 4

    def _block(self, n):
        """Parse the SHB or IDB at the chunk position (the walker stopped there)."""
        if not self._fill(12):
            self._more(12, n)
            return
        blen = self._block_len()
        btype = self._u32(self._pos)
        shb = btype == K.SHB
        if shb and self._u32(self._pos + 8) != _BOM:
            raise self._error_at("bad byte-order magic in section header block", n)
        minlen = 28 if shb else 20
        if blen & 3 or blen < minlen or blen > LARGE_BLOCK:
            raise self._error_at(self._length_fault(btype, blen, minlen), n)
        if not self._fill(blen):
            self._more(blen, n)
            return
        p = self._pos
        tail = self._u32(p + blen - 4)
        if tail != blen:
            raise self._error_at(
                f"trailing block length {tail} differs from leading length {blen}", n)
        order = ">" if self._swap else "<"
        if shb:
            major, minor = struct.unpack_from(order + "HH", self._chunk, p + 12)
            if major != 1:
                raise self._error_at(f"unsupported pcapng version {major}.{minor}", n)
            self._sections += 1
            self._nif = 0  # interface numbers restart in each section
        else:
            self._interface(order, p, blen)
        self._pos = p + blen

    def _interface(self, order, p, blen):
        linktype, snaplen = struct.unpack_from(order + "HxxI", self._chunk, p + 8)
        tsresol, tsoffset = 6, 0
        q, stop = p + 16, p + blen - 4
        while q + 4 <= stop:
            code, olen = struct.unpack_from(order + "HH", self._chunk, q)
            q += 4
            if code == 0 or q + olen > stop:
                break
            if code == 9 and olen >= 1:       # if_tsresol
                tsresol = int(self._chunk[q])
            elif code == 14 and olen >= 8:    # if_tsoffset, seconds
                tsoffset = struct.unpack_from(order + "q", self._chunk, q)[0]
            q += (olen + 3) & ~3
        k = self._nif
        if k == self._ifs.shape[0]:
            self._ifs = np.concatenate([self._ifs, np.zeros_like(self._ifs)])
        row = self._ifs[k]
        row[K.IF_LINKTYPE], row[K.IF_SNAPLEN] = linktype, snaplen
        if abs(tsoffset) > 1 << 33:  # beyond int64 ns
            self.warnings.append(f"interface {k}: if_tsoffset {tsoffset} s ignored")
            tsoffset = 0
        row[K.IF_OFFSET] = tsoffset * 1_000_000_000
        if tsresol & 0x80:   # 2^-e seconds
            e = tsresol & 0x7F
            if e > 63:
                self.warnings.append(f"interface {k}: if_tsresol 2^-{e} not supported, using 2^-63")
                e = 63
            row[K.IF_MUL], row[K.IF_DIV], row[K.IF_SHIFT] = 1, 1, e
        else:                # 10^-e seconds
            e = tsresol
            if e > 27:  # 10^(e-9) must fit the int64 table
                self.warnings.append(
                    f"interface {k}: if_tsresol 10^-{e} not supported, using 10^-27")
                e = 27
            row[K.IF_MUL] = 10 ** (9 - e) if e <= 9 else 1
            row[K.IF_DIV] = 10 ** (e - 9) if e > 9 else 1
            row[K.IF_SHIFT] = -1
        if self._sections == 1 and k == 0:
            self.linktype, self.snaplen = linktype, snaplen
        self._nif = k + 1

    def _length_fault(self, btype, blen, minlen):
        name = _NAMES.get(btype, f"type 0x{btype:x}")
        if blen & 3:
            return f"{name} block length {blen} is not a multiple of 4"
        if blen < minlen:
            return f"{name} block length {blen} is below the minimum {minlen}"
        return f"{name} block length {blen} is too large"

    def _format_fault(self, code, b, c):
        btype = self._u32(self._pos)
        name = _NAMES.get(btype, f"type 0x{btype:x}")
        if code == K.E_BLOCKLEN:
            return self._length_fault(btype, b, c)
        if code == K.E_TRAILER:
            return f"trailing block length {c} differs from leading length {b}"
        if code == K.E_NOFIT:
            return f"record length {b} does not fit in {name} block length {c}"
        if code == K.E_IFACE:
            return f"{name} block on interface {b}, but the section describes {c} interface(s)"
        if code == K.E_LINKTYPE:
            return f"packet on interface {b} with link type {c} (only ethernet, 1, is supported)"
        return super()._format_fault(code, b, c)
