"""BTF (BPF Type Format): a parser of the ``.BTF`` section of an eBPF object.

Written from the kernel's format description (Documentation/bpf/btf.rst and
``linux/btf.h``): a header (magic 0xeB9F, version 1, flags, hdr_len, then the
type and string sections' offsets and lengths, relative to the end of the
header), a type section of variable-length records and a string section of
NUL-terminated names. Type id 0 is ``void``; the first record is id 1.

Every record is ``name_off u32, info u32 (vlen 0-15, kind 24-28, kind_flag
31), size_or_type u32``, followed by kind-specific data:

======== ===================================================================
INT      u32: encoding (bits 24-27), bit offset (16-23), bits (0-7)
ARRAY    type, index_type, nelems (3 u32)
STRUCT   vlen * (name_off, type, offset) -- offset is bits, or with
UNION    kind_flag (bitfield size << 24 | bit offset)
ENUM     vlen * (name_off, s32 value)
ENUM64   vlen * (name_off, lo32, hi32)
FUNC_    vlen * (name_off, type)
PROTO
VAR      u32 linkage
DATASEC  vlen * (type, offset, size)
DECL_TAG s32 component_idx
======== ===================================================================

PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT and TYPE_TAG carry
nothing more. ``Btf.resolve`` skips typedefs and modifiers, ``sizeof`` gives a
type's size in bytes and ``type_name`` a C-like spelling (``int (*)[4]``,
``struct flow_key``, ``const volatile char [8]``) for messages and dumps.

``Btf.map_def`` reads a BTF-defined map (a VAR of the ``.maps`` DATASEC):
libbpf's ``__uint(name, N)`` is a member ``int (*name)[N]``, ``__type(key, T)``
a member ``T *key`` and ``__array(values, struct {...})`` a member
``struct {...} *values[]`` (``int (void *) *values[]`` for a prog array).

Every error raises ``BtfError`` (a ``ProgramError``) with one line.
"""

import struct
from typing import NamedTuple

from dataplane.errors import ProgramError

BTF_MAGIC = 0xEB9F
BTF_MAX_TYPE = 0x000FFFFF

(KIND_UNKN, KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD,
 KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR,
 KIND_DATASEC, KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64) = range(20)

KIND_NAMES = ("UNKN", "INT", "PTR", "ARRAY", "STRUCT", "UNION", "ENUM", "FWD", "TYPEDEF",
              "VOLATILE", "CONST", "RESTRICT", "FUNC", "FUNC_PROTO", "VAR", "DATASEC", "FLOAT",
              "DECL_TAG", "TYPE_TAG", "ENUM64")

# INT encoding bits
INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4
# VAR linkage
VAR_STATIC, VAR_GLOBAL_ALLOCATED, VAR_GLOBAL_EXTERN = 0, 1, 2
# FUNC linkage (in the record's vlen)
FUNC_STATIC, FUNC_GLOBAL, FUNC_EXTERN = 0, 1, 2

MODIFIER_KINDS = frozenset({KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT,
                            KIND_TYPE_TAG})
_QUALIFIERS = {KIND_CONST: "const", KIND_VOLATILE: "volatile", KIND_RESTRICT: "restrict"}
_SIZED_KINDS = frozenset({KIND_INT, KIND_ENUM, KIND_ENUM64, KIND_STRUCT, KIND_UNION,
                          KIND_FLOAT, KIND_DATASEC})
_REF_KINDS = frozenset({KIND_PTR, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT,
                        KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DECL_TAG, KIND_TYPE_TAG})

# The integer-valued members of a BTF map definition (``__uint(name, N)``).
MAP_INT_FIELDS = ("type", "max_entries", "map_flags", "key_size", "value_size", "pinning",
                  "numa_node", "map_extra")
MAP_OF_MAPS_TYPES = (12, 13)  # BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_HASH_OF_MAPS
MAP_PROG_ARRAY = 3


