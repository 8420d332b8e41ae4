"""Loading clang-compiled eBPF objects (ELF64, little-endian, EM_BPF).

``load_object(path_or_bytes)`` reads an object the way libbpf does and gives
an ``ObjectSpec``: its maps (``MapDef``) and its programs (``ProgramCode``),
each program already linked into its final form:

- Programs are the global FUNC symbols of the executable sections other than
  ``.text`` (each its symbol's byte range; several may share a section). An
  executable section other than ``.text`` without any FUNC symbol is one
  program named after its section (old hand-written objects).
- Subprograms: a ``call`` with src=1 reaches a function either directly (the
  imm is relative, inside the caller's own section) or through an
  R_BPF_64_32 relocation against a FUNC or section symbol, the target then
  being byte ``sym_value + (imm + 1) * 8`` of the symbol's section. Every
  function reached (transitively) is appended once after the program's own
  instructions, in the order first reached, and each call's imm is rewritten
  to the new relative offset. An ``lddw`` with an R_BPF_64_64 relocation
  against code (a callback for bpf_loop & co.: byte ``sym_value + imm``)
  appends the function the same way and becomes ``src=PSEUDO_FUNC`` with
  imm = its relative offset, as the kernel expects.
- Maps: an ``lddw`` relocated against a symbol of ``.maps`` / ``maps``
  becomes ``src=PSEUDO_MAP_IDX`` with imm = the map's index in
  ``ObjectSpec.maps`` (tail imm 0). Relocated against global data (``.data*``,
  ``.rodata*``, ``.bss*``; a variable's symbol or the section's symbol), it
  becomes ``src=PSEUDO_MAP_IDX_VALUE``, imm = the section's map index and the
  tail slot's imm = ``sym_value + original imm`` (the byte offset in the
  section).
- Map order: legacy ``maps`` entries (by offset), then BTF ``.maps`` entries
  (in the order of the ``.maps`` DATASEC), then one map per global-data
  section of non-zero size, in section order, named after the section.

Every failure raises ``ProgramError`` with one line naming the file; the
loader never raises anything else, whatever the bytes.
"""

import hashlib
import os
import struct

from dataplane.ebpf import btf as _btf
from dataplane.ebpf import isa
from dataplane.errors import ProgramError

EM_BPF = 247
ET_REL = 1
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 1, 2, 3, 4, 8, 9
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION, STT_FILE = 0, 1, 2, 3, 4
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
SHN_UNDEF, SHN_LORESERVE, SHN_ABS, SHN_COMMON, SHN_XINDEX = 0, 0xFF00, 0xFFF1, 0xFFF2, 0xFFFF

R_BPF_NONE, R_BPF_64_64, R_BPF_64_ABS64, R_BPF_64_ABS32, R_BPF_64_NODYLD32, R_BPF_64_32 = \
    0, 1, 2, 3, 4, 10
RELOC_NAMES = {R_BPF_NONE: "R_BPF_NONE", R_BPF_64_64: "R_BPF_64_64",
               R_BPF_64_ABS64: "R_BPF_64_ABS64", R_BPF_64_ABS32: "R_BPF_64_ABS32",
               R_BPF_64_NODYLD32: "R_BPF_64_NODYLD32", R_BPF_64_32: "R_BPF_64_32"}
# data relocations (DWARF, BTF) that mean nothing inside code: accepted, ignored
_IGNORED_CODE_RELOCS = frozenset({R_BPF_NONE, R_BPF_64_ABS64, R_BPF_64_ABS32,
                                  R_BPF_64_NODYLD32})

BPF_MAP_TYPE_ARRAY = 2
BPF_F_RDONLY_PROG = 1 << 7
LEGACY_MAP_FIELDS = 5  # struct bpf_map_def: type, key_size, value_size, max_entries, map_flags

CALL_OPCODE = isa.JMP | isa.CALL  # 0x85
# A global-data section is one map value; the kernel refuses array values past
# KMALLOC_MAX_SIZE (a few MiB). The cap here only keeps a corrupt .bss size
# from allocating gigabytes.
MAX_GLOBAL_DATA = 1 << 26


