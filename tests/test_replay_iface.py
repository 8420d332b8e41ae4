"""``dataplane replay -i IFACE``: the verdicts' frames out of an interface, in
a namespace the test makes (a veth pair), counted by the peer's kernel."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "pcaps" / "small.pcap"


def _why_skip():
    if os.geteuid() != 0:
        return "needs root (network namespaces, packet sockets)"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command"
    return None


pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=str(_why_skip()))


@pytest.fixture
def netns():
    name = f"dpt-replay-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        for cmd in (["link", "add", "vA", "type", "veth", "peer", "name", "vB"],
                    ["link", "set", "vA", "up"], ["link", "set", "vB", "up"]):
            subprocess.run(["ip", "-n", name, *cmd], check=True, capture_output=True)
        _in(name, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _in(ns, *cmd):
    return subprocess.run(["nsenter", f"--net=/run/netns/{ns}", *cmd], capture_output=True,
                          text=True, timeout=300)


def _dataplane(ns, *args):
    return _in(ns, sys.executable, "-m", "dataplane.cli.main", *args)


def _rx(ns, dev):
    out = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", dev],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["stats64"]["rx"]["packets"]


@pytest.mark.parametrize("rate", [[], ["--pps", "50000"], ["--topspeed"]])
def test_pass_frames_leave_by_the_interface(netns, rate):
    before = _rx(netns, "vB")
    r = _dataplane(netns, "replay", "-r", str(SMALL), "-p", "drop_udp", "-i", "vA", "-c", "1500",
                   "-j", *rate)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    sent = out["sent"]
    assert sent["sent"] > 0 and sent["dropped"] == 0
    assert sent["sent"] == out["actions"]["pass"] + out["actions"]["tx"]
    assert _rx(netns, "vB") - before == sent["sent"]  # the peer's kernel counted them
    assert sent["requested_pps"] == (50000 if rate == ["--pps", "50000"] else None)


def test_human_line_names_the_rates(netns):
    r = _dataplane(netns, "replay", "-r", str(SMALL), "-p", "pass_all", "-i", "vA", "-c", "300",
                   "--pps", "100000")
    assert r.returncode == 0, r.stderr
    assert re.search(r"sent 300 frames out of vA in [\d.]+ s: [\d,]+ pps \(requested: "
                     r"100,000 pps\)", r.stdout), r.stdout


@pytest.mark.parametrize("args,code,message", [
    (["-i", "nosuch"], 1, "interface 'nosuch'"),
    (["--pps", "100"], 2, "--pps and --topspeed need -i"),
    (["-i", "vA", "-i", "vB"], 2, "one -i interface"),
    (["-i", "vA", "--pps", "0"], 2, "--pps takes a rate above 0"),
])
def test_bad_interface_options(netns, args, code, message):
    r = _dataplane(netns, "replay", "-r", str(SMALL), "-p", "drop_udp", *args)
    assert r.returncode == code
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_a_down_interface_fails_the_send_in_one_call(netns):
    """sendmmsg on a link that is down: the whole rest is counted dropped after
    one failing call (FAILED), not refused frame by frame; errno ENETDOWN."""
    subprocess.run(["ip", "-n", netns, "link", "set", "vA", "down"], check=True)
    code = """
import errno, json, numpy as np
from dataplane.io.batch import PacketBatch
from dataplane.io.rawsock import RawSocket
from dataplane.kernels import tpacket as K
b = PacketBatch(64)
for i in range(40):
    b.append(bytes(6) * 2 + b"\\x08\\x00" + bytes([i]) * 46)
s = RawSocket("vA", rx=False)
idx = np.arange(40)
print(json.dumps({"push": s.tx.push(b, idx, 3, 40), "send": s.send(b, idx, 0, 40),
                  "failed": K.FAILED, "enetdown": errno.ENETDOWN}))
s.close()
"""
    r = _in(netns, sys.executable, "-c", code)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["push"] == [out["failed"], 0, 0, 3]  # status, sent, refused, resume at 3
    assert out["send"] == [0, 40, out["enetdown"]]  # sent, dropped, errno
