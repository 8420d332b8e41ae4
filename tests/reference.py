"""Independent reference model (test oracle) for the bundled XDP programs.

``expected(program_name, frame) -> (action, redirect_ifindex, out_bytes)`` says
what a bundled program must do with one Ethernet frame, computed from the
written spec with dpkt's header classes (``dpkt.ethernet.Ethernet``,
``dpkt.ethernet.VLANtag8021Q``, ``dpkt.ip.IP``, ``dpkt.ip6.IP6``,
``dpkt.tcp.TCP``, ``dpkt.udp.UDP``), so it shares no parsing code or offsets
with the programs under ``programs/``.  Actions are the kernel's numbers
(ABORTED=0, DROP=1, PASS=2, TX=3, REDIRECT=4); ``redirect_ifindex`` is 0 unless
the action is REDIRECT; ``out_bytes`` is the frame as the program leaves it.

The programs, as specified:

``pass_all``          PASS, frame unchanged.
``drop_all``          DROP.
``drop_udp``          Ethernet, then up to two VLAN tags (TPID 0x8100 or
                      0x88a8) skipped; IPv4 with protocol 17 -> DROP (any
                      fragment); IPv6 whose fixed header's next header is 17 ->
                      DROP (no extension-header walk); anything else -> PASS.
``mac_swap_tx``       frame of at least 14 bytes: swap destination and source
                      MAC, TX; shorter: DROP.
``redirect_by_port``  same L2/L3 parsing; TCP or UDP over IPv4 (fragment offset
                      0 only; IHL honoured) or IPv6 (fixed header's next header
                      only); destination port in {53: 2, 80: 3, 443: 3, 8080: 4}
                      -> REDIRECT to that ifindex; otherwise PASS.
``firewall``          same parsing; DROP if the IPv4 source is in
                      203.0.113.0/24, 198.51.100.0/25 or 10.66.0.0/16, or the
                      IPv6 source is in 2001:db8:bad::/48 or fd00:dead::/32, or
                      (TCP or UDP, IPv4 fragment offset 0) the destination port
                      is 23, 3306 or 6379; else PASS.

Where the spec is silent this model takes the reading an XDP program with
``data_end`` bounds checks would naturally have, and the generator
(``pcaps/gen.py``) produces no frame on which these readings matter:

* Bounds are the frame's length (XDP's ``data_end``), never the IPv4 total
  length or IPv6 payload length; padding after the IP packet is just bytes.
* A header is "held" only when all of its fixed part is in the frame: a VLAN
  tag needs 4 bytes, IPv4 20 (options are not needed to read the source or
  the protocol), IPv6 40, TCP 20 and UDP 8.  A frame too short for a header a
  program must read is PASS (mac_swap_tx: DROP below 14 bytes).
* The IP version nibble is not checked: the EtherType decides IPv4 vs IPv6.
* The L4 header of IPv4 starts IHL * 4 bytes into the IP header; an IHL below
  5 is malformed and yields no L4 header (port rules do not match, so PASS
  unless the firewall's source rule matches).
* A third VLAN tag is not skipped: after two tags the EtherType 0x8100/0x88a8
  is neither IPv4 nor IPv6, so PASS.  EtherTypes <= 1500 (802.3 length) are
  not decoded as LLC/SNAP: PASS.
* ``drop_udp`` reads only the IPv4 protocol field, so IHL and fragment bits do
  not matter to it.
"""

import ipaddress

import dpkt

XDP_ABORTED = 0
XDP_DROP = 1
XDP_PASS = 2
XDP_TX = 3
XDP_REDIRECT = 4

PROGRAMS = ('pass_all', 'drop_all', 'drop_udp', 'mac_swap_tx', 'redirect_by_port', 'firewall')

ETH_TYPE_IP = dpkt.ethernet.ETH_TYPE_IP          # 0x0800
ETH_TYPE_IP6 = dpkt.ethernet.ETH_TYPE_IP6        # 0x86dd
VLAN_TPIDS = (dpkt.ethernet.ETH_TYPE_8021Q, dpkt.ethernet.ETH_TYPE_8021AD)   # 0x8100, 0x88a8
MAX_VLAN_TAGS = 2
IPPROTO_TCP = dpkt.ip.IP_PROTO_TCP               # 6
IPPROTO_UDP = dpkt.ip.IP_PROTO_UDP               # 17

#: redirect_by_port's table: destination port -> egress ifindex.
REDIRECT_PORTS = {53: 2, 80: 3, 443: 3, 8080: 4}

#: firewall's deny lists.
DENY_SRC4 = tuple(ipaddress.ip_network(n) for n in
                  ('203.0.113.0/24', '198.51.100.0/25', '10.66.0.0/16'))
DENY_SRC6 = tuple(ipaddress.ip_network(n) for n in ('2001:db8:bad::/48', 'fd00:dead::/32'))
DENY_DPORTS = frozenset((23, 3306, 6379))

assert dpkt.ip.IP.__hdr_len__ == 20 and dpkt.ip6.IP6.__hdr_len__ == 40
assert dpkt.tcp.TCP.__hdr_len__ == 20 and dpkt.udp.UDP.__hdr_len__ == 8
assert dpkt.ethernet.Ethernet.__hdr_len__ == 14 and dpkt.ethernet.VLANtag8021Q.__hdr_len__ == 4


