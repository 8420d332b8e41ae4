"""Maglev rings (dataplane.lb.maglev): the properties of the Maglev paper and
l4lb-notes.md, checked with np.bincount and plain-Python fills written here
from the paper's pseudo-code (not with the module's own helpers)."""

import ipaddress
import random

import numpy as np
import pytest

from dataplane.lb.maglev import RING_SIZE, maglev_ring, real_hash, ring_changes

N = RING_SIZE


def v4_reals(count, weight=1, first_id=1):
    return [(first_id + i, f"10.0.{i // 256}.{i % 256}", weight) for i in range(count)]


# -- plain-Python references -----------------------------------------------------

def perm_params(reals, size):
    """(id, offset, skip, weight) in id order (the module's documented turn order)."""
    out = []
    for real_id, address, weight in sorted(reals):
        h1, h2 = real_hash(address)
        out.append((real_id, h1 % size, h2 % (size - 1) + 1, weight))
    return out


def classic_maglev(reals, size):
    """The Maglev paper's Populate (Pseudocode 1), unweighted."""
    params = perm_params(reals, size)
    nxt = [0] * len(params)
    entry = [0] * size
    filled = 0
    while True:
        for i, (real_id, offset, skip, _) in enumerate(params):
            c = (offset + nxt[i] * skip) % size
            while entry[c]:
                nxt[i] += 1
                c = (offset + nxt[i] * skip) % size
            entry[c] = real_id
            nxt[i] += 1
            filled += 1
            if filled == size:
                return np.array(entry, np.uint32)


def weighted_maglev(reals, size):
    """V2 as l4lb-notes.md states it: each turn a real accumulates its weight and
    takes one slot each time the accumulator passes the largest weight."""
    params = perm_params(reals, size)
    top = max(w for *_, w in params)
    nxt, acc = [0] * len(params), [0] * len(params)
    entry = [0] * size
    filled = 0
    while True:
        for i, (real_id, offset, skip, weight) in enumerate(params):
            acc[i] += weight
            while acc[i] >= top:
                acc[i] -= top
                while entry[(offset + nxt[i] * skip) % size]:
                    nxt[i] += 1
                entry[(offset + nxt[i] * skip) % size] = real_id
                nxt[i] += 1
                filled += 1
                if filled == size:
                    return np.array(entry, np.uint32)


# -- properties ------------------------------------------------------------------

def test_equal_weights_balance():
    ring = maglev_ring(v4_reals(400))
    assert ring.dtype == np.uint32 and ring.shape == (N,)
    counts = np.bincount(ring, minlength=401)
    assert counts[0] == 0 and counts.size == 401
    assert set(counts[1:].tolist()) <= {163, 164}
    assert counts[1:].max() / counts[1:].min() <= 1.01


def test_removing_a_real_moves_few_other_slots():
    reals = v4_reals(400)
    gone = 137
    before = maglev_ring(reals)
    after = maglev_ring([r for r in reals if r[0] != gone])
    own = before == gone
    assert own.sum() in (163, 164)
    assert not (after == gone).any() and not (after == 0).any()
    moved_others = np.count_nonzero(before[~own] != after[~own])
    assert moved_others < 0.02 * np.count_nonzero(~own)


def test_adding_a_real_takes_a_fair_share_and_moves_few_others():
    reals = v4_reals(400)
    before = maglev_ring(reals)
    after = maglev_ring(reals + [(401, "10.0.200.1", 1)])
    taken = after == 401
    assert taken.sum() in (163, 164)
    assert np.count_nonzero(before[~taken] != after[~taken]) < 0.02 * N


def test_weights_give_proportional_shares():
    reals = [(i + 1, f"10.0.{i}.1", 1 + i % 4) for i in range(20)]  # 5 reals of each weight
    counts = np.bincount(maglev_ring(reals), minlength=21)
    total = sum(w for *_, w in reals)
    for real_id, _, weight in reals:
        expected = N * weight / total
        assert abs(counts[real_id] - expected) / expected < 0.01, (real_id, weight)
    by_weight = {w: sum(counts[i] for i, _, ww in reals if ww == w) for w in (1, 2, 3, 4)}
    for w in (2, 3, 4):
        assert abs(by_weight[w] / by_weight[1] / w - 1) < 0.01


