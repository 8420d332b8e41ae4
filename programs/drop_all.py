"""Drop every packet (xdp-bench drop)."""

from dataplane import XDP_DROP, xdp


@xdp
def drop_all(ctx):
    return XDP_DROP
