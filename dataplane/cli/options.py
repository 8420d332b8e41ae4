"""The one option table shared by every subcommand (xdp-tools' habit).

Subcommands pick options by name, so ``-r``, ``-p``, ``-j`` ... mean the same
thing everywhere and their help is written once.
"""

import argparse
import math

from .. import config


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be at least 1")
    return value


def _path(text):
    """A file or folder to write: '' is refused (-w '' wrote nothing, silently)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return text


def _map_names(text):
    """``a,b`` -> ("a", "b"): the maps --dump-maps prints (bpftool map dump name)."""
    names = tuple(n.strip() for n in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of map names "
                                         "(NAME[,NAME...])")
    return names


def _finite_float(text):
    """A number of seconds or packets a second: nan and inf are refused here,
    as each comparison the commands make lets nan through."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
    return value


def _workers(text):
    from ..errors import UsageError
    from ..workers import parse_workers
    try:
        return parse_workers(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None


OPTIONS = {
    "read": (("-r", "--read"), dict(metavar="FILE", dest="read",
             help="read packets from a pcap or pcapng capture")),
    "program": (("-p", "--program"), dict(metavar="PROGRAM", required=True,
                help="a program file (prog.py), one program of it (prog.py:name) or a "
                     "bundled program by name (pass_all, drop_all, drop_udp, mac_swap_tx, "
                     "redirect_by_port, firewall, flow_counter, l4lb, ...)")),
    "filter": (("-f", "--filter"), dict(metavar="EXPR", dest="filter",
               help="instead of -p: a tcpdump filter expression ('tcp port 80 and not src "
                    "net 10.0.0.0/8'), compiled by tcpdump to classic BPF and run as an eBPF "
                    "program: matching packets XDP_PASS, the others XDP_DROP")),
    "write": (("-w", "--write"), dict(metavar="OUTDIR", dest="write", type=_path,
              help="write each verdict's packets to OUTDIR/<verdict>.pcap (valid verdicts: "
                   "aborted, drop, pass, tx, redirect-<ifindex>)")),
    "count": (("-c", "--count"), dict(metavar="N", type=_positive_int,
              help="stop after N packets")),
    "batch": (("--batch",), dict(metavar="N", type=_positive_int, default=config.BATCH_SIZE,
              help=f"packets per batch (default {config.BATCH_SIZE})")),
    "repeat": (("--repeat",), dict(metavar="N", type=_positive_int, default=7,
               help="timed runs, the median is reported (default 7)")),
    "unchecked": (("--unchecked",), dict(action="store_true",
                  help="no run-time bounds checks on packet accesses: faster, but an "
                       "access outside the packet is undefined behaviour (bench always "
                       "measures both)")),
    "dump_maps": (("--dump-maps",), dict(nargs="?", const=True, default=False,
                  metavar="NAMES", type=_map_names,
                  help="print the program's maps at the end, or only the maps NAMES "
                       "(comma-separated: --dump-maps vip_stats,lb_stats); with -j under "
                       "\"maps\", keys and values decoded by their dtypes")),
    "seed": (("--seed",), dict(metavar="N", type=int,
             help="seed bpf_get_prandom_u32 for a reproducible run")),
    "ktime": (("--ktime",), dict(choices=("monotonic", "capture"), default="monotonic",
              help="what bpf_ktime_get_ns returns (valid values: monotonic, the clock; "
                   "capture, each packet's capture time; default monotonic)")),
    "pin": (("--pin",), dict(metavar="DIR", type=_path,
            help="back the program's maps by files in DIR, shared with other processes "
                 "(dataplane map ... --pin DIR); default for dataplane map: "
                 "$DATAPLANE_PIN_DIR")),
    "config": (("--config",), dict(metavar="FILE",
               help="a load balancer configuration (TOML: gateway_mac, [[vip]] tables with "
                    "their reals) for the l4lb program; see programs/l4lb/example.toml")),
    "interval": (("--interval",), dict(metavar="SEC", type=_finite_float,
                 help="also measure rates: sample the counters SEC seconds apart and "
                      "print packets and bytes per second")),
    "interface": (("-i", "--interface"), dict(metavar="IFACE", dest="interfaces",
                  action="append", required=True,
                  help="an interface to take over (repeat for more: -i eth1 -i eth2); "
                       "its frames are read from a packet ring in promiscuous mode")),
    "host_tap": (("--host-tap",), dict(action="store_true",
                 help="give the host a TAP per interface (dp-IFACE, with the interface's "
                      "MAC): XDP_PASS frames enter the host there, frames the host sends "
                      "there leave by the interface; put the host's addresses on the TAP")),
    "tap_name": (("--tap-name",), dict(metavar="NAME", dest="tap_names", action="append",
                 help="with --host-tap: the TAP's name for the -i of the same rank "
                      "(default dp-IFACE)")),
    "tx_path": (("--tx",), dict(choices=("mmsg", "ring"), default="mmsg",
                help="batched transmit path (valid values: mmsg, sendmmsg of 64 frames "
                     "per call; ring, a PACKET_TX_RING; default mmsg)")),
    "pps": (("--pps",), dict(metavar="N", type=_finite_float,
            help="with replay -i: send at N packets per second (default: --topspeed)")),
    "topspeed": (("--topspeed",), dict(action="store_true",
                 help="with replay -i: send as fast as the interface takes them (the "
                      "default)")),
    "workers": (("--workers",), dict(metavar="N", type=_workers, default=1,
                help="run the program on N workers in parallel (auto: one per core "
                     "available); packets are spread by a symmetric hash of their flow, "
                     "so both directions of a flow meet one worker and keep their order; "
                     "per-CPU maps get a slot per worker (default 1)")),
    "cluster": (("--cluster",), dict(metavar="SPEC",
                help="replay on a Dask cluster: local (an embedded LocalCluster, one worker "
                     "process per core), local:N (N workers), or tcp://host:port (an existing "
                     "scheduler); each capture, or each --task-bytes range of a large classic "
                     "pcap, is one task; -r takes a quoted glob ('captures/*.pcap')")),
    "merge": (("--merge",), dict(action="store_true",
              help="with several captures: one set of verdict pcaps in OUTDIR, merged by "
                   "timestamp, instead of OUTDIR/<capture name>/ per capture")),
    "task_bytes": (("--task-bytes",), dict(metavar="N", type=_positive_int, default=256 << 20,
                   help="with --cluster: split classic pcaps larger than N bytes into tasks "
                        "of about N bytes, on record boundaries (default 268435456)")),
    "extended": (("-e", "--extended"), dict(action="store_true",
                 help="with --interval: more rates per interface (aborted, bytes in, out and "
                      "refused, to and from the host, ring and interface drops)")),
    "strict": (("--strict",), dict(action="store_true",
               help="also reject what the kernel's verifier rejects and dataplane runs "
                    "under a run-time check: a packet access not proven by a comparison "
                    "with data_end, a loop that comes back to a state it was in (paths "
                    "explored apart, as the kernel's)")),
    "json": (("-j", "--json"), dict(action="store_true",
             help="print one JSON object instead of the human summary")),
    "quiet": (("-q", "--quiet"), dict(action="store_true",
              help="no progress line and no summary (errors and -j output still printed)")),
}


def add_options(parser, *names, **overrides):
    """Add the named options of the table to ``parser``."""
    for name in names:
        flags, kwargs = OPTIONS[name]
        parser.add_argument(*flags, **{**kwargs, **overrides.get(name, {})})
