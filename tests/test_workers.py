"""--workers N: packets steered by a symmetric flow hash to N threads running
the program at once. Oracles: dpkt decoding each packet's flow (steering), the
single-worker run of the same program (verdicts, output bytes, map contents),
the packet count (atomic counters under contention) and the kernel's
per-CPU model (one slot per worker, bpf_get_smp_processor_id)."""

import collections
import json
import subprocess
import sys
from pathlib import Path

import dpkt
import numpy as np
import pytest

from dataplane import load_program
from dataplane.io.capture import open_capture
from dataplane.kernels.steer import flow_hash, steer
from dataplane.pipeline import replay

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "pcaps" / "small.pcap"
LB_CONFIG = ROOT / "programs" / "l4lb" / "example.toml"


def _flow(frame):
    """The flow as RSS sees it, by dpkt: TCP by its two (address, port) ends,
    other IP by its two addresses and protocol, the rest by its MACs."""
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
        return ("l2", frozenset((frame[:6], frame[6:12])))
    fragment = (isinstance(ip, dpkt.ip.IP) and (ip.mf or ip.offset)) or \
        (isinstance(ip, dpkt.ip6.IP6) and 44 in ip.extension_hdrs)
    if ip.p == 6 and not fragment and isinstance(ip.data, dpkt.tcp.TCP):
        return ("tcp", frozenset(((ip.src, ip.data.sport), (ip.dst, ip.data.dport))))
    return ("ip", frozenset((ip.src, ip.dst)), ip.p)


def _steered(batch, n):
    worker_of = np.zeros(batch.count, np.int64)
    perm = np.zeros(batch.count, np.int64)
    bounds = np.zeros(n + 1, np.int64)
    out = np.zeros_like(batch.meta)
    steer(batch.buf, batch.meta, batch.count, n, worker_of, perm, bounds, out)
    return worker_of, perm, bounds, out


def _small_batch():
    from dataplane.io.batch import PacketBatch
    batch = PacketBatch(8192)
    with open_capture(SMALL) as reader:
        assert reader.read_batch(batch) == 4000
    return batch


def test_steering_keeps_each_flow_and_its_reverse_on_one_worker():
    batch = _small_batch()
    worker_of, perm, bounds, out = _steered(batch, 3)
    by_flow = collections.defaultdict(set)
    for i in range(batch.count):
        by_flow[_flow(batch.packet(i))].add(int(worker_of[i]))
    assert all(len(w) == 1 for w in by_flow.values())
    # both directions of a connection are in the capture: they met one worker
    assert sum(1 for f in by_flow if f[0] == "tcp") > 100
    # a fair share each (the capture has thousands of flows)
    counts = np.diff(bounds)
    assert counts.sum() == 4000 and counts.min() > 4000 / 3 * 0.8


def test_steering_is_a_stable_partition():
    batch = _small_batch()
    worker_of, perm, bounds, out = _steered(batch, 4)
    assert sorted(perm.tolist()) == list(range(4000))
    for k in range(4):
        part = perm[bounds[k]:bounds[k + 1]]
        assert (worker_of[part] == k).all()
        assert (np.diff(part) > 0).all()  # capture order within a worker
    assert (out[:, :4000] == batch.meta[:, perm]).all()


def test_flow_hash_is_symmetric_for_ipv4_ipv6_and_vlan():
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Dot1Q, Ether
    pairs = [
        (Ether() / IP(src="10.0.0.1", dst="10.9.9.9") / TCP(sport=1234, dport=80),
         Ether() / IP(src="10.9.9.9", dst="10.0.0.1") / TCP(sport=80, dport=1234)),
        (Ether() / Dot1Q(vlan=5) / IPv6(src="2001:db8::1", dst="fc00::2") / UDP(sport=53, dport=9),
         Ether() / Dot1Q(vlan=5) / IPv6(src="fc00::2", dst="2001:db8::1") / UDP(sport=9, dport=53)),
        (Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02", type=0x0806) / (b"\0" * 28),
         Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:01", type=0x0806) / (b"\0" * 28)),
    ]
    for a, b in pairs:
        ha, hb = (int(flow_hash(np.frombuffer(bytes(p), np.uint8), 0, len(p))) for p in (a, b))
        assert ha == hb != 0
    # a fragment's hash leaves the ports out: the datagram's fragments stay together
    first = Ether() / IP(src="10.0.0.1", dst="10.0.0.2", flags="MF") / UDP(sport=1, dport=2)
    rest = Ether() / IP(src="10.0.0.1", dst="10.0.0.2", frag=3, proto=17) / (b"x" * 16)
    h = [int(flow_hash(np.frombuffer(bytes(p), np.uint8), 0, len(p))) for p in (first, rest)]
    assert h[0] == h[1]
    assert int(flow_hash(np.zeros(10, np.uint8), 0, 10)) == 0  # runt: worker 0


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dataplane.cli.main", *map(str, args)],
                          capture_output=True, text=True)


#: The maps of l4lb that a run with more workers must leave alike (its
#: connection tables are per worker); only they are dumped: all of them printed
#: its rings' 8 million entries too (250 MB of JSON, ~50 s a run).
LB_COMPARED = ("vip_stats", "real_stats", "lb_stats")


