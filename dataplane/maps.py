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

LPM tries (BPF_MAP_TYPE_LPM_TRIE, kernel/bpf/lpm_trie.c semantics)::

    acl = Map("acl", BPF_MAP_TYPE_LPM_TRIE, key=LPM_V4, value=np.uint32,
              max_entries=10000)
    acl.update("10.0.0.0/8", 1)
    acl.lookup("10.1.2.3")          # the longest stored prefix's value, or None

- Key: the kernel's ``struct bpf_lpm_trie_key { __u32 prefixlen; __u8
  data[]; }``: ``LPM_V4`` (4 data bytes), ``LPM_V6`` (16), or any dtype of a
  ``("prefixlen", "<u4")`` field followed by one data field of 1 to 16 bytes
  (a ``u1`` array or a big-endian unsigned integer), data in network order.
  The key's width W is 8 * data bytes; a prefixlen above W is -EINVAL.
- From Python a key is a string, ``"10.0.0.0/8"``, ``"2001:db8::/32"`` (host
  bits are ignored, as the kernel ignores data past prefixlen; no ``/len``
  means the full width), an ``ipaddress`` network or address, an address as an
  int (full width), a ``(prefixlen, address)`` tuple (the address an int, a
  string or W/8 bytes), or a record of the key dtype (``dump()`` gives them).
  Widths other than 32 and 128 bits write addresses as ``0x<hex>``.
  ``update`` / ``delete`` work on the exact prefix (BPF_ANY, BPF_NOEXIST ->
  -EEXIST, BPF_EXIST -> -ENOENT, full -> -ENOSPC, delete of a missing prefix
  -> -ENOENT); ``lookup`` is the kernel's: the value of the longest stored
  prefix of length <= the key's prefixlen that matches the key's first bits
  (a bare address: the longest match for that address). ``items()``,
  ``to_json()`` and ``--dump-maps`` give keys as ``"10.0.0.0/8"`` strings.
- From a program the lookup key is the address, the full length implied:
  W <= 64 an int (IPv4: ``load_be32(pkt, off + 12)``), W > 64 a tuple of the
  data's first 8 bytes and the rest as big-endian ints (IPv6: ``(load_be64(pkt,
  off + 8), load_be64(pkt, off + 16))``). The kernel's full key is a tuple
  with the prefixlen first, ``(prefixlen, addr)`` or ``(prefixlen, hi, lo)``:
  lookups take either; ``bpf_map_update_elem`` / ``bpf_map_delete_elem`` take
  the full key and follow the kernel (0 or -errno), at Python's update cost.
