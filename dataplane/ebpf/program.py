"""eBPF objects as dataplane programs: ``load_program("prog.o[:name]")``.

An object's program becomes a generated program file (in the cache, named by
the object's sha256 and the program): its maps as ``Map`` objects, and one
``@xdp`` function that hands the context and the maps to ``bytecode(...)``,
an intrinsic that emits the verified instructions (ebpf/jit.py) into the
batch loop. From there it is an ordinary program (program.py): the loop's
native code is cached, maps pin and dump, faults become XDP_ABORTED.

The kernel's conventions kept here: a helper returning XDP_REDIRECT keeps its
target aside (the kernel's per-CPU bpf_redirect_info), and the verdict is R0's
low 32 bits; stale packet pointers cannot be used after adjust_head (the
verifier invalidates them).
"""

import hashlib
import keyword
import os
from pathlib import Path

import numpy as np
from llvmlite import ir

from .. import config
from ..jit import LazyRef, core_hash
from ..errors import ProgramError
from ..maps import (BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_DEVMAP, BPF_MAP_TYPE_DEVMAP_HASH,
                    BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_LRU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY,
                    BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_LRU_PERCPU_HASH,
                    BPF_MAP_TYPE_PROG_ARRAY, BPF_MAP_TYPE_RINGBUF, BPF_MAP_TYPE_ARRAY_OF_MAPS,
                    BPF_MAP_TYPE_HASH_OF_MAPS, BPF_MAP_TYPE_LPM_TRIE, QUEUE_STACK)
from ..program_check import parse_trace_format
from . import elf, forked_verify, isa, verifier

#: Map types an object's maps may have so far (by address helpers: kernels/ebpf_maps.py).
EBPF_MAP_TYPES = {BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_HASH,
                  BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_HASH,
                  BPF_MAP_TYPE_LRU_PERCPU_HASH, BPF_MAP_TYPE_DEVMAP, BPF_MAP_TYPE_DEVMAP_HASH,
                  BPF_MAP_TYPE_PROG_ARRAY, BPF_MAP_TYPE_RINGBUF, BPF_MAP_TYPE_ARRAY_OF_MAPS,
                  BPF_MAP_TYPE_HASH_OF_MAPS, BPF_MAP_TYPE_LPM_TRIE} | QUEUE_STACK
MAPS_OF_MAPS = {BPF_MAP_TYPE_ARRAY_OF_MAPS, BPF_MAP_TYPE_HASH_OF_MAPS}
#: Inner maps of these types are refused (a pool row of a ring buffer: not yet).
NOT_INNER = MAPS_OF_MAPS | QUEUE_STACK | {BPF_MAP_TYPE_RINGBUF}
DEVMAPS = {BPF_MAP_TYPE_DEVMAP, BPF_MAP_TYPE_DEVMAP_HASH}
#: Helpers an object may call so far (ids; verifier.HELPERS has their prototypes).
EBPF_HELPERS = {h: verifier.HELPERS[h]
                for h in (1, 2, 3, 5, 6, 7, 8, 12, 23, 28, 44, 51, 54, 65, 87, 88, 89, 130,
                          131, 132, 133, 160, 164, 181, 188, 189, 190)}
#: R1's value at entry: the context is reached only through loads the JIT rewrites.
CTX_TOKEN = 0
#: Register value of ``lddw rX, map`` (map index in the low bits).
MAP_TOKEN = 0x7d70 << 48
BPF_F_RDONLY_PROG = 1 << 7
BPF_F_INNER_MAP = 1 << 12
FAULT_ACCESS, FAULT_LOOP = 1, 2  # kernels/runner.py's fault kinds


class MapInfo:
    """What the verifier needs of a map (``inner``: a map of maps' inner template)."""

    def __init__(self, name, type, key_size, value_size, read_only=False, inner=None):
        self.name, self.type, self.key_size, self.value_size = name, type, key_size, value_size
        self.read_only = read_only
        self.inner = MapInfo(*inner) if isinstance(inner, tuple) else inner

    def as_tuple(self):
        """The constructor's arguments (the generated file writes them)."""
        return (self.name, self.type, self.key_size, self.value_size, self.read_only,
                self.inner.as_tuple() if self.inner is not None else None)


def bytes_dtype(n):
    """A dtype of ``n`` bytes: an unsigned integer for 1, 2, 4 and 8, else a
    record of naturally aligned integer fields named by offset (maps.py keys
    and values are integer fields)."""
    if n in (1, 2, 4, 8):
        return np.dtype(f"<u{n}")
    fields, off = [], 0
    while off < n:
        size = next(s for s in (8, 4, 2, 1) if off % s == 0 and off + s <= n)
        fields.append((f"b{off}", f"<u{size}"))
        off += size
    return np.dtype(fields)


