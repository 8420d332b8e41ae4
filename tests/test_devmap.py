"""DEVMAP / DEVMAP_HASH and bpf_redirect_map: the kernel's semantics from Python
and programs, and l2_fwd against a dpkt reference."""

import sys
import textwrap
from collections import Counter
from pathlib import Path

import dpkt
import numpy as np
import pytest

from dataplane import XdpAction, load_program
from dataplane.io.capture import open_capture
from dataplane.maps import (BPF_MAP_TYPE_DEVMAP, BPF_MAP_TYPE_DEVMAP_HASH, BPF_NOEXIST, Map,
                            MapError)
from dataplane.pipeline import VerdictPcaps, replay

SMALL = Path(__file__).resolve().parent.parent / "pcaps" / "small.pcap"


def test_devmap_control_plane():
    m = Map("ports", BPF_MAP_TYPE_DEVMAP, key=np.uint32, value=np.uint32, max_entries=4)
    assert len(m) == 0 and m.lookup(1) is None and m.items() == []
    m.update(1, 7)
    assert m.lookup(1) == 7 and len(m) == 1 and m.items() == [(1, 7)]
    with pytest.raises(MapError, match="-EEXIST"):
        m.update(2, 8, BPF_NOEXIST)
    m.delete(1)
    assert m.lookup(1) is None
    with pytest.raises(MapError, match="-EINVAL"):
        m.delete(9)
    with pytest.raises(MapError, match="device maps hold an ifindex"):
        Map("d", BPF_MAP_TYPE_DEVMAP, key=np.uint32, value=np.uint16, max_entries=4)
    # struct bpf_devmap_val: the ifindex, then a program the kernel would run on
    # the frame (none here: 0 only, refused before anything changes)
    v = Map("v", BPF_MAP_TYPE_DEVMAP_HASH, key=np.uint32, value=np.uint64, max_entries=4)
    v.update(7, 3)
    with pytest.raises(MapError, match=r"bad value 0x500000003: a device map's program"):
        v.update(8, (5 << 32) | 3)
    assert v.items() == [(7, 3)] and v.devices() == [3]
    h = Map("h", BPF_MAP_TYPE_DEVMAP_HASH, key=np.uint32, value=np.uint32, max_entries=4)
    h.update(1000, 5)
    assert h.items() == [(1000, 5)]


PROGRAM = """
import numpy as np
from dataplane import *
from dataplane.maps import *

dev = Map("dev", BPF_MAP_TYPE_DEVMAP, key=np.uint32, value=np.uint32, max_entries=8)
devh = Map("devh", BPF_MAP_TYPE_DEVMAP_HASH, key=np.uint32, value=np.uint32, max_entries=8)

@xdp
def prog(ctx):
    pkt = ctx.pkt
    if pkt[0] == 0:
        return bpf_redirect_map(dev, pkt[1], pkt[2])
    return bpf_redirect_map(devh, pkt[1] * 1000, pkt[2])
"""


BROADCAST, EXCLUDE_INGRESS = 8, 16  # BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS


@pytest.mark.parametrize("frame, action, target, targets", [
    ([0, 3, 2], XdpAction.XDP_REDIRECT, 30, (30,)),   # slot 3 -> ifindex 30
    ([0, 4, 2], XdpAction.XDP_PASS, 0, ()),           # empty slot: the fallback in flags
    ([0, 4, 1], XdpAction.XDP_DROP, 0, ()),
    ([0, 99, 3], XdpAction.XDP_TX, 0, ()),            # out of range: fallback too
    # every device of the map, the key ignored (dev_map_enqueue_multi)
    ([0, 3, BROADCAST], XdpAction.XDP_REDIRECT, 0, (30, 31, 32)),
    ([0, 99, BROADCAST | 2], XdpAction.XDP_REDIRECT, 0, (30, 31, 32)),
    # ingress ifindex 31 (test_run's argument below) left out
    ([0, 3, BROADCAST | EXCLUDE_INGRESS], XdpAction.XDP_REDIRECT, 0, (30, 32)),
    ([0, 3, EXCLUDE_INGRESS], XdpAction.XDP_REDIRECT, 30, (30,)),  # alone: no effect
    ([0, 3, 32], XdpAction.XDP_ABORTED, 0, ()),       # a flag the kernel does not know
    ([1, 2, 2], XdpAction.XDP_REDIRECT, 22, (22,)),   # DEVMAP_HASH key 2000
    ([1, 5, 2], XdpAction.XDP_PASS, 0, ()),
    ([1, 5, BROADCAST | EXCLUDE_INGRESS], XdpAction.XDP_REDIRECT, 0, (22,)),
])
def test_bpf_redirect_map(tmp_path, frame, action, target, targets):
    path = tmp_path / "devprog.py"
    path.write_text(textwrap.dedent(PROGRAM))
    prog = load_program(str(path))
    for slot, ifindex in ((3, 30), (5, 31), (6, 32)):
        prog.maps["dev"].update(slot, ifindex)
    prog.maps["devh"].update(2000, 22)
    prog.maps["devh"].update(3000, 31)
    r = prog.test_run(bytes(frame) + bytes(60), ingress_ifindex=31)
    assert (r.action, r.redirect, r.targets) == (action, target, targets)


