"""Compiled halves of the live I/O paths (io/rawsock.py, io/tap.py): packet-ring
walkers and batched transmit loops.

- ``walk_v3``: libpcap's ``pcap_read_linux_mmap_v3``: walks the TPACKET_V3
  receive ring's ready blocks (``block_status & TP_STATUS_USER``), ``memcpy``s
  each frame into a PacketBatch slot (headroom, data, tailroom) with its
  timestamp and ingress ifindex, and hands each finished block back to the
  kernel (``block_status = TP_STATUS_KERNEL``, a release store). A frame whose
  VLAN tag the NIC or veth took off (TP_STATUS_VLAN_VALID) gets it back, as
  libpcap does, so the program sees the frame that was on the wire. A frame
  whose TCP/UDP checksum was left to offload (TP_STATUS_CSUMNOTREADY: sent by
  this kernel, e.g. a veth peer's stack) gets it completed, as the NIC would
  have done on the wire; without that a frame passed on elsewhere arrives with
  a bad checksum. Frames
  this host sent (PACKET_OUTGOING) are skipped: the socket also asks the
  kernel not to deliver them (PACKET_IGNORE_OUTGOING), this is the fallback.
- ``send_mmsg``: ``sendmmsg`` of a batch's frames chosen by an index list
  (iovecs point into the batch's buffer: no copy in user space).
- ``ring_send``: the same into a PACKET_TX_RING (TPACKET_V2 frames), flushed
  by the caller's ``send()``.
- ``tap_write`` / ``tap_read``: one ``write()`` / ``read()`` per frame on a TAP
  file descriptor (a TAP has no batched system call), in one compiled loop.

Positions and results travel in an int64 state array ``st`` (its slots are
named below). Layouts are the kernel's (include/uapi/linux/if_packet.h).
"""

import numpy as np

from ..config import KERNEL_JIT
from ..jit import kernel, lazy
from .csum import _fold16, _sum16
from .gso import tcp_gso_layout, tcp_gso_segment
from .layout import DATA, DATA_END, FRAME_END, REDIRECT, TS_NS
from .slot import set_slot, slot_end

memcpy = lazy("dataplane.kernels.memory", "memcpy")
load32 = lazy("dataplane.kernels.memory", "load32")
load32_acquire = lazy("dataplane.kernels.syscall", "load32_acquire")
store32_release = lazy("dataplane.kernels.syscall", "store32_release")
sys_write = lazy("dataplane.kernels.syscall", "sys_write")
sys_read = lazy("dataplane.kernels.syscall", "sys_read")
sys_sendmmsg = lazy("dataplane.kernels.syscall", "sys_sendmmsg")
sys_errno = lazy("dataplane.kernels.syscall", "sys_errno")

# ---- kernel ABI (if_packet.h) -------------------------------------------------
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_CSUMNOTREADY = 1 << 3  # checksum offloaded: the L4 field holds the pseudo-header sum
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
TP_STATUS_AVAILABLE = 0          # TX ring frame free
TP_STATUS_SEND_REQUEST = 1       # TX ring frame filled, to send
TP_STATUS_WRONG_FORMAT = 4       # TX ring frame the kernel refused

# struct tpacket_block_desc: version, offset_to_priv, then tpacket_hdr_v1
BD_STATUS = 8
BD_NUM_PKTS = 12
BD_FIRST = 16
# struct tpacket3_hdr
H3_NEXT = 0
H3_SEC = 4
H3_NSEC = 8
H3_SNAPLEN = 12
H3_LEN = 16
H3_STATUS = 20
H3_MAC = 24
H3_VLAN_TCI = 32
H3_VLAN_TPID = 36
H3_SLL = 48                      # TPACKET_ALIGN(sizeof(struct tpacket3_hdr))
SLL_PKTTYPE = 10                 # sll_pkttype in struct sockaddr_ll
PACKET_OUTGOING = 4
# struct tpacket2_hdr (TX ring frames)
H2_STATUS = 0
H2_LEN = 4
H2_DATA = 32                     # TPACKET2_HDRLEN - sizeof(struct sockaddr_ll)

