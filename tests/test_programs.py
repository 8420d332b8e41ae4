"""Every bundled program, replayed over the generated capture, against an
independent dpkt-decoding reference (tests/reference.py): each verdict's pcap
holds exactly the expected packets, in order, with the expected bytes and the
original timestamps."""

from collections import Counter, defaultdict
from pathlib import Path

import dpkt
import pytest

import reference
from dataplane import XdpAction, load_program
from dataplane.io.capture import open_capture
from dataplane.pipeline import VerdictPcaps, replay

SMALL = Path(__file__).resolve().parent.parent / "pcaps" / "small.pcap"


def read_pcap(path):
    with open(path, "rb") as f:
        return [(round(ts * 1e6), bytes(buf)) for ts, buf in dpkt.pcap.Reader(f)]


def expected_files(name):
    want = defaultdict(list)
    frames = read_pcap(SMALL)
    for (ts, _), (action, ifindex, out) in zip(frames, reference.verdicts_for_capture(name, SMALL)):
        fname = (f"redirect-{ifindex}" if action == XdpAction.XDP_REDIRECT
                 else XdpAction(action).short)
        want[fname].append((ts, out))
    return want


@pytest.mark.parametrize("name", sorted(reference.PROGRAMS))
@pytest.mark.parametrize("batch", [256, 97])
def test_bundled_program_matches_reference(tmp_path, name, batch):
    program = load_program(name)
    with open_capture(SMALL) as reader:
        sinks = VerdictPcaps(tmp_path, nanosecond=reader.nanosecond, snaplen=reader.snaplen)
        stats = replay(reader, program, sinks, batch_size=batch)
    want = expected_files(name)
    got = {p.stem: read_pcap(p) for p in tmp_path.glob("*.pcap")}
    assert sorted(got) == sorted(want)
    for fname in want:
        assert got[fname] == want[fname], fname
    counts = Counter({XdpAction(a).short: int(c) for a, c in enumerate(stats.actions)})
    assert stats.packets == sum(len(v) for v in want.values())
    for fname, packets in want.items():
        key = "redirect" if fname.startswith("redirect") else fname
        assert counts[key] >= len(packets)
    assert stats.faults == 0 and stats.invalid == 0


def test_every_verdict_kind_is_exercised():
    """The capture makes each program take its interesting branches."""
    kinds = {name: set(expected_files(name)) for name in reference.PROGRAMS}
    assert kinds["drop_udp"] == {"drop", "pass"}
    assert kinds["firewall"] == {"drop", "pass"}
    assert kinds["redirect_by_port"] == {"pass", "redirect-2", "redirect-3", "redirect-4"}
    assert kinds["mac_swap_tx"] == {"tx"}