def _identifier(name, taken):
    """A Python identifier for a C name (a map's, a program's) in the generated
    file: valid C names such as ``pass`` or ``from`` are Python keywords."""
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name).strip("_") or "map"
    if not out[0].isalpha():
        out = "m" + out
    while out in taken or keyword.iskeyword(out):
        out += "_"
    taken.add(out)
    return out


def map_infos(mapdefs, names=None):
    """The verifier's view of an object's maps (names: the identifiers used).
    Read-only to the program: BPF_F_RDONLY_PROG, .rodata, and device maps (the
    kernel's devmaps set BPF_F_RDONLY_PROG themselves)."""
    names = names or [m.name for m in mapdefs]

    def read_only(m):
        return bool(m.flags & BPF_F_RDONLY_PROG) or m.kind == "rodata" or m.type in DEVMAPS

    return [MapInfo(n, m.type, m.key_size, m.value_size, read_only(m),
                    MapInfo(f"{n}_inner", m.inner.type, m.inner.key_size, m.inner.value_size,
                            read_only(m.inner))
                    if m.type in MAPS_OF_MAPS and m.inner is not None else None)
            for m, n in zip(mapdefs, names)]


def check_supported(obj, prog):
    """ProgramError for what eBPF objects cannot use yet (map types, helpers)."""
    if not prog.is_xdp:
        raise ProgramError(f"{obj.path}: program '{prog.name}' is in section '{prog.section}', "
                           "not an XDP program (SEC(\"xdp\"))")
    value_refs = {i.imm for i in prog.insns if i.is_lddw and i.src in (
        isa.PSEUDO_MAP_IDX_VALUE, isa.PSEUDO_MAP_VALUE)}
    used = set(prog.map_refs.values()) | value_refs
    bound = bound_inner_maps(obj.maps)
    for k in sorted(used):
        m = obj.maps[k]
        inner = m.inner if m.type in MAPS_OF_MAPS else None
        for what in (m, inner) if inner is not None else (m,):
            if what.type not in EBPF_MAP_TYPES or (what is inner and what.type in NOT_INNER):
                from ..maps import MAP_TYPE_NAMES
                raise ProgramError(f"{obj.path}: map '{what.name}': type "
                                   f"{MAP_TYPE_NAMES.get(what.type, what.type)} is not "
                                   f"supported{' inside a map of maps' if what is inner else ''}"
                                   " for eBPF objects yet")
        if k in bound and k in value_refs:
            raise ProgramError(f"{obj.path}: map '{m.name}' is an inner map of "
                               f"'{obj.maps[bound[k]].name}': the address of its value "
                               "in an instruction is not supported yet")
    for k, outer in sorted(bound.items()):
        _check_inner_shape(obj, obj.maps[k], obj.maps[outer])
    for pc, i in enumerate(prog.insns):
        if i.cls == isa.JMP and i.op == isa.CALL and i.src == isa.CALL_HELPER \
                and not i.is_lddw_tail and i.imm in verifier.HELPERS \
                and i.imm not in EBPF_HELPERS:
            raise verifier.VerifierError(prog.name, prog.insns, pc,
                                         f"helper {i.imm} ({verifier.HELPERS[i.imm][0]}) is "
                                         "not supported for eBPF objects yet")


def _check_inner_shape(obj, m, outer):
    """ProgramError unless inner map ``m`` has the shape of ``outer``'s template,
    as the kernel's bpf_map_meta_equal asks when libbpf puts it in its slot. The
    kernel lets max_entries differ under BPF_F_INNER_MAP; not here: an outer
    map's inner maps are rows of one shape (maps.py)."""
    t = outer.inner
    for what, ours, theirs in (("type", m.type, t.type), ("key size", m.key_size, t.key_size),
                               ("value size", m.value_size, t.value_size),
                               ("flags", m.flags, t.flags),
                               ("max_entries", m.max_entries, t.max_entries)):
        if ours != theirs:
            differs = f"{what} {ours}, where the template of '{outer.name}' has {theirs}"
            if what == "max_entries" and t.flags & BPF_F_INNER_MAP:
                raise ProgramError(f"{obj.path}: inner map '{m.name}': {differs}: inner maps "
                                   "of differing sizes (BPF_F_INNER_MAP) are not supported "
                                   "yet")
            raise ProgramError(f"{obj.path}: inner map '{m.name}' does not match its outer "
                               f"map: {differs}")


