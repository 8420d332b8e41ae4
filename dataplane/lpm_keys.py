"""LPM trie keys (``struct bpf_lpm_trie_key``): prefix forms from Python
("10.0.0.0/8", networks, (prefixlen, address)) and their text."""

import ipaddress

import numpy as np

from .errors import MapError


def lpm_width(dtype, map_name):
    """Bits of an LPM key's data (``struct bpf_lpm_trie_key``: prefixlen, data)."""
    names = dtype.names or ()
    why = (f"lpm_trie keys are a ('prefixlen', '<u4') field and one data field of 1 to 16 "
           f"bytes (LPM_V4, LPM_V6), not {dtype}")
    if len(names) != 2 or names[0] != "prefixlen":
        raise MapError(map_name, why)
    pt, poff = dtype.fields["prefixlen"][:2]
    dt, doff = dtype.fields[names[1]][:2]
    base = dt.subdtype[0] if dt.subdtype else dt
    if pt.kind != "u" or pt.itemsize != 4 or pt.byteorder == ">" or poff != 0 or doff != 4 \
            or dtype.itemsize != 4 + dt.itemsize or not 1 <= dt.itemsize <= 16 \
            or base.kind != "u" or (base.itemsize > 1 and dt.subdtype) \
            or (base.itemsize > 1 and base.byteorder != ">"):
        raise MapError(map_name, why)
    return 8 * dt.itemsize


def lpm_split(value, width):
    """A ``width``-bit address as the left-aligned words (hi, lo) the kernels use."""
    if width <= 64:
        return value << (64 - width), 0
    v = value << (128 - width)
    return v >> 64, v & 0xFFFFFFFFFFFFFFFF


def lpm_join(hi, lo, width):
    if width <= 64:
        return hi >> (64 - width)
    return ((hi << 64) | lo) >> (128 - width)


def lpm_address(text, width):
    if width == 32:
        return int(ipaddress.IPv4Address(text))
    if width == 128:
        return int(ipaddress.IPv6Address(text))
    return int(text, 16)


def lpm_key(key, width, map_name):
    """A Python LPM key (see the module docstring) as (prefixlen, address int)."""
    def bad(why):
        raise MapError(map_name, f"bad key {key!r} for a {width}-bit lpm_trie: {why}")
    try:
        if isinstance(key, str):
            addr, sep, plen = key.strip().partition("/")
            plen, value = (int(plen) if sep else width), lpm_address(addr, width)
        elif isinstance(key, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            if key.max_prefixlen != width:
                bad(f"an IPv{key.version} network")
            plen, value = key.prefixlen, int(key.network_address)
        elif isinstance(key, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            if key.max_prefixlen != width:
                bad(f"an IPv{key.version} address")
            plen, value = width, int(key)
        elif isinstance(key, np.void) and key.dtype.names and key.dtype.names[0] == "prefixlen":
            raw = key.tobytes()
            plen, value = int(key["prefixlen"]), int.from_bytes(raw[4:4 + width // 8], "big")
        elif isinstance(key, tuple) and len(key) == 2:
            plen, addr = int(key[0]), key[1]
            if isinstance(addr, str):
                value = lpm_address(addr, width)
            elif isinstance(addr, (bytes, bytearray, np.ndarray, list)):
                raw = bytes(addr) if isinstance(addr, (bytes, bytearray)) else \
                    np.asarray(addr, np.uint8).reshape(-1).tobytes()
                if len(raw) != width // 8:
                    bad(f"{len(raw)} data bytes for {width // 8}")
                value = int.from_bytes(raw, "big")
            else:
                value = int(addr)
        elif isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            plen, value = width, int(key)
        else:
            bad("give 'a.b.c.d/len', an address, or (prefixlen, address)")
    except (ValueError, TypeError, ipaddress.AddressValueError) as exc:
        bad(str(exc))
    if not 0 <= value < (1 << width):
        bad(f"the address does not fit {width} bits")
    if plen < 0 or plen >= 1 << 32:
        bad("prefixlen is a __u32")
    return plen, value


def lpm_key_text(plen, value, width):
    """A prefix as ``bpftool``-like text: ``10.0.0.0/8``, ``2001:db8::/32``, ``0x0a/8``."""
    if width == 32:
        return f"{ipaddress.IPv4Address(value)}/{plen}"
    if width == 128:
        return f"{ipaddress.IPv6Address(value)}/{plen}"
    return f"0x{value:0{width // 4}x}/{plen}"
