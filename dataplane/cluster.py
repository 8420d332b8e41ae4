"""Replays of capture sets on a Dask cluster (``replay --cluster``).

The unit of work is a task: one capture file, or one byte range of a large
classic pcap (io/pcap.py ``split_pcap``: ranges start on record boundaries).
Each task runs in a Dask worker process exactly what ``dataplane replay``
runs: the program loaded with fresh maps, its compiled code from the shared
on-disk cache, the task's records through the pipeline (``--workers`` threads
inside the task too), each verdict to its own pcap. The task returns its
counters and its maps as dumped before and after, never packets.

The client then assembles:
- captures: the parts of a split file concatenated in file order, so each
  input has ``<verdict>.pcap`` files as a one-process replay writes them
  (in OUTDIR for one input, OUTDIR/<capture name>/ for several); with
  ``merge``, one set for all inputs, merged by timestamp (a stable merge: ties
  keep input order);
- counters: the tasks' sums (packets, bytes, verdicts, redirects, faults);
- maps, by type (bpftool shows per-CPU values per CPU; here a task is a CPU):
  per-CPU maps get one value per task (its workers' slots summed); rings and
  maps of maps are listed per task; every other map (arrays, hashes, LRU and
  LPM tables) is merged by key, each numeric field as the loaded value plus
  the sum of each task's change to it: counters add up as if one process had
  run every task in turn, and configuration nobody changed stays as loaded.
A task that fails is reported with its file and offset; the others' results
are kept, and the run exits 1.
"""

import collections
import dataclasses
import glob
import json
import os
import shutil
import socket
import sys
import urllib.parse

from .errors import CaptureError, DataplaneError, UsageError

#: Classic pcaps larger than this are split into byte ranges of about this size.
TASK_BYTES = 256 << 20


@dataclasses.dataclass(frozen=True)
class ReplayTask:
    """What one task replays, and how (everything a worker process needs)."""
    path: str
    start: int = None          # byte range of a classic pcap (None: the whole file)
    end: int = None
    part: int = 0              # index of the range within its file
    program: str = None
    filter: str = None
    config: str = None
    workers: int = 1
    batch: int = 1024
    checked: bool = True
    seed: int = None
    ktime: str = "monotonic"
    outdir: str = None         # where this task writes its verdicts' pcaps
    nanosecond: bool = None    # their timestamps (None: the capture's own precision)
    dump_maps: object = False  # maps to return for merging: True (all) or their names

    @property
    def where(self):
        return self.path if self.start is None else f"{self.path} (offset {self.start})"


def expand_inputs(patterns):
    """Capture paths from ``-r`` arguments: files, or glob patterns (sorted)."""
    paths = []
    for p in patterns:
        found = sorted(glob.glob(p)) if glob.has_magic(p) else [p]
        if not found:
            raise UsageError(f"replay: no capture matches '{p}'")
        paths += found
    return paths


