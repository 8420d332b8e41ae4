"""The live pipeline: interfaces in, program, verdicts out (``dataplane run``).

``LiveDataplane(program, ["eth1", "eth2"], host_tap=True)`` takes over
interfaces the way a user-space dataplane does:

- each interface gets a RawSocket (io/rawsock.py): promiscuous, a TPACKET_V3
  receive ring read in batches by compiled code, a batched transmit path;
- with ``host_tap``, each also gets a TAP (io/tap.py) named ``dp-<iface>``
  (or as given) with the interface's MAC and MTU: the host's addresses belong
  there. The host stack's own copy of the interface's frames is dropped at tc
  ingress (io/hostblock.py), so the host sees exactly what the program passes;
- ``run()`` polls every ring and TAP, runs the program on each batch and sends
  each frame where its verdict says:

  ========== =====================================================================
  XDP_PASS   into the interface's TAP (without host_tap: counted, and left to the
             kernel's own copy of the frame)
  XDP_TX     back out of the ingress interface
  XDP_REDIRECT out of the target ifindex when it is one of the interfaces or a
             TAP (then the host receives it); any other target is counted as an
             error naming the ifindex
  XDP_DROP, XDP_ABORTED counted
  ========== =====================================================================

  Frames the host sends out of a TAP go out of its interface, not through the
  program (XDP sees only ingress).

Counters are raw 64-bit (live_stats.LiveStats); every ``interval`` seconds
``on_interval(stats, before, seconds, since_start)`` is called. ``run()`` ends on
``stop()`` (the CLI's SIGINT / SIGTERM handler), after ``limit`` packets, or
with a DataplaneError when an interface vanishes. ``close()`` removes the TAPs
and gives the interfaces back as found (promiscuous mode, tc ingress).
"""

import contextlib
import errno
import os
import select
import socket
import time

import numpy as np

from . import config
from .action import ACTION_NAMES, XdpAction
from .broadcast import redirect_groups
from .errors import DataplaneError
from .io.batch import PacketBatch
from .io.bound import BoundCall
from .io.hostblock import HostBlock
from .io.rawsock import RawSocket, interface_index
from .io.tap import Tap, check_tap_name, check_tun_device
from .kernels import tpacket as K
from .kernels.dispatch import group_by_action
from .live_stats import (ERR, HOST_IN, HOST_IN_DROP, HOST_OUT, IF_RX_DROPPED, IF_TX_DROPPED,
                         OUT, OUT_DROP, RING_FREEZES, RING_PACKETS, RX, RX_BYTES, LiveStats,
                         interface_drops)

#: Default packets per batch of a live run: the project's (config.BATCH_SIZE).
#: Each batch costs ~10 Python-level calls (~6 us in all with BoundCall): at
#: 1.4 Mpps of 60-byte frames into drop_all, 256 per batch cost 82 ns of CPU
#: per packet and 1024 cost 59 (benchmarks/live_rx.py). A batch takes what
#: the ring holds; it never waits to fill.
LIVE_BATCH = config.BATCH_SIZE
#: Longest poll() while idle: the loop notices stop() and the stats interval.
POLL_MAX_S = 0.1


def tap_names(interfaces, names=None):
    """The TAP name of each interface: ``names`` in order, else ``dp-<iface>``."""
    names = list(names or [])
    if len(names) > len(interfaces):
        raise DataplaneError(f"{len(names)} TAP names for {len(interfaces)} interfaces")
    return names + [f"dp-{i}" for i in interfaces[len(names):]]


def preflight(interfaces, host_tap=False, taps=None):
    """Check everything that can be checked before anything is created: the
    interfaces exist, /dev/net/tun opens, TAP names are valid and free."""
    seen = set()
    for name in interfaces:
        if name in seen:
            raise DataplaneError(f"interface '{name}': given twice")
        seen.add(name)
        interface_index(name)
    if os.geteuid() != 0:
        try:  # CAP_NET_RAW without root is fine
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
        except PermissionError:
            from .io.rawsock import not_root_error
            raise not_root_error(f"interface '{interfaces[0]}'") from None
    if host_tap:
        check_tun_device()
        for iface, tap in zip(interfaces, taps):
            check_tap_name(tap, for_iface=iface)


