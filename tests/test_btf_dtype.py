"""numpy dtypes of eBPF map keys and values from BTF (dataplane/ebpf/btf_dtype.py).

C types are compiled at test time with clang (skipped when it is missing).
The oracles of the layouts: offsets written out from the C below, the same
types compiled for the host with ``offsetof`` / ``sizeof`` printed (x86-64
and BPF lay these types out alike), ``bpftool btf dump -j`` where bpftool is
installed, the variables' symbols (``llvm-nm``) and the C initialisers of the
global data.
"""

import glob
import ipaddress
import os
import random
import shutil
import struct
import subprocess

import numpy as np
import pytest

from bpf_build import CLANG, compile_bpf, include_flags
from dataplane.ebpf import btf as B
from dataplane.ebpf.btf_dtype import btf_dtype, map_dtypes
from dataplane.ebpf.elf import load_object
from dataplane.ebpf.program import bytes_dtype
from dataplane.map_json import from_python, to_python
from dataplane.map_layout import field_list
from dataplane.maps import Map

BPFTOOL = shutil.which("bpftool")
NM = shutil.which("llvm-nm") or shutil.which("nm")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TYPES = r"""
#include <linux/types.h>

struct five_tuple {            /* 16 bytes, 3 of tail padding */
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
};

struct host_key {              /* padding inside: 3 bytes after proto */
	__u8 proto;
	__u32 ifindex;
	__u64 cookie;
};

struct counters {
	__u64 packets;
	__u64 bytes;
};

struct v6_key {
	__u8 saddr[16];        /* -> saddr_hi / saddr_lo >u8 */
	__be32 daddr[4];       /* 16 bytes named *addr* -> daddr_hi / daddr_lo */
	__u32 weights[4];      /* -> weights0 .. weights3 */
	__u8 mac[6];           /* -> mac0 .. mac5 */
	__u8 port[2];          /* -> port >u2 */
	__u8 v4addr[4];        /* -> v4addr >u4 */
	char name[4];          /* text: name0 .. name3 i1 */
	__u16 ip6[2];          /* -> ip6_0, ip6_1 */
	__u8 cookie[8];        /* -> cookie >u8, unaligned */
};

struct point {
	__u16 x;
	__u32 y;
};

struct nested {
	__u8 kind;
	struct point at;
	struct point path[2];
	struct { __u32 a; __u32 b; };
	union { __u32 v4; __u8 v6[16]; } u;
	union { __u64 q; __s32 r; };
	struct { struct point p; } deep;
};

enum color { RED, GREEN = 7, BLUE = 300 };

struct misc {
	__u32 lo:4, mid:12;
	__u8 tag;
	__u16 hi:3;
	__s64 big;
	enum color c;
	_Bool ok;
	void *p;
	float f;
	__s16 delta;
	unsigned __int128 wide;
};

union either { __u64 q; __u32 w[2]; };
typedef __s64 my_id_t;
typedef __u8 ipv6_addr_t[16];
"""

BPF = TYPES + r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define MAP(n, k, v) struct { __uint(type, BPF_MAP_TYPE_HASH); __type(key, k); \
	__type(value, v); __uint(max_entries, 16); } n SEC(".maps")

MAP(flows, struct five_tuple, struct counters);
MAP(hosts, struct host_key, struct nested);
MAP(v6, struct v6_key, struct misc);
MAP(colors, enum color, union either);
MAP(ports, __be16, my_id_t);
MAP(addrs, __u32, ipv6_addr_t);

__u64 packets;
__u32 drops;
__u32 verdict = 2;
struct counters totals = { 3, 4 };
char banner[5] = "hey!";
__u16 ttl = 64;
const volatile __u8 match_proto = 17;
const volatile __u64 limit = 1000;

