"""Live receive-and-drop: CPU per packet of ``dataplane run -p drop_all`` against a
plain per-packet ``socket.recv_into`` loop, on the same traffic, in one run.

Builds two network namespaces joined by a veth pair (client-veth <-> dp-veth0),
sends 64-byte UDP frames from the client at the sender's top rate
(``sendmmsg`` through ctypes, 256 per call, on its own CPU), and runs in the
dp namespace, one after the other (A B A B ...):

- ``dataplane run -i dp-veth0 -p drop_all`` (the TPACKET_V3 ring, compiled walk);
- a Python loop: AF_PACKET socket, ``recv_into`` per packet, count.

For each it reads the receiver's user+sys CPU time from /proc/PID/stat over the
sending window and divides by the packets it got; it also reports the kernel's
ring / socket drops (PACKET_STATISTICS tp_drops) and the sender's rate. Every
frame stays inside the namespaces it creates, removed at the end. Needs root.

    python benchmarks/live_rx.py [--seconds 5] [--runs 3] [-j]
    python benchmarks/live_rx.py --tx [--seconds 3]     # transmit paths: sendmmsg vs TX ring
    python benchmarks/live_rx.py --forward              # redirect veth -> veth
"""

import argparse
import ctypes
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HZ = os.sysconf("SC_CLK_TCK")
MAC_CLIENT, MAC_DP = "02:78:00:00:00:01", "02:78:00:00:01:00"


# ---- helpers run inside the namespaces (this file, with a leading _command) ----

class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(_Iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint32)]


def _frame(i):
    dst = bytes.fromhex(MAC_DP.replace(":", ""))
    src = bytes.fromhex(MAC_CLIENT.replace(":", ""))
    udp = struct.pack("!HHHH", 10000 + i, 9, 8 + 18, 0) + bytes(18)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i, 0, 64, 17, 0,
                     bytes([10, 78, 0, 1]), bytes([10, 78, 0, 2]))
    return dst + src + b"\x08\x00" + ip + udp


def _cmd_send(iface, seconds, per_call=256):
    """Send 64-byte frames out of ``iface`` as fast as sendmmsg goes; print the count."""
    libc = ctypes.CDLL(None, use_errno=True)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.bind((iface, 0))
    frames = [ctypes.create_string_buffer(_frame(i), 60) for i in range(per_call)]
    iov = (_Iovec * per_call)()
    msgs = (_Mmsghdr * per_call)()
    for k in range(per_call):
        iov[k].base, iov[k].len = ctypes.addressof(frames[k]), 60
        msgs[k].hdr.iov = ctypes.pointer(iov[k])
        msgs[k].hdr.iovlen = 1
    sent, fd = 0, s.fileno()
    t0 = time.monotonic()
    end = t0 + seconds
    while time.monotonic() < end:
        r = libc.sendmmsg(fd, msgs, per_call, 0)
        if r > 0:
            sent += r
    print(json.dumps({"sent": sent, "seconds": time.monotonic() - t0}), flush=True)


def _cmd_recv_into(iface):
    """Count frames with one recv_into per packet until SIGTERM; print the count."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((iface, 3))
    s.setsockopt(263, 23, 1)  # PACKET_IGNORE_OUTGOING
    s.getsockopt(263, 6, 12)  # PACKET_STATISTICS: reset
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    buf = bytearray(2048)
    n = 0
    s.settimeout(0.1)
    print("ready", file=sys.stderr, flush=True)
    while not stop:
        try:
            s.recv_into(buf)
            n += 1
        except (socket.timeout, InterruptedError):
            pass
    packets, drops = struct.unpack("II", s.getsockopt(263, 6, 8))
    print(json.dumps({"packets": n, "tp_packets": packets, "tp_drops": drops}), flush=True)


# ---- the harness -----------------------------------------------------------

def _ns(ns, *cmd):
    return ["nsenter", f"--net=/run/netns/{ns}", *cmd]


def _sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


def _cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ   # utime + stime


def _ksoftirqd(cpu=1):
    """CPU seconds of ksoftirqd/CPU: receive work the kernel deferred on that CPU
    (a veth's peer side of the dataplane's transmits lands there when heavy)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if f.read().strip() == f"ksoftirqd/{cpu}":
                        return _cpu(int(pid))
            except OSError:
                pass
    return 0.0


def _pin(cpu):
    if (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(cpu)]
    return []


