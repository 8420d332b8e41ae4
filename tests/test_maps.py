"""BPF maps: the kernel's semantics from Python and from programs, control-plane
changes seen by the next batch, and flow_counter against a dpkt reference."""

import errno
import ipaddress
import json
import re
import struct
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import reference
from dataplane import PacketBatch, ProgramError, XdpAction, load_program
from dataplane.maps import (BPF_EXIST, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH,
                            BPF_MAP_TYPE_LPM_TRIE, BPF_MAP_TYPE_LRU_HASH,
                            BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_PERCPU_HASH, BPF_NOEXIST,
                            Map, MapError)

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "pcaps" / "small.pcap"
KEY = np.dtype([("addr", ">u4"), ("port", ">u2")])
VALUE = np.dtype([("packets", "<u8"), ("bytes", "<u8")])


# ---------------------------------------------------------------- from Python

FIVE_TUPLE = np.dtype([("saddr", ">u4"), ("daddr", ">u4"), ("sport", ">u2"), ("dport", ">u2"),
                       ("proto", "u1")])


@pytest.mark.parametrize("keys", ["counter", "five_tuple"])
def test_hash_spreads_structured_keys(keys):
    """key_hash (CRC32C on x86-64 with SSE4.2, a multiply mix elsewhere) spreads
    keys that differ in a few bits over the buckets: 65,536 keys in 262,144
    buckets fill at least the 22% (1 - e^-0.25) a random function would (CRC32C,
    linear, puts these in distinct buckets), and no chain is long (random:
    P(a chain of 9) < 1e-10 per bucket)."""
    n = 1 << 16
    if keys == "counter":
        m = Map("c", BPF_MAP_TYPE_HASH, key=np.uint32, value=np.uint64, max_entries=n)
        batch = np.arange(n, dtype=np.uint32) * np.uint32(4096)  # only high bits vary
    else:  # one client network to one VIP: source address and port vary
        m = Map("t", BPF_MAP_TYPE_HASH, key=FIVE_TUPLE, value=np.uint64, max_entries=n)
        batch = np.zeros(n, FIVE_TUPLE)
        i = np.arange(n)
        batch["saddr"] = 0x0A000000 + (i >> 4)
        batch["daddr"] = 0xC0A80001
        batch["sport"] = 1024 + (i & 15)
        batch["dport"] = 80
        batch["proto"] = 6
    m.update_batch(batch, np.zeros(n, np.uint64))
    assert len(m) == n
    heads = m.buckets[m.buckets >= 0]
    assert heads.size / m.buckets.size > 0.20
    longest = 0
    for e in heads:
        k = 0
        while e >= 0:
            k, e = k + 1, m.chain[e]
        longest = max(longest, k)
    assert longest <= 8


def test_hash_flags_and_errors():
    m = Map("h", BPF_MAP_TYPE_HASH, key=np.uint32, value=np.uint64, max_entries=2)
    m.update(1, 10)
    with pytest.raises(MapError, match=r"map 'h': update 1: key exists \(-EEXIST\)"):
        m.update(1, 11, BPF_NOEXIST)
    with pytest.raises(MapError, match=r"no such key \(-ENOENT\)"):
        m.update(2, 20, BPF_EXIST)
    m.update(1, 12, BPF_EXIST)
    m.update(2, 20)
    with pytest.raises(MapError, match=r"map is full \(2 entries\) \(-E2BIG\)") as e:
        m.update(3, 30)
    assert e.value.errno == 7
    assert sorted(m.items()) == [(1, 12), (2, 20)] and len(m) == 2
    m.delete(1)
    with pytest.raises(MapError, match=r"delete 1: no such key \(-ENOENT\)"):
        m.delete(1)
    assert m.lookup(1) is None and m.lookup(2) == 20 and 2 in m
    m.update(3, 30)  # the freed entry is reused
    m.clear()
    assert len(m) == 0 and m.items() == []


