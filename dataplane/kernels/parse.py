"""Packet parsing helpers for programs, in the manner of xdp-tutorial's parse_*hdr.

Each parser takes the checked packet view and an offset, checks that the
header fits (``0 <= off`` and ``off + size <= len(pkt)``) before reading a
byte of it, and returns a tuple of int64: the fields a program needs and the
next header's offset. A header that is truncated (or not of the protocol
asked for) gives -1 in every element, so a parser never faults the packet, and
an offset of -1 handed on to the next parser gives "truncated" again:

    proto, l3 = parse_ethhdr(pkt)
    if proto == ETH_P_IP:
        ipproto, l4 = parse_iphdr(pkt, l3)
        if ipproto == IPPROTO_TCP:
            sport, dport, hlen, flags, seq, ack, window = parse_tcphdr(pkt, l4)
            if sport >= 0:
                ...

The byte-order helpers (``load_be16/32/64``, ``store_be16/32/64``) are the
``bpf_ntohs(*(__be16 *)p)`` / ``*(__be16 *)p = bpf_htons(v)`` of C. When any
of their bytes is outside the packet they fault it (XDP_ABORTED, as any access
outside does): a load then gives 0, a store writes nothing.

Offsets may be any integer type; they are taken as int64. Every helper guards
with header_fits (``0 <= off <= len(pkt) - size``, with no addition that
could overflow), so a huge offset cannot pass; behind that guard the
byte-order helpers read or write with one unaligned byte-swapped access
(kernels/context.py), and LLVM, which inlines the parsers into the program's
loop, drops the view's per-byte checks of their other fields.
"""

import numpy as np

from .. import config
from ..jit import api, kernel, lazy

# one unaligned byte-swapped access each, behind header_fits (kernels/context.py)
_load_be16_unchecked = lazy("dataplane.kernels.context", "load_be16_unchecked")
_load_be32_unchecked = lazy("dataplane.kernels.context", "load_be32_unchecked")
_load_be64_unchecked = lazy("dataplane.kernels.context", "load_be64_unchecked")
_store_be16_unchecked = lazy("dataplane.kernels.context", "store_be16_unchecked")
_store_be32_unchecked = lazy("dataplane.kernels.context", "store_be32_unchecked")
_store_be64_unchecked = lazy("dataplane.kernels.context", "store_be64_unchecked")

# Ethernet (linux/if_ether.h, linux/if_vlan.h)
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
ETH_HLEN = 14
VLAN_HLEN = 4
VLAN_VID_MASK = 0x0FFF
VLAN_MAX_DEPTH = 2

# IP protocol numbers / IPv6 next headers (linux/in.h, linux/in6.h)
IPPROTO_HOPOPTS = 0
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ROUTING = 43
IPPROTO_FRAGMENT = 44
IPPROTO_ESP = 50
IPPROTO_AH = 51
IPPROTO_ICMPV6 = 58
IPPROTO_NONE = 59
IPPROTO_DSTOPTS = 60
IPPROTO_MH = 135

# IPv4 frag_off field (net/ip.h)
IP_DF = 0x4000
IP_MF = 0x2000
IP_OFFSET = 0x1FFF

#: Most IPv6 extension headers parse_ip6hdr_ext walks before it gives up.
IPV6_EXTHDR_MAX = 8

# TCP flags: the byte at offset 13 of the header (linux/tcp.h's TCPHDR_*)
TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10
TCP_URG = 0x20
TCP_ECE = 0x40
TCP_CWR = 0x80

# ICMP / ICMPv6 types (linux/icmp.h, linux/icmpv6.h)
ICMP_ECHOREPLY = 0
ICMP_DEST_UNREACH = 3
ICMP_ECHO = 8
ICMP_TIME_EXCEEDED = 11
ICMPV6_DEST_UNREACH = 1
ICMPV6_PKT_TOOBIG = 2
ICMPV6_TIME_EXCEED = 3
ICMPV6_ECHO_REQUEST = 128
ICMPV6_ECHO_REPLY = 129
NDISC_NEIGHBOUR_SOLICITATION = 135
NDISC_NEIGHBOUR_ADVERTISEMENT = 136


