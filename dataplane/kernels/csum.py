"""Internet checksum helpers for programs (RFC 1071, RFC 1624, the kernel's checksum.h).

Byte order: every value here is the host-integer reading of network bytes, as
``load_be16`` / ``load_be32`` return them: a checksum field is
``load_be16(pkt, off)``, an address ``load_be32(pkt, off)``. One's-complement
sums do not depend on byte order (RFC 1071 2.B), so a folded 16-bit result is
the kernel's value read the same way: ``bpf_ntohs(kernel value) == ours``.

Partial sums (``__wsum``) are 32-bit values held in int64 (0 .. 0xFFFFFFFF);
they are only meaningful through ``csum_fold`` / ``csum_add`` / ``csum_sub``,
and like the kernel's (whose 32-bit value depends on the architecture) only
their fold is specified. ``csum_partial`` follows lib/checksum.c (the generic
implementation of arm64, riscv, ...): the 16-bit sum of the bytes, then the
seed added with end-around carry.

Errors are negative, as the kernel's helpers return them: ``-EINVAL`` (-22) for
a bad size, ``-EFAULT`` (-14) for a range outside the packet. A range outside
the packet also sets the packet's fault flag (the helper touches the first byte
past the packet), so the runner turns the verdict into XDP_ABORTED, as for any
access of the program's own outside its packet; nothing in it is read or written.

``bpf_csum_diff`` (helper 28) takes pointers, which programs do not have; it
comes in two forms with the kernel's argument order:

* ``csum_diff_words(from_words, to_words, seed)``: tuples of 32-bit words
  (values, e.g. ``(load_be32(pkt, 26),)``), the stack buffers of C programs;
* ``csum_diff_packet(pkt, from_off, from_size, to_off, to_size, seed)``: both
  buffers in the packet (a size of 0 stands for the NULL pointer: the offset is
  then ignored).

Both return what the kernel returns since Linux 6.13 ("bpf_csum_diff: optimize
and homogenize for all archs"): ``csum_from32to16`` of
``csum_sub(csum_partial(to, seed), csum_partial(from, 0))`` when both sizes are
non-zero, ``csum_partial(to, seed)`` for ``to`` only, ``~csum_partial(from,
~seed)`` for ``from`` only, ``seed`` for neither: a value in 0 .. 0xFFFF, which
``csum_fold`` turns into the new checksum field. The csum_partial is the
generic one, so the result is bit for bit the kernel's on arm64, riscv and the
other lib/checksum.c architectures, reading their seed and result with the
bytes of each 16-bit half swapped (``bpf_ntohs`` for 16-bit values, see
above). x86-64's csum_partial returns other 32-bit representatives, so there a
result that is one's-complement zero can come back as 0 where these give
0xFFFF or the reverse (e.g. pulling the word 0xFFFFFFFF with seed 0: x86-64 0,
arm64 and this 0xFFFF); other results agree. Here sizes must be
multiples of 4 (the helper's documented contract; kernels before 6.13 enforce
it with -EINVAL, and they returned the unfolded, architecture-dependent 32-bit
sum instead, whose csum_fold is the same); eBPF objects may pass any size, as
6.13 and later let them (kernels/ebpf.py).
"""

import numpy as np

from .. import config
from ..jit import api, kernel, lazy

literal_unroll = lazy("numba", "literal_unroll")

EINVAL = 22
EFAULT = 14
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
#: Offsets of the checksum fields (in the L4 header; IPv4: in the IP header).
TCP_CSUM_OFF = 16
UDP_CSUM_OFF = 6
ICMP_CSUM_OFF = 2
IPV4_CSUM_OFF = 10

_M32 = 0xFFFFFFFF
_M16 = 0xFFFF


# -- helpers private to this file ------------------------------------------------

@kernel(**config.INLINE_JIT)
def _fault(pkt):
    """Touch the first byte past the packet: sets the fault flag (checked view)."""
    x = pkt[len(pkt)]
    return np.int64(-EFAULT) - x * 0


