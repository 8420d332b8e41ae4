"""BPF_MAP_TYPE_LRU_HASH's open-addressed table (kernels/lru_htab.py).

Oracles: a model of the documented CLOCK eviction (entry numbers from a free
stack, reference bits, a hand) run beside the map on random operations; the
table's own invariant check (Map.check_links) after changes; and every key
still found after churn that fills the table with tombstones."""

import errno
from pathlib import Path

import numpy as np
import pytest

from dataplane.errors import MapError
from dataplane.kernels import lru_htab
from dataplane.maps import BPF_ANY, BPF_EXIST, BPF_MAP_TYPE_LRU_HASH, BPF_NOEXIST, Map

ROOT = Path(__file__).resolve().parent.parent


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


CHURN = """
import numpy as np
from dataplane import XDP_PASS, bpf_get_smp_processor_id, xdp
from dataplane.maps import (BPF_ANY, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, Map,
                            bpf_map_delete_elem, bpf_map_lookup_elem, bpf_map_update_elem)

table = Map("table", BPF_MAP_TYPE_LRU_HASH, key=np.uint64, value=np.uint64, max_entries=512)
# per worker: lookups, misses, the writer's next key
stats = Map("stats", BPF_MAP_TYPE_PERCPU_ARRAY, key=np.uint32, value=np.uint64, max_entries=3)


@xdp
def churn(ctx):
    lookups = bpf_map_lookup_elem(stats, 0)
    misses = bpf_map_lookup_elem(stats, 1)
    nxt = bpf_map_lookup_elem(stats, 2)
    if lookups is None or misses is None or nxt is None:
        return XDP_PASS
    if bpf_get_smp_processor_id() == 0:  # the writer: 300 keys come and go
        for _ in range(256):
            c = nxt[0]
            nxt[0] = c + np.uint64(1)
            bpf_map_update_elem(table, np.uint64(1000) + c, c, BPF_ANY)
            if c >= np.uint64(300):
                bpf_map_delete_elem(table, np.uint64(700) + c)
    else:  # the readers: the 64 keys that stay
        for i in range(4096):  # (long enough to overlap the writer's whole run)
            v = bpf_map_lookup_elem(table, np.uint64(i & 63))
            lookups[0] += 1
            if v is None:
                misses[0] += 1
    return XDP_PASS
"""


def test_lookups_never_miss_a_key_while_another_worker_churns(tmp_path, workers):
    """One worker inserts and deletes (its tombstones compact the table again
    and again) while two others look up 64 keys that never leave, without the
    lock, setting reference bytes in rows the writer rewrites: no lookup
    misses, and the table is whole after. (The 64 keys mostly sit in their own
    slots, which a rebuild leaves alone: the order of its steps is checked one
    step at a time below.)"""
    from dataplane import load_program
    from dataplane.io.capture import open_capture
    from dataplane.pipeline import replay
    path = tmp_path / "churn.py"
    path.write_text(CHURN)
    workers(3)
    prog = load_program(str(path))
    table, stats = prog.maps["table"], prog.maps["stats"]
    for k in range(64):
        table.update(k, k)
    with open_capture(ROOT / "pcaps" / "small.pcap") as reader:
        replay(reader, prog, None, batch_size=64, workers=3)
    lookups, misses, written = (stats.lookup(i) for i in range(3))
    assert written[0] > 100000 and lookups[1] > 0 and lookups[2] > 0
    assert table.hdr[lru_htab.H_REBUILDS] > 100
    assert misses == [0, 0, 0]
    assert all(table.lookup(k) == k for k in range(64)) and len(table) == 64 + 300
    table.check_links()


def test_every_key_is_found_at_each_step_of_a_rebuild():
    """The rebuild moves rows while programs look keys up without the lock:
    stopped after each of its moves in turn, every key is still found (and the
    table whole once it ends). Emptying the tombstones first, then moving the
    rows, lost keys from the first step."""
    m = Map("lru", BPF_MAP_TYPE_LRU_HASH, key=np.uint64, value=np.uint64, max_entries=256)
    rng, kw = np.random.default_rng(11), 1
    present = {}
    for _ in range(400):  # churn near full: long runs of slots, tombstones within them
        key = int(rng.integers(0, 1 << 62))
        m.update(key, key & 0xFFFF)
        present[key] = key & 0xFFFF
        if len(present) > 240:
            gone = list(present)[int(rng.integers(0, len(present)))]
            m.delete(gone)
            del present[gone]
    assert m.hdr[lru_htab.H_DELETED] > 16
    saved = m.buffer.copy()
    total = lru_htab.lru_rebuild_py(m.hdr, m.rows, m.keys, kw, -1)
    assert total > 8 and m.hdr[lru_htab.H_DELETED] == 0
    m.check_links()
    assert dict(m.items()) == present
    for steps in range(total):
        m.buffer[:] = saved
        assert lru_htab.lru_rebuild_py(m.hdr, m.rows, m.keys, kw, steps) == steps
        assert all(m.lookup(k) == v for k, v in present.items()), steps


def test_a_hint_starts_the_walk_and_never_changes_the_answer():
    """lru_find_hinted: a lookup walks from the hash a prefetch hook left
    (hint: the keys' address, a hash). Whatever the hint (the key's own hash,
    another key's, another table's, none), the slot found is the one the key's
    own hash finds, and a missing key stays missing; and the walk does start
    from the hint: with the table's seed changed under it, only the hinted
    lookup still finds its key."""
    from dataplane.kernels import htab
    from dataplane.maps import _key_bytes

    m = Map("lru", BPF_MAP_TYPE_LRU_HASH, key=np.uint32, value=np.uint32, max_entries=64)
    other = Map("other", BPF_MAP_TYPE_LRU_HASH, key=np.uint32, value=np.uint32, max_entries=64)
    for k in range(40):
        m.update(k, k + 100)
        other.update(k, k)

    def words(k):
        return _key_bytes(m.key_dtype, k, "lru")

    def own_hash(k):
        return htab.key_hash(words(k), htab.table_seed(m.hdr))

    hint = np.zeros(2, np.int64)

    def find(k, table_address, h):
        hint[0] = table_address
        hint.view(np.uint64)[1] = int(h) & (1 << 64) - 1
        return lru_htab.lru_find_hinted(m.hdr, m.keys, words(k), hint.ctypes.data)

    here, there = m.keys.ctypes.data, other.keys.ctypes.data
    for k in range(80):  # 0..39 present, 40..79 missing
        want = lru_htab.lru_find_key(m.hdr, m.keys, words(k))
        assert (want >= 0) == (k < 40)
        for j in (k, (k + 1) % 80, (k + 41) % 80):
            assert find(k, here, own_hash(j)) == want, (k, j)
            assert find(k, there, own_hash(j)) == want, (k, j)
        assert lru_htab.lru_find_hinted(m.hdr, m.keys, words(k), 0) == want
    hashes = {k: own_hash(k) for k in range(40)}
    m.hdr[htab.H_SEED] ^= 0x5A5A5A5A  # keys now hash elsewhere
    unseeded = [lru_htab.lru_find_key(m.hdr, m.keys, words(k)) for k in range(40)]
    assert unseeded.count(-1) > 30
    assert all(find(k, here, hashes[k]) >= 0 for k in range(40))
