"""A direct-server-return L4 load balancer in the manner of Katran
(balancer_kern.c), configured by dataplane.lb (``dataplane lb``, ``--config``).

Per packet: short frames DROP; not IPv4/IPv6 PASS; IPv4 with options and
fragments DROP; an ICMP/ICMPv6 echo request to a VIP gets its reply (XDP_TX);
ICMP destination-unreachable and ICMPv6 packet-too-big / unreachable are
balanced on the flow they quote (addresses and ports swapped back); TCP and
UDP find their VIP ({addr, port, proto}, then port 0), else PASS (a packet
of an established flow reads its connection-table entry first, and the VIP
lookup is skipped while the VIP the entry names stands: see l4lb); frames above
the max packet size DROP. The real: QUIC VIPs route by the server id in the
destination connection id; otherwise the connection table of the flow's
family (per worker, LRU, UDP entries expire) remembers the flow's real,
unless the packet is a SYN or the VIP bypasses it; a miss hashes the flow
onto the VIP's Maglev ring and remembers the choice (not for RST, nor past
the new-flow guard). Then the packet is encapsulated toward its real (IPIP,
ip6ip6 / 4in6, or GUE) and sent back out (XDP_TX) to the gateway. Every
verdict is counted by reason, and with ctl.trace set each packet leaves a
record in lb_trace (``dataplane lb trace``).
"""

import numpy as np

from dataplane import (XDP_DROP, XDP_PASS, XDP_TX, bpf_get_smp_processor_id,
                       bpf_ktime_get_coarse_ns, bpf_xdp_adjust_head, xdp)
from dataplane.csum import csum_fold, csum_replace2, ipv4_csum_set, l4_csum_ipv6
from dataplane.hash import jhash_2words
from dataplane.lb import layout as L
from dataplane.maps import (BPF_ANY, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_ARRAY_OF_MAPS,
                            BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH,
                            BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_RINGBUF, InnerMap, Map,
                            bpf_map_lookup_elem, bpf_map_prefetch, bpf_map_update_elem,
                            bpf_ringbuf_output)
from dataplane.parse import (ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_ICMPV6,
                             IPPROTO_TCP, IPPROTO_UDP, load_be16, load_be32, load_be64,
                             store_be16, store_be32, store_be64)
from dataplane import config

vip_map = Map("vip_map", BPF_MAP_TYPE_HASH, key=L.VIP_KEY, value=L.VIP_META,
              max_entries=L.MAX_VIPS)
vip_addrs = Map("vip_addrs", BPF_MAP_TYPE_HASH, key=L.ADDR_KEY, value=np.uint32,
                max_entries=L.MAX_VIPS)
reals = Map("reals", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=L.REAL, max_entries=L.MAX_REALS)
ch_rings = Map("ch_rings", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=np.uint32,
               max_entries=L.MAX_VIPS * L.RING_SIZE)
# IPv4 and IPv6 flows in tables of their own: an IPv4 connection takes half a
# cache line, where one row for both took a line each (dataplane bench on the
# 1M mix, alternating runs: 50.8-51.9 -> 47.7-49.1 ns/pkt)
lru_mapping = Map("lru_mapping", BPF_MAP_TYPE_ARRAY_OF_MAPS, key=np.uint32,
                  max_entries=config.WORKERS, pool=config.WORKERS,
                  inner=InnerMap(BPF_MAP_TYPE_LRU_HASH, L.FLOW_KEY_V4, L.CONN, L.CONN_TABLE_SIZE))
lru_mapping_v6 = Map("lru_mapping_v6", BPF_MAP_TYPE_ARRAY_OF_MAPS, key=np.uint32,
                     max_entries=config.WORKERS, pool=config.WORKERS,
                     inner=InnerMap(BPF_MAP_TYPE_LRU_HASH, L.FLOW_KEY_V6, L.CONN,
                                    L.CONN_TABLE_SIZE))
fallback_conns = Map("fallback_conns", BPF_MAP_TYPE_LRU_HASH, key=L.FLOW_KEY_V4, value=L.CONN,
                     max_entries=L.FALLBACK_TABLE_SIZE)
fallback_conns_v6 = Map("fallback_conns_v6", BPF_MAP_TYPE_LRU_HASH, key=L.FLOW_KEY_V6,
                        value=L.CONN, max_entries=L.FALLBACK_TABLE_SIZE)
