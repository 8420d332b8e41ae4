"""Keep the host's network stack off an interface's received frames (``--host-tap``).

A packet socket gets a copy of every frame; the kernel's own stack gets the
frame too. When the dataplane holds an interface and the host's addresses live
on its TAP, that second copy must not reach the stack: the host would answer
pings the program dropped, and answer twice those it passed (Linux accepts a
frame for any of its addresses on any interface).

In the receive path (net/core/dev.c, ``__netif_receive_skb_core``) packet
sockets' taps run before the tc ingress hook, so a two-instruction eBPF program
at tc ingress that returns TC_ACT_SHOT drops the stack's copy after the
dataplane's socket has its own. It is attached with a tcx BPF link (Linux 6.6+):
the attachment lives as long as the link's file descriptor, so the interface
is handed back to the host when the dataplane closes it, or when the process
dies however it dies (SIGKILL included). Nothing is left on the interface.
"""

import os
import struct

from ..ebpf.kernel import link_create, prog_load
from ..errors import DataplaneError

BPF_PROG_TYPE_SCHED_CLS = 3
BPF_TCX_INGRESS = 46
TC_ACT_SHOT = 2

#: r0 = TC_ACT_SHOT; exit
_DROP_ALL = struct.pack("<BBhi", 0xB7, 0, 0, TC_ACT_SHOT) + struct.pack("<BBhi", 0x95, 0, 0, 0)


class HostBlock:
    """Drop the host stack's copy of frames received on ``ifindex`` until ``close()``."""

    def __init__(self, ifname, ifindex):
        self.ifname = ifname
        self.ifindex = ifindex
        self._prog = self._link = -1
        fd, fail = prog_load(_DROP_ALL, "GPL", "dp_hostblock", prog_type=BPF_PROG_TYPE_SCHED_CLS)
        if fd is None:
            raise DataplaneError(f"interface '{ifname}': cannot load the eBPF program that "
                                 f"keeps the host's stack off it: {os.strerror(fail[0])}",
                                 hint="--host-tap needs root (CAP_BPF, CAP_NET_ADMIN)")
        self._prog = fd
        try:
            self._link = link_create(fd, ifindex, BPF_TCX_INGRESS)
        except OSError as exc:
            self.close()
            raise DataplaneError(f"interface '{ifname}': cannot attach at tc ingress "
                                 f"(tcx link): {exc.strerror}",
                                 hint="--host-tap needs Linux 6.6 or later (tcx)") from None

    def close(self):
        """Detach: the host's stack sees the interface's frames again."""
        for name in ("_link", "_prog"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
