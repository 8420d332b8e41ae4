"""Parsing helpers and byte-order loads/stores for programs (re-exported kernels).

See dataplane/kernels/parse.py for what each returns. Everything here may be
imported by a program: the helpers (marked ``@api``) and the constants.
"""

from .kernels.parse import (  # noqa: F401
    ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, ICMP_DEST_UNREACH,
    ICMP_ECHO, ICMP_ECHOREPLY, ICMP_TIME_EXCEEDED, ICMPV6_DEST_UNREACH, ICMPV6_ECHO_REPLY,
    ICMPV6_ECHO_REQUEST, ICMPV6_PKT_TOOBIG, ICMPV6_TIME_EXCEED, IP_DF, IP_MF, IP_OFFSET,
    IPPROTO_AH, IPPROTO_DSTOPTS, IPPROTO_ESP, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_ICMP,
    IPPROTO_ICMPV6, IPPROTO_MH, IPPROTO_NONE, IPPROTO_ROUTING, IPPROTO_TCP, IPPROTO_UDP,
    IPV6_EXTHDR_MAX, NDISC_NEIGHBOUR_ADVERTISEMENT, NDISC_NEIGHBOUR_SOLICITATION, TCP_ACK,
    TCP_CWR, TCP_ECE, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG, VLAN_HLEN, VLAN_MAX_DEPTH,
    VLAN_VID_MASK, header_fits, load_be16, load_be32, load_be64, parse_ethhdr, parse_ethhdr_vlan,
    parse_icmp6hdr, parse_icmphdr, parse_ip6hdr, parse_ip6hdr_ext, parse_iphdr,
    parse_iphdr_fields, parse_l4, parse_tcphdr, parse_udphdr, store_be16, store_be32,
    store_be64)