class Namespaces:
    def __init__(self, server=False):
        tag = os.getpid()
        self.client, self.dp = f"dpb-{tag}-c", f"dpb-{tag}-dp"
        self.server = f"dpb-{tag}-s" if server else None
        self.names = [x for x in (self.client, self.dp, self.server) if x]

    def __enter__(self):
        for ns in self.names:
            _sh("ip", "netns", "add", ns)
            _sh(*_ns(ns, "sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
                "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"))
        _sh("ip", "-n", self.dp, "link", "add", "dp-veth0", "address", MAC_DP, "type", "veth",
            "peer", "name", "client-veth", "address", MAC_CLIENT, "netns", self.client)
        _sh("ip", "-n", self.dp, "link", "set", "dp-veth0", "up")
        _sh("ip", "-n", self.client, "link", "set", "client-veth", "up")
        if self.server:
            _sh("ip", "-n", self.dp, "link", "add", "dp-veth1", "type", "veth", "peer", "name",
                "server-veth", "netns", self.server)
            _sh("ip", "-n", self.dp, "link", "set", "dp-veth1", "up")
            _sh("ip", "-n", self.server, "link", "set", "server-veth", "up")
        return self

    def link(self, ns, dev):
        r = subprocess.run(["ip", "-n", ns, "-s", "-j", "link", "show", dev],
                           capture_output=True, text=True, check=True)
        return json.loads(r.stdout)[0]

    def __exit__(self, *exc):
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _send(n, seconds):
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    r = subprocess.run(_pin(0) + _ns(n.client, sys.executable, __file__, "_send", "client-veth",
                                     str(seconds)), capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = json.loads(r.stdout)
    # on a veth the receiver's kernel work (XDP included) runs in the sender's context
    out["cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return out


def run_kernel_xdp(n, seconds):
    """The ceiling: the kernel's own XDP dropping on dp-veth0 (programs/bpf/xdp_drop.o,
    native mode), nothing in user space: the sender's rate and CPU per packet."""
    obj = ROOT / "programs" / "bpf" / "xdp_drop.o"
    _sh("ip", "-n", n.dp, "link", "set", "dev", "dp-veth0", "xdpdrv", "obj", str(obj),
        "sec", "xdp")
    try:
        sender = _send(n, seconds)
    finally:
        _sh("ip", "-n", n.dp, "link", "set", "dev", "dp-veth0", "xdpdrv", "off")
    return {"sender_pps": sender["sent"] / sender["seconds"], "sent": sender["sent"],
            "sender_cpu_ns_per_pkt": sender["cpu_s"] * 1e9 / max(sender["sent"], 1)}


def _wait_line(proc, prefix, timeout=180):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stderr.readline()
        if not line:
            raise SystemExit(f"error: receiver exited: {proc.wait()}: {proc.stderr.read()}")
        if line.startswith(prefix):
            return
    raise SystemExit("error: receiver not ready")


def run_dataplane(n, seconds, program="drop_all", batch=1024, extra=()):
    cmd = _pin(1) + _ns(n.dp, sys.executable, "-m", "dataplane.cli.main", "run", "-i",
                        "dp-veth0", "-p", str(program), "--interval", "0", "-j",
                        "--batch", str(batch), *extra)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=ROOT)
    _wait_line(p, "run: ")
    pid = _python_pid(p)
    c0, b0, d0 = _cpu(pid), _ksoftirqd(), _veth_dropped(n)
    sender = _send(n, seconds)
    time.sleep(0.3)
    c1, b1, d1 = _cpu(pid), _ksoftirqd(), _veth_dropped(n)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    s = json.loads(out.strip().splitlines()[-1])
    i = s["interfaces"]["dp-veth0"]
    r = {"packets": i["rx"], "cpu_s": c1 - c0, "tp_drops": i["ring"]["tp_drops"],
         "sender_pps": sender["sent"] / sender["seconds"], "sent": sender["sent"],
         "loop_cpu_ns_per_pkt": s["cpu_ns_per_pkt"], "ksoftirqd_s": b1 - b0,
         "veth_dropped": d1 - d0}
    if "dp-veth1" in s["interfaces"]:
        o = s["interfaces"]["dp-veth1"]
        r["forwarded"], r["out_dropped"] = o["out"], o["out_dropped"]
    return r


def _veth_dropped(n):
    """The veth's own drop counters (receive and transmit) on both ends of the pair."""
    total = 0
    for ns, dev in ((n.dp, "dp-veth0"), (n.client, "client-veth")):
        st = n.link(ns, dev)["stats64"]
        total += st["rx"]["dropped"] + st["tx"]["dropped"]
    return total


def _python_pid(p):
    # taskset and nsenter exec the next program: the pid is python's
    return p.pid


def run_recv_into(n, seconds):
    cmd = _pin(1) + _ns(n.dp, sys.executable, __file__, "_recv_into", "dp-veth0")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_line(p, "ready")
    c0 = _cpu(p.pid)
    sender = _send(n, seconds)
    time.sleep(0.3)
    c1 = _cpu(p.pid)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=30)
    r = json.loads(out)
    return {"packets": r["packets"], "cpu_s": c1 - c0, "tp_drops": r["tp_drops"],
            "sender_pps": sender["sent"] / sender["seconds"], "sent": sender["sent"]}


