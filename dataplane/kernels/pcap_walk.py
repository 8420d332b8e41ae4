"""Record walkers for capture files and the pcap writer's record packer.

The compiled half of ``dataplane.io.pcap`` / ``dataplane.io.pcapng``
(libpcap's ``pcap_next_packet`` in sf-pcap.c / sf-pcapng.c, and ``pcap_dump``):
each walker parses records from a chunk of file bytes already in memory and
``memcpy``s them into a PacketBatch's columns, stopping when the batch is full,
when the chunk runs out (the caller refills and calls again) or at a fault.
No I/O and no Python objects here.

Walkers return a status and leave their results in ``st`` (int64[ST_SIZE]):
``st[ST_POS]`` the chunk offset of the first record not consumed,
``st[ST_COUNT]`` packets in the batch, ``st[ST_NEED]`` bytes needed at
``st[ST_POS]`` (NEED_MORE / NEED_BUFFER), ``st[ST_A..ST_C]`` details of a fault,
``st[ST_SNAPCUT]`` a running count of records shorter than on the wire.
No software prefetch: records are read in order and the hardware prefetcher
keeps up (measured: no difference with llvm.prefetch 1 KiB ahead).
"""

import numpy as np

from ..config import KERNEL_JIT
from ..jit import kernel, lazy
from .layout import DATA, DATA_END, FRAME_END, SNAP_CUT, TS_NS
from .slot import set_slot, slot_end

memcpy = lazy("dataplane.kernels.memory", "memcpy")
_load32 = lazy("dataplane.kernels.memory", "load32")

# Walker statuses.
FULL = 0          # batch full: capacity reached or the next slot overflows buf
NEED_MORE = 1     # the record at st[ST_POS] is not wholly in the chunk
NEED_BUFFER = 2   # the first record does not fit an empty batch's buffer
BLOCK = 3         # pcapng: a block the Python side parses (SHB, IDB)
ERROR = 4         # st[ST_A] names the fault, st[ST_B], st[ST_C] its values

# st slots.
ST_POS, ST_COUNT, ST_NEED, ST_A, ST_B, ST_C, ST_SNAPCUT = range(7)
ST_SIZE = 8

# Faults (st[ST_A]).
E_ZERO = 1         # caplen 0 (B: orig_len)
E_SNAPLEN = 2      # caplen > MAX_SNAPLEN (B: caplen, C: limit)
E_ORIGLEN = 3      # caplen > orig_len (B: caplen, C: orig_len)
E_BLOCKLEN = 4     # block length not a multiple of 4 / below minimum (B: length, C: minimum)
E_TRAILER = 5      # trailing block length differs (B: leading, C: trailing)
E_NOFIT = 6        # packet does not fit its block (B: caplen, C: block length)
E_IFACE = 7        # packet names an undefined interface (B: id, C: interfaces)
E_LINKTYPE = 8     # packet on a non-Ethernet interface (B: id, C: link type)

# pcapng block types.
SHB = 0x0A0D0D0A
IDB = 1
OPB = 2
SPB = 3
EPB = 6

# Interface table columns (int64[n, IF_COLS]), one row per IDB of the section.
IF_LINKTYPE, IF_SNAPLEN, IF_MUL, IF_DIV, IF_SHIFT, IF_OFFSET = range(6)
IF_COLS = 6

_NS = 1000000000


@kernel(**KERNEL_JIT)
def _u32(a, p, swap):
    v = _load32(a, p)
    if swap:  # a big-endian file (x86-64 and aarch64 hosts are little-endian): one bswap
        v = ((v & 0xFF) << 24) | ((v & 0xFF00) << 8) | ((v >> 8) & 0xFF00) | (v >> 24)
    return v


@kernel(**KERNEL_JIT)
def record_ts(a, p, swap, frac_ns):
    """ns since the epoch of the classic pcap record whose header is at ``a[p]``."""
    return _u32(a, p, swap) * _NS + _u32(a, p + 4, swap) * frac_ns


@kernel(**KERNEL_JIT)
def _put32(a, p, v):
    a[p] = v & 0xFF
    a[p + 1] = (v >> 8) & 0xFF
    a[p + 2] = (v >> 16) & 0xFF
    a[p + 3] = (v >> 24) & 0xFF


@kernel(**KERNEL_JIT)
def _fault(st, code, b, c):
    st[ST_A] = code
    st[ST_B] = b
    st[ST_C] = c
    return ERROR


@kernel(**KERNEL_JIT)
def _lengths_fault(st, caplen, orig, limit):
    """ERROR (with the fault in ``st``) for an impossible record length, else 0.

    Checked before asking for the record's body: a garbage length must be
    reported as such, not as a truncated file."""
    if caplen == 0:
        return _fault(st, E_ZERO, orig, 0)
    if caplen > limit:
        return _fault(st, E_SNAPLEN, caplen, limit)
    if caplen > orig:
        return _fault(st, E_ORIGLEN, caplen, orig)
    return 0


