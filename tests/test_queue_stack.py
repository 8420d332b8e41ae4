"""BPF_MAP_TYPE_QUEUE and BPF_MAP_TYPE_STACK from Python and from the command
line (maps.QueueStack, kernels/queue_stack.py). Their helpers in eBPF objects
are checked against the kernel in test_ebpf_program.py."""

import errno
import json
import re
from pathlib import Path

import numpy as np
import pytest

from dataplane.errors import MapError
from dataplane.maps import (BPF_EXIST, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_QUEUE,
                            BPF_MAP_TYPE_STACK, BPF_NOEXIST, Map)
from dataplane.pin import open_pinned
from dataplane.stats import format_maps
from test_pin import dp

ROOT = Path(__file__).resolve().parents[1]
ITEM = np.dtype([("port", "<u2"), ("owner", "<u4")])


class Model:
    """queue_stack_maps.c in a list: the oldest value first."""

    def __init__(self, n, stack):
        self.values, self.n, self.stack = [], n, stack

    def push(self, v, flags):
        if flags not in (0, BPF_EXIST):
            return -errno.EINVAL
        if len(self.values) == self.n:
            if flags != BPF_EXIST:
                return -errno.E2BIG
            self.values.pop(0)  # both drop their oldest value
        self.values.append(v)
        return 0

    def get(self, delete):
        if not self.values:
            return None
        i = -1 if self.stack else 0
        return self.values.pop(i) if delete else self.values[i]

    def order(self):
        return self.values[::-1] if self.stack else list(self.values)


@pytest.mark.parametrize("kind", [BPF_MAP_TYPE_QUEUE, BPF_MAP_TYPE_STACK])
def test_push_pop_peek_against_a_model(kind):
    """1,000 random pushes (flags 0, BPF_EXIST, BPF_NOEXIST, 3), pops and peeks
    on a map of 5 values, each result and the listing against a list that
    does what the kernel's code does; the ring's slots wrap many times."""
    m = Map("m", kind, key=None, value=ITEM, max_entries=5)
    model = Model(5, kind == BPF_MAP_TYPE_STACK)
    rnd = np.random.default_rng(3)
    for step in range(1000):
        op = rnd.integers(4)
        if op < 2:
            v = {"port": int(rnd.integers(1 << 16)), "owner": step}
            flags = int(rnd.choice([0, 0, BPF_EXIST, BPF_NOEXIST, 3]))
            want = model.push(v, flags)
            try:
                m.push((v["port"], v["owner"]), flags)
                got = 0
            except MapError as exc:
                got = -exc.errno
            assert got == want, step
        else:
            assert (m.pop() if op == 2 else m.peek()) == model.get(op == 2), step
        assert m.items() == model.order() and len(m) == len(model.values), step


def test_queue_maps_refuse_keys_and_bad_declarations():
    q = Map("q", BPF_MAP_TYPE_QUEUE, key=None, value=np.uint32, max_entries=2)
    q.update(None, 7)  # BPF_MAP_UPDATE_ELEM: a push
    assert q.lookup(None) == 7 and q.lookup() == 7 and q.peek() == 7
    for call, text in [(lambda: q.lookup(0), "a queue has no keys: give None, not 0"),
                       (lambda: q.update(1, 2), "a queue has no keys"),
                       (lambda: q.delete(None), "delete: a queue has no keys, use pop()"),
                       (lambda: q.push("x"), "bad value 'x'"),
                       (lambda: q.push(1 << 40), "bad value"),
                       (lambda: q.push(1, BPF_NOEXIST), "push: flags 1: BPF_ANY or BPF_EXIST")]:
        with pytest.raises(MapError, match=text):
            call()
    q.push(8)
    with pytest.raises(MapError, match=r"push: full \(2 values.*-E2BIG") as exc:
        q.push(9)
    assert exc.value.errno == errno.E2BIG and q.items() == [7, 8]
    for kwargs, text in [({"key": np.uint32}, "queue maps have no key: give key=None"),
                         ({"max_entries": 0}, "max_entries of a queue must be 1 to"),
                         ({"value": np.dtype("V0")}, "value type |V0 must be an integer")]:
        args = dict(key=None, value=np.uint32, max_entries=4) | kwargs
        with pytest.raises(MapError, match=text):
            Map("bad", BPF_MAP_TYPE_QUEUE, **args)
    q.clear()
    assert q.pop() is None and len(q) == 0