class MapDef:
    """A map as the object defines it (before any map exists).

    ``type`` is the BPF_MAP_TYPE_* number of linux/bpf.h; sizes in bytes.
    ``kind``: "btf" (``.maps``), "legacy" (``maps``, ``struct bpf_map_def``),
    or "data" / "rodata" / "bss" for a global-data section turned into a
    one-entry ARRAY (``initial`` its bytes, zeros for .bss). ``inner`` is the
    inner map's template for a map of maps. ``btf_key_type`` /
    ``btf_value_type`` are BTF type ids (``__type(key/value, T)``; the
    section's DATASEC for global data) or None. ``pinning`` is 0 or 1
    (LIBBPF_PIN_BY_NAME). ``init_values`` maps a slot of a map of maps or a
    prog array to the name of the map / program the C initialises it with
    (``.values = { [1] = &inner_b }``). ``numa_node`` / ``map_extra`` as
    given (None when absent).
    """

    __slots__ = (
        "btf_key_type",
        "btf_value_type",
        "flags",
        "init_values",
        "initial",
        "inner",
        "key_size",
        "kind",
        "map_extra",
        "max_entries",
        "name",
        "numa_node",
        "offset",
        "pinning",
        "section",
        "type",
        "value_size",
    )

    def __init__(self, name, type, key_size=0, value_size=0, max_entries=0, flags=0,
                 inner=None, initial=None, kind="btf", btf_key_type=None, btf_value_type=None,
                 pinning=0, numa_node=None, map_extra=None, init_values=None, section=None,
                 offset=0):
        self.name, self.type, self.key_size, self.value_size = name, type, key_size, value_size
        self.max_entries, self.flags, self.inner, self.initial = max_entries, flags, inner, \
            initial
        self.kind, self.btf_key_type, self.btf_value_type = kind, btf_key_type, btf_value_type
        self.pinning, self.numa_node, self.map_extra = pinning, numa_node, map_extra
        self.init_values = dict(init_values or {})
        self.section, self.offset = section, offset  # where the definition lives

    def __repr__(self):
        inner = f", inner={self.inner!r}" if self.inner is not None else ""
        return (f"MapDef({self.name!r}, type={self.type}, key_size={self.key_size}, "
                f"value_size={self.value_size}, max_entries={self.max_entries}, "
                f"flags={self.flags:#x}, kind={self.kind!r}{inner})")


class ProgramCode:
    """One program, linked: ``insns`` (one ``isa.Insn`` per 8-byte slot) is
    the main function followed by every subprogram it reaches, with calls
    and map / global-data / callback references rewritten (see the module
    docstring). ``section`` is the ELF section ("xdp", "xdp/foo",
    "xdp.frags", "tc", ...): ``is_xdp`` tells whether it names an XDP
    program. ``map_refs``: slot of each rewritten map ``lddw`` -> map index.
    ``func_names``: first slot of each function -> its name (0 -> ``name``).
    """

    __slots__ = ("func_names", "insns", "license", "map_refs", "name", "section")

    def __init__(self, name, section, insns, license, map_refs, func_names):
        self.name, self.section, self.insns, self.license = name, section, insns, license
        self.map_refs, self.func_names = map_refs, func_names

    @property
    def is_xdp(self):
        return is_xdp_section(self.section)

    def __repr__(self):
        return (f"ProgramCode({self.name!r}, section={self.section!r}, "
                f"{len(self.insns)} insns, functions={list(self.func_names.values())})")


class ObjectSpec:
    """A loaded object: ``path`` (or the label given for bytes), ``maps``
    (list of MapDef; an lddw's map index is a position in it), ``programs``
    (name -> ProgramCode, in file order), ``license`` (the ``license``
    section's string, '' if none), ``sha256`` (hex, of the file's bytes),
    ``btf`` (``btf.Btf`` or None)."""

    def __init__(self, path, maps, programs, license, sha256, btf):
        self.path, self.maps, self.programs, self.license = path, maps, programs, license
        self.sha256, self.btf = sha256, btf

    def program(self, name=None):
        """The program ``name`` (a function name; a section name is accepted
        when exactly one program sits in it). Without a name, the only
        program; ProgramError listing the choices otherwise."""
        names = ", ".join(self.programs) or "none"
        if name is None:
            if len(self.programs) == 1:
                return next(iter(self.programs.values()))
            raise ProgramError(f"{self.path}: {len(self.programs)} programs, choose one with "
                               f"{self.path}:NAME (programs: {names})")
        if name in self.programs:
            return self.programs[name]
        in_sec = [p for p in self.programs.values() if p.section == name]
        if len(in_sec) == 1:
            return in_sec[0]
        if len(in_sec) > 1:
            raise ProgramError(f"{self.path}: section '{name}' holds {len(in_sec)} programs, "
                               f"name one of them ({', '.join(p.name for p in in_sec)})")
        raise ProgramError(f"{self.path}: program '{name}' not found (programs: {names})")

    def map_index(self, name):
        """Index of the map called ``name`` (ProgramError if none)."""
        for i, m in enumerate(self.maps):
            if m.name == name:
                return i
        raise ProgramError(f"{self.path}: no map '{name}' "
                           f"(maps: {', '.join(m.name for m in self.maps) or 'none'})")

    def __repr__(self):
        return (f"ObjectSpec({self.path!r}, maps={[m.name for m in self.maps]}, "
                f"programs={list(self.programs)})")


