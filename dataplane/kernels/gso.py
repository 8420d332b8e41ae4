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
from .csum import IPPROTO_TCP, TCP_CSUM_OFF, ipv4_csum_set, l4_csum_ipv4, l4_csum_ipv6
from .parse import load_be16, load_be32, store_be16, store_be32

memcpy = lazy("dataplane.kernels.memory", "memcpy")


@kernel(**KERNEL_JIT)
def tcp_gso_layout(buf, d, end, mtu):
    """The segmentation of frame ``buf[d:end]`` for ``mtu``: ``(segments, l3,
    l4, header end, mss, ipv6)``, offsets from ``d``; segments 0 when the frame
    is not a TCP frame over the MTU that can be cut (IPv6 extension headers,
    IPv4 fragments and options-only frames are left whole)."""
    none = (np.int64(0), np.int64(0), np.int64(0), np.int64(0), np.int64(0), False)
    f = buf[d:end]
    n = end - d
    off = np.int64(12)
    proto = load_be16(f, off)
    while (proto == 0x8100 or proto == 0x88A8) and off + 6 <= n:
        off += 4
        proto = load_be16(f, off)
    l3 = off + 2
    if proto == 0x0800:
        if l3 + 20 > n or f[l3 + 9] != IPPROTO_TCP or (load_be16(f, l3 + 6) & 0x3FFF) != 0:
            return none
        l4 = l3 + (np.int64(f[l3]) & 15) * 4
        v6 = False
    elif proto == 0x86DD:
        if l3 + 40 > n or f[l3 + 6] != IPPROTO_TCP:
            return none
        l4 = l3 + 40
        v6 = True
    else:
        return none
    if l4 + 20 > n:
        return none
    hdr_end = l4 + (np.int64(f[l4 + 12]) >> 4) * 4
    payload = n - hdr_end
    mss = mtu - (hdr_end - l3)
    if hdr_end > n or n - l3 <= mtu or mss <= 0 or payload <= mss:
        return none
    return ((payload + mss - 1) // mss, l3, l4, hdr_end, mss, v6)


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
    seg = buf[dst:dst + hdr_end + plen]
    tcp_len = hdr_end - l4 + plen
    if v6:
        store_be16(seg, l3 + 4, tcp_len)
    else:
        store_be16(seg, l3 + 2, hdr_end - l3 + plen)
        store_be16(seg, l3 + 4, load_be16(seg, l3 + 4) + k)
        ipv4_csum_set(seg, l3)
    store_be32(seg, l4 + 4, load_be32(seg, l4 + 4) + k * mss)
    flags = np.int64(seg[l4 + 13])
    if k < nseg - 1:
        flags &= ~0x09  # FIN and PSH: the last segment's
    if k > 0:
        flags &= ~0x80  # CWR: the first's
    seg[l4 + 13] = flags
    c = l4_csum_ipv6(seg, l3, l4, tcp_len, IPPROTO_TCP) if v6 else \
        l4_csum_ipv4(seg, l3, l4, tcp_len, IPPROTO_TCP)
    store_be16(seg, l4 + TCP_CSUM_OFF, c)
    return hdr_end + plen