def test_a_pinned_stack_from_the_command_line(tmp_path):
    """dataplane map push / pop / peek / dump on a pinned stack (bpftool map
    push ...), the process that pinned it seeing each change; a damaged
    head is named; push on a hash map is a usage error."""
    s = Map("ports", BPF_MAP_TYPE_STACK, key=None, value=ITEM, max_entries=3)
    s.push((80, 1))
    s.pin(tmp_path)
    assert json.loads(dp("map", "list", "--pin", tmp_path, "-j").stdout) == [
        {"name": "ports", "type_name": "stack", "max_entries": 3, "workers": 1}]
    dp("map", "push", "ports", '{"port": 443, "owner": 2}', "--pin", tmp_path)
    assert s.items() == [{"port": 443, "owner": 2}, {"port": 80, "owner": 1}]
    assert json.loads(dp("map", "peek", "ports", "--pin", tmp_path, "-j").stdout) == \
        {"port": 443, "owner": 2}
    assert dp("map", "dump", "ports", "--pin", tmp_path).stdout.splitlines() == [
        "map ports: stack, 2 of 3 values, next pop first",
        '  value: {"port": 443, "owner": 2}', '  value: {"port": 80, "owner": 1}']
    assert dp("map", "pop", "ports", "--pin", tmp_path).stdout == \
        'value: {"port": 443, "owner": 2}\n'
    assert json.loads(dp("map", "dump", "ports", "--pin", tmp_path, "-j").stdout) == \
        [{"port": 80, "owner": 1}] == s.items()
    s.pop()
    r = dp("map", "pop", "ports", "--pin", tmp_path, check=1)
    assert r.stderr.strip() == "error: map 'ports': pop: the stack is empty (-ENOENT)"
    for _ in range(3):
        dp("map", "update", "ports", "null", '{"port": 1, "owner": 1}', "--pin", tmp_path)
    r = dp("map", "push", "ports", '{"port": 2, "owner": 2}', "--pin", tmp_path, check=1)
    assert "push: full (3 values" in r.stderr and "-E2BIG" in r.stderr
    r = dp("map", "delete", "ports", "null", "--pin", tmp_path, check=1)
    assert "delete: a stack has no keys" in r.stderr
    flows = Map("flows", BPF_MAP_TYPE_HASH, key=np.uint32, value=np.uint32, max_entries=4)
    flows.pin(tmp_path)
    r = dp("map", "pop", "flows", "--pin", tmp_path, check=2)
    assert "pop works on queue and stack maps" in r.stderr
    s.hdr[0] = 9  # the head past the slots: a damaged file
    r = dp("map", "pop", "ports", "--pin", tmp_path, check=1)
    assert r.stderr.strip() == (f"error: {tmp_path / 'ports.bin'}: map 'ports': corrupt stack: "
                                "head at 9, slots 0 to 3")
    s.hdr[0] = 1
    assert open_pinned(tmp_path, "ports").pop() == {"port": 1, "owner": 1}


def test_dump_maps_lists_values_in_pop_order():
    q = Map("q", BPF_MAP_TYPE_QUEUE, key=None, value=np.uint32, max_entries=3)
    for v in (1, 2, 3):
        q.push(v)
    q.push(4, BPF_EXIST)
    assert format_maps({"q": q}).splitlines() == [
        "map q: queue, 3 of 3 values, next pop first", "  value: 2", "  value: 3", "  value: 4"]


PROGRAM = """
import numpy as np
from dataplane import XDP_DROP, XDP_PASS, XDP_TX, xdp
from dataplane.maps import (BPF_EXIST, BPF_MAP_TYPE_QUEUE, BPF_MAP_TYPE_STACK, Map,
                            bpf_map_peek_elem, bpf_map_pop_elem, bpf_map_push_elem)
from dataplane.parse import load_be16, store_be16

PORT = np.dtype([("port", "<u2"), ("owner", "<u4")])
free = Map("free", BPF_MAP_TYPE_QUEUE, key=None, value=PORT, max_entries=4)
recent = Map("recent", BPF_MAP_TYPE_STACK, key=None, value=np.uint16, max_entries=2)


@xdp
def nat(ctx):
    pkt = ctx.pkt
    if len(pkt) < 20:
        return XDP_DROP
    op = pkt[14]
    if op == 0:  # give a port back
        return XDP_PASS if bpf_map_push_elem(free, (load_be16(pkt, 16), pkt[15]), 0) == 0 \\
            else XDP_DROP
    if op == 1:  # take one: written into the frame
        err, p = bpf_map_pop_elem(free)
        if err != 0:
            return XDP_DROP
        store_be16(pkt, 16, p[0])
        pkt[15] = p[1]
        bpf_map_push_elem(recent, p[0], BPF_EXIST)
        return XDP_TX
    err, seen = bpf_map_peek_elem(recent)
    if err != 0:
        return XDP_DROP
    store_be16(pkt, 18, seen)
    return XDP_TX
"""