def is_xdp_section(section):
    """True for the section names libbpf loads as XDP programs."""
    return section == "xdp" or section.startswith(("xdp/", "xdp."))


def split_object_ref(ref):
    """``"prog.o:name"`` -> ``("prog.o", "name")``; ``"prog.o"`` -> ``("prog.o",
    None)``. A ref naming an existing file is a path even if it holds a
    colon; otherwise the last colon separates the program (or section) name,
    so ``"prog.o:xdp/second"`` works too."""
    ref = os.fspath(ref)
    if os.path.exists(ref) or ":" not in ref:
        return ref, None
    path, name = ref.rsplit(":", 1)
    if not path:
        return ref, None
    return path, (name or None)


def resolve_ref(ref):
    """Load the object of ``"prog.o[:name]"`` and pick its program:
    ``(ObjectSpec, ProgramCode)``."""
    path, name = split_object_ref(ref)
    spec = load_object(path, name)
    return spec, spec.program(name)


def load_object(path_or_bytes, name=None, label=None):
    """Read an eBPF ELF object (a path, or its bytes) into an ``ObjectSpec``.

    ``name``, if given, is the program the caller wants: ProgramError
    (listing the programs) if the object has no such program (see
    ``ObjectSpec.program``). ``label`` names bytes in messages (default
    ``<bytes>``). Raises only ProgramError.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
        where = label or "<bytes>"
    else:
        where = label or os.fspath(path_or_bytes)
        try:
            with open(path_or_bytes, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ProgramError(f"{where}: cannot read: {(e.strerror or str(e)).lower()}") from None
    try:
        spec = _Loader(data, where).load()
    except ProgramError as e:
        msg = str(e)
        if not msg.startswith(f"{where}:"):
            msg = f"{where}: {msg}"
        raise ProgramError(msg, getattr(e, "hint", None)) from None
    except RecursionError:
        raise ProgramError(f"{where}: malformed object (nesting too deep)") from None
    except Exception as e:  # noqa: BLE001 -- a gap in the checks must still be a ProgramError
        raise ProgramError(f"{where}: malformed object ({type(e).__name__}: {e})") from None
    if name is not None:
        spec.program(name)
    return spec


# ---------------------------------------------------------------------------
class _Section:
    __slots__ = (
        "data",
        "entsize",
        "flags",
        "index",
        "info",
        "link",
        "name",
        "offset",
        "size",
        "type",
    )


class _Symbol:
    __slots__ = ("bind", "index", "name", "shndx", "size", "type", "value")


class _Func:
    """A function's place: section index, byte start, byte size, name."""
    __slots__ = ("name", "shndx", "size", "start")

    def __init__(self, shndx, start, size, name):
        self.shndx, self.start, self.size, self.name = shndx, start, size, name


_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_SYM = struct.Struct("<IBBHQQ")
_REL = struct.Struct("<QQ")


