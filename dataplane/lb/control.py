"""The load balancer's control plane (Katran's KatranLb): VIPs, reals, weights,
Maglev rings and settings, written into the maps of an l4lb program, loaded in
this process or pinned by a running one.

The maps hold what the packet path needs (VIP numbers and flags, real ids and
addresses, rings, settings). Weights and the VIP list live in the LbConfig,
kept beside pinned maps as ``lb.json`` so that another process can change a
running instance. Every change is validated before a map is written, and a
ring change rewrites only the slots that moved.
"""

import ipaddress
import json
import os

import numpy as np

from ..errors import DataplaneError
from . import layout as L
from .config import (ENCAPS, PROTOS, LbConfig, LbError, Vip, from_dict, parse_address,
                     parse_mac, to_dict)
from .maglev import maglev_ring

STATE_FILE = "lb.json"
#: The maps the control plane writes or reads.
CONTROL_MAPS = ("vip_map", "vip_tags", "vip_addrs", "reals", "ch_rings", "ctl", "server_ids",
                "vip_stats", "real_stats", "lb_stats")
#: The maps of maps of the workers' connection tables, IPv4's and IPv6's.
CONN_TABLES = ("lru_mapping", "lru_mapping_v6")
_MASK64 = (1 << 64) - 1


def address_words(address):
    """(hi, lo) of an address as the maps store it (IPv4 as ::ffff:a.b.c.d)."""
    value = int(address) | (L.V4_MAPPED if address.version == 4 else 0)
    return value >> 64, value & _MASK64


