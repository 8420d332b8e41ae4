"""Forward by destination MAC: ``macs`` (HASH: MAC -> port) then ``ports``
(DEVMAP: port -> ifindex) with bpf_redirect_map. Broadcast and multicast
frames, unknown MACs and ports without a device go to the host (XDP_PASS).

The tables are filled from Python (the control plane), e.g.::

    prog = load_program("l2_fwd")
    prog.maps["macs"].update(0x020000000001, 0)   # 02:00:00:00:00:01 on port 0
    prog.maps["ports"].update(0, 3)               # port 0 is ifindex 3
"""

import numpy as np

from dataplane import XDP_DROP, XDP_PASS, xdp
from dataplane.maps import (BPF_MAP_TYPE_DEVMAP, BPF_MAP_TYPE_HASH, Map, bpf_map_lookup_elem,
                            bpf_redirect_map)
from dataplane.parse import ETH_HLEN, header_fits, load_be16, load_be32

macs = Map("macs", BPF_MAP_TYPE_HASH, key=np.uint64, value=np.uint32, max_entries=4096)
ports = Map("ports", BPF_MAP_TYPE_DEVMAP, key=np.uint32, value=np.uint32, max_entries=64)


@xdp
def l2_fwd(ctx):
    pkt = ctx.pkt
    if not header_fits(pkt, 0, ETH_HLEN):
        return XDP_DROP
    if pkt[0] & 1:  # group bit: broadcast / multicast
        return XDP_PASS
    port = bpf_map_lookup_elem(macs, (load_be16(pkt, 0) << 32) | load_be32(pkt, 2))
    if port is None:
        return XDP_PASS
    return bpf_redirect_map(ports, port[0], XDP_PASS)