def _header(cls, buf):
    """cls's fixed header decoded by dpkt from the front of buf, or None if buf is too short.

    Only the header fields are unpacked (dpkt.Packet.unpack): none of the class's
    payload decoding or heuristics (LLC, ISL, MPLS, extension headers, IP total
    length trimming) runs, so what is read is exactly what a bounds-checked
    program can read.  ``.data`` is the rest of buf.
    """
    if len(buf) < cls.__hdr_len__:
        return None
    hdr = cls.__new__(cls)
    dpkt.Packet.__init__(hdr)
    dpkt.Packet.unpack(hdr, buf)
    return hdr


class Parsed:
    """What the shared L2/L3 parse of drop_udp, redirect_by_port and firewall found.

    ``family`` is 4, 6 or None (not IP, or the IP header is not held);
    ``ip`` the dpkt header; ``proto`` IPv4 protocol or IPv6 fixed-header next
    header; ``l4`` the bytes from the L4 header to the end of the frame, or None
    when the L4 header is not reachable (non-first IPv4 fragment, IHL < 5);
    ``vlan_tags`` the dpkt VLAN tags skipped.
    """

    __slots__ = ('eth', 'vlan_tags', 'family', 'ip', 'proto', 'l4')

    def __init__(self):
        self.eth = None
        self.vlan_tags = []
        self.family = None
        self.ip = None
        self.proto = None
        self.l4 = None

    def src_addr(self):
        """The IP source as an ipaddress object (None if not IP)."""
        if self.family == 4:
            return ipaddress.IPv4Address(self.ip.src)
        if self.family == 6:
            return ipaddress.IPv6Address(self.ip.src)
        return None

    def dport(self):
        """TCP/UDP destination port, or None if not TCP/UDP or the L4 header is not held."""
        if self.l4 is None or self.proto not in (IPPROTO_TCP, IPPROTO_UDP):
            return None
        l4 = _header(dpkt.tcp.TCP if self.proto == IPPROTO_TCP else dpkt.udp.UDP, self.l4)
        return None if l4 is None else l4.dport


def parse(frame):
    """Run the programs' common Ethernet / VLAN / IPv4 / IPv6 parse over frame."""
    p = Parsed()
    frame = bytes(frame)
    eth = _header(dpkt.ethernet.Ethernet, frame)
    if eth is None:
        return p
    p.eth = eth
    rest, etype = eth.data, eth.type
    for _ in range(MAX_VLAN_TAGS):
        if etype not in VLAN_TPIDS:
            break
        tag = _header(dpkt.ethernet.VLANtag8021Q, rest)
        if tag is None:
            return p
        p.vlan_tags.append(tag)
        rest, etype = rest[tag.__hdr_len__:], tag.type
    if etype == ETH_TYPE_IP:
        ip = _header(dpkt.ip.IP, rest)
        if ip is None:
            return p
        p.family, p.ip, p.proto = 4, ip, ip.p
        if ip.offset == 0 and ip.hl >= 5:
            p.l4 = rest[ip.hl * 4:]
    elif etype == ETH_TYPE_IP6:
        ip6 = _header(dpkt.ip6.IP6, rest)
        if ip6 is None:
            return p
        p.family, p.ip, p.proto = 6, ip6, ip6.nxt
        p.l4 = ip6.data
    return p


def _drop_udp(frame):
    p = parse(frame)
    if p.family is not None and p.proto == IPPROTO_UDP:
        return XDP_DROP, 0
    return XDP_PASS, 0


def _redirect_by_port(frame):
    ifindex = REDIRECT_PORTS.get(parse(frame).dport())
    if ifindex is not None:
        return XDP_REDIRECT, ifindex
    return XDP_PASS, 0


def _firewall(frame):
    p = parse(frame)
    if p.family is None:
        return XDP_PASS, 0
    src = p.src_addr()
    if any(src in net for net in (DENY_SRC4 if p.family == 4 else DENY_SRC6)):
        return XDP_DROP, 0
    if p.dport() in DENY_DPORTS:
        return XDP_DROP, 0
    return XDP_PASS, 0


def _mac_swap(frame):
    eth = _header(dpkt.ethernet.Ethernet, frame)
    if eth is None:
        return XDP_DROP, 0, frame
    eth.dst, eth.src = eth.src, eth.dst
    return XDP_TX, 0, dpkt.Packet.pack_hdr(eth) + eth.data


def expected(program_name, frame_bytes):
    """(action, redirect_ifindex, out_bytes) for program_name run on one frame."""
    frame = bytes(frame_bytes)
    if program_name == 'pass_all':
        return XDP_PASS, 0, frame
    if program_name == 'drop_all':
        return XDP_DROP, 0, frame
    if program_name == 'mac_swap_tx':
        return _mac_swap(frame)
    if program_name == 'drop_udp':
        action, ifindex = _drop_udp(frame)
    elif program_name == 'redirect_by_port':
        action, ifindex = _redirect_by_port(frame)
    elif program_name == 'firewall':
        action, ifindex = _firewall(frame)
    else:
        raise ValueError('unknown program %r (known: %s)' % (program_name, ', '.join(PROGRAMS)))
    return action, ifindex, frame


def frames_of_capture(pcap_path):
    """Yield the frames of a pcap file, in order, read with dpkt.pcap.Reader."""
    with open(pcap_path, 'rb') as fh:
        for _, buf in dpkt.pcap.Reader(fh):
            yield bytes(buf)


def verdicts_for_capture(program_name, pcap_path):
    """[expected(program_name, frame) for each frame of the pcap file at pcap_path]."""
    if program_name not in PROGRAMS:
        raise ValueError('unknown program %r (known: %s)' % (program_name, ', '.join(PROGRAMS)))
    return [expected(program_name, frame) for frame in frames_of_capture(pcap_path)]
