"""What the L4 load balancer's program (programs/l4lb/l4lb.py) and its control
plane (lb/control.py) share: map layouts, sizes, VIP flags, counter and
trace codes. Katran keeps the same split between balancer_kern.c's maps and
its C++ control plane; the names follow Katran's where it has one.

Addresses are 128-bit, stored as ``*addr_hi`` / ``*addr_lo`` big-endian words
(IPv4 as IPv4-mapped ``::ffff:a.b.c.d``), so one key serves both families and
dumps print them as addresses.
"""

import numpy as np

#: Slots of each VIP's Maglev ring (a prime, Katran's default).
RING_SIZE = 65537
#: VIPs and reals the maps hold (vip numbers 0.., real ids 1.., 0 = none).
MAX_VIPS = 128
MAX_REALS = 4096
#: A real's weight: Katran's are uint32 (Maglev's accumulator is int64).
MAX_WEIGHT = 0xFFFFFFFF
#: Connection-table entries per worker, and in the shared fallback table.
CONN_TABLE_SIZE = 1 << 17
FALLBACK_TABLE_SIZE = 1 << 16
#: QUIC server ids that can be mapped to reals (server_ids map).
MAX_SERVER_IDS = 1 << 16
#: Trace records one batch may leave in the lb_trace ring (lb trace drains it
#: after every batch of at most this many packets).
TRACE_BATCH = 1024

V4_MAPPED = 0xFFFF00000000  # the low word of ::ffff:0.0.0.0

VIP_KEY = np.dtype([("addr_hi", ">u8"), ("addr_lo", ">u8"), ("port", ">u2"), ("proto", "u1")])
VIP_META = np.dtype([("vip_num", "<u4"), ("flags", "<u4")])
#: vip_tags' values, by VIP number: the VIP's flags and tag. A tag, TAG_WIDTH
#: bits, is the VIP's number in its low TAG_BITS, and above them how many VIPs
#: have had the number; connection-table entries keep the tag of the VIP that
#: took their flow.
VIP_TAG = np.dtype([("flags", "<u4"), ("tag", "<u4")])
TAG_BITS = 8
assert MAX_VIPS <= 1 << TAG_BITS
#: A connection's real and its VIP's tag share one word (CONN.real_tag): the
#: real's id in the low REAL_BITS, the tag above.
REAL_BITS = 12
TAG_WIDTH = 32 - REAL_BITS
assert MAX_REALS <= 1 << REAL_BITS
ADDR_KEY = np.dtype([("addr_hi", ">u8"), ("addr_lo", ">u8")])
REAL = np.dtype([("addr_hi", "<u8"), ("addr_lo", "<u8"), ("v6", "u1")])  # values: host order
#: Connection-table keys: an IPv4 flow's fit with its entry in a 32-byte row,
#: two a cache line (map_layout.row_words), an IPv6 flow's take a line.
FLOW_KEY_V4 = np.dtype([("saddr", ">u4"), ("daddr", ">u4"), ("sport", ">u2"), ("dport", ">u2"),
                        ("proto", "u1")])
FLOW_KEY_V6 = np.dtype([("saddr_hi", ">u8"), ("saddr_lo", ">u8"), ("daddr_hi", ">u8"),
                        ("daddr_lo", ">u8"), ("sport", ">u2"), ("dport", ">u2"), ("proto", "u1")])
#: A connection: the real's id and its VIP's tag in one word (the id in the low
#: REAL_BITS), its last packet's time in milliseconds (mod 2**32: ages are told
#: apart up to MAX_UDP_TIMEOUT_MS).
CONN = np.dtype([("real_tag", "<u4"), ("atime_ms", "<u4")])
STAT = np.dtype([("packets", "<u8"), ("bytes", "<u8")])
CTL = np.dtype([("gateway_mac", "<u8"), ("max_pkt_size", "<u4"), ("encap", "u1"),
                ("trace", "u1"), ("udp_timeout_ms", "<u8"), ("max_new_conns", "<u8")])
FLOOD = np.dtype([("window_start", "<u8"), ("new_conns", "<u8")])
TRACE = np.dtype([("vip_num", "<i4"), ("slot", "<i4"), ("real", "<u4"), ("reason", "u1"),
                  ("conn", "u1")])

# VIP flags (Katran's names without the F_ prefix; bit values are ours).
F_HASH_NO_SRC_PORT = 1
F_LRU_BYPASS = 2
F_QUIC_VIP = 4
F_HASH_DPORT_ONLY = 8
# vip_tags' own flags (the control plane's, not a user's): a port-0 VIP, and a
# VIP number whose VIP was removed (its tag kept, so the next one's differs).
F_PORT_WILDCARD = 1 << 16
F_REMOVED = 1 << 17
VIP_FLAGS = {"hash_no_src_port": F_HASH_NO_SRC_PORT, "lru_bypass": F_LRU_BYPASS,
             "quic": F_QUIC_VIP, "hash_dport_only": F_HASH_DPORT_ONLY}

# ctl.encap
ENCAP_IPIP = 0
ENCAP_GUE = 1
GUE_PORT = 6080

# Defaults of the ctl map (Katran's).
MAX_PKT_SIZE = 1514
UDP_TIMEOUT_MS = 30_000
#: The longest UDP timeout: an age in milliseconds compared mod 2**32 must stay
#: under 2**31.
MAX_UDP_TIMEOUT_MS = 2**31 - 1
MAX_NEW_CONNS = 125_000  # new flows a second a worker inserts before the flood guard

# Why a packet got its verdict: the lb_stats counters, and trace reasons.
REASONS = (
    "tx",               # balanced: encapsulated toward a real
    "icmp_echo",        # ICMP / ICMPv6 echo request to a VIP: echo reply
    "drop_short",       # shorter than an Ethernet header
    "drop_ip_options",  # IPv4 with options
    "drop_fragment",    # IPv4 or IPv6 fragment
    "drop_truncated",   # an IP or L4 header cut short
    "drop_too_big",     # above the max packet size
    "drop_no_real",     # the VIP's ring slot has no real
    "drop_encap",       # no headroom for the outer header
    "pass_not_ip",      # neither IPv4 nor IPv6
    "pass_not_l4",      # not TCP, UDP or a balanced ICMP message
    "pass_no_vip",      # destination not a VIP
)
R = {name: i for i, name in enumerate(REASONS)}
# More counters, after the reasons: the connection table and its guard.
COUNTERS = REASONS + ("conn_hit", "conn_miss", "new_conn", "flood_skip", "icmp_balanced",
                      "quic_routed")
C = {name: i for i, name in enumerate(COUNTERS)}

# trace.conn: what the connection table said
CONN_NONE, CONN_HIT, CONN_MISS, CONN_BYPASS, CONN_QUIC = 0, 1, 2, 3, 4
CONN_STATES = ("-", "hit", "miss", "bypass", "quic")
