"""``dataplane run``: take over interfaces and run a program on every frame."""

import functools
import os
import signal
import sys

from ..errors import UsageError
from ..live import LIVE_BATCH, LiveDataplane, preflight, tap_names
from ..live_workers import LiveWorkers
from ..stats import format_live_summary, print_json, print_line
from ..program import load_configured
from ..workers import use_workers
from .options import add_options

HELP = "take over interfaces: run a program on every frame, send it where its verdict says"
DESCRIPTION = """Read every frame of each -i interface (AF_PACKET, promiscuous, a
TPACKET_V3 ring) in batches, run the program, and act on each verdict:
XDP_PASS goes to the host (with --host-tap: into the interface's TAP, dp-IFACE,
where the host's addresses belong; without: counted, and left to the kernel's
own copy), XDP_TX back out of the ingress interface, XDP_REDIRECT out of the
target ifindex when it is one of the -i interfaces or a TAP (else counted as an
error naming the ifindex), XDP_DROP and XDP_ABORTED are counted. Frames the
host sends out of a TAP leave by its interface. Prints rx/s, pass/s, drop/s,
tx/s, redir/s, err/s per interface every --interval seconds (JSON Lines with
-j) and a summary on Ctrl-C or SIGTERM (exit 0), with the kernel's ring drops.
On exit the TAPs are removed and the interfaces left as they were found.
Needs root (raw sockets; TAPs and the tc ingress hook with --host-tap)."""

EPILOG = "example: dataplane run -i eth1 -p firewall --host-tap   (then: ip addr add " \
         "192.0.2.1/24 dev dp-eth1)"


def register(sub):
    p = sub.add_parser("run", help=HELP, description=DESCRIPTION, epilog=EPILOG)
    add_options(p, "interface", "program", "host_tap", "tap_name", "interval", "count",
                "batch", "workers", "unchecked", "seed", "pin", "config", "tx_path",
                "extended", "json",
                interval=dict(default=2.0, help="print per-interface rates every SEC "
                              "seconds (default 2; 0: only the summary)"),
                batch=dict(default=LIVE_BATCH, help=f"packets per batch (default "
                           f"{LIVE_BATCH})"))
    return p


def run(args):
    if args.interval is not None and args.interval < 0:
        raise UsageError(f"run: --interval {args.interval} must be >= 0")
    if args.tap_names and not args.host_tap:
        raise UsageError("run: --tap-name needs --host-tap")
    if args.tap_names and len(args.tap_names) > len(args.interfaces):
        raise UsageError(f"run: {len(args.tap_names)} --tap-name for "
                         f"{len(args.interfaces)} -i")
    # what can fail without creating anything fails before the program compiles
    preflight(args.interfaces, args.host_tap,
              tap_names(args.interfaces, args.tap_names) if args.host_tap else None)
    use_workers(args.workers)
    program = load_configured(args.program, checked=not args.unchecked, pin=args.pin,
                              lb_config=args.config, seed=args.seed)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    saved = {}
    old_wakeup = -1
    dp = None

    def on_signal(signum, frame):
        if dp is not None:
            dp.stop(signal.Signals(signum).name)
        else:
            raise KeyboardInterrupt

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            saved[sig] = signal.signal(sig, on_signal)
        old_wakeup = signal.set_wakeup_fd(wake_w)
        live_class = LiveDataplane if args.workers == 1 else \
            functools.partial(LiveWorkers, workers=args.workers)
        with live_class(program, args.interfaces, host_tap=args.host_tap,
                        tap_names_=args.tap_names, batch_size=args.batch, tx=args.tx,
                        extended=args.extended) as live:
            live.warm_up()
            dp = live
            _ready(live, args)
            stats = live.run(limit=args.count, interval=args.interval or None,
                             on_interval=_interval_printer(args.json), wakeup_fd=wake_r)
    finally:
        signal.set_wakeup_fd(old_wakeup)
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        os.close(wake_r)
        os.close(wake_w)
    if args.json:
        print_json(stats.to_json())
    else:
        print_line(format_live_summary(stats))
    return 0


def _ready(live, args):
    parts = []
    for p in live.ports:
        host = f" (host: {p.tap.name})" if p.tap is not None else ""
        parts.append(f"{p.name}{host}")
    sys.stderr.write(f"run: {live.program.name} on {', '.join(parts)}; "
                     "Ctrl-C or SIGTERM to stop\n")
    sys.stderr.flush()


def _interval_printer(as_json):
    state = {"header": False}

    def show(stats, before, seconds, now_s):
        if as_json:
            print_json(stats.interval_json(before, seconds, now_s))
            return
        if not state["header"]:
            print_line(stats.interval_header())
            state["header"] = True
        print_line("\n".join(stats.interval_lines(before, seconds)))

    return show
