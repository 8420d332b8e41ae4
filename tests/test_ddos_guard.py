"""ddos_guard: token buckets per source, by capture time, against a Python model
of the same integer arithmetic on dpkt-decoded sources."""

import ipaddress
from pathlib import Path

import dpkt
import pytest

import reference
from dataplane import XdpAction, load_program
from dataplane.io.capture import open_capture
from dataplane.pipeline import replay

SMALL = Path(__file__).resolve().parent.parent / "pcaps" / "small.pcap"
NS = 1_000_000_000


def model(rate, burst):
    cap = max(burst, 1) * NS
    buckets, verdicts = {}, []
    with open(SMALL, "rb") as f:
        for ts, frame in dpkt.pcap.Reader(f):
            now = round(ts * 1e6) * 1000
            p = reference.parse(bytes(frame))
            if p.family is None:
                verdicts.append(XdpAction.XDP_PASS)
                continue
            src = ipaddress.ip_address(p.ip.src)
            if src not in buckets:
                buckets[src] = [cap - NS, now]
                verdicts.append(XdpAction.XDP_PASS)
                continue
            tokens, last = buckets[src]
            elapsed = min(max(now - last, 0), cap // rate + 1)
            tokens = min(tokens + elapsed * rate, cap)
            ok = tokens >= NS
            buckets[src] = [tokens - NS if ok else tokens, now]
            verdicts.append(XdpAction.XDP_PASS if ok else XdpAction.XDP_DROP)
    return verdicts


@pytest.mark.parametrize("rate, burst", [(5, 1), (50, 3), (100, 10)])
def test_token_buckets_follow_capture_time(rate, burst):
    prog = load_program("ddos_guard")
    prog.maps["config"].update(0, (rate, burst))
    prog.maps["buckets"].clear()
    prog.use_capture_time(True)
    verdicts = []

    class Collect:  # a sink that keeps each packet's verdict in order
        def write(self, batch, order, counts):
            verdicts.extend(XdpAction(int(a)) for a in batch.action[:batch.count])

        def close(self):
            return {}

    with open_capture(SMALL) as r:
        replay(r, prog, Collect(), batch_size=97)
    want = model(rate, burst)
    assert verdicts == want
    assert want.count(XdpAction.XDP_DROP) > 0 or rate == 100


def test_rate_zero_passes_everything():
    prog = load_program("ddos_guard")
    prog.maps["config"].update(0, (0, 1))
    assert prog.test_run(bytes(60))[0] == XdpAction.XDP_PASS
