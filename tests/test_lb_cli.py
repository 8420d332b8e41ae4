"""``dataplane lb`` and ``--config``: a configuration file edited in place, a pinned
running instance changed by a second process, and the per-packet trace checked
against the replayed packets decoded by dpkt."""

import importlib.util
import ipaddress
import json
import shutil
import tomllib

import dpkt
import pytest

from test_cli import ROOT, dp, no_traceback

EXAMPLE = ROOT / "programs" / "l4lb" / "example.toml"


def _gen():
    spec = importlib.util.spec_from_file_location("gen_l4lb", ROOT / "pcaps" / "gen_l4lb.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    d = tmp_path_factory.mktemp("lb")
    _gen().generate(d / "lb.pcap", d / "lb.toml", packets=3000, flows=300, seed=5)
    return d / "lb.pcap", d / "lb.toml"


def test_config_file_is_edited_in_place(tmp_path):
    cfg = tmp_path / "lb.toml"
    shutil.copy(EXAMPLE, cfg)
    dp("lb", "vip", "add", "10.200.1.2:53/udp", "--flags", "hash_no_src_port",
       "--config", cfg, check=0)
    dp("lb", "real", "add", "10.200.1.2:53/udp", "10.0.0.9", "--weight", "2", "--config", cfg,
       check=0)
    dp("lb", "real", "weight", "10.200.1.1:80/tcp", "fc00::2", "5", "--config", cfg, check=0)
    dp("lb", "real", "remove", "10.200.1.1:80/tcp", "10.0.0.2", "--config", cfg, check=0)
    doc = tomllib.loads(cfg.read_text())
    vips = {(v["address"], v["port"], v["proto"]): v for v in doc["vip"]}
    assert vips[("10.200.1.2", 53, "udp")]["flags"] == ["hash_no_src_port"]
    assert vips[("10.200.1.2", 53, "udp")]["reals"] == [{"address": "10.0.0.9", "weight": 2}]
    assert vips[("10.200.1.1", 80, "tcp")]["reals"] == [{"address": "fc00::2", "weight": 5}]
    listed = json.loads(dp("lb", "list", "--config", cfg, "-j", check=0).stdout)
    assert [v["vip"] for v in listed] == ["10.200.1.1:80/tcp", "[fc00:200::1]:443/udp",
                                          "10.200.1.2:53/udp"]
    dp("lb", "vip", "remove", "10.200.1.2:53/udp", "--config", cfg, check=0)
    assert len(tomllib.loads(cfg.read_text())["vip"]) == 2


@pytest.mark.parametrize("args, message", [
    (["vip", "add", "10.200.1.1:80/tcp"], "exists already"),
    (["vip", "add", "10.200.1.1:80"], "expected ADDRESS:PORT/PROTO"),
    (["vip", "add", "10.200.1.9:80/sctp"], "proto 'sctp' is not tcp or udp"),
    (["vip", "add", "10.200.1.9:80/tcp", "--flags", "turbo"], "valid flags are"),
    (["real", "add", "10.9.9.9:80/tcp", "10.0.0.1"], "no VIP 10.9.9.9:80/tcp"),
    (["real", "add", "10.200.1.1:80/tcp", "10.0.0.2"], "has real 10.0.0.2 already"),
    (["real", "add", "10.200.1.1:80/tcp", "10.0.0.300"], "is not an IPv4 or IPv6 address"),
    (["real", "add", "10.200.1.1:80/tcp", "10.0.0.7", "--weight", "0"], "weight 0"),
    (["real", "add", "[fc00:200::1]:443/udp", "10.0.0.7"], "cannot have IPv4 real"),
    (["real", "remove", "10.200.1.1:80/tcp", "10.0.0.99"], "has no real 10.0.0.99"),
])
def test_bad_changes_are_one_line_errors_and_change_nothing(tmp_path, args, message):
    cfg = tmp_path / "lb.toml"
    shutil.copy(EXAMPLE, cfg)
    r = dp("lb", *args, "--config", cfg, check=1)
    assert message in r.stderr and r.stderr.startswith("error: ") and no_traceback(r)
    assert cfg.read_text() == EXAMPLE.read_text()


def test_bad_config_files_are_named(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('gateway_mac = "02:00:00:00:00:fe"\ncolour = 1\n')
    r = dp("lb", "list", "--config", cfg, check=1)
    assert f"{cfg}: unknown key(s) colour" in r.stderr and no_traceback(r)
    cfg.write_text("[[vip]\n")
    assert "not valid TOML" in dp("lb", "list", "--config", cfg, check=1).stderr
    for missing in (tmp_path / "nosuch.toml", tmp_path / "nosuch.json"):  # as captures say it
        r = dp("lb", "list", "--config", missing, check=1)
        assert r.stderr == f"error: {missing}: cannot read: no such file or directory\n"
    r = dp("replay", "-r", ROOT / "pcaps" / "small.pcap", "-p", "drop_udp", "--config", EXAMPLE,
           check=1)
    assert "not the l4lb program" in r.stderr


@pytest.mark.parametrize("args", [["lb", "list"], ["lb", "stats", "--config", EXAMPLE],
                                  ["lb", "trace", "--config", EXAMPLE]])
def test_lb_usage_errors(args):
    r = dp(*args, check=2)
    assert r.stderr.startswith("error: ") and no_traceback(r)


def _outer_dst(frame):
    ip = dpkt.ethernet.Ethernet(frame).data
    return str(ipaddress.ip_address(ip.dst))


def test_pinned_instance_changed_by_a_second_process(tmp_path, capture):
    pcap, cfg = capture
    pin, out = tmp_path / "pin", tmp_path / "out"
    r = dp("replay", "-r", pcap, "-p", "l4lb", "--config", cfg, "--pin", pin, "-w", out, "-j",
           check=0)
    summary = json.loads(r.stdout)
    assert summary["actions"]["tx"] == summary["packets"] == 3000
    stats = json.loads(dp("lb", "stats", "--pin", pin, "-j", check=0).stdout)
    assert sum(v["packets"] for v in stats["vips"]) == 3000
    assert sum(v["packets"] for v in stats["reals"]) == 3000
    assert stats["counters"]["conn_miss"] == 300 and stats["counters"]["conn_hit"] == 2700
    # every real's packet count equals the tx packets whose outer destination it is
    by_dst = {}
    with open(out / "tx.pcap", "rb") as f:
        for _, frame in dpkt.pcap.Reader(f):
            by_dst[_outer_dst(frame)] = by_dst.get(_outer_dst(frame), 0) + 1
    assert by_dst == {r["real"]: r["packets"] for r in stats["reals"] if r["packets"]}

    vip = json.loads(dp("lb", "list", "--pin", pin, "-j", check=0).stdout)[0]
    dp("lb", "real", "add", vip["vip"], "10.0.9.9", "--weight", "3", "--pin", pin, check=0)
    after = json.loads(dp("lb", "list", "--pin", pin, "-j", check=0).stdout)[0]
    new = next(r for r in after["reals"] if r["address"] == "10.0.9.9")
    total = sum(r["weight"] for r in after["reals"])
    assert abs(new["slots"] / 65537 - 3 / total) < 0.01  # the live ring, weighted
    assert any(r["address"] == "10.0.9.9" for v in json.loads((pin / "lb.json").read_text())["vip"]
               for r in v["reals"])


def _map_bytes(pin):
    return {f.name: f.read_bytes() for f in pin.glob("*.bin")}


def test_attaching_writes_nothing_and_needs_lb_json(tmp_path, capture):
    """lb list / stats read a running instance without writing its maps. With
    its lb.json gone, attaching (which now replaces what the maps hold by what
    the configuration says) would have wiped every VIP: it is an error instead."""
    pcap, cfg = capture
    pin = tmp_path / "pin"
    dp("replay", "-r", pcap, "-p", "l4lb", "--config", cfg, "--pin", pin, "-q", check=0)
    before = _map_bytes(pin)
    state = (pin / "lb.json").read_bytes()
    vips = len(json.loads(dp("lb", "list", "--pin", pin, "-j", check=0).stdout))
    dp("lb", "stats", "--pin", pin, check=0)
    assert _map_bytes(pin) == before
    (pin / "lb.json").unlink()
    r = dp("lb", "list", "--pin", pin, check=1)
    assert r.stderr.splitlines() == [f"error: {pin / 'lb.json'}: missing, while the instance "
                                     f"has {vips} VIP(s): its configuration cannot be known, "
                                     "nothing was changed"]
    assert _map_bytes(pin) == before
    # restarted without --config: fresh maps, an old lb.json (list raised TypeError)
    dp("replay", "-r", pcap, "-p", "l4lb", "--pin", pin, "-q", check=0)
    (pin / "lb.json").write_bytes(state)
    r = dp("lb", "list", "--pin", pin, check=1)
    assert len(r.stderr.splitlines()) == 1
    assert f"does not describe the instance's maps ({vips} VIP(s) against 0; in lb.json only" \
        in r.stderr


def test_trace_says_why_each_packet_went_where(tmp_path, capture):
    pcap, cfg = capture
    r = dp("lb", "trace", "-r", pcap, "--config", cfg, "-c", "400", "-j", check=0)
    records = json.loads(r.stdout)
    assert len(records) == 400 and all(t["verdict"] == "XDP_TX" for t in records)
    out = tmp_path / "out"
    dp("replay", "-r", pcap, "-p", "l4lb", "--config", cfg, "-w", out, "-c", "400", "-q",
       check=0)
    with open(out / "tx.pcap", "rb") as f:
        dsts = [_outer_dst(frame) for _, frame in dpkt.pcap.Reader(f)]
    assert [t["real"] for t in records] == dsts
    first = {}
    for t in records:  # a flow's first packet misses and hashes; the rest hit
        flow = t["summary"].split(" tcp")[0].split(" udp")[0]
        assert t["conn"] == ("hit" if flow in first else "miss")
        assert ("slot" in t) == (flow not in first)
        first.setdefault(flow, t["real"])
        assert t["real"] == first[flow]
    text = dp("lb", "trace", "-r", pcap, "--config", cfg, "-c", "3", check=0).stdout.splitlines()
    assert len(text) == 3 and text[0].startswith("packet 0: ") and "XDP_TX" in text[0]


def test_stats_rates_over_an_interval(tmp_path, capture):
    """lb stats --interval: the rate is what another process added meanwhile."""
    import subprocess
    import sys
    import time

    from dataplane.pin import open_pinned

    pcap, cfg = capture
    pin = tmp_path / "pin"
    dp("replay", "-r", pcap, "-p", "l4lb", "--config", cfg, "--pin", pin, "-q", check=0)
    stats = subprocess.Popen([sys.executable, "-m", "dataplane.cli.main", "lb", "stats",
                              "--pin", pin, "--interval", "4", "-j"], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True)
    time.sleep(2.0)  # the first sample is taken by then (start-up ~0.5 s); the second at 4 s
    vip_stats = open_pinned(pin, "vip_stats")
    vip_stats.values[0, 0]["packets"] += 5000
    vip_stats.values[0, 0]["bytes"] += 5000 * 100
    out, _ = stats.communicate(timeout=60)
    first = json.loads(out)["vips"][0]
    assert first["pps"] == 1250 and first["bytes_per_s"] == 125000


def _one_error_line(r, path):
    """The CLI's error form: one line, ``error: PATH: ...``, no traceback."""
    return (r.stderr.splitlines()[:1] == [r.stderr.rstrip("\n")] and no_traceback(r)
            and r.stderr.startswith(f"error: {path}: "))


def test_a_config_not_in_utf8_is_one_line_error(tmp_path):
    """TOML is UTF-8: other bytes raised UnicodeDecodeError from tomllib."""
    cfg = tmp_path / "bad.toml"
    cfg.write_bytes(b'gateway_mac = "\xff\xfe"\n')
    small = ROOT / "pcaps" / "small.pcap"
    for args in (["lb", "list", "--config", cfg],
                 ["lb", "trace", "-r", small, "--config", cfg],
                 ["replay", "-r", small, "-p", "l4lb", "--config", cfg]):
        r = dp(*args, check=1)
        assert _one_error_line(r, cfg) and "not valid TOML: not UTF-8" in r.stderr, r.stderr


@pytest.mark.parametrize("line", ["max_pkt_size = true", "max_new_conns = true",
                                  "udp_timeout = true",
                                  "[[vip]]\naddress = '10.0.0.1'\nport = true",
                                  "[[vip]]\naddress = '10.0.0.1'\nport = 80\n"
                                  "reals = [{ address = '10.0.0.2', weight = true }]"])
def test_a_bool_is_not_an_integer_in_a_config(tmp_path, line):
    """TOML's true is a Python int: port = true was listed as 10.0.0.1:True/tcp
    and a rewrite of the file then wrote port = True (not TOML)."""
    cfg = tmp_path / "lb.toml"
    cfg.write_text(line + "\n")
    r = dp("lb", "list", "--config", cfg, check=1)
    assert _one_error_line(r, cfg) and "True" in r.stderr, r.stderr
    r = dp("lb", "vip", "add", "10.0.0.9:1/tcp", "--config", cfg, check=1)
    assert _one_error_line(r, cfg) and cfg.read_text() == line + "\n"


def test_a_config_rewrite_writes_a_symlinks_target_and_only_regular_files(tmp_path):
    import os

    target = tmp_path / "target.toml"
    shutil.copy(EXAMPLE, target)
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    target.chmod(0o640)
    dp("lb", "vip", "add", "10.9.9.9:80/tcp", "--config", link, check=0)
    assert link.is_symlink() and link.resolve() == target  # the link kept, its target changed
    assert "10.9.9.9" in target.read_text()
    assert target.stat().st_mode & 0o777 == 0o640  # its mode, not the umask's
    fifo = tmp_path / "fifo.toml"  # as /dev/null: a rename would replace the node itself
    os.mkfifo(fifo)
    r = dp("lb", "vip", "add", "10.9.9.9:80/tcp", "--config", fifo, check=1)
    assert _one_error_line(r, fifo) and "not a regular file" in r.stderr, r.stderr
    assert fifo.is_fifo() and sorted(p.name for p in tmp_path.iterdir()) == [
        "fifo.toml", "link.toml", "target.toml"]


def test_a_config_that_cannot_be_rewritten_is_one_line_error(tmp_path, monkeypatch, capsys):
    """A directory where the temporary file cannot be created (root writes
    anywhere, so the refusal is simulated): was a PermissionError traceback."""
    import os

    from dataplane.cli import lb_cmd
    from dataplane.cli.main import main

    cfg = tmp_path / "lb.toml"
    shutil.copy(EXAMPLE, cfg)

    def refuse(path, *args, **kw):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(lb_cmd, "open", refuse, raising=False)  # lb_cmd's own open only
    assert main(["lb", "vip", "add", "10.9.9.9:80/tcp", "--config", str(cfg)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: {cfg}: cannot rewrite: permission denied "
                                f"(writing {cfg}.{os.getpid()})"]
    assert cfg.read_text() == EXAMPLE.read_text()


def test_lb_options_before_or_after_the_operation(tmp_path):
    """README.md's form, lb --config F vip add ..., was "invalid choice"."""
    cfg = tmp_path / "lb.toml"
    shutil.copy(EXAMPLE, cfg)
    dp("lb", "--config", cfg, "vip", "add", "10.9.9.9:80/tcp", check=0)
    dp("lb", "real", "add", "10.9.9.9:80/tcp", "10.0.0.9", "--config", cfg, check=0)
    before = dp("lb", "--config", cfg, "-j", "list", check=0).stdout
    assert before == dp("lb", "list", "--config", cfg, "-j", check=0).stdout
    assert "10.0.0.9" in json.dumps(json.loads(before))
    pin = tmp_path / "pin"
    dp("replay", "-r", ROOT / "pcaps" / "small.pcap", "-p", "l4lb", "--config", cfg,
       "--pin", pin, "-q", check=0)
    assert (json.loads(dp("lb", "--pin", pin, "stats", "-j", check=0).stdout)
            == json.loads(dp("lb", "stats", "--pin", pin, "-j", check=0).stdout))
    # one before and one after the operation: both count
    r = dp("lb", "--pin", pin, "list", "--config", cfg, check=2)
    assert "give one of --pin DIR" in r.stderr and no_traceback(r)
