"""Parsing helpers and byte-order loads for programs (re-exported kernels)."""

from .kernels.parse import (ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IP,  # noqa: F401
                            ETH_P_IPV6, VLAN_MAX_DEPTH, load_be16, load_be32, parse_ethhdr,
                            parse_ip6hdr, parse_iphdr)
