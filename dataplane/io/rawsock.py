"""AF_PACKET sockets on an interface: a TPACKET_V3 receive ring read in batches,
and a batched transmit path (``sendmmsg``, or a PACKET_TX_RING).

``RawSocket(ifname)`` binds a packet socket to one interface, in promiscuous
mode (a PACKET_ADD_MEMBERSHIP, so the interface's own promiscuity count goes
back to where it was when the socket closes: a user's ``ip link set promisc on``
is left alone), with a memory-mapped TPACKET_V3 receive ring::

    with RawSocket("eth1") as s:
        batch = PacketBatch(256)
        while True:
            s.wait(0.1)                      # poll(); a TPACKET_V3 socket never
            n = s.read_batch(batch)          # blocks usefully on an idle link
            ...
            s.send(batch, order, start, stop)

``read_batch`` walks the ring's ready blocks in compiled code
(kernels/tpacket.py) and copies frames into the batch's slots (headroom, data,
tailroom), with their timestamps and this interface's ifindex. ``send`` hands
frames chosen by an index list to the kernel in one ``sendmmsg`` per 64 (no copy
in user space), or through a TX ring (``tx="ring"``, TPACKET_V2, 1024 frames,
one ``send()`` per batch). Measured into a veth (benchmarks/live_rx.py --tx,
60-byte frames, CPU of the sending process, which on a veth includes the
peer's receive work): sendmmsg 1.71 Mpps at 585 ns/pkt, TX ring 1.60 Mpps at
621 ns/pkt; so sendmmsg is the default (the ring also copies each frame once
more). ``kernel_stats()`` reads
PACKET_STATISTICS (12 bytes with TPACKET_V3: tp_packets, tp_drops,
tp_freeze_q_cnt), which the kernel resets on each read: the socket keeps the
running totals.

The socket is created with protocol 0 (it receives nothing), the ring is set up,
and only then is it bound to the interface with ETH_P_ALL: no frame of another
interface ever lands in the ring. Frames this host sends out of the interface
(including the dataplane's own) are not delivered to it (PACKET_IGNORE_OUTGOING).
"""

import mmap
import select
import socket
import struct

import numpy as np

from ..errors import DataplaneError
from ..kernels import tpacket as K
from .bound import BoundCall

SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_DROP_MEMBERSHIP = 2
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_TX_RING = 13
PACKET_IGNORE_OUTGOING = 23
PACKET_FANOUT = 18
#: Fanout by the skb's flow hash: the kernel's flow dissector hash, made
#: symmetric (both directions of a flow reach one socket).
PACKET_FANOUT_HASH = 0
PACKET_MR_PROMISC = 1
TPACKET_V2 = 1
TPACKET_V3 = 2
ETH_P_ALL = 0x0003
SIOCGIFMTU = 0x8921
SIOCGIFHWADDR = 0x8927

#: Receive ring: blocks of BLOCK_SIZE bytes, BLOCKS of them (16 MiB per interface).
BLOCK_SIZE = 1 << 18
BLOCKS = 64
#: A block is handed to user space when full or after this many ms (the latency
#: of a lone frame on a quiet link).
BLOCK_TIMEOUT_MS = 1
#: sendmmsg: messages per system call.
MMSG_PER_CALL = 64
#: TX ring (tx="ring"): frames and their size.
TX_FRAME_SIZE = 1 << 11
TX_FRAMES = 1024
#: How often a transmit the kernel has no room for is retried (poll for room
#: in between, up to TX_WAIT_S each) before its frames are counted as dropped.
TX_RETRIES = 3
TX_WAIT_S = 0.002
TX_PATHS = ("mmsg", "ring")