@kernel(**KERNEL_JIT)
def _place(chunk, src, caplen, orig, ifindex, buf, meta, n, fs, headroom, tailroom, st):
    """Copy a record's data into slot ``n`` starting at ``fs``; return the slot's
    end, or -1 when it does not fit the buffer (``st[ST_NEED]``: bytes needed)."""
    d = fs + headroom
    fe = slot_end(d, caplen, tailroom)
    if fe > buf.size:
        st[ST_NEED] = fe
        return -1
    memcpy(buf, d, chunk, src, caplen)
    set_slot(meta, n, fs, d, caplen, fe, orig - caplen, ifindex)
    if caplen < orig:
        st[ST_SNAPCUT] += 1
    return fe


@kernel(**KERNEL_JIT)
def walk_pcap(chunk, pos, end, swap, frac_ns, snap_limit,
              buf, meta, n, capacity, headroom, tailroom, st):
    """Copy classic pcap records from ``chunk[pos:end]`` into batch slots from ``n``.

    ``frac_ns`` scales the sub-second field to ns (1000 for microsecond files,
    1 for nanosecond files); ``snap_limit`` is the largest valid caplen
    (MAX_SNAPLEN: like libpcap, a caplen above the file's own snaplen is kept).
    """
    fs = meta[FRAME_END, n - 1] if n > 0 else 0
    status = FULL
    while True:
        if n >= capacity:
            status = FULL
            break
        if pos + 16 > end:
            st[ST_NEED] = 16
            status = NEED_MORE
            break
        caplen = _u32(chunk, pos + 8, swap)
        orig = _u32(chunk, pos + 12, swap)
        status = _lengths_fault(st, caplen, orig, snap_limit)
        if status:
            break
        if pos + 16 + caplen > end:
            st[ST_NEED] = 16 + caplen
            status = NEED_MORE
            break
        fe = _place(chunk, pos + 16, caplen, orig, 0, buf, meta, n, fs, headroom, tailroom, st)
        if fe < 0:
            status = FULL if n > 0 else NEED_BUFFER
            break
        meta[TS_NS, n] = record_ts(chunk, pos, swap, frac_ns)
        fs = fe
        pos += 16 + caplen
        n += 1
    st[ST_POS] = pos
    st[ST_COUNT] = n
    return status


@kernel(**KERNEL_JIT)
def _valid_header(data, pos, swap, snap_limit):
    """The record header at ``pos`` passes the walker's length checks."""
    caplen = _u32(data, pos + 8, swap)
    return 0 < caplen <= snap_limit and caplen <= _u32(data, pos + 12, swap)


@kernel(**KERNEL_JIT)
def split_points(data, pos, swap, snap_limit, targets, out):
    """Record boundaries for ``dataplane.io.pcap.split_pcap``: ``out[k]`` = the
    start of the first record at or after ``targets[k]`` (ascending).

    ``data`` is the whole file, mapped: only the 16-byte record headers from
    ``pos`` are read, never packet data. The walk stops at the first record the
    reader would not deliver (a length fault, or cut by the end of the file) and
    at the last target; ``out`` entries past the stop are left as they are. The
    record just before a fault is no split point either: a ranged reader checks
    the first two headers of its range.
    Returns how many targets were placed.
    """
    size = data.size
    nt = targets.size
    k = 0
    while k < nt and pos + 16 <= size:
        if not _valid_header(data, pos, swap, snap_limit):
            break
        nxt = pos + 16 + _u32(data, pos + 8, swap)
        if nxt > size or (nxt + 16 <= size and not _valid_header(data, nxt, swap, snap_limit)):
            break
        while k < nt and targets[k] <= pos:
            out[k] = pos
            k += 1
        pos = nxt
    return k


@kernel(**KERNEL_JIT)
def _pcapng_ts(ifs, k, hi, lo):
    # Units since the epoch -> ns: multiply (tsresol 10^-k, k <= 9), divide
    # (k > 9) or shift (2^-k); then add if_tsoffset.
    raw = np.uint64((hi << 32) | lo)
    shift = ifs[k, IF_SHIFT]
    if shift < 0:
        ns = raw * np.uint64(ifs[k, IF_MUL]) // np.uint64(ifs[k, IF_DIV])
    else:
        sec = raw >> np.uint64(shift)
        frac = raw & ((np.uint64(1) << np.uint64(shift)) - np.uint64(1))
        if shift <= 32:
            fns = (frac * np.uint64(_NS)) >> np.uint64(shift)
        else:  # frac * 1e9 needs up to 94 bits: split frac at bit 32, floor stays exact
            hi_part = (frac >> np.uint64(32)) * np.uint64(_NS)
            lo_part = ((frac & np.uint64(0xFFFFFFFF)) * np.uint64(_NS)) >> np.uint64(32)
            fns = (hi_part + lo_part) >> np.uint64(shift - 32)
        ns = sec * np.uint64(_NS) + fns
    return np.int64(ns) + ifs[k, IF_OFFSET]


