"""numpy dtypes of eBPF map keys and values from their BTF types.

``btf_dtype(btf, type_id, size)`` turns the BTF type of a map's key or value
(``MapDef.btf_key_type`` / ``btf_value_type``) into a dtype that
``dataplane.maps.Map`` accepts (an integer, or a record of integer fields of
1, 2, 4 or 8 bytes: map_layout.field_list) with the type's exact byte layout:
``itemsize == size`` and every field at its C offset. Padding is left out of
the record (numpy offsets and itemsize), so the fields are the C members:

=========================== ================================================
BTF type                    dtype
=========================== ================================================
int, enum, typedef chain    the plain integer: ``<u4``, ``<i8``, ``?`` for
                            ``_Bool``; big-endian (``>u2``) when the chain
                            goes through ``__be16``/``__be32``/``__be64``
struct                      a record, one field per integer member, named
                            after it; nested structs flattened as
                            ``outer_inner``; the members of an anonymous
                            struct keep their own names
array of integers, N        N fields ``name0`` .. ``nameN-1`` (``name_0`` ..
                            when the name ends with a digit: ``ip6_0``);
                            an array of structs gives ``name0_field`` ...
unsigned byte array         (``__u8 x[N]``) N = 2, 4, 8: one big-endian
                            ``>uN`` field ``name``; N = 16: two ``>u8``
                            fields ``name_hi`` / ``name_lo``
16-byte integer array whose (``__be32 addr6[4]``): ``name_hi`` /
name holds ``addr``         ``name_lo`` as above
DATASEC (``.data``,         a record of the section's variables, by name, at
``.rodata``, ``.bss``)      their offsets, each laid out as a member
=========================== ================================================

Why the byte arrays are joined: network fields kept as bytes are in network
order, so reading them as one big-endian integer gives the number a person
expects, and map_json prints the result well: a 4-byte ``*addr*`` field as a
dotted IPv4 address, a ``*addr*_hi`` / ``*addr*_lo`` pair as one IPv6 address
(IPv4-mapped ones dotted), the layout programs/flow_counter.py's FLOW_KEY
uses; a ``__u8 port[2]`` prints as the port. ``char`` arrays (text) and
other lengths (``__u8 mac[6]``) stay one field per byte.

What cannot be a field is shown as raw little-endian words over its bytes
(naturally aligned, 8, 4, 2 or 1 bytes), named after the member with the
byte offset inside it as suffix: ``u_0``, ``u_8``:

- unions (the member's name; an anonymous one ``anonOFF``, OFF its offset in
  the enclosing struct), pointers, floats, integers of other sizes (__int128)
- bitfields: each run of adjacent bitfields covers whole bytes, named after
  the run's first member (``lo_0`` for ``__u32 lo:4, mid:12``)
- arrays longer than MAX_ARRAY_FIELDS elements
- a nested struct that cannot be laid out (a member past its end or without
  a size, a struct inside itself, nesting deeper than 32): the whole of it

Names are the BTF's (a function's static variable keeps clang's
``func.var``); a name given twice gets ``_`` appended until it is unique.

The whole type falls back to the sizes-only dtype of program.bytes_dtype
(fields ``b0``, ``b8``, ...) when there is no BTF or type id, the BTF size
differs from ``size``, the type is a union, pointer, float or anything else
that is not an integer, struct, array or DATASEC, the fields would overlap or
run past ``size``, the walk takes more than 16 steps a byte (BTF shaped to
explode), or anything else goes wrong: btf_dtype never raises for odd BTF.

Global data: clang leaves bytes in a data section that no variable names
(alignment padding, and for ``.rodata`` possibly constants the code reads).
A record's gaps are not written back when a value goes through its fields
(program.initialise does), so gaps of a DATASEC are raw ``gapOFF_N`` fields
unless ``initial`` (the section's bytes, MapDef.initial) shows them zero.

``map_dtypes(btf, mapdef)`` gives the (key, value) dtypes of a MapDef the way
program._generate picks them, keeping the constraints Map puts on array keys
(a plain 4-byte integer) and devmap values.

Two things a user of a padded record needs (the sizes-only dtypes have no
gaps, so nothing needed them before): its text for a generated file is
``str(dt)`` (the dict form with offsets and itemsize), not ``dt.descr``
(numpy rebuilds gaps as void fields ``f1`` ..., which Map refuses); and a
key's bytes must be built on zeros (``np.zeros(1, dt)`` then assign), as
``np.array([key], dt)`` leaves the padding bytes uninitialised and a hash key
would then differ from the program's.
"""

