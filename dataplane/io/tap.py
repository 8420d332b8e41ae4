"""TAP devices: the host's side of an interface the dataplane holds (``--host-tap``).

``Tap("dp-eth1", mac="02:..")`` creates a TAP in the current network namespace
through ``/dev/net/tun`` (TUNSETIFF with IFF_TAP | IFF_NO_PI, and IFF_TUN_EXCL
so an existing device of that name is refused, never taken over), then sets its
MAC address, MTU and state up with pyroute2. The device is not persistent: it
exists exactly as long as the file descriptor, so it disappears when the
dataplane closes it, and also if the process is killed (SIGKILL included).
Nothing is left behind.

Frames written to the TAP (``write``: one ``write()`` per frame, in one compiled
loop) enter the host's stack as if received from the wire; frames the host
sends out of the TAP are read back in batches (``read_batch``) so the dataplane
can put them on the wire. Errors are one-line DataplaneErrors: no
/dev/net/tun, not root, name taken or too long.
"""

import copy
import errno
import fcntl
import os
import select
import socket
import struct

import numpy as np

from ..errors import DataplaneError
from ..kernels import tpacket as K
from .bound import BoundCall
from .rawsock import CallCache

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_TUN_EXCL = 0x8000
IFNAMSIZ = 16


def _mac_text(mac):
    if isinstance(mac, (bytes, bytearray)):
        return ":".join(f"{b:02x}" for b in mac)
    return mac


def check_tap_name(name, for_iface=None):
    """Raise the DataplaneError ``Tap(name)`` would raise for a bad or taken name."""
    hint = "choose another name with --tap-name" if for_iface else None
    if not name or len(name) >= IFNAMSIZ or "/" in name or name in (".", "..") \
            or any(c.isspace() for c in name):
        raise DataplaneError(f"TAP '{name}': not a valid interface name (1 to {IFNAMSIZ - 1} "
                             "characters, no '/' or spaces)", hint=hint)
    try:
        socket.if_nametoindex(name)
    except OSError:
        return
    raise DataplaneError(f"TAP '{name}': name taken (a device of that name exists)",
                         hint=f"remove it (ip link del {name}) or "
                              + (hint or "choose another name"))


def open_tun(flags=os.O_RDWR):
    """An fd of /dev/net/tun; a DataplaneError if it cannot be opened (missing, not root)."""
    try:
        return os.open(TUN_PATH, flags)
    except FileNotFoundError:
        raise DataplaneError(f"{TUN_PATH}: no such device (TAP devices unavailable)",
                             hint="load the tun module (modprobe tun) or run without "
                                  "--host-tap") from None
    except PermissionError:
        raise DataplaneError(f"{TUN_PATH}: permission denied (TAP devices need root or "
                             "CAP_NET_ADMIN)", hint="run as root") from None


def check_tun_device():
    """Raise a DataplaneError if /dev/net/tun cannot be opened (missing, not root)."""
    os.close(open_tun())


class Tap:
    """A non-persistent TAP device named ``name``, up, with ``mac`` and ``mtu``."""

    def __init__(self, name, mac=None, mtu=None):
        check_tap_name(name)
        self.name = name
        self.fd = -1
        self.fd = open_tun(os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            ifr = struct.pack(f"{IFNAMSIZ}sH22x", name.encode(),
                              IFF_TAP | IFF_NO_PI | IFF_TUN_EXCL)
            try:
                fcntl.ioctl(self.fd, TUNSETIFF, ifr)
            except OSError as exc:
                if exc.errno == errno.EBUSY or exc.errno == errno.EEXIST:
                    raise DataplaneError(f"TAP '{name}': name taken (a device of that name "
                                         "exists)") from None
                if exc.errno == errno.EPERM:
                    raise DataplaneError(f"TAP '{name}': permission denied (TAP devices "
                                         "need root or CAP_NET_ADMIN)",
                                         hint="run as root") from None
                raise DataplaneError(f"TAP '{name}': cannot create: {exc.strerror}") from None
            self.ifindex = socket.if_nametoindex(name)
            self._configure(mac, mtu)
        except BaseException:
            self.close()
            raise
        self.mtu = mtu or 1500
        #: the largest frame a read can return: MTU, Ethernet header, one VLAN tag
        self.maxlen = self.mtu + 18
        self.st = np.zeros(K.ST_SIZE, np.int64)
        self.more = False
        self._writes = CallCache()
        self._read = None

    def _configure(self, mac, mtu):
        from pyroute2 import IPRoute

        kw = {}
        if mac is not None:
            kw["address"] = _mac_text(mac)
        if mtu is not None:
            kw["mtu"] = int(mtu)
        try:
            with IPRoute() as ipr:
                ipr.link("set", index=self.ifindex, state="up", **kw)
        except Exception as exc:  # pyroute2's NetlinkError and its kin
            raise DataplaneError(f"TAP '{self.name}': cannot configure "
                                 f"({', '.join(f'{k} {v}' for k, v in kw.items())}): "
                                 f"{exc}") from None

    def fileno(self):
        return self.fd

    def write(self, batch, idx, start, stop):
        """Write the frames ``idx[start:stop]`` of ``batch`` into the TAP (the host
        receives them). Returns ``(written, dropped, errno)``."""
        st = self.st
        call = self._writes.get(batch.buf, idx, lambda: BoundCall(
            K.tap_write, self.fd, batch.buf, batch.meta, idx, 0, 0, st))
        if start >= stop:
            return 0, 0, 0
        call.set(4, start)
        call.set(5, stop)
        status = call.call()
        written, refused = int(st[K.ST_SENT]), int(st[K.ST_ERRORS])
        dropped = refused + (stop - int(st[K.ST_POS]) if status == K.BUSY else 0)
        return written, dropped, int(st[K.ST_ERRNO]) if dropped else 0

    def read_batch(self, batch):
        """Read the frames the host sent out of the TAP into ``batch`` (from index 0)
        until none is waiting or the batch is full (``self.more``)."""
        st = self.st
        call = self._read
        if call is None or call.keep[3] is not batch.buf:
            call = self._read = BoundCall(K.tap_read, self.fd, self.maxlen, self.ifindex,
                                          batch.buf, batch.meta, 0, batch.capacity,
                                          batch.headroom, batch.tailroom, st)
        status = call.call()
        batch.count = int(st[K.ST_COUNT])
        self.more = status == K.FULL
        if status == K.FAILED:
            raise DataplaneError(f"TAP '{self.name}': read failed: "
                                 f"{os.strerror(int(st[K.ST_ERRNO]))}")
        return batch.count

    def wait(self, timeout):
        """poll() for a frame from the host, up to ``timeout`` seconds."""
        p = select.poll()
        p.register(self.fd, select.POLLIN)
        return bool(p.poll(max(0, int(timeout * 1000))))

    def writer(self):
        """A handle for another worker thread to write into this TAP: the same
        descriptor (a write is one frame, atomic), its own status and calls.
        The TAP's owner closes the descriptor; the handle is never closed."""
        w = copy.copy(self)
        w.st = np.zeros(K.ST_SIZE, np.int64)
        w._writes, w._read = CallCache(), None
        w.close = lambda: None
        return w

    def close(self):
        """Close the descriptor: the kernel removes the device (idempotent)."""
        if self.fd >= 0:
            self._writes, self._read = CallCache(), None
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