def inner_numbers(mapdefs):
    """{index of a bound inner map: (index of its outer map, its number in the
    outer's pool, 1-based: what a lookup in the outer gives)}, numbered in slot
    order as _map_of_maps fills the pool."""
    bound, index, out = bound_inner_maps(mapdefs), {m.name: k for k, m in enumerate(mapdefs)}, {}
    for outer, m in enumerate(mapdefs):
        if m.type not in MAPS_OF_MAPS:
            continue
        held = (index.get(name) for _, name in sorted(m.init_values.items()))
        for number, k in enumerate(dict.fromkeys(k for k in held if bound.get(k) == outer), 1):
            out[k] = (outer, number)
    return out


def bound_inner_maps(mapdefs):
    """{index of a map an outer map of maps holds from the start (``.values =
    { [0] = &inner }``): index of that outer map}. Such an inner map lives in
    the outer map's pool (maps.py), not on its own."""
    index = {m.name: k for k, m in enumerate(mapdefs)}
    out = {}
    for k, m in enumerate(mapdefs):
        if m.type in MAPS_OF_MAPS:
            for name in m.init_values.values():
                if name in index:
                    out.setdefault(index[name], k)
    return out


def generated_file(ref):
    """Load, check and verify an object's program; write (once) its generated
    program file. Returns (path of the file, program name). An object with a
    PROG_ARRAY gets all its XDP programs in the file: tail calls reach them."""
    path, name = elf.split_object_ref(ref)
    obj = elf.load_object(path)
    prog = obj.program(name)
    check_supported(obj, prog)
    progs = [prog]
    if any(m.type == BPF_MAP_TYPE_PROG_ARRAY for m in obj.maps):
        progs += [p for p in obj.programs.values() if p is not prog and p.is_xdp]
        for p in progs[1:]:
            check_supported(obj, p)
    return _generate(Path(path).stem, str(path), obj.sha256,
                     [(p.name, p.insns) for p in progs], obj.maps, obj.btf)


def _generate(stem, source, sha, programs, mapdefs, btf=None):
    """Write the generated file of ``programs`` [(name, insns)], the first the
    one asked for: (path, its function name). Keys and values get dtypes from
    the object's BTF where it describes them (field names for dumps)."""
    from .btf_dtype import map_dtypes
    taken = set()
    names = [_identifier(m.name, taken) for m in mapdefs]
    fns = [_identifier(p, taken) for p, _ in programs]
    # the file's text depends on dataplane's code too: a new version writes a new file
    shared = config.WORKERS > 1  # atomics locked (the JIT reads it: XdpTarget)
    key = hashlib.sha256(f"{sha} {programs[0][0]} {core_hash()} {shared}".encode()
                         ).hexdigest()[:20]
    out = Path(config.CACHE_DIR) / "ebpf" / f"{stem}_{fns[0]}_{key}.py"
    if out.exists():
        return out, fns[0]
    verified = map_infos(mapdefs, names)
    infos = [i.as_tuple() for i in verified]
    rows = inner_numbers(mapdefs)  # the bound inner maps: rows of their outer's pool
    formats, helpers, records = {}, set(), {}
    for (prog_name, insns), analysis in zip(programs, verify_programs(programs, verified)):
        formats[prog_name] = trace_formats(analysis, mapdefs, prog_name, insns)
        for k, sizes in analysis.record_sizes.items():
            records.setdefault(k, set()).update(sizes)
        helpers |= {i.imm for i in insns if i.cls == isa.JMP and i.op == isa.CALL
                    and not i.is_lddw_tail}
    table = sorted({t for f in formats.values() for t in f.values()})
    lines = [f'"""Generated by dataplane from {source} (sha256 {sha}): do not edit."""',
             "import numpy as np",
             "from dataplane.maps import InnerMap, Map",
             "from dataplane.program import xdp",
             "from dataplane.ebpf.program import bytecode, initialise",
             "__dataplane_trusted__ = True  # checked by the eBPF verifier, not program_check",
             "__dataplane_reads_packet__ = True",
             f"__dataplane_trace_formats__ = {table!r}",
             f"__dataplane_grows_head__ = {bool(helpers & {44, 54})}",
             f"__dataplane_grows_tail__ = {65 in helpers}",
             f"__dataplane_reads_time__ = {bool(helpers & {5, 160})}",
             f"__dataplane_shared_atomics__ = {shared}", ""]
    ident = dict(zip((p for p, _ in programs), fns))
    for index, (m, n) in enumerate(zip(mapdefs, names)):
        if m.type not in EBPF_MAP_TYPES or index in rows:
            continue
        if m.type in MAPS_OF_MAPS:
            lines += _map_of_maps(m, n, index, rows, mapdefs, btf)
            continue
        if m.type == BPF_MAP_TYPE_RINGBUF:
            record = _dtype_text(_record_dtype(m, records.get(index)))
            lines.append(f"{n} = Map({n!r}, {m.type}, key=None, value=np.dtype({record}), "
                         f"max_entries={m.max_entries})")
            continue
        key_dt, val_dt = map_dtypes(btf, m)
        if m.type in QUEUE_STACK:
            lines.append(f"{n} = Map({n!r}, {m.type}, key=None, "
                         f"value=np.dtype({_dtype_text(val_dt)}), max_entries={m.max_entries})")
            continue
        if m.type == BPF_MAP_TYPE_LPM_TRIE:  # struct bpf_lpm_trie_key: the form maps.py takes
            key_dt = np.dtype([("prefixlen", "<u4"), ("data", "u1", (m.key_size - 4,))])
        lines.append(f"{n} = Map({n!r}, {m.type}, key=np.dtype({_dtype_text(key_dt)}), "
                     f"value=np.dtype({_dtype_text(val_dt)}), max_entries={m.max_entries})")
        if m.initial is not None and any(m.initial):
            lines.append(f"initialise({n}, {bytes(m.initial).hex()!r})")
        if m.type == BPF_MAP_TYPE_PROG_ARRAY:  # slots the C fills: { [1] = &prog }
            for slot, target in sorted(m.init_values.items()):
                if target in ident:
                    lines.append(f"{n}.update({slot}, {ident[target]!r})")
    handles = ", ".join(n if m.type in EBPF_MAP_TYPES and k not in rows else "None"
                        for k, (m, n) in enumerate(zip(mapdefs, names)))
    for (prog_name, insns), fn in zip(programs, fns):
        trace_ids = {pc: (table.index(t), t) for pc, t in formats[prog_name].items()}
        lines += ["", f"ebpf_{fn} = bytecode({prog_name!r}, {isa.encode(insns).hex()!r},",
                  f"                     {infos!r}, {trace_ids!r}, {rows!r})", "", "", "@xdp",
                  f"def {fn}(ctx):",
                  f"    return ebpf_{fn}(ctx, ({handles}{',' if handles else ''}), "
                  f"{'_dp_trace' if table else '0'})", ""]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(out)
    return out, fns[0]