def _ns_per_pkt(r):
    return r["cpu_s"] * 1e9 / r["packets"] if r["packets"] else float("nan")


def bench_rx(args):
    with Namespaces() as n:
        a, b = [], []
        run_dataplane(n, 1, batch=args.batch)  # warm-up: compiled code loaded, caches filled
        k = []
        for _ in range(args.runs):
            a.append(run_dataplane(n, args.seconds, batch=args.batch))
            b.append(run_recv_into(n, args.seconds))
            k.append(run_kernel_xdp(n, args.seconds))
    med = statistics.median
    result = {
        "seconds": args.seconds, "runs": args.runs, "frame_bytes": 60,
        "dataplane_cpu_ns_per_pkt": round(med(_ns_per_pkt(r) for r in a), 1),
        "dataplane_tp_drops": [r["tp_drops"] for r in a],
        "dataplane_veth_dropped": [r["veth_dropped"] for r in a],
        "dataplane_received_share": [round(r["packets"] / r["sent"], 4) for r in a],
        "recv_into_cpu_ns_per_pkt": round(med(_ns_per_pkt(r) for r in b), 1),
        "recv_into_tp_drops": [r["tp_drops"] for r in b],
        "recv_into_received_share": [round(r["packets"] / r["sent"], 4) for r in b],
        "sender_mpps": round(med(r["sender_pps"] for r in a + b) / 1e6, 3),
        "kernel_xdp_sender_mpps": round(med(r["sender_pps"] for r in k) / 1e6, 3),
        "kernel_xdp_sender_cpu_ns_per_pkt": round(med(r["sender_cpu_ns_per_pkt"] for r in k), 1),
    }
    result["ratio"] = round(result["recv_into_cpu_ns_per_pkt"]
                            / result["dataplane_cpu_ns_per_pkt"], 2)
    result["runs_detail"] = {"dataplane": a, "recv_into": b, "kernel_xdp": k}
    return result


def bench_forward(args):
    """dataplane run -i dp-veth0 -i dp-veth1 with a program redirecting everything from
    dp-veth0 to dp-veth1; frames leave into the server namespace (dropped there as
    addressed to another host). Reports CPU per packet, ring drops, and frames lost
    anywhere between the sender and server-veth's receive counter, and the
    transmit leg alone (bench_tx's sendmmsg), which the kernel's veth makes
    most of the cost on some machines (1.2 us a frame on one, 0.6 on another)."""
    import tempfile
    with Namespaces(server=True) as n, tempfile.TemporaryDirectory() as tmp:
        out_if = n.link(n.dp, "dp-veth1")["ifindex"]
        prog = Path(tmp) / "forward.py"
        prog.write_text("from dataplane import bpf_redirect, xdp\n\n\n@xdp\n"
                        f"def forward(ctx):\n    return bpf_redirect({out_if}, 0)\n")
        extra = ("-i", "dp-veth1")
        run_dataplane(n, 1, prog, args.batch, extra)
        rows = []
        for _ in range(args.runs):
            rx0 = n.link(n.server, "server-veth")["stats64"]["rx"]["packets"]
            r = run_dataplane(n, args.seconds, prog, args.batch, extra)
            r["arrived"] = n.link(n.server, "server-veth")["stats64"]["rx"]["packets"] - rx0
            rows.append(r)
    # the transmit leg alone (sendmmsg into a veth, its peer's receive work
    # included): the kernel's share of each forwarded frame on this machine
    tx = bench_tx(args)["mmsg"]["cpu_ns_per_pkt"]
    med = statistics.median
    return {"seconds": args.seconds, "runs": args.runs, "batch": args.batch,
            "forward_cpu_ns_per_pkt": round(med(_ns_per_pkt(r) for r in rows), 1),
            "tx_alone_cpu_ns_per_pkt": tx,
            "ksoftirqd_ns_per_pkt": round(med(r["ksoftirqd_s"] * 1e9 / r["packets"]
                                              for r in rows), 1),
            "tp_drops": [r["tp_drops"] for r in rows],
            "lost": [r["sent"] - r["arrived"] for r in rows],
            "sender_mpps": round(med(r["sender_pps"] for r in rows) / 1e6, 3),
            "runs_detail": rows}


def bench_tx(args):
    """Transmit paths of the dataplane (RawSocket.send): sendmmsg vs TX ring, frames
    out of dp-veth0 into the client namespace, where nothing listens."""
    with Namespaces() as n:
        cmd = _pin(1) + _ns(n.dp, sys.executable, __file__, "_tx", "dp-veth0",
                            str(args.seconds), str(args.runs))
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            raise SystemExit(r.stderr)
        return json.loads(r.stdout)


