"""Maglev consistent hashing for an L4 load balancer (Katran's CHHelpers /
MaglevHash; the Maglev paper, NSDI 2016, section 3.4).

The control plane builds one ring of ``RING_SIZE`` slots per VIP: slot ``s``
holds the id of the real that flows hashing to ``s`` go to (0: none). Weights
follow Katran's "V2" (MaglevV2): slot share proportional to weight for any
weights. When reals change, ``ring_changes`` lists the slots to rewrite in the
live map.

    old = maglev_ring([(1, "10.0.0.1", 1), (2, "10.0.0.2", 1)])
    new = maglev_ring([(1, "10.0.0.1", 1), (2, "10.0.0.2", 1), (3, "2001:db8::3", 2)])
    for slot in ring_changes(old, new):
        ring_map[vip_base + slot] = new[slot]
"""

import ipaddress
import operator

import numpy as np

from ..kernels.maglev import maglev_fill
from .layout import MAX_WEIGHT

#: Slots per VIP ring (Katran's kDefaultChRingSize): prime, so every skip in
#: 1..N-1 walks the whole ring.
RING_SIZE = 65537

_M64 = (1 << 64) - 1
# Two fixed seeds give the two independent hashes (offset, skip); fixed so
# that every control plane computes the same ring for the same reals.
_SEED_OFFSET = 0x243F6A8885A308D3
_SEED_SKIP = 0x13198A2E03707344
_MAX_ID = 0xFFFFFFFF      # ring slots are uint32


def _fmix64(k):
    """MurmurHash3's 64-bit finalizer: a bijection in which every input bit
    flips each output bit with probability ~1/2."""
    k ^= k >> 33
    k = (k * 0xFF51AFD7ED558CCD) & _M64
    k ^= k >> 33
    k = (k * 0xC4CEB9FE1A85EC53) & _M64
    return k ^ (k >> 33)


def _address16(address):
    """The 16 bytes hashed for an address: IPv6 as is, IPv4 IPv4-mapped
    (::ffff:a.b.c.d), so a real has one hash whichever way it is written."""
    if not isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        address = ipaddress.ip_address(address)
    if address.version == 4:
        return b"\0" * 10 + b"\xff\xff" + address.packed
    return address.packed


def real_hash(address):
    """``(h1, h2)``: two independently seeded 64-bit hashes of a real's address
    (Katran hashes the address with MurmurHash3 x64 and two fixed seeds); the
    real's permutation starts at ``h1 % N`` and steps by ``h2 % (N - 1) + 1``.

    ``address``: an ``IPv4Address``, ``IPv6Address`` or a string.
    """
    b = _address16(address)
    hi, lo = int.from_bytes(b[:8], "big"), int.from_bytes(b[8:], "big")
    return tuple(_fmix64(_fmix64(seed ^ hi) ^ lo) for seed in (_SEED_OFFSET, _SEED_SKIP))


def _is_prime(n):
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def maglev_ring(reals, size=RING_SIZE):
    """The ring of a VIP: ``uint32[size]``, each slot a real's id (Katran's
    ``CHHelpers::generateHashRing`` with MaglevV2).

    ``reals``: ``(real_id, address, weight)`` triples, ids >= 1 and distinct,
    integer weights >= 1. The ring depends only on the set of reals, not on
    their order. No reals: every slot 0.
    """
    if not _is_prime(size):
        raise ValueError(f"Maglev ring size must be prime, not {size}")
    checked = {}
    for real_id, address, weight in reals:
        real_id, weight = operator.index(real_id), operator.index(weight)
        name = f"real {real_id} ({address})"
        if not 1 <= real_id <= _MAX_ID:
            raise ValueError(f"{name}: id must be in 1..{_MAX_ID} (0 marks an empty slot)")
        if real_id in checked:
            raise ValueError(f"{name}: id listed twice")
        if not 1 <= weight <= MAX_WEIGHT:
            raise ValueError(f"{name}: weight {weight} must be in 1..{MAX_WEIGHT}")
        try:
            h1, h2 = real_hash(address)
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
        checked[real_id] = (h1 % size, h2 % (size - 1) + 1, weight)
    ring = np.zeros(size, np.uint32)
    if not checked:
        return ring
    # Turns go in id order: the ring is then a function of the set of reals,
    # so two control planes (or a restart) agree on it.
    ids = sorted(checked)
    offsets, skips, weights = (np.array(c, np.int64) for c in zip(*(checked[i] for i in ids)))
    scratch = np.empty((2, len(ids)), np.int64)
    filled = maglev_fill(offsets, skips, weights, np.array(ids, np.uint32), ring,
                         scratch[0], scratch[1])
    assert filled == size
    return ring


def ring_changes(old, new):
    """Indices of the slots where ``new`` differs from ``old`` (int64): the
    only ring entries the control plane rewrites in the live map, so flows on
    unchanged slots never see a torn update."""
    old, new = np.asarray(old), np.asarray(new)
    if old.shape != new.shape:
        raise ValueError(f"rings differ in size: {old.shape} and {new.shape}")
    return np.flatnonzero(old != new).astype(np.int64, copy=False)