SEC("xdp")
int prog(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
"""

# (struct, C member designator, dtype field): the host compiler's offsetof
# must be the field's offset (first byte of a raw or split range)
OFFSETS = [
    ("five_tuple", "saddr", "saddr"), ("five_tuple", "daddr", "daddr"),
    ("five_tuple", "sport", "sport"), ("five_tuple", "dport", "dport"),
    ("five_tuple", "proto", "proto"),
    ("host_key", "proto", "proto"), ("host_key", "ifindex", "ifindex"),
    ("host_key", "cookie", "cookie"),
    ("counters", "packets", "packets"), ("counters", "bytes", "bytes"),
    ("v6_key", "saddr", "saddr_hi"), ("v6_key", "saddr[8]", "saddr_lo"),
    ("v6_key", "daddr", "daddr_hi"), ("v6_key", "daddr[2]", "daddr_lo"),
    ("v6_key", "weights[0]", "weights0"), ("v6_key", "weights[3]", "weights3"),
    ("v6_key", "mac[0]", "mac0"), ("v6_key", "mac[5]", "mac5"),
    ("v6_key", "port", "port"), ("v6_key", "v4addr", "v4addr"),
    ("v6_key", "name[0]", "name0"), ("v6_key", "name[3]", "name3"),
    ("v6_key", "ip6[0]", "ip6_0"), ("v6_key", "ip6[1]", "ip6_1"),
    ("v6_key", "cookie", "cookie"),
    ("nested", "kind", "kind"), ("nested", "at.x", "at_x"), ("nested", "at.y", "at_y"),
    ("nested", "path[0].x", "path0_x"), ("nested", "path[0].y", "path0_y"),
    ("nested", "path[1].x", "path1_x"), ("nested", "path[1].y", "path1_y"),
    ("nested", "a", "a"), ("nested", "b", "b"), ("nested", "u", "u_0"),
    ("nested", "q", "anon56_0"), ("nested", "deep.p.x", "deep_p_x"),
    ("nested", "deep.p.y", "deep_p_y"),
    ("misc", "tag", "tag"), ("misc", "big", "big"), ("misc", "c", "c"), ("misc", "ok", "ok"),
    ("misc", "p", "p_0"), ("misc", "f", "f_0"), ("misc", "delta", "delta"),
    ("misc", "wide", "wide_0"),
]
SIZES = ["five_tuple", "host_key", "counters", "v6_key", "point", "nested", "misc"]


def _run(cmd):
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def obj(tmp_path_factory):
    if CLANG is None:
        pytest.skip("clang not installed")
    d = tmp_path_factory.mktemp("btf_dtype")
    src = d / "types.bpf.c"
    src.write_text(BPF)
    out = str(d / "types.o")
    compile_bpf(src, out)
    spec = load_object(out)
    return {"path": out, "spec": spec, "dir": d,
            "maps": {m.name: m for m in spec.maps}}


def _dt(obj, map_name, which):
    m = obj["maps"][map_name]
    spec = obj["spec"]
    if which == "key":
        return btf_dtype(spec.btf, m.btf_key_type, m.key_size)
    return btf_dtype(spec.btf, m.btf_value_type, m.value_size,
                     m.initial if m.kind in ("data", "rodata", "bss") else None)


def _struct_dt(obj, name):
    btf = obj["spec"].btf
    tid = btf.find(name, B.KIND_STRUCT)
    return btf_dtype(btf, tid, btf.sizeof(tid))


def _layout(dt):
    return [(n, dt.fields[n][0].str, dt.fields[n][1]) for n in dt.names]


def _view(dt, raw):
    assert len(raw) == dt.itemsize
    return np.frombuffer(raw, np.uint8).view(dt)[0]


def _accepted(name, k, v):
    Map(name, 1, key=k, value=v, max_entries=16)


# -- layouts -----------------------------------------------------------------
def test_five_tuple_key_and_counters(obj):
    k, v = _dt(obj, "flows", "key"), _dt(obj, "flows", "value")
    assert k.itemsize == 16  # 13 bytes of members and 3 of padding
    assert _layout(k) == [("saddr", ">u4", 0), ("daddr", ">u4", 4), ("sport", ">u2", 8),
                          ("dport", ">u2", 10), ("proto", "|u1", 12)]
    assert _layout(v) == [("packets", "<u8", 0), ("bytes", "<u8", 8)]
    _accepted("flows", k, v)
    raw = bytes([10, 0, 0, 1, 192, 168, 1, 2]) + struct.pack(">HHB3x", 40000, 443, 6)
    rec = _view(k, raw)
    assert (int(rec["saddr"]), int(rec["sport"]), int(rec["dport"]), int(rec["proto"])) == \
        (0x0A000001, 40000, 443, 6)
    assert to_python(k, rec) == {"saddr": "10.0.0.1", "daddr": "192.168.1.2", "sport": 40000,
                                 "dport": 443, "proto": 6}
    vrec = _view(v, struct.pack("<QQ", 7, 9000))
    assert to_python(v, vrec) == {"packets": 7, "bytes": 9000}


def test_inner_padding(obj):
    dt = _struct_dt(obj, "host_key")
    assert dt.itemsize == 16
    assert _layout(dt) == [("proto", "|u1", 0), ("ifindex", "<u4", 4), ("cookie", "<u8", 8)]
    rec = _view(dt, struct.pack("<B3xIQ", 17, 3, 2**63 + 5))
    assert (int(rec["proto"]), int(rec["ifindex"]), int(rec["cookie"])) == (17, 3, 2**63 + 5)


def test_arrays(obj):
    k = _dt(obj, "v6", "key")
    assert k.itemsize == 76
    assert _layout(k) == [
        ("saddr_hi", ">u8", 0), ("saddr_lo", ">u8", 8),
        ("daddr_hi", ">u8", 16), ("daddr_lo", ">u8", 24),
        ("weights0", "<u4", 32), ("weights1", "<u4", 36), ("weights2", "<u4", 40),
        ("weights3", "<u4", 44),
        ("mac0", "|u1", 48), ("mac1", "|u1", 49), ("mac2", "|u1", 50), ("mac3", "|u1", 51),
        ("mac4", "|u1", 52), ("mac5", "|u1", 53),
        ("port", ">u2", 54), ("v4addr", ">u4", 56),
        ("name0", "|i1", 60), ("name1", "|i1", 61), ("name2", "|i1", 62), ("name3", "|i1", 63),
        ("ip6_0", "<u2", 64), ("ip6_1", "<u2", 66), ("cookie", ">u8", 68)]
    raw = (ipaddress.IPv6Address("2001:db8::1").packed
           + ipaddress.IPv6Address("::ffff:10.1.2.3").packed
           + struct.pack("<4I", 1, 2, 3, 4) + bytes([0, 0x11, 0x22, 0x33, 0x44, 0x55])
           + struct.pack(">H", 443) + bytes([192, 0, 2, 7]) + b"eth0"
           + struct.pack("<2H", 5, 6) + bytes(range(1, 9)))
    rec = _view(k, raw)
    out = to_python(k, rec)
    assert out["saddr"] == "2001:db8::1"  # the _hi/_lo pair printed as one address
    assert out["daddr"] == "10.1.2.3"     # IPv4-mapped, dotted
    assert [out[f"weights{i}"] for i in range(4)] == [1, 2, 3, 4]
    assert [out[f"mac{i}"] for i in range(6)] == [0, 0x11, 0x22, 0x33, 0x44, 0x55]
    assert out["port"] == 443
    assert out["v4addr"] == "192.0.2.7"
    assert bytes(out[f"name{i}"] for i in range(4)) == b"eth0"
    assert (out["ip6_0"], out["ip6_1"]) == (5, 6)
    assert out["cookie"] == 0x0102030405060708
    # and back: map_json's inverse gives the tuple that rebuilds the same bytes
    back = np.zeros(1, k)
    back[0] = from_python(k, out, "v6")
    assert back.tobytes() == raw


def test_nested_union_anonymous(obj):
    v = _dt(obj, "hosts", "value")
    assert v.itemsize == 72
    assert _layout(v) == [
        ("kind", "|u1", 0), ("at_x", "<u2", 4), ("at_y", "<u4", 8),
        ("path0_x", "<u2", 12), ("path0_y", "<u4", 16), ("path1_x", "<u2", 20),
        ("path1_y", "<u4", 24), ("a", "<u4", 28), ("b", "<u4", 32),
        # the union u: raw naturally aligned words over its 16 bytes at 36
        ("u_0", "<u4", 36), ("u_4", "<u8", 40), ("u_12", "<u4", 48),
        ("anon56_0", "<u8", 56),  # the anonymous union at 56
        ("deep_p_x", "<u2", 64), ("deep_p_y", "<u4", 68)]
    raw = struct.pack("<B3xHxxIHxxIHxxIII", 1, 2, 3, 4, 5, 6, 7, 8, 9) \
        + bytes(range(16)) + struct.pack("<4xQHxxI", 2**64 - 1, 10, 11)
    rec = _view(v, raw)
    assert [int(rec[n]) for n in ("kind", "at_x", "at_y", "path0_x", "path0_y", "path1_x",
                                  "path1_y", "a", "b", "anon56_0", "deep_p_x", "deep_p_y")] \
        == [1, 2, 3, 4, 5, 6, 7, 8, 9, 2**64 - 1, 10, 11]
    assert int(rec["u_0"]) == int.from_bytes(bytes(range(4)), "little")
    assert int(rec["u_4"]) == int.from_bytes(bytes(range(4, 12)), "little")
    _accepted("hosts", _dt(obj, "hosts", "key"), v)


def test_bitfields_enum_bool_pointer_float(obj):
    v = _dt(obj, "v6", "value")
    assert v.itemsize == 64
    assert _layout(v) == [
        ("lo_0", "<u2", 0),   # lo:4, mid:12 -> the 2 bytes they cover
        ("tag", "|u1", 2), ("hi_0", "|u1", 3), ("big", "<i8", 8), ("c", "<u4", 16),
        ("ok", "|b1", 20), ("p_0", "<u8", 24), ("f_0", "<u4", 32), ("delta", "<i2", 36),
        ("wide_0", "<u8", 48), ("wide_8", "<u8", 56)]
    raw = bytearray(64)
    struct.pack_into("<H", raw, 0, 0xA | (0x123 << 4))
    struct.pack_into("<BB", raw, 2, 200, 0b101)
    struct.pack_into("<qIB", raw, 8, -5, 300, 1)
    struct.pack_into("<Qfh", raw, 24, 0xFFFF800000001000, 1.5, -2)
    struct.pack_into("<QQ", raw, 48, 1, 2)
    rec = _view(v, bytes(raw))
    assert int(rec["lo_0"]) & 0xF == 0xA and int(rec["lo_0"]) >> 4 == 0x123
    assert (int(rec["tag"]), int(rec["hi_0"]), int(rec["big"]), int(rec["c"])) == \
        (200, 5, -5, 300)
    assert bool(rec["ok"]) is True and to_python(v, rec)["ok"] is True
    assert int(rec["p_0"]) == 0xFFFF800000001000
    assert int(rec["f_0"]) == struct.unpack("<I", struct.pack("<f", 1.5))[0]
    assert int(rec["delta"]) == -2
    assert (int(rec["wide_0"]), int(rec["wide_8"])) == (1, 2)
    _accepted("v6", _dt(obj, "v6", "key"), v)


def test_scalars_and_top_level_fallbacks(obj):
    assert _dt(obj, "colors", "key") == np.dtype("<u4")        # enum
    assert _dt(obj, "colors", "value") == bytes_dtype(8)        # a union: sizes only
    assert _dt(obj, "ports", "key") == np.dtype(">u2")          # __be16
    assert _dt(obj, "ports", "value") == np.dtype("<i8")        # typedef chain to __s64
    arr = _dt(obj, "addrs", "value")                            # typedef __u8 [16]
    assert _layout(arr) == [("ipv6_addr_t_hi", ">u8", 0), ("ipv6_addr_t_lo", ">u8", 8)]
    rec = _view(arr, ipaddress.IPv6Address("fe80::2").packed)
    assert to_python(arr, rec) == {"ipv6_addr_t": "fe80::2"}
    for name in ("colors", "ports", "addrs"):
        _accepted(name, _dt(obj, name, "key"), _dt(obj, name, "value"))
    be = _view(_dt(obj, "ports", "key"), struct.pack(">H", 8080))
    assert int(be) == 8080


def test_host_offsetof_oracle(obj):
    """The same C compiled for the host: offsetof / sizeof agree."""
    host = obj["dir"] / "host.c"
    lines = [TYPES, "#include <stdio.h>", "#include <stddef.h>", "int main(void) {"]
    for s in SIZES:
        lines.append(f'printf("size {s} %zu\\n", sizeof(struct {s}));')
    for s, member, _ in OFFSETS:
        lines.append(f'printf("off {s} {member} %zu\\n", offsetof(struct {s}, {member}));')
    lines.append("return 0; }")
    host.write_text("\n".join(lines))
    exe = str(obj["dir"] / "host")
    r = subprocess.run([CLANG, "-std=gnu11", *include_flags(), str(host), "-o", exe],
                       check=False, capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot build a host program: {r.stderr.strip()[:200]}")
    got = {}
    for line in _run([exe]).splitlines():
        parts = line.split()
        got[tuple(parts[:-1])] = int(parts[-1])
    for s in SIZES:
        assert _struct_dt(obj, s).itemsize == got[("size", s)], s
    for s, member, field in OFFSETS:
        dt = _struct_dt(obj, s)
        assert dt.fields[field][1] == got[("off", s, member)], (s, member, field)


@pytest.mark.skipif(BPFTOOL is None, reason="bpftool not installed")
def test_bpftool_oracle(obj):
    """Every plain (non-bitfield, integer) member of every struct is a field
    of that name at bpftool's offset."""
    import json
    r = subprocess.run([BPFTOOL, "-j", "btf", "dump", "file", obj["path"]], check=False,
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"bpftool btf dump failed: {r.stderr.strip()}")
    types = {t["id"]: t for t in json.loads(r.stdout)["types"]}
    btf = obj["spec"].btf
    checked = 0
    for t in types.values():
        if t["kind"] != "STRUCT" or t["name"] not in SIZES:
            continue
        dt = _struct_dt(obj, t["name"])
        assert dt.itemsize == t["size"]
        for m in t["members"]:
            real = btf.get(btf.resolve(m["type_id"]))
            if m.get("bitfield_size") or real.kind not in (B.KIND_INT, B.KIND_ENUM) \
                    or real.size == 16:
                continue
            assert dt.fields[m["name"]][1] == m["bits_offset"] // 8, (t["name"], m["name"])
            assert dt.fields[m["name"]][0].itemsize == real.size
            checked += 1
    assert checked >= 15


# -- global data ------------------------------------------------------------
def _symbols(path):
    """{name: value} of the object's symbols (llvm-nm / nm)."""
    out = {}
    for line in _run([NM, path]).splitlines():
        parts = line.split()
        if len(parts) == 3:
            out[parts[2]] = int(parts[0], 16)
    return out


def test_global_data(obj):
    maps = obj["maps"]
    data, rodata, bss = (_dt(obj, n, "value") for n in (".data", ".rodata", ".bss"))
    assert data.itemsize == maps[".data"].value_size
    assert rodata.itemsize == maps[".rodata"].value_size
    assert bss.itemsize == maps[".bss"].value_size
    assert set(data.names) == {"verdict", "totals_packets", "totals_bytes", "banner0",
                               "banner1", "banner2", "banner3", "banner4", "ttl"}
    assert set(rodata.names) == {"match_proto", "limit"}
    assert set(bss.names) == {"packets", "drops"}
    # the C initialisers, read back through the dtype from the section's bytes
    d = to_python(data, _view(data, bytes(maps[".data"].initial)))
    assert (d["verdict"], d["totals_packets"], d["totals_bytes"], d["ttl"]) == (2, 3, 4, 64)
    assert bytes(d[f"banner{i}"] for i in range(5)) == b"hey!\0"
    r = to_python(rodata, _view(rodata, bytes(maps[".rodata"].initial)))
    assert r == {"match_proto": 17, "limit": 1000}
    assert bss.fields["packets"][0] == np.dtype("<u8")
    if NM is not None:
        syms = _symbols(obj["path"])
        for dt, names in ((data, ["verdict", "ttl"]), (rodata, ["match_proto", "limit"]),
                          (bss, ["packets", "drops"])):
            for n in names:
                assert dt.fields[n][1] == syms[n], n
        assert data.fields["totals_packets"][1] == syms["totals"]
        assert data.fields["totals_bytes"][1] == syms["totals"] + 8
        assert data.fields["banner0"][1] == syms["banner"]
    for n, dt in ((".data", data), (".rodata", rodata), (".bss", bss)):
        k, v = map_dtypes(obj["spec"].btf, maps[n])
        assert (k, v) == (np.dtype("<u4"), dt)
        Map(n.strip("."), maps[n].type, key=k, value=v, max_entries=1)
        _accepted(n.strip("."), k, v)


def test_datasec_gaps():
    """Bytes that no variable covers: padding when the initial bytes are
    zero, raw ``gapOFF_N`` fields otherwise (or when unknown)."""
    btf = _synthetic_btf()
    sec = btf.datasec(".data")
    plain = btf_dtype(btf, sec.id, 16, bytes(16))
    assert _layout(plain) == [("a", "|u1", 0), ("b", "<u8", 8)]
    unknown = btf_dtype(btf, sec.id, 16)
    assert _layout(unknown) == [("a", "|u1", 0), ("gap1_0", "|u1", 1), ("gap1_1", "<u2", 2),
                                ("gap1_3", "<u4", 4), ("b", "<u8", 8)]
    init = bytes([1, 0, 0, 0, 9, 0, 0, 0]) + struct.pack("<Q", 5)
    dirty = btf_dtype(btf, sec.id, 16, init)
    assert dirty == unknown
    rec = _view(dirty, init)
    assert (int(rec["a"]), int(rec["gap1_3"]), int(rec["b"])) == (1, 9, 5)


# -- fallbacks ----------------------------------------------------------------
def _synthetic_btf():
    """A hand-made BTF: u8, u64, struct s {u8 a; u64 b;}, a .data DATASEC of
    ``u8 a`` at 0 and ``u64 b`` at 8, and a few odd types."""
    strings = b"\0u8\0u64\0s\0a\0b\0.data\0"
    off = {n: strings.index(b"\0" + n.encode() + b"\0") + 1 for n in
           ("u8", "u64", "s", "a", "b", ".data")}
    types = b""

    def rec(name, kind, vlen, size_or_type, extra=b"", kflag=0):
        return struct.pack("<III", name, (kflag << 31) | (kind << 24) | vlen,
                           size_or_type) + extra
    types += rec(off["u8"], B.KIND_INT, 0, 1, struct.pack("<I", 8))            # [1]
    types += rec(off["u64"], B.KIND_INT, 0, 8, struct.pack("<I", 64))          # [2]
    types += rec(off["s"], B.KIND_STRUCT, 2, 16,
                 struct.pack("<III", off["a"], 1, 0) + struct.pack("<III", off["b"], 2, 64))
    types += rec(off["a"], B.KIND_VAR, 0, 1, struct.pack("<I", 1))             # [4]
    types += rec(off["b"], B.KIND_VAR, 0, 2, struct.pack("<I", 1))             # [5]
    types += rec(off[".data"], B.KIND_DATASEC, 2, 16,
                 struct.pack("<III", 4, 0, 1) + struct.pack("<III", 5, 8, 8))   # [6]
    types += rec(0, B.KIND_PTR, 0, 3)                                           # [7]
    types += rec(0, B.KIND_FLOAT, 0, 4)                                         # [8]
    types += rec(0, B.KIND_TYPEDEF, 0, 9)                                       # [9] loop
    hdr = struct.pack("<HBBIIIII", B.BTF_MAGIC, 1, 0, 24, 0, len(types), len(types),
                      len(strings))
    return B.Btf(hdr + types + strings)


def test_fallbacks():
    btf = _synthetic_btf()
    s = btf.find("s", B.KIND_STRUCT)
    assert _layout(btf_dtype(btf, s, 16)) == [("a", "|u1", 0), ("b", "<u8", 8)]
    assert btf_dtype(btf, s, 24) == bytes_dtype(24)      # size mismatch
    assert btf_dtype(None, s, 16) == bytes_dtype(16)     # no BTF
    assert btf_dtype(btf, None, 16) == bytes_dtype(16)   # no type
    assert btf_dtype(btf, 999, 16) == bytes_dtype(16)    # no such type
    assert btf_dtype(btf, 7, 8) == bytes_dtype(8)        # pointer
    assert btf_dtype(btf, 8, 4) == bytes_dtype(4)        # float
    assert btf_dtype(btf, 9, 4) == bytes_dtype(4)        # typedef loop
    assert btf_dtype(btf, 0, 4) == bytes_dtype(4)        # void
    assert btf_dtype(btf, btf.datasec(".data").id, 32) == bytes_dtype(32)
    # overlapping members / a member past the end / a self-containing struct
    st = btf.get(s)
    orig = st.members
    st.members = (orig[0], orig[1]._replace(bit_offset=0))
    assert btf_dtype(btf, s, 16) == bytes_dtype(16)
    st.members = (orig[0], orig[1]._replace(bit_offset=128))
    assert btf_dtype(btf, s, 16) == bytes_dtype(16)
    st.members = (orig[0], B.Member("self", s, 0))
    assert btf_dtype(btf, s, 16) == bytes_dtype(16)
    st.members = (orig[0], B.Member("p", 7, 64))         # a pointer member: raw
    assert _layout(btf_dtype(btf, s, 16)) == [("a", "|u1", 0), ("p_0", "<u8", 8)]
    st.members = (orig[0], B.Member("loop", 9, 64))      # no size: the whole type
    assert btf_dtype(btf, s, 16) == bytes_dtype(16)
    st.members = orig


def test_odd_btf_never_raises(obj):
    """Random damage to real BTF: always a dtype of the asked size that Map
    accepts."""
    rng = random.Random(1234)
    data = obj["spec"].btf.data
    for _ in range(150):
        btf = B.Btf(data)
        n = len(btf.types)
        for _ in range(rng.randint(1, 6)):
            t = btf.types[rng.randrange(1, n)]
            what = rng.randrange(5)
            if what == 0 and t.members:
                i = rng.randrange(len(t.members))
                mem = list(t.members)
                mem[i] = mem[i]._replace(bit_offset=rng.randrange(0, 1024),
                                         bitfield_size=rng.choice([0, 0, 3]))
                t.members = tuple(mem)
            elif what == 1 and t.members:
                i = rng.randrange(len(t.members))
                mem = list(t.members)
                mem[i] = mem[i]._replace(type=rng.randrange(0, n))
                t.members = tuple(mem)
            elif what == 2 and t.array is not None:
                t.array = t.array._replace(nelems=rng.choice([0, 1, 3, 300, 2**31]))
            elif what == 3 and t.size is not None:
                t.size = rng.choice([0, 1, 3, 16, 4096, 2**32 - 1])
            elif what == 4 and t.type is not None:
                t.type = rng.randrange(0, n)
        for tid in range(n):
            try:
                size = btf.sizeof(tid)
            except (B.BtfError, RecursionError):
                size = 8
            if not 0 < size <= 4096:
                size = rng.choice([4, 13, 64])
            dt = btf_dtype(btf, tid, size)
            assert dt.itemsize == size
            field_list(dt, "value", "x")


# -- whole objects ----------------------------------------------------------
def test_all_maps_accepted(obj):
    spec = obj["spec"]
    for m in spec.maps:
        k, v = map_dtypes(spec.btf, m)
        assert k.itemsize == (m.key_size or 4) and v.itemsize == m.value_size
        _accepted("m", k, v)


def test_v6_round_trip_through_map(obj):
    """A key without padding and a value: update, lookup, items."""
    k, v = _dt(obj, "v6", "key"), _dt(obj, "flows", "value")
    m = Map("v6", 1, key=k, value=v, max_entries=16)
    key = (1, 2, 3, 4, 5, 6, 7, 8, 0, 0x11, 0x22, 0x33, 0x44, 0x55, 443, 0xC0000207,
           ord("e"), ord("t"), ord("h"), ord("0"), 5, 6, 99)
    m.update(key, (10, 20))
    assert m.lookup(key) == {"packets": 10, "bytes": 20}
    [(got_key, got_val)] = list(m.items())
    assert got_key["v4addr"] == "192.0.2.7" and got_val == {"packets": 10, "bytes": 20}


def test_shipped_programs():
    """The maps of programs/bpf/*.o: dtypes Map accepts, with their sizes;
    flow_counter's key is the C twin's FLOW_KEY."""
    objs = sorted(glob.glob(os.path.join(ROOT, "programs", "bpf", "*.o")))
    if not objs:
        pytest.skip("no programs/bpf/*.o")
    plain = {1, 2, 5, 6, 9, 10}  # hash / array kinds Map makes without more arguments
    seen = 0
    for path in objs:
        spec = load_object(path)
        for m in spec.maps:
            k, v = map_dtypes(spec.btf, m)
            if m.type == 27:  # ring buffer: its records are the verifier's
                assert (k, v) == (None, None)
                continue
            assert v.itemsize == m.value_size
            assert k.itemsize == (m.key_size or 4)
            Map("m", m.type if m.type in plain else 1, key=k, value=v,
                max_entries=max(m.max_entries, 1))
            seen += 1
    assert seen
    fc = os.path.join(ROOT, "programs", "bpf", "flow_counter.o")
    if os.path.exists(fc):
        spec = load_object(fc)
        k, v = map_dtypes(spec.btf, spec.maps[spec.map_index("flows")])
        assert k == np.dtype([("saddr_hi", ">u8"), ("saddr_lo", ">u8"), ("daddr_hi", ">u8"),
                              ("daddr_lo", ">u8"), ("sport", ">u2"), ("dport", ">u2"),
                              ("proto", "u1")])
        assert v == np.dtype([("packets", "<u8"), ("bytes", "<u8")])


def test_dict_text_round_trips(obj):
    """A padded record's ``descr`` does not rebuild it (numpy 2 names the gaps
    f1.. as void fields, which Map refuses); the dict form does: the text a
    generated file should use for these dtypes."""
    k = _dt(obj, "flows", "key")
    text = repr({"names": list(k.names), "formats": [k.fields[n][0].str for n in k.names],
                 "offsets": [k.fields[n][1] for n in k.names], "itemsize": k.itemsize})
    assert np.dtype(eval(text)) == k
    assert np.dtype(eval(str(k))) == k
