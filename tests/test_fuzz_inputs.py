"""Mutated inputs through two surfaces users feed by hand: capture files (pcap
and pcapng, through the readers and a whole replay) and load-balancer
configurations (TOML documents, then applied to the maps).

Each input must give a result or one error line of the surface's own type
(CaptureError, LbError), count every packet it read, and leave the maps
consistent. Seeded: a failure names its case. The bugs this found are pinned
by name in test_l4lb.py (BAD_DOCS, CONTROL_ERRORS).
"""

import copy
import random
import struct
import tomllib
from pathlib import Path

import dpkt
import numpy as np
import pytest
from test_pcapng import block, epb, frames, idb, opb, shb

from dataplane import load_program
from dataplane.errors import CaptureError
from dataplane.io.batch import PacketBatch
from dataplane.io import capture
from dataplane.io.capture import open_capture
from dataplane.lb import layout as L
from dataplane.lb.config import LbError, from_dict
from dataplane.lb.control import LoadBalancer
from dataplane.pipeline import VerdictPcaps, replay

ROOT = Path(__file__).resolve().parents[1]

# -- captures -------------------------------------------------------------------
#: 32-bit values a length or type field is set to.
EDGES = [0, 1, 3, 4, 11, 12, 13, 15, 16, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFC,
         65535, 65536, 262144, 262145, 1 << 24]


def _pcap(order, nanosecond, packets):
    out = struct.pack(order + "IHHiIII", 0xA1B23C4D if nanosecond else 0xA1B2C3D4, 2, 4, 0, 0,
                      65535, 1)
    for k, f in enumerate(packets):
        out += struct.pack(order + "IIII", 1_700_000_000 + k, 7 * k, len(f), len(f) + k % 3) + f
    return out


def _pcapng(order, packets):
    out = shb(order) + idb(order) + idb(order, snaplen=128, tsresol=6)
    for k, f in enumerate(packets):  # EPB, SPB, OPB and a block of an unknown type in turn
        simple = block(order, 3, struct.pack(order + "I", len(f)) + f)
        out += (epb(order, k % 2, 1000 * k, f), simple, opb(order, 0, k, f),
                block(order, 5, bytes(12)))[k % 4]
    other = ">" if order == "<" else "<"  # a second section, in the other byte order
    return out + shb(other) + idb(other)


def _mutate(rng, data):
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not b:
            break
        p, kind = rng.randrange(len(b)), rng.randrange(5)
        if kind == 0:
            b[p] ^= 1 << rng.randrange(8)
        elif kind == 1:  # a 32-bit field: an edge value, or nudged
            v = rng.choice(EDGES)
            if p + 4 <= len(b) and rng.random() < 0.5:
                v = (struct.unpack_from("<I", b, p)[0] + rng.randint(-8, 8)) & 0xFFFFFFFF
            b[p:p + 4] = struct.pack(rng.choice("<>") + "I", v)[:len(b) - p]
        elif kind == 2:
            del b[p:]
        elif kind == 3:
            b[p:p] = b[p:p + rng.randint(1, 64)]
        else:
            del b[p:p + rng.randint(1, 16)]
    return bytes(b)


def _captures(seed, count):
    rng = random.Random(seed)
    packets = frames(12, 14, 300, seed=seed)
    seeds = [_pcap("<", False, packets), _pcap(">", True, packets), _pcapng("<", packets),
             _pcapng(">", packets)]
    return [(rng, _mutate(rng, rng.choice(seeds))) for _ in range(count)]


def _read_all(path, capacity, chunk):
    """Packets read before the end or the capture's error; asserts each batch sane."""
    reader = open_capture(path, chunk_bytes=chunk)
    batch, total = PacketBatch(capacity), 0
    while True:
        try:
            n = reader.read_batch(batch)
        except CaptureError:
            return total
        if n == 0:
            return total
        d, e = batch.data[:n], batch.data_end[:n]
        assert n <= capacity and (d >= 0).all() and (e >= d).all()
        assert (e <= batch.buf.size).all() and (e - d <= 262144).all()
        total += n
        assert reader.packets == total