@kernel(**config.INLINE_JIT)
def _in_packet(pkt, off, length):
    """True when ``[off, off + length)`` lies inside the packet (length >= 0)."""
    return off >= 0 and length >= 0 and off <= len(pkt) and length <= len(pkt) - off


@kernel(**config.INLINE_JIT)
def _sum16(pkt, off, length):
    """Unfolded sum of the big-endian 16-bit words at ``off`` (an odd last byte is
    the high byte of a word padded with zero). The caller checks the range."""
    s = np.int64(0)
    i = np.int64(off)
    end = i + (np.int64(length) & ~np.int64(1))
    while i < end:
        s += (pkt[i] << 8) | pkt[i + 1]
        i += 2
    if length & 1:
        s += pkt[end] << 8
    return s


@kernel(**config.INLINE_JIT)
def _fold16(s):
    """End-around-carry fold of a non-negative sum to 16 bits (0 only for 0)."""
    r = np.int64(s)
    while r > _M16:
        r = (r & _M16) + (r >> 16)
    return r


@kernel(**config.INLINE_JIT)
def _words_sum(words):
    """Unfolded sum of the 16-bit halves of a tuple of 32-bit words."""
    s = np.int64(0)
    for w in literal_unroll(words + (0,)):  # (0,): an empty tuple cannot be unrolled
        v = np.int64(w) & _M32
        s += (v >> 16) + (v & _M16)
    return s


@kernel(**config.INLINE_JIT)
def _from32to16(x):
    """csum_from32to16: fold a 32-bit sum to 16 bits, not complemented."""
    v = np.int64(x) & _M32
    v = (v & _M16) + (v >> 16)
    return (v & _M16) + (v >> 16)


@kernel(**config.INLINE_JIT)
def _diff(from_sum, from_size, to_sum, to_size, seed):
    """bpf_csum_diff (Linux >= 6.13) from the two buffers' unfolded sums."""
    ret = np.int64(seed) & _M32
    if from_size != 0 and to_size != 0:
        ret = csum_sub(csum_add(_fold16(to_sum), ret), _fold16(from_sum))
    elif to_size != 0:
        ret = csum_add(_fold16(to_sum), ret)
    elif from_size != 0:
        ret = ~csum_add(_fold16(from_sum), ~ret & _M32) & _M32
    return _from32to16(ret)


# -- 32-bit partial sums ---------------------------------------------------------

@api
@kernel(**config.INLINE_JIT)
def csum_fold(csum):
    """``csum_fold(csum)``: a 32-bit partial sum -> the 16-bit checksum field value.

    The sum's 16-bit halves added with end-around carry, complemented: 0 .. 0xFFFF
    (only bits 0..31 of ``csum`` count, as the C function takes a u32).
    """
    return ~_from32to16(csum) & _M16


@api
@kernel(**config.INLINE_JIT)
def csum_add(csum, addend):
    """``csum_add(csum, addend)``: 32-bit one's-complement add (end-around carry)."""
    a = np.int64(addend) & _M32
    r = (np.int64(csum) + a) & _M32
    return r + np.int64(r < a)


@api
@kernel(**config.INLINE_JIT)
def csum_sub(csum, addend):
    """``csum_sub(csum, addend)``: ``csum_add(csum, ~addend)`` on 32 bits."""
    return csum_add(csum, ~np.int64(addend) & _M32)


@api
@kernel(**config.INLINE_JIT)
def csum_partial(pkt, off, length, seed):
    """``csum_partial(pkt + off, length, seed)``: 32-bit partial sum of packet bytes.

    Big-endian 16-bit words from ``off`` (an odd last byte is the high byte of
    a word), folded to 16 bits (0 only when every byte is 0), plus ``seed``
    with end-around carry (lib/checksum.c). ``csum_fold`` of it is the Internet
    checksum of the bytes. -EFAULT (and a fault) when the range leaves the packet.
    """
    if not _in_packet(pkt, off, length):
        return _fault(pkt)
    return csum_add(_fold16(_sum16(pkt, off, length)), seed)


