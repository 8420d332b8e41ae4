"""replay --cluster: captures (and byte ranges of a large one) as tasks on a
Dask LocalCluster of 2 worker processes. Oracle: the same captures replayed
one after another in a single process (totals, output bytes, map contents),
and dpkt reading the merged captures."""

import collections
import json
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dataplane.cli.main", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    d = tmp_path_factory.mktemp("captures")
    for k, count in enumerate((6000, 4000, 5000)):
        subprocess.run([sys.executable, str(ROOT / "pcaps" / "gen.py"), "-o",
                        str(d / f"cap{k}.pcap"), "--count", str(count), "--seed", str(20 + k)],
                       check=True)
    return d


def _replay(*args):
    r = _cli("replay", *args, "-j", "--dump-maps")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _entries(summary, name):
    return collections.Counter(json.dumps(e, sort_keys=True)
                               for e in summary["maps"][name]["entries"])


def _tree(d):
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(Path(d).rglob("*.pcap"))}


@pytest.mark.parametrize("program", ["flow_counter", "acl_lpm"])
def test_local_cluster_equals_one_process(tmp_path, captures, program):
    pattern = str(captures / "*.pcap")
    one = _replay("-r", pattern, "-p", program, "-w", tmp_path / "one")
    two = _replay("-r", pattern, "-p", program, "-w", tmp_path / "two", "--cluster", "local:2")
    for key in ("packets", "bytes", "actions", "faults"):
        assert two[key] == one[key], key
    assert one["packets"] == 15000
    assert [t["packets"] for t in two["tasks"]] == [6000, 4000, 5000]
    tree = _tree(tmp_path / "one")
    assert sorted(tree) == ["cap0/pass.pcap", "cap1/pass.pcap", "cap2/pass.pcap"] \
        or program == "acl_lpm"
    assert _tree(tmp_path / "two") == tree
    # counters merged by key (the loaded prefixes plus each task's counts)
    for name in one["maps"]:
        assert _entries(two, name) == _entries(one, name), name


def test_dump_maps_names_one_map_on_the_cluster(tmp_path, captures):
    """``--dump-maps acl_v6``: the tasks return that map alone, merged as the
    whole dump merges it; an unknown name fails before the cluster starts."""
    pattern = str(captures / "*.pcap")
    whole = _replay("-r", pattern, "-p", "acl_lpm", "--cluster", "local:2")
    r = _cli("replay", "-r", pattern, "-p", "acl_lpm", "--cluster", "local:2", "-j",
             "--dump-maps", "acl_v6")
    assert r.returncode == 0, r.stderr
    one = json.loads(r.stdout)
    assert list(one["maps"]) == ["acl_v6"] and list(whole["maps"]) == ["acl_v4", "acl_v6"]
    assert _entries(one, "acl_v6") == _entries(whole, "acl_v6")
    r = _cli("replay", "-r", pattern, "-p", "acl_lpm", "--cluster", "local:2", "-w",
             tmp_path / "out", "--dump-maps", "acl_v5")
    assert r.returncode == 2 and r.stdout == "" and not (tmp_path / "out").exists()
    assert r.stderr.startswith("error: --dump-maps: program 'acl_lpm' has no map 'acl_v5' "
                               "(its maps: acl_v4, acl_v6)")


def test_byte_ranges_of_one_capture(tmp_path, captures):
    cap = captures / "cap0.pcap"
    one = _replay("-r", cap, "-p", "drop_udp", "-w", tmp_path / "one")
    two = _replay("-r", cap, "-p", "drop_udp", "-w", tmp_path / "two", "--cluster", "local:2",
                  "--task-bytes", 700000)
    assert len(two["tasks"]) >= 3 and two["tasks"][0]["start"] == 24
    assert sum(t["packets"] for t in two["tasks"]) == one["packets"] == 6000
    assert two["actions"] == one["actions"]
    assert _tree(tmp_path / "two") == _tree(tmp_path / "one")  # parts joined in file order
    assert not (tmp_path / "two" / ".parts").exists()


def test_merge_by_timestamp(tmp_path, captures):
    two = _replay("-r", str(captures / "*.pcap"), "-p", "drop_udp", "-w", tmp_path,
                  "--cluster", "local:2", "--merge")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drop.pcap", "pass.pcap"]
    got = collections.Counter()
    for name in ("drop", "pass"):
        with open(tmp_path / f"{name}.pcap", "rb") as f:
            records = [(ts, bytes(buf)) for ts, buf in dpkt.pcap.Reader(f)]
        assert [t for t, _ in records] == sorted(t for t, _ in records)
        got.update(b for _, b in records)
        assert len(records) == two["actions"][name]
    want = collections.Counter()
    for p in sorted(captures.glob("*.pcap")):
        with open(p, "rb") as f:
            want.update(bytes(buf) for _, buf in dpkt.pcap.Reader(f))
    assert got == want


def test_a_failing_task_is_named_and_the_others_kept(tmp_path, captures):
    bad = tmp_path / "in"
    bad.mkdir()
    for p in captures.glob("*.pcap"):
        (bad / p.name).write_bytes(p.read_bytes())
    data = bytearray((bad / "cap1.pcap").read_bytes())
    data[24 + 8:24 + 12] = (10 ** 6).to_bytes(4, "little")  # first record: caplen 1,000,000
    (bad / "cap1.pcap").write_bytes(bytes(data))
    r = _cli("replay", "-r", str(bad / "*.pcap"), "-p", "drop_udp", "-w", tmp_path / "out",
             "--cluster", "local:2", "-j")
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "cap1.pcap" in errors[0] and "offset 24" in errors[0]
    assert "Traceback" not in r.stderr
    s = json.loads(r.stdout)
    assert s["packets"] == 11000  # cap0 and cap2
    assert (tmp_path / "out" / "cap0" / "pass.pcap").exists()


