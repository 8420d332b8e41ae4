"""A PROG_ARRAY dispatcher: ``dispatch`` tail-calls a per-protocol program by
the IP protocol number; protocols without one pass.

``jump`` holds programs of this file by name: ``prog.maps["jump"].update(17,
"handle_udp")`` (filled below for TCP, UDP and ICMP; change it from Python).
As in C, write ``return`` right after ``bpf_tail_call``: it comes back only
when the slot is empty (then the dispatcher goes on).
"""

import numpy as np

from dataplane import XDP_DROP, XDP_PASS, XDP_TX, xdp
from dataplane.maps import BPF_MAP_TYPE_PROG_ARRAY, Map, bpf_tail_call
from dataplane.parse import parse_l4

jump = Map("jump", BPF_MAP_TYPE_PROG_ARRAY, key=np.uint32, max_entries=256)
jump.update(6, "handle_tcp")
jump.update(17, "handle_udp")
jump.update(1, "handle_icmp")


@xdp
def dispatch(ctx):
    eth_proto, ip_proto, l3, l4 = parse_l4(ctx.pkt)
    if ip_proto >= 0:
        bpf_tail_call(ctx, jump, ip_proto)
    return XDP_PASS


@xdp
def handle_tcp(ctx):
    return XDP_PASS


@xdp
def handle_udp(ctx):
    return XDP_DROP


@xdp
def handle_icmp(ctx):
    return XDP_TX