def interface_index(ifname):
    """The ifindex of ``ifname`` in this network namespace, or a DataplaneError."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise DataplaneError(f"interface '{ifname}': no such device",
                             hint="ip link lists this namespace's interfaces") from None


def not_root_error(what):
    return DataplaneError(f"{what}: permission denied (raw sockets need root or CAP_NET_RAW)",
                          hint="run as root, or use dataplane replay -r FILE to run a capture")


def _packet_socket(ifname):
    try:
        return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError:
        raise not_root_error(f"interface '{ifname}'") from None
    except OSError as exc:
        raise DataplaneError(f"interface '{ifname}': cannot open a packet socket: "
                             f"{exc.strerror}") from None


def _ifreq(sock, request, ifname):
    import fcntl
    return fcntl.ioctl(sock.fileno(), request, struct.pack("16s24x", ifname.encode()))


def interface_mtu(sock, ifname, default=1500):
    """The interface's MTU (SIOCGIFMTU: /sys shows another namespace under nsenter)."""
    try:
        return struct.unpack_from("i", _ifreq(sock, SIOCGIFMTU, ifname), 16)[0]
    except OSError:
        return default


def interface_mac(sock, ifname):
    """The interface's MAC address as bytes (SIOCGIFHWADDR)."""
    try:
        return _ifreq(sock, SIOCGIFHWADDR, ifname)[18:24]
    except OSError:
        return None


class CallCache:
    """BoundCalls by (batch buffer, index array): a few per transmit path."""

    def __init__(self):
        self.calls = {}

    def get(self, buf, idx, make):
        key = (id(buf), id(idx))
        e = self.calls.get(key)
        if e is None or e[0] is not buf or e[1] is not idx:
            if len(self.calls) > 64:
                self.calls.clear()
            e = self.calls[key] = (buf, idx, make())
        return e[2]


class SendmmsgTx:
    """Batched transmit with ``sendmmsg`` on a bound packet socket (``MMSG_PER_CALL``
    messages per system call; iovecs point into the batch's buffer)."""

    name = "mmsg"

    def __init__(self, sock, per_call=MMSG_PER_CALL):
        self.sock = sock
        self.fd = sock.fileno()
        self.iov = np.zeros((per_call, K.IOV_WORDS), np.int64)
        self.hdrs = np.zeros((per_call, K.MMSG_WORDS), np.int64)
        base = self.iov.ctypes.data
        self.hdrs[:, 2] = base + 16 * np.arange(per_call)   # msg_iov
        self.hdrs[:, 3] = 1                                   # msg_iovlen
        self.st = np.zeros(K.ST_SIZE, np.int64)
        self.calls = CallCache()

    def push(self, batch, idx, start, stop):
        """One attempt: (status, sent, refused, resume position)."""
        st = self.st
        call = self.calls.get(batch.buf, idx, lambda: BoundCall(
            K.send_mmsg, self.fd, batch.buf, batch.buf.ctypes.data, batch.meta, idx, 0, 0,
            self.iov, self.hdrs, st))
        call.set(5, start)
        call.set(6, stop)
        status = call.call()
        return status, int(st[K.ST_SENT]), int(st[K.ST_ERRORS]), int(st[K.ST_POS])

    def close(self):
        pass