def _cli_run(ref, n, outdir):
    """One replay in a process of its own (fresh maps): its summary with the
    maps (-j --dump-maps; l4lb's LB_COMPARED, its maps pinned for `lb stats`)
    and its output captures."""
    maps = ("--config", LB_CONFIG, "--pin", Path(outdir) / "pin", "--dump-maps",
            ",".join(LB_COMPARED)) if ref == "l4lb" else ("--dump-maps",)
    r = _cli("replay", "-r", SMALL, "-p", ref, "-w", outdir, "--workers", n, "--batch", 256,
             "-j", *maps)
    assert r.returncode == 0, r.stderr
    files = {p.name: p.read_bytes() for p in sorted(Path(outdir).glob("*.pcap"))}
    return json.loads(r.stdout), files


def _merged(entries):
    """A dumped map's entries as a multiset, per-CPU values summed over workers
    (entry numbers and order are the table's business, not the result)."""
    out = collections.Counter()
    for e in entries:
        v = e["value"] if isinstance(e, dict) else e
        if isinstance(e, dict) and isinstance(v, list):  # per-CPU: one value per worker
            v = {f: sum(x[f] for x in v) for f in v[0]} if isinstance(v[0], dict) else sum(v)
        out[json.dumps([e.get("key") if isinstance(e, dict) else None, v], sort_keys=True)] += 1
    return out


#: One of each kind (stateless verdicts, redirects, hash / LRU / LPM / per-CPU
#: maps, maps of maps, encapsulation, tail calls, eBPF atomics and global data);
#: each is compiled twice (per-CPU maps sized for 1 and 2 workers).
ORDER_FREE = ["pass_all", "drop_udp", "redirect_by_port", "flow_counter", "acl_lpm",
              "encap_ipip", "tail_dispatch:dispatch", "l4lb", "bpf/flow_counter.o",
              "bpf/global_data.o", "bpf/adjust_head.o", "bpf/tail_call.o:tail_call"]


@pytest.mark.parametrize("name", ORDER_FREE)
def test_two_workers_give_the_single_worker_result(tmp_path, name):
    """Programs whose result does not depend on the order of packets across
    flows: same verdict counts, byte-identical captures (the batch is put back
    in capture order), same map contents (l4lb: its per-CPU counters; its
    connection tables are per worker, as Katran's per-CPU LRUs)."""
    ref = str(ROOT / "programs" / name) if name.startswith("bpf/") else name
    s1, f1 = _cli_run(ref, 1, tmp_path / "one")
    s2, f2 = _cli_run(ref, 2, tmp_path / "two")
    assert s2["packets"] == s1["packets"] == 4000
    assert s2["actions"] == s1["actions"]
    assert f2.keys() == f1.keys() and f2 == f1
    assert s2["maps"].keys() == s1["maps"].keys()
    for m in s1["maps"]:
        assert _merged(s2["maps"][m]) == _merged(s1["maps"][m]), m
    if name == "l4lb":  # one slot per worker, which another process reads as pinned
        assert all(len(e["value"]) == 2 for e in s2["maps"]["lb_stats"])
        r = _cli("lb", "stats", "--pin", tmp_path / "two" / "pin", "-j")
        assert r.returncode == 0, r.stderr  # was: the map needs 2048 bytes (one worker's)
        assert sum(json.loads(r.stdout)["counters"].values()) == \
            sum(sum(e["value"]) for e in s2["maps"]["lb_stats"]) > 0
    per = s2["workers"]
    assert [w["worker"] for w in per] == [0, 1]
    assert sum(w["packets"] for w in per) == 4000 and min(w["packets"] for w in per) > 1000
    for a, total in s2["actions"].items():
        assert sum(w["actions"][a] for w in per) == total


PERCPU_PROGRAM = '''
import numpy as np
from dataplane import XDP_PASS, bpf_get_smp_processor_id, xdp
from dataplane.maps import (BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_ARRAY,
                            Map, bpf_map_delete_elem, bpf_map_lookup_elem, bpf_map_update_elem)
from dataplane.parse import load_be16

seen = Map("seen", BPF_MAP_TYPE_PERCPU_ARRAY, key=np.uint32, value=np.uint64, max_entries=1)
cpu_of = Map("cpu_of", BPF_MAP_TYPE_ARRAY, key=np.uint32, value=np.uint64, max_entries=4)
churn = Map("churn", BPF_MAP_TYPE_HASH, key=np.uint32, value=np.uint64, max_entries=64)

@xdp
def percpu(ctx):
    cpu = bpf_get_smp_processor_id()
    v = bpf_map_lookup_elem(seen, 0)
    if v is not None:
        v[0] += 1
    bpf_map_update_elem(cpu_of, cpu, cpu + 1, 0)
    pkt = ctx.pkt
    if len(pkt) >= 14:
        k = np.uint32(load_be16(pkt, 12) + len(pkt)) & 127
        # every worker inserts and deletes in one small shared table at once
        if bpf_map_update_elem(churn, k, k, 0) == 0:
            bpf_map_delete_elem(churn, (k + 64) & 127)
    return XDP_PASS
'''