class BtfError(ProgramError):
    """Malformed BTF, or a type that cannot be used the way it is asked to be."""


class Member(NamedTuple):
    """A STRUCT/UNION member: ``bit_offset`` from the start of the aggregate,
    ``bitfield_size`` 0 for an ordinary member."""
    name: str
    type: int
    bit_offset: int
    bitfield_size: int = 0


class EnumValue(NamedTuple):
    name: str
    value: int


class Param(NamedTuple):
    """A FUNC_PROTO parameter (``type`` 0 with no name: a trailing ``...``)."""
    name: str
    type: int


class VarSecinfo(NamedTuple):
    """A DATASEC entry: the VAR (or FUNC) type id, its byte offset and size."""
    type: int
    offset: int
    size: int


class Array(NamedTuple):
    type: int
    index_type: int
    nelems: int


class BtfType:
    """One BTF type record.

    Always set: ``id``, ``kind`` (a KIND_* number), ``name`` ('' if
    anonymous), ``vlen``, ``kflag``, ``size`` (INT, ENUM, ENUM64, STRUCT,
    UNION, FLOAT, DATASEC; else None) and ``type`` (the referenced id for PTR,
    TYPEDEF, the modifiers, FUNC, FUNC_PROTO (return type), VAR, DECL_TAG;
    else None). Kind-specific: ``encoding``/``int_offset``/``bits`` (INT),
    ``array`` (ARRAY), ``members`` (STRUCT/UNION), ``values`` (ENUM/ENUM64),
    ``params`` (FUNC_PROTO), ``linkage`` (VAR; FUNC has it in ``vlen``),
    ``secinfos`` (DATASEC), ``component_idx`` (DECL_TAG).
    """

    __slots__ = (
        "array",
        "bits",
        "component_idx",
        "encoding",
        "id",
        "int_offset",
        "kflag",
        "kind",
        "linkage",
        "members",
        "name",
        "params",
        "secinfos",
        "size",
        "type",
        "values",
        "vlen",
    )

    def __init__(self, id, kind, name="", vlen=0, kflag=0, size=None, type=None):
        self.id, self.kind, self.name, self.vlen, self.kflag = id, kind, name, vlen, kflag
        self.size, self.type = size, type
        self.encoding = self.int_offset = self.bits = 0
        self.array = None
        self.members = self.values = self.params = self.secinfos = ()
        self.linkage = 0
        self.component_idx = None

    @property
    def kind_name(self):
        return KIND_NAMES[self.kind]

    def __repr__(self):
        return f"<BtfType [{self.id}] {self.kind_name} {self.name!r}>"


class BtfMapDef:
    """A BTF-defined map, as read from its struct (all sizes in bytes).

    ``key_type`` / ``value_type`` are the BTF ids given by ``__type(key, T)``
    / ``__type(value, T)`` (None with ``key_size`` / ``value_size`` or
    nothing). ``inner`` is the inner map's definition for a map of maps,
    ``values_kind`` is "maps" or "progs" when the struct has a ``values``
    member, and ``values_offset`` that member's byte offset (initial slots
    are relocations at ``values_offset + 8 * slot`` of the map's symbol).
    """

    __slots__ = (
        "inner",
        "key_size",
        "key_type",
        "map_extra",
        "map_flags",
        "max_entries",
        "numa_node",
        "pinning",
        "type",
        "value_size",
        "value_type",
        "values_kind",
        "values_offset",
    )

    def __init__(self):
        for f in self.__slots__:
            setattr(self, f, None)

    def __repr__(self):
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in self.__slots__
                           if getattr(self, f) is not None)
        return f"BtfMapDef({fields})"


_HDR = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")


