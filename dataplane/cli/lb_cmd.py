"""``dataplane lb``: the load balancer's control plane (Katran's katran_goclient).

On a running instance (``--pin DIR``, the directory a ``replay``/``run -p l4lb
--config F --pin DIR`` keeps its maps and ``lb.json`` in) or on a
configuration file (``--config FILE``, rewritten in place):

    dataplane lb --config lb.toml vip add 10.200.1.1:80/tcp [--flags quic,lru_bypass]
    dataplane lb --config lb.toml real add 10.200.1.1:80/tcp 10.0.0.2 --weight 2
    dataplane lb --pin /tmp/lb list | stats [-j]
    dataplane lb trace -r X.pcap --config lb.toml      # why each packet went where
"""

import argparse
import contextlib
import os
import stat

from ..errors import UsageError
from ..lb import layout as L
from ..lb.config import LbError, load_toml, to_toml
from ..stats import format_lb_stats, print_json, print_warning
from .options import add_options

HELP = "the L4 load balancer's control plane: VIPs, reals, stats, per-packet trace"
DESCRIPTION = """Change and inspect the l4lb program's load balancer, on a running
instance (--pin DIR: the directory given to replay/run --pin with --config) or
on a configuration file (--config FILE, rewritten in place). VIPs are named
ADDRESS:PORT/PROTO (10.200.1.1:80/tcp, [fc00::1]:443/udp; port 0 = any port).
trace replays a capture and says for each packet the VIP matched or why none,
the connection table's answer, the ring slot and real chosen, and the verdict
with its reason."""


#: Options taken before the operation too (``lb --pin DIR stats``, as in README.md).
SHARED = ("pin", "config", "json")


def register(sub):
    p = sub.add_parser("lb", help=HELP, description=DESCRIPTION)
    add_options(p, *SHARED)
    ops = p.add_subparsers(dest="op", metavar="OP", required=True)
    # An operation's parser sets each of its defaults over what ``lb`` parsed
    # before it: no defaults there, so ``lb --config F list`` keeps F (and
    # ``dataplane -vv lb ...`` its -vv).
    keep = {name: {"default": argparse.SUPPRESS} for name in SHARED}

    def op(parent, name, help_, *positional, options=SHARED):
        q = parent.add_parser(name, help=help_, description=help_)
        for a in positional:
            q.add_argument(a, metavar=a.upper())
        add_options(q, *options, **keep)
        q.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
        return q

    vip = ops.add_parser("vip", help="add or remove a VIP").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    q = op(vip, "add", "add a VIP", "vip")
    q.add_argument("--flags", default="", metavar="F,F",
                   help=f"VIP flags, comma-separated: {', '.join(L.VIP_FLAGS)}")
    op(vip, "remove", "remove a VIP (its reals with it)", "vip")
    real = ops.add_parser("real", help="add, remove or reweight a VIP's real").add_subparsers(
        dest="action", metavar="ACTION", required=True)
    q = op(real, "add", "add a real to a VIP", "vip", "address")
    q.add_argument("--weight", type=int, default=1, metavar="N",
                   help="the real's share of new flows, relative (default 1)")
    op(real, "remove", "remove a real from a VIP", "vip", "address")
    q = op(real, "weight", "change a real's weight", "vip", "address", "weight")
    op(ops, "list", "the VIPs, their flags and reals (weight, ring slots)")
    op(ops, "stats", "packets and bytes per VIP and per real, and the counters (--pin); "
       "with --interval SEC also pps and bytes/s", options=("pin", "config", "interval", "json"))
    op(ops, "trace", "replay a capture and say why each packet got its verdict",
       options=("read", "config", "pin", "count", "json"))
    return p