EAGAIN = 11
ENOBUFS = 105
EINTR = 4
#: sendmmsg's errors that no frame can get past: the interface is down or gone.
ENETDOWN, ENXIO, ENODEV = 100, 6, 19
MSG_DONTWAIT = 0x40
#: struct mmsghdr and struct iovec in int64 words (x86-64 / aarch64 LP64 layout)
MMSG_WORDS = 8
IOV_WORDS = 2

# ---- statuses and state slots ---------------------------------------------------
EMPTY = 0          # no (more) ready block: poll before calling again
FULL = 1           # the batch is full (capacity or buffer)
NEED_BUFFER = 2    # the next frame does not fit an empty batch: st[ST_NEED] bytes
BUSY = 3           # a transmit stopped early: the kernel has no room (EAGAIN/ENOBUFS)
FAILED = 4         # a transmit stopped on an error: st[ST_ERRNO]

# walk_v3: ring position (kept between calls) and per-call results
ST_BLOCK = 0       # block being read
ST_PKT = 1         # frames of that block already taken
ST_OFF = 2         # offset in the block of the next frame
ST_COUNT = 3       # packets in the batch after the call
ST_NEED = 4        # NEED_BUFFER: bytes the buffer must have
ST_SKIPPED = 5     # running count: outgoing frames skipped
ST_BLOCKS = 6      # running count: blocks handed back to the kernel
ST_BYTES = 7       # bytes of the frames copied (this call)
ST_CSUM = 8        # running count: checksums completed (TP_STATUS_CSUMNOTREADY frames)
ST_GSO = 9         # running count: TCP super-frames cut into segments (kernels/gso.py)
# transmit loops
ST_SENT = 0        # frames sent (this call)
ST_ERRORS = 1      # frames refused one by one (this call), e.g. EMSGSIZE
ST_ERRNO = 2       # the errno that stopped the call (or of the last refused frame)
ST_POS = 3         # index into the list of the first frame not handled
ST_HEAD = 4        # ring_send: the TX ring's next frame (kept between calls)
ST_SIZE = 16


@kernel(**KERNEL_JIT)
def _load16(a, p):
    return np.int64(a[p]) | (np.int64(a[p + 1]) << 8)


@kernel(**KERNEL_JIT)
def complete_csum(buf, d, end):
    """Finish an offloaded TCP/UDP checksum of the frame ``buf[d:end]`` in place
    (the kernel's skb_checksum_help): the field holds the pseudo-header sum; the
    sum over the L4 header and payload, folded and inverted, replaces it. Returns
    1 when done, 0 for a frame it does not recognise (left as it is)."""
    off = d + 12
    proto = (np.int64(buf[off]) << 8) | buf[off + 1]
    while (proto == 0x8100 or proto == 0x88A8) and off + 6 <= end:
        off += 4
        proto = (np.int64(buf[off]) << 8) | buf[off + 1]
    off += 2
    if proto == 0x0800:
        if off + 20 > end:
            return 0
        ihl = (buf[off] & 0x0F) * 4
        l4proto = buf[off + 9]
        l4 = off + ihl
    elif proto == 0x86DD:
        l4proto = buf[off + 6] if off + 40 <= end else 0
        l4 = off + 40
    else:
        return 0
    if l4proto == 6:
        field = l4 + 16
    elif l4proto == 17:
        field = l4 + 6
    else:
        return 0
    if field + 2 > end:
        return 0
    s = _fold16(_sum16(buf, l4, end - l4))  # the field's pseudo-header sum included
    c = ~s & 0xFFFF
    if c == 0 and l4proto == 17:
        c = 0xFFFF  # CSUM_MANGLED_0: 0 means "no checksum" in UDP
    buf[field] = c >> 8
    buf[field + 1] = c & 0xFF
    return 1


@kernel(**KERNEL_JIT)
def _pause(st, k, off, n, need):
    """Keep the walk's place (frame ``k`` of the block, at ``off`` into it) and
    stop: NEED_BUFFER with ``st[ST_NEED] = need`` when not even the batch's
    first frame fits (``n`` 0, ``need`` > 0), else FULL."""
    st[ST_PKT] = k
    st[ST_OFF] = off
    st[ST_COUNT] = n
    if n == 0 and need > 0:
        st[ST_NEED] = need
        return NEED_BUFFER
    return FULL


