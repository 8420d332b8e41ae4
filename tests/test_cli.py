"""The command line: help everywhere, exit codes 0/1/2, JSON output, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dpkt
import pytest

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "pcaps" / "small.pcap"


def dp(*args, check=None):
    r = subprocess.run([sys.executable, "-m", "dataplane.cli.main", *map(str, args)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    if check is not None:
        assert r.returncode == check, (r.returncode, r.stdout, r.stderr)
    return r


def no_traceback(r):
    return "Traceback" not in r.stderr and "Traceback" not in r.stdout


@pytest.mark.parametrize("args", [["--help"], ["help"], ["help", "replay"], ["replay", "--help"],
                                  ["bench", "--help"], ["--version"]])
def test_help_everywhere(args):
    r = dp(*args, check=0)
    assert r.stdout.strip()


@pytest.mark.parametrize("argv", [["-v", "verify", "programs/bpf/firewall.o"],
                                  ["verify", "programs/bpf/firewall.o", "-v"]])
def test_a_command_imports_only_its_own_module(argv):
    # what replay and verify start with: neither the other commands, nor the
    # eBPF toolchain for a Python program, nor the live path
    code = ("import sys; from dataplane.cli.main import main; rc = main(sys.argv[1:]); "
            "print(sorted(m for m in sys.modules if m.startswith('dataplane.'))); "
            "sys.exit(rc)")
    out = {}
    for name, args in (("replay", ["replay", "-r", SMALL, "-p", "drop_udp", "-q"]),
                       ("verify", argv)):
        r = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                           text=True, cwd=ROOT, timeout=120)
        assert r.returncode == 0, r.stderr
        out[name] = set(eval(r.stdout.splitlines()[-1]))
    assert "dataplane.cli.replay" in out["replay"]
    for heavy in ("dataplane.cli.prog", "dataplane.cli.conformance", "dataplane.cli.run",
                  "dataplane.cli.lb_cmd", "dataplane.ebpf.jit", "dataplane.live"):
        assert heavy not in out["replay"], heavy
    assert "dataplane.cli.prog" in out["verify"]
    assert not {"dataplane.cli.replay", "dataplane.cli.run", "dataplane.live"} & out["verify"]


def test_no_command_is_a_usage_error():
    assert dp().returncode == 2


@pytest.mark.parametrize("args, code, text", [
    (["replay", "-p", "drop_udp", "--bogus"], 2, "unrecognized arguments"),
    (["replay", "-p", "drop_udp"], 2, "-r FILE is required"),
    (["replay", "-r", SMALL], 2, "the following arguments are required: -p"),
    (["replay", "-r", SMALL, "-p", "drop_udp", "-c", "0"], 2, "must be at least 1"),
    (["bench", "-p", "drop_udp", "--batch", "x"], 2, "is not an integer"),
    # nan passed every "<= 0" check: lb stats then raised ValueError in time.sleep
    (["lb", "stats", "--config", "programs/l4lb/example.toml", "--interval", "nan"], 2,
     "'nan' is not a finite number"),
    (["run", "-i", "dp-none0", "-p", "drop_udp", "--interval", "inf"], 2,
     "'inf' is not a finite number"),
    (["replay", "-r", SMALL, "-p", "drop_udp", "-i", "dp-none0", "--pps", "nan"], 2,
     "'nan' is not a finite number"),
    (["replay", "-r", "/nonexistent.pcap", "-p", "drop_udp"], 1, "/nonexistent.pcap"),
    # petabytes, past any address space: was an OSError traceback
    (["replay", "-r", SMALL, "-p", "drop_udp", "--batch", str(10**12)], 1,
     "bytes for a batch of 1,000,000,000,000 packets (--batch)"),
    (["replay", "-r", SMALL, "-p", "no_such_program"], 1, "program 'no_such_program'"),
    # an empty path wrote nothing and pinned nothing, with exit status 0
    (["replay", "-r", SMALL, "-p", "drop_udp", "-w", ""], 2, "-w/--write: an empty path"),
    (["replay", "-r", SMALL, "-p", "drop_udp", "--pin", ""], 2, "--pin: an empty path"),
])
def test_errors_are_one_line_with_exit_code(args, code, text):
    r = dp(*args)
    assert r.returncode == code, r.stderr
    assert text in r.stderr
    assert no_traceback(r)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1


def test_json_error_object():
    r = dp("replay", "-r", "/nonexistent.pcap", "-p", "drop_udp", "-j")
    assert r.returncode == 1
    assert "/nonexistent.pcap" in json.loads(r.stdout)["error"]


def test_replay_json_summary_and_files(tmp_path):
    r = dp("replay", "-r", SMALL, "-p", "drop_udp", "-w", tmp_path, "-j", check=0)
    d = json.loads(r.stdout)
    assert set(d["actions"]) == {"aborted", "drop", "pass", "tx", "redirect"}
    assert sum(d["actions"].values()) == d["packets"] == 4000
    assert d["ns_per_pkt"] > 0 and d["pps"] > 0 and d["bytes"] > 0
    assert sorted(os.listdir(tmp_path)) == ["drop.pcap", "pass.pcap"]
    for name in ("drop", "pass"):
        with open(tmp_path / f"{name}.pcap", "rb") as f:
            assert len(list(dpkt.pcap.Reader(f))) == d["actions"][name]


def test_replay_human_summary_and_quiet(tmp_path):
    r = dp("replay", "-r", SMALL, "-p", "redirect_by_port", "-w", tmp_path, check=0)
    for label in ("XDP_DROP", "XDP_REDIRECT", "ns/pkt", "Mpps", "4,000 packets",
                  "-> ifindex 3"):
        assert label in r.stdout
    assert (tmp_path / "redirect-3.pcap").exists()
    r = dp("replay", "-r", SMALL, "-p", "drop_udp", "-q", check=0)
    assert r.stdout == "" and r.stderr == ""


def test_count_stops_after_n():
    d = json.loads(dp("replay", "-r", SMALL, "-p", "pass_all", "-c", "1000", "-j",
                      check=0).stdout)
    assert d["packets"] == 1000 and d["actions"]["pass"] == 1000


def test_pass_all_output_is_byte_identical(tmp_path):
    dp("replay", "-r", SMALL, "-p", "pass_all", "-w", tmp_path, "-q", check=0)
    assert (tmp_path / "pass.pcap").read_bytes() == SMALL.read_bytes()


def test_truncated_capture_keeps_earlier_packets(tmp_path):
    cut = tmp_path / "cut.pcap"
    data = SMALL.read_bytes()
    cut.write_bytes(data[:len(data) - 100])
    r = dp("replay", "-r", cut, "-p", "pass_all", "-w", tmp_path / "out", "-j")
    assert r.returncode == 0 and no_traceback(r)
    assert "warning:" in r.stderr and "truncated" in r.stderr
    d = json.loads(r.stdout)
    assert d["packets"] == 3999
    with open(tmp_path / "out" / "pass.pcap", "rb") as f:
        assert len(list(dpkt.pcap.Reader(f))) == 3999


def test_garbage_mid_file_processes_packets_before_it(tmp_path):
    bad = tmp_path / "bad.pcap"
    data = bytearray(SMALL.read_bytes())
    # corrupt the caplen of the 11th record (walk the first ten with dpkt's header size)
    off = 24
    for _ in range(10):
        caplen = int.from_bytes(data[off + 8:off + 12], "little")
        off += 16 + caplen
    data[off + 8:off + 12] = (0x7FFFFFFF).to_bytes(4, "little")
    bad.write_bytes(bytes(data))
    r = dp("replay", "-r", bad, "-p", "pass_all", "-w", tmp_path / "out")
    assert r.returncode == 1 and no_traceback(r)
    assert f"offset {off}" in r.stderr and "packet 10" in r.stderr
    assert "10 packets" in r.stdout
    with open(tmp_path / "out" / "pass.pcap", "rb") as f:
        assert len(list(dpkt.pcap.Reader(f))) == 10


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, os.urandom(4096)])
def test_unreadable_captures_exit_1(tmp_path, content):
    bad = tmp_path / "x.pcap"
    bad.write_bytes(content)
    r = dp("replay", "-r", bad, "-p", "pass_all", "-w", tmp_path / "o")
    assert r.returncode == 1 and no_traceback(r)
    assert r.stderr.startswith(f"error: {bad}")


def test_bench_json():
    d = json.loads(dp("bench", "-p", "drop_udp", "--repeat", "3", "-j", check=0).stdout)
    assert {"ns_per_pkt", "harness_ns_per_pkt", "unchecked_ns_per_pkt", "pps", "packets",
            "repeats", "batch"} <= set(d)
    assert d["packets"] == 4000 and d["repeats"] == 3 and d["batch"] == 1024
    assert d["ns_per_pkt"] > 0 and d["harness_ns_per_pkt"] > 0


def test_bench_human_line():
    r = dp("bench", "-p", "drop_all", "--repeat", "3", "--batch", "512", check=0)
    assert "drop_all:" in r.stdout and "median of 3 runs" in r.stdout
    assert "4,000 packets, batch 512" in r.stdout and "harness alone" in r.stdout


def test_pcapng_interfaces_become_ingress_ifindex(tmp_path):
    """A pcapng with two interfaces: each packet's interface index is its ingress_ifindex."""
    from test_pcapng import epb, idb, shb
    prog = tmp_path / "by_ifindex.py"
    prog.write_text("from dataplane import *\n\n@xdp\ndef by_ifindex(ctx):\n"
                    "    return bpf_redirect(ctx.ingress_ifindex + 10, 0)\n")
    frames = read_pcap_frames(SMALL)[:30]
    body = shb("<") + idb("<") + idb("<", tsresol=9)
    body += b"".join(epb("<", i % 2, 1000 * i, f) for i, f in enumerate(frames))
    cap = tmp_path / "two.pcapng"
    cap.write_bytes(body)
    d = json.loads(dp("replay", "-r", cap, "-p", prog, "-w", tmp_path / "out", "-j",
                      check=0).stdout)
    assert d["redirect"] == {"10": 15, "11": 15}
    with open(tmp_path / "out" / "redirect-11.pcap", "rb") as f:
        assert [bytes(b) for _, b in dpkt.pcap.Reader(f)] == frames[1::2]


