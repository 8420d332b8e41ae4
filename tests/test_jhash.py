"""jhash helpers (dataplane.hash) against a plain-Python jhash.h written here from
the algorithm, and lookup3's published vectors (jhash is lookup3's hashlittle
on a little-endian host)."""

import random
import struct

import numpy as np
import pytest
from numba import njit

from dataplane import PacketBatch
from dataplane.kernels import jhash as J
from dataplane.kernels.context import make_xdp_md
from dataplane.kernels.layout import SCRATCH_FAULT
from dataplane.kernels.runner import new_scratch

M32 = 0xFFFFFFFF
jhash = J.jhash.dispatcher
jhash_words = J.jhash_words.dispatcher
jhash_1word = J.jhash_1word.dispatcher
jhash_2words = J.jhash_2words.dispatcher
jhash_3words = J.jhash_3words.dispatcher


# -- include/linux/jhash.h in Python ---------------------------------------------

def rol32(x, r):
    return ((x << r) | (x >> (32 - r))) & M32


def mix(a, b, c):
    a = (a - c) & M32; a ^= rol32(c, 4);  c = (c + b) & M32    # noqa: E702
    b = (b - a) & M32; b ^= rol32(a, 6);  a = (a + c) & M32    # noqa: E702
    c = (c - b) & M32; c ^= rol32(b, 8);  b = (b + a) & M32    # noqa: E702
    a = (a - c) & M32; a ^= rol32(c, 16); c = (c + b) & M32    # noqa: E702
    b = (b - a) & M32; b ^= rol32(a, 19); a = (a + c) & M32    # noqa: E702
    c = (c - b) & M32; c ^= rol32(b, 4);  b = (b + a) & M32    # noqa: E702
    return a, b, c


def final(a, b, c):
    c ^= b; c = (c - rol32(b, 14)) & M32    # noqa: E702
    a ^= c; a = (a - rol32(c, 11)) & M32    # noqa: E702
    b ^= a; b = (b - rol32(a, 25)) & M32    # noqa: E702
    c ^= b; c = (c - rol32(b, 16)) & M32    # noqa: E702
    a ^= c; a = (a - rol32(c, 4)) & M32     # noqa: E702
    b ^= a; b = (b - rol32(a, 14)) & M32    # noqa: E702
    c ^= b; c = (c - rol32(b, 24)) & M32    # noqa: E702
    return a, b, c


def py_jhash(key, initval):
    """jhash(): 12-byte blocks as little-endian u32s, then the switch's fallthrough."""
    length = len(key)
    a = b = c = (0xDEADBEEF + length + initval) & M32
    k = 0
    while length > 12:
        x, y, z = struct.unpack_from("<III", key, k)
        a, b, c = mix((a + x) & M32, (b + y) & M32, (c + z) & M32)
        length -= 12
        k += 12
    if length == 0:
        return c
    tail = key[k:k + length] + bytes(12 - length)      # the cases not taken add nothing
    x, y, z = struct.unpack("<III", tail)
    return final((a + x) & M32, (b + y) & M32, (c + z) & M32)[2]


def py_jhash2(words, initval):
    n = len(words)
    a = b = c = (0xDEADBEEF + (n << 2) + initval) & M32
    k = 0
    while n > 3:
        a, b, c = mix((a + words[k]) & M32, (b + words[k + 1]) & M32, (c + words[k + 2]) & M32)
        n -= 3
        k += 3
    if n == 0:
        return c
    rest = list(words[k:]) + [0] * (3 - n)
    return final((a + rest[0]) & M32, (b + rest[1]) & M32, (c + rest[2]) & M32)[2]


def py_nwords(a, b, c, initval):
    return final((a + initval) & M32, (b + initval) & M32, (c + initval) & M32)[2]


# -- over packet bytes -----------------------------------------------------------

@njit
def _hash_packets(buf, meta, scratch, n, args, out, faults):
    for i in range(n):
        scratch[SCRATCH_FAULT] = 0
        ctx = make_xdp_md(buf, meta, scratch, i)
        out[i] = jhash(ctx.pkt, args[i, 0], args[i, 1], args[i, 2])
        faults[i] = scratch[SCRATCH_FAULT]