# ---------------------------------------------------------------- byte order

@api
@kernel(**config.INLINE_JIT)
def header_fits(pkt, off, size):
    """True when the ``size`` bytes at ``off`` lie inside the packet.

    The guard of every helper here, for programs too (``if not
    header_fits(pkt, off, 20): return XDP_PASS``): the C idiom
    ``if (p + size > data_end)``, and ``off >= 0``. No addition in it can
    overflow (numba's signed adds let LLVM assume ``off + size`` does not
    wrap, so ``off + size > len(pkt)`` lets a huge ``off`` through), and its
    unsigned compare is the form after which LLVM drops the view's own
    checks of ``pkt[off]`` .. ``pkt[off + size - 1]``.
    """
    off = np.int64(off)
    n = len(pkt)
    return size >= 0 and n >= size and np.uint64(off) <= np.uint64(n - size)


@api
@kernel(**config.INLINE_JIT)
def load_be16(pkt, off):
    """Big-endian 16-bit load at ``off`` (bpf_ntohs(*(__be16 *)p)): an int64 0..65535.

    A byte outside the packet: the packet faults (XDP_ABORTED) and the load
    gives 0, as ``pkt[i]`` does.
    """
    if not header_fits(pkt, off, 2):
        return pkt[len(pkt)]  # an access outside: faults the packet, reads 0
    return _load_be16_unchecked(pkt, off)


@api
@kernel(**config.INLINE_JIT)
def load_be32(pkt, off):
    """Big-endian 32-bit load at ``off`` (bpf_ntohl(*(__be32 *)p)): an int64 0..2**32-1.

    Outside the packet: fault and 0, as load_be16.
    """
    if not header_fits(pkt, off, 4):
        return pkt[len(pkt)]  # an access outside: faults the packet, reads 0
    return _load_be32_unchecked(pkt, off)


@api
@kernel(**config.INLINE_JIT)
def load_be64(pkt, off):
    """Big-endian 64-bit load at ``off`` (bpf_be64_to_cpu(*(__be64 *)p)): a **uint64**.

    Unsigned, as in the kernel. numba compares uint64 with int64 through
    float64 (inexact above 2**53): compare it with another uint64, e.g.
    ``load_be64(pkt, off) == np.uint64(0x20010DB800000000)``. Outside the
    packet: fault and 0, as load_be16.
    """
    if not header_fits(pkt, off, 8):
        return np.uint64(pkt[len(pkt)])  # an access outside: faults the packet, reads 0
    return _load_be64_unchecked(pkt, off)


@kernel(**config.INLINE_JIT)
def _store_be(pkt, off, value, size):
    """Store the low ``size`` bytes of ``value`` big-endian at ``off``.

    All or nothing: when a byte would fall outside the packet, nothing is
    written and the packet faults (XDP_ABORTED), as any access outside does.
    """
    off = np.int64(off)
    if not header_fits(pkt, off, size):
        pkt[len(pkt)]  # an access outside: sets the packet's fault flag, writes nothing
        return
    if size == 2:  # size is a constant where inlined: one branch is left
        _store_be16_unchecked(pkt, off, value)
    elif size == 4:
        _store_be32_unchecked(pkt, off, value)
    else:
        _store_be64_unchecked(pkt, off, value)


@api
@kernel(**config.INLINE_JIT)
def store_be16(pkt, off, value):
    """Store the low 16 bits of ``value`` big-endian at ``off`` (*(__be16 *)p =
    bpf_htons(v)); all or nothing, faulting the packet outside it."""
    _store_be(pkt, off, value, 2)


@api
@kernel(**config.INLINE_JIT)
def store_be32(pkt, off, value):
    """Store the low 32 bits of ``value`` big-endian at ``off`` (*(__be32 *)p =
    bpf_htonl(v)); all or nothing, faulting the packet outside it."""
    _store_be(pkt, off, value, 4)


@api
@kernel(**config.INLINE_JIT)
def store_be64(pkt, off, value):
    """Store ``value`` (int64 or uint64) big-endian at ``off`` (*(__be64 *)p =
    bpf_cpu_to_be64(v)); all or nothing, faulting the packet outside it."""
    _store_be(pkt, off, value, 8)