def _cmd_tx(iface, seconds, runs):
    sys.path.insert(0, str(ROOT))
    import numpy as np
    from dataplane.io.batch import PacketBatch
    from dataplane.io.rawsock import RawSocket

    b = PacketBatch(256, tailroom=0)
    for i in range(256):
        b.append(_frame(i))
    idx = np.arange(256, dtype=np.int64)
    out = {}
    socks = {path: RawSocket(iface, rx=False, tx=path) for path in ("mmsg", "ring")}
    for path, s in socks.items():
        s.send(b, idx, 0, 256)  # compile / warm
    for _ in range(runs):
        for path, s in socks.items():
            sent = dropped = 0
            t0, c0 = time.monotonic(), os.times()
            while time.monotonic() - t0 < seconds:
                x, d, _ = s.send(b, idx, 0, 256)
                sent += x
                dropped += d
            dt, c1 = time.monotonic() - t0, os.times()
            cpu = c1.user - c0.user + c1.system - c0.system
            out.setdefault(path, []).append({"mpps": sent / dt / 1e6,
                                             "cpu_ns_per_pkt": cpu * 1e9 / max(sent, 1),
                                             "dropped": dropped})
    for s in socks.values():
        s.close()
    med = statistics.median
    print(json.dumps({p: {"mpps": round(med(r["mpps"] for r in v), 3),
                          "cpu_ns_per_pkt": round(med(r["cpu_ns_per_pkt"] for r in v), 1),
                          "dropped": sum(r["dropped"] for r in v)}
                      for p, v in out.items()}))


def main():
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        cmd, rest = sys.argv[1], sys.argv[2:]
        if cmd == "_send":
            return _cmd_send(rest[0], float(rest[1]))
        if cmd == "_recv_into":
            return _cmd_recv_into(rest[0])
        if cmd == "_tx":
            return _cmd_tx(rest[0], float(rest[1]), int(rest[2]))
        raise SystemExit(f"unknown helper {cmd}")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1024,
                    help="dataplane run --batch (default 1024)")
    ap.add_argument("--tx", action="store_true", help="measure the transmit paths instead")
    ap.add_argument("--forward", action="store_true",
                    help="measure forwarding veth to veth (a redirect program) instead")
    ap.add_argument("-j", "--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:  # make bench goes on without it
        print("live_rx: skipped: needs root (network namespaces, raw sockets)")
        return
    result = bench_tx(args) if args.tx else bench_forward(args) if args.forward else \
        bench_rx(args)
    if args.json:
        print(json.dumps(result))
        return
    if args.forward:
        print(f"sender: {result['sender_mpps']:.3f} Mpps of 60-byte frames (median of runs)")
        soft = result['ksoftirqd_ns_per_pkt']
        print(f"forward dp-veth0 -> dp-veth1 (redirect): {result['forward_cpu_ns_per_pkt']:,.0f}"
              f" ns/pkt CPU (+ ksoftirqd on its CPU: {soft:,.0f} ns/pkt), "
              f"tp_drops {result['tp_drops']}, lost {result['lost']}")
        tx = result["tx_alone_cpu_ns_per_pkt"]
        print(f"  of which transmitting alone (sendmmsg into a veth, the peer's receive work "
              f"included): {tx:,.0f} ns/pkt; receive and redirect: "
              f"{result['forward_cpu_ns_per_pkt'] - tx:,.0f} ns/pkt")
        return
    if args.tx:
        for path, r in result.items():
            print(f"tx {path:<5} {r['mpps']:.3f} Mpps  {r['cpu_ns_per_pkt']:,.0f} ns/pkt CPU "
                  f"(sender-side: includes the peer's receive work)  dropped {r['dropped']}")
        return
    print(f"sender: {result['sender_mpps']:.3f} Mpps of 60-byte frames (median of runs)")
    print(f"dataplane run -p drop_all: {result['dataplane_cpu_ns_per_pkt']:,.0f} ns/pkt CPU, "
          f"tp_drops {result['dataplane_tp_drops']}, veth drops "
          f"{result['dataplane_veth_dropped']}, received {result['dataplane_received_share']}")
    print(f"recv_into loop:            {result['recv_into_cpu_ns_per_pkt']:,.0f} ns/pkt CPU, "
          f"tp_drops {result['recv_into_tp_drops']}, received {result['recv_into_received_share']}")
    print(f"ratio: {result['ratio']:.1f}x less CPU per packet")
    print(f"ceiling, the kernel's XDP dropping on dp-veth0 (programs/bpf/xdp_drop.o, native): "
          f"sender {result['kernel_xdp_sender_mpps']:.3f} Mpps, the sender's CPU (its receive "
          f"work included) {result['kernel_xdp_sender_cpu_ns_per_pkt']:,.0f} ns/pkt")


if __name__ == "__main__":
    main()
