"""``dataplane conformance DIR``: run bpf_conformance ISA vectors through the JIT."""

import sys

from ..ebpf import conformance

HELP = "run a folder of bpf_conformance .data vectors through the eBPF JIT"
DESCRIPTION = """Run every .data vector of DIR (the bpf_conformance suite's format:
-- asm or -- raw, -- mem, -- result) through the eBPF JIT and print PASS or FAIL
per test, then "Passed N out of M tests." Exit 1 if any fails. With --plugin,
act as a bpf_conformance runner plugin instead: the memory as hex in the
argument, the program as hex on stdin, R0 printed in hex."""


def register(sub):
    p = sub.add_parser("conformance", help=HELP, description=DESCRIPTION)
    p.add_argument("folder", metavar="DIR", nargs="?", help="folder of .data files")
    p.add_argument("--plugin", metavar="MEMHEX", nargs="?", const="",
                   help="bpf_conformance plugin mode (program hex on stdin)")
    p.add_argument("-q", "--quiet", action="store_true", help="print failures and the total only")
    return p


def run(args):
    if args.plugin is not None:
        print(conformance.plugin(args.plugin, sys.stdin.read()))
        return 0
    if args.folder is None:
        from ..errors import UsageError
        raise UsageError("conformance: give a folder of .data files (or --plugin)")
    out = (lambda s: None if s.startswith("PASS") else print(s)) if args.quiet else print
    passed, total = conformance.run_folder(args.folder, out=out)
    return 0 if passed == total else 1
