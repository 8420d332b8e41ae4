"""Software TCP segmentation of super-frames (the kernel's tcp_gso_segment).

A packet socket sees a TCP sender's TSO/GSO frames, and a NIC's GRO
aggregates, whole: up to 64 KiB in one frame. XDP runs before GRO and after
segmentation, on wire-sized frames, and such a frame cannot leave through an
interface (EMSGSIZE). So the ring walker cuts an IPv4 or IPv6 TCP frame
larger than the interface's MTU into wire-sized segments before the program
sees them, as the kernel's GSO would: each gets the headers, ``mss`` bytes of
the payload (the MTU less the IP and TCP headers), the sequence number
advanced, FIN and PSH only on the last, CWR only on the first, the IPv4 ID
counted up, lengths and both checksums right.
"""

import numpy as np

from ..config import KERNEL_JIT
from ..jit import kernel, lazy

memcpy = lazy("dataplane.kernels.memory", "memcpy")


@kernel(**KERNEL_JIT)
def _be16(b, p):
    return (np.int64(b[p]) << 8) | np.int64(b[p + 1])


@kernel(**KERNEL_JIT)
def _put16(b, p, v):
    b[p] = (v >> 8) & 0xFF
    b[p + 1] = v & 0xFF


@kernel(**KERNEL_JIT)
def _sum16(b, start, end, s):
    i = start
    while i + 1 < end:
        s += (np.int64(b[i]) << 8) | b[i + 1]
        i += 2
    if i < end:
        s += np.int64(b[i]) << 8
    return s


@kernel(**KERNEL_JIT)
def _fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@kernel(**KERNEL_JIT)
def tcp_gso_layout(buf, d, end, mtu):
    """The segmentation of frame ``buf[d:end]`` for ``mtu``: ``(segments, l3,
    l4, header end, mss, ipv6)``, offsets from ``d``; segments 0 when the frame
    is not a TCP frame over the MTU that can be cut (IPv6 extension headers,
    IPv4 fragments and options-only frames are left whole)."""
    none = (np.int64(0), np.int64(0), np.int64(0), np.int64(0), np.int64(0), False)
    off = d + 12
    proto = _be16(buf, off)
    while (proto == 0x8100 or proto == 0x88A8) and off + 6 <= end:
        off += 4
        proto = _be16(buf, off)
    l3 = off + 2
    if proto == 0x0800:
        if l3 + 20 > end or buf[l3 + 9] != 6 or (_be16(buf, l3 + 6) & 0x3FFF) != 0:
            return none
        l4 = l3 + (np.int64(buf[l3]) & 15) * 4
        v6 = False
    elif proto == 0x86DD:
        if l3 + 40 > end or buf[l3 + 6] != 6:
            return none
        l4 = l3 + 40
        v6 = True
    else:
        return none
    if l4 + 20 > end:
        return none
    hdr_end = l4 + (np.int64(buf[l4 + 12]) >> 4) * 4
    payload = end - hdr_end
    mss = mtu - (hdr_end - l3)
    if hdr_end > end or end - l3 <= mtu or mss <= 0 or payload <= mss:
        return none
    return ((payload + mss - 1) // mss, l3 - d, l4 - d, hdr_end - d, mss, v6)


@kernel(**KERNEL_JIT)
def tcp_gso_segment(buf, src, end, dst, k, nseg, l3, l4, hdr_end, mss, v6):
    """Write segment ``k`` of the frame ``buf[src:end]`` at ``buf[dst:]`` (headers
    from the frame as received: segment 0 is written in place last). Returns
    the segment's length."""
    first = src + hdr_end + k * mss
    plen = min(mss, end - first)
    if dst != src:
        memcpy(buf, dst, buf, src, hdr_end)
        memcpy(buf, dst + hdr_end, buf, first, plen)
    ip, tcp = dst + l3, dst + l4
    tcp_len = hdr_end - l4 + plen
    if v6:
        _put16(buf, ip + 4, tcp_len)
        s = _sum16(buf, ip + 8, ip + 40, np.int64(0))
    else:
        _put16(buf, ip + 2, hdr_end - l3 + plen)
        _put16(buf, ip + 4, (_be16(buf, ip + 4) + k) & 0xFFFF)
        buf[ip + 10] = 0
        buf[ip + 11] = 0
        _put16(buf, ip + 10, ~_fold(_sum16(buf, ip, tcp, np.int64(0))) & 0xFFFF)
        s = _sum16(buf, ip + 12, ip + 20, np.int64(0))
    seq = ((_be16(buf, tcp + 4) << 16) | _be16(buf, tcp + 6)) + k * mss
    _put16(buf, tcp + 4, (seq >> 16) & 0xFFFF)
    _put16(buf, tcp + 6, seq & 0xFFFF)
    flags = np.int64(buf[tcp + 13])
    if k < nseg - 1:
        flags &= ~0x09  # FIN and PSH: the last segment's
    if k > 0:
        flags &= ~0x80  # CWR: the first's
    buf[tcp + 13] = flags
    buf[tcp + 16] = 0
    buf[tcp + 17] = 0
    s = _sum16(buf, tcp, tcp + tcp_len, s + 6 + tcp_len)
    _put16(buf, tcp + 16, ~_fold(s) & 0xFFFF)
    return hdr_end + plen