def test_structured_keys_and_values_decode():
    m = Map("flows", BPF_MAP_TYPE_HASH, key=KEY, value=VALUE, max_entries=8)
    m.update((0x0A000001, 80), (3, 300))
    assert m.items() == [({"addr": "10.0.0.1", "port": 80}, {"packets": 3, "bytes": 300})]
    keys, values = m.dump()
    assert keys.dtype == KEY and values.dtype == VALUE
    assert keys[0]["port"] == 80 and values[0]["bytes"] == 300
    m.update_batch(keys, values)  # same key again: BPF_ANY overwrites
    assert len(m) == 1


def test_lru_evicts_least_recently_used():
    m = Map("lru", BPF_MAP_TYPE_LRU_HASH, key=np.uint32, value=np.uint64, max_entries=3)
    for k in (1, 2, 3):
        m.update(k, k)
    m.update(1, 100)  # an update refreshes key 1: key 2 is now the oldest
    m.update(4, 4)
    assert sorted(k for k, _ in m.items()) == [1, 3, 4]
    m.update(5, 5)  # then 3
    assert sorted(k for k, _ in m.items()) == [1, 4, 5]


def test_lru_keeps_an_entry_in_use_through_a_flood_of_new_keys():
    m = Map("lru", BPF_MAP_TYPE_LRU_HASH, key=np.uint32, value=np.uint64, max_entries=4)
    for k in range(1, 5):
        m.update(k, k)
    for k in range(100, 140):  # every new key evicts one; key 1 is used between them
        m.update(1, k)
        m.update(k, k)
        keys = sorted(key for key, _ in m.items())
        assert len(keys) == 4 and keys[0] == 1 and k in keys
    m.delete(1)
    m.update(7, 7)  # a free entry is taken before anything is evicted
    assert len(m) == 4 and m.lookup(7) == 7


def test_values_wider_than_a_row_line_stay_apart():
    wide = np.dtype([(f"f{i}", "<u8") for i in range(9)])  # 72 bytes: rows of two lines
    m = Map("wide", BPF_MAP_TYPE_HASH, key=np.uint32, value=wide, max_entries=16)
    for k in range(16):
        m.update(k, tuple(range(k, k + 9)))
    m.delete(3)
    m.update(99, (7,) * 9)
    got = dict(m.items())
    assert len(got) == 16 and 3 not in got and got[99] == {f"f{i}": 7 for i in range(9)}
    assert all(got[k] == {f"f{i}": k + i for i in range(9)} for k in got if k != 99)
    keys, values = m.dump()
    assert sorted(keys.tolist()) == sorted(got) and values.dtype == wide


def _vma_flags(address):
    """The VmFlags of the mapping of this process holding ``address`` (proc(5) smaps)."""
    lo = hi = None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if re.fullmatch(r"[0-9a-f]+-[0-9a-f]+", head):
            lo, hi = (int(x, 16) for x in head.split("-"))
        elif head == "VmFlags:" and lo <= address < hi:
            return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


@pytest.mark.parametrize("nbytes", [(4 << 20) + 1, 17 << 20])
def test_large_buffers_lie_on_whole_huge_pages(nbytes):
    """A large table starts on a huge page's boundary and is advised huge from its
    first byte to its last: the kernel placed a mapping of an odd length on any
    page, and its 4 KiB pages before the first boundary stayed small."""
    from dataplane import config
    from dataplane.io.batch import alloc_buffer
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not thp.exists() or "[never]" in thp.read_text():
        pytest.skip("the kernel offers no transparent huge pages")
    buf = alloc_buffer(nbytes, "a test table")
    assert buf.size == nbytes and not buf.any()
    assert buf.ctypes.data % config.HUGE_PAGE == 0
    buf[-1] = 1  # writable to the end
    for address in (buf.ctypes.data, buf.ctypes.data + nbytes - 1):
        assert "hg" in _vma_flags(address)


