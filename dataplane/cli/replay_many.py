"""``dataplane replay`` of several captures, in this process or on a Dask cluster
(``--cluster``): the tasks, their outputs assembled, one summary (cluster.py)."""

import dataclasses
import os
import sys
import time

from .. import cluster
from ..errors import DataplaneError, UsageError
from ..stats import Progress, format_many, print_json, print_warning


def _options(args):
    return dict(program=args.program, filter=args.filter, config=args.config,
                workers=args.workers, batch=args.batch, checked=not args.unchecked,
                seed=args.seed, ktime=args.ktime)


def run_many(args, paths):
    if args.interfaces:
        raise UsageError("replay: -i sends one capture; not with several captures or --cluster")
    if args.count is not None or args.pin is not None:
        raise UsageError("replay: -c and --pin are for one capture in one process, not with "
                         "several captures or --cluster")
    several = len(paths) > 1
    start = time.perf_counter_ns()
    sizes = sum(os.path.getsize(p) for p in paths if os.path.exists(p))
    progress = Progress(sizes, enabled=not (args.quiet or args.json))
    ready = []  # when the cluster was up
    if args.cluster:
        results, files = _on_cluster(args, paths, several, progress, ready)
        maps = cluster.merge_maps(results) if args.dump_maps else None
    else:
        results, files, maps = _in_process(args, paths, several, progress)
    progress.done()
    summary = cluster.sum_stats(results)
    # on a cluster the wall time from the cluster being up to the outputs
    # assembled; in one process the time the replays took (compiling left out,
    # as replay reports it)
    end = time.perf_counter_ns()
    elapsed = (end - ready[0]) / 1e9 if ready else \
        sum((r.get("stats") or {}).get("elapsed_s", 0) for r in results)
    summary.update(
        program=args.program or f"filter '{args.filter}'", inputs=paths,
        cluster=args.cluster, elapsed_s=round(elapsed, 6),
        cluster_start_s=round((ready[0] - start) / 1e9, 6) if ready else None,
        files=files, tasks=[{k: r.get(k) for k in ("path", "start", "end", "error")}
                            | {"packets": (r.get("stats") or {}).get("packets", 0)}
                            for r in results])
    if maps is not None:
        summary["maps"] = maps
    errors = [r["error"] for r in results if r.get("error")]
    for w in summary["warnings"]:
        print_warning(w)
    if args.json:
        print_json(summary)
    elif not args.quiet or args.dump_maps:
        print(format_many(summary, maps_only=args.quiet), flush=True)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


def _tick(progress, sizes):
    done = {"bytes": 0, "packets": 0}

    def update(k, finished, total, result):
        done["bytes"] += sizes[k]  # the bytes of the task that ended, not the k-th's
        done["packets"] += (result.get("stats") or {}).get("packets", 0)
        progress.update(done["bytes"], done["packets"], note=f"{finished}/{total} tasks")
    return update


def _program(args, paths):
    """The program as the tasks load it, in this process; map names given to
    --dump-maps are checked on it (an unknown one: a usage error before any replay)."""
    from ..workers import use_workers
    use_workers(args.workers)
    program = cluster._load(cluster.ReplayTask(paths[0], **_options(args)))
    if args.dump_maps:
        cluster.chosen_maps(program, args.dump_maps)
    return program


