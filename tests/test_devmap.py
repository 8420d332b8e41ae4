"""DEVMAP / DEVMAP_HASH and bpf_redirect_map: the kernel's semantics from Python
and programs, and l2_fwd against a dpkt reference."""

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
        Map("d", BPF_MAP_TYPE_DEVMAP, key=np.uint32, value=np.uint64, max_entries=4)
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


@pytest.mark.parametrize("frame, action, target", [
    ([0, 3, 2], XdpAction.XDP_REDIRECT, 30),   # slot 3 -> ifindex 30
    ([0, 4, 2], XdpAction.XDP_PASS, 0),        # empty slot: the fallback in flags
    ([0, 4, 1], XdpAction.XDP_DROP, 0),
    ([0, 99, 3], XdpAction.XDP_TX, 0),         # out of range: fallback too
    ([0, 3, 8], XdpAction.XDP_ABORTED, 0),     # BPF_F_BROADCAST: not supported
    ([1, 2, 2], XdpAction.XDP_REDIRECT, 22),   # DEVMAP_HASH key 2000
    ([1, 5, 2], XdpAction.XDP_PASS, 0),
])
def test_bpf_redirect_map(tmp_path, frame, action, target):
    path = tmp_path / "devprog.py"
    path.write_text(textwrap.dedent(PROGRAM))
    prog = load_program(str(path))
    prog.maps["dev"].update(3, 30)
    prog.maps["devh"].update(2000, 22)
    r = prog.test_run(bytes(frame) + bytes(60))
    assert (r.action, r.redirect) == (action, target)


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
