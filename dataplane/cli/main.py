"""``dataplane COMMAND [options]``: entry point; maps errors to exit codes.

Exit codes: 0 success, 1 runtime error, 2 usage error. Errors are one line on
stderr (``error: <what>: <why>``, then ``hint: ...`` where it helps); with
``-j`` also ``{"error": ...}`` on stdout; ``-vv`` shows the traceback.
"""

import argparse
import importlib
import json
import sys

from .. import __version__

#: Each command's module (in this package) and the function that adds its
#: parser. A run imports its own command's module only: the others' imports
#: (the eBPF toolchain, the live path, the load balancer's control plane) were
#: 0.1 s of the 0.3 s that `replay` took to start (python -X importtime).
COMMANDS = {"replay": ("replay", "register"), "bench": ("bench", "register"),
            "map": ("map_cmd", "register"), "lb": ("lb_cmd", "register"),
            "prog": ("prog", "register"), "verify": ("prog", "register_verify"),
            "conformance": ("conformance", "register"), "run": ("run", "register")}


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error line (``error: ...``, exit 2)."""

    def error(self, message):
        self.print_usage(sys.stderr)
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        sys.exit(2)


def command_module(command):
    """The module that runs ``command`` (imported now)."""
    return importlib.import_module(f".{COMMANDS[command][0]}", __package__)


def _named_command(argv):
    """The command ``argv`` names, or None: the first word that is not an option
    (dataplane's own options take no value)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(only=None):
    """The parser of every command, or of ``only`` that one (the others are not
    imported)."""
    parser = _Parser(prog="dataplane", description="An XDP-style packet-processing dataplane "
                     "in user space: Python programs compiled with numba, and eBPF objects "
                     "(clang -target bpf) verified and compiled through LLVM.",
                     epilog="exit codes: 0 success, 1 runtime error, 2 usage error")
    parser.add_argument("--version", action="version", version=f"dataplane {__version__}")
    # its own dest: a command's parser sets its -v default over a same-named one
    parser.add_argument("-v", "--verbose", action="count", default=0, dest="top_verbose",
                        help="more detail; -vv shows tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in COMMANDS if only is None else (only,):
        p = getattr(command_module(command), COMMANDS[command][1])(sub)
        p.add_argument("-v", "--verbose", action="count", default=0, help=argparse.SUPPRESS)
    h = sub.add_parser("help", help="show help for a command")
    h.add_argument("topic", nargs="?", choices=sorted(COMMANDS))
    return parser, sub


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    named = _named_command(argv)
    parser, sub = build_parser(named if named in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "help":
        (sub.choices[args.topic] if args.topic else parser).print_help()
        return 0
    from ..errors import DataplaneError
    try:
        return command_module(args.command).run(args)
    except DataplaneError as exc:
        if args.top_verbose + getattr(args, "verbose", 0) >= 2:  # dataplane -v CMD -v too
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