class RingTx:
    """Batched transmit through a PACKET_TX_RING (TPACKET_V2) on its own socket:
    frames are copied into ring frames, then one ``send()`` flushes them all."""

    name = "ring"

    def __init__(self, ifname, frame_size=TX_FRAME_SIZE, frames=TX_FRAMES):
        self.sock = _packet_socket(ifname)
        try:
            s = self.sock
            s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
            s.setsockopt(SOL_PACKET, PACKET_TX_RING,
                         struct.pack("IIII", frame_size * 16, frames // 16, frame_size, frames))
            self.mm = mmap.mmap(s.fileno(), frame_size * frames, mmap.MAP_SHARED,
                                mmap.PROT_READ | mmap.PROT_WRITE)
            s.bind((ifname, 0))
        except OSError as exc:
            self.sock.close()
            raise DataplaneError(f"interface '{ifname}': cannot set up a TX ring: "
                                 f"{exc.strerror}") from None
        self.ring = np.frombuffer(self.mm, np.uint8)
        self.frame_size, self.frames = frame_size, frames
        self.st = np.zeros(K.ST_SIZE, np.int64)
        self.calls = CallCache()

    def push(self, batch, idx, start, stop):
        st = self.st
        call = self.calls.get(batch.buf, idx, lambda: BoundCall(
            K.ring_send, self.ring, self.frame_size, self.frames, batch.buf, batch.meta, idx,
            0, 0, st))
        call.set(6, start)
        call.set(7, stop)
        status = call.call()
        sent, refused, pos = int(st[K.ST_SENT]), int(st[K.ST_ERRORS]), int(st[K.ST_POS])
        if sent:
            try:
                self.sock.send(b"", socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
            except OSError as exc:
                st[K.ST_ERRNO] = exc.errno
                return K.FAILED, 0, refused + sent, pos
        return status, sent, refused, pos

    def close(self):
        if self.sock.fileno() >= 0:
            self.ring = None
            self.calls = CallCache()
            try:
                self.mm.close()
            except BufferError:
                pass
            self.sock.close()


class RawSocket:
    """A promiscuous AF_PACKET socket on ``ifname`` with a TPACKET_V3 receive ring
    and a batched transmit path (``tx``: "mmsg" for sendmmsg, "ring" for a TX ring).

    ``rx=False`` opens only the transmit path (no ring, no promiscuous mode).
    ``fanout`` (a group id) joins the ring to a PACKET_FANOUT_HASH group: the
    kernel spreads the interface's flows over the group's rings (one per worker).
    Errors are one-line DataplaneErrors: no such interface, not root.
    """

    def __init__(self, ifname, rx=True, tx="mmsg", promisc=True, block_size=BLOCK_SIZE,
                 blocks=BLOCKS, block_timeout_ms=BLOCK_TIMEOUT_MS, fanout=None):
        if tx not in TX_PATHS:
            raise DataplaneError(f"transmit path '{tx}': valid values: {', '.join(TX_PATHS)}")
        self.ifname = ifname
        self.ifindex = interface_index(ifname)
        self.sock = _packet_socket(ifname)
        self.mtu = interface_mtu(self.sock, ifname)
        self.mac = interface_mac(self.sock, ifname)
        self.fd = self.sock.fileno()
        self.mm = self.ring = None
        self.promisc = False
        self.tx = None
        self.block_size, self.blocks = block_size, blocks
        self.st = np.zeros(K.ST_SIZE, np.int64)
        self.kernel_packets = self.kernel_drops = self.kernel_freezes = 0
        self.more = False
        self.last_bytes = 0
        self._walk = None
        try:
            self._setup(rx, tx, promisc, block_timeout_ms, fanout)
        except BaseException:
            self.close()
            raise

    def _setup(self, rx, tx, promisc, tov, fanout):
        s, name = self.sock, self.ifname
        try:
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass  # Linux < 4.20: the walker skips outgoing frames itself
        if rx:
            try:
                s.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
                frame = 2048
                req = struct.pack("IIIIIII", self.block_size, self.blocks, frame,
                                  self.block_size // frame * self.blocks, tov, 0, 0)
                s.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
                self.mm = mmap.mmap(self.fd, self.block_size * self.blocks, mmap.MAP_SHARED,
                                    mmap.PROT_READ | mmap.PROT_WRITE)
            except OSError as exc:
                raise DataplaneError(f"interface '{name}': cannot set up a TPACKET_V3 receive "
                                     f"ring: {exc.strerror}") from None
            self.ring = np.frombuffer(self.mm, np.uint8)
        try:
            s.bind((name, ETH_P_ALL if rx else 0))
        except OSError as exc:
            interface_index(name)  # gone meanwhile: says so
            raise DataplaneError(f"interface '{name}': cannot bind a packet socket: "
                                 f"{exc.strerror}") from None
        s.setblocking(False)
        if rx and fanout is not None:  # one ring of a group the kernel spreads flows over
            try:
                s.setsockopt(SOL_PACKET, PACKET_FANOUT, fanout | (PACKET_FANOUT_HASH << 16))
            except OSError as exc:
                raise DataplaneError(f"interface '{name}': cannot join packet fanout group "
                                     f"{fanout}: {exc.strerror}") from None
        if rx and promisc:
            s.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, self._mreq())
            self.promisc = True
        if rx:
            self.kernel_stats()  # start the kernel's counters from zero
        self.tx = SendmmsgTx(s) if tx == "mmsg" else RingTx(name)

    def _mreq(self):
        # struct packet_mreq: int mr_ifindex; u16 mr_type; u16 mr_alen; u8 mr_address[8]
        return struct.pack("iHH8s", self.ifindex, PACKET_MR_PROMISC, 0, b"")

    def fileno(self):
        return self.fd

    def wait(self, timeout):
        """poll() for a ready block, up to ``timeout`` seconds; True if readable."""
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        return bool(p.poll(max(0, int(timeout * 1000))))

    def prepare(self, batch):
        """The ring walker bound to ``batch`` (compiled or loaded now, not at the
        first frame); read_batch calls it."""
        call = self._walk
        if call is None or call.keep[4] is not batch.buf or call.keep[5] is not batch.meta:
            call = self._walk = BoundCall(
                K.walk_v3, self.ring, self.block_size, self.blocks, self.ifindex,
                batch.buf, batch.meta, 0, batch.capacity, batch.headroom, batch.tailroom,
                self.st, self.mtu)
        return call

    def read_batch(self, batch):
        """Fill ``batch`` (from index 0) with the frames of the ring's ready blocks.

        Returns the packet count (``batch.count``); ``self.more`` is True when the
        batch filled up before the ring ran out (call again after using it).
        """
        st = self.st
        while True:
            status = self.prepare(batch).call()
            if status != K.NEED_BUFFER:
                break
            batch.ensure_buffer(int(st[K.ST_NEED]))
        batch.count = n = int(st[K.ST_COUNT])
        self.last_bytes = int(st[K.ST_BYTES])
        self.more = status == K.FULL
        return n

    def send(self, batch, idx, start, stop):
        """Transmit the frames ``idx[start:stop]`` of ``batch`` out of this interface.

        Returns ``(sent, dropped, errno)``: ``dropped`` counts frames the kernel
        refused (too large, interface down) or had no room for after TX_RETRIES
        waits; ``errno`` is the last error seen (0 if none).
        """
        sent = dropped = err = 0
        tries = 0
        while start < stop:
            status, s, refused, pos = self.tx.push(batch, idx, start, stop)
            sent += s
            dropped += refused
            if refused or status != 0:
                err = int(self.tx.st[K.ST_ERRNO])
            start = pos
            if status == 0:
                break
            if status == K.FAILED or tries >= TX_RETRIES:
                dropped += stop - start
                break
            tries += 1
            p = select.poll()
            p.register(self.tx.sock.fileno(), select.POLLOUT)
            p.poll(int(TX_WAIT_S * 1000) or 1)
        return sent, dropped, err

    def kernel_stats(self):
        """Read PACKET_STATISTICS into the running totals; returns
        ``(tp_packets, tp_drops, tp_freeze_q_cnt)`` since the socket was opened."""
        if self.ring is None or self.sock.fileno() < 0:
            return self.kernel_packets, self.kernel_drops, self.kernel_freezes
        raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 12)
        packets, drops, freezes = struct.unpack("III", raw[:12].ljust(12, b"\0"))
        self.kernel_packets += packets
        self.kernel_drops += drops
        self.kernel_freezes += freezes
        return self.kernel_packets, self.kernel_drops, self.kernel_freezes

    @property
    def outgoing_skipped(self):
        return int(self.st[K.ST_SKIPPED])

    def close(self):
        """Leave promiscuous mode, unmap the ring, close the socket (idempotent)."""
        if self.sock.fileno() < 0:
            return
        if self.tx is not None:
            self.tx.close()
        if self.ring is not None:
            try:
                self.kernel_stats()
            except OSError:
                pass
        self._walk = None
        if self.promisc:
            try:
                self.sock.setsockopt(SOL_PACKET, PACKET_DROP_MEMBERSHIP, self._mreq())
            except OSError:
                pass  # the interface is gone: nothing to restore
            self.promisc = False
        self.ring = None
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:
                pass  # a view is still alive: the mapping goes with it
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