def test_percpu_slots_and_processor_id_are_the_workers(tmp_path, workers):
    src = tmp_path / "percpu.py"
    src.write_text(PERCPU_PROGRAM)
    workers(3)
    program = load_program(str(src))
    with open_capture(SMALL) as reader:
        stats = replay(reader, program, None, batch_size=512, workers=3)
    per_worker = [w["packets"] for w in stats.workers]
    assert program.maps["seen"].lookup(0) == per_worker  # a slot per worker, like per CPU
    assert [program.maps["cpu_of"].lookup(k) for k in range(4)] == [1, 2, 3, 0]
    churn = program.maps["churn"]
    keys = [k for k, _ in churn.items()]
    # the table survived concurrent inserts and deletes: entries unique, counted
    assert len(keys) == len(set(keys)) == len(churn) <= 64
    assert all(churn.lookup(k) == k for k in keys)


TRACE_PROGRAM = '''
from dataplane import XDP_ABORTED, XDP_PASS, bpf_trace_printk, xdp

@xdp
def tracer(ctx):
    n = len(ctx.pkt)
    if n == 60:
        bpf_trace_printk("short %d", n)
    if n == 1514:
        return 7   # an invalid verdict: ABORTED, counted with its index
    return XDP_PASS
'''


def test_trace_lines_and_first_invalid_keep_capture_indices(tmp_path, workers):
    src = tmp_path / "tracer.py"
    src.write_text(TRACE_PROGRAM)
    out = {}
    for n in (1, 2):
        workers(n)
        program = load_program(str(src))
        with open_capture(SMALL) as reader:
            stats = replay(reader, program, None, batch_size=300, workers=n, trace_stream=False)
        out[n] = (stats.trace_lines, [(t.packet, t.text) for t in stats.trace], stats.invalid,
                  stats.first_invalid)
    assert out[2] == out[1]
    assert out[1][0] > 10 and out[1][2] > 10


@pytest.mark.parametrize("bad", ["0", "-2", "many", "2000"])
def test_bad_workers_is_a_usage_error(bad):
    r = _cli("replay", "-r", SMALL, "-p", "drop_udp", "--workers", bad)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "--workers" in last and "Traceback" not in r.stderr


def test_cli_workers_json_and_summary(tmp_path):
    r = _cli("replay", "-r", SMALL, "-p", "drop_udp", "--workers", "2", "-j", "-w", tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert [w["worker"] for w in s["workers"]] == [0, 1]
    assert sum(w["packets"] for w in s["workers"]) == s["packets"] == 4000
    r = _cli("replay", "-r", SMALL, "-p", "drop_udp", "--workers", "auto")
    assert r.returncode == 0 and "XDP_DROP" in r.stdout
    r = _cli("bench", "-r", SMALL, "-p", "drop_udp", "--workers", "2", "--repeat", "1", "-j")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["workers"] == 2


def test_workers_without_a_c_compiler_is_a_clear_error():
    import os
    env = {**os.environ, "DATAPLANE_NO_NATIVE": "1"}
    r = subprocess.run([sys.executable, "-m", "dataplane.cli.main", "replay", "-r", SMALL,
                        "-p", "drop_udp", "--workers", "2"], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith("error: --workers 2: needs a C compiler")


def test_a_kernel_first_called_by_two_threads_at_once_builds_once():
    """Worker threads reach a kernel at the same time on a cold cache: one builds
    it, the other waits and loads it (two builds wrote one .so over the other)."""
    import os
    import threading
    import time
    from dataplane.jit import kernel
    ns = {"__name__": "test_workers_kernels"}
    unique = f"{os.getpid()}_{time.time_ns()}"  # never in the cache: a cold build
    exec(f"def twice_{unique}(a, n):\n"
         "    t = 0\n    for i in range(n):\n        t += a[i] * 2\n    return t\n", ns)
    k = kernel(nogil=True, _nrt=False)(next(v for n, v in ns.items() if n.startswith("twice")))
    a = np.arange(100, dtype=np.int64)
    barrier, out = threading.Barrier(2), []

    def call():
        barrier.wait()
        out.append(k(a, 100))
    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert out == [9900, 9900]


def test_a_kernel_first_built_by_several_processes_at_once(tmp_path):
    """Dask worker processes reach a kernel at the same time on a cold cache:
    each builds it under names of its own and the last rename wins (the same
    temporary name for both made one rename fail)."""
    (tmp_path / "twice_module.py").write_text(
        "import numpy as np\nfrom dataplane.jit import kernel\n\n"
        "@kernel(nogil=True, _nrt=False)\ndef twice(a, n):\n"
        "    t = 0\n    for i in range(n):\n        t += a[i] * 2\n    return t\n")
    import os
    env = {**os.environ, "PYTHONPATH": str(tmp_path),
           "DATAPLANE_CACHE_DIR": str(tmp_path / "cache")}
    code = ("import numpy as np, twice_module\n"
            "print(twice_module.twice(np.arange(100, dtype=np.int64), 100))")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [e for _, e in outs]
    assert [o.strip() for o, _ in outs] == ["9900"] * 4
