"""BPF maps: numpy storage shared, zero copy, by compiled programs and Python.

A map is declared next to the program that uses it, with the kernel's
vocabulary, and is the live object too (cilium/ebpf's MapSpec and Map in one:
a program file's maps are created when the file is loaded)::

    FLOW = np.dtype([("saddr", ">u4"), ("daddr", ">u4"), ("port", ">u2")])
    flows = Map("flows", BPF_MAP_TYPE_LRU_HASH, key=FLOW, value=np.uint64,
                max_entries=65536)

Keys are integers, or tuples of integers for a structured key (one per field,
in order). Values are a numpy scalar type or a structured dtype of scalar
fields. "Per CPU" means per worker (``config.WORKERS`` slots per value).

From a program (kernels/map_api.py): ``bpf_map_lookup_elem(flows, key)`` gives
the value in place (a record for a structured value: ``v.packets += 1``; a
one-element array for a scalar: ``v[0] += 1``) or None; ``bpf_map_update_elem``
and ``bpf_map_delete_elem`` return 0 or the kernel's negative errno. From
Python: ``lookup``, ``update``, ``delete``, ``items``, ``len``, ``clear`` and
numpy batch ``update_batch`` / ``dump``; errors raise MapError naming the map.

Storage: every array of a map is a view of one buffer (``Map.buffer``), so a
map can later be backed by a file and shared with another process.
"""

import errno
import ipaddress
import re

import numpy as np

from . import config
from .errors import DataplaneError
from .jit import api, lazy
from .kernels import htab

BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PROG_ARRAY = 3
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_LPM_TRIE = 11
BPF_MAP_TYPE_ARRAY_OF_MAPS = 12
BPF_MAP_TYPE_HASH_OF_MAPS = 13
BPF_MAP_TYPE_DEVMAP = 14
BPF_MAP_TYPE_DEVMAP_HASH = 25
BPF_MAP_TYPE_RINGBUF = 27

BPF_ANY, BPF_NOEXIST, BPF_EXIST = htab.BPF_ANY, htab.BPF_NOEXIST, htab.BPF_EXIST

MAP_TYPE_NAMES = {
    BPF_MAP_TYPE_HASH: "hash", BPF_MAP_TYPE_ARRAY: "array",
    BPF_MAP_TYPE_PROG_ARRAY: "prog_array", BPF_MAP_TYPE_PERCPU_HASH: "percpu_hash",
    BPF_MAP_TYPE_PERCPU_ARRAY: "percpu_array", BPF_MAP_TYPE_LRU_HASH: "lru_hash",
    BPF_MAP_TYPE_LRU_PERCPU_HASH: "lru_percpu_hash", BPF_MAP_TYPE_LPM_TRIE: "lpm_trie",
    BPF_MAP_TYPE_ARRAY_OF_MAPS: "array_of_maps", BPF_MAP_TYPE_HASH_OF_MAPS: "hash_of_maps",
    BPF_MAP_TYPE_DEVMAP: "devmap", BPF_MAP_TYPE_DEVMAP_HASH: "devmap_hash",
    BPF_MAP_TYPE_RINGBUF: "ringbuf",
}
_HASHES = {BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_LRU_HASH,
           BPF_MAP_TYPE_LRU_PERCPU_HASH}
_ARRAYS = {BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY}
_PERCPU = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}
_LRU = {BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH}
SUPPORTED = _HASHES | _ARRAYS


class MapError(DataplaneError):
    """A map operation the kernel would refuse (``errno`` holds the error number)."""

    def __init__(self, map_name, message, err=None):
        super().__init__(f"map '{map_name}': {message}")
        self.errno = err


# ---------------------------------------------------------------- key layout

def _field_list(dtype, what, map_name):
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


def row_words(dtype):
    """Words of a hash entry's row (hash + key), padded to whole 64-byte lines so
    the compare of a key touches one line when it can (keys up to 56 bytes)."""
    return (1 + key_words(dtype) + 7) // 8 * 8


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
    fields = _field_list(dtype, "key", "?")
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