class LoadBalancer:
    """Katran's control plane over an l4lb program's maps (``maps``: name -> Map,
    ``Program.maps`` or pinned ones) and a configuration (LbConfig)."""

    def __init__(self, maps, cfg=None, state_dir=None, attached=False):
        missing = set(CONTROL_MAPS) - set(maps)
        if missing:
            raise LbError(f"not an l4lb program's maps: {', '.join(sorted(missing))} missing")
        self.maps = maps
        self.state_dir = state_dir
        if attached:  # a running instance: its maps already say what ``cfg`` says
            self.cfg = cfg
            return
        self.cfg = LbConfig()
        for name in CONN_TABLES:  # each worker its own connection tables
            lru = maps.get(name)
            for worker in range(lru.max_entries if lru is not None else 0):
                lru.update(worker, worker)
        self.apply(cfg or LbConfig())

    @classmethod
    def attach(cls, directory):
        """The instance whose maps are pinned in ``directory`` (dataplane replay/run
        --pin), with its configuration from ``directory``/lb.json. Attaching
        writes nothing: the maps are the running instance's."""
        from ..pin import open_pinned

        maps = {name: open_pinned(directory, name) for name in CONTROL_MAPS}
        path = os.path.join(directory, STATE_FILE)
        try:
            with open(path) as f:
                cfg = from_dict(json.load(f), path)
        except FileNotFoundError:
            if len(maps["vip_map"]):  # its VIPs' reals and weights are in no file
                raise LbError(f"{path}: missing, while the instance has "
                              f"{len(maps['vip_map'])} VIP(s): its configuration cannot be "
                              "known, nothing was changed") from None
            cfg = LbConfig()
        except (OSError, ValueError) as exc:
            raise LbError(f"{path}: {exc}") from None
        lb = cls(maps, cfg, state_dir=directory, attached=True)
        in_maps, in_file = {v.name for v in lb._vips_in_maps()}, {v.name for v in cfg.vips}
        if in_maps != in_file:  # e.g. the instance restarted without --config: fresh maps
            only = sorted(in_file - in_maps) or sorted(in_maps - in_file)
            where = "lb.json only" if in_file - in_maps else "the maps only"
            raise LbError(f"{path}: does not describe the instance's maps ({len(in_file)} VIP(s) "
                          f"against {len(in_maps)}; in {where}: {', '.join(only[:3])}"
                          f"{', ...' if len(only) > 3 else ''}): nothing was changed")
        return lb

    # -- whole configuration ------------------------------------------------
    def apply(self, cfg):
        """Make the maps say what ``cfg`` says (validated already: from_dict):
        VIPs added, changed and removed, rings rewritten where they moved."""
        reals = {r.address for v in cfg.vips for r in v.reals}
        if len(reals) >= L.MAX_REALS:
            raise LbError(f"{len(reals)} reals, at most {L.MAX_REALS - 1}")
        old = {v.name: v for v in self._vips_in_maps()}
        self.cfg = cfg
        for name in set(old) - {v.name for v in cfg.vips}:
            self._drop_vip(old[name])
        self._write_ctl()
        for vip in cfg.vips:
            self._write_vip(vip)
        self._free_unused_reals()
        self._save()

    # -- VIPs and reals -------------------------------------------------------
    def add_vip(self, name, flags=()):
        vip = self.cfg.add_vip(name, flags)
        self._write_vip(vip)
        self._save()
        return vip

    def remove_vip(self, name):
        self._drop_vip(self.cfg.remove_vip(name))
        self._free_unused_reals()
        self._save()

    def add_real(self, vip_name, address, weight=1):
        vip = self.cfg.add_real(vip_name, address, weight)
        real = vip.reals[-1]
        try:
            self._real_id(real.address, create=True)
        except LbError:  # the reals table is full: the configuration as it was
            vip.reals.remove(real)
            raise
        self._write_vip(vip)
        self._save()

    def remove_real(self, vip_name, address):
        self._write_vip(self.cfg.remove_real(vip_name, address))
        self._free_unused_reals()
        self._save()

    def set_weight(self, vip_name, address, weight):
        self._write_vip(self.cfg.set_weight(vip_name, address, weight))
        self._save()

    def set_gateway_mac(self, mac):
        self.cfg.set_gateway_mac(mac)
        self._write_ctl()
        self._save()

    def set_quic_server_id(self, server_id, address):
        """Route QUIC packets whose connection id carries ``server_id`` to the real
        at ``address`` (it must be a real of some VIP)."""
        if not 0 < server_id < L.MAX_SERVER_IDS:
            raise LbError(f"QUIC server id {server_id} is not 1..{L.MAX_SERVER_IDS - 1}")
        real_id = self._real_id(parse_address(address, "QUIC real"), create=False)
        if real_id == 0:
            raise LbError(f"QUIC server id {server_id}: {address} is not a real of any VIP")
        self.maps["server_ids"].update(server_id, real_id)

    def set_trace(self, on):
        ctl = self.maps["ctl"]
        ctl.values[0, 0]["trace"] = 1 if on else 0

    # -- reading ------------------------------------------------------------
    def list(self):
        """VIPs with their number, flags and reals (id, weight, ring slots)."""
        out, ids = [], self.real_ids()
        for vip in self.cfg.vips:
            num = self._vip_num(vip)
            ring = self._ring(num)
            counts = np.bincount(ring, minlength=L.MAX_REALS)
            reals = []
            for r in vip.reals:
                rid = ids.get(r.address, 0)
                reals.append({"address": str(r.address), "weight": r.weight, "id": rid,
                              "slots": int(counts[rid])})
            out.append({"vip": vip.name, "number": num, "flags": list(vip.flags),
                        "reals": reals})
        return out

    def stats(self):
        """Packets and bytes per VIP and per real (summed over workers), and the
        global counters (lb_stats: verdict reasons, connection table)."""
        vstats, rstats = self.maps["vip_stats"], self.maps["real_stats"]
        counters = self.maps["lb_stats"].values.sum(axis=0)
        out = {"vips": [], "reals": [],
               "counters": {name: int(counters[i]) for i, name in enumerate(L.COUNTERS)}}
        seen, ids = {}, self.real_ids()
        for vip in self.cfg.vips:
            num = self._vip_num(vip)
            s = vstats.values[:, num]
            out["vips"].append({"vip": vip.name, "packets": int(s["packets"].sum()),
                                "bytes": int(s["bytes"].sum())})
            for r in vip.reals:
                rid = ids.get(r.address, 0)
                if rid and rid not in seen:
                    s = rstats.values[:, rid]
                    seen[rid] = {"real": str(r.address), "packets": int(s["packets"].sum()),
                                 "bytes": int(s["bytes"].sum())}
        out["reals"] = list(seen.values())
        return out

    # -- maps ---------------------------------------------------------------
    def _write_ctl(self):
        c = self.cfg
        trace = int(self.maps["ctl"].values[0, 0]["trace"])
        self.maps["ctl"].update(0, (parse_mac(c.gateway_mac), c.max_pkt_size, ENCAPS[c.encap],
                                    trace, round(c.udp_timeout * 1e3), c.max_new_conns))

    def _vips_in_maps(self):
        """The VIPs the maps hold (without reals): what ``apply`` replaces, which
        may be more than this object's configuration (maps that an earlier
        LoadBalancer configured in this process), and what ``attach`` checks
        lb.json against."""
        names = {number: name for name, number in PROTOS.items()}
        return [Vip(ipaddress.ip_address(k["addr"]), int(k["port"]), names[int(k["proto"])])
                for k, _ in self.maps["vip_map"].items()]

    def _vip_key(self, vip):
        hi, lo = address_words(vip.address)
        return (hi, lo, vip.port, PROTOS[vip.proto])

    def _vip_num(self, vip):
        got = self.maps["vip_map"].lookup(self._vip_key(vip))
        return None if got is None else got["vip_num"]

    def _ring(self, num):
        start = num * L.RING_SIZE
        return self.maps["ch_rings"].values[0, start:start + L.RING_SIZE]

    def _write_vip(self, vip):
        """Put a VIP (new or changed) in the maps: number, flags, tag, address, ring.

        The tag (the number, and above it a count of the VIPs that had it) goes
        into the connection-table entries of the VIP's flows: the program skips
        the VIP lookup of an established flow while vip_tags still holds its
        entry's tag, so a number taken again gets a new one."""
        vips, tags = self.maps["vip_map"], self.maps["vip_tags"]
        num = self._vip_num(vip)
        if num is None:
            used = {v["vip_num"] for _, v in vips.items()}
            num = next(i for i in range(L.MAX_VIPS) if i not in used)
            hi, lo = address_words(vip.address)
            addrs = self.maps["vip_addrs"]
            addrs.update((hi, lo), (addrs.lookup((hi, lo)) or 0) + 1)
            generation = int(tags.lookup(num)["tag"]) >> L.TAG_BITS
            tag = (generation % ((1 << L.TAG_WIDTH - L.TAG_BITS) - 1) + 1) << L.TAG_BITS | num
        else:
            tag = int(tags.lookup(num)["tag"])
        flags = sum(L.VIP_FLAGS[f] for f in vip.flags)
        ids = self.real_ids()
        ring = maglev_ring([(self._real_id(r.address, True, ids), r.address, r.weight)
                            for r in vip.reals], L.RING_SIZE)
        current = self._ring(num)
        moved = np.flatnonzero(current != ring)
        current[moved] = ring[moved]  # only the slots that changed
        tags.update(num, (flags | (L.F_PORT_WILDCARD if vip.port == 0 else 0), tag))
        vips.update(self._vip_key(vip), (num, flags))

    def _drop_vip(self, vip):
        num = self._vip_num(vip)
        if num is None:
            return
        tags = self.maps["vip_tags"]  # first: no packet skips the lookup from here on
        tags.update(num, (L.F_REMOVED, tags.lookup(num)["tag"]))
        self.maps["vip_map"].delete(self._vip_key(vip))
        self._ring(num)[:] = 0
        hi, lo = address_words(vip.address)
        addrs = self.maps["vip_addrs"]
        left = (addrs.lookup((hi, lo)) or 1) - 1
        if left:
            addrs.update((hi, lo), left)
        else:
            addrs.delete((hi, lo))
        self.maps["vip_stats"].values[:, num] = 0

    def real_ids(self):
        """{address: id} of the reals in the reals map (id 0 is never used)."""
        rows = self.maps["reals"].values[0]
        used = np.flatnonzero((rows["addr_hi"] != 0) | (rows["addr_lo"] != 0))
        out = {}
        for rid in used:
            value = (int(rows["addr_hi"][rid]) << 64) | int(rows["addr_lo"][rid])
            out[_from_words(value)] = int(rid)
        return out

    def _real_id(self, address, create, ids=None):
        """The id of the real at ``address`` (0: none), given one when ``create``.
        ``ids``: real_ids() already read, kept up to date (one read per change)."""
        ids = self.real_ids() if ids is None else ids
        if address in ids or not create:
            return ids.get(address, 0)
        used = set(ids.values())
        free = next((i for i in range(1, L.MAX_REALS) if i not in used), None)
        if free is None:
            raise LbError(f"real {address}: the reals table is full ({L.MAX_REALS - 1} reals)")
        hi, lo = address_words(address)
        self.maps["reals"].update(free, (hi, lo, 1 if address.version == 6 else 0))
        self.maps["real_stats"].values[:, free] = 0
        ids[address] = free
        return free

    def _free_unused_reals(self):
        wanted = {r.address for v in self.cfg.vips for r in v.reals}
        for address, rid in self.real_ids().items():
            if address not in wanted:
                self.maps["reals"].values[:, rid] = 0

    def _save(self):
        if self.state_dir is None:
            return
        path = os.path.join(self.state_dir, STATE_FILE)
        tmp = f"{path}.{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(to_dict(self.cfg), f, indent=1)
        os.replace(tmp, path)


def _from_words(value):
    ip = ipaddress.IPv6Address(value)
    return ip.ipv4_mapped or ip


def load_balancer(program, config_path=None, state_dir=None):
    """The LoadBalancer of a loaded l4lb ``program``, configured from a TOML file
    (its state kept in ``state_dir``, the --pin directory, when given)."""
    from .config import load_toml

    if "vip_map" not in program.maps:
        raise DataplaneError(f"--config: program '{program.name}' is not the l4lb program "
                             "(--config configures -p l4lb)")
    return LoadBalancer(program.maps, load_toml(config_path) if config_path else None,
                        state_dir=state_dir)