vip_tags = Map("vip_tags", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=L.VIP_TAG,
               max_entries=L.MAX_VIPS)
server_ids = Map("server_ids", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=np.uint32,
                 max_entries=L.MAX_SERVER_IDS)
ctl = Map("ctl", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=L.CTL, max_entries=1)
vip_stats = Map("vip_stats", BPF_MAP_TYPE_PERCPU_ARRAY, key=np.uint32, value=L.STAT,
                max_entries=L.MAX_VIPS)
real_stats = Map("real_stats", BPF_MAP_TYPE_PERCPU_ARRAY, key=np.uint32, value=L.STAT,
                 max_entries=L.MAX_REALS)
lb_stats = Map("lb_stats", BPF_MAP_TYPE_PERCPU_ARRAY, key=np.uint32, value=np.uint64,
               max_entries=len(L.COUNTERS))
flood = Map("flood", BPF_MAP_TYPE_PERCPU_ARRAY, key=np.uint32, value=L.FLOOD, max_entries=1)
lb_trace = Map("lb_trace", BPF_MAP_TYPE_RINGBUF, key=None, value=L.TRACE,
               max_entries=1 << 15)

# Compile-time copies of layout constants (globals are frozen into the code).
RING_SIZE = L.RING_SIZE
V4_MAPPED = L.V4_MAPPED
MAX_SERVER_IDS = L.MAX_SERVER_IDS
HASH_SEED = 0x5EED1B
OUTER_V4_SRC = 0xAC100000   # 172.16.0.0/16
OUTER_V6_SRC_HI = 0x0100000000000000  # 100::/64
IPPROTO_IPIP = 4
IPPROTO_IPV6 = 41
MAX_ENCAP_HLEN = 40 + 8  # outer IPv6 and GUE's UDP header
TCP_SYN = 0x02
TCP_RST = 0x04
F_HASH_NO_SRC_PORT = L.F_HASH_NO_SRC_PORT
F_LRU_BYPASS = L.F_LRU_BYPASS
F_QUIC_VIP = L.F_QUIC_VIP
F_HASH_DPORT_ONLY = L.F_HASH_DPORT_ONLY
# the VIP an entry names is not what the lookup would find: a port-0 VIP (an exact
# one added since wins), a removed one
LOOK_UP_AGAIN = L.F_PORT_WILDCARD | L.F_REMOVED
TAG_NUMBER = (1 << L.TAG_BITS) - 1
REAL_BITS = L.REAL_BITS
REAL_MASK = (1 << L.REAL_BITS) - 1
NS_PER_MS = 1_000_000
ENCAP_GUE = L.ENCAP_GUE
GUE_PORT = L.GUE_PORT
CONN_NONE, CONN_HIT, CONN_MISS = L.CONN_NONE, L.CONN_HIT, L.CONN_MISS
CONN_BYPASS, CONN_QUIC = L.CONN_BYPASS, L.CONN_QUIC
R_TX, R_ICMP_ECHO = L.R["tx"], L.R["icmp_echo"]
R_DROP_SHORT, R_DROP_IP_OPTIONS = L.R["drop_short"], L.R["drop_ip_options"]
R_DROP_FRAGMENT, R_DROP_TRUNCATED = L.R["drop_fragment"], L.R["drop_truncated"]
R_DROP_TOO_BIG, R_DROP_NO_REAL = L.R["drop_too_big"], L.R["drop_no_real"]
R_DROP_ENCAP = L.R["drop_encap"]
R_PASS_NOT_IP, R_PASS_NOT_L4, R_PASS_NO_VIP = \
    L.R["pass_not_ip"], L.R["pass_not_l4"], L.R["pass_no_vip"]
C_CONN_HIT, C_CONN_MISS, C_NEW_CONN = L.C["conn_hit"], L.C["conn_miss"], L.C["new_conn"]
C_FLOOD_SKIP, C_ICMP_BALANCED = L.C["flood_skip"], L.C["icmp_balanced"]
C_QUIC_ROUTED = L.C["quic_routed"]


def bump(counter):
    c = bpf_map_lookup_elem(lb_stats, counter)
    if c is not None:
        c[0] += 1