# -- bpf_csum_diff ---------------------------------------------------------------

@api
@kernel(**config.INLINE_JIT)
def csum_diff_words(from_words, to_words, seed):
    """``bpf_csum_diff(from, 4 * len(from_words), to, 4 * len(to_words), seed)``.

    ``from_words`` / ``to_words``: tuples of 32-bit words (each taken modulo
    2**32), e.g. ``(old_addr,)`` and ``(new_addr,)``; ``()`` for none. Returns
    the kernel's result, 0 .. 0xFFFF; ``csum_fold(csum_diff_words((old,), (new,),
    ~check & 0xFFFF))`` is the checksum after replacing ``old`` by ``new``.
    """
    return _diff(_words_sum(from_words), len(from_words), _words_sum(to_words),
                 len(to_words), seed)


@api
@kernel(**config.INLINE_JIT)
def csum_diff_packet(pkt, from_off, from_size, to_off, to_size, seed):
    """``bpf_csum_diff(data + from_off, from_size, data + to_off, to_size, seed)``.

    Both buffers in the packet; a size of 0 means no buffer (its offset is
    ignored). Sizes must be multiples of 4: otherwise -EINVAL (-22). A buffer
    outside the packet: -EFAULT (-14) and a fault. Returns 0 .. 0xFFFF.
    """
    if from_size < 0 or to_size < 0 or (from_size | to_size) & 3:
        return np.int64(-EINVAL)
    fs = np.int64(0)
    ts = np.int64(0)
    if from_size != 0:
        if not _in_packet(pkt, from_off, from_size):
            return _fault(pkt)
        fs = _sum16(pkt, from_off, from_size)
    if to_size != 0:
        if not _in_packet(pkt, to_off, to_size):
            return _fault(pkt)
        ts = _sum16(pkt, to_off, to_size)
    return _diff(fs, from_size, ts, to_size, seed)


# -- RFC 1624 incremental updates ------------------------------------------------

@api
@kernel(**config.INLINE_JIT)
def csum_replace2(check, old, new):
    """``csum_replace2``: the checksum field after a 16-bit field changes ``old`` -> ``new``.

    RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), in 16-bit one's-complement
    arithmetic exactly as the kernel (csum16_add): 0 .. 0xFFFF.
    """
    o = ~np.int64(old) & _M16
    n = np.int64(new) & _M16
    r = ((~np.int64(check) & _M16) + o) & _M16    # csum16_sub(~check, old)
    r = (r + np.int64(r < o)) & _M16
    r2 = (r + n) & _M16                            # csum16_add(., new)
    r2 = (r2 + np.int64(r2 < n)) & _M16
    return ~r2 & _M16


@api
@kernel(**config.INLINE_JIT)
def csum_replace4(check, old, new):
    """``csum_replace4``: the checksum field after a 32-bit field (an IPv4 address)
    changes ``old`` -> ``new``: csum_fold(csum_add(csum_sub(~check, old), new))."""
    tmp = csum_sub(~(np.int64(check) & _M16) & _M32, old)
    return csum_fold(csum_add(tmp, new))


# -- whole headers ---------------------------------------------------------------

@api
@kernel(**config.INLINE_JIT)
def ipv4_csum(pkt, off):
    """The IPv4 header checksum of the header at ``off`` (IHL honoured), computed
    with the checksum field taken as 0: the value to store at ``off + 10``.

    -EINVAL (-22) for an IHL below 5; -EFAULT (-14) and a fault when the header
    leaves the packet.
    """
    if not _in_packet(pkt, off, 1):
        return _fault(pkt)
    hlen = (pkt[off] & 0x0F) * 4
    if hlen < 20:
        return np.int64(-EINVAL)
    if not _in_packet(pkt, off, hlen):
        return _fault(pkt)
    s = _sum16(pkt, off, IPV4_CSUM_OFF) + _sum16(pkt, off + IPV4_CSUM_OFF + 2,
                                                 hlen - IPV4_CSUM_OFF - 2)
    return ~_fold16(s) & _M16