import numpy as np

from . import btf as B

#: Arrays with more elements are shown as raw words, not one field each.
MAX_ARRAY_FIELDS = 256
_MAX_DEPTH = 32
_BIG_ENDIAN_TYPEDEFS = frozenset({"__be16", "__be32", "__be64"})
_SIZES = (1, 2, 4, 8)
_DATA_KINDS = ("data", "rodata", "bss")
# linux/bpf.h map types (the numbers of dataplane.maps)
_ARRAY, _PROG_ARRAY, _PERCPU_ARRAY, _ARRAY_OF_MAPS, _HASH_OF_MAPS = 2, 3, 6, 12, 13
_DEVMAP, _DEVMAP_HASH, _RINGBUF = 14, 25, 27
#: keyed by an index: Map wants a plain 4-byte integer key
_INDEX_KEYED = frozenset({_ARRAY, _PROG_ARRAY, _PERCPU_ARRAY, _ARRAY_OF_MAPS, _DEVMAP})
#: values are ids / ifindexes: Map wants a plain integer value
_PLAIN_VALUE = frozenset({_PROG_ARRAY, _ARRAY_OF_MAPS, _HASH_OF_MAPS, _DEVMAP, _DEVMAP_HASH})


class _Unrepresentable(Exception):
    """This type (or member) cannot be fields: show its bytes raw."""


def _fallback(size):
    from .program import bytes_dtype  # lazily: program.py imports much of dataplane
    return bytes_dtype(size)


def btf_dtype(btf, type_id, size, initial=None):
    """The numpy dtype of BTF type ``type_id`` (a map key or value of
    ``size`` bytes) for ``dataplane.maps.Map``; see the module docstring.
    ``initial``: for a DATASEC, the section's initial bytes (gaps that are
    zero there stay padding). Falls back to ``program.bytes_dtype(size)``
    rather than raise."""
    try:
        dt = _build(btf, type_id, size, initial)
    except Exception:  # noqa: BLE001 -- odd BTF (or a gap in the checks): sizes only
        dt = None
    if dt is None:
        return _fallback(size)
    return dt


def map_dtypes(btf, mapdef):
    """(key dtype, value dtype) of an ``elf.MapDef``, from its BTF where it
    has some: a keyless map gets ``<u4`` (as program._generate does), an
    index-keyed map (array, prog array, devmap, array of maps) keeps a plain
    4-byte key, a devmap a plain integer value, a global-data section its
    variables (gaps judged from ``mapdef.initial``). A ring buffer has no
    key or value type here: (None, None) (its records' size comes from the
    verifier)."""
    if mapdef.type == _RINGBUF:
        return None, None
    if mapdef.key_size:
        key = btf_dtype(btf, mapdef.btf_key_type, mapdef.key_size)
    else:
        key = np.dtype("<u4")
    if mapdef.type in _INDEX_KEYED and (key.names is not None or key.itemsize != 4):
        key = np.dtype("<u4")
    initial = mapdef.initial if mapdef.kind in _DATA_KINDS else None
    value = btf_dtype(btf, mapdef.btf_value_type, mapdef.value_size, initial)
    if mapdef.type in _PLAIN_VALUE and value.names is not None:
        value = _fallback(mapdef.value_size)
    return key, value


# ---------------------------------------------------------------------------
class _TooMuch(Exception):
    """The walk went over its budget (BTF shaped to explode): sizes only."""


def _build(btf, type_id, size, initial):
    if btf is None or type_id is None or not isinstance(size, int) or size <= 0:
        return None
    t = btf.get(btf.resolve(type_id))
    walk = _Layout(btf, size)
    if t.kind == B.KIND_DATASEC:
        if t.size != size:
            return None
        walk.datasec(t, initial)
    else:
        if btf.sizeof(type_id) != size:
            return None
        if t.kind in (B.KIND_INT, B.KIND_ENUM, B.KIND_ENUM64):
            fmt = _scalar_fmt(btf, type_id)
            return None if fmt is None else np.dtype(fmt)
        if t.kind == B.KIND_STRUCT:
            walk.struct(t, "", 0, 0)
        elif t.kind == B.KIND_ARRAY:
            walk.array(t, _typedef_name(btf, type_id) or "item", 0, 0)
        else:
            return None
    return _record(walk.out, size)