def run(args):
    pin = getattr(args, "pin", None)
    config = getattr(args, "config", None)
    if args.op == "trace":
        return _trace(args, pin, config)
    if bool(pin) == bool(config):
        raise UsageError(f"lb {args.op}: give one of --pin DIR (a running instance) or "
                         "--config FILE (a configuration file)")
    if args.op == "stats" and not pin:
        raise UsageError("lb stats: counters live in a running instance: --pin DIR")
    # a change: the file it will rewrite is checked before it is read (a FIFO would block)
    out = _rewritable(config) if config and args.op in ("vip", "real") else config
    if pin:
        from ..lb.control import LoadBalancer

        target = LoadBalancer.attach(pin)
        cfg = target.cfg
    else:
        cfg = target = load_toml(config)
    if args.op == "vip":
        if args.action == "add":
            target.add_vip(args.vip, [f for f in args.flags.split(",") if f])
        else:
            target.remove_vip(args.vip)
    elif args.op == "real":
        if args.action == "add":
            target.add_real(args.vip, args.address, args.weight)
        elif args.action == "remove":
            target.remove_real(args.vip, args.address)
        else:
            target.set_weight(args.vip, args.address, _int(args.weight, "weight"))
    elif args.op == "list":
        return _list(target.list() if pin else _config_list(cfg), args.json)
    elif args.op == "stats":
        return _stats(_sampled(target, args.interval), args.json)
    if config:  # the file, rewritten whole once the change is valid
        _rewrite(out, to_toml(cfg))
    return 0


def _rewritable(path):
    """The file that ``lb --config path`` rewrites: a symlink's target (replacing
    the link by a copy would leave the target as it was), and only a regular
    file (a rename over /dev/null or a FIFO would replace the node itself)."""
    target = os.path.realpath(path)
    try:
        st = os.stat(target)
    except OSError:
        return target  # missing or unreadable: load_toml says so
    if not stat.S_ISREG(st.st_mode):
        raise LbError(f"{path}: not a regular file: lb --config rewrites the file in place")
    return target


def _rewrite(path, text):
    """Write ``text`` over the file ``path``: a temporary file beside it, renamed
    over it, so that a reader sees the old file or the new one."""
    tmp, created = f"{path}.{os.getpid()}", False
    try:
        with open(tmp, "x") as f:  # "x": never through a file or link already there
            created = True
            f.write(text)
        with contextlib.suppress(FileNotFoundError):  # the file's own mode, not the umask's
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except OSError as exc:  # e.g. a directory this user cannot write: nothing changed
        if created:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise LbError(f"{path}: cannot rewrite: {(exc.strerror or str(exc)).lower()} "
                      f"(writing {tmp})") from None


def _int(text, what):
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"lb: {what} '{text}' is not an integer") from None


def _config_list(cfg):
    return [{"vip": v.name, "flags": list(v.flags),
             "reals": [{"address": str(r.address), "weight": r.weight} for r in v.reals]}
            for v in cfg.vips]


def _list(vips, as_json):
    if as_json:
        print_json(vips)
        return 0
    for v in vips:
        flags = f"  flags {','.join(v['flags'])}" if v["flags"] else ""
        number = f"  (vip {v['number']})" if "number" in v else ""
        print(f"{v['vip']}{number}{flags}")
        for r in v["reals"]:
            slots = f"  {r['slots']:,} slots" if "slots" in r else ""
            print(f"  {r['address']:<40} weight {r['weight']}{slots}")
    return 0


def _sampled(lb, interval):
    """Counters now; with ``interval``, also rates (pps, bps) over that many seconds."""
    import time

    first = lb.stats()
    if not interval:
        return first
    if interval <= 0:
        raise UsageError(f"lb stats: --interval {interval} must be > 0")
    time.sleep(interval)
    last = lb.stats()
    for kind, name in (("vips", "vip"), ("reals", "real")):
        before = {e[name]: e for e in first[kind]}
        for e in last[kind]:
            b = before.get(e[name], {"packets": 0, "bytes": 0})
            e["pps"] = round((e["packets"] - b["packets"]) / interval, 1)
            e["bytes_per_s"] = round((e["bytes"] - b["bytes"]) / interval, 1)
    last["interval"] = interval
    return last


def _stats(stats, as_json):
    if as_json:
        print_json(stats)
    else:
        print(format_lb_stats(stats), flush=True)
    return 0


def _trace(args, pin, config):
    from ..lb.trace import trace_capture

    if not args.read:
        raise UsageError("lb trace: -r FILE is required",
                         hint="dataplane lb trace -r capture.pcap --config lb.toml")
    if bool(pin) == bool(config):
        raise UsageError("lb trace: give the configuration: --config FILE, or --pin DIR "
                         "of an instance (its lb.json; its maps are not touched)")
    if pin:
        from ..lb.control import STATE_FILE
        config = os.path.join(pin, STATE_FILE)
    records = trace_capture(args.read, config, limit=args.count,
                            on_line=None if args.json else print, on_warning=print_warning)
    if args.json:
        print_json(records)
    return 0