def verdict(cfg, action, reason, vip, slot, real, conn):
    """Count the packet's reason (and trace it, with ``cfg.trace`` set): every
    return goes through here."""
    bump(reason)
    if cfg.trace:
        bpf_ringbuf_output(lb_trace, (vip, slot, real, reason, conn), 0)
    return action


def add_stat(stats, index, length):
    s = bpf_map_lookup_elem(stats, index)
    if s is not None:
        s.packets += 1
        s.bytes += length


def now_ms(now):
    """A connection's time: the coarse clock's milliseconds, mod 2**32 (CONN).
    Divided unsigned: int64's floor division adds a fix-up for negatives."""
    return np.int64(np.uint64(now) // np.uint64(NS_PER_MS)) & 0xFFFFFFFF


def conn_get(table, key, udp, timeout_ms):
    """The flow's remembered real and the tag of the VIP that took it, (0, 0)
    for none (a UDP entry past its timeout is none). Time is the coarse clock
    (milliseconds are plenty for a 30 s timeout)."""
    c = bpf_map_lookup_elem(table, key)
    if c is None:
        return np.uint32(0), np.uint32(0)
    if udp:
        now = now_ms(bpf_ktime_get_coarse_ns())
        # the age mod 2**32 (the config keeps timeouts under 2**31 ms); int64:
        # numba compares int64 with uint64 as float64
        if (now - np.int64(c.atime_ms)) & 0xFFFFFFFF > np.int64(timeout_ms):
            return np.uint32(0), np.uint32(0)
        c.atime_ms = now
    real_tag = c.real_tag
    return np.uint32(real_tag & REAL_MASK), np.uint32(real_tag >> REAL_BITS)


def conn_get_in(tables, fallback, key, udp, timeout_ms):
    """conn_get in the worker's table of ``tables`` (``fallback`` without one)."""
    table = bpf_map_lookup_elem(tables, bpf_get_smp_processor_id())
    if table is not None:
        return conn_get(table, key, udp, timeout_ms)
    return conn_get(fallback, key, udp, timeout_ms)


def conn_lookup(v6, key4, key6, udp, timeout_ms):
    """conn_get in the worker's table of the flow's family (the shared fallback
    without one)."""
    if v6:
        return conn_get_in(lru_mapping_v6, fallback_conns_v6, key6, udp, timeout_ms)
    return conn_get_in(lru_mapping, fallback_conns, key4, udp, timeout_ms)


def conn_put_in(tables, fallback, key, conn):
    """Set ``key``'s entry in the worker's table of ``tables`` (``fallback`` without one)."""
    table = bpf_map_lookup_elem(tables, bpf_get_smp_processor_id())
    if table is not None:
        bpf_map_update_elem(table, key, conn, BPF_ANY)
    else:
        bpf_map_update_elem(fallback, key, conn, BPF_ANY)


def conn_insert(v6, key4, key6, real, tag, now):
    """Remember the flow's real and its VIP's tag in the worker's table of its family."""
    conn = (np.uint32(real) | (np.uint32(tag) << REAL_BITS), now_ms(now))
    if v6:
        conn_put_in(lru_mapping_v6, fallback_conns_v6, key6, conn)
    else:
        conn_put_in(lru_mapping, fallback_conns, key4, conn)


def conn_prefetch_in(tables, fallback, key):
    """bpf_map_prefetch of ``key`` in the worker's table of ``tables`` (``fallback``
    without one)."""
    table = bpf_map_lookup_elem(tables, bpf_get_smp_processor_id())
    if table is not None:
        bpf_map_prefetch(table, key)
    else:
        bpf_map_prefetch(fallback, key)


def live_real(real):
    """``real`` while the reals map still holds it, else 0: a connection-table entry
    or a QUIC server id can outlive its real (removing a real empties its row)."""
    if real != 0:
        rec = bpf_map_lookup_elem(reals, real)
        # one test of both words: "addr_hi == 0 and ..." branched on the real's
        # family (an IPv4 real's addr_hi is 0), which the predictor cannot know
        if rec is None or (rec.addr_hi | rec.addr_lo) == 0:
            return np.uint32(0)
    return real


def new_flow_allowed(now, limit):
    """Katran's is_under_flood: at most ``limit`` new flows a second per worker."""
    f = bpf_map_lookup_elem(flood, 0)
    if f is None:
        return True
    if np.int64(now) - np.int64(f.window_start) > 1000000000:
        f.window_start = now
        f.new_conns = 0
    f.new_conns += 1
    return f.new_conns <= limit


def flow_hash(saddr_hi, saddr_lo, sport, dport, v6, flags):
    """The ring hash: jhash of the client (an IPv6 address folded first) and ports."""
    if flags & F_HASH_DPORT_ONLY:
        return jhash_2words(0, dport, HASH_SEED)
    if v6:
        src = jhash_2words((saddr_hi >> 32) ^ saddr_lo, (saddr_hi ^ (saddr_lo >> 32)),
                           HASH_SEED)
    else:
        src = saddr_lo & 0xFFFFFFFF
    if flags & F_HASH_NO_SRC_PORT:
        sport = 0
    return jhash_2words(src, (sport << 16) | dport, HASH_SEED)


def quic_server_real(pkt, udp_off):
    """The real of the server id in a QUIC packet's destination connection id
    (first byte: 2 bits of id version; v1: a 16-bit id in the next 2 bytes, v2:
    24 bits in 3, v3: 32 bits in 4), or 0: none, Initial / 0-RTT, unknown id."""
    p = udp_off + 8
    n = len(pkt)
    if n < p + 1:
        return np.uint32(0)
    first = pkt[p]
    if first & 0x80:  # long header: type in bits 4-5
        if (first & 0x30) <= 0x10:  # Initial, 0-RTT: the client chose the id
            return np.uint32(0)
        cid = p + 6  # flags, version (4), dcid length
    else:
        cid = p + 1
    if n < cid + 5:
        return np.uint32(0)
    version = pkt[cid] >> 6
    if version == 1:
        sid = load_be16(pkt, cid + 1)
    elif version == 2:
        sid = (load_be16(pkt, cid + 1) << 8) | pkt[cid + 3]
    elif version == 3:
        sid = load_be32(pkt, cid + 1)
    else:
        return np.uint32(0)
    if sid >= MAX_SERVER_IDS:
        return np.uint32(0)
    r = bpf_map_lookup_elem(server_ids, sid)
    if r is None:
        return np.uint32(0)
    return r[0]


def echo_reply(pkt, v6, l3, l4):
    """Turn an ICMP / ICMPv6 echo request into its reply, in place."""
    a_hi, a_lo = load_be32(pkt, 0), load_be16(pkt, 4)
    store_be32(pkt, 0, load_be32(pkt, 6))
    store_be16(pkt, 4, load_be16(pkt, 10))
    store_be32(pkt, 6, a_hi)
    store_be16(pkt, 10, a_lo)
    if v6:
        s_hi, s_lo = load_be64(pkt, l3 + 8), load_be64(pkt, l3 + 16)
        store_be64(pkt, l3 + 8, load_be64(pkt, l3 + 24))
        store_be64(pkt, l3 + 16, load_be64(pkt, l3 + 32))
        store_be64(pkt, l3 + 24, s_hi)
        store_be64(pkt, l3 + 32, s_lo)
        pkt[l3 + 7] = 64
        old = load_be16(pkt, l4)
        pkt[l4] = 129  # echo reply: only the type word changes the checksum
        store_be16(pkt, l4 + 2, csum_replace2(load_be16(pkt, l4 + 2), old, load_be16(pkt, l4)))
    else:
        s = load_be32(pkt, l3 + 12)
        store_be32(pkt, l3 + 12, load_be32(pkt, l3 + 16))
        store_be32(pkt, l3 + 16, s)
        pkt[l3 + 8] = 64
        ipv4_csum_set(pkt, l3)
        old = load_be16(pkt, l4)
        pkt[l4] = 0
        store_be16(pkt, l4 + 2, csum_replace2(load_be16(pkt, l4 + 2), old, load_be16(pkt, l4)))


def gue_header(pkt, u, entropy, payload):
    """The UDP header of GUE variant 1 (the inner IP packet right after it),
    checksum 0. Written in each branch of encapsulate: one GUE block after both
    let LLVM compute, on the IPIP path too, the bytes the IPv6 checksum would
    read back (16 instructions a packet, benchmarks/icount.py)."""
    store_be16(pkt, u, 0x8000 | (entropy & 0x7FFF))
    store_be16(pkt, u + 2, GUE_PORT)
    store_be16(pkt, u + 4, payload)
    store_be16(pkt, u + 6, 0)


def encapsulate(ctx, frame, real_v6, real_hi, real_lo, inner_v6, inner_len, tos, entropy,
                gw_mac, gue):
    """Prepend Ethernet + outer IP (+ UDP for GUE) toward the real: False when
    there is no headroom. Outer source: 172.16.x.y or 100::/64 with the client's
    entropy (the real's RSS spreads flows); TTL 64; the inner TOS copied.
    ``frame`` is the program's view of the packet, whose length it checked: its
    destination MAC is read without a check (ctx.pkt, read again, needs two)."""
    orig_dst_hi, orig_dst_lo = load_be32(frame, 0), load_be16(frame, 4)
    l3len = 40 if real_v6 else 20
    hlen = l3len + (8 if gue else 0)
    if bpf_xdp_adjust_head(ctx, -hlen) != 0:
        return False
    pkt = ctx.pkt
    # Never true (the frame had its headers, now hlen bytes more), but after it
    # the compiler knows every store below is inside: one check, not fifteen.
    if len(pkt) < ETH_HLEN + MAX_ENCAP_HLEN:
        return False
    store_be32(pkt, 0, gw_mac >> 16)
    store_be16(pkt, 4, gw_mac & 0xFFFF)
    store_be32(pkt, 6, orig_dst_hi)
    store_be16(pkt, 10, orig_dst_lo)
    o = ETH_HLEN
    payload = inner_len + (8 if gue else 0)
    next_proto = IPPROTO_UDP if gue else (IPPROTO_IPV6 if inner_v6 else IPPROTO_IPIP)
    if real_v6:
        store_be16(pkt, 12, ETH_P_IPV6)
        store_be32(pkt, o, (6 << 28) | (tos << 20))
        store_be16(pkt, o + 4, payload)
        pkt[o + 6] = next_proto
        pkt[o + 7] = 64
        store_be64(pkt, o + 8, OUTER_V6_SRC_HI)
        store_be64(pkt, o + 16, entropy)
        store_be64(pkt, o + 24, real_hi)
        store_be64(pkt, o + 32, real_lo)
        if gue:  # IPv6 needs a UDP checksum
            gue_header(pkt, o + 40, entropy, payload)
            store_be16(pkt, o + 46, l4_csum_ipv6(pkt, o, o + 40, payload, IPPROTO_UDP))
    else:
        store_be16(pkt, 12, ETH_P_IP)
        pkt[o] = 0x45
        pkt[o + 1] = tos
        store_be16(pkt, o + 2, payload + 20)
        store_be32(pkt, o + 4, 0)
        pkt[o + 8] = 64
        pkt[o + 9] = next_proto
        src, dst = OUTER_V4_SRC | (entropy & 0xFFFF), real_lo & 0xFFFFFFFF
        # the checksum from the values written (no re-read of the header)
        total = 0x4500 + tos + payload + 20 + 0x4000 + next_proto + (src >> 16) \
            + (src & 0xFFFF) + (dst >> 16) + (dst & 0xFFFF)
        store_be16(pkt, o + 10, csum_fold(total))
        store_be32(pkt, o + 12, src)
        store_be32(pkt, o + 16, dst)
        if gue:
            gue_header(pkt, o + 20, entropy, payload)
    return True


def l4lb_prefetch(ctx):
    """The prefetch hook, run a few packets ahead (see bpf_map_prefetch): start
    loading the connection-table entry of the packet's flow and, for a SYN, its
    VIP's ring slot. TCP and UDP only. The kind of packet (IPv4 or IPv6, TCP or
    UDP) picks values, not branches: the hook runs on packets 2 * HOOK_AHEAD
    ahead, whose kind the branch predictor cannot know, and each mispredicted
    branch on the mix cost more than the loads for both kinds (dataplane bench
    -p l4lb on pcaps/l4lb.pcap, side by side: 88.5-95.9 -> 82.0-84.7 ns/pkt).
    The one branch left is the family's, which has a connection table and key of
    its own: each family's key built in its branch, not both picked from by
    value, took 15 instructions a packet off (benchmarks/icount.py)."""
    pkt = ctx.pkt
    if len(pkt) < ETH_HLEN + 40 + 4:
        return 0
    eth_proto = load_be16(pkt, 12)
    v6 = eth_proto == ETH_P_IPV6
    v4 = (eth_proto == ETH_P_IP) & (pkt[ETH_HLEN] == 0x45)
    proto = pkt[ETH_HLEN + 6] if v6 else pkt[ETH_HLEN + 9]
    # bitwise, not "and"/"or": one predictable branch, not one per packet kind
    if not ((v4 | v6) & ((proto == IPPROTO_TCP) | (proto == IPPROTO_UDP))):
        return 0
    if v6:  # the family's key and connection table
        l4 = ETH_HLEN + 40
        key = (np.uint64(load_be64(pkt, ETH_HLEN + 8)), np.uint64(load_be64(pkt, ETH_HLEN + 16)),
               np.uint64(load_be64(pkt, ETH_HLEN + 24)), np.uint64(load_be64(pkt, ETH_HLEN + 32)),
               np.uint64(load_be16(pkt, l4)), np.uint64(load_be16(pkt, l4 + 2)), np.uint64(proto))
        conn_prefetch_in(lru_mapping_v6, fallback_conns_v6, key)
    else:
        l4 = ETH_HLEN + 20
        s4 = np.uint64(V4_MAPPED | load_be32(pkt, ETH_HLEN + 12))
        d4 = np.uint64(V4_MAPPED | load_be32(pkt, ETH_HLEN + 16))
        key = (np.uint64(0), s4, np.uint64(0), d4, np.uint64(load_be16(pkt, l4)),
               np.uint64(load_be16(pkt, l4 + 2)), np.uint64(proto))
        conn_prefetch_in(lru_mapping, fallback_conns, (s4, d4, key[4], key[5], key[6]))
    flags = pkt[l4 + 13] if l4 + 13 < len(pkt) else 0  # (a UDP datagram may end sooner)
    if (proto == IPPROTO_TCP) & ((flags & TCP_SYN) != 0):  # its VIP's ring slot is read too
        vip = bpf_map_lookup_elem(vip_map, (key[2], key[3], key[5], key[6]))
        if vip is None:
            vip = bpf_map_lookup_elem(vip_map, (key[2], key[3], 0, key[6]))
        if vip is not None:
            slot = flow_hash(key[0], key[1], np.int64(key[4]), np.int64(key[5]),
                             v6, vip.flags) % RING_SIZE
            bpf_map_prefetch(ch_rings, np.int64(vip.vip_num) * RING_SIZE + slot)
    return 0


@xdp(prefetch=l4lb_prefetch)
def l4lb(ctx):
    cfg = bpf_map_lookup_elem(ctl, 0)
    pkt = ctx.pkt
    n = len(pkt)
    if n < ETH_HLEN:
        return verdict(cfg, XDP_DROP, R_DROP_SHORT, -1, -1, 0, CONN_NONE)
    eth_proto = load_be16(pkt, 12)
    l3 = ETH_HLEN
    if eth_proto == ETH_P_IP:
        if n < l3 + 20:
            return verdict(cfg, XDP_DROP, R_DROP_TRUNCATED, -1, -1, 0, CONN_NONE)
        if pkt[l3] != 0x45:
            return verdict(cfg, XDP_DROP, R_DROP_IP_OPTIONS, -1, -1, 0, CONN_NONE)
        if load_be16(pkt, l3 + 6) & 0x3FFF:  # MF or an offset
            return verdict(cfg, XDP_DROP, R_DROP_FRAGMENT, -1, -1, 0, CONN_NONE)
        v6 = False
        proto = pkt[l3 + 9]
        tos = pkt[l3 + 1]
        inner_len = load_be16(pkt, l3 + 2)
        saddr_hi, saddr_lo = np.uint64(0), np.uint64(V4_MAPPED | load_be32(pkt, l3 + 12))
        daddr_hi, daddr_lo = np.uint64(0), np.uint64(V4_MAPPED | load_be32(pkt, l3 + 16))
        l4 = l3 + 20
    elif eth_proto == ETH_P_IPV6:
        if n < l3 + 40:
            return verdict(cfg, XDP_DROP, R_DROP_TRUNCATED, -1, -1, 0, CONN_NONE)
        v6 = True
        proto = pkt[l3 + 6]
        if proto == 44:  # a fragment header
            return verdict(cfg, XDP_DROP, R_DROP_FRAGMENT, -1, -1, 0, CONN_NONE)
        tos = (load_be16(pkt, l3) >> 4) & 0xFF
        inner_len = load_be16(pkt, l3 + 4) + 40
        saddr_hi, saddr_lo = np.uint64(load_be64(pkt, l3 + 8)), np.uint64(load_be64(pkt, l3 + 16))
        daddr_hi, daddr_lo = np.uint64(load_be64(pkt, l3 + 24)), np.uint64(load_be64(pkt, l3 + 32))
        l4 = l3 + 40
    else:
        return verdict(cfg, XDP_PASS, R_PASS_NOT_IP, -1, -1, 0, CONN_NONE)

    syn = False
    rst = False
    icmp_error = False
    if proto == IPPROTO_TCP or proto == IPPROTO_UDP:
        if n < l4 + (14 if proto == IPPROTO_TCP else 8):
            return verdict(cfg, XDP_DROP, R_DROP_TRUNCATED, -1, -1, 0, CONN_NONE)
        sport = load_be16(pkt, l4)
        dport = load_be16(pkt, l4 + 2)
        if proto == IPPROTO_TCP:
            syn = (pkt[l4 + 13] & TCP_SYN) != 0
            rst = (pkt[l4 + 13] & TCP_RST) != 0
    elif proto == (IPPROTO_ICMPV6 if v6 else IPPROTO_ICMP):
        if n < l4 + 8:
            return verdict(cfg, XDP_DROP, R_DROP_TRUNCATED, -1, -1, 0, CONN_NONE)
        icmp_type = pkt[l4]
        if icmp_type == (128 if v6 else 8):  # echo request
            if bpf_map_lookup_elem(vip_addrs, (daddr_hi, daddr_lo)) is None:
                return verdict(cfg, XDP_PASS, R_PASS_NO_VIP, -1, -1, 0, CONN_NONE)
            echo_reply(pkt, v6, l3, l4)
            return verdict(cfg, XDP_TX, R_ICMP_ECHO, -1, -1, 0, CONN_NONE)
        # destination unreachable (incl. fragmentation needed) / packet too big:
        # balance on the quoted packet, which went from the VIP to the client
        q = l4 + 8
        if v6 and (icmp_type == 1 or icmp_type == 2):
            if n < q + 48:
                return verdict(cfg, XDP_DROP, R_DROP_TRUNCATED, -1, -1, 0, CONN_NONE)
            proto = pkt[q + 6]
            saddr_hi, saddr_lo = np.uint64(load_be64(pkt, q + 24)), \
                np.uint64(load_be64(pkt, q + 32))
            daddr_hi, daddr_lo = np.uint64(load_be64(pkt, q + 8)), \
                np.uint64(load_be64(pkt, q + 16))
            sport, dport = load_be16(pkt, q + 42), load_be16(pkt, q + 40)
        elif not v6 and icmp_type == 3:
            if n < q + 28 or pkt[q] != 0x45:
                return verdict(cfg, XDP_DROP, R_DROP_TRUNCATED, -1, -1, 0, CONN_NONE)
            proto = pkt[q + 9]
            saddr_lo = np.uint64(V4_MAPPED | load_be32(pkt, q + 16))
            daddr_lo = np.uint64(V4_MAPPED | load_be32(pkt, q + 12))
            sport, dport = load_be16(pkt, q + 22), load_be16(pkt, q + 20)
        else:
            return verdict(cfg, XDP_PASS, R_PASS_NOT_L4, -1, -1, 0, CONN_NONE)
        if proto != IPPROTO_TCP and proto != IPPROTO_UDP:
            return verdict(cfg, XDP_PASS, R_PASS_NOT_L4, -1, -1, 0, CONN_NONE)
        icmp_error = True
    else:
        return verdict(cfg, XDP_PASS, R_PASS_NOT_L4, -1, -1, 0, CONN_NONE)

    udp = proto == IPPROTO_UDP
    key6 = (saddr_hi, saddr_lo, daddr_hi, daddr_lo, np.uint64(sport), np.uint64(dport),
            np.uint64(proto))
    key4 = (saddr_lo, daddr_lo, np.uint64(sport), np.uint64(dport), np.uint64(proto))
    # An established flow's entry names the VIP that took it (its tag): while
    # vip_tags holds that tag for an exact VIP, the lookup below would find that
    # VIP, and is skipped (its flags are read here: a flag set since applies).
    # Else the entry read here serves the table step below.
    looked = not syn and not icmp_error
    remembered, tag = np.uint32(0), np.uint32(0)
    vnum = np.int64(-1)
    if looked:
        remembered, tag = conn_lookup(v6, key4, key6, udp, cfg.udp_timeout_ms)
        if remembered != 0:
            known = bpf_map_lookup_elem(vip_tags, tag & TAG_NUMBER)
            if known is not None and known.tag == tag and (known.flags & LOOK_UP_AGAIN) == 0:
                vnum = np.int64(tag & TAG_NUMBER)
                flags = known.flags
    if vnum < 0:
        vip = bpf_map_lookup_elem(vip_map, (daddr_hi, daddr_lo, dport, proto))
        if vip is None:
            vip = bpf_map_lookup_elem(vip_map, (daddr_hi, daddr_lo, 0, proto))
            if vip is None:
                return verdict(cfg, XDP_PASS, R_PASS_NO_VIP, -1, -1, 0, CONN_NONE)
        vnum = np.int64(vip.vip_num)
        flags = vip.flags
    if n > cfg.max_pkt_size:
        return verdict(cfg, XDP_DROP, R_DROP_TOO_BIG, vnum, -1, 0, CONN_NONE)
    if inner_len < 20 or inner_len > n - l3:  # the IP length claims bytes not there
        return verdict(cfg, XDP_DROP, R_DROP_TRUNCATED, vnum, -1, 0, CONN_NONE)

    real = np.uint32(0)
    slot = -1
    conn = CONN_NONE
    if udp and flags & F_QUIC_VIP:
        real = live_real(quic_server_real(pkt, l4))
        if real != 0:
            conn = CONN_QUIC
            bump(C_QUIC_ROUTED)
    if real == 0:
        if flags & F_LRU_BYPASS:
            conn = CONN_BYPASS
        else:
            if not syn:
                if not looked:
                    remembered, _ = conn_lookup(v6, key4, key6, udp, cfg.udp_timeout_ms)
                real = live_real(remembered)
            conn = CONN_HIT if real != 0 else CONN_MISS
            bump(C_CONN_HIT if real != 0 else C_CONN_MISS)
    if real == 0:
        slot = np.int64(flow_hash(saddr_hi, saddr_lo, sport, dport, v6, flags) % RING_SIZE)
        r = bpf_map_lookup_elem(ch_rings, vnum * RING_SIZE + slot)
        if r is not None:
            real = r[0]
        if real == 0:
            return verdict(cfg, XDP_DROP, R_DROP_NO_REAL, vnum, slot, 0, conn)
        if conn == CONN_MISS and not rst and not icmp_error:
            now = bpf_ktime_get_coarse_ns()
            if new_flow_allowed(now, cfg.max_new_conns):
                known = bpf_map_lookup_elem(vip_tags, vnum)  # the VIP's tag, for the entry
                tag = known.tag if known is not None else np.uint32(0)
                conn_insert(v6, key4, key6, real, tag, now)
                bump(C_NEW_CONN)
            else:
                bump(C_FLOOD_SKIP)
    if icmp_error:
        bump(C_ICMP_BALANCED)

    rec = bpf_map_lookup_elem(reals, real)
    if rec is None:
        return verdict(cfg, XDP_DROP, R_DROP_NO_REAL, vnum, slot, real, conn)
    add_stat(vip_stats, vnum, n)
    add_stat(real_stats, real, n)
    entropy = (saddr_lo ^ (saddr_lo >> 32) ^ saddr_hi ^ np.uint64(sport)) & 0xFFFFFFFF
    if not encapsulate(ctx, pkt, rec.v6 != 0, rec.addr_hi, rec.addr_lo, v6, inner_len, tos,
                       entropy, cfg.gateway_mac, cfg.encap == ENCAP_GUE):
        return verdict(cfg, XDP_DROP, R_DROP_ENCAP, vnum, slot, real, conn)
    return verdict(cfg, XDP_TX, R_TX, vnum, slot, real, conn)