@pytest.mark.parametrize("entries", [16, 1000, 1 << 17])  # the last on huge pages
def test_hash_rows_start_cache_lines(entries):
    """A key row and the value beside it share one line only if each row starts
    one: every table, an inner map of a pool included, starts on a 64-byte line."""
    from dataplane.maps import BPF_MAP_TYPE_ARRAY_OF_MAPS, InnerMap
    flow = np.dtype([(f"w{i}", ">u8") for i in range(4)] + [("ports", ">u4"), ("proto", "u1")])
    conn = np.dtype([("real", "<u4"), ("atime", "<u8")])
    m = Map("conns", BPF_MAP_TYPE_LRU_HASH, key=flow, value=conn, max_entries=entries)
    outer = Map("per_worker", BPF_MAP_TYPE_ARRAY_OF_MAPS, key=np.uint32, max_entries=3,
                pool=3, inner=InnerMap(BPF_MAP_TYPE_LRU_HASH, flow, conn, entries))
    tables = [m, *outer.inner_maps]
    assert all(t.keys.ctypes.data % 64 == 0 and t.keys.strides[0] == 64 for t in tables)
    for t in tables:  # each row's value in the row's own line
        t.update((1, 2, 3, 4, 5, 6), (7, 8))
        assert t.lookup((1, 2, 3, 4, 5, 6)) == {"real": 7, "atime": 8}
        last = t.values.ctypes.data + conn.itemsize - 1  # row 0's value, last byte
        assert last // 64 == t.keys.ctypes.data // 64


def test_array_semantics():
    m = Map("a", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=np.int64, max_entries=4)
    assert len(m) == 4 and m.lookup(3) == 0 and m.lookup(4) is None
    m.update(3, -5)
    assert m.lookup(3) == -5
    # items() decodes a whole array at once: the same as entry by entry, Python ints
    assert m.items() == [(k, m.lookup(k)) for k in range(4)] == [(0, 0), (1, 0), (2, 0), (3, -5)]
    assert all(type(v) is int for _, v in m.items())
    big = Map("b", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=np.uint64, max_entries=2)
    big.update(1, 2**64 - 1)
    assert big.to_json() == [{"key": 0, "value": 0}, {"key": 1, "value": 2**64 - 1}]
    with pytest.raises(MapError, match=r"-EEXIST"):
        m.update(0, 1, BPF_NOEXIST)
    with pytest.raises(MapError, match=r"-E2BIG"):
        m.update(4, 1)
    with pytest.raises(MapError, match=r"-EINVAL"):
        m.delete(0)


def test_percpu_values_are_lists_per_worker():
    from dataplane import config
    for t in (BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_PERCPU_HASH):
        m = Map("p", t, key=np.uint32, value=np.uint64, max_entries=4)
        m.update(1, 7)
        assert m.lookup(1) == [7] * config.WORKERS
        keys, values = m.dump()
        assert values.shape[1:] == (config.WORKERS,)


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="bad name"), "map names are identifiers"),
    (dict(type=99), "unknown map type 99"),
    (dict(type=BPF_MAP_TYPE_LPM_TRIE), "lpm_trie keys are a ('prefixlen', '<u4') field"),
    (dict(key=np.float64), "key type float64 must be an integer"),
    (dict(value=np.dtype([("a", "f8")])), "value field 'a' (float64) must be an integer"),
    (dict(max_entries=0), "max_entries must be at least 1"),
    (dict(type=BPF_MAP_TYPE_ARRAY, max_entries=1 << 32), "max_entries 4294967296 is above"),
    (dict(max_entries=(1 << 30) + 1), "max_entries 1073741825 of a hash map is above"),
    (dict(type=BPF_MAP_TYPE_ARRAY, key=np.uint64), "array maps take a 4-byte integer key"),
])
def test_bad_declarations(kwargs, message):
    args = dict(name="m", type=BPF_MAP_TYPE_HASH, key=np.uint32, value=np.uint64,
                max_entries=4)
    args.update(kwargs)
    with pytest.raises(MapError, match=re.escape(message)):
        Map(args.pop("name"), args.pop("type"), **args)


