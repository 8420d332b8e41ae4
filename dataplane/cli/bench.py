"""``dataplane bench``: ns/packet of a program on packets in memory."""

from ..bench import bench, load_packets
from ..errors import DataplaneError
from ..lb.control import load_balancer
from ..program import is_object_ref, load_program, programs_dir
from ..stats import format_versus_kernel, print_json, print_warning
from ..workers import use_workers
from .options import add_options

HELP = "measure a program's ns/packet on packets in memory, against the empty program"
DESCRIPTION = """Measure a program on the packets of a capture held in memory (the
bundled pcaps/small.pcap without -r): the median and spread of ns/packet over
--repeat runs, and the same for the program without bounds checks and for the
empty program (the harness alone), measured in the same run, interleaved, so
the cost of checking and the program's own cost are visible."""


def register(sub):
    p = sub.add_parser("bench", help=HELP, description=DESCRIPTION)
    add_options(p, "program", "read", "config", "count", "batch", "workers", "repeat", "json")
    return p


def default_capture():
    return str(programs_dir().parent / "pcaps" / "small.pcap")


def run(args):
    use_workers(args.workers)
    program = load_program(args.program)
    unchecked = load_program(args.program, checked=False)
    if args.config:
        for p in (program, unchecked):
            load_balancer(p, args.config)
    if is_object_ref(args.program):  # the kernel's empty program, through our eBPF path
        from ..ebpf.kernel_bench import empty_program
        harness = empty_program()
    else:
        harness = load_program("pass_all")
    warnings = []
    chunks, packets = load_packets(args.read or default_capture(), args.count,
                                   (program, harness), args.workers, warnings)
    for w in warnings:  # as replay prints them: the packets measured are fewer
        print_warning(w)
    if packets == 0:
        raise DataplaneError(f"{args.read or default_capture()}: no packets to measure")
    result = bench(program, unchecked, harness, chunks, packets, batch=args.batch,
                   repeats=args.repeat, workers=args.workers)
    versus = _versus_kernel(args, harness) if is_object_ref(args.program) else None
    if args.json:
        print_json({**result.to_json(), **({"kernel": versus} if versus else {})})
    else:
        print(result.format(), flush=True)
        if versus:
            print(format_versus_kernel(versus), flush=True)
    return 0


def _versus_kernel(args, harness):
    """An eBPF object: its cost here and under the kernel's JIT, like for like."""
    from ..ebpf.kernel_bench import compare
    try:
        return compare(args.program, args.read or default_capture(), harness=harness)
    except (DataplaneError, ValueError, OSError) as exc:
        return {"ours": None, "kernel": None, "ratio": None, "note": f"not compared: {exc}"}