@kernel(**KERNEL_JIT)
def walk_v3(ring, block_size, nblocks, ifindex, buf, meta, n, capacity, headroom, tailroom,
            st, mtu):
    """Copy frames from the TPACKET_V3 ring's ready blocks into batch slots from ``n``.

    Returns EMPTY (no ready block left), FULL, or NEED_BUFFER (``st[ST_NEED]``);
    ``st[ST_COUNT]`` is the batch's packet count, ``st[ST_BYTES]`` the bytes
    copied. A block is handed back as soon as its last frame is copied; a batch
    that fills mid-block resumes there. A TCP frame larger than ``mtu`` (a
    TSO/GRO super-frame) becomes wire-sized segments (kernels/gso.py), each
    its own packet; 0 leaves every frame whole.
    """
    fs = meta[FRAME_END, n - 1] if n > 0 else 0
    st[ST_BYTES] = 0
    while True:
        b = st[ST_BLOCK]
        base = b * block_size
        if (load32_acquire(ring, base + BD_STATUS) & TP_STATUS_USER) == 0:
            st[ST_COUNT] = n
            return EMPTY
        num = load32(ring, base + BD_NUM_PKTS)
        k = st[ST_PKT]
        off = base + (load32(ring, base + BD_FIRST) if k == 0 else st[ST_OFF])
        while k < num:
            if n >= capacity:
                return _pause(st, k, off - base, n, 0)
            tpst = load32(ring, off + H3_STATUS)
            snaplen = load32(ring, off + H3_SNAPLEN)
            if ring[off + H3_SLL + SLL_PKTTYPE] != PACKET_OUTGOING:
                vlan = (tpst & TP_STATUS_VLAN_VALID) != 0 and snaplen >= 12
                caplen = snaplen + (4 if vlan else 0)
                d = fs + headroom
                fe = slot_end(d, caplen, tailroom)
                if fe > buf.size:
                    return _pause(st, k, off - base, n, fe)
                mac = off + _load16(ring, off + H3_MAC)
                if vlan:
                    tpid = 0x8100
                    if tpst & TP_STATUS_VLAN_TPID_VALID:
                        tpid = _load16(ring, off + H3_VLAN_TPID)
                    tci = load32(ring, off + H3_VLAN_TCI) & 0xFFFF
                    memcpy(buf, d, ring, mac, 12)
                    buf[d + 12] = (tpid >> 8) & 0xFF
                    buf[d + 13] = tpid & 0xFF
                    buf[d + 14] = (tci >> 8) & 0xFF
                    buf[d + 15] = tci & 0xFF
                    memcpy(buf, d + 16, ring, mac + 12, snaplen - 12)
                else:
                    memcpy(buf, d, ring, mac, snaplen)
                nseg = l3 = l4 = hend = mss = np.int64(0)
                v6 = False
                if mtu > 0 and caplen > mtu + 18 and snaplen == load32(ring, off + H3_LEN):
                    nseg, l3, l4, hend, mss, v6 = tcp_gso_layout(buf, d, d + caplen, mtu)
                if nseg > 1:
                    slot = slot_end(headroom, hend + mss, tailroom)
                    if n + nseg > capacity or fe + (nseg - 1) * slot > buf.size:
                        if n == 0 and nseg > capacity:
                            nseg = 0  # never fits a batch: left whole
                        else:
                            return _pause(st, k, off - base, n, fe + (nseg - 1) * slot)
                ts = load32(ring, off + H3_SEC) * 1000000000 + load32(ring, off + H3_NSEC)
                nxt = fe  # the next free slot: after the frame's segments, if cut
                if nseg > 1:
                    end = d + caplen
                    for j in range(1, nseg):  # the others first: they copy the headers as sent
                        dj = nxt + headroom
                        length = tcp_gso_segment(buf, d, end, dj, j, nseg, l3, l4, hend, mss, v6)
                        sfe = slot_end(dj, length, tailroom)
                        set_slot(meta, n + j, nxt, dj, length, sfe, 0, ifindex)
                        meta[TS_NS, n + j] = ts
                        st[ST_BYTES] += length
                        nxt = sfe
                    caplen = tcp_gso_segment(buf, d, end, d, 0, nseg, l3, l4, hend, mss, v6)
                    st[ST_GSO] += 1
                elif tpst & TP_STATUS_CSUMNOTREADY and snaplen == load32(ring, off + H3_LEN):
                    st[ST_CSUM] += complete_csum(buf, d, d + caplen)
                set_slot(meta, n, fs, d, caplen, fe, load32(ring, off + H3_LEN) - snaplen,
                         ifindex)
                meta[TS_NS, n] = ts
                st[ST_BYTES] += caplen
                fs = nxt
                n += max(nseg, 1)
            else:
                st[ST_SKIPPED] += 1
            off += load32(ring, off + H3_NEXT)
            k += 1
        store32_release(ring, base + BD_STATUS, TP_STATUS_KERNEL)
        st[ST_BLOCKS] += 1
        st[ST_BLOCK] = b + 1 if b + 1 < nblocks else 0
        st[ST_PKT] = 0
        st[ST_OFF] = 0


