"""The load balancer's configuration: VIPs, their reals and weights, and the
instance settings, as TOML (``--config lb.toml``) or JSON (the state kept
beside pinned maps). Parsing validates everything before anything is applied,
so a bad file changes nothing; errors name the file, the VIP and the field.

    gateway_mac = "02:00:00:00:00:fe"
    encap = "ipip"                 # or "gue"
    [[vip]]
    address = "10.200.1.1"        # or an IPv6 address
    port = 80                     # 0 = any port
    proto = "tcp"                 # or "udp"
    flags = []                    # hash_no_src_port, lru_bypass, quic, hash_dport_only
    reals = [ { address = "10.0.0.2", weight = 1 } ]
"""

import ipaddress
import re
from dataclasses import dataclass, field

from ..errors import DataplaneError
from . import layout as L

PROTOS = {"tcp": 6, "udp": 17}
#: udp_timeout's bounds (seconds): the connection table keeps milliseconds
#: (layout.CONN), up to ~24.8 days.
MIN_UDP_TIMEOUT, MAX_UDP_TIMEOUT = 0.001, L.MAX_UDP_TIMEOUT_MS // 1000
ENCAPS = {"ipip": L.ENCAP_IPIP, "gue": L.ENCAP_GUE}


class LbError(DataplaneError):
    """A load-balancer configuration or control-plane error (exit status 1)."""


@dataclass
class Real:
    address: object  # ipaddress.IPv4Address / IPv6Address
    weight: int = 1


@dataclass
class Vip:
    address: object
    port: int
    proto: str
    flags: list = field(default_factory=list)
    reals: list = field(default_factory=list)

    @property
    def name(self):
        """``10.200.1.1:80/tcp``, ``[fc00::1]:443/udp``: how commands name a VIP."""
        host = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{host}:{self.port}/{self.proto}"

    def real(self, address):
        return next((r for r in self.reals if r.address == address), None)


@dataclass
class LbConfig:
    gateway_mac: str = "00:00:00:00:00:00"
    encap: str = "ipip"
    max_pkt_size: int = L.MAX_PKT_SIZE
    udp_timeout: float = L.UDP_TIMEOUT_MS / 1e3
    max_new_conns: int = L.MAX_NEW_CONNS
    vips: list = field(default_factory=list)

    def vip(self, name):
        """The VIP named ``addr:port/proto``; LbError if there is none."""
        address, port, proto = parse_vip(name)
        for v in self.vips:
            if (v.address, v.port, v.proto) == (address, port, proto):
                return v
        raise LbError(f"no VIP {name}", hint="dataplane lb list shows the VIPs")

    # Changes, each validated whole before anything changes (the control plane
    # then writes the maps; ``dataplane lb --config`` writes the file).
    def add_vip(self, name, flags=()):
        address, port, proto = parse_vip(name)
        vip = Vip(address, port, proto, check_flags(list(flags), f"VIP {name}"))
        if any(v.name == vip.name for v in self.vips):
            raise LbError(f"VIP {vip.name} exists already")
        if len(self.vips) >= L.MAX_VIPS:
            raise LbError(f"VIP {vip.name}: the VIP table is full ({L.MAX_VIPS} VIPs)")
        self.vips.append(vip)
        return vip

    def remove_vip(self, name):
        vip = self.vip(name)
        self.vips.remove(vip)
        return vip

    def add_real(self, vip_name, address, weight=1):
        vip = self.vip(vip_name)
        address = parse_address(address, f"real of VIP {vip.name}")
        check_weight(weight, f"real {address}")
        check_real(vip, address, "real")
        if vip.real(address) is not None:
            raise LbError(f"VIP {vip.name} has real {address} already")
        vip.reals.append(Real(address, weight))
        return vip

    def _real(self, vip_name, address):
        vip = self.vip(vip_name)
        real = vip.real(parse_address(address, f"real of VIP {vip.name}"))
        if real is None:
            raise LbError(f"VIP {vip.name} has no real {address}")
        return vip, real

    def remove_real(self, vip_name, address):
        vip, real = self._real(vip_name, address)
        vip.reals.remove(real)
        return vip

    def set_weight(self, vip_name, address, weight):
        vip, real = self._real(vip_name, address)
        real.weight = check_weight(weight, f"real {address}")
        return vip

    def set_gateway_mac(self, mac):
        parse_mac(mac)
        self.gateway_mac = mac