class Btf:
    """Parsed BTF: ``types[id]`` (``types[0]`` is void), ``strings``.

    ``Btf(data)`` parses (and checks) the bytes of a ``.BTF`` section; every
    type id a record refers to is checked to exist.
    """

    def __init__(self, data):
        data = bytes(data)
        self.data = data
        if len(data) < _HDR.size:
            raise BtfError(f"BTF truncated: {len(data)} bytes, header needs {_HDR.size}")
        magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = \
            _HDR.unpack_from(data, 0)
        if magic == 0x9FEB:
            raise BtfError("BTF is big-endian (byte-swapped magic)")
        if magic != BTF_MAGIC:
            raise BtfError(f"bad BTF magic 0x{magic:04x}")
        if version != 1:
            raise BtfError(f"unsupported BTF version {version}")
        if hdr_len < _HDR.size or hdr_len > len(data):
            raise BtfError(f"bad BTF header length {hdr_len}")
        body = len(data) - hdr_len
        if type_off + type_len > body or str_off + str_len > body:
            raise BtfError("BTF type or string section extends past the end of .BTF")
        if type_off % 4 or type_len % 4:
            raise BtfError("BTF type section is not 4-byte aligned")
        if str_len == 0 or data[hdr_len + str_off] != 0 or \
                data[hdr_len + str_off + str_len - 1] != 0:
            raise BtfError("BTF string section is empty or not NUL-delimited")
        self.flags = flags
        self.strings = data[hdr_len + str_off:hdr_len + str_off + str_len]
        self.types = [BtfType(0, KIND_UNKN, "void")]
        self._parse_types(data[hdr_len + type_off:hdr_len + type_off + type_len])
        self._check_refs()
        self._by_name = None

    # -- parsing ---------------------------------------------------------
    def string(self, off):
        """The NUL-terminated string at ``off`` in the string section."""
        if off >= len(self.strings):
            raise BtfError(f"BTF name offset {off} outside the string section "
                           f"({len(self.strings)} bytes)")
        end = self.strings.index(b"\0", off)
        return self.strings[off:end].decode("utf-8", "replace")

    def _parse_types(self, sec):
        pos, n = 0, len(sec)

        def take(count, fmt):
            nonlocal pos
            size = struct.calcsize(fmt) * count
            if pos + size > n:
                raise BtfError(f"BTF type [{len(self.types)}] truncated at type-section "
                               f"offset {pos}")
            out = list(struct.iter_unpack(fmt, sec[pos:pos + size])) if count else []
            pos += size
            return out

        while pos < n:
            tid = len(self.types)
            if tid > BTF_MAX_TYPE:
                raise BtfError("too many BTF types")
            (name_off, info, sz), = take(1, "<III")
            kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
            if kind == KIND_UNKN or kind > KIND_ENUM64:
                raise BtfError(f"BTF type [{tid}] has unknown kind {kind}")
            t = BtfType(tid, kind, self.string(name_off), vlen, kflag)
            if kind in _SIZED_KINDS:
                t.size = sz
            elif kind in _REF_KINDS:
                t.type = sz
            if kind == KIND_INT:
                (v,), = take(1, "<I")
                t.encoding, t.int_offset, t.bits = (v >> 24) & 0x0F, (v >> 16) & 0xFF, v & 0xFF
            elif kind == KIND_ARRAY:
                t.array = Array(*take(1, "<III")[0])
            elif kind in (KIND_STRUCT, KIND_UNION):
                mem = []
                for m_name, m_type, m_off in take(vlen, "<III"):
                    if kflag:
                        mem.append(Member(self.string(m_name), m_type, m_off & 0xFFFFFF,
                                          m_off >> 24))
                    else:
                        mem.append(Member(self.string(m_name), m_type, m_off, 0))
                t.members = tuple(mem)
            elif kind == KIND_ENUM:
                signed = bool(kflag)
                t.values = tuple(EnumValue(self.string(a), b if signed else b & 0xFFFFFFFF)
                                 for a, b in take(vlen, "<Ii"))
            elif kind == KIND_ENUM64:
                vals = []
                for a, lo, hi in take(vlen, "<III"):
                    v = (hi << 32) | lo
                    if kflag and v >> 63:
                        v -= 1 << 64
                    vals.append(EnumValue(self.string(a), v))
                t.values = tuple(vals)
            elif kind == KIND_FUNC_PROTO:
                t.params = tuple(Param(self.string(a), b) for a, b in take(vlen, "<II"))
            elif kind == KIND_VAR:
                (t.linkage,), = take(1, "<I")
            elif kind == KIND_DATASEC:
                t.secinfos = [VarSecinfo(*s) for s in take(vlen, "<III")]
            elif kind == KIND_DECL_TAG:
                (t.component_idx,), = take(1, "<i")
            self.types.append(t)

    def _check_refs(self):
        n = len(self.types)
        for t in self.types[1:]:
            refs = []
            if t.type is not None:
                refs.append(t.type)
            if t.array is not None:
                refs += [t.array.type, t.array.index_type]
            refs += [m.type for m in t.members]
            refs += [p.type for p in t.params]
            refs += [s.type for s in t.secinfos]
            for r in refs:
                if r >= n:
                    raise BtfError(f"BTF type [{t.id}] {t.kind_name} refers to type [{r}], "
                                   f"past the last type [{n - 1}]")
            if t.kind in (KIND_VAR, KIND_FUNC, KIND_DECL_TAG) and t.type == 0:
                raise BtfError(f"BTF type [{t.id}] {t.kind_name} refers to void")

    # -- queries ---------------------------------------------------------
    def __len__(self):
        return len(self.types)

    def __getitem__(self, tid):
        return self.get(tid)

    def get(self, tid):
        """The record of type ``tid`` (0 is void)."""
        if not isinstance(tid, int) or tid < 0 or tid >= len(self.types):
            raise BtfError(f"no BTF type [{tid}]")
        return self.types[tid]

    def find(self, name, kind=None):
        """The id of the first type named ``name`` (of ``kind`` if given), or None."""
        if self._by_name is None:
            self._by_name = {}
            for t in self.types[1:]:
                if t.name:
                    self._by_name.setdefault(t.name, []).append(t.id)
        for tid in self._by_name.get(name, ()):
            if kind is None or self.types[tid].kind == kind:
                return tid
        return None

    def datasec(self, name):
        """The DATASEC record named ``name`` (".maps", ".data", ...), or None."""
        tid = self.find(name, KIND_DATASEC)
        return None if tid is None else self.types[tid]

    def resolve(self, tid):
        """``tid`` with typedefs, const/volatile/restrict and type tags skipped."""
        seen = 0
        t = self.get(tid)
        while t.kind in MODIFIER_KINDS:
            seen += 1
            if seen > len(self.types):
                raise BtfError(f"BTF type [{tid}] is a loop of typedefs/modifiers")
            t = self.get(t.type)
        return t.id

    def sizeof(self, tid, _depth=0):
        """Size in bytes of type ``tid``: PTR 8, ARRAY nelems * element size,
        VAR its type's; void, FUNC, FUNC_PROTO and FWD have none (BtfError)."""
        if _depth > 64:
            raise BtfError(f"BTF type [{tid}] nests too deeply")
        t = self.get(self.resolve(tid))
        if t.kind in _SIZED_KINDS:
            return t.size
        if t.kind == KIND_PTR:
            return 8
        if t.kind == KIND_ARRAY:
            return t.array.nelems * self.sizeof(t.array.type, _depth + 1)
        if t.kind == KIND_VAR:
            return self.sizeof(t.type, _depth + 1)
        raise BtfError(f"BTF type [{tid}] '{self.type_name(tid)}' has no size")

    def member(self, tid, name):
        """The member ``name`` of the STRUCT/UNION ``tid`` (after resolve), or None."""
        t = self.get(self.resolve(tid))
        for m in t.members:
            if m.name == name:
                return m
        return None

    # -- C-like names ----------------------------------------------------
    def type_name(self, tid):
        """A C-like spelling of type ``tid``: ``unsigned int``, ``__u32``,
        ``struct flow_key``, ``char *``, ``int (*)[4]``, ``const volatile
        int``; a VAR or FUNC as its declaration (``int limit``, ``int
        prog(struct xdp_md *ctx)``), a DATASEC as ``SEC("name")``."""
        try:
            t = self.get(tid)
        except BtfError:
            return f"<bad type {tid}>"
        if t.kind == KIND_VAR:
            return self._decl(t.type, t.name, 0)
        if t.kind == KIND_FUNC:
            return self._decl(t.type, t.name, 0)
        if t.kind == KIND_DATASEC:
            return f'SEC("{t.name}")'
        if t.kind == KIND_DECL_TAG:
            return f'__attribute__((btf_decl_tag("{t.name}"))) on {self.type_name(t.type)}'
        return self._decl(tid, "", 0)

    def _base_name(self, t):
        k = t.kind
        if t.id == 0:
            return "void"
        if k in (KIND_INT, KIND_FLOAT, KIND_TYPEDEF):
            return t.name or f"<anon {t.kind_name.lower()}>"
        if k in (KIND_STRUCT, KIND_UNION):
            return f"{'struct' if k == KIND_STRUCT else 'union'} {t.name or '{...}'}"
        if k in (KIND_ENUM, KIND_ENUM64):
            return f"enum {t.name or '{...}'}"
        if k == KIND_FWD:
            return f"{'union' if t.kflag else 'struct'} {t.name}"
        return f"<{t.kind_name.lower()} [{t.id}]>"

    def _decl(self, tid, inner, depth):
        """``inner`` is the declarator built so far (``*``, ``(*)[4]``...)."""
        if depth > 32:
            return "..." + (" " + inner if inner else "")
        try:
            t = self.get(tid)
        except BtfError:
            return f"<bad type {tid}>" + (" " + inner if inner else "")
        k = t.kind
        if k == KIND_PTR:
            return self._decl(t.type, "*" + inner, depth + 1)
        if k == KIND_ARRAY:
            if inner.startswith("*"):
                inner = f"({inner})"
            return self._decl(t.array.type, f"{inner}[{t.array.nelems}]", depth + 1)
        if k == KIND_FUNC_PROTO:
            if inner.startswith("*"):
                inner = f"({inner})"
            params = []
            for p in t.params:
                if p.type == 0 and not p.name:
                    params.append("...")
                else:
                    params.append(self._decl(p.type, p.name, depth + 1))
            return self._decl(t.type, f"{inner}({', '.join(params) or 'void'})", depth + 1)
        if k in _QUALIFIERS or k == KIND_TYPE_TAG:
            q = _QUALIFIERS.get(k) or f'__attribute__((btf_type_tag("{t.name}")))'
            target = self.get(t.type)
            if target.kind == KIND_PTR:
                # a qualified pointer: "char * const p"
                return self._decl(target.type, "* " + q + (" " + inner if inner else ""),
                                  depth + 2)
            return f"{q} " + self._decl(t.type, inner, depth + 1)
        if k in (KIND_VAR, KIND_FUNC):
            return self._decl(t.type, inner or t.name, depth + 1)
        base = self._base_name(t)
        return f"{base} {inner}" if inner else base

    # -- BTF-defined maps ------------------------------------------------
    def map_def(self, tid, name="?", _nested=False):
        """Read the map definition struct ``tid`` (a VAR's type in the
        ``.maps`` DATASEC, or the pointee of an outer map's ``values``).

        Raises BtfError naming the map for anything libbpf would refuse: a
        non-struct, an unknown member, ``__uint`` members that are not
        ``int (*)[N]``, key/value sizes that contradict their types, a
        ``values`` member on a map type that has no inner maps.
        """
        st = self.get(self.resolve(tid))
        if st.kind != KIND_STRUCT:
            raise BtfError(f"map '{name}': definition is a {st.kind_name}, not a struct")
        d = BtfMapDef()
        seen = set()
        for m in st.members:
            if m.name in seen:
                raise BtfError(f"map '{name}': member '{m.name}' given twice")
            seen.add(m.name)
            if m.name in MAP_INT_FIELDS:
                v = self._map_int(m, name)
                if m.name in ("key_size", "value_size"):
                    _check_size(d, m.name, v, name)
                else:
                    setattr(d, m.name, v)
            elif m.name in ("key", "value"):
                ptr = self.get(self.resolve(m.type))
                if ptr.kind != KIND_PTR:
                    raise BtfError(f"map '{name}': member '{m.name}' is not a pointer "
                                   f"(__type({m.name}, T) declares 'T *{m.name}')")
                try:
                    size = self.sizeof(ptr.type)
                except BtfError as e:
                    raise BtfError(f"map '{name}': {m.name} type has no size ({e})") from None
                setattr(d, m.name + "_type", ptr.type)
                _check_size(d, m.name + "_size", size, name)
            elif m.name == "values":
                if _nested:
                    raise BtfError(f"map '{name}': an inner map cannot have inner maps")
                arr = self.get(self.resolve(m.type))
                if arr.kind != KIND_ARRAY:
                    raise BtfError(f"map '{name}': member 'values' is not an array "
                                   f"(use __array(values, ...))")
                ptr = self.get(self.resolve(arr.array.type))
                if ptr.kind != KIND_PTR:
                    raise BtfError(f"map '{name}': 'values' elements are not pointers")
                pointee = self.get(self.resolve(ptr.type))
                if m.bit_offset % 8:
                    raise BtfError(f"map '{name}': member 'values' is not byte aligned")
                d.values_offset = m.bit_offset // 8
                if pointee.kind == KIND_STRUCT:
                    d.values_kind = "maps"
                    d.inner = self.map_def(pointee.id, f"{name}.inner", _nested=True)
                elif pointee.kind == KIND_FUNC_PROTO:
                    d.values_kind = "progs"
                else:
                    raise BtfError(f"map '{name}': 'values' must point to a map definition "
                                   f"struct or a function prototype, not "
                                   f"{self.type_name(ptr.type)}")
            else:
                raise BtfError(f"map '{name}': unknown map definition member "
                               f"'{m.name or '(anon)'}'")
        if d.values_kind is not None:
            if d.value_type is not None:
                raise BtfError(f"map '{name}': both 'value' and 'values' given")
            if d.values_kind == "maps" and d.type not in MAP_OF_MAPS_TYPES:
                raise BtfError(f"map '{name}': inner map definition given for map type "
                               f"{d.type}, which is not a map of maps")
            if d.values_kind == "progs" and d.type != MAP_PROG_ARRAY:
                raise BtfError(f"map '{name}': program values given for map type {d.type}, "
                               f"which is not a prog array")
            if d.value_size not in (None, 4):
                raise BtfError(f"map '{name}': value_size {d.value_size} with 'values' "
                               f"(must be 4)")
            d.value_size = 4
        return d

    def _map_int(self, m, name):
        ptr = self.get(self.resolve(m.type))
        arr = self.get(self.resolve(ptr.type)) if ptr.kind == KIND_PTR else None
        if arr is None or arr.kind != KIND_ARRAY:
            raise BtfError(f"map '{name}': member '{m.name}' is not 'int (*{m.name})[N]' "
                           f"(__uint({m.name}, N)) but {self.type_name(m.type)}")
        return arr.array.nelems


def _check_size(d, field, size, name):
    """Set key_size/value_size, refusing a contradiction between ``__type``
    and ``__uint(key_size, ...)`` (either may come first)."""
    cur = getattr(d, field)
    if cur is not None and cur != size:
        raise BtfError(f"map '{name}': {field} {cur} contradicts the size {size} of its type")
    setattr(d, field, size)


def parse_btf(data):
    """Parse a ``.BTF`` section's bytes (BtfError if malformed)."""
    return Btf(data)