def test_a_broadcast_goes_out_of_every_device_of_its_map(tmp_path):
    """Replay: each broadcast frame is in the redirect file of every device of
    the map (but its own with EXCLUDE_INGRESS), once a copy; counted once as
    XDP_REDIRECT and once per copy by device; a device in the map twice gets
    two copies, as the kernel sends."""
    from dataplane.io.pcap import PcapWriter  # noqa: F401 (the writer under test)
    path = tmp_path / "devprog.py"
    path.write_text(textwrap.dedent(PROGRAM))
    prog = load_program(str(path))
    for slot, ifindex in ((0, 5), (1, 6), (2, 7), (3, 6)):
        prog.maps["dev"].update(slot, ifindex)
    frames = [bytes([0, i % 4, BROADCAST | (EXCLUDE_INGRESS if i % 3 == 0 else 0)])
              + bytes([i]) * 60 for i in range(40)]
    cap = tmp_path / "in.pcap"
    with open(cap, "wb") as f:
        w = dpkt.pcap.Writer(f)
        for fr in frames:
            w.writepkt(fr, 0)
    out = tmp_path / "out"
    with open_capture(str(cap)) as r:  # a pcap's packets come in on ifindex 0
        stats = replay(r, prog, VerdictPcaps(str(out)))
    assert stats.actions[XdpAction.XDP_REDIRECT] == 40 and stats.packets == 40

    def read(name):
        with open(out / name, "rb") as f:
            return [bytes(b) for _, b in dpkt.pcap.Reader(f)]
    assert sorted(p.name for p in out.iterdir()) == ["redirect-5.pcap", "redirect-6.pcap",
                                                     "redirect-7.pcap"]
    assert read("redirect-5.pcap") == frames and read("redirect-7.pcap") == frames
    assert Counter(read("redirect-6.pcap")) == Counter(frames * 2)
    assert stats.redirect == {5: 40, 6: 80, 7: 40}


def test_broadcast_leaves_out_the_ingress_device(tmp_path):
    """EXCLUDE_INGRESS against each packet's own ingress ifindex (a pcapng's
    interfaces are ifindex 1, 2, ...)."""
    path = tmp_path / "devprog.py"
    path.write_text(textwrap.dedent(PROGRAM))
    prog = load_program(str(path))
    for slot, ifindex in ((0, 1), (1, 2)):
        prog.maps["dev"].update(slot, ifindex)
    batch_frames = [bytes([0, 0, BROADCAST | EXCLUDE_INGRESS, i]) + bytes(60) for i in range(4)]
    from dataplane.io.batch import PacketBatch
    b = PacketBatch(8)
    for i, fr in enumerate(batch_frames):
        b.append(fr, ifindex=1 + i % 2)
    prog.run_batch(b)
    from dataplane.broadcast import redirect_groups
    groups = {t: sorted(sel.tolist())
              for t, sel in redirect_groups(b, np.arange(4), prog.numbered_maps)}
    assert groups == {2: [0, 2], 1: [1, 3]}


