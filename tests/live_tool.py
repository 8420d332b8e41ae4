"""Tools the live tests run inside their network namespaces (nsenter ... python this).

    live_tool.py ping DST [-c N] [--timeout S]     # ICMP echo over a raw socket
    live_tool.py snmp                              # this namespace's ICMP counters
    live_tool.py tcp-sink PORT                     # one connection: bytes and SHA-256
    live_tool.py tcp-send HOST PORT BYTES          # send random bytes: count and SHA-256
    live_tool.py sniff IFACE N [--proto P]         # the next N IPv4 frames (of protocol P), hex

Each prints one JSON object. There is no ping binary on every test machine,
and a raw socket lets the test count exactly what was sent and answered.
"""

import argparse
import hashlib
import json
import os
import select
import socket
import struct
import time


def _csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def ping(dst, count, timeout, interval):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    received = 0
    for seq in range(count):
        body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"dataplane-live-test!"
        body = body[:2] + struct.pack("!H", _csum(body)) + body[4:]
        s.sendto(body, (dst, 0))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([s], [], [], left)[0]:
                break
            data = s.recv(4096)
            icmp = data[(data[0] & 0x0F) * 4:]
            if len(icmp) >= 8 and icmp[0] == 0 and \
                    struct.unpack("!HH", icmp[4:8]) == (ident, seq) and _csum(icmp) == 0:
                received += 1
                break
        if interval:
            time.sleep(interval)
    return {"sent": count, "received": received}


def snmp():
    with open("/proc/net/snmp") as f:
        rows = [ln.split() for ln in f if ln.startswith("Icmp:")]
    return dict(zip(rows[0][1:], map(int, rows[1][1:])))


def tcp_sink(port, timeout=20):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(1)
    s.settimeout(timeout)
    print("listening", flush=True)
    c, _ = s.accept()
    c.settimeout(timeout)
    h, n = hashlib.sha256(), 0
    while True:
        b = c.recv(1 << 16)
        if not b:
            break
        h.update(b)
        n += len(b)
    return {"bytes": n, "sha256": h.hexdigest()}


def tcp_send(host, port, nbytes, timeout=20):
    c = socket.create_connection((host, port), timeout=timeout)
    h, sent = hashlib.sha256(), 0
    while sent < nbytes:
        b = os.urandom(min(1 << 16, nbytes - sent))
        c.sendall(b)
        h.update(b)
        sent += len(b)
    c.shutdown(socket.SHUT_WR)
    c.recv(1)  # the sink's close
    return {"bytes": sent, "sha256": h.hexdigest()}


def sniff(iface, count, proto, timeout=20):
    """The next ``count`` IPv4 frames received on ``iface`` (with IP protocol
    ``proto`` when given) as hex, caught by a packet socket (says "listening"
    first, so the sender can wait for it)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
    s.bind((iface, 0))
    print("listening", flush=True)
    frames, deadline = [], time.monotonic() + timeout
    while len(frames) < count:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([s], [], [], left)[0]:
            break
        data, addr = s.recvfrom(65535)
        if addr[2] == socket.PACKET_OUTGOING or (proto is not None and data[23] != proto):
            continue
        frames.append(data.hex())
    return {"frames": frames}


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ping")
    p.add_argument("dst")
    p.add_argument("-c", type=int, default=3)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--interval", type=float, default=0.0)
    sub.add_parser("snmp")
    p = sub.add_parser("tcp-sink")
    p.add_argument("port", type=int)
    p = sub.add_parser("tcp-send")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("nbytes", type=int)
    p = sub.add_parser("sniff")
    p.add_argument("iface")
    p.add_argument("count", type=int)
    p.add_argument("--proto", type=int)
    a = ap.parse_args()
    if a.cmd == "ping":
        out = ping(a.dst, a.c, a.timeout, a.interval)
    elif a.cmd == "tcp-sink":
        out = tcp_sink(a.port)
    elif a.cmd == "tcp-send":
        out = tcp_send(a.host, a.port, a.nbytes)
    elif a.cmd == "sniff":
        out = sniff(a.iface, a.count, a.proto)
    else:
        out = snmp()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