def test_python_programs_push_pop_and_peek(tmp_path):
    """A Python program hands ports out of a queue and back (bpf_map_push_elem,
    bpf_map_pop_elem: an int or a tuple of the fields, and -ENOENT when empty) and
    keeps the last two taken in a stack (pushed with BPF_EXIST: the oldest
    goes; bpf_map_peek_elem); the frames and both maps, step by step."""
    from dataplane import XDP_DROP, XDP_PASS, XDP_TX, load_program
    path = tmp_path / "nat.py"
    path.write_text(PROGRAM)
    prog = load_program(str(path))
    free, recent = prog.maps["free"], prog.maps["recent"]
    for port in (1000, 1001, 1002):
        free.push((port, 9))

    def frame(op, owner=0, port=0):
        return bytes(14) + bytes([op, owner]) + port.to_bytes(2, "big") + bytes(4)

    r = prog.test_run(frame(1))
    assert r.action == XDP_TX and r.data[15] == 9 and r.data[16:18] == (1000).to_bytes(2, "big")
    assert prog.test_run(frame(0, 7, 2000)).action == XDP_PASS
    assert prog.test_run(frame(0, 7, 2001)).action == XDP_PASS
    assert prog.test_run(frame(0, 7, 2002)).action == XDP_DROP  # full: -E2BIG
    assert free.items() == [{"port": p, "owner": o} for p, o in
                            ((1001, 9), (1002, 9), (2000, 7), (2001, 7))]
    for want in (1001, 1002, 2000):
        r = prog.test_run(frame(1))
        assert r.action == XDP_TX and int.from_bytes(r.data[16:18], "big") == want
    assert recent.items() == [2000, 1002]  # newest first, 1000 and 1001 pushed out
    r = prog.test_run(frame(2))
    assert r.action == XDP_TX and int.from_bytes(r.data[18:20], "big") == 2000
    assert recent.items() == [2000, 1002]  # a peek leaves it
    prog.test_run(frame(1))
    assert prog.test_run(frame(1)).action == XDP_DROP and len(free) == 0  # empty: -ENOENT


@pytest.mark.parametrize("call, error", [
    ("bpf_map_peek_elem(table)",
     "bpf_map_peek_elem needs a queue or a stack map: 'table' is a hash"),
    ("bpf_map_lookup_elem(recent, 0)",
     "map 'recent' is a stack: it has no keys for bpf_map_lookup_elem"),
    ("bpf_map_push_elem(recent, (1, 2), 0)",
     "bpf_map_push_elem takes a value as an int (uint16)"),
])
def test_python_programs_misusing_a_queue_are_refused(tmp_path, call, error):
    """Push, pop and peek take a queue or a stack, which takes nothing else, and
    a value of its type: the load fails and says so."""
    from dataplane import load_program
    from dataplane.errors import ProgramError
    src = PROGRAM.replace("    err, seen = bpf_map_peek_elem(recent)\n",
                          f"    err = {call}\n    seen = 0\n")
    src = src.replace("bpf_map_push_elem)\n", "bpf_map_push_elem, bpf_map_lookup_elem,\n"
                      "                            BPF_MAP_TYPE_HASH)\n")
    src = src.replace("@xdp\n", 'table = Map("table", BPF_MAP_TYPE_HASH, key=np.uint32, '
                      'value=np.uint32, max_entries=4)\n\n\n@xdp\n')
    path = tmp_path / "bad.py"
    path.write_text(src)
    with pytest.raises(ProgramError, match=re.escape(error)):
        load_program(str(path)).test_run(bytes(20))


RELAY = """
import numpy as np
from dataplane import XDP_ABORTED, XDP_PASS, xdp
from dataplane.maps import (BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_QUEUE, Map,
                            bpf_map_lookup_elem, bpf_map_pop_elem, bpf_map_push_elem)

tokens = Map("tokens", BPF_MAP_TYPE_QUEUE, key=None, value=np.uint32, max_entries=64)
relays = Map("relays", BPF_MAP_TYPE_PERCPU_ARRAY, key=np.uint32, value=np.uint64,
             max_entries=1)


@xdp
def relay(ctx):
    for _ in range(256):  # take a token and give it back, 256 times a packet
        err, t = bpf_map_pop_elem(tokens)
        if err != 0:
            return XDP_ABORTED
        if bpf_map_push_elem(tokens, t, 0) != 0:
            return XDP_ABORTED
        n = bpf_map_lookup_elem(relays, 0)
        if n is not None:
            n[0] += 1
    return XDP_PASS
"""


def test_workers_share_a_queue_under_its_lock(tmp_path, workers):
    """Three workers take tokens from one queue and give them back at once
    (the kernel's per-map lock): after the capture, a million pops and as many
    pushes, the 32 tokens are all there, once each. (Without the lock, tokens
    were lost: 153 and 171 of the 4,000 packets passed.)"""
    from dataplane import XdpAction, load_program
    from dataplane.io.capture import open_capture
    from dataplane.pipeline import replay
    path = tmp_path / "relay.py"
    path.write_text(RELAY)
    workers(3)
    prog = load_program(str(path))
    for t in range(32):
        prog.maps["tokens"].push(t)
    with open_capture(ROOT / "pcaps" / "small.pcap") as reader:
        stats = replay(reader, prog, None, batch_size=256, workers=3)
    assert [w["packets"] > 0 for w in stats.workers] == [True] * 3
    assert int(stats.actions[XdpAction.XDP_PASS]) == stats.packets == 4000
    assert sum(prog.maps["relays"].lookup(0)) == 256 * 4000
    assert sorted(prog.maps["tokens"].items()) == list(range(32))