@api
@kernel(**config.INLINE_JIT)
def ipv4_csum_set(pkt, off):
    """Compute the IPv4 header checksum (``ipv4_csum``) and store it at ``off + 10``.

    Returns the value stored, or the negative error (nothing written).
    """
    c = ipv4_csum(pkt, off)
    if c >= 0:
        pkt[off + IPV4_CSUM_OFF] = c >> 8
        pkt[off + IPV4_CSUM_OFF + 1] = c
    return c


@kernel(**config.INLINE_JIT)
def _l4_field(proto):
    """Offset of the checksum field in the L4 header of ``proto``, or -1."""
    if proto == IPPROTO_TCP:
        return np.int64(TCP_CSUM_OFF)
    if proto == IPPROTO_UDP:
        return np.int64(UDP_CSUM_OFF)
    if proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
        return np.int64(ICMP_CSUM_OFF)
    return np.int64(-1)


@kernel(**config.INLINE_JIT)
def _l4_finish(pkt, pseudo, l4_off, l4_len, proto):
    """Checksum of pseudo-header sum + segment (the checksum field taken as 0)."""
    if not _in_packet(pkt, l4_off, l4_len):
        return _fault(pkt)
    field = _l4_field(proto)
    if field >= 0 and l4_len >= field + 2:
        s = _sum16(pkt, l4_off, field) + _sum16(pkt, l4_off + field + 2, l4_len - field - 2)
    else:
        s = _sum16(pkt, l4_off, l4_len)
    c = ~_fold16(s + pseudo) & _M16
    if c == 0 and proto == IPPROTO_UDP:
        return np.int64(_M16)     # RFC 768 / 8200: a computed 0 is sent as 0xFFFF
    return c


@api
@kernel(**config.INLINE_JIT)
def l4_csum_ipv4(pkt, ip_off, l4_off, l4_len, proto):
    """TCP/UDP/ICMP checksum of the segment at ``l4_off`` (``l4_len`` bytes) under
    the IPv4 header at ``ip_off``: the value to store in the segment's field.

    The pseudo-header (addresses from the IPv4 header, ``proto``, ``l4_len``) is
    included, except for ICMP (proto 1), whose checksum has none. The checksum
    field (TCP +16, UDP +6, ICMP/ICMPv6 +2) is taken as 0; for another
    protocol the segment is summed as it is (zero the field first). UDP's
    computed 0 is returned as 0xFFFF. Errors: -EFAULT (-14) and a fault when
    the addresses or the segment leave the packet.
    """
    if not _in_packet(pkt, ip_off + 12, 8):
        return _fault(pkt)
    pseudo = np.int64(0)
    if proto != IPPROTO_ICMP:
        pseudo = _sum16(pkt, ip_off + 12, 8) + (np.int64(proto) & 0xFF) + (np.int64(l4_len) & _M16)
    return _l4_finish(pkt, pseudo, l4_off, l4_len, proto)


@api
@kernel(**config.INLINE_JIT)
def l4_csum_ipv6(pkt, ip_off, l4_off, l4_len, proto):
    """TCP/UDP/ICMPv6 checksum of the segment at ``l4_off`` (``l4_len`` bytes) under
    the IPv6 header at ``ip_off`` (RFC 8200 8.1 pseudo-header: addresses,
    32-bit length, next header ``proto``, even past extension headers).

    As ``l4_csum_ipv4`` otherwise (the field taken as 0, UDP's 0 -> 0xFFFF).
    """
    if not _in_packet(pkt, ip_off + 8, 32):
        return _fault(pkt)
    n = np.int64(l4_len) & _M32
    pseudo = _sum16(pkt, ip_off + 8, 32) + (n >> 16) + (n & _M16) + (np.int64(proto) & 0xFF)
    return _l4_finish(pkt, pseudo, l4_off, l4_len, proto)
