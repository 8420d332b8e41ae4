"""Checksum helpers for programs (re-exported kernels: kernels/csum.py).

Values are host integers of network-order fields (``load_be16`` / ``load_be32``);
errors are negative (-22 EINVAL, -14 EFAULT with the packet aborted).
"""

from .kernels.csum import (IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,  # noqa: F401
                           IPPROTO_UDP, csum_add, csum_diff_packet, csum_diff_words,
                           csum_fold, csum_partial, csum_replace2, csum_replace4, csum_sub,
                           ipv4_csum, ipv4_csum_set, l4_csum_ipv4, l4_csum_ipv6)