def _on_cluster(args, paths, several, progress, ready):
    if isinstance(args.dump_maps, tuple):  # map names: checked before the cluster starts
        _program(args, paths)
    parts_root = os.path.join(args.write, ".parts") if args.write else None
    tasks = cluster.plan(paths, args.task_bytes, dump_maps=args.dump_maps, **_options(args))
    if args.write and args.merge:
        ns = _merged_precision(paths)
        tasks = [dataclasses.replace(t, nanosecond=ns) for t in tasks]
    dests = cluster.output_dirs(args.write, paths, several) if args.write else {}
    if parts_root is not None:  # a capture of one task writes straight to its place
        whole = {p for p in paths if sum(t.path == p for t in tasks) == 1 and not args.merge}
        tasks = [dataclasses.replace(t, outdir=dests[t.path]
                                     if t.path in whole else os.path.join(parts_root, str(k)))
                 for k, t in enumerate(tasks)]
    sizes = [(t.end or os.path.getsize(t.path)) - (t.start or 0) for t in tasks]
    results = cluster.run_on_cluster(tasks, args.cluster, _tick(progress, sizes),
                                     started=lambda: ready.append(time.perf_counter_ns()))
    files = {}
    if parts_root is not None and args.merge:
        # the tasks' folders are in capture and byte order: ties keep that order
        files = cluster.merge_by_time([t.outdir for t in tasks], args.write)
    elif parts_root is not None:
        for path in paths:
            dest = dests[path]
            got = cluster.concatenate_parts([t.outdir for t in tasks if t.path == path], dest) \
                if path not in whole else \
                {os.path.splitext(f)[0]: os.path.join(dest, f)
                 for f in sorted(os.listdir(dest)) if f.endswith(".pcap")} \
                if os.path.isdir(dest) else {}
            files.update({(f"{os.path.basename(dest)}/{k}" if several else k): v
                          for k, v in got.items()})
    if parts_root is not None:
        _remove_if_empty(parts_root)
    return results, files


def _merged_precision(paths):
    """Nanoseconds when any capture has them: --merge's parts share one
    precision (microsecond and nanosecond parts could not be merged, after
    every replay had run)."""
    from ..io.capture import open_capture
    ns = False
    for path in paths:
        try:
            with open_capture(path) as reader:
                ns = ns or reader.nanosecond
        except DataplaneError:
            pass  # its replay reports it
    return ns


def _remove_if_empty(d):
    if os.path.isdir(d) and not os.listdir(d):
        os.rmdir(d)


def _in_process(args, paths, several, progress):
    """Every capture in turn through one program (its maps carry on from one to
    the next, as one process would see them)."""
    from ..io.capture import open_capture
    from ..pipeline import VerdictPcaps, replay
    program = _program(args, paths)
    results, dirs, files, done = [], [], {}, 0
    dests = cluster.output_dirs(args.write, paths, True) if args.write else {}
    merged_ns = _merged_precision(paths) if args.write and args.merge else None
    for k, path in enumerate(paths):
        result = {"path": path, "start": None, "end": None}
        dest = None
        if args.write:
            dest = dests[path]
            if args.merge:
                dest = os.path.join(args.write, ".parts", str(k))
            dirs.append(dest)
        try:
            with open_capture(path) as reader:
                ns = reader.nanosecond if merged_ns is None else merged_ns
                sinks = (VerdictPcaps(dest, nanosecond=ns, snaplen=reader.output_snaplen)
                         if dest else None)
                stats = replay(reader, program, sinks, batch_size=args.batch,
                               workers=args.workers, trace_stream=False)
            result["stats"] = stats.to_json()
            if stats.error:
                result["error"] = f"{path}: {stats.error}"
            if dest and not args.merge:
                files.update({f"{os.path.basename(dest)}/{n}": p for n, p in stats.files.items()})
        except DataplaneError as exc:  # named with its file; the other captures go on
            result["error"] = f"{path}: {exc}"
        results.append(result)
        done += os.path.getsize(path) if os.path.exists(path) else 0
        progress.update(done, sum((r.get("stats") or {}).get("packets", 0) for r in results),
                        note=f"{k + 1}/{len(paths)} captures")
    if args.write and args.merge:
        files = cluster.merge_by_time(dirs, args.write)
        _remove_if_empty(os.path.join(args.write, ".parts"))
    maps = cluster._dump(program, args.dump_maps) if args.dump_maps else None
    if maps is not None:
        maps = {n: {"type": m["type"], "rule": "one process", "entries": m["entries"]}
                for n, m in maps.items()}
    return results, files, maps