def parse_address(text, what):
    try:
        address = ipaddress.ip_address(str(text).strip("[]"))
    except ValueError:
        raise LbError(f"{what}: '{text}' is not an IPv4 or IPv6 address") from None
    if getattr(address, "scope_id", None):  # the maps hold 16 bytes: fe80::1%eth0 == fe80::1?
        raise LbError(f"{what}: '{text}': an address with a zone index (%{address.scope_id}) "
                      "cannot be a VIP or a real")
    if address.is_unspecified:  # all zeros: an empty row of the reals map
        raise LbError(f"{what}: '{text}' is the unspecified address: not a VIP or a real")
    if getattr(address, "ipv4_mapped", None):  # the maps keep IPv4 in this very form
        raise LbError(f"{what}: '{text}' is an IPv4-mapped address: give the IPv4 address "
                      f"({address.ipv4_mapped})")
    return address


def parse_vip(text):
    """``ADDR:PORT/PROTO`` (``[V6ADDR]:PORT/PROTO``) -> (address, port, proto)."""
    m = re.fullmatch(r"(\[[^\]]+\]|[^:/\[\]]+):(\d+)/(\w+)", text.strip())
    if not m:
        raise LbError(f"VIP '{text}': expected ADDRESS:PORT/PROTO, e.g. 10.200.1.1:80/tcp "
                      "or [fc00::1]:443/udp")
    address = parse_address(m[1], f"VIP '{text}'")
    return address, check_port(int(m[2]), f"VIP '{text}'"), check_proto(m[3], f"VIP '{text}'")


def check_port(port, what):
    # bool is an int to Python: port = true listed as ":True" and was written back so
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise LbError(f"{what}: port {port!r} must be an integer in 0..65535")
    return port


def _is_one_of(value, names):
    """``value`` is one of the strings ``names`` (a TOML array or table is not:
    it is not even hashable)."""
    return isinstance(value, str) and value in names


def check_proto(proto, what):
    if not _is_one_of(proto, PROTOS):
        raise LbError(f"{what}: proto {proto!r} is not tcp or udp")
    return proto


def check_weight(weight, what):
    if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= L.MAX_WEIGHT:
        raise LbError(f"{what}: weight {weight!r} must be an integer in 1..{L.MAX_WEIGHT}")
    return weight


def check_flags(flags, what):
    if not isinstance(flags, list) or not all(_is_one_of(f, L.VIP_FLAGS) for f in flags):
        raise LbError(f"{what}: flags {flags!r}: valid flags are {', '.join(L.VIP_FLAGS)}")
    return sorted(set(flags))


def check_real(vip, address, what):
    """A real's address must suit its VIP: no IPv4 real behind an IPv6 VIP
    (there is no 6in4 encapsulation, as in Katran)."""
    if vip.address.version == 6 and address.version == 4:
        raise LbError(f"{what}: IPv6 VIP {vip.name} cannot have IPv4 real {address} "
                      "(IPv6 packets are encapsulated in IPv6 only)")


def parse_mac(text, what="gateway_mac"):
    if not isinstance(text, str) or not re.fullmatch(r"([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}", text):
        raise LbError(f"{what}: '{text}' is not a MAC address like 02:00:00:00:00:fe")
    return int(text.replace(":", ""), 16)


def from_dict(doc, where):
    """An LbConfig from a parsed TOML/JSON document, validated whole."""
    if not isinstance(doc, dict):
        raise LbError(f"{where}: expected a table")
    known = {"gateway_mac", "encap", "max_pkt_size", "udp_timeout", "max_new_conns", "vip"}
    extra = set(doc) - known
    if extra:
        raise LbError(f"{where}: unknown key(s) {', '.join(sorted(extra))} "
                      f"(valid: {', '.join(sorted(known))})")
    cfg = LbConfig()
    cfg.gateway_mac = doc.get("gateway_mac", cfg.gateway_mac)
    parse_mac(cfg.gateway_mac, f"{where}: gateway_mac")
    cfg.encap = doc.get("encap", cfg.encap)
    if not _is_one_of(cfg.encap, ENCAPS):
        raise LbError(f"{where}: encap {cfg.encap!r} is not ipip or gue")
    cfg.max_pkt_size = _int(doc, "max_pkt_size", cfg.max_pkt_size, 64, 65535, where)
    cfg.max_new_conns = _int(doc, "max_new_conns", cfg.max_new_conns, 1, 2**62, where)
    cfg.udp_timeout = doc.get("udp_timeout", cfg.udp_timeout)
    t = cfg.udp_timeout  # TOML has inf and nan; the map keeps whole milliseconds
    if isinstance(t, bool) or not isinstance(t, (int, float)) \
            or not MIN_UDP_TIMEOUT <= t <= MAX_UDP_TIMEOUT:
        raise LbError(f"{where}: udp_timeout {t!r} must be seconds from {MIN_UDP_TIMEOUT} to "
                      f"{MAX_UDP_TIMEOUT}")
    vips = doc.get("vip", [])
    if not isinstance(vips, list):
        raise LbError(f"{where}: 'vip' must be an array of tables ([[vip]])")
    for i, v in enumerate(vips):
        cfg.vips.append(_vip(v, f"{where}: vip #{i + 1}"))
    seen = set()
    for v in cfg.vips:
        if v.name in seen:
            raise LbError(f"{where}: VIP {v.name} is given twice")
        seen.add(v.name)
    if len(cfg.vips) > L.MAX_VIPS:
        raise LbError(f"{where}: {len(cfg.vips)} VIPs, at most {L.MAX_VIPS}")
    return cfg