@pytest.mark.parametrize("spec, code", [
    ("local:0", 2), ("locale", 2), ("tcp://127.0.0.1:1", 1),
    # refused before anything starts or connects: local:100000 started processes
    # until the machine gave out, tcp:// alone was a ValueError traceback
    ("local:100000", 2), ("tcp://", 2), ("tcp://host", 2), ("tcp://host:99999", 2)])
def test_bad_cluster_is_one_line(tmp_path, captures, spec, code):
    r = _cli("replay", "-r", captures / "cap1.pcap", "-p", "drop_udp", "--cluster", spec)
    assert r.returncode == code, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error:") and "--cluster" in r.stderr
    assert "Traceback" not in r.stderr


def test_no_capture_matches(tmp_path):
    r = _cli("replay", "-r", str(tmp_path / "*.pcap"), "-p", "drop_udp")
    assert r.returncode == 2 and "no capture matches" in r.stderr


def test_an_existing_scheduler_by_address(tmp_path, captures):
    """--cluster tcp://host:port: a scheduler and two worker processes started
    apart (here a LocalCluster of this test process, on loopback)."""
    import distributed
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as lc:
        s = _replay("-r", str(captures / "*.pcap"), "-p", "drop_udp", "-w", tmp_path,
                    "--cluster", lc.scheduler_address)
    assert s["packets"] == 15000 and s["cluster"].startswith("tcp://127.0.0.1:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap0", "cap1", "cap2"]


def test_progress_credits_the_task_that_ended():
    """Tasks end in any order: each end adds that task's bytes and packets."""
    from dataplane.cli.replay_many import _tick

    class Progress:
        def update(self, nbytes, packets, note):
            self.seen = (nbytes, packets, note)

    p = Progress()
    tick = _tick(p, [100, 20, 3])
    tick(2, 1, 3, {"stats": {"packets": 1}})
    assert p.seen == (3, 1, "1/3 tasks")
    tick(0, 2, 3, {"error": "x"})
    assert p.seen == (103, 1, "2/3 tasks")


def test_captures_of_one_name_get_folders_of_their_own(tmp_path, captures):
    """a/cap0.pcap and b/cap0.pcap (and cap0.pcap beside cap0.pcapng) wrote
    into one folder OUTDIR/cap0: the second replay's pcaps replaced the
    first's, and half the packets were gone while the counts said all. In one
    process and on the cluster, each capture's frames, read back with dpkt,
    are its own."""
    src = (captures / "cap0.pcap").read_bytes()
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    (tmp_path / "a" / "cap0.pcap").write_bytes(src)
    (tmp_path / "b" / "cap0.pcap").write_bytes((captures / "cap1.pcap").read_bytes())
    for how in ((), ("--cluster", "local:2")):
        out = tmp_path / ("cluster" if how else "one")
        summary = _replay("-r", tmp_path / "*" / "cap0.pcap", "-p", "pass_all", "-w", out, *how)
        assert summary["packets"] == 10000
        for name, count in (("a_cap0", 6000), ("b_cap0", 4000)):
            with open(out / name / "pass.pcap", "rb") as fh:
                assert len(list(dpkt.pcap.Reader(fh))) == count, (how, name)
    from dataplane.cluster import output_dirs
    assert output_dirs("O", ["d/x.pcap", "d/x.pcapng", "y.pcap"], True) == \
        {"d/x.pcap": "O/d_x_pcap", "d/x.pcapng": "O/d_x_pcapng", "y.pcap": "O/y"}


def test_merge_of_microsecond_and_nanosecond_captures(tmp_path):
    """--merge over a microsecond pcap and a nanosecond one failed after every
    replay had run ("sources differ in timestamp precision"), leaving its
    parts behind. The parts now share the finer precision: the merged pcap,
    read back with dpkt, holds both captures' frames in time order, each
    timestamp exact."""
    import struct
    frames = {}
    for name, magic, unit, first, step in (("us", 0xA1B2C3D4, 1000, 1_600_000_000_000_000, 2000),
                                           ("ns", 0xA1B23C4D, 1, 1_600_000_000_000_000_001,
                                            2_000_001)):
        records = [struct.pack("<IHHiIII", magic, 2, 4, 0, 0, 65535, 1)]
        for k in range(20):
            t = (first + step * k) * unit  # ns
            frame = bytes([k, unit == 1]) + bytes(58)
            frames[t] = frame
            frac = (t % 10**9) // unit
            records.append(struct.pack("<IIII", t // 10**9, frac, 60, 60) + frame)
        (tmp_path / f"{name}.pcap").write_bytes(b"".join(records))
    want = [frames[t] for t in sorted(frames)]
    for how in ((), ("--cluster", "local:2")):
        out = tmp_path / ("cluster" if how else "one")
        summary = _replay("-r", tmp_path / "*.pcap", "-p", "pass_all", "-w", out, "--merge", *how)
        assert summary["packets"] == 40
        with open(out / "pass.pcap", "rb") as fh:
            got = list(dpkt.pcap.Reader(fh))
        assert [bytes(b) for _, b in got] == want
        assert [int(ts * 10**9) for ts, _ in got] == sorted(frames)
        assert not (out / ".parts").exists()