- Storage (kernels/lpm.py): the exact prefixes in a hash table (entry =
  value slot, as in hash maps) and, for the longest match, a sorted table of
  the address intervals on which the match is constant (at most 2n + 1 for n
  prefixes), found through a direct index on the address's first 16 bits and,
  in buckets crowded with prefixes, path-compressed 256-way index nodes: a
  lookup is a few dependent loads (8-18 ns at 10,000 prefixes, IPv4 or IPv6,
  spread or clustered). Updates cost O(intervals + 65536): tens of
  microseconds at 10,000 prefixes. A lookup with a prefixlen below W (from
  Python, or a program's full key) probes the hash table once per length.
  Memory: about 300 bytes per max_entries (10,000: 3.2 MB, index included).
- Updates are not atomic against a batch running at the same time (the
  kernel's RCU is not modelled); make them between batches, as for hash maps.
"""

import errno
import re
from functools import partial

import numpy as np

from . import config
from .action import BPF_F_BROADCAST, BPF_F_EXCLUDE_INGRESS  # noqa: F401 (bpf_redirect_map's)
from .errors import MapError
from .io.batch import alloc_buffer
from .jit import api, kind_of, lazy
from .kernels import htab, lpm, lru_htab, queue_stack as qs
from .lpm_keys import (lpm_join as _lpm_join, lpm_key, lpm_key_text, lpm_split as _lpm_split,
                       lpm_width as _lpm_width)
from .map_json import from_python as _from_python, to_python as _to_python
from .map_layout import (field_list as _field_list, key_bytes as _key_bytes,
                         key_words, row_words)

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
BPF_MAP_TYPE_QUEUE = 22
BPF_MAP_TYPE_STACK = 23
BPF_MAP_TYPE_DEVMAP_HASH = 25
BPF_MAP_TYPE_RINGBUF = 27

BPF_ANY, BPF_NOEXIST, BPF_EXIST = htab.BPF_ANY, htab.BPF_NOEXIST, htab.BPF_EXIST
BPF_F_LOCK = htab.BPF_F_LOCK

MAP_TYPE_NAMES = {
    BPF_MAP_TYPE_HASH: "hash", BPF_MAP_TYPE_ARRAY: "array",
    BPF_MAP_TYPE_PROG_ARRAY: "prog_array", BPF_MAP_TYPE_PERCPU_HASH: "percpu_hash",
    BPF_MAP_TYPE_PERCPU_ARRAY: "percpu_array", BPF_MAP_TYPE_LRU_HASH: "lru_hash",
    BPF_MAP_TYPE_LRU_PERCPU_HASH: "lru_percpu_hash", BPF_MAP_TYPE_LPM_TRIE: "lpm_trie",
    BPF_MAP_TYPE_ARRAY_OF_MAPS: "array_of_maps", BPF_MAP_TYPE_HASH_OF_MAPS: "hash_of_maps",
    BPF_MAP_TYPE_DEVMAP: "devmap", BPF_MAP_TYPE_DEVMAP_HASH: "devmap_hash",
    BPF_MAP_TYPE_RINGBUF: "ringbuf", BPF_MAP_TYPE_QUEUE: "queue", BPF_MAP_TYPE_STACK: "stack",
}
_DEVMAPS = {BPF_MAP_TYPE_DEVMAP, BPF_MAP_TYPE_DEVMAP_HASH}
_HASHES = {BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_LRU_HASH,
           BPF_MAP_TYPE_LRU_PERCPU_HASH, BPF_MAP_TYPE_DEVMAP_HASH, BPF_MAP_TYPE_HASH_OF_MAPS}
_ARRAYS = {BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_DEVMAP,
           BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_PROG_ARRAY}
#: Array maps whose value 0 is an empty slot (lookups miss, delete empties it).
_SLOTTED = (BPF_MAP_TYPE_DEVMAP, BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_PROG_ARRAY)
_PERCPU = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH}
_LRU = {BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH}
_INLINE_VALUES = {BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH}
_MAP_IN_MAP = {BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_HASH_OF_MAPS}
#: bpf_attr's max_entries is a __u32; a hash table's (and a trie's) entry
#: numbers here are int32, and its rows keep 32 bits of the hash, which must
#: pick one of its 4 << ceil(log2 n) buckets (the kernel's htab refuses far
#: fewer: its bucket array's size in bytes must fit a u32).
MAX_ENTRIES_LIMIT = 0xFFFFFFFF
HASH_MAX_ENTRIES = 1 << 30
#: Checks of a pinned table's links (Map.check_links) while a running program
#: changes it (its count, free stack, hand or lock moved) before giving up.
CHECK_TRIES = 5
SUPPORTED = _HASHES | _ARRAYS | _MAP_IN_MAP | {BPF_MAP_TYPE_LPM_TRIE}
SUPPORTED |= {BPF_MAP_TYPE_RINGBUF}  # a RingBuf (below): Map(...) of this type makes one
#: Maps of values without keys, popped in order (a QueueStack, below).
QUEUE_STACK = {BPF_MAP_TYPE_QUEUE, BPF_MAP_TYPE_STACK}
SUPPORTED |= QUEUE_STACK  # a QueueStack (below)
#: Maps without keys (the kernel's key_size 0).
KEYLESS = QUEUE_STACK | {BPF_MAP_TYPE_RINGBUF}

#: ``struct bpf_lpm_trie_key`` of IPv4 and IPv6 LPM tries: prefixlen, then the
#: address in network order.
LPM_V4 = np.dtype([("prefixlen", "<u4"), ("data", "u1", (4,))])
LPM_V6 = np.dtype([("prefixlen", "<u4"), ("data", "u1", (16,))])


class InnerMap:
    """The shape of the inner maps of an ARRAY_OF_MAPS / HASH_OF_MAPS (the
    kernel's inner_map_fd template): type, key, value, max_entries."""

    def __init__(self, type, key, value, max_entries):
        self.type, self.key, self.value, self.max_entries = type, key, value, max_entries


# ---------------------------------------------------------------- the map

#: lpm_py's native entries (block ABI) by argument kinds: one per process.
_LPM_ENTRIES = {}


class Map:
    """A BPF map (the kernel's ``struct bpf_map``) with numpy storage.

    ``name`` must be a Python identifier; ``type`` a BPF_MAP_TYPE_*; ``key`` and
    ``value`` numpy dtypes (scalar integers or structured records of them);
    ``max_entries`` the capacity. ARRAY maps take a 4-byte integer key, as in
    the kernel. A per-CPU map holds a value per worker of ``workers`` (default:
    config.WORKERS, what programs loaded now run on); ``attach`` puts the
    storage on given bytes (a pinned map's file).
    """

    def __new__(cls, *args, **kwargs):
        """``Map(name, BPF_MAP_TYPE_RINGBUF, ...)`` makes a RingBuf, a QUEUE or a
        STACK a QueueStack (no keys; below)."""
        kind = args[1] if len(args) > 1 else kwargs.get("type")
        if cls is Map and kind == BPF_MAP_TYPE_RINGBUF:
            cls = RingBuf
        elif cls is Map and kind in QUEUE_STACK:
            cls = QueueStack
        return super().__new__(cls)

    def __init__(self, name, type, key, value=np.uint32, max_entries=None, attach=None,
                 inner=None, pool=None, workers=None):
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
        if max_entries is None:
            raise MapError(name, "max_entries is required")
        self.max_entries = int(max_entries)
        if self.max_entries < 1:
            raise MapError(name, f"max_entries must be at least 1, not {max_entries}")
        if self.max_entries > MAX_ENTRIES_LIMIT:  # bpf_attr's max_entries is a __u32
            raise MapError(name, f"max_entries {max_entries} is above {MAX_ENTRIES_LIMIT}")
        hashed = type in _HASHES or type == BPF_MAP_TYPE_LPM_TRIE
        if hashed and self.max_entries > HASH_MAX_ENTRIES:  # (the kernel's htab: E2BIG)
            raise MapError(name, f"max_entries {max_entries} of a {MAP_TYPE_NAMES[type]} map "
                                 f"is above {HASH_MAX_ENTRIES}")
        if type in _ARRAYS and (self.key_dtype.names or self.key_dtype.itemsize != 4):
            raise MapError(name, f"array maps take a 4-byte integer key, not {self.key_dtype}")
        # a devmap value: the ifindex, or the kernel's struct bpf_devmap_val (the
        # ifindex, then a program to run on the frame: none here, so always 0
        # and the 8 bytes as a number are the ifindex)
        if type in _DEVMAPS and (self.value_dtype.names or self.value_dtype.itemsize not in (4, 8)
                                 or self.value_dtype.kind not in "iu"):
            raise MapError(name, f"device maps hold an ifindex: a 4-byte integer value (or "
                                 f"8: struct bpf_devmap_val), not {self.value_dtype}")
        if type == BPF_MAP_TYPE_LPM_TRIE:
            self.lpm_width = _lpm_width(self.key_dtype, name)
            self.lpm_ibits = lpm.index_bits(self.max_entries, self.lpm_width)
            self.lpm_shift = 64 - self.lpm_ibits
            self._kw = np.zeros(lpm.KEY_WORDS, np.uint64)
            self._lpm_block_of = None
        else:
            _field_list(self.key_dtype, "key", name)  # validates: integer fields only
        _field_list(self.value_dtype, "value", name)
        self.ncpu = (workers or config.WORKERS) if type in _PERCPU else 1
        self.pinned = None
        self.inner_maps = ()
        self.programs, self._pending = None, {}  # PROG_ARRAY: the file's programs
        if type in _MAP_IN_MAP:
            self._make_pool(inner, pool)
        self._allocate(attach)

    @property
    def type_name(self):
        return MAP_TYPE_NAMES[self.type]

    @property
    def is_hash(self):
        return self.type in _HASHES

    @property
    def is_map_in_map(self):
        """ARRAY_OF_MAPS / HASH_OF_MAPS: values are inner maps of one shape."""
        return self.type in _MAP_IN_MAP

    def _make_pool(self, inner, pool):
        """The inner maps: ``pool`` maps of the ``inner`` spec, back to back in one
        2-D byte array (a program builds an inner map's handle from its row)."""
        if not isinstance(inner, InnerMap):
            raise MapError(self.name, "a map of maps needs inner=InnerMap(type, key, value, "
                                      "max_entries)")
        if self.value_dtype.names or self.value_dtype.itemsize != 4:
            raise MapError(self.name, "a map of maps holds 4-byte values (inner map numbers)")
        n = int(pool if pool is not None else self.max_entries)
        if n < 1:
            raise MapError(self.name, f"pool must be at least 1, not {pool}")
        first = Map(f"{self.name}_inner", inner.type, inner.key, inner.value, inner.max_entries)
        if first.is_map_in_map:
            raise MapError(self.name, "inner maps cannot be maps of maps")
        # each inner map starts a cache line, as a map of its own does
        stride = -(-first.nbytes // config.SLOT_ALIGN) * config.SLOT_ALIGN
        self.pool = alloc_buffer(stride * n, f"map '{self.name}'").reshape(n, stride)
        self.inner_maps = tuple(
            Map(f"{self.name}_inner{i}", inner.type, inner.key, inner.value, inner.max_entries,
                attach=self.pool[i, :first.nbytes]) for i in range(n))
        for m in self.inner_maps:
            m.clear()  # attached storage starts zeroed: make each an empty map
        self.inner_spec = self.inner_maps[0]

    def bind_programs(self, names):
        """The programs of the map's file, in order (a PROG_ARRAY's values name
        them); entries set by name before the file was loaded are resolved."""
        self.programs = list(names)
        for key, name in self._pending.items():
            self.update(key, name)
        self._pending = {}

    def _program_number(self, key, value):
        """A PROG_ARRAY value: 1 + the program's number; None when kept for later."""
        if isinstance(value, str):
            if self.programs is None:  # declared at import, before the programs exist
                self._pending[key] = value
                return None
            if value not in self.programs:
                raise MapError(self.name, f"no program '{value}' in this file (programs: "
                                          f"{', '.join(self.programs)})")
            return self.programs.index(value) + 1
        if not (isinstance(value, int) and 0 <= value < len(self.programs or ())):
            raise MapError(self.name, f"bad program {value!r}: a program of this file by name")
        return value + 1

    def inner_map(self, key):
        """The inner Map stored under ``key``, or None."""
        e = self._entry(key)
        return None if e < 0 else self.inner_maps[int(self.values[0, e]) - 1]

    @property
    def is_devmap(self):
        """DEVMAP / DEVMAP_HASH: redirect targets (an ifindex, 0 for none)."""
        return self.type in _DEVMAPS

    def devices(self):
        """A device map's ifindexes in key order, an entry each: where a
        broadcast (BPF_F_BROADCAST) sends its copies."""
        if not self.is_hash:
            v = self.values[0]
            return v[v != 0].tolist()
        return [int(v) for _, v in self.items() if v]

    @property
    def is_lpm(self):
        return self.type == BPF_MAP_TYPE_LPM_TRIE

    @property
    def lru(self):
        return self.type in _LRU

    @property
    def percpu(self):
        return self.type in _PERCPU

    @property
    def inline_values(self):
        """HASH / LRU_HASH keep each value in its entry's key row (kernels/htab.py),
        so a hit touches one cache line where a separate value array cost two."""
        return self.type in _INLINE_VALUES

    @property
    def open_addressed(self):
        """LRU_HASH keeps its rows in the slots the keys hash to
        (kernels/lru_htab.py): a lookup reads one line, not a bucket's and then
        a row's."""
        return self.type == BPF_MAP_TYPE_LRU_HASH

    def _allocate(self, buffer=None):
        """Lay the map's arrays out in one buffer: a new zeroed one (then reset to
        empty), or ``buffer`` as it is (a pinned map attached to: pin.py)."""
        n = self.max_entries
        parts = [] if self.inline_values else \
            [("values", self.value_dtype.itemsize * n * self.ncpu)]
        if self.open_addressed:
            parts = [("hdr", 8 * htab.HDR_SIZE), ("rows", 4 * n), ("free", 4 * n),
                     ("keys", 8 * lru_htab.slots_for(n) * self._row_words())]
        elif self.is_hash or self.is_lpm:
            # 4 buckets an entry (int32 each: 16 bytes, what the kernel's htab
            # spends per bucket): chains stay ~1 entry long, and a hit rarely
            # reads a second row (flow_counter, 40k flows: 41 -> 36 ns/pkt)
            nb = htab.BUCKETS_PER_ENTRY << max(1, (n - 1).bit_length())
            parts = [("hdr", 8 * htab.HDR_SIZE), ("buckets", 4 * nb),
                     ("refs", n), ("free", 4 * n), ("keys", 8 * n * self._row_words())] + parts
        if self.is_lpm:
            cap = 2 * n + 1  # n prefixes cut the address space into <= 2n + 1 intervals
            nodes, nroot = lpm.node_pool(n), 1 << self.lpm_ibits
            parts = parts[:-1] + [("index", 4 * (nroot + 1)), ("rchild", 4 * nroot),
                                  ("nhdr", 64 * nodes), ("nent", 4 * 514 * nodes),
                                  ("bhi", 8 * cap), ("blo", 8 * cap), ("rval", 4 * cap)] \
                + parts[-1:]
        offsets, size = {}, 0
        for part, nbytes in parts:
            size = (size + 63) // 64 * 64
            offsets[part] = (size, nbytes)
            size += nbytes
        self.nbytes = max(size, 64)
        fresh = buffer is None
        if fresh:
            buffer = alloc_buffer(self.nbytes, f"map '{self.name}'")
        elif buffer.size != self.nbytes:
            raise MapError(self.name, f"storage of {buffer.size} bytes, the map needs "
                                      f"{self.nbytes}")
        self.buffer = buffer
        view = {p: self.buffer[o:o + nb_] for p, (o, nb_) in offsets.items()}
        if not self.inline_values:
            self.values = view["values"].view(self.value_dtype).reshape(self.ncpu, n)
        if self.is_hash or self.is_lpm:
            self.hdr = view["hdr"].view(np.int64)
            self.free = view["free"].view(np.int32)
            if self.open_addressed:  # word 0 of each slot: tag, reference, state
                self.rows = view["rows"].view(np.int32)
            else:  # word 0 of each row: the entry's hash and chain link (kernels/htab.py)
                self.buckets = view["buckets"].view(np.int32)
                self.refs = view["refs"]
            self.keys = view["keys"].view(np.uint64).reshape(-1, self._row_words())
            row, nrows = self.keys.strides[0], self.keys.shape[0]
            if not self.open_addressed:
                self.chain = np.ndarray((n,), np.int32, self.buffer,
                                        offsets["keys"][0] + htab.LINK_OFFSET, (row,))
            if self.inline_values:  # values[0, e] is in row e, after the key
                self.values = np.ndarray((1, nrows), self.value_dtype, self.buffer,
                                         offsets["keys"][0] + self.value_offset,
                                         (nrows * row, row))
            if fresh:
                self._reset_table()
        if self.is_lpm:
            self.index = view["index"].view(np.int32)
            self.rchild = view["rchild"].view(np.int32)
            self.nhdr = view["nhdr"].view(np.uint64).reshape(-1, 8)
            self.nent = view["nent"].view(np.int32).reshape(-1, 514)
            self.bhi = view["bhi"].view(np.uint64)
            self.blo = view["blo"].view(np.uint64)
            self.rval = view["rval"].view(np.int32)
            if fresh:
                lpm.lpm_clear(self.hdr, self.index, self.rchild, self.bhi, self.blo, self.rval)

    def pin(self, directory):
        """Move the map's storage into ``directory`` (pin.py), contents kept: from
        now on other processes can open, read and change it."""
        from .pin import pin_buffer

        pinned = pin_buffer(directory, self, self.nbytes)
        pinned[:] = self.buffer
        self._allocate(pinned)
        self.pinned = str(directory)

    def encode_key(self, obj):
        """A key from its decoded (JSON) form, as ``items()`` prints it."""
        if self.is_lpm:
            return obj
        return _from_python(self.key_dtype, obj, self.name)

    def encode_value(self, obj):
        """A value from its decoded (JSON) form; a list for per-CPU maps."""
        if self.percpu and isinstance(obj, list):
            return [_from_python(self.value_dtype, v, self.name) for v in obj]
        return _from_python(self.value_dtype, obj, self.name)

    def _row_words(self):
        if self.is_lpm:  # (prefixlen, hi, lo): kernels/lpm.py
            return (1 + lpm.KEY_WORDS + 7) // 8 * 8
        return row_words(self.key_dtype, self.value_dtype if self.inline_values else None)

    @property
    def value_offset(self):
        """Byte offset of an inline value in its row: after the hash and the key."""
        return 8 * (1 + key_words(self.key_dtype))

    def program_arrays(self):
        """The arrays a program's loop receives for this map, in handle order
        (kernels/runner.py's map_param_names names them)."""
        if self.inline_values:
            return self._table()
        flat = self.values.reshape(-1).view(np.uint8)
        if self.is_lpm:
            return self._table() + self._ranges() + (flat,)
        pool = (self.pool,) if self.is_map_in_map else ()
        if self.is_hash:
            return (self.hdr, self.buckets, self.refs, self.free,
                    self.keys, flat) + pool
        return (flat,) + pool

    # -- control plane ----------------------------------------------------
    def _table(self):
        if self.open_addressed:
            return (self.hdr, self.rows, self.free, self.keys)
        return (self.hdr, self.buckets, self.refs, self.free, self.keys)

    def _ranges(self):
        return (self.index, self.rchild, self.nhdr, self.nent, self.bhi, self.blo, self.rval)

    def _lpm_words(self, key):
        """The key as kernels/lpm.py's uint64[3]: (prefixlen, hi, lo)."""
        plen, value = lpm_key(key, self.lpm_width, self.name)
        kw = self._kw
        kw[0] = plen
        kw[1], kw[2] = _lpm_split(value, self.lpm_width)
        return kw

    def _lpm_op(self, op, key, flags=0):
        """kernels/lpm.py's lpm_py on this map: the entry, or -errno.

        Its arguments (op, the arrays as pointer and shape, the key words, flags,
        width, shift) sit in an int64 block built once (jit.Kernel.entry's block
        ABI): one ctypes argument instead of ~40 (~1 us a call instead of ~14)."""
        self._lpm_words(key)
        if self._lpm_block_of is not self.buffer:  # (re)built with the storage
            args = (0, *self._table(), *self._ranges(), self._kw, 0, self.lpm_width,
                    self.lpm_shift)
            kinds = tuple(kind_of(a) for a in args)
            if kinds not in _LPM_ENTRIES:
                _LPM_ENTRIES[kinds] = lpm.lpm_py.entry(kinds, args, block=True)
            self._lpm_fn = _LPM_ENTRIES[kinds]
            self._lpm_block = np.array([v for a in args for v in (
                (a.ctypes.data, *a.shape) if isinstance(a, np.ndarray) else (a,))], np.int64)
            self._lpm_block_ptr = self._lpm_block.ctypes.data
            self._lpm_block_of = self.buffer
        block = self._lpm_block
        block[0] = op
        block[-3] = flags
        return int(self._lpm_fn(self._lpm_block_ptr))

    def _entry(self, key):
        """Entry number (the value slot) of ``key``, or -1 (LPM: the longest match)."""
        if self.is_lpm:
            return self._lpm_op(lpm.OP_LOOKUP, key)
        if not self.is_hash:
            index = self._index(key)
            if self.type in _SLOTTED \
                    and 0 <= index < self.max_entries and self.values[0, index] == 0:
                return -1  # an empty device or inner-map slot
            return index if 0 <= index < self.max_entries else -1
        words = _key_bytes(self.key_dtype, key, self.name)
        if self.open_addressed:
            return int(lru_htab.lru_lookup_py(self.hdr, self.keys, words))
        return int(htab.htab_lookup_py(self.hdr, self.buckets, self.keys, words))

    def check_links(self):
        """Raise MapError when the links of a hash map's table (or an LPM trie's
        prefix table, range table and index nodes) are out of range or loop:
        the control plane follows them without bounds checks, so a pinned file
        that was damaged would read out of bounds or walk for ever. Arrays
        have no links. Run by pin.open_pinned on every map it opens."""
        if not (self.is_hash or self.is_lpm):
            return
        seen, moved = np.zeros(self.max_entries, np.int8), \
            self.hdr[:lru_htab.H_DELETED + 1].copy
        if self.open_addressed:
            faults = lru_htab.CHECK_FAULTS
            check = partial(lru_htab.lru_check, self.hdr, self.rows, self.free, self.keys,
                            key_words(self.key_dtype), seen)
        else:
            faults = htab.CHECK_FAULTS
            check = partial(htab.htab_check, self.hdr, self.buckets, self.free, self.keys,
                            seen)
        for _ in range(CHECK_TRIES):
            before = moved()
            fault = check()
            if not fault or np.array_equal(before, moved()):
                break  # sound, or broken while nothing moved: conclusive
        else:
            fault = 0  # a running program kept changing it: not judged, not blamed
        if fault:
            raise MapError(self.name, f"corrupt table: {faults[fault]}")
        if self.is_lpm:  # its range table and index nodes too
            pool = self.nhdr.shape[0]
            fault = lpm.lpm_check(self.hdr, self.index, self.rchild, self.nhdr, self.nent,
                                  self.rval, self.max_entries, np.empty(pool, np.int64),
                                  np.empty(3 * pool + 3, np.int64))
            if fault:
                raise MapError(self.name, f"corrupt prefix table: {lpm.CHECK_FAULTS[fault]}")

    def _index(self, key):
        try:
            return int(key)
        except (TypeError, ValueError):
            raise MapError(self.name, f"bad key {key!r}: an array map's key is an index") \
                from None

    def _fail(self, err, what):
        names = {errno.ENOENT: "no such key", errno.EEXIST: "key exists",
                 errno.E2BIG: f"map is full ({self.max_entries} entries)",
                 errno.ENOSPC: f"map is full ({self.max_entries} entries)",
                 errno.EINVAL: "invalid argument",
                 errno.EBUSY: "its update lock stayed held (a process killed while it "
                              "changed the map? unpin it, or run the program again)"}
        raise MapError(self.name, f"{what}: {names.get(err, errno.errorcode.get(err, err))} "
                                  f"(-{errno.errorcode.get(err, err)})", err)

    def _decode_value(self, e):
        if self.type == BPF_MAP_TYPE_PROG_ARRAY:  # the program's name
            i = int(self.values[0, e]) - 1
            return self.programs[i] if self.programs and i < len(self.programs) else i
        if self.is_map_in_map:  # the inner map: its number and entries
            i = int(self.values[0, e]) - 1
            return {"inner": i, "entries": self.inner_maps[i].to_json()}
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
        An LPM trie's key is a prefix (see the module docstring).
        """
        if self.is_devmap and isinstance(value, (int, np.integer)) and int(value) >> 32 > 0:
            raise MapError(self.name, f"bad value {value:#x}: a device map's program "
                                      "(bpf_devmap_val.bpf_prog) is not supported, only 0 "
                                      "in the upper 4 bytes")
        if self.is_lpm:
            e = self._lpm_op(lpm.OP_UPDATE, key, flags if 0 <= flags <= BPF_EXIST else -1)
            if e < 0:
                self._fail(-e, f"update {key!r}")
        elif self.is_hash:
            words = _key_bytes(self.key_dtype, key, self.name)
            e = int(lru_htab.lru_insert_py(*self._table(), words, int(flags))
                    if self.open_addressed else
                    htab.htab_insert_py(*self._table(), words, int(flags), self.lru))
            if e < 0:
                self._fail(-e, f"update {key!r}")
        else:
            e = self._index(key)  # (a negative index: past the end, as a __u32 is)
            err = int(htab.array_update_error.py_func(e if e >= 0 else self.max_entries,
                                                      self.max_entries, int(flags)))
            if err < 0:
                self._fail(-err, f"update {key!r}")
        if self.type == BPF_MAP_TYPE_PROG_ARRAY:  # a program of the file, by name or number
            value = self._program_number(key, value)
            if value is None:
                return
        elif self.is_map_in_map:  # the value: an inner map (or its number, 0-based)
            index = self.inner_maps.index(value) if isinstance(value, Map) else value
            if not (isinstance(index, int) and 0 <= index < len(self.inner_maps)):
                raise MapError(self.name, f"bad inner map {value!r} "
                                          f"(0..{len(self.inner_maps) - 1})")
            value = index + 1
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
        """bpf_map_delete_elem from Python (array maps refuse it, as the kernel does;
        an LPM trie deletes the exact prefix)."""
        if self.is_lpm:
            r = self._lpm_op(lpm.OP_DELETE, key)
            if r < 0:
                self._fail(-r, f"delete {key!r}")
            return
        if self.type in _SLOTTED:  # empty the slot
            index = self._index(key)
            if not 0 <= index < self.max_entries:
                self._fail(errno.EINVAL, f"delete {key!r}")
            self.values[:, index] = 0
            return
        if not self.is_hash:
            self._fail(errno.EINVAL, f"delete {key!r}")
        words = _key_bytes(self.key_dtype, key, self.name)
        if self.open_addressed:
            r = int(lru_htab.lru_delete_py(self.hdr, self.rows, self.free, self.keys, words))
        else:
            r = int(htab.htab_delete_py(self.hdr, self.buckets, self.free, self.keys, words))
        if r < 0:
            self._fail(-r, f"delete {key!r}")

    def _used(self):
        if self.type in _SLOTTED:
            return np.flatnonzero(self.values[0])
        if not (self.is_hash or self.is_lpm):
            return np.arange(self.max_entries)
        if self.open_addressed:
            out = np.zeros(self.keys.shape[0], np.int64)
            return out[:lru_htab.lru_entries(self.keys, out)]
        out = np.zeros(self.max_entries, np.int64)
        n = htab.htab_entries(self.hdr, self.free, out)
        return out[:n]

    def _lpm_prefix(self, e):
        """(prefixlen, address int) of LPM entry ``e``: the address as the update
        gave it, host bits included, as the kernel's trie keeps it."""
        row = self.keys[e]
        hi, lo = (row[lpm.RAW_HI], row[lpm.RAW_LO]) if row[lpm.RAW_SET] else (row[2], row[3])
        return int(row[1]), _lpm_join(int(hi), int(lo), self.lpm_width)

    def _decode_key(self, e):
        if self.is_lpm:
            return lpm_key_text(*self._lpm_prefix(e), self.lpm_width)
        if not self.is_hash:
            return int(e)
        raw = self.keys[e, 1:].view(np.uint8)[:self.key_dtype.itemsize].copy()
        return _to_python(self.key_dtype, raw.view(self.key_dtype)[0])

    def items(self):
        """[(key, value)] decoded by the dtypes, like ``bpftool map dump``."""
        if self.type == BPF_MAP_TYPE_ARRAY and self.value_dtype.kind in "iu":
            # integers decoded by numpy at once: l4lb's rings (8.4 million
            # entries) took 15 s entry by entry, 4 s so
            return list(enumerate(self.values[0].tolist()))
        return [(self._decode_key(e), self._decode_value(e)) for e in self._used()]

    def __len__(self):
        if self.type in _SLOTTED:
            return int(np.count_nonzero(self.values[0]))
        return int(self.hdr[htab.H_COUNT]) if (self.is_hash or self.is_lpm) else self.max_entries

    def _reset_table(self):
        """Empty the hash table. A hash map without a key-hash seed (new storage,
        an inner map's zeroed row, a table pinned before seeds) draws one
        (kernels/htab.py); one that has a seed keeps it, as the kernel keeps a
        map's hashrnd for its life: a program inserting while the table is
        cleared must not hash with a seed that is no longer the table's."""
        if self.open_addressed:
            lru_htab.lru_reset(self.hdr, self.free, self.keys)
        else:
            htab.htab_reset(self.hdr, self.buckets, self.refs, self.free)
        if self.is_hash and self.hdr[htab.H_SEED] == 0:
            self.hdr[htab.H_SEED] = htab.new_seed()

    def clear(self):
        """Delete every entry (array maps: zero every value)."""
        self.values[...] = 0
        if self.is_hash or self.is_lpm:
            self._reset_table()
        if self.is_lpm:
            lpm.lpm_clear(self.hdr, self.index, self.rchild, self.bhi, self.blo, self.rval)

    def dump(self):
        """(keys, values) as numpy arrays of the key and value dtypes (values of a
        per-CPU map: shape (n, workers); LPM keys: prefixlen and network-order data)."""
        used = self._used()
        if self.is_lpm:
            keys = np.zeros(len(used), self.key_dtype)
            raw = keys.view(np.uint8).reshape(len(used), self.key_dtype.itemsize)
            nbytes = self.lpm_width // 8
            for i, e in enumerate(used):
                plen, value = self._lpm_prefix(e)
                keys[i]["prefixlen"] = plen
                raw[i, 4:] = np.frombuffer(value.to_bytes(nbytes, "big"), np.uint8)
        elif self.is_hash:
            raw = self.keys[used, 1:].view(np.uint8)[:, :self.key_dtype.itemsize]
            keys = np.ascontiguousarray(raw).view(self.key_dtype).reshape(-1)
        else:
            keys = used.astype(self.key_dtype)
        # as raw records: a structured copy would leave a value's padding bytes
        # uninitialised (numpy copies fields), where the map holds what was written
        raw = self.values.view(np.dtype((np.void, self.value_dtype.itemsize)))
        values = raw[:, used].T.copy().view(self.value_dtype)
        return keys, (values if self.percpu else values[:, 0])

    def update_batch(self, keys, values, flags=BPF_ANY):
        """Update many entries from numpy arrays of the key and value dtypes."""
        if self.is_lpm:  # records of the key dtype, or any key form (strings, tuples, ...)
            keys = keys if isinstance(keys, np.ndarray) else list(keys)
            values = np.asarray(values, self.value_dtype).tolist()
            if len(keys) != len(values):
                raise MapError(self.name, f"{len(keys)} keys for {len(values)} values")
            for k, v in zip(keys, values):
                self.update(k, v, flags)
            return
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
bpf_map_prefetch = api(lazy("dataplane.kernels.map_api", "bpf_map_prefetch"))
bpf_map_push_elem = api(lazy("dataplane.kernels.map_api", "bpf_map_push_elem"))
bpf_map_pop_elem = api(lazy("dataplane.kernels.map_api", "bpf_map_pop_elem"))
bpf_map_peek_elem = api(lazy("dataplane.kernels.map_api", "bpf_map_peek_elem"))
bpf_redirect_map = api(lazy("dataplane.kernels.map_api", "bpf_redirect_map"))
bpf_tail_call = api(lazy("dataplane.kernels.map_api", "bpf_tail_call"))
sync_fetch_and_add = api(lazy("dataplane.kernels.map_api", "sync_fetch_and_add"))


# ---------------------------------------------------------------- ring buffers

#: bpf_ringbuf_output flags: accepted and ignored (no reader sleeps on the ring).
BPF_RB_NO_WAKEUP, BPF_RB_FORCE_WAKEUP = 1, 2
#: Words of a ring's int64 header: the consumer's cache line, then the producer's.
RB_CONSUMER = 0     # consumer position in bytes: written by readers (read, clear)
RB_PRODUCER = 8     # producer position in bytes: written by the program
RB_DROPPED = 9      # records refused for lack of room (-EAGAIN)
RB_WRITTEN = 10     # records written
RB_AUX = 11         # free for internal rings (the trace ring's packet index, program.py)
RB_LOCK = 15        # producers' lock: workers write one ring (the kernel's rb->spinlock)
RB_HDR_WORDS = 16
#: A record header's length word: reserved, not submitted yet / discarded.
BPF_RINGBUF_BUSY_BIT, BPF_RINGBUF_DISCARD_BIT = 1 << 31, 1 << 30
#: The kernel wants the ring's size a power of 2 and a multiple of the page size.
RB_PAGE = 4096
ENOTSUPP = 524      # the kernel's answer to element operations on a ring


def _storage(m, buffer):
    """A new zeroed buffer of ``m.nbytes``, or ``buffer`` (a pinned file's) of that size."""
    if buffer is None:
        return alloc_buffer(m.nbytes, f"map '{m.name}'")
    if buffer.size != m.nbytes:
        raise MapError(m.name, f"storage of {buffer.size} bytes, the map needs {m.nbytes}")
    return buffer


def _keyless(m, name, type, key, value):
    """Name, type, key and value dtypes of a map without keys (a ring, a queue,
    a stack): ``key`` None or 0, the kernel's key_size 0, else -EINVAL."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise MapError(str(name), "map names are identifiers (letters, digits, _)")
    m.name, m.type = name, type
    if key is None or (isinstance(key, int) and key == 0):
        key = np.dtype("V0")
    try:
        m.key_dtype = np.dtype(key)
    except TypeError:
        m.key_dtype = None
    if m.key_dtype is None or m.key_dtype.itemsize != 0:
        raise MapError(name, f"{MAP_TYPE_NAMES[type]} maps have no key: give key=None (the "
                             f"kernel requires key_size 0), not {key!r} (-EINVAL)", errno.EINVAL)
    m.value_dtype = np.dtype(value)


class RingBuf(Map):
    """BPF_MAP_TYPE_RINGBUF: records from programs to Python, in arrival order.

    Declared as any map: ``Map("events", BPF_MAP_TYPE_RINGBUF, key=None,
    value=EVENT, max_entries=1 << 16)``. ``max_entries`` is the ring's size in
    bytes (a power of 2 and a multiple of 4096, else -EINVAL, as in the kernel);
    there is no key (``key=None``, or ``0``: the kernel's key_size 0; anything
    else is refused); ``value`` is the record's layout (an integer type or a
    structured dtype of integer fields), used to write and to decode records.

    A program writes with ``bpf_ringbuf_output(events, (f1, f2, ...), 0)`` (an
    int for a scalar value): 0, or -EAGAIN when the ring has no room (the record
    is dropped, counted in ``dropped``; the program may count it too). An eBPF
    object may also reserve a record, fill it in place and submit or discard
    it (bpf_ringbuf_reserve / submit / discard): the record's header carries
    the kernel's busy bit until then (a reader stops at it) and its discard
    bit after a discard (a reader skips the record).

    From Python: ``read()`` (or ``poll()``) drains the pending records as a
    numpy array of the value dtype; ``peek()`` gives them without draining;
    ``items()`` / ``to_json()`` decode them (structured -> dicts, ``*addr*``
    fields as addresses) without draining, so ``--dump-maps`` shows them;
    ``len()`` is the number pending, ``dropped`` the records refused for lack
    of room, ``written`` those accepted (submitted, not discarded); ``clear()`` discards the pending
    records and zeroes both counters. Element operations (lookup, update,
    delete, dump) fail with -ENOTSUPP, as in the kernel.

    A raw value (``value="V64"``: bytes, no fields) makes a ring of records of
    any size up to that many bytes, as an eBPF object's ring that takes events
    of several structs: ``read()`` and ``peek()`` give each record's bytes (a
    list), ``to_json()`` their hex.

    Storage (one buffer, so ``--pin`` shares it and another process can drain
    it): an int64 header of 16 words (RB_*: consumer position, then on its own
    cache line the producer position and the counters) and the ring's bytes.
    Positions are byte counters that only grow; a record is an 8-byte header
    (``u32 len`` = the value's itemsize, ``u32 pg_off`` = 0), the value, padded
    to 8 bytes, at ``pos & (size - 1)``, running on at the ring's start past its
    end. A record needs ``8 + itemsize`` rounded up to 8 bytes, and a ring of
    ``size`` bytes holds at most ``size - 8`` bytes of records (the kernel's
    ``new_prod - cons > size - 1`` check).
    """

    is_ringbuf = True

    def __init__(self, name, type, key, value, max_entries, attach=None, workers=None):
        # ``workers``: as Map's, but one ring serves them all (the kernel's is shared)
        _keyless(self, name, BPF_MAP_TYPE_RINGBUF, key, value)
        #: records of any size up to the value's (a raw ``V<n>`` value): bytes
        self.variable = self.value_dtype.kind == "V" and self.value_dtype.names is None
        if not self.variable:
            _field_list(self.value_dtype, "value", name)
        if self.value_dtype.itemsize == 0:
            raise MapError(name, "a ringbuf record needs at least one field")
        try:
            n = int(max_entries)
        except (TypeError, ValueError):
            n = 0
        if n < RB_PAGE or n & (n - 1):
            raise MapError(name, f"max_entries of a ringbuf is its size in bytes: a power of 2 "
                                 f"and a multiple of {RB_PAGE}, not {max_entries} (-EINVAL)",
                           errno.EINVAL)
        self.max_entries = n
        if self.record_bytes > n - 8:
            raise MapError(name, f"a record of {self.value_dtype.itemsize} bytes does not fit a "
                                 f"ring of {n} bytes (-E2BIG)", errno.E2BIG)
        self.ncpu = 1
        self.pinned = None
        self._allocate(attach)

    @property
    def record_bytes(self):
        """Bytes of one record in the ring: its 8-byte header and the value, padded."""
        return 8 + 8 * key_words(self.value_dtype)

    def _allocate(self, buffer=None):
        """The header (RB_HDR_WORDS int64) and the ring (max_entries bytes, as
        uint64 words) in one buffer: a new zeroed one, or ``buffer`` as it is."""
        hdr_bytes = 8 * RB_HDR_WORDS
        self.nbytes = hdr_bytes + self.max_entries
        self.buffer = buffer = _storage(self, buffer)
        self.hdr = buffer[:hdr_bytes].view(np.int64)
        self.ring = buffer[hdr_bytes:].view(np.uint64)

    def program_arrays(self):
        """The arrays a program's loop receives: the header, the ring's words."""
        return (self.hdr, self.ring)

    # -- reading ------------------------------------------------------------
    def _records(self, max_records, drain):
        if self.variable:
            return self._variable_records(max_records, drain)
        hdr = self.hdr
        cons, prod = int(hdr[RB_CONSUMER]), int(hdr[RB_PRODUCER])
        rec, size = self.record_bytes, self.value_dtype.itemsize
        if cons & 7 or not 0 <= prod - cons <= self.max_entries or (prod - cons) % rec:
            raise MapError(self.name, f"corrupt ring: consumer at {cons}, producer at {prod}, "
                                      f"records of {rec} bytes")
        n = (prod - cons) // rec
        if max_records is not None:
            n = max(0, min(n, int(max_records)))
        if n == 0:
            return np.zeros(0, self.value_dtype)
        words, first = rec // 8, (cons >> 3) & (self.ring.size - 1)
        if first + n * words <= self.ring.size:  # no record runs past the ring's end
            rows = self.ring[first:first + n * words].reshape(n, words)
        else:
            idx = (first + words * np.arange(n, dtype=np.int64)[:, None]
                   + np.arange(words, dtype=np.int64)) & (self.ring.size - 1)
            rows = self.ring[idx]
        head = rows[:, 0] & np.uint64(0xFFFFFFFF)
        busy = np.flatnonzero(head & np.uint64(BPF_RINGBUF_BUSY_BIT))
        if busy.size:  # reserved, not submitted yet: it and those after it wait
            n = int(busy[0])
            rows, head = rows[:n], head[:n]
        bad = np.flatnonzero((head & ~np.uint64(BPF_RINGBUF_DISCARD_BIT)) != size)
        if bad.size:
            raise MapError(self.name, f"corrupt ring: record at {cons + rec * int(bad[0])} has "
                                      f"header {int(rows[bad[0], 0]):#x}")
        rows = rows[(head & np.uint64(BPF_RINGBUF_DISCARD_BIT)) == 0]
        data = np.ascontiguousarray(rows[:, 1:]).view(np.uint8)[:, :size]
        out = np.ascontiguousarray(data).view(self.value_dtype).reshape(len(rows))
        if drain:
            hdr[RB_CONSUMER] = cons + n * rec
        return out

    def _variable_records(self, max_records, drain):
        """The records of a raw ring, walked by their headers as libbpf does:
        [bytes], oldest first, discarded ones skipped, up to a busy one."""
        hdr, size = self.hdr, self.max_entries
        ring = self.ring.view(np.uint8)
        cons, prod = int(hdr[RB_CONSUMER]), int(hdr[RB_PRODUCER])
        if cons & 7 or not 0 <= prod - cons <= size:
            raise MapError(self.name, f"corrupt ring: consumer at {cons}, producer at {prod}")
        limit = None if max_records is None else max(0, int(max_records))
        out, pos = [], cons
        while pos < prod and (limit is None or len(out) < limit):
            head = int(self.ring[(pos >> 3) & (self.ring.size - 1)]) & 0xFFFFFFFF
            if head & BPF_RINGBUF_BUSY_BIT:
                break
            length = head & ~BPF_RINGBUF_DISCARD_BIT
            step = 8 + (length + 7) // 8 * 8
            if length == 0 or length > self.value_dtype.itemsize or pos + step > prod:
                raise MapError(self.name, f"corrupt ring: record at {pos} has header {head:#x}")
            if not head & BPF_RINGBUF_DISCARD_BIT:
                at = (pos + 8 + np.arange(length)) & (size - 1)
                out.append(ring[at].tobytes())
            pos += step
        if drain:
            hdr[RB_CONSUMER] = pos
        return out

    def read(self, max_records=None):
        """Drain the pending records (at most ``max_records``): a numpy array of the
        value dtype, oldest first (a raw ring: a list of bytes). Their room is free
        for the program again."""
        return self._records(max_records, True)

    def poll(self, max_records=None):
        """libbpf's name for read()."""
        return self.read(max_records)

    def peek(self, max_records=None):
        """The pending records, like read(), but left in the ring."""
        return self._records(max_records, False)

    def __len__(self):
        return len(self._records(None, False))

    @property
    def dropped(self):
        """Records refused for lack of room (bpf_ringbuf_output gave -EAGAIN)."""
        return int(self.hdr[RB_DROPPED])

    @property
    def written(self):
        """Records accepted since the ring was created (or cleared)."""
        return int(self.hdr[RB_WRITTEN])

    def items(self):
        """The pending records decoded (dicts for structured values, bytes from a
        raw ring), not drained."""
        if self.variable:
            return self.peek()
        return [_to_python(self.value_dtype, r) for r in self.peek()]

    def to_json(self):
        """The pending records as JSON values (what ``--dump-maps -j`` prints; a raw
        ring's records as hex)."""
        if self.variable:
            return [r.hex() for r in self.peek()]
        return self.items()

    def clear(self):
        """Discard the pending records and zero the counters."""
        self.hdr[RB_CONSUMER] = self.hdr[RB_PRODUCER]
        self.hdr[RB_DROPPED] = 0
        self.hdr[RB_WRITTEN] = 0

    # -- no elements --------------------------------------------------------
    def _no_elements(self, what):
        raise MapError(self.name, f"{what}: a ringbuf has no keys, use read() or peek() "
                                  f"(-ENOTSUPP)", ENOTSUPP)

    def lookup(self, key):
        self._no_elements("lookup")

    def __contains__(self, key):
        self._no_elements("lookup")

    def update(self, key, value, flags=BPF_ANY):
        self._no_elements("update")

    def delete(self, key):
        self._no_elements("delete")

    def dump(self):
        self._no_elements("dump")

    def update_batch(self, keys, values, flags=BPF_ANY):
        self._no_elements("update")

    def encode_key(self, obj):
        self._no_elements("key")

    def encode_value(self, obj):
        return _from_python(self.value_dtype, obj, self.name)

    def __repr__(self):
        return (f"Map({self.name!r}, ringbuf, value={self.value_dtype}, "
                f"max_entries={self.max_entries})")


bpf_ringbuf_output = api(lazy("dataplane.kernels.ringbuf", "bpf_ringbuf_output"))


class QueueStack(Map):
    """BPF_MAP_TYPE_QUEUE / BPF_MAP_TYPE_STACK (kernel/bpf/queue_stack_maps.c):
    values without keys, popped oldest first (queue) or newest first (stack).

    Declared as ``Map("free_ports", BPF_MAP_TYPE_QUEUE, key=None, value=np.uint16,
    max_entries=1024)``: no key (the kernel's key_size 0), a value of integer
    fields, room for ``max_entries`` values.

    From Python, as the kernel's syscalls: ``push(value, flags)`` (also
    ``update(None, value, flags)``): MapError -E2BIG when full, unless flags is
    BPF_EXIST, which drops the oldest value to make room, -EINVAL for
    BPF_NOEXIST; ``pop()`` (BPF_MAP_LOOKUP_AND_DELETE_ELEM) and ``peek()``
    (also ``lookup(None)``) give the next value, or None when empty;
    ``delete`` is -EINVAL. ``items()`` / ``to_json()`` list the values in the
    order pops would give them, without popping (``--dump-maps``), ``len()``
    counts them, ``clear()`` empties the map.

    Storage (one buffer: ``--pin`` shares it): an int64 header of 8 words
    (head, tail, lock: kernels/queue_stack.py) and ``max_entries + 1`` value
    slots, the kernel's ring with one slot always free.
    """

    is_queue_stack = True

    def __init__(self, name, type, key, value, max_entries, attach=None, workers=None):
        _keyless(self, name, type, key, value)
        kind = self.type_name
        _field_list(self.value_dtype, "value", name)  # (none of 0 bytes)
        try:
            n = int(max_entries)
        except (TypeError, ValueError):
            n = 0
        if not 1 <= n <= MAX_ENTRIES_LIMIT:
            raise MapError(name, f"max_entries of a {kind} must be 1 to {MAX_ENTRIES_LIMIT}, "
                                 f"not {max_entries} (-EINVAL)", errno.EINVAL)
        self.max_entries = n
        self.ncpu = 1
        self.pinned = None
        self.inner_maps = ()
        self._allocate(attach)

    @property
    def is_stack(self):
        return self.type == BPF_MAP_TYPE_STACK

    def _allocate(self, buffer=None):
        """The header and the value slots in one buffer: a new zeroed one, or
        ``buffer`` as it is."""
        hdr_bytes = 8 * qs.QS_HDR_WORDS
        slot_bytes = (self.max_entries + 1) * self.value_dtype.itemsize
        self.nbytes = hdr_bytes + -(-slot_bytes // 8) * 8
        self.buffer = buffer = _storage(self, buffer)
        self.hdr = buffer[:hdr_bytes].view(np.int64)
        self.elems = buffer[hdr_bytes:hdr_bytes + slot_bytes]

    def program_arrays(self):
        """The arrays a program's loop receives: the header, the slots' bytes."""
        return (self.hdr, self.elems)

    def check_links(self):
        """Raise MapError when the head or the tail is outside the slots (a
        damaged pinned file: the operations index by them unchecked)."""
        slots = self.max_entries + 1
        for what, word in (("head", qs.QS_HEAD), ("tail", qs.QS_TAIL)):
            if not 0 <= int(self.hdr[word]) < slots:
                raise MapError(self.name, f"corrupt {self.type_name}: {what} at "
                                          f"{int(self.hdr[word])}, slots 0 to {slots - 1}")

    # -- the kernel's syscalls ---------------------------------------------
    def push(self, value, flags=BPF_ANY):
        """BPF_MAP_UPDATE_ELEM: push ``value``; MapError -E2BIG when full (flags
        BPF_EXIST: the oldest value makes room), -EINVAL for other flags."""
        raw = np.zeros(1, self.value_dtype)
        try:
            raw[0] = tuple(value) if self.value_dtype.names else value
        except (TypeError, ValueError, OverflowError) as exc:
            raise MapError(self.name, f"bad value {value!r} for {self.value_dtype}: {exc}") \
                from None
        err = qs.queue_stack_push_py(self.hdr, self.elems, raw.view(np.uint8), int(flags))
        if err:
            why = {-errno.E2BIG: f"full ({self.max_entries} values; BPF_EXIST replaces the "
                                 f"oldest)",
                   -errno.EINVAL: f"flags {int(flags)}: BPF_ANY or BPF_EXIST"}[int(err)]
            raise MapError(self.name, f"push: {why} (-{errno.errorcode[-int(err)]})", -int(err))

    def _get(self, delete):
        raw = np.zeros(1, self.value_dtype)
        if qs.queue_stack_get_py(self.hdr, self.elems, raw.view(np.uint8), self.is_stack,
                                 delete):
            return None
        return _to_python(self.value_dtype, raw[0])

    def pop(self):
        """BPF_MAP_LOOKUP_AND_DELETE_ELEM: take the next value (the oldest of a
        queue, the newest of a stack), or None when empty."""
        return self._get(True)

    def peek(self):
        """BPF_MAP_LOOKUP_ELEM: the value pop() would give, left in place, or None."""
        return self._get(False)

    def lookup(self, key=None):
        self._no_key(key)
        return self.peek()

    def __contains__(self, key):
        raise MapError(self.name, f"a {self.type_name} has no keys (-EINVAL)", errno.EINVAL)

    def update(self, key, value, flags=BPF_ANY):
        self._no_key(key)
        self.push(value, flags)

    def delete(self, key=None):
        raise MapError(self.name, f"delete: a {self.type_name} has no keys, use pop() "
                                  f"(-EINVAL)", errno.EINVAL)

    def _no_key(self, key):
        if key is not None:
            raise MapError(self.name, f"a {self.type_name} has no keys: give None, not "
                                      f"{key!r} (-EINVAL)", errno.EINVAL)

    def encode_key(self, obj):
        self._no_key(obj)

    # -- listing ------------------------------------------------------------
    def values_in_order(self):
        """The values as a numpy array of the value dtype, in the order pops
        would give them (none popped)."""
        size = self.value_dtype.itemsize
        out = np.zeros(self.max_entries * size, np.uint8)
        n = qs.queue_stack_snapshot(self.hdr, self.elems, size, self.is_stack, out)
        return out[:n * size].view(self.value_dtype).copy()

    def __len__(self):
        """The values held: head - tail around the ring (no copy of them)."""
        return int(self.hdr[qs.QS_HEAD] - self.hdr[qs.QS_TAIL]) % (self.max_entries + 1)

    def items(self):
        """The values decoded (dicts for structured values), next pop first."""
        return [_to_python(self.value_dtype, v) for v in self.values_in_order()]

    def to_json(self):
        return self.items()

    def dump(self):
        """(None, values): no keys, the values in pop order."""
        return None, self.values_in_order()

    def update_batch(self, keys, values, flags=BPF_ANY):
        for v in np.asarray(values, self.value_dtype).tolist():
            self.push(v, flags)

    def clear(self):
        """Empty the map (head and tail back to slot 0)."""
        self.hdr[qs.QS_HEAD] = 0
        self.hdr[qs.QS_TAIL] = 0

    def __repr__(self):
        return (f"Map({self.name!r}, {self.type_name}, value={self.value_dtype}, "
                f"max_entries={self.max_entries})")
