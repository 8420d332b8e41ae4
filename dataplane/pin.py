"""Pinned maps: a map's storage in a file, shared with other processes.

``dataplane replay/run --pin DIR`` backs each map of the program by
``DIR/<name>.bin`` (its one buffer, memory-mapped: the running program and any
other process that maps the file share the same bytes) and describes it in
``DIR/<name>.json`` (type, key and value dtypes, max_entries, workers), the
way bpffs pins a map and ``bpftool map show`` describes it. ``open_pinned``
rebuilds the Map in another process; ``dataplane map list|dump|update|delete``
uses it. Without ``--pin`` nothing is written to disk. Pinned files stay when
the run ends (unpin by deleting them, or ``dataplane map unpin``).
"""

import json
import mmap
import os
from pathlib import Path

import numpy as np

from .errors import DataplaneError

#: The layout of a pinned hash map's file: 2 since chain links moved into the
#: rows (kernels/htab.py), 3 since LRU hash maps keep their rows in the slots
#: (kernels/lru_htab.py); a file of another format is not opened.
_FORMAT = 3


def _descr(dtype):
    """A JSON form of a numpy dtype (its ``descr``, or the scalar's string)."""
    return dtype.descr if dtype.names else dtype.str


def spec_dtype(d):
    """The numpy dtype of a spec file's ``key`` / ``value`` entry."""
    return np.dtype([tuple(f) for f in d] if isinstance(d, list) else d)


def map_file(directory, name):
    return Path(directory) / f"{name}.bin"


def spec_file(directory, name):
    return Path(directory) / f"{name}.json"


def pin_buffer(directory, m, nbytes):
    """A zero-filled, memory-mapped buffer of ``nbytes`` for map ``m`` in ``directory``
    (replacing an earlier pin of the same name), and its spec file."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        path = map_file(d, m.name)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.truncate(nbytes)
        os.replace(tmp, path)
        spec = {"format": _FORMAT, "name": m.name, "type": m.type, "type_name": m.type_name,
                "key": _descr(m.key_dtype), "value": _descr(m.value_dtype),
                "max_entries": m.max_entries, "workers": m.ncpu, "bytes": nbytes}
        spec_file(d, m.name).write_text(json.dumps(spec, indent=1) + "\n")
    except OSError as exc:  # (mkdir of a file: "File exists")
        why = "not a directory" if isinstance(exc, FileExistsError) else exc.strerror
        raise DataplaneError(f"{d}: cannot pin map '{m.name}': {why}") from None
    return _map_file(path, nbytes)


def _map_file(path, nbytes):
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), nbytes)
    return np.frombuffer(mm, np.uint8)


def _specs(directory):
    """(spec file, spec) of every ``*.json`` in a pin directory (sorted by name)."""
    d = Path(directory)
    if not d.is_dir():
        raise DataplaneError(f"{d}: no such pin directory",
                             hint="run a program with --pin DIR first")
    specs = []
    for p in sorted(d.glob("*.json")):
        try:
            spec = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise DataplaneError(f"{p}: not a pinned map's spec: {exc}") from None
        if not isinstance(spec, dict):
            raise DataplaneError(f"{p}: not a pinned map's spec: not a JSON object")
        specs.append((p, spec))
    return specs


def list_pinned(directory):
    """Specs of the maps pinned in ``directory`` (sorted by name)."""
    return [_checked(p, s) for p, s in _specs(directory)
            if s.get("format") == _FORMAT and map_file(directory, s.get("name", "")).exists()]


def _checked(path, spec):
    """``spec`` with the fields that map list and open_pinned use checked: a
    damaged spec file is named, not a ValueError or TypeError traceback."""
    from .maps import KEYLESS  # (maps imports what it needs of this module)

    def bad(why):
        return DataplaneError(f"{path}: not a pinned map's spec: {why}")

    for k in ("type", "max_entries", "bytes", "workers"):
        v = spec.get(k) if k != "workers" else spec.get(k, 1)  # workers: optional
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad(f"{k} {v!r} is not a positive integer")
    if not isinstance(spec.get("name"), str) or not isinstance(spec.get("type_name"), str):
        raise bad("name and type_name must be strings")
    for k in ("key", "value"):
        if k not in spec:
            raise bad(f"{k} is missing")
        try:
            size = spec_dtype(spec[k]).itemsize
        except (TypeError, ValueError) as exc:
            raise bad(f"{k} {spec[k]!r} is not a dtype ({exc})") from None
        # only a ring, a queue and a stack have no key
        if size == 0 and not (k == "key" and spec["type"] in KEYLESS):
            raise bad(f"{k} {spec[k]!r} has no bytes")
    return spec


def other_formats(directory):
    """Why each map pinned in another format is left out, by its spec file."""
    return {p: f"{p}: pinned in format {s['format']}, this dataplane reads format {_FORMAT}"
            for p, s in _specs(directory) if s.get("format", _FORMAT) != _FORMAT}


def open_pinned(directory, name):
    """The Map pinned as ``name`` in ``directory``, on the same shared bytes."""
    from .maps import Map

    for spec in list_pinned(directory):
        if spec["name"] == name:
            break
    else:
        why = other_formats(directory).get(spec_file(directory, name))
        if why is not None:
            raise DataplaneError(why, hint="pin it again: run the program with --pin")
        names = ", ".join(s["name"] for s in list_pinned(directory)) or "none"
        raise DataplaneError(f"{directory}: no pinned map '{name}' (pinned: {names})")
    path = map_file(directory, name)
    if path.stat().st_size != spec["bytes"]:
        raise DataplaneError(f"{path}: size {path.stat().st_size} does not match its spec "
                             f"({spec['bytes']} bytes)")
    try:  # a spec whose fields Map refuses: say which file
        m = Map(spec["name"], spec["type"], key=spec_dtype(spec["key"]),
                value=spec_dtype(spec["value"]),
                max_entries=spec["max_entries"], attach=_map_file(path, spec["bytes"]),
                workers=spec.get("workers"))  # a per-CPU map: a value per worker of the run
    except DataplaneError as exc:
        raise DataplaneError(f"{spec_file(directory, name)}: {exc}") from None
    try:
        m.check_links()
    except DataplaneError as exc:  # damaged: say which file
        raise DataplaneError(f"{path}: {exc}") from None
    return m