def _int(doc, key, default, low, high, where):
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LbError(f"{where}: {key} {value!r} must be an integer in {low}..{high}")
    return value


def _vip(doc, what):
    if not isinstance(doc, dict):
        raise LbError(f"{what}: expected a table")
    extra = set(doc) - {"address", "port", "proto", "flags", "reals"}
    if extra:
        raise LbError(f"{what}: unknown key(s) {', '.join(sorted(extra))}")
    if "address" not in doc:
        raise LbError(f"{what}: 'address' is missing")
    vip = Vip(parse_address(doc["address"], f"{what}: address"),
              check_port(doc.get("port", 0), what), check_proto(doc.get("proto", "tcp"), what),
              check_flags(doc.get("flags", []), what))
    what = f"{what} ({vip.name})"
    reals = doc.get("reals", [])
    if not isinstance(reals, list):
        raise LbError(f"{what}: 'reals' must be an array of {{ address, weight }} tables")
    for r in reals:
        if not isinstance(r, dict) or "address" not in r or set(r) - {"address", "weight"}:
            raise LbError(f"{what}: real {r!r}: expected {{ address = \"...\", weight = N }}")
        address = parse_address(r["address"], f"{what}: real")
        check_real(vip, address, what)
        if vip.real(address) is not None:
            raise LbError(f"{what}: real {address} is given twice")
        weight = check_weight(r.get("weight", 1), f"{what}: real {address}")
        vip.reals.append(Real(address, weight))
    return vip


def load_toml(path):
    """Read and validate a TOML configuration file."""
    import tomllib

    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise LbError(f"{path}: cannot read: {(exc.strerror or str(exc)).lower()}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LbError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8; tomllib decodes the whole file first
        raise LbError(f"{path}: not valid TOML: not UTF-8 (byte 0x{exc.object[exc.start]:02x} "
                      f"at offset {exc.start})") from None
    return from_dict(doc, str(path))


def to_dict(cfg):
    """The document form (TOML / JSON) of a configuration."""
    return {
        "gateway_mac": cfg.gateway_mac, "encap": cfg.encap, "max_pkt_size": cfg.max_pkt_size,
        "udp_timeout": cfg.udp_timeout, "max_new_conns": cfg.max_new_conns,
        "vip": [{"address": str(v.address), "port": v.port, "proto": v.proto,
                 "flags": list(v.flags),
                 "reals": [{"address": str(r.address), "weight": r.weight} for r in v.reals]}
                for v in cfg.vips],
    }


def to_toml(cfg):
    """TOML text of a configuration (Python reads TOML but does not write it)."""
    d = to_dict(cfg)
    lines = [f"{k} = {_toml_value(d[k])}" for k in d if k != "vip"]
    for v in d["vip"]:
        lines += ["", "[[vip]]"] + [f"{k} = {_toml_value(v[k])}" for k in v if k != "reals"]
        reals = ",\n  ".join("{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in r.items())
                             + " }" for r in v["reals"])
        lines.append(f"reals = [\n  {reals},\n]" if reals else "reals = []")
    return "\n".join(lines) + "\n"


def _toml_value(x):
    if isinstance(x, str):
        return '"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(x, list):
        return "[" + ", ".join(_toml_value(i) for i in x) + "]"
    return repr(x)