@kernel(**KERNEL_JIT)
def send_mmsg(fd, buf, buf_addr, meta, idx, start, stop, iov, hdrs, st):
    """``sendmmsg`` the frames ``idx[start:stop]`` of a batch, ``iov.shape[0]`` per call.

    ``hdrs`` holds one ``struct mmsghdr`` per iovec whose ``msg_iov`` already
    points at it (set once by the caller). A frame the kernel refuses (EMSGSIZE,
    ...) is counted in ``st[ST_ERRORS]`` and skipped. Returns 0 when all were
    handled, BUSY when the kernel had no room (EAGAIN / ENOBUFS; ``st[ST_POS]``
    is where to resume), FAILED when the interface is down or gone (ENETDOWN,
    ENXIO, ENODEV in ``st[ST_ERRNO]``; ``st[ST_POS]``: the first frame not sent,
    the caller's to count): one call, where skipping frame by frame made one
    failing call per frame.
    """
    st[ST_SENT] = 0
    st[ST_ERRORS] = 0
    per_call = iov.shape[0]
    i = start
    while i < stop:
        k = 0
        while k < per_call and i + k < stop:
            p = idx[i + k]
            iov[k, 0] = buf_addr + meta[DATA, p]
            iov[k, 1] = meta[DATA_END, p] - meta[DATA, p]
            k += 1
        r = sys_sendmmsg(fd, hdrs, k, MSG_DONTWAIT)
        if r > 0:
            st[ST_SENT] += r
            i += r
            continue
        e = sys_errno()
        if e == EINTR:
            continue
        st[ST_ERRNO] = e
        if e == EAGAIN or e == ENOBUFS:
            st[ST_POS] = i
            return BUSY
        if e == ENETDOWN or e == ENXIO or e == ENODEV:
            st[ST_POS] = i
            return FAILED
        st[ST_ERRORS] += 1
        i += 1  # the first frame of this call is refused: skip it
    st[ST_POS] = i
    return 0


@kernel(**KERNEL_JIT)
def ring_send(ring, frame_size, nframes, buf, meta, idx, start, stop, st):
    """Copy the frames ``idx[start:stop]`` into free TX-ring frames (TPACKET_V2) and
    mark them SEND_REQUEST; the caller flushes with ``send()``. Returns 0, or BUSY
    when the ring has no free frame (``st[ST_POS]``: where to resume). A frame too
    large for a ring frame is counted in ``st[ST_ERRORS]`` and skipped."""
    st[ST_SENT] = 0
    st[ST_ERRORS] = 0
    head = st[ST_HEAD]
    room = frame_size - H2_DATA
    i = start
    while i < stop:
        p = idx[i]
        length = meta[DATA_END, p] - meta[DATA, p]
        if length > room:
            st[ST_ERRORS] += 1
            i += 1
            continue
        f = head * frame_size
        status = load32_acquire(ring, f + H2_STATUS)
        if status != TP_STATUS_AVAILABLE and status != TP_STATUS_WRONG_FORMAT:
            st[ST_HEAD] = head
            st[ST_POS] = i
            return BUSY
        if status == TP_STATUS_WRONG_FORMAT:
            st[ST_ERRORS] += 1
        memcpy(ring, f + H2_DATA, buf, meta[DATA, p], length)
        ring[f + H2_LEN] = length & 0xFF
        ring[f + H2_LEN + 1] = (length >> 8) & 0xFF
        ring[f + H2_LEN + 2] = (length >> 16) & 0xFF
        ring[f + H2_LEN + 3] = 0
        store32_release(ring, f + H2_STATUS, TP_STATUS_SEND_REQUEST)
        st[ST_SENT] += 1
        head = head + 1 if head + 1 < nframes else 0
        i += 1
    st[ST_HEAD] = head
    st[ST_POS] = i
    return 0


