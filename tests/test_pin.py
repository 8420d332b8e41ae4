"""Pinned maps: replay --pin DIR, then dataplane map list/dump/update/delete from
other processes, including while the program is running."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from dataplane.kernels import htab
from dataplane.pin import open_pinned

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "pcaps" / "small.pcap"


def dp(*args, check=0, **kw):
    r = subprocess.run([sys.executable, "-m", "dataplane.cli.main", *map(str, args)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300, **kw)
    assert r.returncode == check, (r.returncode, r.stdout, r.stderr)
    return r


def test_replay_pin_then_inspect_and_change_from_the_cli(tmp_path):
    pin = tmp_path / "pinned"
    d = json.loads(dp("replay", "-r", SMALL, "-p", "flow_counter", "--pin", pin,
                      "--dump-maps", "-j").stdout)
    assert sorted(p.name for p in pin.iterdir()) == ["flows.bin", "flows.json"]
    listed = json.loads(dp("map", "list", "--pin", pin, "-j").stdout)
    assert listed == [{"name": "flows", "type_name": "lru_hash", "max_entries": 65536,
                       "workers": 1}]
    dumped = json.loads(dp("map", "dump", "flows", "--pin", pin, "-j").stdout)
    assert dumped == d["maps"]["flows"]
    key = {"saddr": "10.9.9.9", "daddr": "10.8.8.8", "sport": 1, "dport": 2, "proto": 17}
    dp("map", "update", "flows", json.dumps(key), '{"packets": 7, "bytes": 700}', "--pin", pin)
    after = json.loads(dp("map", "dump", "flows", "--pin", pin, "-j").stdout)
    assert {"key": key, "value": {"packets": 7, "bytes": 700}} in after
    assert len(after) == len(dumped) + 1
    dp("map", "delete", "flows", json.dumps(key), "--pin", pin)
    r = dp("map", "delete", "flows", json.dumps(key), "--pin", pin, check=1)
    assert "map 'flows': delete" in r.stderr and "-ENOENT" in r.stderr
    human = dp("map", "dump", "flows", "--pin", pin).stdout
    assert human.startswith(f"map flows: lru_hash, {len(dumped):,} of 65,536 entries")


def test_map_cli_errors(tmp_path):
    r = dp("map", "list", check=2, env={"PATH": "/usr/bin:/bin"})
    assert "--pin DIR is required" in r.stderr
    r = dp("map", "dump", "nope", "--pin", tmp_path, check=1)
    assert "no pinned map 'nope'" in r.stderr
    r = dp("map", "list", "--pin", tmp_path / "missing", check=1)
    assert "no such pin directory" in r.stderr
    dp("replay", "-r", SMALL, "-p", "ddos_guard", "--pin", tmp_path, "-q")
    r = dp("map", "update", "config", "0", "not-json", "--pin", tmp_path, check=2)
    assert "value 'not-json' is not JSON" in r.stderr
    r = dp("map", "update", "config", "0", '{"rate": 1}', "--pin", tmp_path, check=1)
    assert "map 'config'" in r.stderr and "rate_pps" in r.stderr


#: A flow_counter key absent from small.pcap, and a value, as `dataplane map` takes them.
NEW_FLOW = ('{"saddr": "10.9.9.9", "daddr": "10.8.8.8", "sport": 1, "dport": 2, "proto": 17}',
            '{"packets": 1, "bytes": 1}')


def _flows_pinned(tmp_path):
    """flow_counter's flows, pinned and filled by a replay of small.pcap."""
    pin = tmp_path / "pinned"
    dp("replay", "-r", SMALL, "-p", "flow_counter", "--pin", pin, "-q")
    return pin, open_pinned(pin, "flows")


