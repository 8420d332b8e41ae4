"""Pass every packet: the empty program (the harness alone, for benchmarks)."""

from dataplane import XDP_PASS, xdp


@xdp
def pass_all(ctx):
    return XDP_PASS