@kernel(**KERNEL_JIT)
def ring_pending(ring, frame_size, nframes):
    """TX-ring frames not yet AVAILABLE again (queued or being sent)."""
    busy = 0
    for f in range(nframes):
        s = load32_acquire(ring, f * frame_size + H2_STATUS)
        if s != TP_STATUS_AVAILABLE and s != TP_STATUS_WRONG_FORMAT:
            busy += 1
    return busy


@kernel(**KERNEL_JIT)
def tap_write(fd, buf, meta, idx, start, stop, st):
    """``write()`` the frames ``idx[start:stop]`` to a TAP, one call each. Returns 0,
    or BUSY on EAGAIN (``st[ST_POS]``); other refusals are counted and skipped."""
    st[ST_SENT] = 0
    st[ST_ERRORS] = 0
    i = start
    while i < stop:
        p = idx[i]
        r = sys_write(fd, buf, meta[DATA, p], meta[DATA_END, p] - meta[DATA, p])
        if r < 0:
            e = sys_errno()
            if e == EINTR:
                continue
            st[ST_ERRNO] = e
            if e == EAGAIN:
                st[ST_POS] = i
                return BUSY
            st[ST_ERRORS] += 1
        else:
            st[ST_SENT] += 1
        i += 1
    st[ST_POS] = stop
    return 0


@kernel(**KERNEL_JIT)
def tap_read(fd, maxlen, ifindex, buf, meta, n, capacity, headroom, tailroom, st):
    """``read()`` frames from a TAP into batch slots from ``n`` until EAGAIN (EMPTY),
    the batch is full (FULL) or an error (FAILED, ``st[ST_ERRNO]``). ``maxlen`` is
    the largest frame the TAP can hand over (its MTU plus link headers)."""
    fs = meta[FRAME_END, n - 1] if n > 0 else 0
    while n < capacity:
        d = fs + headroom
        if d + maxlen + tailroom > buf.size:
            st[ST_COUNT] = n
            return FULL
        r = sys_read(fd, buf, d, maxlen)
        if r < 0:
            e = sys_errno()
            if e == EINTR:
                continue
            st[ST_COUNT] = n
            if e == EAGAIN:
                return EMPTY
            st[ST_ERRNO] = e
            return FAILED
        if r == 0:
            st[ST_COUNT] = n
            return EMPTY
        fe = slot_end(d, r, tailroom)
        set_slot(meta, n, fs, d, r, fe, 0, ifindex)
        meta[TS_NS, n] = 0
        fs = fe
        n += 1
    st[ST_COUNT] = n
    return FULL


@kernel(**KERNEL_JIT)
def split_targets(meta, order, start, stop, targets, ntargets, out, counts):
    """Counting sort of the redirected packets ``order[start:stop]`` by target:
    ``targets[:ntargets]`` are the ifindexes the dataplane holds; packets to
    target ``t`` land in ``out`` after those of targets before it, ``counts[t]``
    of them; packets to an ifindex not held go last (``counts[ntargets]``)."""
    for t in range(ntargets + 1):
        counts[t] = 0
    for i in range(start, stop):
        r = meta[REDIRECT, order[i]]
        t = 0
        while t < ntargets and targets[t] != r:
            t += 1
        counts[t] += 1
    pos = 0
    for t in range(ntargets + 1):
        c = counts[t]
        counts[t] = pos  # start, for now
        pos += c
    for i in range(start, stop):
        p = order[i]
        r = meta[REDIRECT, p]
        t = 0
        while t < ntargets and targets[t] != r:
            t += 1
        out[counts[t]] = p
        counts[t] += 1
    # counts[t] is now the end of target t's run: back to counts
    prev = 0
    for t in range(ntargets + 1):
        end = counts[t]
        counts[t] = end - prev
        prev = end
