"""Key layout of hash-table maps: integer fields packed into 8-byte words, the
same way by programs (``pack_source``, compiled) and the control plane."""

import re

import numpy as np

from .errors import MapError


def field_list(dtype, what, map_name):
    """[(name, offset, size, big_endian)] of a key/value dtype's integer fields."""
    if dtype.names is None:
        fields = [("", 0, dtype)]
    else:
        fields = [(n, dtype.fields[n][1], dtype.fields[n][0]) for n in dtype.names]
    out = []
    for name, off, ft in fields:
        if ft.kind not in "iub" or ft.itemsize not in (1, 2, 4, 8) or ft.shape:
            which = f"{what} field '{name}' ({ft})" if name else f"{what} type {ft}"
            raise MapError(map_name, f"{which} must be an integer of 1, 2, 4 or 8 bytes")
        out.append((name, off, ft.itemsize, ft.byteorder == ">" or
                    (ft.byteorder == "=" and np.little_endian is False)))
    return out


def key_words(dtype):
    """How many 8-byte words hold a key of this dtype."""
    return max(1, (dtype.itemsize + 7) // 8)


def row_words(dtype, value_dtype=None):
    """Words of a hash entry's row (hash, key, then the value when it is kept
    inline), padded to half a 64-byte line when it fits in one (two rows a
    line, none across two: a table of such rows is half as many lines to
    cache; l4lb's IPv4 connections), else to whole lines, so that the compare
    of a key, and a value that fits beside it, touch one line."""
    vwords = 0 if value_dtype is None else (value_dtype.itemsize + 7) // 8
    words = 1 + key_words(dtype) + vwords
    return 4 if words <= 4 else (words + 7) // 8 * 8


_BSWAP = {
    2: "(((v & 0xFF) << 8) | (v >> 8))",
    4: "(((v & 0xFF) << 24) | ((v & 0xFF00) << 8) | ((v >> 8) & 0xFF00) | (v >> 24))",
    8: "(((v & 0xFF) << 56) | ((v & 0xFF00) << 40) | ((v & 0xFF0000) << 24) "
       "| ((v & 0xFF000000) << 8) | ((v >> 8) & 0xFF000000) | ((v >> 24) & 0xFF0000) "
       "| ((v >> 40) & 0xFF00) | (v >> 56))",
}


def pack_source(dtype, fname="pack"):
    """Python source of ``fname(key) -> tuple of uint64 words`` for keys of
    ``dtype``: the same bytes numpy stores for the key, read as little-endian
    words (so a program's packed key equals the control plane's). Each field is
    masked, byte-swapped if big-endian, and shifted into one or two words."""
    fields = field_list(dtype, "key", "?")
    nw = key_words(dtype)
    lines, parts = [f"def {fname}(key):", "    u = _dp_np.uint64"], [[] for _ in range(nw)]
    for k, (_, off, size, big) in enumerate(fields):
        src = "key" if dtype.names is None else f"key[{k}]"
        mask = "" if size == 8 else f" & u({(1 << (8 * size)) - 1})"
        lines.append(f"    v = u(_dp_np.int64({src})){mask}")
        if big and size > 1:  # memory holds the most significant byte first
            lines.append("    v = " + re.sub(r"(\b\d+\b|0x[0-9A-F]+)", r"u(\1)", _BSWAP[size]))
        w, b = divmod(off, 8)
        lines.append(f"    f{k} = v")
        parts[w].append(f"(f{k} << u({8 * b}))" if b else f"f{k}")
        if b + size > 8:  # the field runs into the next word
            parts[w + 1].append(f"(f{k} >> u({8 * (8 - b)}))")
    words = [" | ".join(p) if p else "u(0)" for p in parts]
    lines.append(f"    return ({', '.join(words)},)")
    return "\n".join(lines) + "\n"


def key_bytes(dtype, key, map_name):
    """A key (int or tuple) as the uint64 words the table stores."""
    try:  # zeroed first: a record's padding bytes are part of the key the table compares
        rec = np.zeros(1, dtype)
        rec[0] = key if dtype.names is None else tuple(key)
    except (TypeError, ValueError, OverflowError) as exc:
        raise MapError(map_name, f"bad key {key!r} for {dtype}: {exc}") from None
    raw = np.zeros(key_words(dtype) * 8, np.uint8)
    raw[:dtype.itemsize] = rec.view(np.uint8)
    return raw.view("<u8")