_analyses = {}


def _analysis_key(insns, infos, name):
    return isa.encode(insns), tuple(i.as_tuple() for i in infos), name


def verify_once(insns, infos, name):
    """verifier.verify, remembered for this process: the generated file is
    written after one run and the intrinsic compiled after it needs the same
    answer (a 3,000-instruction program takes 0.4 s to verify)."""
    return verify_programs([(name, insns)], infos)[0]


def verify_programs(programs, infos):
    """verify_once of each (name, insns); those not verified yet in a forked
    child while numba starts here, when that pays (ebpf/forked_verify.py:
    never once numba is started, as it is when the intrinsic compiles)."""
    from ..jit import start_numba
    keys = [_analysis_key(insns, infos, name) for name, insns in programs]
    todo = [(p, k) for p, k in zip(programs, keys) if k not in _analyses]
    if todo:
        found = forked_verify.verify_all([p for p, _ in todo], infos, EBPF_HELPERS,
                                         start_numba)
        _analyses.update(zip((k for _, k in todo), found))
    return [_analyses[k] for k in keys]


def load_insns_program(insns, name="bytecode", checked=True):
    """A Program from bare instructions without maps (classic BPF filters
    translated to eBPF, tests): verified, compiled and cached like an object's."""
    from ..program import load_program
    sha = hashlib.sha256(isa.encode(insns)).hexdigest()
    gen, fn = _generate(name, "instructions", sha, [(name, insns)], [])
    return load_program(str(gen), name=fn, checked=checked)


def trace_formats(analysis, mapdefs, name, insns):
    """{pc: format text} of the program's bpf_trace_printk calls: each format is a
    constant string in read-only global data (the verifier found where)."""
    out = {}
    for pc, (index, offset, size) in sorted(analysis.trace_formats.items()):
        raw = bytes(mapdefs[index].initial or b"")[offset:offset + size]
        text = raw.split(b"\0", 1)[0].decode("latin-1")
        try:
            parse_trace_format(text)
        except ProgramError as exc:
            raise verifier.VerifierError(name, insns, pc, f"bpf_trace_printk: {exc}") from None
        out[pc] = text
    return out


def _map_of_maps(m, n, index, rows, mapdefs, btf):
    """Lines making map of maps ``index``, its pool holding the inner maps the
    object puts in it (``rows``: inner_numbers)."""
    from .btf_dtype import map_dtypes
    key_dt, _ = map_dtypes(btf, m)
    ik, iv = map_dtypes(btf, m.inner)
    lines = [f"{n} = Map({n!r}, {m.type}, key=np.dtype({_dtype_text(key_dt)}), "
             f"value=np.dtype('<u4'), max_entries={m.max_entries}, inner=InnerMap("
             f"{m.inner.type}, np.dtype({_dtype_text(ik)}), np.dtype({_dtype_text(iv)}), "
             f"{m.inner.max_entries}))"]
    number = {mapdefs[k].name: num for k, (outer, num) in rows.items() if outer == index}
    for slot, name in sorted(m.init_values.items()):
        if name in number:
            lines.append(f"{n}.update({slot}, {number[name] - 1})  # {name}")
    return lines


