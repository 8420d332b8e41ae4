"""Packet parsing helpers for programs, in the manner of xdp-tutorial's parse_*hdr.

Each takes the checked packet view and an offset, checks the header fits
before reading it, and returns the next protocol and the next header's offset
(-1 when the header is truncated). Callable from programs; they compile into
the program's loop.
"""

import numpy as np

from .. import config
from ..jit import api, kernel

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_HLEN = 14
VLAN_MAX_DEPTH = 2


@api
@kernel(**config.INLINE_JIT)
def load_be16(pkt, off):
    """Big-endian 16-bit load at ``off`` (bpf_ntohs(*(__be16 *)p))."""
    return (pkt[off] << 8) | pkt[off + 1]


@api
@kernel(**config.INLINE_JIT)
def load_be32(pkt, off):
    """Big-endian 32-bit load at ``off`` (bpf_ntohl(*(__be32 *)p))."""
    return (pkt[off] << 24) | (pkt[off + 1] << 16) | (pkt[off + 2] << 8) | pkt[off + 3]


@api
@kernel(**config.INLINE_JIT)
def parse_ethhdr(pkt):
    """Ethernet header with up to two VLAN tags (802.1Q, QinQ 802.1ad).

    Returns ``(h_proto, l3_offset)``, or ``(-1, -1)`` when truncated.
    """
    if len(pkt) < ETH_HLEN:
        return np.int64(-1), np.int64(-1)
    off = np.int64(12)
    proto = load_be16(pkt, off)
    for _depth in range(VLAN_MAX_DEPTH):
        if proto != ETH_P_8021Q and proto != ETH_P_8021AD:
            break
        off += 4
        if len(pkt) < off + 2:
            return np.int64(-1), np.int64(-1)
        proto = load_be16(pkt, off)
    return proto, off + 2


@api
@kernel(**config.INLINE_JIT)
def parse_iphdr(pkt, off):
    """IPv4 header at ``off`` (IHL honoured).

    Returns ``(protocol, l4_offset)``; ``l4_offset`` is -1 for a non-first
    fragment (no L4 header in it); ``(-1, -1)`` when truncated or not IPv4.
    """
    if len(pkt) < off + 20:
        return np.int64(-1), np.int64(-1)
    ihl = (pkt[off] & 0x0F) * 4
    if (pkt[off] >> 4) != 4 or ihl < 20 or len(pkt) < off + ihl:
        return np.int64(-1), np.int64(-1)
    frag_off = load_be16(pkt, off + 6) & 0x1FFF
    if frag_off != 0:
        return pkt[off + 9], np.int64(-1)
    return pkt[off + 9], off + ihl


@api
@kernel(**config.INLINE_JIT)
def parse_ip6hdr(pkt, off):
    """IPv6 fixed header at ``off``: ``(nexthdr, offset after it)`` or ``(-1, -1)``."""
    if len(pkt) < off + 40:
        return np.int64(-1), np.int64(-1)
    return pkt[off + 6], off + 40
