"""``dataplane map``: inspect and change the maps of a program run with ``--pin``.

Like ``bpftool map``: ``list``, ``dump NAME``, ``update NAME KEY VALUE``,
``delete NAME KEY``; for a queue or a stack ``push NAME VALUE``, ``pop NAME``,
``peek NAME``. KEY and VALUE are JSON in the form ``dump -j`` prints
(an integer, an object of fields, addresses as strings), or plain integers.
"""

import argparse
import errno
import json
import os

from ..errors import MapError, UsageError
from ..pin import list_pinned, open_pinned, other_formats, spec_dtype
from ..stats import format_maps, print_json, print_warning
from .options import add_options

HELP = "list, dump and change pinned maps (of a run with --pin DIR)"
DESCRIPTION = """Inspect and change the maps of a program run with --pin DIR, like
bpftool map: list, dump NAME, update NAME KEY VALUE, delete NAME KEY; push
NAME VALUE, pop NAME, peek NAME on a queue or a stack. KEY and VALUE are JSON
in the form that dump -j prints (an integer, an object of fields, addresses as
strings)."""


def register(sub):
    p = sub.add_parser("map", help=HELP, description=DESCRIPTION)
    ops = p.add_subparsers(dest="op", metavar="OP", required=True)
    for name, help_, args in (
            ("list", "the pinned maps", ()),
            ("dump", "a map's entries, decoded", ("name",)),
            ("update", "set an entry (BPF_ANY)", ("name", "key", "value")),
            ("delete", "remove an entry", ("name", "key")),
            ("push", "push a value onto a queue or a stack", ("name", "value")),
            ("pop", "take the next value of a queue or a stack", ("name",)),
            ("peek", "the next value of a queue or a stack, left there", ("name",))):
        q = ops.add_parser(name, help=help_, description=help_)
        for a in args:
            q.add_argument(a, metavar=a.upper())
        add_options(q, "pin", "json")
        # no default: it would set 0 over a -v given before the operation
        q.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    return p


def _json_arg(text, what):
    try:
        return json.loads(text)
    except ValueError:
        raise UsageError(f"map: {what} '{text}' is not JSON or an integer",
                         hint='e.g. 7, \'{"saddr": "10.0.0.1", "port": 80}\'') from None


def run(args):
    pin = args.pin or os.environ.get("DATAPLANE_PIN_DIR")
    if not pin:
        raise UsageError("map: --pin DIR is required (the directory given to --pin)")
    if args.op == "list":
        specs = list_pinned(pin)
        for why in other_formats(pin).values():
            print_warning(f"{why}: not listed (pin it again)")
        if args.json:
            print_json([{k: s[k] for k in ("name", "type_name", "max_entries", "workers")}
                        for s in specs])
        else:
            for s in specs:  # bpftool's map show: sizes; dump decodes the fields
                key = spec_dtype(s["key"]).itemsize if s["key"] else 0
                print(f"{s['name']}: {s['type_name']}  key {key}B  value "
                      f"{spec_dtype(s['value']).itemsize}B  max_entries {s['max_entries']:,}",
                      flush=True)
        return 0
    m = open_pinned(pin, args.name)
    if args.op == "dump":
        if args.json:
            print_json(m.to_json())
        else:
            print(format_maps({m.name: m}), flush=True)
    elif args.op == "update":
        m.update(m.encode_key(_json_arg(args.key, "key")),
                 m.encode_value(_json_arg(args.value, "value")))
    elif args.op == "delete":
        m.delete(m.encode_key(_json_arg(args.key, "key")))
    else:
        if not getattr(m, "is_queue_stack", False):
            raise UsageError(f"map: {args.op}: map '{m.name}' is a {m.type_name}: {args.op} "
                             "works on queue and stack maps")
        if args.op == "push":
            m.push(m.encode_value(_json_arg(args.value, "value")))
            return 0
        value = m.pop() if args.op == "pop" else m.peek()
        if value is None:
            raise MapError(m.name, f"{args.op}: the {m.type_name} is empty (-ENOENT)",
                           errno.ENOENT)
        if args.json:
            print_json(value)
        else:
            print(f"value: {json.dumps(value)}", flush=True)
    return 0