def _record(fields, size):
    """The record dtype of [(name, fmt, offset)], or None if it is empty, has
    overlapping fields or fields past ``size``."""
    if not fields:
        return None
    fields = sorted(fields, key=lambda f: f[2])
    names, formats, offsets, taken, end = [], [], [], set(), 0
    for name, fmt, off in fields:
        width = np.dtype(fmt).itemsize
        if off < end or off + width > size:
            return None
        end = off + width
        while name in taken:
            name += "_"
        taken.add(name)
        names.append(name)
        formats.append(fmt)
        offsets.append(off)
    dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": size})
    from ..map_layout import field_list
    field_list(dt, "value", "btf")  # MapError if a field is not a plain integer
    return dt


def _join(prefix, name):
    return f"{prefix}_{name}" if prefix and name else (prefix or name)


def _typedef_name(btf, tid):
    """The first typedef's name on the chain from ``tid`` to its real type."""
    for _ in range(len(btf.types)):
        t = btf.get(tid)
        if t.kind == B.KIND_TYPEDEF:
            return t.name
        if t.kind not in B.MODIFIER_KINDS:
            return None
        tid = t.type
    return None


def _big_endian(btf, tid):
    for _ in range(len(btf.types)):
        t = btf.get(tid)
        if t.kind == B.KIND_TYPEDEF and t.name in _BIG_ENDIAN_TYPEDEFS:
            return True
        if t.kind not in B.MODIFIER_KINDS:
            return False
        tid = t.type
    return False


def _scalar_fmt(btf, tid):
    """The numpy format of an integer / enum type, or None."""
    t = btf.get(btf.resolve(tid))
    if t.kind == B.KIND_INT:
        if t.size not in _SIZES or t.bits != 8 * t.size or t.int_offset:
            return None
        if t.encoding & B.INT_BOOL and t.size == 1:
            return "?"
        signed = bool(t.encoding & B.INT_SIGNED)
    elif t.kind in (B.KIND_ENUM, B.KIND_ENUM64):
        if t.size not in _SIZES:
            return None
        signed = bool(t.kflag)
    else:
        return None
    if t.size == 1:
        return "i1" if signed else "u1"
    order = ">" if _big_endian(btf, tid) else "<"
    return f"{order}{'i' if signed else 'u'}{t.size}"


def _bit_width(btf, m):
    if m.bitfield_size:
        return m.bitfield_size
    t = btf.get(btf.resolve(m.type))
    if t.kind == B.KIND_INT:
        return t.int_offset + t.bits
    return 8 * btf.sizeof(m.type)


def _is_bitfield(btf, m):
    if m.bitfield_size or m.bit_offset % 8:
        return True
    t = btf.get(btf.resolve(m.type))
    return t.kind == B.KIND_INT and bool(t.int_offset or t.bits != 8 * t.size)