class _Loader:
    def __init__(self, data, where):
        self.data = data
        self.where = where

    def fail(self, msg):
        raise ProgramError(f"{self.where}: {msg}")

    # -- ELF structure ---------------------------------------------------
    def load(self):
        self.read_elf()
        self.read_symbols()
        self.read_relocations()
        self.license = self.read_license()
        self.btf = self.read_btf()
        self.maps = []
        self.map_at = {}      # (shndx, byte offset) -> map index
        self.data_map = {}    # shndx -> map index of a global-data section
        self.read_legacy_maps()
        self.read_btf_maps()
        self.read_data_maps()
        self.find_functions()
        programs = {}
        for func in self.programs:
            programs[func.name] = self.link(func)
        spec = ObjectSpec(self.where, self.maps, programs, self.license,
                          hashlib.sha256(self.data).hexdigest(), self.btf)
        return spec

    def read_elf(self):
        d = self.data
        if len(d) < 4 or d[:4] != b"\x7fELF":
            self.fail("not an ELF file")
        if len(d) < 16:
            self.fail("truncated file (ELF identification)")
        if d[4] != 2:
            self.fail(f"not an eBPF ELF: ELF class {d[4]} (eBPF objects are 64-bit)")
        if d[5] == 2:
            self.fail("big-endian eBPF object: only little-endian objects are supported "
                      "(compile with -target bpfel or -target bpf on a little-endian host)")
        if d[5] != 1:
            self.fail(f"not an ELF file: bad data encoding {d[5]}")
        if len(d) < _EHDR.size:
            self.fail("truncated file (ELF header)")
        (_, e_type, e_machine, _, _, _, e_shoff, _, _, _, _, e_shentsize, e_shnum,
         e_shstrndx) = _EHDR.unpack_from(d, 0)
        if e_machine != EM_BPF:
            self.fail(f"not an eBPF ELF: e_machine {e_machine}, expected {EM_BPF} (EM_BPF)")
        if e_type != ET_REL:
            self.fail(f"not a relocatable eBPF object: e_type {e_type}, expected 1 (ET_REL)")
        if e_shoff == 0:
            self.fail("no section header table")
        if e_shentsize != _SHDR.size:
            self.fail(f"bad section header size {e_shentsize}")
        if e_shoff + _SHDR.size > len(d):
            self.fail("truncated file (section header table)")
        if e_shnum == 0 or e_shstrndx == SHN_XINDEX:   # extended numbering lives in shdr 0
            s0 = _SHDR.unpack_from(d, e_shoff)
            if e_shnum == 0:
                e_shnum = s0[5]
            if e_shstrndx == SHN_XINDEX:
                e_shstrndx = s0[6]
        if e_shnum > 65536 * 16:
            self.fail(f"implausible number of sections {e_shnum}")
        if e_shoff + e_shnum * _SHDR.size > len(d):
            self.fail("truncated file (section header table)")
        secs = []
        for i in range(e_shnum):
            (name, typ, flags, _, off, size, link, info, _, entsize) = \
                _SHDR.unpack_from(d, e_shoff + i * _SHDR.size)
            s = _Section()
            s.index, s.type, s.flags, s.offset, s.size = i, typ, flags, off, size
            s.link, s.info, s.entsize, s.name = link, info, entsize, name
            if typ != SHT_NOBITS and i != 0 and size:
                if off + size > len(d):
                    self.fail(f"truncated file (section {i} extends past the end)")
                s.data = d[off:off + size]
            else:
                s.data = b""
            secs.append(s)
        if not 0 < e_shstrndx < e_shnum or secs[e_shstrndx].type != SHT_STRTAB:
            self.fail("bad section name string table index")
        shstr = secs[e_shstrndx].data
        for s in secs:
            s.name = self.cstr(shstr, s.name, "section name")
        self.sections = secs

    def cstr(self, table, off, what):
        if off == 0 and not table:
            return ""
        if off >= len(table):
            self.fail(f"malformed ELF: {what} offset {off} outside its string table")
        end = table.find(b"\0", off)
        if end < 0:
            self.fail(f"malformed ELF: {what} at offset {off} is not NUL-terminated")
        return table[off:end].decode("utf-8", "replace")

    def section(self, idx, what):
        if not 0 <= idx < len(self.sections):
            self.fail(f"malformed ELF: {what} refers to section {idx}, past the last")
        return self.sections[idx]

    def read_symbols(self):
        tabs = [s for s in self.sections if s.type == SHT_SYMTAB]
        if not tabs:
            self.fail("no symbol table (not a compiled eBPF object?)")
        if len(tabs) > 1:
            self.fail("more than one symbol table")
        st = tabs[0]
        if st.entsize != _SYM.size or st.size % _SYM.size:
            self.fail("malformed symbol table (entry size)")
        strtab = self.section(st.link, "the symbol table")
        if strtab.type != SHT_STRTAB:
            self.fail("malformed symbol table (its string table is not a string table)")
        syms = []
        for i in range(st.size // _SYM.size):
            name, info, _, shndx, value, size = _SYM.unpack_from(st.data, i * _SYM.size)
            s = _Symbol()
            s.index, s.type, s.bind, s.shndx, s.value, s.size = \
                i, info & 0xF, info >> 4, shndx, value, size
            s.name = self.cstr(strtab.data, name, "symbol name")
            if shndx == SHN_XINDEX:
                self.fail(f"symbol '{s.name}' uses extended section indices (unsupported)")
            if shndx != SHN_UNDEF and shndx < SHN_LORESERVE and shndx >= len(self.sections):
                self.fail(f"malformed ELF: symbol '{s.name}' in section {shndx}, "
                          f"past the last")
            if s.type == STT_SECTION and not s.name and shndx < len(self.sections):
                s.name = self.sections[shndx].name
            syms.append(s)
        self.symbols = syms

    def read_relocations(self):
        """self.relocs[target shndx] = {byte offset: (type, symbol)}, for
        executable and map sections (debug/BTF relocations are ignored)."""
        self.relocs = {}
        for rs in self.sections:
            if rs.type not in (SHT_REL, SHT_RELA):
                continue
            target = self.section(rs.info, f"relocation section '{rs.name}'")
            is_code = bool(target.flags & SHF_EXECINSTR)
            if not is_code and target.name not in (".maps", "maps"):
                continue  # .BTF, .BTF.ext, .debug_*: not ours to apply
            if rs.type == SHT_RELA:
                self.fail(f"RELA relocations in '{rs.name}' (eBPF objects use REL)")
            if rs.entsize != _REL.size or rs.size % _REL.size:
                self.fail(f"malformed relocation section '{rs.name}' (entry size)")
            table = self.relocs.setdefault(target.index, {})
            for i in range(rs.size // _REL.size):
                off, info = _REL.unpack_from(rs.data, i * _REL.size)
                rtype, symi = info & 0xFFFFFFFF, info >> 32
                if symi >= len(self.symbols):
                    self.fail(f"malformed relocation {i} of '{rs.name}': symbol index {symi} "
                              f"past the symbol table")
                if is_code:
                    if rtype not in (R_BPF_64_64, R_BPF_64_32) and \
                            rtype not in _IGNORED_CODE_RELOCS:
                        self.fail(f"unsupported relocation type {rtype} at offset {off:#x} "
                                  f"of section '{target.name}'")
                    if rtype in _IGNORED_CODE_RELOCS:
                        continue
                    if off % 8 or off + 8 > target.size:
                        self.fail(f"relocation at offset {off:#x} of section "
                                  f"'{target.name}' is not on an instruction")
                if off in table:
                    self.fail(f"two relocations at offset {off:#x} of section '{target.name}'")
                table[off] = (rtype, self.symbols[symi])

    def read_license(self):
        for s in self.sections:
            if s.name == "license" and s.type == SHT_PROGBITS:
                return s.data.split(b"\0", 1)[0].decode("utf-8", "replace")
        return ""

    def read_btf(self):
        secs = [s for s in self.sections if s.name == ".BTF"]
        if not secs:
            return None
        try:
            b = _btf.Btf(secs[0].data)
        except _btf.BtfError as e:
            self.fail(f"BTF malformed: {e}")
        self.fixup_datasecs(b)
        return b

    def fixup_datasecs(self, b):
        """clang leaves DATASEC sizes and variable offsets 0 in a .o (the
        linker's job): fill them from the sections and symbols, as libbpf does,
        so a dump can decode global data through its DATASEC."""
        by_name = {s.name: s for s in self.sections if s.index}
        for t in b.types:
            if t.kind != _btf.KIND_DATASEC or t.name not in by_name:
                continue
            sec = by_name[t.name]
            t.size = sec.size
            syms = {s.name: s for s in self.symbols
                    if s.shndx == sec.index and s.type in (STT_OBJECT, STT_NOTYPE, STT_FUNC)}
            t.secinfos = [_btf.VarSecinfo(v.type, syms[b.types[v.type].name].value, v.size)
                          if b.types[v.type].name in syms else v for v in t.secinfos]

    # -- maps ------------------------------------------------------------
    def add_map(self, m):
        if any(o.name == m.name for o in self.maps):
            self.fail(f"map definition malformed: two maps named '{m.name}'")
        self.maps.append(m)
        if m.section is not None and m.kind in ("btf", "legacy"):
            self.map_at[(m.section, m.offset)] = len(self.maps) - 1
        return len(self.maps) - 1

    def read_legacy_maps(self):
        secs = [s for s in self.sections if s.name == "maps" and s.type == SHT_PROGBITS]
        if not secs:
            return
        sec = secs[0]
        syms = sorted((s for s in self.symbols if s.shndx == sec.index and s.name
                       and s.type in (STT_OBJECT, STT_NOTYPE)), key=lambda s: s.value)
        if not syms:
            if sec.size:
                self.fail("map definition malformed: 'maps' section without map symbols")
            return
        if sec.size % len(syms):
            self.fail(f"map definition malformed: 'maps' section of {sec.size} bytes is not "
                      f"a whole number of definitions for its {len(syms)} symbols")
        rec = sec.size // len(syms)
        if rec < 4 * LEGACY_MAP_FIELDS:
            self.fail(f"map definition malformed: 'maps' records of {rec} bytes, "
                      f"struct bpf_map_def needs {4 * LEGACY_MAP_FIELDS}")
        for s in syms:
            if s.value % rec or s.value + rec > sec.size:
                self.fail(f"map definition malformed: map '{s.name}' at offset {s.value} of "
                          f"'maps' is not on a {rec}-byte record")
            typ, ksz, vsz, maxe, flags = struct.unpack_from("<5I", sec.data, s.value)
            self.add_map(MapDef(s.name, typ, ksz, vsz, maxe, flags, kind="legacy",
                                section=sec.index, offset=s.value))

    def read_btf_maps(self):
        secs = [s for s in self.sections if s.name == ".maps"]
        if not secs:
            return
        sec = secs[0]
        if self.btf is None:
            self.fail("map definition malformed: a '.maps' section needs BTF "
                      "(compile with -g)")
        ds = self.btf.datasec(".maps")
        if ds is None:
            if sec.size:
                self.fail("BTF malformed: no DATASEC for '.maps'")
            return
        syms = {s.name: s for s in self.symbols if s.shndx == sec.index and
                s.type in (STT_OBJECT, STT_NOTYPE) and s.name}
        relocs = self.relocs.get(sec.index, {})
        for vi in ds.secinfos:
            var = self.btf.get(vi.type)
            if var.kind != _btf.KIND_VAR:
                self.fail(f"map definition malformed: '.maps' entry [{vi.type}] is a "
                          f"{var.kind_name}, not a variable")
            name = var.name
            sym = syms.get(name)
            if sym is None:
                self.fail(f"map definition malformed: map '{name}' has no symbol in '.maps'")
            try:
                bd = self.btf.map_def(var.type, name)
            except _btf.BtfError as e:
                self.fail(f"map definition malformed: {e}")
            m = self._mapdef_from_btf(name, bd)
            m.section, m.offset = sec.index, sym.value
            if bd.values_kind is not None:
                m.init_values = self._init_values(name, sym, bd, relocs, syms,
                                                  m.max_entries)
            self.add_map(m)

    def _mapdef_from_btf(self, name, bd):
        if bd.type is None:
            self.fail(f"map definition malformed: map '{name}' has no type")
        inner = self._mapdef_from_btf(f"{name}.inner", bd.inner) if bd.inner else None
        return MapDef(name, bd.type, bd.key_size or 0, bd.value_size or 0,
                      bd.max_entries or 0, bd.map_flags or 0, inner=inner, kind="btf",
                      btf_key_type=bd.key_type, btf_value_type=bd.value_type,
                      pinning=bd.pinning or 0, numa_node=bd.numa_node,
                      map_extra=bd.map_extra)

    def _init_values(self, name, sym, bd, relocs, map_syms, max_entries):
        """``.values = { [i] = &x }``: relocations inside the map's symbol,
        at ``values_offset + 8 * i``. Returns {slot: map or program name}."""
        out = {}
        base = sym.value + bd.values_offset
        end = sym.value + max(sym.size, bd.values_offset)
        for off, (_, target) in sorted(relocs.items()):
            if not sym.value <= off < end:
                continue
            if off < base or (off - base) % 8:
                self.fail(f"map definition malformed: map '{name}' has a relocation at "
                          f"offset {off - sym.value} of its definition, outside 'values'")
            slot = (off - base) // 8
            if slot >= max_entries:
                self.fail(f"map definition malformed: map '{name}' initialises slot {slot}, "
                          f"past max_entries {max_entries}")
            if bd.values_kind == "maps":
                if target.shndx != sym.shndx or map_syms.get(target.name) is not target:
                    self.fail(f"map definition malformed: map '{name}' slot {slot} refers to "
                              f"'{target.name}', which is not a map")
            else:
                ok = target.type == STT_FUNC and 0 < target.shndx < len(self.sections) and \
                    self.sections[target.shndx].flags & SHF_EXECINSTR
                if not ok:
                    self.fail(f"map definition malformed: prog array '{name}' slot {slot} "
                              f"refers to '{target.name}', which is not a program")
            out[slot] = target.name
        return out

    def read_data_maps(self):
        for s in self.sections:
            kind = _data_kind(s.name)
            if kind is None or not s.flags & SHF_ALLOC or not s.size:
                continue
            if s.flags & SHF_EXECINSTR:
                continue
            if s.size > MAX_GLOBAL_DATA:
                self.fail(f"global data section '{s.name}' is {s.size} bytes, more than "
                          f"{MAX_GLOBAL_DATA} (one map value)")
            initial = bytes(s.size) if s.type == SHT_NOBITS else s.data
            ds = self.btf.datasec(s.name) if self.btf is not None else None
            idx = self.add_map(MapDef(
                s.name, BPF_MAP_TYPE_ARRAY, 4, s.size, 1,
                BPF_F_RDONLY_PROG if kind == "rodata" else 0, initial=initial, kind=kind,
                btf_value_type=ds.id if ds is not None else None, section=s.index))
            self.data_map[s.index] = idx

    # -- programs --------------------------------------------------------
    def find_functions(self):
        """Every FUNC symbol of the executable sections (self.funcs[(shndx,
        start)]), and the programs among them, in file order."""
        self.funcs = {}
        self.programs = []
        code = [s for s in self.sections if s.flags & SHF_EXECINSTR and s.type == SHT_PROGBITS]
        for sec in code:
            if sec.size % 8:
                self.fail(f"section '{sec.name}' is {sec.size} bytes, not a whole number of "
                          f"instructions")
            fsyms = sorted((s for s in self.symbols
                            if s.shndx == sec.index and s.type == STT_FUNC),
                           key=lambda s: (s.value, s.bind == STB_LOCAL))
            starts = sorted({s.value for s in fsyms} | {sec.size})
            for s in fsyms:
                if s.value % 8 or s.value >= sec.size:
                    self.fail(f"function '{s.name}' at offset {s.value} of '{sec.name}' is "
                              f"not on an instruction")
                size = s.size
                if size == 0:  # hand-written code: up to the next function
                    size = next(v for v in starts if v > s.value) - s.value
                if size % 8 or s.value + size > sec.size:
                    self.fail(f"function '{s.name}' ({size} bytes at offset {s.value}) does "
                              f"not fit section '{sec.name}'")
                f = _Func(sec.index, s.value, size, s.name)
                self.funcs.setdefault((sec.index, s.value), f)
                if sec.name != ".text" and s.bind in (STB_GLOBAL, STB_WEAK):
                    self.programs.append(f)
            if not fsyms and sec.name != ".text" and sec.size:
                f = _Func(sec.index, 0, sec.size, sec.name)
                self.funcs[(sec.index, 0)] = f
                self.programs.append(f)
        if not self.programs:
            self.fail("no program section (no function in an executable section other "
                      "than .text)")
        names = {}
        for f in self.programs:
            if f.name in names:
                self.fail(f"two programs named '{f.name}'")
            names[f.name] = f

    def link(self, main):
        prog = main.name
        layout = [main]
        start_of = {(main.shndx, main.start): 0}
        total = main.size // 8
        insns = []
        map_refs = {}
        fixups = []  # (slot, target key)

        def place(key, slot, what):
            nonlocal total
            f = self.funcs.get(key)
            if f is None:
                sec = self.sections[key[0]]
                self.fail(f"{what} at insn {slot} of {prog} targets offset {key[1]} of "
                          f"'{sec.name}', which is not the start of a function")
            if key not in start_of:
                start_of[key] = total
                total += f.size // 8
                layout.append(f)
            fixups.append((slot, key))

        i = 0
        while i < len(layout):
            f = layout[i]
            base = start_of[(f.shndx, f.start)]
            sec = self.sections[f.shndx]
            code = isa.decode(sec.data[f.start:f.start + f.size])
            relocs = self.relocs.get(f.shndx, {})
            for j, ins in enumerate(code):
                slot = base + j
                rel = relocs.get(f.start + j * 8)
                if rel is None:
                    if ins.opcode == CALL_OPCODE and ins.src == isa.CALL_LOCAL and \
                            not ins.is_lddw_tail:
                        tgt = f.start + (j + ins.imm + 1) * 8
                        if not 0 <= tgt < sec.size:
                            self.fail(f"call at insn {slot} of {prog} leaves section "
                                      f"'{sec.name}'")
                        place((f.shndx, tgt), slot, "call")
                    continue
                rtype, sym = rel
                if ins.is_lddw_tail:
                    self.fail(f"relocation against '{sym.name}' at insn {slot} of {prog} "
                              f"is on the second half of an lddw")
                if rtype == R_BPF_64_32:
                    if not (ins.opcode == CALL_OPCODE and ins.src == isa.CALL_LOCAL):
                        self.fail(f"{RELOC_NAMES[rtype]} relocation against '{sym.name}' at "
                                  f"insn {slot} of {prog} is not on a local call")
                    tsec = self._code_symbol_section(sym, slot, prog)
                    place((tsec.index, sym.value + (ins.imm + 1) * 8), slot, "call")
                    continue
                # R_BPF_64_64
                if not ins.is_lddw or j + 1 >= len(code):
                    self.fail(f"R_BPF_64_64 relocation against '{sym.name}' at insn {slot} "
                              f"of {prog} is not on an lddw")
                code[j], code[j + 1] = self._relocate_lddw(ins, code[j + 1], sym, slot, prog,
                                                           place, map_refs)
            insns.extend(code)
            i += 1
        for slot, key in fixups:
            ins = insns[slot]
            rel = start_of[key] - slot - 1
            if not -(1 << 31) <= rel < (1 << 31):
                self.fail(f"call at insn {slot} of {prog} is too far")
            insns[slot] = ins._replace(imm=rel, imm64=rel & 0xFFFFFFFFFFFFFFFF) \
                if ins.opcode == CALL_OPCODE else ins._replace(imm=rel, imm64=rel & 0xFFFFFFFF)
        func_names = {start_of[(f.shndx, f.start)]: f.name for f in layout}
        return ProgramCode(prog, self.sections[main.shndx].name, insns, self.license,
                           dict(sorted(map_refs.items())), func_names)

    def _symbol_section(self, sym, slot, prog, externs):
        """The section a relocation's symbol is in (``externs``: what an undefined
        symbol would be, for the error)."""
        if sym.shndx == SHN_UNDEF:
            self.fail(f"relocation against an unknown symbol '{sym.name}' at insn {slot} "
                      f"of {prog} ({externs} are not supported)")
        if sym.shndx >= SHN_LORESERVE:
            self.fail(f"relocation against '{sym.name}' at insn {slot} of {prog}: "
                      f"symbol is not in a section")
        return self.sections[sym.shndx]

    def _code_symbol_section(self, sym, slot, prog):
        tsec = self._symbol_section(sym, slot, prog, "extern functions")
        if not tsec.flags & SHF_EXECINSTR:
            self.fail(f"call to '{sym.name}' at insn {slot} of {prog}: not code "
                      f"(section '{tsec.name}')")
        return tsec

    def _relocate_lddw(self, ins, tail, sym, slot, prog, place, map_refs):
        tsec = self._symbol_section(sym, slot, prog, "extern variables and kconfig")
        addend = ins.imm  # clang's addend: the offset from a section symbol
        if tsec.flags & SHF_EXECINSTR:   # a function's address (a callback)
            place((tsec.index, sym.value + addend), slot, "code address")
            return (ins._replace(src=isa.PSEUDO_FUNC, imm=0, imm64=0),
                    tail._replace(imm=0))
        if tsec.name in (".maps", "maps"):
            idx = self.map_at.get((tsec.index, sym.value + addend))
            if idx is None:
                self.fail(f"relocation against '{sym.name}' at insn {slot} of {prog} points "
                          f"at offset {sym.value + addend} of '{tsec.name}', where no map "
                          f"is defined")
            map_refs[slot] = idx
            return (ins._replace(src=isa.PSEUDO_MAP_IDX, imm=idx, imm64=idx),
                    tail._replace(imm=0))
        if tsec.index in self.data_map:
            idx = self.data_map[tsec.index]
            off = sym.value + addend
            if not 0 <= off <= tsec.size or off >= 1 << 31:
                self.fail(f"relocation against '{sym.name}' at insn {slot} of {prog}: offset "
                          f"{off} outside '{tsec.name}' ({tsec.size} bytes)")
            map_refs[slot] = idx
            return (ins._replace(src=isa.PSEUDO_MAP_IDX_VALUE, imm=idx,
                                 imm64=(off << 32) | idx),
                    tail._replace(imm=off))
        self.fail(f"relocation against '{sym.name}' at insn {slot} of {prog}: section "
                  f"'{tsec.name}' is neither a map section nor global data")


def _data_kind(name):
    for kind in ("data", "rodata", "bss"):
        if name == "." + kind or name.startswith("." + kind + "."):
            return kind
    return None