def read_pcap_frames(path):
    with open(path, "rb") as f:
        return [bytes(b) for _, b in dpkt.pcap.Reader(f)]


def test_progress_line_only_on_a_terminal():
    import io
    from dataplane.stats import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        p = Progress(1000, stream=stream, every=0)
        p.update(500, 1234)
        p.done()
    assert "50.0%" in tty.getvalue() and "1,234 packets" in tty.getvalue()
    assert pipe.getvalue() == ""


@pytest.mark.parametrize("batch", [str(2**63), str(10**16)])
def test_a_batch_past_the_address_space_is_one_line_error(batch):
    """Past ~3.6e15 packets mmap's ssize_t overflowed: OverflowError traceback."""
    r = dp("replay", "-r", SMALL, "-p", "pass_all", "--batch", batch, check=1)
    assert r.stderr.startswith("error: cannot allocate ") and "(--batch)" in r.stderr
    assert len(r.stderr.splitlines()) == 1 and no_traceback(r)


@pytest.mark.parametrize("argv, shown", [
    (["-vv", "replay", "-r", "/nonexistent.pcap", "-p", "pass_all"], True),
    (["replay", "-vv", "-r", "/nonexistent.pcap", "-p", "pass_all"], True),
    (["-v", "replay", "-r", "/nonexistent.pcap", "-p", "pass_all", "-v"], True),
    (["-v", "replay", "-r", "/nonexistent.pcap", "-p", "pass_all"], False),
    (["-vv", "lb", "list", "--config", "/nonexistent.toml"], True),
    (["lb", "-vv", "list", "--config", "/nonexistent.toml"], True),
    (["-vv", "map", "list", "--pin", "/nonexistent"], True),
    (["prog", "-vv", "verify", "/nonexistent.o"], True),
    (["prog", "verify", "/nonexistent.o"], False),
])
def test_verbose_anywhere_shows_tracebacks(argv, shown):
    """dataplane -vv CMD: the command's own -v default (0) was set over it."""
    r = dp(*argv, check=1)
    assert ("Traceback" in r.stderr) == shown, r.stderr