@kernel(**KERNEL_JIT)
def walk_pcapng(chunk, pos, end, swap, ifs, nif, snap_max,
                buf, meta, n, capacity, headroom, tailroom, st):
    """Copy pcapng EPB/SPB/OPB packets from ``chunk[pos:end]`` into batch slots from ``n``.

    Skips NRB, ISB, DSB, custom and unknown blocks; stops with BLOCK at an SHB
    or IDB (parsed by the caller, who updates ``swap``, ``ifs`` and ``nif``).
    """
    fs = meta[FRAME_END, n - 1] if n > 0 else 0
    status = FULL
    while True:
        if n >= capacity:
            status = FULL
            break
        if pos + 8 > end:
            st[ST_NEED] = 8
            status = NEED_MORE
            break
        btype = _u32(chunk, pos, swap)
        if btype == SHB or btype == IDB:
            status = BLOCK
            break
        blen = _u32(chunk, pos + 4, swap)
        is_pkt = btype == EPB or btype == OPB
        minlen = 32 if is_pkt else (16 if btype == SPB else 12)
        if blen < minlen or blen & 3:
            status = _fault(st, E_BLOCKLEN, blen, minlen)
            break
        if pos + blen > end:
            st[ST_NEED] = blen
            status = NEED_MORE
            break
        tail = _u32(chunk, pos + blen - 4, swap)
        if tail != blen:
            status = _fault(st, E_TRAILER, blen, tail)
            break
        if is_pkt:
            if btype == EPB:
                k = _u32(chunk, pos + 8, swap)
            elif swap:  # OPB: 16-bit interface id, 16-bit drops count
                k = (np.int64(chunk[pos + 8]) << 8) | np.int64(chunk[pos + 9])
            else:
                k = np.int64(chunk[pos + 8]) | (np.int64(chunk[pos + 9]) << 8)
            caplen = _u32(chunk, pos + 20, swap)
            orig = _u32(chunk, pos + 24, swap)
            off = 28
        elif btype == SPB:
            k = 0
            orig = _u32(chunk, pos + 8, swap)
            caplen = min(orig, blen - 16)
            if nif > 0 and ifs[0, IF_SNAPLEN] > 0:
                caplen = min(caplen, ifs[0, IF_SNAPLEN])
            off = 12
        else:
            pos += blen  # NRB, ISB, DSB, custom, unknown: not packets
            continue
        if k >= nif:
            status = _fault(st, E_IFACE, k, nif)
            break
        if ifs[k, IF_LINKTYPE] != 1:
            status = _fault(st, E_LINKTYPE, k, ifs[k, IF_LINKTYPE])
            break
        status = _lengths_fault(st, caplen, orig, snap_max)
        if status:
            break
        if off + caplen + 4 > blen:
            status = _fault(st, E_NOFIT, caplen, blen)
            break
        fe = _place(chunk, pos + off, caplen, orig, k, buf, meta, n, fs, headroom, tailroom, st)
        if fe < 0:
            status = FULL if n > 0 else NEED_BUFFER
            break
        if btype == SPB:
            meta[TS_NS, n] = 0
        else:
            meta[TS_NS, n] = _pcapng_ts(ifs, k, _u32(chunk, pos + 12, swap),
                                        _u32(chunk, pos + 16, swap))
        fs = fe
        pos += blen
        n += 1
    st[ST_POS] = pos
    st[ST_COUNT] = n
    return status


@kernel(**KERNEL_JIT)
def pack_pcap(stage, spos, buf, meta, count, indices, i, n, nanosecond, snaplen, st):
    """Pack pcap records (little-endian) for ``batch[indices[i:n]]`` into ``stage[spos:]``.

    Stops at the first record that does not fit, or at an index outside the
    batch's ``count`` (``st[ST_A]`` = 1); returns the next index and leaves the
    new staging offset in ``st[ST_POS]``. Data longer than ``snaplen`` is cut
    to it (orig_len keeps the full length).
    """
    cap = stage.size
    st[ST_A] = 0
    while i < n:
        k = indices[i]
        if k < 0 or k >= count:
            st[ST_A] = 1
            break
        d = meta[DATA, k]
        length = meta[DATA_END, k] - d
        if length < 0:
            length = 0
        caplen = min(length, snaplen)
        if spos + 16 + caplen > cap:
            break
        t = meta[TS_NS, k]
        sec = t // _NS
        frac = t - sec * _NS
        if not nanosecond:
            frac //= 1000
        _put32(stage, spos, sec)
        _put32(stage, spos + 4, frac)
        _put32(stage, spos + 8, caplen)
        _put32(stage, spos + 12, min(length + meta[SNAP_CUT, k], 0xFFFFFFFF))
        memcpy(stage, spos + 16, buf, d, caplen)
        spos += 16 + caplen
        i += 1
    st[ST_POS] = spos
    return i