def plan(paths, task_bytes=TASK_BYTES, **options):
    """The tasks for ``paths``: one per file, or per byte range of a classic pcap
    larger than ``task_bytes``."""
    from .io.capture import PCAP_MAGICS
    from .io.pcap import split_pcap
    tasks = []
    for path in paths:
        ranges = [(None, None)]
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                magic = int.from_bytes(f.read(4), "little")
        except OSError as exc:
            raise CaptureError(path, f"cannot open: {(exc.strerror or str(exc)).lower()}") \
                from None
        if size > task_bytes and magic in PCAP_MAGICS:
            ranges = split_pcap(path, -(-size // task_bytes))
        tasks += [ReplayTask(path, s, e, k, **options) for k, (s, e) in enumerate(ranges)]
    return tasks


def chosen_maps(program, names=True):
    """The maps ``--dump-maps`` prints, {name: Map}: every map of ``program``
    (``names`` True), or those of the tuple ``names``, in its order; an unknown
    name is a UsageError that lists the program's maps."""
    if names is True:
        return dict(program.maps)
    for n in names:
        if n not in program.maps:
            raise UsageError(f"--dump-maps: program '{program.name}' has no map '{n}' (its "
                             f"maps: {', '.join(program.maps) or 'none'})")
    return {n: program.maps[n] for n in names}


def _dump(program, names=True):
    """{map name: {"type", "percpu", "entries"}}: the program's maps (those
    ``names``: chosen_maps) as JSON."""
    out = {}
    for name, m in chosen_maps(program, names).items():
        kind = "ringbuf" if getattr(m, "is_ringbuf", False) else m.type_name
        out[name] = {"type": kind, "percpu": bool(getattr(m, "percpu", False)),
                     "entries": m.to_json()}
    return out


def run_task(task):
    """Run one task (in a Dask worker process): a JSON-able result."""
    from .pipeline import VerdictPcaps, replay
    from .program import forget_programs
    from .workers import use_workers
    result = {"path": task.path, "start": task.start, "end": task.end, "part": task.part}
    try:
        use_workers(task.workers)
        forget_programs()  # fresh maps: this process may have run another task before
        program = _load(task)
        maps_before = _dump(program, task.dump_maps) if task.dump_maps else None
        from .io.capture import open_capture
        with open_capture(task.path, start=task.start, end=task.end) as reader:
            sinks = None
            if task.outdir is not None:
                ns = reader.nanosecond if task.nanosecond is None else task.nanosecond
                sinks = VerdictPcaps(task.outdir, nanosecond=ns, snaplen=reader.output_snaplen)
            stats = replay(reader, program, sinks, batch_size=task.batch,
                           workers=task.workers, trace_stream=False)
        result.update(stats=stats.to_json(), maps_before=maps_before,
                      maps=_dump(program, task.dump_maps) if task.dump_maps else None)
        if stats.error:
            result["error"] = f"{task.where}: {stats.error}"
    except DataplaneError as exc:
        result["error"] = f"{task.where}: {exc}"
    return result


def _load(task):
    from .program import load_configured
    return load_configured(task.program, task.filter, task.checked, lb_config=task.config,
                           seed=task.seed, capture_time=task.ktime == "capture")


# ---------------------------------------------------------------- the cluster

#: The most worker processes ``--cluster local:N`` starts.
MAX_LOCAL_WORKERS = 256


def connect(spec):
    """A Dask client for ``--cluster``: ``local`` or ``local:N`` (an embedded
    LocalCluster of N worker processes, one thread each; default: the cores
    available), or a scheduler address ``tcp://host:port``."""
    try:
        import distributed
    except ImportError:
        raise UsageError("--cluster needs Dask: pip install 'dask[distributed]'") from None
    import logging
    logging.getLogger("distributed").setLevel(logging.ERROR)
    bad = UsageError(f"--cluster: expected local, local:N (N from 1 to {MAX_LOCAL_WORKERS}) "
                     f"or tcp://host:port, not '{spec}'")
    if spec == "local" or spec.startswith("local:"):
        n = spec.partition(":")[2]
        if n and not (n.isdigit() and 1 <= int(n) <= MAX_LOCAL_WORKERS):
            raise bad  # (local:100000 started processes until the machine gave out)
        workers = int(n) if n else max(1, len(os.sched_getaffinity(0)))
        import dask
        # Forked workers start with Dask, numba and dataplane already imported:
        # 0.25 s to a running cluster on 2 workers, against 0.58 s with Dask's
        # default (spawn), whose workers import everything again. Not on macOS,
        # where fork is unsafe for a process that has started threads.
        method = "fork" if sys.platform == "linux" else "spawn"
        with dask.config.set({"distributed.worker.multiprocessing-method": method}):
            cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                               processes=True, dashboard_address=None,
                                               silence_logs=logging.ERROR)
        return distributed.Client(cluster), cluster
    if not spec.startswith(("tcp://", "tls://")):
        raise bad
    try:  # a host and a port (tcp:// alone was a ValueError deep in Dask)
        url = urllib.parse.urlsplit(spec)
        if not url.hostname or url.port is None or url.path not in ("", "/"):
            raise bad
    except ValueError:
        raise bad from None
    try:
        # a port nobody listens on refuses at once; Dask's client retried it for
        # its whole timeout (10 s to say "refused")
        socket.create_connection((url.hostname, url.port), timeout=10).close()
        return distributed.Client(spec, timeout=10), None
    except (OSError, TimeoutError) as exc:
        raise DataplaneError(f"--cluster {spec}: cannot reach the scheduler ({exc})") from None


def run_on_cluster(tasks, spec, progress=None, started=None):
    """Run ``tasks`` on the cluster ``spec``: results in task order. ``started``
    (a callable) is called once the cluster is up, before the first task;
    ``progress(task number, tasks done, tasks, result)`` as each task ends."""
    import distributed
    client, cluster = connect(spec)
    if started is not None:
        started()
    try:
        futures = {client.submit(run_task, t, pure=False, key=f"replay-{k}-{os.getpid()}"): k
                   for k, t in enumerate(tasks)}
        results = [None] * len(tasks)
        for done, fut in enumerate(distributed.as_completed(futures), 1):
            k = futures[fut]
            try:
                results[k] = fut.result()
            except Exception as exc:  # the worker died, or a bug: keep the others
                results[k] = {"path": tasks[k].path, "start": tasks[k].start,
                              "error": f"{tasks[k].where}: task failed: {exc}"}
            if progress is not None:
                progress(k, done, len(tasks), results[k])
        return results
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# ---------------------------------------------------------------- assembling

def output_dirs(outdir, paths, several):
    """Where each input's verdict captures go: OUTDIR, or OUTDIR/<name> for
    several, <name> the file's name without its extension. A name two inputs
    share (one folder for both lost half their packets) becomes the path from
    the folder the inputs share, '/' as '_' (a/x.pcap, b/x.pcap: a_x, b_x),
    then with the extension too (x.pcap, x.pcapng: x_pcap, x_pcapng)."""
    if not several:
        return {p: outdir for p in paths}
    top = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    names = {p: os.path.splitext(os.path.basename(p))[0] for p in paths}
    for longer in (lambda p: os.path.splitext(os.path.relpath(p, top))[0],
                   lambda p: os.path.relpath(p, top).replace(".", "_")):
        shared = {n for n, k in collections.Counter(names.values()).items() if k > 1}
        names.update({p: longer(os.path.abspath(p)).replace(os.sep, "_")
                      for p in paths if names[p] in shared})
    return {p: os.path.join(outdir, n) for p, n in names.items()}


def concatenate_parts(parts, dest_dir):
    """Join the parts' pcaps (directories, in file order) verdict by verdict into
    ``dest_dir``: the first part's file header, then every part's records."""
    os.makedirs(dest_dir, exist_ok=True)
    names = sorted({f for d in parts if os.path.isdir(d) for f in os.listdir(d)})
    files = {}
    for name in names:
        dest = os.path.join(dest_dir, name)
        sources = [os.path.join(d, name) for d in parts if os.path.exists(os.path.join(d, name))]
        os.replace(sources[0], dest)  # the first part is moved, the others appended
        with open(dest, "ab") as out:
            for src in sources[1:]:
                with open(src, "rb") as f:
                    f.seek(24)
                    shutil.copyfileobj(f, out, 8 << 20)
        files[os.path.splitext(name)[0]] = dest
    for d in parts:
        shutil.rmtree(d, ignore_errors=True)
    return files


def merge_by_time(dirs, dest_dir):
    """Merge the verdict pcaps of ``dirs`` by timestamp into ``dest_dir`` (ties:
    the earlier directory first; within a file, file order), a window of each
    file at a time (io/pcap_merge.py: mergecap)."""
    from .io.pcap_merge import merge_pcaps
    os.makedirs(dest_dir, exist_ok=True)
    names = sorted({f for d in dirs if os.path.isdir(d) for f in os.listdir(d)
                    if f.endswith(".pcap")})
    files = {}
    for name in names:
        sources = [os.path.join(d, name) for d in dirs if os.path.exists(os.path.join(d, name))]
        dest = os.path.join(dest_dir, name)
        merge_pcaps(sources, dest)
        files[os.path.splitext(name)[0]] = dest
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    return files


def _numeric_delta(merged, before, after):
    """merged + (after - before), field by field for dict values."""
    if isinstance(after, dict):
        base = merged if isinstance(merged, dict) else {}
        return {f: _numeric_delta(base.get(f, 0), (before or {}).get(f, 0), v)
                for f, v in after.items()}
    if isinstance(after, (int, float)) and isinstance(before or 0, (int, float)):
        return merged + after - (before or 0)
    return after


def _key(entry):
    return json.dumps(entry.get("key"), sort_keys=True)


def merge_maps(results):
    """The tasks' maps merged by the rules in the module's docstring:
    {name: {"type", "rule", "entries"}}."""
    done = [r for r in results if r.get("maps") is not None]
    if not done:
        return {}
    merged = {}
    for name, first in done[0]["maps"].items():
        kind = first["type"]
        if first["percpu"]:
            table = {}
            for k, r in enumerate(done):
                for e in r["maps"][name]["entries"]:
                    v = e["value"]
                    total = _sum_values(v)
                    table.setdefault(_key(e), [e.get("key"), [None] * len(done)])[1][k] = total
            merged[name] = {"type": kind, "rule": "one value per task",
                            "entries": [{"key": k, "value": v} for k, v in table.values()]}
        elif kind in ("ringbuf", "queue", "stack", "array_of_maps", "hash_of_maps",
                      "prog_array"):
            merged[name] = {"type": kind, "rule": "listed per task",
                            "entries": [{"task": k, "entries": r["maps"][name]["entries"]}
                                        for k, r in enumerate(done)]}
        else:
            base = {_key(e): e for e in done[0]["maps_before"][name]["entries"]}
            table = {k: [e.get("key"), e["value"]] for k, e in base.items()}
            for r in done:
                before = {_key(e): e["value"] for e in r["maps_before"][name]["entries"]}
                for e in r["maps"][name]["entries"]:
                    k = _key(e)
                    row = table.setdefault(k, [e.get("key"), 0])  # new: a change from 0
                    row[1] = _numeric_delta(row[1], before.get(k), e["value"])
            merged[name] = {"type": kind, "rule": "loaded value + each task's change",
                            "entries": [{"key": k, "value": v} for k, v in table.values()]}
    return merged


def _sum_values(values):
    """A task's per-CPU values (one per worker) summed, field by field."""
    if not isinstance(values, list):
        return values
    if values and isinstance(values[0], dict):
        return {f: sum(v[f] for v in values) for f in values[0]}
    return sum(values)


def sum_stats(results):
    """The tasks' counters summed into one summary dict (RunStats.to_json's keys)."""
    total = {"packets": 0, "bytes": 0, "actions": {}, "redirect": {}, "faults": 0,
             "invalid_verdicts": 0, "trace_lines": 0, "warnings": []}
    for r in results:
        s = r.get("stats")
        if s is None:
            continue
        for k in ("packets", "bytes", "faults", "invalid_verdicts", "trace_lines"):
            total[k] += s[k]
        for k, v in s["actions"].items():
            total["actions"][k] = total["actions"].get(k, 0) + v
        for k, v in s["redirect"].items():
            total["redirect"][k] = total["redirect"].get(k, 0) + v
        total["warnings"] += [f"{r['path']}: {w}" for w in s["warnings"]]
    return total
