"""PROG_ARRAY and bpf_tail_call: dispatch by table, empty slots, the 33-call
limit, and tail_dispatch against dpkt."""

import textwrap
from pathlib import Path

import dpkt
import pytest

from dataplane import PacketBatch, XdpAction, load_program

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "pcaps" / "small.pcap"

PROGRAM = """
import numpy as np
from dataplane import *
from dataplane.maps import *

jmp = Map("jmp", BPF_MAP_TYPE_PROG_ARRAY, key=np.uint32, max_entries=4)
jmp.update(0, "again")
jmp.update(1, "drop_it")

@xdp
def entry(ctx):
    pkt = ctx.pkt
    if bpf_tail_call(ctx, jmp, pkt[1]) != 0:
        pkt[2] = 0xEE  # the slot was empty: the caller goes on
    return XDP_PASS

@xdp
def again(ctx):
    pkt = ctx.pkt
    pkt[0] = pkt[0] + 1
    bpf_tail_call(ctx, jmp, 0)
    return XDP_TX

@xdp
def drop_it(ctx):
    return XDP_DROP
"""


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    p = tmp_path_factory.mktemp("tail") / "tail_prog.py"
    p.write_text(textwrap.dedent(PROGRAM))
    return p


def test_dispatch_empty_slot_and_chain_limit(path):
    prog = load_program(f"{path}:entry")
    assert prog.maps["jmp"].items() == [(0, "again"), (1, "drop_it")]
    assert prog.test_run(bytes([0, 1, 0]) + bytes(60))[0] == XdpAction.XDP_DROP
    action, out = prog.test_run(bytes([0, 3, 0]) + bytes(60))  # empty slot
    assert action == XdpAction.XDP_PASS and out[2] == 0xEE
    # entry -> again -> again ... : 33 tail calls at most, then the call fails
    action, out = prog.test_run(bytes([0, 0, 0]) + bytes(60))
    assert action == XdpAction.XDP_TX and out[0] == 33
    # every packet starts afresh
    b = PacketBatch(3)
    for _ in range(3):
        b.append(bytes([0, 0, 0]) + bytes(60))
    prog.run_batch(b)
    assert [b.packet(i)[0] for i in range(3)] == [33, 33, 33]


def test_control_plane_changes_the_table(path):
    prog = load_program(f"{path}:entry")
    jmp = prog.maps["jmp"]
    jmp.update(3, "drop_it")
    assert prog.test_run(bytes([0, 3, 0]) + bytes(60))[0] == XdpAction.XDP_DROP
    jmp.delete(3)
    assert prog.test_run(bytes([0, 3, 0]) + bytes(60))[0] == XdpAction.XDP_PASS
    with pytest.raises(Exception, match="no program 'nope' in this file"):
        jmp.update(2, "nope")


def test_unknown_program_at_load(tmp_path):
    p = tmp_path / "bad_tail.py"
    p.write_text(textwrap.dedent(PROGRAM).replace('"drop_it")', '"missing")', 1))
    with pytest.raises(Exception, match="no program 'missing'"):
        load_program(f"{p}:entry")


def test_tail_dispatch_against_dpkt():
    prog = load_program(f"{ROOT / 'programs' / 'tail_dispatch.py'}:dispatch")
    with open(SMALL, "rb") as f:
        for _, frame in dpkt.pcap.Reader(f):
            eth = dpkt.ethernet.Ethernet(frame)
            ip = eth.data
            proto = ip.p if isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)) else None
            want = {17: XdpAction.XDP_DROP, 1: XdpAction.XDP_TX}.get(proto, XdpAction.XDP_PASS)
            assert prog.test_run(bytes(frame))[0] == want