INNER_PROGRAM = """
import numpy as np
from dataplane import *
from dataplane.maps import *

counts = Map("counts", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=np.uint64, max_entries=2)
ports = Map("ports", BPF_MAP_TYPE_ARRAY_OF_MAPS, key=np.uint32, max_entries=2, pool=3,
            inner=InnerMap(BPF_MAP_TYPE_DEVMAP, np.uint32, np.uint32, 4))

@xdp
def prog(ctx):
    pkt = ctx.pkt
    group = bpf_map_lookup_elem(ports, pkt[0])
    if group is None:
        return XDP_PASS
    return bpf_redirect_map(group, pkt[1], pkt[2])
"""


def test_broadcast_over_an_inner_device_map(tmp_path):
    """A Python program's broadcast over a device map it found in a map of maps:
    that inner map's devices (it gave XDP_ABORTED), each slot's own; one-device
    redirects through it as before."""
    path = tmp_path / "inner.py"
    path.write_text(textwrap.dedent(INNER_PROGRAM))
    prog = load_program(str(path))
    outer = prog.maps["ports"]
    for number, devices in ((0, (5, 6)), (2, (7, 8, 9))):
        for slot, ifindex in enumerate(devices):
            outer.inner_maps[number].update(slot, ifindex)
    outer.update(0, 2)
    outer.update(1, 0)
    runs = {frame: prog.test_run(bytes(frame) + bytes(60), ingress_ifindex=8)
            for frame in ((0, 0, BROADCAST), (1, 0, BROADCAST), (0, 1, 2), (1, 1, 2),
                          (0, 0, BROADCAST | EXCLUDE_INGRESS), (0, 3, 2))}
    assert {f: (XdpAction(r.action).name, r.targets) for f, r in runs.items()} == {
        (0, 0, BROADCAST): ("XDP_REDIRECT", (7, 8, 9)),
        (1, 0, BROADCAST): ("XDP_REDIRECT", (5, 6)),
        (0, 1, 2): ("XDP_REDIRECT", (8,)), (1, 1, 2): ("XDP_REDIRECT", (6,)),
        (0, 0, BROADCAST | EXCLUDE_INGRESS): ("XDP_REDIRECT", (7, 9)),
        (0, 3, 2): ("XDP_PASS", ())}


SHARED_PORTS = """
import numpy as np
from dataplane.maps import *
ports = Map("ports", BPF_MAP_TYPE_ARRAY_OF_MAPS, key=np.uint32, max_entries=2, pool=3,
            inner=InnerMap(BPF_MAP_TYPE_DEVMAP, np.uint32, np.uint32, 4))
"""


def test_broadcast_through_a_map_of_maps_two_programs_share(tmp_path, monkeypatch):
    """Two program files importing one map of device maps, where it has a
    different number (a.py has a map sorted before it): each program's
    broadcasts reach that map's devices. The number was kept on the map, so
    the program compiled second read the other's (no devices)."""
    (tmp_path / "dp_shared_ports.py").write_text(SHARED_PORTS)
    body = INNER_PROGRAM.replace(
        'ports = Map("ports", BPF_MAP_TYPE_ARRAY_OF_MAPS, key=np.uint32, max_entries=2, pool=3,\n'
        '            inner=InnerMap(BPF_MAP_TYPE_DEVMAP, np.uint32, np.uint32, 4))\n',
        "from dp_shared_ports import ports\n")
    assert "from dp_shared_ports" in body
    (tmp_path / "a.py").write_text(body)
    (tmp_path / "b.py").write_text(body.replace('counts = Map("counts"', 'zcounts = Map("zcounts"'))
    monkeypatch.delitem(sys.modules, "dp_shared_ports", raising=False)
    a, b = load_program(str(tmp_path / "a.py")), load_program(str(tmp_path / "b.py"))
    assert [m.name for m in a.numbered_maps].index("ports") != \
        [m.name for m in b.numbered_maps].index("ports")
    outer = a.maps["ports"]
    assert b.maps["ports"] is outer
    for slot, ifindex in enumerate((7, 8, 9)):
        outer.inner_maps[0].update(slot, ifindex)
    outer.update(0, 0)
    for prog in (a, b):
        r = prog.test_run(bytes((0, 0, BROADCAST)) + bytes(60), ingress_ifindex=8)
        assert (XdpAction(r.action).name, r.targets) == ("XDP_REDIRECT", (7, 8, 9)), prog.name