# ---------------------------------------------------------------- Ethernet

@api
@kernel(**config.INLINE_JIT)
def parse_ethhdr(pkt):
    """Ethernet header with up to two VLAN tags (802.1Q, QinQ 802.1ad).

    xdp-tutorial's ``parse_ethhdr``. Returns ``(h_proto, l3_offset)``, or
    ``(-1, -1)`` when truncated. After VLAN_MAX_DEPTH tags ``h_proto`` may
    still be a VLAN TPID (a third tag is not skipped).
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
def parse_ethhdr_vlan(pkt):
    """parse_ethhdr that also returns the VLAN ids it skipped.

    xdp-tutorial's ``parse_ethhdr_vlan`` (its ``struct collect_vlans``).
    Returns ``(h_proto, l3_offset, vlan_count, outer_vid, inner_vid)``: the
    ids are the TCI's low 12 bits (``& VLAN_VID_MASK``), -1 where there is no
    such tag; ``h_proto`` and ``l3_offset`` are parse_ethhdr's. Truncated:
    every element -1.
    """
    n = len(pkt)
    none = np.int64(-1)
    if n < ETH_HLEN:
        return none, none, none, none, none
    off = np.int64(12)
    proto = load_be16(pkt, off)
    count = np.int64(0)
    vid0 = none
    vid1 = none
    for depth in range(VLAN_MAX_DEPTH):
        if proto != ETH_P_8021Q and proto != ETH_P_8021AD:
            break
        off += 4
        if n < off + 2:
            return none, none, none, none, none
        vid = load_be16(pkt, off - 2) & VLAN_VID_MASK
        if depth == 0:
            vid0 = vid
        else:
            vid1 = vid
        count += 1
        proto = load_be16(pkt, off)
    return proto, off + 2, count, vid0, vid1


# ---------------------------------------------------------------- IPv4 / IPv6

@api
@kernel(**config.INLINE_JIT)
def parse_iphdr(pkt, off):
    """IPv4 header at ``off`` (IHL honoured: options are skipped).

    xdp-tutorial's ``parse_iphdr``. Returns ``(protocol, l4_offset)``;
    ``l4_offset`` is -1 for a non-first fragment (no L4 header in it);
    ``(-1, -1)`` when truncated or not IPv4 (version != 4 or IHL < 5).
    """
    off = np.int64(off)
    if not header_fits(pkt, off, 20):
        return np.int64(-1), np.int64(-1)
    ihl = (pkt[off] & 0x0F) * 4
    if (pkt[off] >> 4) != 4 or ihl < 20 or not header_fits(pkt, off, ihl):
        return np.int64(-1), np.int64(-1)
    frag_off = load_be16(pkt, off + 6) & 0x1FFF
    if frag_off != 0:
        return pkt[off + 9], np.int64(-1)
    return pkt[off + 9], off + ihl


@api
@kernel(**config.INLINE_JIT)
def parse_iphdr_fields(pkt, off):
    """IPv4 header at ``off`` with the fields of ``struct iphdr`` a program needs.

    parse_iphdr plus the fields. Returns ``(protocol, l4_offset, ihl_bytes,
    tot_len, ttl, frag_offset, more_fragments, saddr, daddr)``:
    ``l4_offset`` as in parse_iphdr (-1 for a non-first fragment),
    ``ihl_bytes`` the header length with options (ihl * 4), ``tot_len`` the
    header's total length field (not checked against the packet),
    ``frag_offset`` in bytes (the field * 8), ``more_fragments`` 0 or 1,
    ``saddr`` / ``daddr`` as host-order int64 (0..2**32-1). Truncated or not
    IPv4: every element -1. TOS, id and checksum: ``load_be16`` at off + 0/4/10.
    """
    off = np.int64(off)
    none = np.int64(-1)
    if not header_fits(pkt, off, 20):
        return none, none, none, none, none, none, none, none, none
    vihl = pkt[off]
    ihl = (vihl & 0x0F) * 4
    if (vihl >> 4) != 4 or ihl < 20 or not header_fits(pkt, off, ihl):
        return none, none, none, none, none, none, none, none, none
    frag = load_be16(pkt, off + 6)
    frag_offset = (frag & IP_OFFSET) * 8
    l4 = off + ihl
    if frag_offset != 0:
        l4 = none
    return (pkt[off + 9], l4, ihl, load_be16(pkt, off + 2), pkt[off + 8], frag_offset,
            (frag >> 13) & 1, load_be32(pkt, off + 12), load_be32(pkt, off + 16))


@api
@kernel(**config.INLINE_JIT)
def parse_ip6hdr(pkt, off):
    """IPv6 fixed header at ``off``: ``(nexthdr, offset after it)`` or ``(-1, -1)``.

    xdp-tutorial's ``parse_ip6hdr``: extension headers are not walked (see
    parse_ip6hdr_ext) and the version is not checked.
    """
    off = np.int64(off)
    if not header_fits(pkt, off, 40):
        return np.int64(-1), np.int64(-1)
    return pkt[off + 6], off + 40


@api
@kernel(**config.INLINE_JIT)
def parse_ip6hdr_ext(pkt, off):
    """IPv6 header at ``off`` and its extension headers, up to the upper layer.

    The kernel's ``ipv6_skip_exthdr`` (with its fragment offset), bounded at
    IPV6_EXTHDR_MAX headers. Walks hop-by-hop (0), routing (43), destination
    options (60) and mobility (135) headers (length ``(hdrlen + 1) * 8``), AH
    (51, ``(hdrlen + 2) * 4``) and the fragment header (44, 8 bytes); stops at
    anything else (TCP, UDP, ICMPv6, ESP, no next header 59, ...).

    Returns ``(nexthdr, l4_offset, fragment)``: ``nexthdr`` the first header
    that is not an extension header and ``l4_offset`` where it starts;
    ``fragment`` is 1 when a fragment header says the packet is a fragment
    (offset or M flag set), else 0. For a non-first fragment (offset != 0) the
    walk stops at its fragment header: ``(fragment's nexthdr, -1, 1)``, no L4
    header. Truncated (any header on the way), not IPv6 (version != 6) or more
    than IPV6_EXTHDR_MAX extension headers: ``(-1, -1, -1)``.
    """
    off = np.int64(off)
    none = np.int64(-1)
    if not header_fits(pkt, off, 40) or (pkt[off] >> 4) != 6:
        return none, none, none
    nexthdr = pkt[off + 6]
    off += 40
    fragment = np.int64(0)
    for depth in range(IPV6_EXTHDR_MAX + 1):
        if (nexthdr != IPPROTO_HOPOPTS and nexthdr != IPPROTO_ROUTING
                and nexthdr != IPPROTO_FRAGMENT and nexthdr != IPPROTO_AH
                and nexthdr != IPPROTO_DSTOPTS and nexthdr != IPPROTO_MH):
            return nexthdr, off, fragment
        if depth == IPV6_EXTHDR_MAX or not header_fits(pkt, off, 8):
            return none, none, none        # too many, or shorter than any extension header
        following = pkt[off]
        if nexthdr == IPPROTO_FRAGMENT:
            frag = load_be16(pkt, off + 2)     # offset << 3 | res << 1 | M
            if (frag & 0xFFF9) != 0:
                fragment = np.int64(1)
            if (frag & 0xFFF8) != 0:          # not the first fragment: no L4 header
                return following, none, fragment
            hlen = np.int64(8)
        elif nexthdr == IPPROTO_AH:
            hlen = (pkt[off + 1] + 2) * 4
        else:
            hlen = (pkt[off + 1] + 1) * 8
        if not header_fits(pkt, off, hlen):
            return none, none, none
        nexthdr = following
        off += hlen
    return none, none, none   # not reached: the last pass returns


# ---------------------------------------------------------------- L4

@api
@kernel(**config.INLINE_JIT)
def parse_tcphdr(pkt, off):
    """TCP header at ``off``, options included.

    xdp-tutorial's ``parse_tcphdr``. Returns ``(source, dest, hdr_len, flags,
    seq, ack_seq, window)``: ``hdr_len`` is doff * 4 (the payload starts at
    ``off + hdr_len``), ``flags`` the byte of TCP_FIN .. TCP_CWR bits.
    Truncated (options included) or doff < 5: every element -1.
    """
    off = np.int64(off)
    none = np.int64(-1)
    if not header_fits(pkt, off, 20):
        return none, none, none, none, none, none, none
    hlen = (pkt[off + 12] >> 4) * 4
    if hlen < 20 or not header_fits(pkt, off, hlen):
        return none, none, none, none, none, none, none
    return (load_be16(pkt, off), load_be16(pkt, off + 2), hlen, pkt[off + 13],
            load_be32(pkt, off + 4), load_be32(pkt, off + 8), load_be16(pkt, off + 14))


@api
@kernel(**config.INLINE_JIT)
def parse_udphdr(pkt, off):
    """UDP header at ``off``.

    xdp-tutorial's ``parse_udphdr``. Returns ``(source, dest, len,
    payload_offset)``: ``len`` the header's length field as is (header
    included; not checked against the packet: a first fragment's covers the
    whole datagram), ``payload_offset`` = off + 8. Truncated: every element -1.
    """
    off = np.int64(off)
    none = np.int64(-1)
    if not header_fits(pkt, off, 8):
        return none, none, none, none
    return load_be16(pkt, off), load_be16(pkt, off + 2), load_be16(pkt, off + 4), off + 8


@api
@kernel(**config.INLINE_JIT)
def parse_icmphdr(pkt, off):
    """ICMP header at ``off`` (the 8 bytes of ``struct icmphdr``).

    xdp-tutorial's ``parse_icmphdr``. Returns ``(type, code, id, sequence,
    next_offset)``: ``id`` / ``sequence`` are bytes 4-7 (an echo's; other
    types keep other things there), ``next_offset`` = off + 8. Truncated:
    every element -1.
    """
    off = np.int64(off)
    none = np.int64(-1)
    if not header_fits(pkt, off, 8):
        return none, none, none, none, none
    return pkt[off], pkt[off + 1], load_be16(pkt, off + 4), load_be16(pkt, off + 6), off + 8


@api
@kernel(**config.INLINE_JIT)
def parse_icmp6hdr(pkt, off):
    """ICMPv6 header at ``off`` (the 8 bytes of ``struct icmp6hdr``).

    xdp-tutorial's ``parse_icmp6hdr``. Returns ``(type, code, id, sequence,
    next_offset)`` as parse_icmphdr (an echo's identifier and sequence; a
    neighbour solicitation's reserved word, ...). Truncated: every element -1.
    """
    off = np.int64(off)
    none = np.int64(-1)
    if not header_fits(pkt, off, 8):
        return none, none, none, none, none
    return pkt[off], pkt[off + 1], load_be16(pkt, off + 4), load_be16(pkt, off + 6), off + 8


# ---------------------------------------------------------------- all layers

@api
@kernel(**config.INLINE_JIT)
def parse_l4(pkt):
    """Ethernet (VLAN tags skipped), IPv4 or IPv6 (extension headers walked).

    parse_ethhdr, then parse_iphdr or parse_ip6hdr_ext. Returns
    ``(h_proto, ip_proto, l3_offset, l4_offset)``:
    - Ethernet truncated: ``(-1, -1, -1, -1)``;
    - not IP (ARP, ...): ``(h_proto, -1, l3_offset, -1)``;
    - IP header truncated or invalid: ``(h_proto, -1, l3_offset, -1)``;
    - a non-first fragment: ``(h_proto, ip_proto, l3_offset, -1)``;
    - otherwise every element is set. ``l4_offset`` is where the L4 header
      starts: hand it to parse_tcphdr / parse_udphdr / ..., which check it fits.
    """
    none = np.int64(-1)
    proto, l3 = parse_ethhdr(pkt)
    if proto == ETH_P_IP:
        ipproto, l4 = parse_iphdr(pkt, l3)
    elif proto == ETH_P_IPV6:
        ipproto, l4, _fragment = parse_ip6hdr_ext(pkt, l3)
    else:
        return proto, none, l3, none
    return proto, ipproto, l3, l4
