"""The kernel's jhash (include/linux/jhash.h: Bob Jenkins' lookup3) for programs.

``jhash`` hashes packet bytes as the kernel hashes a key in memory on a
little-endian host (x86-64, arm64): whole 12-byte blocks are read as
little-endian u32s (``__get_unaligned_cpu32``), the 1..12-byte tail byte by
byte exactly as jhash.h's switch (k[0] the low byte of ``a``), and a key of
length 0 skips the final mix. ``jhash_words`` is ``jhash2`` (u32 words),
``jhash_1word`` .. ``jhash_3words`` the fixed-size forms. All take and return
u32 values held in int64 (arguments are taken modulo 2**32).

A map keyed like a kernel program's (``jhash(&key, sizeof(key), seed)``) hashes
the key's bytes: ``jhash(pkt, off, n, seed)`` over the same bytes in the packet,
or ``jhash_words`` over the u32s the kernel would load, i.e. little-endian
reads of the key bytes (a ``load_be32`` value is the byte-swapped word).
"""

import numpy as np

from .. import config
from ..jit import api, kernel, lazy

literal_unroll = lazy("numba", "literal_unroll")

JHASH_INITVAL = 0xDEADBEEF
EFAULT = 14
_M32 = 0xFFFFFFFF


@kernel(**config.INLINE_JIT)
def _rol32(x, r):
    """rol32 for a constant 0 < r < 32 on a u32 in int64."""
    return ((x << r) | (x >> (32 - r))) & _M32


@kernel(**config.INLINE_JIT)
def _mix(a, b, c):
    """__jhash_mix: mix three u32s reversibly."""
    a = (a - c) & _M32
    a ^= _rol32(c, 4)
    c = (c + b) & _M32
    b = (b - a) & _M32
    b ^= _rol32(a, 6)
    a = (a + c) & _M32
    c = (c - b) & _M32
    c ^= _rol32(b, 8)
    b = (b + a) & _M32
    a = (a - c) & _M32
    a ^= _rol32(c, 16)
    c = (c + b) & _M32
    b = (b - a) & _M32
    b ^= _rol32(a, 19)
    a = (a + c) & _M32
    c = (c - b) & _M32
    c ^= _rol32(b, 4)
    b = (b + a) & _M32
    return a, b, c


@kernel(**config.INLINE_JIT)
def _final(a, b, c):
    """__jhash_final: final mixing of (a, b, c) into c (returned)."""
    c ^= b
    c = (c - _rol32(b, 14)) & _M32
    a ^= c
    a = (a - _rol32(c, 11)) & _M32
    b ^= a
    b = (b - _rol32(a, 25)) & _M32
    c ^= b
    c = (c - _rol32(b, 16)) & _M32
    a ^= c
    a = (a - _rol32(c, 4)) & _M32
    b ^= a
    b = (b - _rol32(a, 14)) & _M32
    c ^= b
    c = (c - _rol32(b, 24)) & _M32
    return c


@kernel(**config.INLINE_JIT)
def _le32(pkt, i):
    return pkt[i] | (pkt[i + 1] << 8) | (pkt[i + 2] << 16) | (pkt[i + 3] << 24)


@api
@kernel(**config.INLINE_JIT)
def jhash(pkt, off, length, initval):
    """``jhash(data + off, length, initval)``: the kernel's jhash of packet bytes.

    Returns the u32 hash, or -EFAULT (-14) with the packet's fault flag set
    when ``[off, off + length)`` leaves the packet (nothing is read).
    """
    start = np.int64(off)
    size = np.int64(length)
    if start < 0 or size < 0 or start > len(pkt) or size > len(pkt) - start:
        x = pkt[len(pkt)]  # the first byte past the packet: sets the fault flag
        return np.int64(-EFAULT) - x * 0
    a = (JHASH_INITVAL + size + (np.int64(initval) & _M32)) & _M32
    b = a
    c = a
    k = start
    n = size
    while n > 12:
        a = (a + _le32(pkt, k)) & _M32
        b = (b + _le32(pkt, k + 4)) & _M32
        c = (c + _le32(pkt, k + 8)) & _M32
        a, b, c = _mix(a, b, c)
        n -= 12
        k += 12
    if n == 0:
        return c
    # The switch's fallthrough: each case adds its byte, then all the smaller ones.
    if n >= 12:
        c += pkt[k + 11] << 24
    if n >= 11:
        c += pkt[k + 10] << 16
    if n >= 10:
        c += pkt[k + 9] << 8
    if n >= 9:
        c += pkt[k + 8]
    if n >= 8:
        b += pkt[k + 7] << 24
    if n >= 7:
        b += pkt[k + 6] << 16
    if n >= 6:
        b += pkt[k + 5] << 8
    if n >= 5:
        b += pkt[k + 4]
    if n >= 4:
        a += pkt[k + 3] << 24
    if n >= 3:
        a += pkt[k + 2] << 16
    if n >= 2:
        a += pkt[k + 1] << 8
    a += pkt[k]
    return _final(a & _M32, b & _M32, c & _M32)


@api
@kernel(**config.INLINE_JIT)
def jhash_words(words, initval):
    """``jhash2(words, len(words), initval)``: the kernel's jhash of u32 words.

    ``words`` is a tuple of ints (each taken modulo 2**32), ``()`` for none.
    """
    n = len(words)
    a = (JHASH_INITVAL + (np.int64(n) << 2) + (np.int64(initval) & _M32)) & _M32
    b = a
    c = a
    i = 0
    for w in literal_unroll(words + (0,)):  # (0,): an empty tuple cannot be unrolled
        if i < n:
            v = np.int64(w) & _M32
            j = i % 3
            if j == 0:
                if i > 0:      # the previous block was full and more words follow
                    a, b, c = _mix(a, b, c)
                a = (a + v) & _M32
            elif j == 1:
                b = (b + v) & _M32
            else:
                c = (c + v) & _M32
        i += 1
    if n == 0:
        return c
    return _final(a, b, c)


@kernel(**config.INLINE_JIT)
def _nwords(a, b, c, initval):
    """__jhash_nwords: hash exactly 3, 2 or 1 word(s)."""
    iv = np.int64(initval) & _M32
    return _final((np.int64(a) + iv) & _M32, (np.int64(b) + iv) & _M32,
                  (np.int64(c) + iv) & _M32)


@api
@kernel(**config.INLINE_JIT)
def jhash_3words(a, b, c, initval):
    """``jhash_3words(a, b, c, initval)``."""
    return _nwords(np.int64(a) & _M32, np.int64(b) & _M32, np.int64(c) & _M32,
                   (np.int64(initval) & _M32) + JHASH_INITVAL + (3 << 2))


@api
@kernel(**config.INLINE_JIT)
def jhash_2words(a, b, initval):
    """``jhash_2words(a, b, initval)``."""
    return _nwords(np.int64(a) & _M32, np.int64(b) & _M32, np.int64(0),
                   (np.int64(initval) & _M32) + JHASH_INITVAL + (2 << 2))


@api
@kernel(**config.INLINE_JIT)
def jhash_1word(a, initval):
    """``jhash_1word(a, initval)``."""
    return _nwords(np.int64(a) & _M32, np.int64(0), np.int64(0),
                   (np.int64(initval) & _M32) + JHASH_INITVAL + (1 << 2))