def test_l2_fwd_against_dpkt(tmp_path):
    with open(SMALL, "rb") as f:
        frames = [bytes(b) for _, b in dpkt.pcap.Reader(f)]
    unicast = Counter(fr[:6] for fr in frames if not fr[0] & 1)
    top = [mac for mac, _ in unicast.most_common(3)]
    prog = load_program("l2_fwd")
    for port, mac in enumerate(top):
        prog.maps["macs"].update(int.from_bytes(mac, "big"), port)
    prog.maps["ports"].update(0, 10)
    prog.maps["ports"].update(1, 11)  # port 2 has no device: its frames pass
    with open_capture(SMALL) as r:
        stats = replay(r, prog, VerdictPcaps(tmp_path, snaplen=262144))
    def read(name):
        with open(tmp_path / name, "rb") as f:
            return [bytes(b) for _, b in dpkt.pcap.Reader(f)]
    assert read("redirect-10.pcap") == [fr for fr in frames if fr[:6] == top[0]]
    assert read("redirect-11.pcap") == [fr for fr in frames if fr[:6] == top[1]]
    rest = [fr for fr in frames if fr[:6] not in top[:2]]
    assert read("pass.pcap") == rest
    assert stats.redirect == {10: unicast[top[0]], 11: unicast[top[1]]}


def test_broadcast_with_workers_and_no_forged_broadcast(tmp_path):
    """Workers give the same copies; bpf_redirect to an ifindex of 2**31 or
    more (no device has one; here it would read as a broadcast) aborts."""
    path = tmp_path / "devprog.py"
    path.write_text(textwrap.dedent(PROGRAM))
    prog = load_program(str(path))
    for slot, ifindex in ((0, 5), (1, 6)):
        prog.maps["dev"].update(slot, ifindex)
    cap = tmp_path / "in.pcap"
    with open(cap, "wb") as f:
        w = dpkt.pcap.Writer(f)
        for i in range(9000):
            w.writepkt(bytes([0, 0, BROADCAST, i % 251]) + bytes(60), 0)
    with open_capture(str(cap)) as r:
        stats = replay(r, prog, VerdictPcaps(str(tmp_path / "out")), workers=2)
    assert stats.redirect == {5: 9000, 6: 9000}
    for name in ("redirect-5.pcap", "redirect-6.pcap"):
        with open(tmp_path / "out" / name, "rb") as f:
            assert [b[3] for _, b in dpkt.pcap.Reader(f)] == [i % 251 for i in range(9000)]
    forged = tmp_path / "forged.py"
    forged.write_text("from dataplane import bpf_redirect, xdp\n\n\n@xdp\n"
                      "def forged(ctx):\n    return bpf_redirect(0x80000000, 0)\n")
    assert load_program(str(forged)).test_run(bytes(64)).action == XdpAction.XDP_ABORTED


def test_a_lookup_of_an_empty_devmap_slot_misses(tmp_path):
    """As the kernel's dev_map_lookup_elem: NULL for an empty slot (it gave a
    value of 0), the ifindex for a filled one."""
    path = tmp_path / "lookup.py"
    path.write_text(textwrap.dedent("""
        import numpy as np
        from dataplane import XDP_PASS, XDP_TX, xdp
        from dataplane.maps import BPF_MAP_TYPE_DEVMAP, Map, bpf_map_lookup_elem

        dev = Map("dev", BPF_MAP_TYPE_DEVMAP, key=np.uint32, value=np.uint32, max_entries=8)

        @xdp
        def lookup(ctx):
            v = bpf_map_lookup_elem(dev, ctx.pkt[0])
            if v is None:
                return XDP_PASS
            return XDP_TX if v[0] == 30 else 0
        """))
    prog = load_program(str(path))
    prog.maps["dev"].update(3, 30)
    assert [prog.test_run(bytes([k]) + bytes(63)).action for k in (0, 3, 9)] == \
        [XdpAction.XDP_PASS, XdpAction.XDP_TX, XdpAction.XDP_PASS]