def _record_dtype(m, sizes):
    """The record dtype of a ring buffer: of the one size its programs write
    (bpf_ringbuf_output, bpf_ringbuf_reserve), or raw bytes up to the largest
    of several sizes (RingBuf reads those by their headers)."""
    sizes = sizes or {8}
    for size in sorted(sizes):
        # a record (8-byte header, padded to 8) fits when the ring keeps 8 bytes free
        if size == 0 or 8 + (size + 7) // 8 * 8 > m.max_entries - 8:
            raise ProgramError(f"map '{m.name}': records of {size} bytes, "
                               f"{'empty' if size == 0 else 'larger than the ring'}: "
                               "not supported yet (the kernel "
                               f"{'writes empty records' if size == 0 else 'fails each call'})")
    if len(sizes) > 1:
        return np.dtype(f"V{max(sizes)}")
    return bytes_dtype(next(iter(sizes)))


def _dtype_text(dt):
    # str() of a record with gaps is its dict form (offsets, itemsize); descr would
    # turn the gaps into void fields, which Map refuses
    return repr(dt.str) if dt.names is None else str(dt)


def initialise(m, hex_bytes):
    """Set a global-data map's value to the object's initial bytes."""
    raw = bytes.fromhex(hex_bytes)
    m.update(0, np.frombuffer(raw, np.uint8).view(m.value_dtype)[0].item())


def load_ebpf_program(ref, checked=True, pin=None):
    """``prog.o`` or ``prog.o:name`` -> Program (see program.load_program)."""
    from ..program import load_program
    gen, fn = generated_file(ref)
    return load_program(str(gen), name=fn, checked=checked, pin=pin)


# ---------------------------------------------------------------- the intrinsic

def bytecode(name, code_hex, maps, trace_ids=None, rows=None):
    """A lazy reference (jit.LazyRef) to the intrinsic of the program: numba is
    imported only when the loop is compiled, not when its native code is cached."""
    return _Bytecode(name, code_hex, maps, trace_ids, rows)


class _Bytecode(LazyRef):
    def __init__(self, *args):
        self.args, self.intrinsic = args, None

    def resolve(self):
        if self.intrinsic is None:
            self.intrinsic = _intrinsic(*self.args)
        return self.intrinsic


def _intrinsic(name, code_hex, maps, trace_ids=None, rows=None):
    """An intrinsic ``run(ctx, (map handles...), trace) -> verdict`` for the verified
    instructions ``code_hex`` (verified again when first compiled: the
    analysis tells the JIT which loads are context fields and which accesses
    need run-time checks). ``maps``: (name, type, key_size, value_size,
    read_only) per map index. ``trace_ids``: {pc: (format id, text)} of the
    bpf_trace_printk calls; ``trace`` is then the program's trace ring.
    ``rows``: {index of an inner map the object names: (its outer's index, its
    number in the outer's pool)} (inner_numbers)."""
    from numba import types
    from numba.extending import intrinsic
    from ..kernels.context import XdpMdType

    insns = isa.decode(bytes.fromhex(code_hex))
    infos = [MapInfo(*m) for m in maps]

    @intrinsic
    def run(typingctx, ctx, handles, trace):
        if not isinstance(ctx, XdpMdType):
            return None
        sig = types.int64(ctx, handles, trace)

        def codegen(context, builder, signature, args):
            from . import jit
            analysis = verify_once(insns, infos, name)
            target = XdpTarget(context, builder, signature, args, analysis, infos,
                               trace_ids or {}, rows or {})
            r0 = jit.emit(builder, insns, target, ir.Constant(jit.I64, CTX_TOKEN))
            return target.verdict(builder, r0)

        return sig, codegen

    return run


