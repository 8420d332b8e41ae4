"""Swap the Ethernet destination and source addresses and send the frame back
out of the interface it came in on (xdp-bench tx with swap-macs)."""

from dataplane import XDP_DROP, XDP_TX, xdp


@xdp
def mac_swap_tx(ctx):
    pkt = ctx.pkt
    if len(pkt) < 14:
        return XDP_DROP
    for i in range(6):
        b = pkt[i]
        pkt[i] = pkt[i + 6]
        pkt[i + 6] = b
    return XDP_TX
