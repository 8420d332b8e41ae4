"""``dataplane replay``: run a capture through a program, one pcap per verdict."""

import sys

from ..cluster import chosen_maps, expand_inputs
from ..errors import UsageError
from ..io.capture import open_capture
from ..pipeline import InterfaceSink, Tee, VerdictPcaps, replay
from ..program import load_configured
from ..stats import (Progress, format_maps, format_sent, format_summary, print_json,
                     print_warning)
from ..workers import use_workers
from .options import add_options

HELP = "run every packet of a capture through a program; write each verdict's packets"
DESCRIPTION = """Run every packet of a capture through an XDP program and write each
verdict's packets to its own pcap in OUTDIR: pass.pcap, drop.pcap, tx.pcap,
aborted.pcap and redirect-<ifindex>.pcap (only files that receive packets exist).
Prints packets, bytes, each verdict's count and share, ns/pkt and Mpps. The
program's bpf_trace_printk lines go to stderr after each batch, as
"trace: packet N: <text>" (with -j also under "trace" in the summary)."""


def register(sub):
    p = sub.add_parser("replay", help=HELP, description=DESCRIPTION)
    add_options(p, "read")
    which = p.add_mutually_exclusive_group()  # one of them: run() says so if neither
    add_options(which, "program", "filter", program=dict(required=False))
    add_options(p, "write", "count", "batch", "workers", "cluster", "merge", "task_bytes",
                "unchecked", "seed", "ktime", "pin", "config", "dump_maps", "json", "quiet")
    add_options(p, "interface", "pps", "topspeed", interface=dict(
        required=False, help="also send the XDP_PASS and XDP_TX frames out of this interface "
                             "(root; tcpreplay's habit): at --pps N, or --topspeed"))
    return p


def _interface_sink(args):
    """The -i interface the verdicts' frames go out of, or None."""
    if not args.interfaces:
        if args.pps is not None or args.topspeed:
            raise UsageError("replay: --pps and --topspeed need -i IFACE")
        return None
    if len(args.interfaces) > 1:
        raise UsageError("replay: one -i interface at a time")
    if args.pps is not None and (args.topspeed or args.pps <= 0):
        raise UsageError("replay: --pps takes a rate above 0, without --topspeed")
    return InterfaceSink(args.interfaces[0], pps=args.pps)


def run(args):
    if not args.read:
        raise UsageError("replay: -r FILE is required",
                         hint="dataplane replay -r IN.pcap -p drop_udp -w out/")
    if args.program is None and args.filter is None:
        raise UsageError("replay: the following arguments are required: -p PROGRAM or -f EXPR",
                         hint="dataplane replay -r IN.pcap -p drop_udp -w out/ (or -f "
                              "'tcp port 80')")
    paths = expand_inputs([args.read])
    if args.cluster or len(paths) > 1:
        from .replay_many import run_many
        return run_many(args, paths)
    use_workers(args.workers)
    program = load_configured(args.program, args.filter, not args.unchecked, args.pin,
                              args.config, args.seed, args.ktime == "capture")
    dumped = chosen_maps(program, args.dump_maps) if args.dump_maps else {}
    out = _interface_sink(args)
    with open_capture(args.read) as reader:
        sinks = (VerdictPcaps(args.write, nanosecond=reader.nanosecond,
                              snaplen=reader.output_snaplen) if args.write else None)
        if out is not None:
            sinks = Tee(sinks, out)
        progress = Progress(reader.size, enabled=not (args.quiet or args.json))
        stats = replay(reader, program, sinks, batch_size=args.batch, limit=args.count,
                       progress=progress, workers=args.workers)
    for w in stats.warnings:
        print_warning(w)
    if args.json:
        summary = stats.to_json()
        if out is not None:
            summary["sent"] = out.summary()
        if args.dump_maps:
            summary["maps"] = {name: m.to_json() for name, m in dumped.items()}
        print_json(summary)
    else:
        if not args.quiet:
            print(format_summary(stats), flush=True)
            if out is not None:
                print(format_sent(out.summary()), flush=True)
        if args.dump_maps:
            print(format_maps(dumped), flush=True)
    if stats.error:
        print(f"error: {stats.error}", file=sys.stderr)
        return 1
    return 0
