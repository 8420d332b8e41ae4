"""BPF_MAP_TYPE_LRU_HASH's open-addressed table (kernels/lru_htab.py).

Oracles: a model of the documented CLOCK eviction (entry numbers from a free
stack, reference bits, a hand) run beside the map on random operations; the
table's own invariant check (Map.check_links) after changes; and every key
still found after churn that fills the table with tombstones."""

import errno

import numpy as np
import pytest

from dataplane.errors import MapError
from dataplane.kernels import lru_htab
from dataplane.maps import BPF_ANY, BPF_EXIST, BPF_MAP_TYPE_LRU_HASH, BPF_NOEXIST, Map


class ClockModel:
    """The LRU map as lru_htab.py documents it, in plain Python."""

    def __init__(self, n):
        self.n, self.free, self.refs, self.hand = n, list(range(n - 1, -1, -1)), [0] * n, 0
        self.entry, self.value = {}, {}  # key -> entry number, key -> value

    def update(self, key, value, flags):
        if key in self.entry:
            if flags == BPF_NOEXIST:
                return -errno.EEXIST
            self.refs[self.entry[key]] = 1
        else:
            if flags == BPF_EXIST:
                return -errno.ENOENT
            if not self.free:
                while self.refs[self.hand]:
                    self.refs[self.hand] = 0
                    self.hand = (self.hand + 1) % self.n
                victim = next(k for k, e in self.entry.items() if e == self.hand)
                self.hand = (self.hand + 1) % self.n
                self.delete(victim)
            self.entry[key] = self.free.pop()
            self.refs[self.entry[key]] = 0
        self.value[key] = value
        return 0

    def delete(self, key):
        if key not in self.entry:
            return -errno.ENOENT
        self.free.append(self.entry.pop(key))
        del self.value[key]
        return 0


def _apply(m, op, *args):
    try:
        getattr(m, op)(*args)
        return 0
    except MapError as exc:
        return -exc.errno


@pytest.mark.parametrize("n", [1, 5, 48])
def test_random_operations_follow_the_clock_model(n):
    m = Map("lru", BPF_MAP_TYPE_LRU_HASH, key=np.uint32, value=np.uint64, max_entries=n)
    model, rng = ClockModel(n), np.random.default_rng(n)
    assert m.keys.shape[0] == lru_htab.slots_for(n) and m.keys.shape[0] >= 2 * n
    for step in range(6000):
        key, value = int(rng.integers(0, 3 * n + 2)), int(rng.integers(0, 1 << 40))
        if rng.random() < 0.3:
            assert _apply(m, "delete", key) == model.delete(key), step
        else:
            flags = int(rng.choice([BPF_ANY, BPF_ANY, BPF_NOEXIST, BPF_EXIST]))
            assert _apply(m, "update", key, value, flags) == model.update(key, value, flags), step
        assert dict(m.items()) == model.value, step
        assert len(m) == len(model.value)
        if step % 100 == 0:
            m.check_links()
    assert m.hdr[lru_htab.H_DELETED] <= m.keys.shape[0] // 4


def test_churn_is_compacted_and_every_key_stays_reachable():
    """Deletes leave tombstones (a walk must cross them); past a quarter of the
    slots the table is rebuilt in place. 60,000 inserts and deletes on 1,024
    entries: the tombstones never pass the bound, every key present is found,
    and the table's invariants hold throughout."""
    n = 1024
    m = Map("lru", BPF_MAP_TYPE_LRU_HASH, key=np.uint64, value=np.uint64, max_entries=n)
    nslots, rng = m.keys.shape[0], np.random.default_rng(3)
    present, most, rebuilt = {}, 0, 0
    for step in range(60000):
        if len(present) < 900 or (len(present) < n and rng.random() < 0.5):
            key = int(rng.integers(0, 1 << 62))
            m.update(key, key ^ 7)
            present[key] = key ^ 7
        else:
            key = next(iter(present))
            del present[key]
            m.delete(key)
        deleted = int(m.hdr[lru_htab.H_DELETED])
        rebuilt += deleted < most and deleted == 0
        most = max(most, deleted)
        assert deleted <= nslots // 4
        if step % 5000 == 0:
            m.check_links()
            assert all(m.lookup(k) == v for k, v in present.items())
    assert rebuilt > 0 and most > nslots // 8
    m.check_links()
    assert dict(m.items()) == present


def test_a_full_map_keeps_keys_in_use():
    """Use sets the reference bit in the row (a program's lookup, an update): of
    1,000 keys in a 512-entry map, the 100 used every 50 inserts all stay."""
    m = Map("lru", BPF_MAP_TYPE_LRU_HASH, key=np.uint32, value=np.uint32, max_entries=512)
    for k in range(1000):
        m.update(k, k)
        if k % 50 == 0:  # (an update of a present key marks it as a lookup does)
            for hot in range(100):
                m.update(hot, hot)
    assert all(m.lookup(k) == k for k in range(100))
    assert sum(m.lookup(k) is not None for k in range(100, 1000)) == 412
    assert len(m) == 512
    m.check_links()
