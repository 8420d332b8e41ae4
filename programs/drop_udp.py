"""Drop UDP over IPv4 and IPv6 (802.1Q / QinQ tags skipped); pass everything else."""

from dataplane import XDP_DROP, XDP_PASS, xdp

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
IPPROTO_UDP = 17


@xdp
def drop_udp(ctx):
    pkt = ctx.pkt
    off = 12
    if len(pkt) < off + 2:
        return XDP_PASS
    proto = (pkt[off] << 8) | pkt[off + 1]
    for _tag in range(2):
        if proto != ETH_P_8021Q and proto != ETH_P_8021AD:
            break
        off += 4
        if len(pkt) < off + 2:
            return XDP_PASS
        proto = (pkt[off] << 8) | pkt[off + 1]
    off += 2
    if proto == ETH_P_IP:
        if len(pkt) < off + 20:
            return XDP_PASS
        if pkt[off + 9] == IPPROTO_UDP:
            return XDP_DROP
    elif proto == ETH_P_IPV6:
        if len(pkt) < off + 40:
            return XDP_PASS
        if pkt[off + 6] == IPPROTO_UDP:
            return XDP_DROP
    return XDP_PASS
