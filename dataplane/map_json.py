"""Map keys and values as JSON-able Python and back: structured fields as
objects, ``*addr*`` fields as addresses, ``*mac*`` fields as MAC strings."""

import ipaddress


from .errors import MapError


def to_python(dtype, item):
    """A numpy scalar or record as JSON-able Python (structured -> dict, integers,
    ``*addr*`` fields as IP address strings, ``*mac*`` fields as MAC strings)."""
    if dtype.names is None:
        return item.item() if hasattr(item, "item") else item
    raw = {n: item[n].item() for n in dtype.names}
    out = {}
    for n, v in raw.items():
        base, size = n[:-3], dtype.fields[n][0].itemsize
        if n.endswith("_hi") and "addr" in base and base + "_lo" in raw:
            ip = ipaddress.IPv6Address((v << 64) | raw[base + "_lo"])
            out[base] = str(ip.ipv4_mapped or ip)
        elif n.endswith("_lo") and "addr" in n[:-3] and n[:-3] + "_hi" in raw:
            continue  # printed with its _hi half
        elif "addr" in n and size == 4:
            out[n] = str(ipaddress.IPv4Address(v & 0xFFFFFFFF))
        elif "mac" in n and size == 8:
            out[n] = ":".join(f"{(v >> (8 * i)) & 0xFF:02x}" for i in range(5, -1, -1))
        else:
            out[n] = v
    return out


def from_python(dtype, obj, map_name):
    """Inverse of to_python: a decoded key or value back to an int or a tuple."""
    if dtype.names is None:
        if not isinstance(obj, int):
            raise MapError(map_name, f"expected an integer for {dtype}, not {obj!r}")
        return obj
    if not isinstance(obj, dict):
        raise MapError(map_name, f"expected an object with fields {list(dtype.names)}, "
                                 f"not {obj!r}")
    out, used = [], set()
    for n in dtype.names:
        base = n[:-3]
        try:
            if n.endswith(("_hi", "_lo")) and base in obj:
                ip = ipaddress.ip_address(obj[base])
                v = int(ip) if ip.version == 6 else (0xFFFF << 32) | int(ip)
                out.append(v >> 64 if n.endswith("_hi") else v & (2**64 - 1))
                used.add(base)
            elif isinstance(obj.get(n), str) and "addr" in n:
                out.append(int(ipaddress.IPv4Address(obj[n])))
                used.add(n)
            elif isinstance(obj.get(n), str) and "mac" in n:
                out.append(int(obj[n].replace(":", ""), 16))
                used.add(n)
            else:
                # no float, as for a scalar: int() cut 1.7 to 1 and raised OverflowError on 1e400
                if isinstance(obj.get(n), float):
                    raise ValueError(f"expected an integer, not {obj[n]!r}")
                out.append(int(obj[n]))
                used.add(n)
        except (KeyError, ValueError, TypeError) as exc:
            raise MapError(map_name, f"field '{n}' of {obj!r}: {exc}") from None
    extra = set(obj) - used
    if extra:
        raise MapError(map_name, f"unknown fields {sorted(extra)} (fields: {list(dtype.names)})")
    return tuple(out)