def hash_in_packets(frames, args):
    b = PacketBatch(len(frames), buffer_bytes=sum(len(f) + 640 for f in frames))
    for f in frames:
        assert b.append(f)
    out = np.zeros(len(frames), np.int64)
    faults = np.zeros(len(frames), np.int64)
    _hash_packets(b.buf, b.meta, new_scratch(), len(frames), np.array(args, np.int64), out,
                  faults)
    return list(out), list(faults)


def test_jhash_every_length_against_the_model():
    rng = random.Random(1)
    frames, args, want = [], [], []
    for length in range(41):
        for initval in (0, 1, 0xDEADBEEF, M32, rng.getrandbits(32), rng.getrandbits(32)):
            key = bytes(rng.getrandbits(8) for _ in range(length))
            pad = rng.randrange(0, 8)                       # unaligned keys
            frames.append(bytes(rng.getrandbits(8) for _ in range(pad)) + key + b"\xa5" * 3)
            args.append((pad, length, initval))
            want.append(py_jhash(key, initval))
    out, faults = hash_in_packets(frames, args)
    assert out == want and not any(faults)


def test_lookup3_published_vectors():
    """lookup3.c driver5: hashlittle("", 0, 0) = 0xdeadbeef, ("", 0, 0xdeadbeef) =
    0xbd5b7dde, ("Four score and seven years ago", 30, 0) = 0x17770551, (.., 1) =
    0xcd628161; the kernel's jhash is hashlittle on little-endian hosts."""
    text = b"Four score and seven years ago"
    cases = [(b"", 0, 0xDEADBEEF), (b"", 0xDEADBEEF, 0xBD5B7DDE),
             (text, 0, 0x17770551), (text, 1, 0xCD628161)]
    frames = [b"\x00" + key + b"\x00" for key, _, _ in cases]
    out, faults = hash_in_packets(frames, [(1, len(k), iv) for k, iv, _ in cases])
    assert out == [h for _, _, h in cases] and not any(faults)
    assert [py_jhash(k, iv) for k, iv, _ in cases] == out


def test_jhash_outside_the_packet_faults():
    frame = bytes(range(20))
    out, faults = hash_in_packets([frame] * 6, [
        (0, 21, 0), (10, 11, 0), (-1, 4, 0), (0, -1, 0), (1 << 40, 1, 0), (20, 0, 7)])
    assert out[:5] == [-14] * 5 and faults[:5] == [1] * 5
    assert out[5] == py_jhash(b"", 7) == (0xDEADBEEF + 7) and faults[5] == 0


# -- u32 words -------------------------------------------------------------------

@njit
def _words(w, iv):
    return (jhash_words((), iv),
            jhash_words((w[0],), iv),
            jhash_words((w[0], w[1], w[2]), iv),
            jhash_words((w[0], w[1], w[2], w[3], w[4], w[5]), iv),
            jhash_words((w[0], w[1], w[2], w[3], w[4], w[5], np.uint32(w[6])), iv),
            jhash_1word(w[0], iv), jhash_2words(w[0], w[1], iv),
            jhash_3words(w[0], w[1], w[2], iv))


@pytest.mark.parametrize("seed", range(4))
def test_jhash_words_against_the_model(seed):
    rng = random.Random(seed)
    for _ in range(50):
        w = [rng.choice([0, M32, rng.getrandbits(32)]) for _ in range(7)]
        iv = rng.choice([0, M32, rng.getrandbits(32)])
        got = _words(np.array(w, np.int64), iv)
        want = tuple(py_jhash2(w[:n], iv) for n in (0, 1, 3, 6, 7)) + (
            py_nwords(w[0], 0, 0, (iv + 0xDEADBEEF + 4) & M32),
            py_nwords(w[0], w[1], 0, (iv + 0xDEADBEEF + 8) & M32),
            py_nwords(w[0], w[1], w[2], (iv + 0xDEADBEEF + 12) & M32))
        assert got == want, (w, iv)
        # jhash.h's identities: jhash_Nwords is jhash2 of N words; on a little-endian
        # host jhash of the words' bytes is jhash2 of the words
        assert got[5:] == (got[1], py_jhash2(w[:2], iv), got[2])
        assert py_jhash(struct.pack("<7I", *w), iv) == got[4]
    # arguments are taken modulo 2**32, as C's u32 parameters
    w = np.array([1 << 40 | 5, -1, 7, 0, 0, 0, 0], np.int64)
    assert _words(w, -1) == _words(np.array([5, M32, 7, 0, 0, 0, 0], np.int64), M32)