class Port:
    """One interface the dataplane holds: its socket, TAP and batches."""

    def __init__(self, row, sock, tap, batch, tap_batch):
        self.row = row
        self.name = sock.ifname
        self.ifindex = sock.ifindex
        self.sock, self.tap = sock, tap
        self.batch, self.tap_batch = batch, tap_batch


class LiveDataplane:
    """Interfaces taken over by a program; see the module's docstring."""

    def __init__(self, program, interfaces, host_tap=False, tap_names_=None, batch_size=None,
                 tx="mmsg", fanout=None, lead=None, extended=False):
        if not interfaces:
            raise DataplaneError("no interface given")
        self.program = program
        self.host_tap = host_tap
        #: fanout(row): the PACKET_FANOUT group of interface ``row`` (None: no group).
        self.fanout = fanout
        #: The worker that owns the TAPs and the host blocks (None: this one). The
        #: others write into its TAPs and leave reading them to it.
        self.lead = lead
        taps = tap_names(interfaces, tap_names_) if host_tap else [None] * len(interfaces)
        if lead is None:
            preflight(interfaces, host_tap, taps)
        self.stats = LiveStats(program.name, interfaces, taps, host_tap, program.checked,
                               extended)
        self.batch_size = batch_size or LIVE_BATCH
        self.ports = []
        self._drops0 = {}  # the interfaces' drop counters when run() started
        self._stop = None
        self._down, self._next_link_check = set(), 0.0  # ports whose link went down
        self._closers = contextlib.ExitStack()
        try:
            for row, name in enumerate(interfaces):
                self.ports.append(self._open(row, name, taps[row], tx))
        except BaseException:
            self.close()
            raise
        # redirect targets: the interfaces, then the TAPs (a TAP's host receives)
        dests = [(p.ifindex, p, False) for p in self.ports] + \
                [(p.tap.ifindex, p, True) for p in self.ports if p.tap is not None]
        self.targets = np.array([d[0] for d in dests], np.int64)
        self.dests = [(d[1], d[2]) for d in dests]
        self.dest_of = {d[0]: (d[1], d[2]) for d in dests}
        n = self.batch_size
        self.order = np.zeros(n, np.int64)
        self.red_order = np.zeros(n, np.int64)
        self.red_counts = np.zeros(len(dests) + 1, np.int64)
        self.counts = np.zeros(len(ACTION_NAMES), np.int64)
        self.pos = np.zeros_like(self.counts)
        self.all_idx = np.arange(n, dtype=np.int64)
        self.seen = 0  # packets received so far (the program's packet index base)
        self.peers = None  # all the workers of a run (live_workers.py), for -c
        for p in self.ports:
            p.group = BoundCall(group_by_action, p.batch.meta, 0, self.order, self.counts,
                                self.pos)
            p.split = BoundCall(K.split_targets, p.batch.meta, self.order, 0, 0, self.targets,
                                self.targets.size, self.red_order, self.red_counts)

    def _open(self, row, name, tap_name, tx):
        c = self._closers
        sock = c.enter_context(RawSocket(name, tx=tx, fanout=None if self.fanout is None
                                         else self.fanout(row)))
        tap = tap_batch = None
        if tap_name is not None and self.lead is not None:
            tap = self.lead.ports[row].tap.writer()
        elif tap_name is not None:
            tap = c.enter_context(Tap(tap_name, mac=sock.mac, mtu=sock.mtu))
            c.enter_context(HostBlock(name, sock.ifindex))  # held until the stack closes
            tap_batch = PacketBatch(self.batch_size, tailroom=0)
        batch = self.program.new_batch(self.batch_size)
        return Port(row, sock, tap, batch, tap_batch)

    # ---- the loop ----------------------------------------------------------
    def warm_up(self):
        """Compile (or load) every kernel the loop calls, before the first frame."""
        for p in self.ports:
            p.sock.prepare(p.batch)   # frames already in the ring wait for run()
            p.batch.count = 0
            self.program.run_batch(p.batch)
            p.group.set(1, 0)
            p.group.call()
            p.split.set(2, 0)
            p.split.set(3, 0)
            p.split.call()
            for idx in (self.order, self.red_order):
                p.sock.tx.push(p.batch, idx, 0, 0)
                if p.tap is not None:
                    p.tap.write(p.batch, idx, 0, 0)
            if p.tap_batch is not None:
                p.sock.tx.push(p.tap_batch, self.all_idx, 0, 0)
                p.tap.read_batch(p.tap_batch)
                if p.tap_batch.count:
                    self._from_host(p)

    def stop(self, why="stop"):
        """End run() at its next turn (safe from a signal handler)."""
        self._stop = why

    def run(self, limit=None, interval=None, on_interval=None, wakeup_fd=None):
        """Poll, run, dispatch until stop(), ``limit`` packets, or an error."""
        stats = self.stats
        poller = select.poll()
        watch = {}
        for p in self.ports:
            poller.register(p.sock.fd, select.POLLIN)
            watch[p.sock.fd] = p
            if p.tap_batch is not None:
                poller.register(p.tap.fd, select.POLLIN)
        if wakeup_fd is not None:
            poller.register(wakeup_fd, select.POLLIN)
        start, cpu0 = time.monotonic(), os.times()
        self._drops0 = interface_drops({p.name for p in self.ports}) if self.lead is None \
            else {}  # an interface's drops: counted once, by the lead
        next_stats = start + interval if interval else None
        before, last = stats.snapshot(), start
        try:
            while self._stop is None:
                busy = False
                for p in self.ports:
                    n = p.sock.read_batch(p.batch)
                    if n:
                        busy = True
                        if limit is not None and self._seen_all() + n >= limit:
                            seen = self._seen_all()
                            p.batch.count = n = max(0, limit - seen)
                            if n:
                                self._handle(p, n, exact_bytes=False)
                            self._stop = "count"
                            break
                        self._handle(p, n)
                    if p.tap_batch is not None and p.tap.read_batch(p.tap_batch):
                        busy = True
                        self._from_host(p)
                now = time.monotonic()
                if self._down and now >= self._next_link_check:
                    self._next_link_check = now + POLL_MAX_S
                    for p in self._down:
                        self._check_vanished(p)
                if next_stats is not None and now >= next_stats:
                    self._kernel_counters()
                    if on_interval is not None:
                        on_interval(stats, before, now - last, now - start)
                    before, last = stats.snapshot(), now
                    next_stats = max(next_stats + interval, now + interval / 2)
                if busy or self._stop is not None:
                    continue
                wait = POLL_MAX_S if next_stats is None else min(POLL_MAX_S, next_stats - now)
                for fd, ev in poller.poll(max(1, int(wait * 1000))):
                    if ev & (select.POLLERR | select.POLLHUP | select.POLLNVAL) and fd in watch:
                        self._link_event(watch[fd])
                    elif fd == wakeup_fd:
                        try:
                            os.read(wakeup_fd, 512)
                        except OSError:
                            pass
        finally:
            cpu1 = os.times()
            stats.elapsed_s = time.monotonic() - start
            stats.cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
            if stats.stopped_by is None:
                stats.stopped_by = self._stop
            self._kernel_counters()
            stats.take_program_counters(self.program)
        return stats

    def _seen_all(self):
        """Packets received by every worker of the run (-c counts them all)."""
        return self.seen if self.peers is None else sum(w.seen for w in self.peers)

    def _kernel_counters(self):
        c = self.stats.c
        for p in self.ports:
            try:
                c[p.row, RING_PACKETS:RING_FREEZES + 1] = p.sock.kernel_stats()
            except OSError:
                pass
        if not self._drops0:  # a worker other than the lead: the lead counts them
            return
        now = interface_drops({p.name for p in self.ports})
        for p in self.ports:
            if p.name in now and p.name in self._drops0:
                c[p.row, IF_RX_DROPPED:IF_TX_DROPPED + 1] = [
                    a - b for a, b in zip(now[p.name], self._drops0[p.name])]

    def _link_event(self, p):
        """An error on ``p``'s socket: the link vanished (an error) or went down.
        Deleting a link takes it down first, and the socket reports that alone
        (ENETDOWN, once): a link that went down is checked again every
        POLL_MAX_S, else one deleted just after this check was never noticed."""
        err = p.sock.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self._check_vanished(p)
        if err:
            self.stats.errors[(p.name, "link")] = "went down while running" \
                if err == errno.ENETDOWN else os.strerror(err)
        if err == errno.ENETDOWN:
            self._down.add(p)

    @staticmethod
    def _check_vanished(p):
        try:
            now = socket.if_nametoindex(p.name)
        except OSError:
            now = None
        if now != p.ifindex:
            raise DataplaneError(f"interface '{p.name}': vanished while running")

    def _handle(self, p, n, exact_bytes=True):
        """One batch from interface ``p``: run, count, dispatch."""
        c, b = self.stats.c, p.batch
        row = p.row
        c[row, RX] += n
        c[row, RX_BYTES] += p.sock.last_bytes if exact_bytes else \
            int((b.data_end[:n] - b.data[:n]).sum())
        self.program.run_batch(b, base_index=self.seen)
        self.seen += n
        if self.program.traces:
            self._trace()
        counts, order = self.counts, self.order
        p.group.set(1, n)
        p.group.call()
        c[row, 2:7] += counts  # ABORTED .. REDIRECT columns, in XdpAction order
        s = int(counts[0] + counts[1])
        k = int(counts[XdpAction.XDP_PASS])
        if k:
            if p.tap is not None:
                self._to_host(p, b, order, s, s + k)
            # else: the kernel's own copy goes on into the host stack
        s += k
        k = int(counts[XdpAction.XDP_TX])
        if k:
            self._out(p, b, order, s, s + k)
        s += k
        k = int(counts[XdpAction.XDP_REDIRECT])
        if k:
            self._redirect(p, b, s, s + k)

    def _out(self, dest, b, idx, start, stop):
        sent, dropped, err = dest.sock.send(b, idx, start, stop)
        c = self.stats.c
        c[dest.row, OUT] += sent
        if dropped:
            c[dest.row, OUT_DROP] += dropped
            self.stats.errors[(dest.name, "transmit")] = os.strerror(err) if err else \
                "no room in the kernel's queue"
            if err in (errno.ENXIO, errno.ENODEV):
                interface_index(dest.name)  # raises if it vanished

    def _to_host(self, dest, b, idx, start, stop):
        written, dropped, err = dest.tap.write(b, idx, start, stop)
        c = self.stats.c
        c[dest.row, HOST_IN] += written
        if dropped:
            c[dest.row, HOST_IN_DROP] += dropped
            self.stats.errors[(dest.tap.name, "write")] = os.strerror(err) if err else "busy"

    def _redirect(self, p, b, start, stop):
        rc = self.red_counts
        p.split.set(2, start)
        p.split.set(3, stop)
        p.split.call()
        s = 0
        for t, (dest, to_tap) in enumerate(self.dests):
            k = int(rc[t])
            if k:
                if to_tap:
                    self._to_host(dest, b, self.red_order, s, s + k)
                else:
                    self._out(dest, b, self.red_order, s, s + k)
            s += k
        k = int(rc[-1])
        if k:  # targets not held, and broadcasts: out of each device of the map held
            # (the split is stable: the packets are still in batch order)
            for t, sel in redirect_groups(b, self.red_order[s:s + k], b.maps):
                dest = self.dest_of.get(t)
                if dest is None:
                    self.stats.c[p.row, ERR] += sel.size
                    self.stats.unknown[t] = self.stats.unknown.get(t, 0) + sel.size
                elif dest[1]:
                    self._to_host(dest[0], b, sel, 0, sel.size)
                else:
                    self._out(dest[0], b, sel, 0, sel.size)

    def _from_host(self, p):
        """Frames the host sent out of p's TAP: out of p's interface, as they are."""
        tb = p.tap_batch
        n = tb.count
        self.stats.c[p.row, HOST_OUT] += n
        self._out(p, tb, self.all_idx, 0, n)

    def _trace(self):
        import sys
        lines = self.program.trace_lines()
        if lines:
            self.stats.trace_lines += len(lines)
            sys.stderr.write("".join(f"trace: packet {ln.packet}: {ln.text}\n" for ln in lines))
            sys.stderr.flush()

    def close(self):
        """Remove the TAPs, detach the host blocks, restore promiscuous mode."""
        self._closers.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