@pytest.mark.parametrize("ahead", [False, True], ids=["sync", "read-ahead"])
@pytest.mark.parametrize("seed", range(4))
def test_mutated_captures_read_or_fail_cleanly(tmp_path, monkeypatch, seed, ahead):
    if ahead:  # every chunk read ahead, with a reserve shorter than most records
        monkeypatch.setattr(capture, "READ_AHEAD_MIN", 0)
        monkeypatch.setattr(capture, "READ_RESERVE", 32)
    path = tmp_path / "c"
    for case, (rng, data) in enumerate(_captures(seed, 150)):
        path.write_bytes(data)
        try:
            _read_all(path, rng.choice([1, 2, 5, 64]), rng.choice([64, 100, 1024, 1 << 16]))
        except CaptureError:
            pass  # at open: one line, tested for its wording elsewhere
        except Exception as exc:  # pragma: no cover - the failure message
            pytest.fail(f"seed {seed} case {case}: {type(exc).__name__}: {exc}")


def test_mutated_captures_replay_every_packet_they_read(tmp_path):
    """Whatever part of a broken capture is read, every packet of it is in the
    output files (dpkt reads them back) and in the counts."""
    program = load_program("drop_udp")
    path, out = tmp_path / "c", tmp_path / "out"
    for case, (rng, data) in enumerate(_captures(99, 80)):
        path.write_bytes(data)
        try:
            reader = open_capture(path, chunk_bytes=rng.choice([64, 4096]))
        except CaptureError:
            continue
        out.mkdir(exist_ok=True)
        for f in out.iterdir():
            f.unlink()
        stats = replay(reader, program, VerdictPcaps(out, snaplen=reader.output_snaplen),
                       batch_size=rng.choice([1, 3, 1024]))
        written = 0
        for f in out.iterdir():
            with open(f, "rb") as fh:
                written += sum(1 for _ in dpkt.pcap.Reader(fh))
        assert written == stats.packets == int(stats.actions.sum()), f"case {case}"


# -- load-balancer configurations ----------------------------------------------
#: What a value in the document is replaced with: wrong types, edges, TOML's inf
#: and nan, arrays where strings belong, addresses with a zone index.
VALUES = [0, -1, 1, 2**31, 2**32, 2**64, 1.5, float("inf"), float("nan"), "", "x", "10.0.0.1",
          "fc00::1", "::", "0.0.0.0", "fe80::1%eth0", "::ffff:10.0.0.2", "255.255.255.255",
          "02:00:00:00:00:fe", [], [1], {},
          {"a": 1}, True, "tcp", "udp", ["quic"], ["bogus"], [["quic"]], 65535, 65536,
          [{"address": "10.0.0.9"}], [{"address": "fe80::2%1"}],
          [{"address": "10.0.0.9", "weight": 0}], [{"weight": 1}],
          [{"address": "10.0.0.2", "weight": 1}] * 2]


def _paths(node, prefix=()):
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for k, v in items:
        yield prefix + (k,)
        yield from _paths(v, prefix + (k,))


def _mutated_documents(seed, count):
    base = tomllib.loads((ROOT / "programs" / "l4lb" / "example.toml").read_text())
    rng = random.Random(seed)
    for _ in range(count):
        doc = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            path = rng.choice(list(_paths(doc)))
            parent = doc
            for k in path[:-1]:
                parent = parent[k]
            if rng.random() < 0.2:
                del parent[path[-1]]
            else:
                parent[path[-1]] = copy.deepcopy(rng.choice(VALUES))
        yield doc


@pytest.fixture(scope="module")
def lb_program():
    return load_program("l4lb")


def test_mutated_lb_configs_apply_whole_or_not_at_all(lb_program):
    maps = lb_program.maps
    applied = 0
    for case, doc in enumerate(_mutated_documents(4, 400)):
        try:
            cfg = from_dict(doc, "lb.toml")
            lb = LoadBalancer(maps, cfg)
        except LbError as exc:
            assert str(exc) and "\n" not in str(exc), f"case {case}"
            continue
        except Exception as exc:  # pragma: no cover - the failure message
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc} in {doc}")
        applied += 1
        # the maps say what the configuration says, no more
        assert len(maps["vip_map"].items()) == len(cfg.vips), f"case {case}"
        wanted = {r.address for v in cfg.vips for r in v.reals}
        assert set(lb.real_ids()) == wanted, f"case {case}: reals table"
        for v in lb.list():
            slots = sum(r["slots"] for r in v["reals"])
            assert slots == (L.RING_SIZE if v["reals"] else 0), f"case {case}: {v['vip']}"
            assert all(r["id"] for r in v["reals"]), f"case {case}: {v['vip']}"
            ring = lb._ring(v["number"])
            assert np.isin(ring, [r["id"] for r in v["reals"]] or [0]).all()
    assert applied >= 20  # not all refused: the apply path was exercised