def test_bad_keys_and_values_name_the_map():
    m = Map("flows", BPF_MAP_TYPE_HASH, key=KEY, value=VALUE, max_entries=4)
    with pytest.raises(MapError, match=r"map 'flows': bad key"):
        m.update("nope", (1, 2))
    with pytest.raises(MapError, match=r"map 'flows': bad value"):
        m.update((1, 2), "nope")


# ---------------------------------------------------------------- from programs

PROGRAM = """
import numpy as np
from dataplane import *
from dataplane.maps import *

KEY = np.dtype([("addr", ">u4"), ("port", ">u2")])
VALUE = np.dtype([("packets", "<u8"), ("bytes", "<u8")])
counts = Map("counts", BPF_MAP_TYPE_HASH, key=KEY, value=VALUE, max_entries=2)
config = Map("config", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=np.uint64, max_entries=1)
lru = Map("lru", BPF_MAP_TYPE_LRU_HASH, key=np.uint32, value=np.uint64, max_entries=2)

def record(pkt, ret):
    # the helper's return code goes into byte 1 of the packet (two's complement)
    pkt[1] = ret & 0xFF

@xdp
def prog(ctx):
    pkt = ctx.pkt
    op = pkt[0]
    key = (pkt[2], pkt[3])
    if op == 1:    # update NOEXIST
        record(pkt, bpf_map_update_elem(counts, key, (1, len(pkt)), BPF_NOEXIST))
    elif op == 2:  # update EXIST
        record(pkt, bpf_map_update_elem(counts, key, (5, 5), BPF_EXIST))
    elif op == 3:  # lookup and add in place
        v = bpf_map_lookup_elem(counts, key)
        if v is None:
            record(pkt, 0xEE)
        else:
            v.packets += 1
            v.bytes += len(pkt)
            record(pkt, 0)
    elif op == 4:  # delete
        record(pkt, bpf_map_delete_elem(counts, key))
    elif op == 5:  # the verdict comes from the config array
        c = bpf_map_lookup_elem(config, 0)
        if c is not None:
            return c[0]
    elif op == 6:  # LRU: lookup refreshes, update inserts
        v = bpf_map_lookup_elem(lru, pkt[2])
        if v is None:
            record(pkt, bpf_map_update_elem(lru, pkt[2], 1, BPF_ANY))
        else:
            v[0] += 1
            record(pkt, 0)
    return XDP_PASS
"""


@pytest.fixture(scope="module")
def prog(tmp_path_factory):
    path = tmp_path_factory.mktemp("maps") / "maps_prog.py"
    path.write_text(textwrap.dedent(PROGRAM))
    return load_program(str(path))


def run(prog, *frames):
    b = PacketBatch(len(frames))
    for f in frames:
        assert b.append(bytes(f) + bytes(10))
    prog.run_batch(b)
    return [(int(b.action[i]), b.packet(i)[1]) for i in range(len(frames))]


def signed(byte):
    return byte - 256 if byte > 127 else byte


def test_program_update_lookup_delete_with_kernel_errors(prog):
    counts = prog.maps["counts"]
    counts.clear()
    r = run(prog, [1, 0, 10, 80], [1, 0, 10, 80], [2, 0, 11, 81], [1, 0, 12, 1],
            [1, 0, 13, 1], [3, 0, 10, 80], [3, 0, 99, 99], [4, 0, 12, 1], [4, 0, 12, 1])
    codes = [signed(c) for _, c in r]
    # NOEXIST ok, NOEXIST -EEXIST, EXIST -ENOENT, ok, full -E2BIG, lookup hit, miss,
    # delete ok, delete -ENOENT
    assert codes == [0, -17, -2, 0, -7, 0, signed(0xEE), 0, -2]
    assert counts.lookup((10, 80)) == {"packets": 2, "bytes": 14 + 14}
    assert len(counts) == 1


