"""Steering packets to workers, RSS-style: a symmetric hash of the flow.

A NIC's RSS spreads a port's packets over receive queues by a hash of the
flow, and XDP runs one program instance per queue; ``--workers N`` does the
same to a batch: each packet goes to worker ``hash % N``. The hash is
symmetric (addresses and ports are taken as unordered pairs), so both
directions of a connection meet the same worker and its per-worker state; the
partition is stable, so a flow's packets keep their order. As a NIC's default
RSS does (ethtool's rx-flow-hash: tcp4 sdfn, udp4 sd), TCP is hashed on
addresses and ports, everything else on addresses and protocol only, so the
fragments of a datagram (only the first carries the ports) stay with their
flow; IPv6 extension headers are skipped to the transport protocol. Other
frames are hashed on their MAC addresses (RSS leaves them on queue 0, which
would load worker 0 for nothing); frames too short for a header go to worker 0.

The batch's ``meta`` columns are gathered worker by worker into a second
array, so each worker runs one contiguous range with the ordinary batch loop,
and scattered back afterwards: the packets never move, and the sinks see the
batch in capture order.
"""

import numpy as np

from .. import config
from ..jit import kernel, lazy
from .layout import ACTION, DATA, DATA_END
from .parse import ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6

prefetch = lazy("dataplane.kernels.memory", "prefetch")


@kernel(**config.INLINE_JIT)
def _be16(buf, p):
    q = np.uint64(p)  # unsigned: no negative-index fix-up between loads, so LLVM merges them
    return (np.uint64(buf[q]) << np.uint64(8)) | np.uint64(buf[q + np.uint64(1)])


@kernel(**config.INLINE_JIT)
def _be32(buf, p):
    return (_be16(buf, p) << np.uint64(16)) | _be16(buf, p + 2)


@kernel(**config.INLINE_JIT)
def _be64(buf, p):
    return (_be32(buf, p) << np.uint64(32)) | _be32(buf, p + 4)


@kernel(**config.INLINE_JIT)
def _mix(h, v):
    h = (h ^ v) * np.uint64(0xBF58476D1CE4E5B9)
    return h ^ (h >> np.uint64(31))


@kernel(**config.INLINE_JIT)
def _pair(h, a, b):
    """Mix an unordered pair: (a, b) and (b, a) give the same hash."""
    if a > b:
        a, b = b, a
    return _mix(_mix(h, a), b)


@kernel(**config.INLINE_JIT)
def flow_hash(buf, d, end):
    """Symmetric hash of the flow of the frame ``buf[d:end]``; 0 when too short."""
    if end - d < 14:
        return np.uint64(0)
    p = d + 12
    proto = _be16(buf, p)
    for _ in range(2):  # up to two VLAN tags (802.1ad outer, 802.1Q inner)
        if (proto == ETH_P_8021Q or proto == ETH_P_8021AD) and p + 6 <= end:
            p += 4
            proto = _be16(buf, p)
    p += 2
    h = np.uint64(0x9E3779B97F4A7C15)
    fragment = False
    if proto == ETH_P_IP:
        if p + 20 > end:
            return np.uint64(0)
        l4 = np.int64(buf[p + 9])
        h = _mix(_pair(h, _be32(buf, p + 12), _be32(buf, p + 16)), np.uint64(l4))
        fragment = (_be16(buf, p + 6) & np.uint64(0x3FFF)) != 0
        q = p + np.int64(buf[p] & 15) * 4
    elif proto == ETH_P_IPV6:
        if p + 40 > end:
            return np.uint64(0)
        l4 = np.int64(buf[p + 6])
        s = _be64(buf, p + 8) ^ _be64(buf, p + 16)
        t = _be64(buf, p + 24) ^ _be64(buf, p + 32)
        q = p + 40
        for _ in range(4):  # extension headers: hop-by-hop, routing, fragment, dest. options
            if q + 8 > end:
                break
            if l4 == 44:
                fragment = True
                l4, q = np.int64(buf[q]), q + 8
            elif l4 == 0 or l4 == 43 or l4 == 60:
                l4, q = np.int64(buf[q]), q + (np.int64(buf[q + 1]) + 1) * 8
            else:
                break
        h = _mix(_pair(h, s, t), np.uint64(l4))
    else:  # not IP: the two MAC addresses (RSS would leave these on queue 0)
        return _mix(_pair(h, _be64(buf, d) >> np.uint64(16), _be64(buf, d + 6) >> np.uint64(16)),
                    proto)
    if l4 == 6 and not fragment and q + 4 <= end:  # TCP: the ports too
        return _pair(h, _be16(buf, q), _be16(buf, q + 2))
    return h


#: Packets ahead whose first header line ``steer`` prefetches.
STEER_AHEAD = 64


@kernel(**config.KERNEL_JIT)
def steer(buf, meta, n, workers, worker_of, perm, bounds, out):
    """Partition packets 0..n-1 by worker (``flow_hash % workers``, stable).

    ``worker_of[i]`` gets packet i's worker; ``perm[j]`` the packet at position
    j of the partition; worker k's packets are positions ``bounds[k]`` to
    ``bounds[k + 1]``; ``out`` (meta's shape) gets meta's columns in that order.
    """
    for k in range(workers + 1):
        bounds[k] = 0
    for i in range(n):
        if i + STEER_AHEAD < n:  # a large batch's headers have left the cache
            prefetch(buf, meta[DATA, i + STEER_AHEAD])
        h = flow_hash(buf, meta[DATA, i], meta[DATA_END, i])
        w = np.int64(h % np.uint64(workers))
        worker_of[i] = w
        bounds[w + 1] += 1
    for k in range(workers):
        bounds[k + 1] += bounds[k]
    for i in range(n):  # bounds[w] is worker w's next position (its start, at first)
        w = worker_of[i]
        perm[bounds[w]] = i
        bounds[w] += 1
    for r in range(meta.shape[0]):  # a row at a time: one gather stream, not eleven
        for j in range(n):
            out[r, j] = meta[r, perm[j]]
    for k in range(workers, 0, -1):  # bounds[w] is now worker w's end: shift back
        bounds[k] = bounds[k - 1]
    bounds[0] = 0


@kernel(**config.KERNEL_JIT)
def unsteer(meta, n, perm, out):
    """Scatter the partitioned columns back: meta[:, perm[j]] = out[:, j]."""
    for r in range(meta.shape[0]):
        for j in range(n):
            meta[r, perm[j]] = out[r, j]


@kernel(**config.KERNEL_JIT)
def count_verdicts(meta, bounds, workers, counts):
    """counts[k, a]: packets of worker k (positions bounds[k]..bounds[k+1]) with verdict a."""
    for k in range(workers):
        for j in range(bounds[k], bounds[k + 1]):
            counts[k, meta[ACTION, j]] += 1