def _key_bytes(dtype, key, map_name):
    """A key (int or tuple) as the uint64 words the table stores."""
    try:
        rec = np.array([key if dtype.names is None else tuple(key)], dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise MapError(map_name, f"bad key {key!r} for {dtype}: {exc}") from None
    raw = np.zeros(key_words(dtype) * 8, np.uint8)
    raw[:dtype.itemsize] = rec.view(np.uint8)
    return raw.view("<u8")


# ---------------------------------------------------------------- decoding

def _to_python(dtype, item):
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


# ---------------------------------------------------------------- the map

class Map:
    """A BPF map (the kernel's ``struct bpf_map``) with numpy storage.

    ``name`` must be a Python identifier; ``type`` a BPF_MAP_TYPE_*; ``key`` and
    ``value`` numpy dtypes (scalar integers or structured records of them);
    ``max_entries`` the capacity. ARRAY maps take a 4-byte integer key, as in
    the kernel.
    """

    def __init__(self, name, type, key, value, max_entries):
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise MapError(str(name), "map names are identifiers (letters, digits, _)")
        self.name = name
        if type not in MAP_TYPE_NAMES:
            raise MapError(name, f"unknown map type {type}")
        if type not in SUPPORTED:
            raise MapError(name, f"map type {MAP_TYPE_NAMES[type]} is not supported yet")
        self.type = type
        self.key_dtype = np.dtype(key)
        self.value_dtype = np.dtype(value)
        self.max_entries = int(max_entries)
        if self.max_entries < 1:
            raise MapError(name, f"max_entries must be at least 1, not {max_entries}")
        if type in _ARRAYS and (self.key_dtype.names or self.key_dtype.itemsize != 4):
            raise MapError(name, f"array maps take a 4-byte integer key, not {self.key_dtype}")
        self._key_fields = _field_list(self.key_dtype, "key", name)
        _field_list(self.value_dtype, "value", name)
        self.ncpu = config.WORKERS if type in _PERCPU else 1
        self._allocate()

    @property
    def type_name(self):
        return MAP_TYPE_NAMES[self.type]

    @property
    def is_hash(self):
        return self.type in _HASHES

    @property
    def lru(self):
        return self.type in _LRU

    @property
    def percpu(self):
        return self.type in _PERCPU

    def _allocate(self):
        n = self.max_entries
        parts = [("values", self.value_dtype.itemsize * n * self.ncpu)]
        if self.is_hash:
            nb = 1 << max(1, (n - 1).bit_length())
            parts = [("hdr", 8 * htab.HDR_SIZE), ("buckets", 4 * nb), ("chain", 4 * n),
                     ("prev", 4 * n), ("next", 4 * n), ("free", 4 * n),
                     ("keys", 8 * n * row_words(self.key_dtype))] + parts
        offsets, size = {}, 0
        for part, nbytes in parts:
            size = (size + 63) // 64 * 64
            offsets[part] = (size, nbytes)
            size += nbytes
        self.buffer = np.zeros(max(size, 64), np.uint8)
        view = {p: self.buffer[o:o + nb_] for p, (o, nb_) in offsets.items()}
        self.values = view["values"].view(self.value_dtype).reshape(self.ncpu, n)
        if self.is_hash:
            self.hdr = view["hdr"].view(np.int64)
            self.buckets = view["buckets"].view(np.int32)
            self.chain = view["chain"].view(np.int32)
            self.prev = view["prev"].view(np.int32)
            self.next = view["next"].view(np.int32)
            self.free = view["free"].view(np.int32)
            # word 0 of each row is the entry's hash (kernels/htab.py)
            self.keys = view["keys"].view(np.uint64).reshape(n, row_words(self.key_dtype))
            htab.htab_reset(self.hdr, self.buckets, self.chain, self.prev, self.next, self.free)

    def program_arrays(self):
        """The arrays a program's loop receives for this map, in handle order."""
        flat = self.values.reshape(-1).view(np.uint8)
        if self.is_hash:
            return (self.hdr, self.buckets, self.chain, self.prev, self.next, self.free,
                    self.keys, flat)
        return (flat,)

    # -- control plane ----------------------------------------------------
    def _table(self):
        return (self.hdr, self.buckets, self.chain, self.prev, self.next, self.free, self.keys)

    def _entry(self, key):
        """Entry number (the value slot) of ``key``, or -1."""
        if not self.is_hash:
            index = self._index(key)
            return index if 0 <= index < self.max_entries else -1
        return int(htab.htab_lookup_py(self.buckets, self.chain, self.keys,
                                       _key_bytes(self.key_dtype, key, self.name)))

    def _index(self, key):
        try:
            return int(key)
        except (TypeError, ValueError):
            raise MapError(self.name, f"bad key {key!r}: an array map's key is an index") \
                from None

    def _fail(self, err, what):
        names = {errno.ENOENT: "no such key", errno.EEXIST: "key exists",
                 errno.E2BIG: f"map is full ({self.max_entries} entries)",
                 errno.EINVAL: "invalid argument"}
        raise MapError(self.name, f"{what}: {names.get(err, errno.errorcode.get(err, err))} "
                                  f"(-{errno.errorcode.get(err, err)})", err)

    def _decode_value(self, e):
        if self.percpu:
            return [_to_python(self.value_dtype, self.values[c, e]) for c in range(self.ncpu)]
        return _to_python(self.value_dtype, self.values[0, e])

    def lookup(self, key):
        """The value of ``key`` (per-CPU maps: a list, one per worker), or None."""
        e = self._entry(key)
        return None if e < 0 else self._decode_value(e)

    def __contains__(self, key):
        return self._entry(key) >= 0

    def update(self, key, value, flags=BPF_ANY):
        """bpf_map_update_elem from Python; raises MapError with the kernel's errno.

        A per-CPU map's value is one value for every worker, or a list of them.
        """
        if self.is_hash:
            e = int(htab.htab_insert_py(*self._table(),
                                        _key_bytes(self.key_dtype, key, self.name),
                                        int(flags), self.lru))
            if e < 0:
                self._fail(-e, f"update {key!r}")
        else:
            e = self._index(key)
            if flags == BPF_NOEXIST:
                self._fail(errno.EEXIST, f"update {key!r}")
            if not 0 <= e < self.max_entries:
                self._fail(errno.E2BIG, f"update {key!r}")
        values = value if (self.percpu and isinstance(value, list)) else [value] * self.ncpu
        if len(values) != self.ncpu:
            raise MapError(self.name, f"{len(values)} per-CPU values for {self.ncpu} workers")
        for c, v in enumerate(values):
            try:
                self.values[c, e] = tuple(v) if self.value_dtype.names else v
            except (TypeError, ValueError, OverflowError) as exc:
                raise MapError(self.name, f"bad value {v!r} for {self.value_dtype}: {exc}") \
                    from None

    def delete(self, key):
        """bpf_map_delete_elem from Python (array maps refuse it, as the kernel does)."""
        if not self.is_hash:
            self._fail(errno.EINVAL, f"delete {key!r}")
        r = int(htab.htab_delete_py(*self._table(),
                                    _key_bytes(self.key_dtype, key, self.name), self.lru))
        if r < 0:
            self._fail(-r, f"delete {key!r}")

    def _used(self):
        if not self.is_hash:
            return np.arange(self.max_entries)
        out = np.zeros(self.max_entries, np.int64)
        n = htab.htab_entries(self.hdr, self.prev, self.next, self.free, out)
        return out[:n]

    def _decode_key(self, e):
        if not self.is_hash:
            return int(e)
        raw = self.keys[e, 1:].view(np.uint8)[:self.key_dtype.itemsize].copy()
        return _to_python(self.key_dtype, raw.view(self.key_dtype)[0])

    def items(self):
        """[(key, value)] decoded by the dtypes, like ``bpftool map dump``."""
        return [(self._decode_key(e), self._decode_value(e)) for e in self._used()]

    def __len__(self):
        return int(self.hdr[htab.H_COUNT]) if self.is_hash else self.max_entries

    def clear(self):
        """Delete every entry (array maps: zero every value)."""
        self.values[...] = 0
        if self.is_hash:
            htab.htab_reset(self.hdr, self.buckets, self.chain, self.prev, self.next, self.free)

    def dump(self):
        """(keys, values) as numpy arrays of the key and value dtypes (values of a
        per-CPU map: shape (n, workers))."""
        used = self._used()
        if self.is_hash:
            raw = self.keys[used, 1:].view(np.uint8)[:, :self.key_dtype.itemsize]
            keys = np.ascontiguousarray(raw).view(self.key_dtype).reshape(-1)
        else:
            keys = used.astype(self.key_dtype)
        values = self.values[:, used].T.copy()
        return keys, (values if self.percpu else values[:, 0])

    def update_batch(self, keys, values, flags=BPF_ANY):
        """Update many entries from numpy arrays of the key and value dtypes."""
        keys, values = np.asarray(keys), np.asarray(values)
        if len(keys) != len(values):
            raise MapError(self.name, f"{len(keys)} keys for {len(values)} values")
        for k, v in zip(keys.tolist(), values.tolist()):
            self.update(k, v, flags)

    def to_json(self):
        """[{"key": ..., "value": ...}] decoded by the dtypes."""
        return [{"key": k, "value": v} for k, v in self.items()]

    def __repr__(self):
        return (f"Map({self.name!r}, {self.type_name}, key={self.key_dtype}, "
                f"value={self.value_dtype}, max_entries={self.max_entries})")


# ---------------------------------------------------------------- program side
# The program-side operations are numba overloads (kernels/map_api.py),
# imported only when a program is compiled.

bpf_map_lookup_elem = api(lazy("dataplane.kernels.map_api", "bpf_map_lookup_elem"))
bpf_map_update_elem = api(lazy("dataplane.kernels.map_api", "bpf_map_update_elem"))
bpf_map_delete_elem = api(lazy("dataplane.kernels.map_api", "bpf_map_delete_elem"))