def test_control_plane_changes_are_seen_by_the_next_batch(prog):
    config = prog.maps["config"]
    config.update(0, XdpAction.XDP_DROP)
    assert run(prog, [5, 0, 0, 0])[0][0] == XdpAction.XDP_DROP
    config.update(0, XdpAction.XDP_TX)
    assert run(prog, [5, 0, 0, 0])[0][0] == XdpAction.XDP_TX


def test_program_lru_eviction_follows_use(prog):
    lru = prog.maps["lru"]
    lru.clear()
    run(prog, [6, 0, 1], [6, 0, 2], [6, 0, 1], [6, 0, 3])  # 1 used again: 2 is evicted
    assert dict(lru.items()) == {1: 2, 3: 1}


def test_maps_outside_helpers_are_rejected(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text(textwrap.dedent("""
        import numpy as np
        from dataplane import *
        from dataplane.maps import *
        m = Map("m", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=np.uint64, max_entries=1)

        @xdp
        def prog(ctx):
            return m.values[0, 0]
        """))
    with pytest.raises(ProgramError, match=r"bad.py:9: in prog\(\): attribute 'values'"):
        load_program(str(path))


# ---------------------------------------------------------------- flow_counter

def expected_flows():
    flows = Counter()
    sizes = Counter()
    for frame in reference.frames_of_capture(SMALL):
        p = reference.parse(frame)
        if p.proto not in (6, 17) or p.l4 is None or len(p.l4) < 4:
            continue
        sport, dport = struct.unpack("!HH", bytes(p.l4[:4]))
        key = (str(ipaddress.ip_address(p.ip.src)), str(ipaddress.ip_address(p.ip.dst)),
               sport, dport, p.proto)
        flows[key] += 1
        sizes[key] += len(frame)
    return {k: {"packets": flows[k], "bytes": sizes[k]} for k in flows}


def test_flow_counter_matches_dpkt():
    r = subprocess.run([sys.executable, "-m", "dataplane.cli.main", "replay", "-r", str(SMALL),
                        "-p", "flow_counter", "--dump-maps", "-j"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    got = {(e["key"]["saddr"], e["key"]["daddr"], e["key"]["sport"], e["key"]["dport"],
            e["key"]["proto"]): e["value"] for e in d["maps"]["flows"]}
    want = expected_flows()
    assert len(want) > 1000
    assert got == want
    assert d["actions"]["pass"] == d["packets"] == 4000


def test_sync_fetch_and_add_on_a_scalar_value(tmp_path):
    path = tmp_path / "atomic.py"
    path.write_text(textwrap.dedent("""
        import numpy as np
        from dataplane import *
        from dataplane.maps import *
        hits = Map("hits", BPF_MAP_TYPE_PERCPU_ARRAY, key=np.uint32, value=np.uint64,
                   max_entries=2)

        @xdp
        def prog(ctx):
            v = bpf_map_lookup_elem(hits, ctx.pkt[0])
            if v is None:
                return XDP_ABORTED
            old = sync_fetch_and_add(v, 2)
            ctx.pkt[1] = old & 0xFF
            return XDP_PASS
        """))
    prog = load_program(str(path))
    outs = [prog.test_run(bytes([1, 0]) + bytes(60))[1][1] for _ in range(3)]
    assert outs == [0, 2, 4]  # the old values
    assert prog.maps["hits"].lookup(1) == [6]


def test_array_update_errors_in_the_kernels_order(tmp_path):
    """array_map_update_elem checks unknown flags, then the index, then
    BPF_NOEXIST, then BPF_F_LOCK (no bpf_spin_lock in these values): found
    against the kernel, flags 4 with an index past the end gave -EINVAL for
    -E2BIG, and the control plane let flags 5 and 8 through. Program and
    control plane alike."""
    path = tmp_path / "arr.py"
    path.write_text(textwrap.dedent("""
        import numpy as np
        from dataplane import *
        from dataplane.maps import *
        arr = Map("arr", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=np.uint64, max_entries=4)

        @xdp
        def prog(ctx):
            ctx.pkt[2] = bpf_map_update_elem(arr, ctx.pkt[0], 7, ctx.pkt[1]) & 0xFF
            return XDP_PASS
        """))
    prog = load_program(str(path))
    cases = {(4, 4): -7, (0, 4): -22, (0, 5): -17, (4, 5): -7, (0, 8): -22, (4, 1): -7,
             (0, 1): -17, (0, 2): 0, (0, 0): 0}
    for (key, flags), want in cases.items():
        got = prog.test_run(bytes([key, flags]) + bytes(58))[1][2]
        assert (got - 256 if got > 127 else got) == want, (key, flags)
        arr = prog.maps["arr"]
        if want:
            with pytest.raises(MapError, match=rf"\(-{errno.errorcode[-want]}\)"):
                arr.update(key, 7, flags)
        else:
            arr.update(key, 7, flags)


def _dump_run(*extra, out=None):
    cmd = [sys.executable, "-m", "dataplane.cli.main", "replay", "-r", str(SMALL), "-p",
           str(ROOT / "programs" / "bpf" / "global_data.o"), "-q", *extra]
    if out is not None:
        cmd += ["-w", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_dump_maps_names_some_maps_in_their_order(tmp_path):
    """``--dump-maps verdicts,bss`` prints those two (bpftool map dump name X),
    the same entries as the whole dump, in the order named, as text and -j."""
    whole = json.loads(_dump_run("--dump-maps", "-j").stdout)["maps"]
    assert list(whole) == ["bss", "data", "rodata", "verdicts"]
    some = json.loads(_dump_run("--dump-maps", "verdicts,bss", "-j").stdout)["maps"]
    assert list(some) == ["verdicts", "bss"]
    assert some == {"verdicts": whole["verdicts"], "bss": whole["bss"]}
    text = _dump_run("--dump-maps", "rodata").stdout
    assert [ln.split(":")[0] for ln in text.splitlines() if ln.startswith("map ")] == \
        ["map rodata"]


@pytest.mark.parametrize("names,message", [
    ("verdicts,nope", "error: --dump-maps: program 'global_data' has no map 'nope' (its maps: "
                      "bss, data, rodata, verdicts)"),
    ("verdicts,", "argument --dump-maps: 'verdicts,' is not a list of map names"),
])
def test_dump_maps_with_a_bad_name_is_a_usage_error_before_the_replay(tmp_path, names,
                                                                      message):
    out = tmp_path / "out"
    r = _dump_run("--dump-maps", names, out=out)
    assert r.returncode == 2 and r.stdout == ""
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()  # nothing replayed, nothing written


@pytest.mark.parametrize("map_type", [BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY,
                                      BPF_MAP_TYPE_PERCPU_HASH])
def test_dump_gives_the_stored_bytes_padding_included(map_type):
    """A value type with gaps (a C struct's padding, as an eBPF object's BTF
    gives it): dump() returns each value's bytes as stored, gaps included (a
    field-by-field copy left them uninitialised: they differed from the
    kernel's in a comparison of raw bytes)."""
    dt = np.dtype({"names": ["a", "b"], "formats": ["<u8", "u1"], "offsets": [0, 8],
                   "itemsize": 16})
    m = Map("padded", map_type, key=np.uint32, value=dt, max_entries=4)
    m.update(1, (5, 6))
    records = m.values.view(np.dtype((np.void, 16)))  # (a hash map's rows: strided)
    for at in np.ndindex(records.shape):  # what a program wrote into the padding
        records[at] = np.void(records[at].tobytes()[:9] + b"\xab" * 7)
    keys, values = m.dump()
    row = values[list(keys).index(1)]
    assert row.tobytes() == (5).to_bytes(8, "little") + b"\x06" + b"\xab" * 7 if row.ndim == 0 \
        else all(r.tobytes() == (5).to_bytes(8, "little") + b"\x06" + b"\xab" * 7 for r in row)