def test_damaged_pinned_file_is_an_error_not_a_crash(tmp_path):
    """The control plane follows a pinned table's links without bounds checks:
    a damaged file segfaulted dump (random bytes), hung update (a chain looping
    back), and raised a traceback (all 0xff); each is now one error line. The
    LRU table (kernels/lru_htab.py) has no chains: its links are the slot of
    each entry number, which a full map's CLOCK follows."""
    pin, flows = _flows_pinned(tmp_path)
    s = int(flows.rows[0])  # entry 0's slot...
    flows.rows[0] = flows.keys.shape[0]  # ...now past the last
    for args in (("dump", "flows"), ("update", "flows", *NEW_FLOW)):
        r = dp("map", *args, "--pin", pin, check=1)
        assert r.stderr.splitlines() == [f"error: {pin / 'flows.bin'}: map 'flows': corrupt "
                                         "table: an entry's slot out of range, or not the slot "
                                         "that holds it"]
    # entry 0's row moved half the table away: its walk crosses empty slots
    t = (s + flows.keys.shape[0] // 2) % flows.keys.shape[0]
    assert flows.keys[t, 0] == 0 and len(flows) < flows.keys.shape[0] // 4
    flows.keys[t], flows.keys[s, 0], flows.rows[0] = flows.keys[s], 0, t
    del flows
    r = dp("map", "dump", "flows", "--pin", pin, check=1)
    assert r.stderr.splitlines() == [f"error: {pin / 'flows.bin'}: map 'flows': corrupt "
                                     "table: a key its lookups cannot reach"]
    size = (pin / "flows.bin").stat().st_size
    for junk in (b"\xff" * size, bytes(range(256)) * (size // 256) + bytes(size % 256)):
        (pin / "flows.bin").write_bytes(junk)
        r = dp("map", "dump", "flows", "--pin", pin, check=1)
        assert len(r.stderr.splitlines()) == 1 and "corrupt table" in r.stderr, r.stderr


def test_pinning_into_a_file_says_it_is_not_a_directory(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = dp("replay", "-r", SMALL, "-p", "flow_counter", "--pin", tmp_path / "afile", check=1)
    assert r.stderr.splitlines() == [f"error: {tmp_path / 'afile'}: cannot pin map 'flows': "
                                     "not a directory"]
    assert (tmp_path / "afile").read_text() == "x"


def test_a_pin_of_another_layout_is_an_error(tmp_path):
    """A hash map's file layout changed (format 2: chain links in the rows; 3: LRU
    tables open-addressed); a pin an older dataplane wrote is refused by name, not
    read as garbage."""
    pin, flows = _flows_pinned(tmp_path)
    del flows
    spec = json.loads((pin / "flows.json").read_text())
    assert spec["format"] == 3
    (pin / "flows.json").write_text(json.dumps(dict(spec, format=2)))
    r = dp("map", "dump", "flows", "--pin", pin, check=1)
    assert r.stderr.splitlines()[0] == (f"error: {pin / 'flows.json'}: pinned in format 2, "
                                        "this dataplane reads format 3")
    r = dp("map", "list", "--pin", pin, "-j")
    assert json.loads(r.stdout) == []
    assert r.stderr.splitlines() == [f"warning: {pin / 'flows.json'}: pinned in format 2, "
                                     "this dataplane reads format 3: not listed (pin it again)"]
    (pin / "flows.json").write_text("[1]")  # JSON, not a spec
    r = dp("map", "list", "--pin", pin, check=1)
    assert r.stderr.splitlines() == [f"error: {pin / 'flows.json'}: not a pinned map's spec: "
                                     "not a JSON object"]


def test_a_lock_left_held_is_an_error_not_a_hang(tmp_path):
    """A process killed while it changed a pinned map leaves the map's lock word
    set: the control plane spun on it for ever; it now gives up after about a
    second (htab.CONTROL_SPINS) with -EBUSY. Lookups take no lock."""
    pin, flows = _flows_pinned(tmp_path)
    flows.hdr[htab.H_LOCK] = 1
    r = dp("map", "update", "flows", *NEW_FLOW, "--pin", pin, check=1)
    assert "its update lock stayed held" in r.stderr and "(-EBUSY)" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    dp("map", "dump", "flows", "--pin", pin)  # reading still works
    flows.hdr[htab.H_LOCK] = 0
    dp("map", "update", "flows", *NEW_FLOW, "--pin", pin)


RUNNER = """
import sys
from dataplane import PacketBatch, load_program
prog = load_program("ddos_guard", pin=sys.argv[1])
prog.maps["config"].update(0, (0, 1))  # rate 0: pass everything
b = PacketBatch(1)
b.append(bytes(12) + b"\\x08\\x00\\x45" + bytes(45))
for step in range(2):
    b.action[0] = 0
    prog.run_batch(b)
    print(int(b.action[0]), flush=True)   # 2 = XDP_PASS, 1 = XDP_DROP
    sys.stdin.readline()                  # wait for the other process
"""


def test_a_second_process_changes_a_running_programs_map(tmp_path):
    pin = tmp_path / "pinned"
    run = subprocess.Popen([sys.executable, "-c", textwrap.dedent(RUNNER), str(pin)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert run.stdout.readline().strip() == "2"   # first batch: passes
        # from another process, while the program is loaded and running:
        dp("map", "update", "config", "0", '{"rate_pps": 1, "burst": 1}', "--pin", pin)
        dp("map", "update", "buckets", '{"saddr": "0.0.0.0"}',
           '{"tokens": 0, "last_ns": 9000000000000000000}', "--pin", pin)
        run.stdin.write("\n")
        run.stdin.flush()
        assert run.stdout.readline().strip() == "1"   # second batch: the new config drops
        run.stdin.write("\n")
        run.stdin.flush()
        assert run.wait(timeout=60) == 0
    finally:
        run.kill()


def test_structured_fields_take_integers_only(tmp_path):
    """As a scalar key refuses 0.5: a field of 1.7 was cut to 1, and 1e400 or
    Infinity (a float infinity) raised OverflowError."""
    pin, flows = _flows_pinned(tmp_path)
    entries = len(flows)
    key, value = NEW_FLOW
    for k, v, field in ((key.replace('"sport": 1', '"sport": 1.7'), value, "sport"),
                        (key, value.replace('"packets": 1', '"packets": 1e400'), "packets"),
                        (key, value.replace('"bytes": 1', '"bytes": Infinity'), "bytes")):
        r = dp("map", "update", "flows", k, v, "--pin", pin, check=1)
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr
        assert r.stderr.startswith(f"error: map 'flows': field '{field}' of ")
        assert "expected an integer" in r.stderr
    assert len(flows) == entries


def test_a_damaged_spec_file_is_named(tmp_path):
    """A spec's fields were used unchecked: max_entries "x" raised ValueError
    (map list: "Cannot specify ',' with 's'"), a dtype numpy does not know
    TypeError."""
    pin, flows = _flows_pinned(tmp_path)
    del flows
    spec_path = pin / "flows.json"
    spec = json.loads(spec_path.read_text())
    for field, bad in (("max_entries", "x"), ("key", "<u99"), ("value", [["a"]]),
                       ("bytes", None)):
        spec_path.write_text(json.dumps(dict(spec, **{field: bad})))
        for args in (("dump", "flows"), ("list",), ("list", "-j")):
            r = dp("map", *args, "--pin", pin, check=1)
            assert r.stderr.splitlines() == [r.stderr.rstrip("\n")], r.stderr
            assert r.stderr.startswith(f"error: {spec_path}: not a pinned map's spec: {field} ")
    # fields of the right types that Map refuses are named by the file too
    spec_path.write_text(json.dumps(dict(spec, max_entries=10)))
    r = dp("map", "dump", "flows", "--pin", pin, check=1)
    assert r.stderr.startswith(f"error: {spec_path}: map 'flows': ")