def test_equal_weights_are_classic_maglev():
    reals = v4_reals(7) + [(50, "2001:db8::50", 1)]
    for size in (251, 4099):
        assert np.array_equal(maglev_ring(reals, size), classic_maglev(reals, size))
    heavy = [(i, a, 5) for i, a, _ in reals]  # scaling every weight changes nothing
    assert np.array_equal(maglev_ring(heavy, 4099), classic_maglev(reals, 4099))


def test_weighted_fill_matches_reference():
    reals = [(3, "10.1.0.3", 4), (9, "10.1.0.9", 1), (4, "fd00::4", 3), (7, "10.1.0.7", 2),
             (12, "10.1.0.12", 7)]
    for size in (101, 4099):
        assert np.array_equal(maglev_ring(reals, size), weighted_maglev(reals, size))


def test_no_reals_gives_empty_ring():
    ring = maglev_ring([])
    assert ring.dtype == np.uint32 and ring.shape == (N,) and not ring.any()


def test_single_real_owns_every_slot():
    assert (maglev_ring([(5, "10.0.0.5", 3)]) == 5).all()


def test_ipv4_and_ipv6_reals_mix():
    reals = [(1, ipaddress.IPv4Address("10.0.0.1"), 1),
             (2, ipaddress.IPv6Address("2001:db8::2"), 1),
             (3, "10.0.0.3", 1),
             (4, "2001:db8::4", 1),
             (5, "fe80::1:5", 1)]
    counts = np.bincount(maglev_ring(reals), minlength=6)
    assert counts[0] == 0
    assert set(counts[1:].tolist()) <= {N // 5, N // 5 + 1}


def test_address_forms_hash_alike():
    assert real_hash("10.0.0.1") == real_hash(ipaddress.IPv4Address("10.0.0.1"))
    assert real_hash("10.0.0.1") == real_hash("::ffff:10.0.0.1")  # IPv4-mapped form
    assert real_hash("2001:db8::1") == real_hash(ipaddress.IPv6Address("2001:db8::1"))
    hashes = {real_hash(f"10.0.{i // 256}.{i % 256}") for i in range(1000)}
    assert len(hashes) == 1000 and all(0 <= h < 2 ** 64 for pair in hashes for h in pair)
    h1, h2 = real_hash("10.0.0.1")
    assert h1 != h2


def test_ring_is_deterministic_and_order_free():
    reals = v4_reals(50) + [(60, "2001:db8::60", 2)]
    shuffled = reals[:]
    random.Random(1).shuffle(shuffled)
    assert np.array_equal(maglev_ring(reals), maglev_ring(shuffled))


@pytest.mark.parametrize("reals, match", [
    ([(1, "10.0.0.1", 1), (2, "10.0.0.2", 0)], r"real 2 \(10\.0\.0\.2\).*weight"),
    ([(1, "10.0.0.1", -3)], r"real 1 .*weight"),
    ([(1, "10.0.0.1", 1), (1, "10.0.0.9", 1)], r"real 1 \(10\.0\.0\.9\).*twice"),
    ([(0, "10.0.0.1", 1)], r"real 0 .*id"),
    ([(4, "10.0.0.300", 1)], r"real 4 "),
])
def test_bad_reals_raise(reals, match):
    with pytest.raises(ValueError, match=match):
        maglev_ring(reals)


def test_ring_size_must_be_prime():
    with pytest.raises(ValueError, match="prime"):
        maglev_ring(v4_reals(3), size=65536)


def test_ring_changes_are_exactly_the_differing_slots():
    rng = np.random.default_rng(7)
    old = rng.integers(1, 10, N).astype(np.uint32)
    new = old.copy()
    picked = rng.choice(N, 500, replace=False)
    new[picked] = old[picked] % 9 + 1  # a different id in 1..9
    changes = ring_changes(old, new)
    assert changes.tolist() == sorted(picked.tolist())
    assert ring_changes(old, old).size == 0


def test_ring_changes_turn_old_ring_into_new():
    old = maglev_ring(v4_reals(100))
    new = maglev_ring(v4_reals(99) + [(200, "10.0.9.9", 2)])
    changes = ring_changes(old, new)
    expected = [s for s in range(N) if old[s] != new[s]]
    assert changes.tolist() == expected
    live = old.copy()
    live[changes] = new[changes]
    assert np.array_equal(live, new)


def test_ring_changes_need_same_size():
    with pytest.raises(ValueError, match="size"):
        ring_changes(np.zeros(5, np.uint32), np.zeros(7, np.uint32))
