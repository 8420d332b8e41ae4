"""``dataplane prog dump X.o[:name]`` and ``dataplane prog verify X.o[:name]``
(also ``dataplane verify X.o[:name]``): an eBPF object's programs as the loader
links them (bpftool prog dump xlated) and the verifier's verdict on them."""

import argparse

from ..ebpf import disasm, elf, verifier
from ..ebpf.program import EBPF_HELPERS, check_supported, map_infos
from ..stats import print_json
from .options import add_options

HELP = "disassemble or verify the programs of an eBPF object (.o)"
DESCRIPTION = """dump: the instructions of an object's program after linking (sub-
programs appended, map references resolved), with helpers and maps named, like
bpftool prog dump xlated. verify: run the verifier and print what it proved
and which accesses it left to run-time checks; exit 1 with the instruction and
the reason when it rejects the program; with --strict also where the kernel's
verifier would reject what runs here under a run-time check."""


VERIFY_HELP = "verify the programs of an eBPF object (.o)"


def register(sub):
    p = sub.add_parser("prog", help=HELP, description=DESCRIPTION)
    ops = p.add_subparsers(dest="op", metavar="OP", required=True)
    for name, help_ in (("dump", "disassemble a program"), ("verify", VERIFY_HELP)):
        op = ops.add_parser(name, help=help_, description=help_)
        _object_arguments(op)
        if name == "verify":
            add_options(op, "strict")
    return p


def register_verify(sub):
    """``dataplane verify``: ``prog verify`` under the name of the step itself."""
    p = sub.add_parser("verify", help=f"{VERIFY_HELP} (prog verify)",
                       description=f"{VERIFY_HELP}: what the verifier proved and the "
                       "accesses it left to run-time checks; exit 1 with the instruction "
                       "and the reason when it rejects a program (the same as prog verify)")
    _object_arguments(p, verbose=False)  # a command's own -v comes from main
    add_options(p, "strict")
    p.set_defaults(op="verify")
    return p


def _object_arguments(p, verbose=True):
    p.add_argument("object", metavar="OBJECT[:NAME]", help="an eBPF ELF object, and a "
                   "program of it (all of its programs for verify)")
    add_options(p, "json")
    if verbose:
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)  # no default: it set 0 over "prog -vv OP"


def _programs(ref, every):
    path, name = elf.split_object_ref(ref)
    obj = elf.load_object(path)
    if name is None and every:
        return obj, list(obj.programs.values())
    return obj, [obj.program(name)]


def dump_lines(obj, prog):
    """The program's listing: index, instruction, helper and map names."""
    def map_name(insn):
        return obj.maps[insn.imm].name if 0 <= insn.imm < len(obj.maps) else None
    lines = [f"{prog.name}: section {prog.section}, {len(prog.insns)} insns, "
             f"license {obj.license or '?'}"]
    for pc, insn in enumerate(prog.insns):
        if pc in prog.func_names and pc:
            lines.append(f"{prog.func_names[pc]}:")
        if insn.is_lddw_tail:
            continue
        text = disasm.format_insn(prog.insns, pc, disasm.HELPER_NAMES.get, map_name)
        lines.append(f"{pc:6}: {text}")
    return lines


def run(args):
    obj, progs = _programs(args.object, args.op == "verify")
    if args.op == "dump":
        lines = dump_lines(obj, progs[0])
        if args.json:
            print_json({"program": progs[0].name, "section": progs[0].section,
                        "insns": lines[1:]})
        else:
            print("\n".join(lines))
        return 0
    infos = map_infos(obj.maps)
    results = []
    for prog in progs:
        check_supported(obj, prog)
        a = verifier.verify(prog.insns, infos, prog.name, EBPF_HELPERS, args.strict)
        results.append({"program": prog.name, "insns": len(prog.insns), "states": a.states,
                        "runtime_checks": sorted(a.checks), "context_loads": len(a.ctx_loads)})
    if args.json:
        print_json(results)
    else:
        for r in results:
            checks = r["runtime_checks"]
            more = ", ..." if len(checks) > 12 else ""
            where = f" (insns {', '.join(map(str, checks[:12]))}{more})" if checks else ""
            print(f"{r['program']}: verified: {r['insns']} insns, {r['states']} states, "
                  f"{len(checks)} run-time checks{where}")
    return 0
