"""``dataplane COMMAND [options]``: entry point; maps errors to exit codes.

Exit codes: 0 success, 1 runtime error, 2 usage error. Errors are one line on
stderr (``error: <what>: <why>``, then ``hint: ...`` where it helps); with
``-j`` also ``{"error": ...}`` on stdout; ``-vv`` shows the traceback.
"""

import argparse
import json
import sys
import types

from .. import __version__
from . import bench, conformance, lb_cmd, map_cmd, prog, replay, run

COMMANDS = {"replay": replay, "bench": bench, "map": map_cmd, "lb": lb_cmd, "prog": prog,
            "verify": types.SimpleNamespace(register=prog.register_verify, run=prog.run),
            "conformance": conformance, "run": run}


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error line (``error: ...``, exit 2)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser():
    parser = _Parser(prog="dataplane", description="An XDP-style packet-processing dataplane "
                     "in user space: Python programs compiled with numba, and eBPF objects "
                     "(clang -target bpf) verified and compiled through LLVM.",
                     epilog="exit codes: 0 success, 1 runtime error, 2 usage error")
    parser.add_argument("--version", action="version", version=f"dataplane {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more detail; -vv shows tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in COMMANDS.values():
        p = module.register(sub)
        p.add_argument("-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS)
    h = sub.add_parser("help", help="show help for a command")
    h.add_argument("topic", nargs="?", choices=sorted(COMMANDS))
    return parser, sub


def main(argv=None):
    parser, sub = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "help":
        (sub.choices[args.topic] if args.topic else parser).print_help()
        return 0
    from ..errors import DataplaneError
    try:
        return COMMANDS[args.command].run(args)
    except DataplaneError as exc:
        if args.verbose >= 2:
            raise
        if getattr(args, "json", False):
            print(json.dumps({"error": str(exc)}), flush=True)
        print(f"error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