class _Layout:
    """The fields [(name, numpy format, byte offset)] of one type, in ``out``.
    ``steps`` bounds the walk (a field is at least a byte, so a sane type
    needs a few steps per byte); ``path`` holds the structs being walked (a
    struct inside itself is raw bytes)."""

    def __init__(self, btf, size):
        self.btf, self.out, self.path = btf, [], set()
        self.steps = 64 + 16 * size

    def _step(self):
        self.steps -= 1
        if self.steps < 0:
            raise _TooMuch

    def raw(self, name, start, end):
        """Naturally aligned little-endian words over bytes [start, end),
        named ``name_OFF`` (OFF relative to ``start``)."""
        name = name or f"anon{start}"
        off = start
        while off < end:
            self._step()
            s = next(s for s in (8, 4, 2, 1) if off % s == 0 and off + s <= end)
            self.out.append((f"{name}_{off - start}", f"<u{s}", off))
            off += s

    def member(self, tid, name, off, depth):
        """Fields of a member of type ``tid`` at byte ``off``; raw words over
        its bytes when it cannot be fields."""
        self._step()
        btf = self.btf
        size = btf.sizeof(tid)  # BtfError (no size): the enclosing type is raw
        if size == 0:
            return
        mark = len(self.out)
        try:
            if depth > _MAX_DEPTH:
                raise _Unrepresentable
            t = btf.get(btf.resolve(tid))
            if t.kind in (B.KIND_INT, B.KIND_ENUM, B.KIND_ENUM64):
                fmt = _scalar_fmt(btf, tid)
                if fmt is None:
                    raise _Unrepresentable
                self.out.append((name, fmt, off))
            elif t.kind == B.KIND_STRUCT:
                self.struct(t, name, off, depth + 1)
            elif t.kind == B.KIND_ARRAY:
                self.array(t, name, off, depth + 1)
            else:  # union, pointer, float, ...
                raise _Unrepresentable
        except (_Unrepresentable, B.BtfError, RecursionError):
            del self.out[mark:]
            self.raw(name, off, off + size)

    def struct(self, t, prefix, base, depth):
        if t.id in self.path:
            raise _Unrepresentable
        self.path.add(t.id)
        try:
            self._members(t, prefix, base, depth)
        finally:
            self.path.discard(t.id)

    def _members(self, t, prefix, base, depth):
        btf, members, i = self.btf, t.members, 0
        while i < len(members):
            self._step()
            m = members[i]
            if _is_bitfield(btf, m):  # a run of bitfields: raw over its bytes
                j, hi = i, 0
                while j < len(members) and _is_bitfield(btf, members[j]):
                    self._step()
                    hi = max(hi, members[j].bit_offset + _bit_width(btf, members[j]))
                    j += 1
                start, end = m.bit_offset // 8, (hi + 7) // 8
                if end > t.size:
                    raise _Unrepresentable
                first = next((x.name for x in members[i:j] if x.name), f"anon{start}")
                self.raw(_join(prefix, first), base + start, base + end)
                i = j
                continue
            i += 1
            off = m.bit_offset // 8
            if off + btf.sizeof(m.type) > t.size:
                raise _Unrepresentable
            if m.name:
                name = _join(prefix, m.name)
            elif btf.get(btf.resolve(m.type)).kind == B.KIND_STRUCT:
                name = prefix  # C11 anonymous struct: its members are the struct's
            else:
                name = _join(prefix, f"anon{off}")
            self.member(m.type, name, base + off, depth)

    def array(self, t, name, off, depth):
        btf = self.btf
        n, elem_id = t.array.nelems, t.array.type
        esize = btf.sizeof(elem_id)
        if n == 0 or esize == 0:
            return
        if n > MAX_ARRAY_FIELDS:
            raise _Unrepresentable
        elem = btf.get(btf.resolve(elem_id))
        fmt = None
        if elem.kind in (B.KIND_INT, B.KIND_ENUM, B.KIND_ENUM64):
            fmt = _scalar_fmt(btf, elem_id)
        if fmt is not None and n * esize == 16 and (fmt == "u1" or "addr" in name):
            self.out.append((f"{name}_hi", ">u8", off))
            self.out.append((f"{name}_lo", ">u8", off + 8))
            return
        if fmt == "u1" and n in (2, 4, 8):
            self.out.append((name, f">u{n}", off))
            return
        sep = "_" if name[-1:].isdigit() else ""
        for k in range(n):
            self.member(elem_id, f"{name}{sep}{k}", off + k * esize, depth)

    def datasec(self, t, initial):
        btf, size, used = self.btf, t.size, []
        for vi in t.secinfos:
            self._step()
            var = btf.get(vi.type)
            if var.kind != B.KIND_VAR or vi.size == 0:
                continue  # a FUNC (extern .ksyms) has no bytes here
            if vi.offset + vi.size > size:
                raise _Unrepresentable
            mark = len(self.out)
            try:
                if btf.sizeof(var.type) != vi.size:
                    raise _Unrepresentable
                self.member(var.type, var.name, vi.offset, 0)
            except (_Unrepresentable, B.BtfError):
                del self.out[mark:]
                self.raw(var.name, vi.offset, vi.offset + vi.size)
            used.append((vi.offset, vi.offset + vi.size))
        # bytes no variable covers: raw fields unless the initial bytes are zero
        pos = 0
        for start, end in sorted(used) + [(size, size)]:
            if start > pos and (initial is None or len(initial) < start
                                or any(bytes(initial[pos:start]))):
                self.raw(f"gap{pos}", pos, start)
            pos = max(pos, end)