class XdpTarget:
    """The JIT's view of an XDP packet inside the batch loop (jit.Target)."""

    loop_budget = config.LOOP_BUDGET

    @property
    def single_writer(self):
        """One worker runs the program: its atomics need no lock. Read when the
        program compiles; the generated file's name and text say which
        (``__dataplane_shared_atomics__``), so each mode has its own cache entry."""
        return config.WORKERS == 1

    def __init__(self, context, builder, signature, args, analysis, infos, trace_ids, rows):
        from numba.core import cgutils
        self.context, self.signature = context, signature
        self.ctxty, self.handlesty, self.tracety = signature.args
        self.ctx_value, self.handles_value, self.trace_value = args
        self.trace_ids = trace_ids
        self.ctx = cgutils.create_struct_proxy(self.ctxty)(context, builder, value=args[0])
        self.analysis, self.infos = analysis, infos
        _, inner_of = verifier.expand_maps(infos)
        self.owner = {inner: outer for outer, inner in inner_of.items()}  # inner -> outer
        self.rows = rows  # an inner map named directly: (outer, its number)
        self.ctx_loads, self.checks = analysis.ctx_loads, analysis.checks
        self.zero_stack = analysis.zero_stack
        self.zero_slots = analysis.zero_slots
        self.stack_slots = analysis.stack_slots
        self.stack_args = analysis.stack_args
        self.callbacks = analysis.callbacks
        self.calls = {}  # (kernel, signature) -> its function in this module (_call)
        self.scratch = {}  # ring map index -> its scratch record (_ringbuf_record)
        with builder.goto_entry_block():
            self.redirect = builder.alloca(ir.IntType(64), name="bpf_redirect_target")
        builder.store(ir.Constant(ir.IntType(64), 0), self.redirect)

    # -- the context
    def _offset_address(self, builder, field):
        off = builder.load(getattr(self.ctx, field))
        return builder.ptrtoint(builder.gep(self.ctx.buf, [off]), ir.IntType(64))

    def ctx_load(self, builder, pc, offset, size):
        field = self.ctx_loads[pc]
        i64 = ir.IntType(64)
        if field in ("data", "data_end", "data_meta"):
            return self._offset_address(builder, field)
        if field == "egress_ifindex":
            return ir.Constant(i64, 0)
        return builder.zext(getattr(self.ctx, field), i64)

    def access_ok(self, builder, pc, addr, size, write):
        kind = self.checks.get(pc)
        if kind is None or kind == "stack":
            return None
        lo, hi = ("data", "data_end") if kind == "packet" else ("data_meta", "data")
        start, end = self._offset_address(builder, lo), self._offset_address(builder, hi)
        # addr <= end - size (end is a buffer address, far above size): addr +
        # size <= end wrapped round near 2**64 and let any address through
        last = builder.sub(end, ir.Constant(ir.IntType(64), size))
        return builder.and_(builder.icmp_unsigned(">=", addr, start),
                            builder.icmp_unsigned("<=", addr, last))

    def fault(self, builder, pc, kind):
        code = FAULT_LOOP if kind == "loop" else FAULT_ACCESS
        builder.store(ir.Constant(ir.IntType(64), code), self.ctx.fault)

    # -- maps
    def _handle(self, builder, index):
        return (self.handlesty[index], builder.extract_value(self.handles_value, index))

    def map_ref(self, builder, pc, index):
        return ir.Constant(ir.IntType(64), MAP_TOKEN | index)

    def map_value_ref(self, builder, pc, index, offset):
        from numba import types
        from ..kernels.ebpf import call_value_address
        hty, h = self._handle(builder, index)
        base = self._call(builder, call_value_address, types.int64(hty), [h])
        return builder.add(base, ir.Constant(ir.IntType(64), offset))

    def map_each(self, builder, pc, token, what, cursor):
        """bpf_for_each_map_elem's walk of the map in R1 (``token``): ``what``
        "next" (the cursor after ``cursor``, -1 at the end), "key" or "value"
        (the element's addresses; an array's key is 0: the caller writes the
        index). kernels/ebpf.map_each_next."""
        from numba import types
        from ..kernels import ebpf as k
        fn = {"next": k.call_each_next, "key": k.call_each_key, "value": k.call_each_value}[what]
        i64t = types.int64
        return self._on_maps(builder, pc, token, lambda t, h: self._call(
            builder, fn, i64t(t, i64t), [h, cursor]))

    def _on_maps(self, builder, pc, token, call, inner_call=None):
        """``call(handle type, handle) -> i64`` for the map in R1: one call when
        the verifier saw one map here, else a branch per possible map. An inner
        map of a map of maps goes to ``inner_call(outer handle type, outer
        handle, its number in the outer's pool)``: R1 holds the number when a
        lookup in the outer gave it (a small number, where a map the object
        names is MAP_TOKEN | index: clang merges calls on both into one); the
        object names it (rows) otherwise."""
        i64 = ir.IntType(64)
        indices = sorted(self.analysis.map_args[pc])
        inner = [k for k in indices if k in self.owner]
        if (inner or any(k in self.rows for k in indices)) and inner_call is None:
            from .jit import JitError
            raise JitError(f"insn {pc}: this helper on an inner map is not supported")
        if len(inner) > 1:
            from .jit import JitError
            raise JitError(f"insn {pc}: inner maps of two maps of maps at one call are not "
                           "supported yet")
        indices = [k for k in indices if k not in self.owner]

        def looked_up():  # the inner map a lookup in its outer map gave
            return inner_call(*self._handle(builder, self.owner[inner[0]]), token)

        def on(k):
            if k in self.rows:
                outer, number = self.rows[k]
                return inner_call(*self._handle(builder, outer), ir.Constant(i64, number))
            return call(*self._handle(builder, k))

        if not indices:
            return looked_up()
        if len(indices) == 1 and not inner:
            return on(indices[0])
        fn = builder.function
        done = fn.append_basic_block(f"pc{pc}_maps_done")
        results = []
        for k in indices:
            this = fn.append_basic_block(f"pc{pc}_map{k}")
            other = fn.append_basic_block(f"pc{pc}_not_map{k}")
            builder.cbranch(builder.icmp_unsigned("==", token, ir.Constant(i64, MAP_TOKEN | k)),
                            this, other)
            builder.position_at_end(this)
            results.append((on(k), builder.block))
            builder.branch(done)
            builder.position_at_end(other)
        results.append((looked_up() if inner else ir.Constant(i64, 0), builder.block))
        builder.branch(done)
        builder.position_at_end(done)
        phi = builder.phi(i64)
        for v, b in results:
            phi.add_incoming(v, b)
        return phi

    # -- helpers
    def _call(self, builder, impl, sig, args):
        """``impl(*args)``, a kernel compiled for ``sig``, through one small
        function per kernel and signature that the call sites share.

        numba's compile_internal writes its calling convention at every site
        (the handle's fields taken apart, a status word tested, two blocks):
        30 lines of IR for each of a program's 100 lookups, written, printed
        and parsed again to be inlined back into one. The kernels raise
        nothing (error_model numpy, no bounds checks): the status is unused."""
        fn = self.calls.get((impl, sig))
        if fn is None:
            ctx, module = self.context, builder.module
            fnty = ir.FunctionType(ctx.get_value_type(sig.return_type),
                                   [ctx.get_value_type(t) for t in sig.args])
            fn = ir.Function(module, fnty, module.get_unique_name(f"bpf_{impl.__name__}"))
            fn.linkage = "internal"
            fn.attributes.add("alwaysinline")
            body = ir.IRBuilder(fn.append_basic_block("entry"))
            cres = ctx.compile_subroutine(body, impl, sig)
            _, res = ctx.call_internal_no_propagate(body, cres.fndesc, sig, list(fn.args))
            body.ret(res)
            self.calls[impl, sig] = fn
        return builder.call(fn, args)

    def helper_call(self, builder, pc, helper, args):
        from numba import types
        from ..kernels import ebpf as k

        ci = self._call
        i64t, i64 = types.int64, ir.IntType(64)
        r1, r2, r3, r4, r5 = args[:5]

        def s32(v):
            return builder.sext(builder.trunc(v, ir.IntType(32)), i64)

        def u32(v):
            return builder.zext(builder.trunc(v, ir.IntType(32)), i64)

        def on_map_ctx(fn, *rest):  # fn(ctx, map, ...)
            sig = (i64t,) * len(rest)
            return self._on_maps(builder, pc, r2, lambda t, h: ci(
                builder, fn, i64t(self.ctxty, t, *sig), [self.ctx_value, h, *rest]))

        def on_map(fn, *rest, inner=None):
            sig = (i64t,) * len(rest)
            return self._on_maps(builder, pc, r1, lambda t, h: ci(
                builder, fn, i64t(t, *sig), [h, *rest]), inner and (lambda t, h, number: ci(
                    builder, inner, i64t(t, i64t, *sig), [h, number, *rest])))

        if helper == 1:
            return on_map(k.call_lookup, r2, inner=k.call_inner_lookup)
        if helper == 2:
            return on_map(k.call_update, r2, r3, r4, inner=k.call_inner_update)
        if helper == 3:
            return on_map(k.call_delete, r2, inner=k.call_inner_delete)
        if helper == 87:
            return on_map(k.call_push, r2, r3)
        if helper in (88, 89):
            return on_map(k.call_pop if helper == 88 else k.call_peek, r2)
        if helper == 51:
            return self._keep_redirect(builder, on_map(k.call_redirect_map, u32(r2), r3,
                                                       inner=k.call_inner_redirect_map))
        if helper == 23:
            return self._keep_redirect(builder, ci(builder, k.call_redirect, i64t(i64t, i64t),
                                                   [u32(r1), r2]))
        if helper == 28:
            return ci(builder, k.call_csum_diff, i64t(*(i64t,) * 5),
                      [r1, u32(r2), r3, u32(r4), u32(r5)])
        if helper in (44, 54, 65):
            fn = {44: k.call_adjust_head, 54: k.call_adjust_meta, 65: k.call_adjust_tail}[helper]
            return ci(builder, fn, i64t(self.ctxty, i64t), [self.ctx_value, s32(r2)])
        if helper == 6:
            return self._trace(builder, pc, args)
        if helper == 12:
            return on_map_ctx(k.call_tail_call, r3)
        if helper == 130:
            return on_map(k.call_ringbuf_output, r2, u32(r3), r4)
        if helper in (131, 132, 133):
            return self._ringbuf_record(builder, pc, helper, r1, r2, r3)
        if helper == 188:
            return ci(builder, k.call_xdp_get_buff_len, i64t(self.ctxty), [self.ctx_value])
        if helper in (189, 190):
            fn = k.call_xdp_load_bytes if helper == 189 else k.call_xdp_store_bytes
            return ci(builder, fn, i64t(self.ctxty, i64t, i64t, i64t),
                      [self.ctx_value, u32(r2), r3, u32(r4)])
        simple = {5: k.call_ktime, 7: k.call_prandom, 8: k.call_smp_id,
                  160: k.call_ktime_coarse}
        if helper in simple:
            return ci(builder, simple[helper], types.int64(), [])
        raise ProgramError(f"insn {pc}: helper {helper} is not supported")

    def _ringbuf_record(self, builder, pc, helper, r1, r2, r3):
        """bpf_ringbuf_reserve (R1 the ring) / submit / discard (R1 the record:
        the verifier names its ring), with this program's scratch record for
        the ring (kernels/ebpf.ringbuf_reserve: a record across the ring's end)."""
        from numba import types
        from ..kernels import ebpf as k
        rings = self.analysis.map_args[pc]
        if len(rings) != 1:
            from .jit import JitError
            raise JitError(f"insn {pc}: bpf_ringbuf_reserve on two ring buffers at one call "
                           "is not supported yet")
        ring = next(iter(rings))
        scratch = self.scratch.get(ring)
        if scratch is None:
            size = max(self.analysis.record_sizes[ring])
            with builder.goto_entry_block():
                buf = builder.alloca(ir.ArrayType(ir.IntType(64), max(1, (size + 7) // 8)),
                                     name=f"ringbuf{ring}_scratch")
            scratch = self.scratch[ring] = buf
        i64t, i64 = types.int64, ir.IntType(64)
        address = builder.ptrtoint(scratch, i64)
        t, h = self._handle(builder, ring)
        if helper == 131:
            return self._call(builder, k.call_ringbuf_reserve, i64t(t, i64t, i64t, i64t),
                              [h, r2, r3, address])
        return self._call(builder, k.call_ringbuf_commit, i64t(t, i64t, i64t, i64t),
                          [h, r1, ir.Constant(i64, int(helper == 133)), address])

    def _trace(self, builder, pc, args):
        """bpf_trace_printk: a record (format id, R3-R5) in the trace ring,
        rendered by Python after the batch (kernels/trace.py)."""
        from numba import types
        from ..kernels import ebpf as k
        fid, text = self.trace_ids[pc]
        fmt = parse_trace_format(text)
        specs = list(fmt.specs) + [0] * (3 - len(fmt.specs))
        i64 = ir.IntType(64)
        consts = [ir.Constant(i64, v) for v in (fid, fmt.static_len, *specs)]
        return self._call(
            builder, k.call_trace, types.int64(self.tracety, *(types.int64,) * 8),
            [self.trace_value, *consts, *args[2:5]])

    def ends_program(self, helper):
        return helper == 12

    def _keep_redirect(self, builder, ret):
        """The kernel returns XDP_REDIRECT and keeps the target per CPU: so here
        (the dataplane's helpers return it in the upper 32 bits)."""
        i64 = ir.IntType(64)
        builder.store(builder.lshr(ret, ir.Constant(i64, 32)), self.redirect)
        return builder.and_(ret, ir.Constant(i64, 0xffffffff))

    def verdict(self, builder, r0):
        """R0's low 32 bits, with the redirect target back in the upper half
        when the program returns XDP_REDIRECT (runner.store_verdict decodes it)."""
        from ..action import XDP_REDIRECT
        i64 = ir.IntType(64)
        code = builder.and_(r0, ir.Constant(i64, 0xffffffff))
        target = builder.shl(builder.load(self.redirect), ir.Constant(i64, 32))
        redirect = builder.icmp_unsigned("==", code, ir.Constant(i64, XDP_REDIRECT))
        return builder.select(redirect, builder.or_(code, target), code)
