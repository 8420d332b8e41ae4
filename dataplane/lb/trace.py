"""``dataplane lb trace``: replay a capture through l4lb and say, for each
packet, why it went where it went (the diagnosis Katran's users ask for when
"it doesn't forward packets").

The program itself reports: with ``ctl.trace`` set, every packet leaves one
record in the ``lb_trace`` ring (VIP number, connection-table answer, ring slot,
real id, reason), drained after each batch and paired with the packets in
order. Only the summary of each packet's headers is decoded here, with dpkt.
"""

import json

import dpkt

from ..action import XdpAction
from ..io.capture import open_capture
from ..program import load_program
from . import layout as L
from .config import LbError, from_dict, load_toml


def load_config(path):
    """A configuration from TOML, or from the JSON state beside pinned maps."""
    if str(path).endswith(".json"):
        try:
            with open(path) as f:
                return from_dict(json.load(f), str(path))
        except OSError as exc:
            raise LbError(f"{path}: cannot read: {(exc.strerror or str(exc)).lower()}") from None
        except ValueError as exc:
            raise LbError(f"{path}: not valid JSON: {exc}") from None
    return load_toml(path)


def trace_capture(path, config_path, limit=None, on_line=None, on_warning=None):
    """Trace up to ``limit`` packets of ``path``: a list of per-packet records
    (dicts), each also given to ``on_line`` as a line of text when set; the
    capture's warnings (a truncated last record) go to ``on_warning``."""
    from .control import LoadBalancer

    program = load_program("l4lb")
    lb = LoadBalancer(program.maps, load_config(config_path))
    lb.set_trace(True)
    vips = {v["number"]: v["vip"] for v in lb.list()}
    reals = {rid: str(address) for address, rid in lb.real_ids().items()}
    ring = program.maps["lb_trace"]
    out = []
    batch = program.new_batch(L.TRACE_BATCH)
    with open_capture(path) as reader:
        while limit is None or len(out) < limit:
            n = reader.read_batch(batch)
            if n == 0:
                break
            if limit is not None:
                n = batch.count = min(n, limit - len(out))
            frames = [batch.packet(i) for i in range(n)]
            program.run_batch(batch, base_index=len(out))
            records = iter(ring.read())
            for i, frame in enumerate(frames):
                action = XdpAction(int(batch.action[i]))
                # a packet that faulted (XDP_ABORTED) left no record
                rec = next(records) if action != XdpAction.XDP_ABORTED else None
                item = _describe(len(out), frame, action, rec, vips, reals)
                out.append(item)
                if on_line:
                    on_line(item["line"])
        if on_warning is not None:
            for w in reader.warnings:
                on_warning(w)
    return out


def _describe(index, frame, action, rec, vips, reals):
    item = {"packet": index, "summary": summarize(frame), "verdict": action.name}
    if rec is None:
        item["reason"] = "fault"
        why = "the program faulted"
    else:
        reason = L.REASONS[int(rec["reason"])]
        item["reason"] = reason
        parts = []
        if rec["vip_num"] >= 0:
            item["vip"] = vips.get(int(rec["vip_num"]), f"#{int(rec['vip_num'])}")
            parts.append(f"vip {item['vip']}")
        elif reason == "pass_no_vip":
            parts.append("no VIP matches")
        conn = L.CONN_STATES[int(rec["conn"])]
        if conn != "-":
            item["conn"] = conn
            parts.append(f"conn {conn}")
        if rec["slot"] >= 0:
            item["slot"] = int(rec["slot"])
            parts.append(f"slot {item['slot']}")
        if rec["real"]:
            item["real"] = reals.get(int(rec["real"]), f"#{int(rec['real'])}")
            parts.append(f"real {item['real']}")
        why = ", ".join(parts + [reason])
    item["line"] = f"packet {index}: {item['summary']}: {action.name} ({why})"
    return item


def summarize(frame):
    """tcpdump-like one-line summary of a frame's addresses, ports and protocol."""
    try:
        eth = dpkt.ethernet.Ethernet(frame)
    except (dpkt.UnpackError, ValueError):
        return f"{len(frame)} bytes, not Ethernet"
    ip = eth.data
    if getattr(eth, "vlan_tags", None):  # l4lb, like Katran, takes untagged frames only
        return f"802.1Q-tagged ethertype 0x{eth.type:04x}"
    if not isinstance(ip, (dpkt.ip.IP, dpkt.ip6.IP6)):
        return f"ethertype 0x{eth.type:04x}"
    src, dst = dpkt.utils.inet_to_str(ip.src), dpkt.utils.inet_to_str(ip.dst)
    l4 = ip.data
    if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
        proto = "tcp" if isinstance(l4, dpkt.tcp.TCP) else "udp"
        flags = ""
        if proto == "tcp":
            flags = " [" + "".join(c for c, bit in (("S", 2), ("F", 1), ("R", 4), ("P", 8),
                                                    (".", 16)) if l4.flags & bit) + "]"
        return f"{_hp(src, l4.sport)} > {_hp(dst, l4.dport)} {proto}{flags}"
    if isinstance(l4, (dpkt.icmp.ICMP, dpkt.icmp6.ICMP6)):
        return f"{src} > {dst} icmp type {l4.type} code {l4.code}"
    return f"{src} > {dst} proto {getattr(ip, 'p', getattr(ip, 'nxt', '?'))}"


def _hp(address, port):
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
