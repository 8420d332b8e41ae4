"""The Linux kernel as a reference oracle: real eBPF objects run by BPF_PROG_TEST_RUN.

``KernelObject(path)`` loads a clang-built object (``programs/bpf/*.o``) into
the running kernel with ``bpftool prog loadall`` (the kernel verifier checks
every program), pins its programs and maps in a fresh directory under
``/sys/fs/bpf`` and opens them with the bpf() syscall, so that running a
packet is one syscall (ctypes), no process::

    ok, why = kernel_available()
    with KernelObject("programs/bpf/drop_udp.o") as obj:
        retval, out, ns = obj.test_run("drop_udp", frame)     # 1 = XDP_DROP
        obj.map_items("flows")                                # raw key/value bytes

``close()`` (or leaving the ``with``; also at interpreter exit for an object
never closed) closes the descriptors and removes the pin directory, which
unpins everything: the kernel frees the programs and maps with the last
descriptor.

Objects with a legacy ``maps`` section (``struct bpf_map_def``) are refused
by libbpf >= 1.0 and so by bpftool; for those this module loads the object
itself (maps created with BPF_MAP_CREATE, map relocations applied,
BPF_PROG_LOAD) and pins the result the same way.

What the kernel's test run imposes: a frame of at least 14 bytes (an
Ethernet header) and at most about a page minus XDP's 256 bytes of headroom
and the skb_shared_info tailroom; ``test_run`` raises KernelError otherwise.
It needs root (CAP_BPF / CAP_SYS_ADMIN), a mounted bpffs and bpftool
(Debian: ``apt-get install bpftool``).
"""

import collections
import ctypes
import errno
import functools
import itertools
import os
import platform
import shutil
import struct
import subprocess
import weakref
from pathlib import Path

from ..errors import DataplaneError, ProgramError

BPFFS = "/sys/fs/bpf"

# bpf(2) commands (enum bpf_cmd)
BPF_MAP_CREATE = 0
BPF_MAP_LOOKUP_ELEM = 1
BPF_MAP_UPDATE_ELEM = 2
BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5
BPF_OBJ_PIN = 6
BPF_OBJ_GET = 7
BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_LINK_CREATE = 28

BPF_PROG_TYPE_XDP = 6
BPF_PSEUDO_MAP_FD = 1
BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2

#: enum bpf_map_type, for MapInfo.type_name.
MAP_TYPE_NAMES = {
    1: "hash", 2: "array", 3: "prog_array", 4: "perf_event_array", 5: "percpu_hash",
    6: "percpu_array", 7: "stack_trace", 8: "cgroup_array", 9: "lru_hash",
    10: "lru_percpu_hash", 11: "lpm_trie", 12: "array_of_maps", 13: "hash_of_maps",
    14: "devmap", 15: "sockmap", 16: "cpumap", 17: "xskmap", 18: "sockhash",
    22: "queue", 23: "stack", 25: "devmap_hash", 27: "ringbuf",
}
_PERCPU_TYPES = frozenset({5, 6, 10})

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361, "s390x": 351}

#: The extra room test_run gives data_out past the input frame: enough for
#: bpf_xdp_adjust_head to use all of XDP's 256 bytes of headroom.
OUT_SLACK = 256

_LOG_SIZE = 1 << 20


class KernelError(DataplaneError):
    """The kernel (or bpftool) refused something: unavailable, a syscall failed.

    ``errno`` holds the error number where a syscall failed, else None."""

    def __init__(self, message, err=None, hint=None):
        super().__init__(message, hint)
        self.errno = err


class KernelLoadError(KernelError, ProgramError):
    """An object the kernel would not load: the verifier's reject (``log`` holds
    its whole log, or bpftool's output), or an object libbpf cannot read."""

    def __init__(self, message, log="", hint=None):
        super().__init__(message, hint=hint)
        self.log = log


MapInfo = collections.namedtuple("MapInfo", "type key_size value_size max_entries flags id")
MapInfo.type_name = property(lambda self: MAP_TYPE_NAMES.get(self.type, str(self.type)))


# ---------------------------------------------------------------- the bpf() syscall

_libc = None


def _sys_bpf():
    global _libc
    nr = _SYS_BPF.get(platform.machine())
    if nr is None:
        raise KernelError(f"bpf(): no syscall number known for {platform.machine()}")
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return nr


def bpf(cmd, attr):
    """bpf(cmd, attr, len(attr)) on a ctypes buffer ``attr``: the result, or OSError."""
    nr = _sys_bpf()
    while True:
        ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_long(cmd),
                            ctypes.c_void_p(ctypes.addressof(attr)),
                            ctypes.c_long(ctypes.sizeof(attr)))
        if ret >= 0:
            return ret
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))


def _attr(fmt, *values):
    buf = ctypes.create_string_buffer(struct.calcsize(fmt))
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def _addr(buf):
    return ctypes.addressof(buf) if buf is not None else 0


def link_create(prog_fd, target_ifindex, attach_type):
    """BPF_LINK_CREATE: attach ``prog_fd`` to an interface; the link's descriptor
    (the attachment lives as long as it does), or OSError."""
    return bpf(BPF_LINK_CREATE, _attr("=IIII", prog_fd, target_ifindex, attach_type, 0))


def obj_get(path):
    """BPF_OBJ_GET: a new descriptor for the program or map pinned at ``path``."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    return bpf(BPF_OBJ_GET, _attr("=QII", _addr(p), 0, 0))


def obj_pin(fd, path):
    """BPF_OBJ_PIN: pin descriptor ``fd`` at ``path`` (in a bpffs)."""
    p = ctypes.create_string_buffer(os.fsencode(path))
    bpf(BPF_OBJ_PIN, _attr("=QII", _addr(p), fd, 0))


def _info(fd, size):
    info = ctypes.create_string_buffer(size)
    bpf(BPF_OBJ_GET_INFO_BY_FD, _attr("=IIQ", fd, size, _addr(info)))
    return info.raw


def prog_type(fd):
    return struct.unpack_from("=I", _info(fd, 80), 0)[0]


def map_info(fd):
    raw = _info(fd, 40)
    t, id_, k, v, n, flags = struct.unpack_from("=6I", raw, 0)
    return MapInfo(t, k, v, n, flags, id_)


def _test_run_fd(fd, frame, repeat=1):
    """BPF_PROG_TEST_RUN on descriptor ``fd``: (retval, data_out, duration_ns)."""
    data_in = ctypes.create_string_buffer(frame, len(frame))
    data_out = ctypes.create_string_buffer(len(frame) + OUT_SLACK)
    attr = _attr("=IIIIQQIIIIQQIII4x", fd, 0, len(frame), len(data_out), _addr(data_in),
                 _addr(data_out), repeat, 0, 0, 0, 0, 0, 0, 0, 0)
    bpf(BPF_PROG_TEST_RUN, attr)
    retval, _, size_out = struct.unpack_from("=III", attr, 4)
    duration = struct.unpack_from("=I", attr, 36)[0]
    return retval, data_out.raw[:size_out], duration


def prog_load(insns, license_, name="", log_level=0, prog_type=BPF_PROG_TYPE_XDP):
    """BPF_PROG_LOAD (an XDP program unless ``prog_type`` says otherwise); returns
    (fd, None) or (None, (err, log))."""
    code = ctypes.create_string_buffer(bytes(insns), len(insns))
    lic = ctypes.create_string_buffer(license_.encode() + b"\0")
    log = ctypes.create_string_buffer(_LOG_SIZE) if log_level else None
    attr = _attr("=IIQQIIQII16sII", prog_type, len(insns) // 8, _addr(code), _addr(lic),
                 log_level, _LOG_SIZE if log_level else 0, _addr(log), 0, 0,
                 _kernel_name(name), 0, 0)
    try:
        return bpf(BPF_PROG_LOAD, attr), None
    except OSError as e:
        text = log.value.decode(errors="replace") if log is not None else ""
        return None, (e.errno, text)


def _kernel_name(name):
    """An object name the kernel accepts (15 characters of [A-Za-z0-9_.])."""
    return "".join(c if c.isalnum() or c in "_." else "_" for c in name)[:15].encode()


def _close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


# ---------------------------------------------------------------- availability

def find_bpftool():
    """bpftool's path ($PATH, then the sbin directories root's PATH has), or None."""
    path = os.environ.get("PATH", "") + os.pathsep + "/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which("bpftool", path=path)


def _bpffs_mounted(root=BPFFS):
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1:3] == [root, "bpf"] for line in f if len(line.split()) > 2)
    except OSError:
        return False


@functools.cache
def kernel_available():
    """``(True, what)`` when this process can load and test-run XDP programs in
    the kernel: root, bpf() works (a two-instruction program is loaded and run),
    a bpffs is mounted at /sys/fs/bpf, bpftool is installed. Else ``(False, why)``.
    Cached; ``kernel_available.cache_clear()`` checks again."""
    if platform.system() != "Linux":
        return False, f"the kernel oracle needs Linux (this is {platform.system()})"
    if platform.machine() not in _SYS_BPF:
        return False, f"no bpf() syscall number known for {platform.machine()}"
    if os.geteuid() != 0:
        return False, "the kernel oracle needs root (bpf() program loads and bpffs pins)"
    tool = find_bpftool()
    if tool is None:
        return False, "bpftool not found (Debian: apt-get install bpftool)"
    if not _bpffs_mounted():
        return False, f"no bpf filesystem mounted at {BPFFS} (mount -t bpf bpf {BPFFS})"
    # r0 = XDP_PASS; exit
    fd, fail = prog_load(struct.pack("<BBhiBBhi", 0xb7, 0, 0, 2, 0x95, 0, 0, 0), "GPL",
                         "dp_probe")
    if fd is None:
        return False, f"bpf(BPF_PROG_LOAD) failed: {os.strerror(fail[0])}"
    try:
        retval, _, _ = _test_run_fd(fd, bytes(14))
    except OSError as e:
        return False, f"bpf(BPF_PROG_TEST_RUN) failed: {e.strerror}"
    finally:
        os.close(fd)
    if retval != 2:
        return False, f"bpf(BPF_PROG_TEST_RUN) gave {retval} for a program returning 2"
    return True, f"kernel {platform.release()}, {tool}"


# ---------------------------------------------------------------- pin directories

_serial = itertools.count()


def _new_pin_dir(root):
    """Claim a fresh directory ``<root>/dataplane-kernel-<pid>-<n>``."""
    while True:
        d = Path(root) / f"dataplane-kernel-{os.getpid()}-{next(_serial)}"
        try:
            os.mkdir(d, 0o700)
            return d
        except FileExistsError:
            continue


def _remove_tree(d):
    """Unpin everything under ``d`` and remove it (bottom-up; bpffs files unlink)."""
    if not os.path.lexists(d):
        return
    for top, dirs, files in os.walk(d, topdown=False):
        for name in files:
            os.unlink(os.path.join(top, name))
        for name in dirs:
            p = os.path.join(top, name)
            if os.path.islink(p):
                os.unlink(p)
            else:
                os.rmdir(p)
    os.rmdir(d)


def _cleanup(fds, pin_dir):
    _close_all(fds)
    try:
        _remove_tree(pin_dir)
    except OSError:
        pass


def _verifier_reason(text):
    """The verifier's reason in bpftool's output: the last line of the log that is
    not its statistics; or libbpf's / bpftool's first error line."""
    lines = text.splitlines()
    prog = None
    for i, line in enumerate(lines):
        if "-- BEGIN PROG LOAD LOG --" in line:
            prog = line.split("'")[1] if line.count("'") >= 2 else None
            body = []
            for entry in lines[i + 1:]:
                if "-- END PROG LOAD LOG --" in entry:
                    break
                body.append(entry.strip())
            noise = ("processed ", "verification time", "stack depth")
            body = [b for b in body if b and not b.startswith(noise)]
            if body:
                return prog, body[-1]
    for line in lines:
        line = line.strip()
        if line.startswith("libbpf:") and ("failed" in line or "not supported" in line
                                           or "error" in line.lower()):
            return prog, line[len("libbpf:"):].strip()
    for line in lines:
        if line.strip().startswith("Error:"):
            return prog, line.strip()[len("Error:"):].strip()
    last = [line.strip() for line in lines if line.strip()]
    return prog, (last[-1] if last else "no output")


# ---------------------------------------------------------------- KernelObject

class KernelObject:
    """An eBPF object file loaded into the kernel, its programs runnable by name.

    ``programs``: the program names (the C functions); ``maps``: name -> MapInfo
    (the pin names: libbpf's data section maps are ``<obj>_bss`` and so on);
    ``pin_dir``: where they are pinned while the object is open.
    """

    def __init__(self, path, bpffs=BPFFS):
        self.path = Path(path)
        self._fds = []
        self._progs = {}
        self._maps = {}
        self.pin_dir = None
        ok, why = kernel_available()
        if not ok:
            raise KernelError(f"{self.path}: cannot load into the kernel: {why}")
        if not self.path.is_file():
            raise KernelError(f"{self.path}: no such object file")
        self.pin_dir = _new_pin_dir(bpffs)
        self._finalizer = weakref.finalize(self, _cleanup, self._fds, self.pin_dir)
        try:
            if _has_legacy_maps(self.path):
                _LegacyLoader(self.path).load_and_pin(self.pin_dir)
            else:
                self._bpftool_loadall()
            self._open_pins()
        except BaseException:
            self.close()
            raise

    # -- loading
    def _bpftool_loadall(self):
        cmd = [find_bpftool(), "prog", "loadall", str(self.path), str(self.pin_dir),
               "pinmaps", str(self.pin_dir / "maps")]
        try:
            r = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            raise KernelLoadError(f"{self.path}: bpftool prog loadall timed out") from None
        if r.returncode != 0:
            out = r.stderr + r.stdout
            prog, reason = _verifier_reason(out)
            if prog:
                msg = f"the kernel refused program '{prog}': {reason}"
            else:
                msg = f"bpftool prog loadall failed: {reason}"
            raise KernelLoadError(f"{self.path}: {msg}", log=out)

    def _open_pins(self):
        for entry in sorted(os.scandir(self.pin_dir), key=lambda e: e.name):
            if entry.is_dir(follow_symlinks=False):
                continue
            fd = obj_get(entry.path)
            self._fds.append(fd)
            self._progs[entry.name] = fd
        maps_dir = self.pin_dir / "maps"
        if maps_dir.is_dir():
            for entry in sorted(os.scandir(maps_dir), key=lambda e: e.name):
                fd = obj_get(entry.path)
                self._fds.append(fd)
                self._maps[entry.name] = (fd, map_info(fd))
        if not self._progs:
            raise KernelLoadError(f"{self.path}: no program in the object")

    # -- the API
    @property
    def programs(self):
        return list(self._progs)

    @property
    def maps(self):
        return {name: info for name, (_, info) in self._maps.items()}

    @property
    def closed(self):
        return not self._finalizer.alive if self.pin_dir is not None else True

    def program_fd(self, name=None):
        self._check_open()
        if name is None and len(self._progs) == 1:
            return next(iter(self._progs.values()))
        try:
            return self._progs[name]
        except KeyError:
            raise KernelError(f"{self.path}: no program {name!r} "
                              f"(programs: {', '.join(self._progs)})") from None

    def test_run(self, name, frame, repeat=1):
        """Run ``frame`` through program ``name`` (None: the only one) with
        BPF_PROG_TEST_RUN: ``(retval, data_out, duration_ns)``; the duration
        is the kernel's mean per run over ``repeat`` runs."""
        fd = self.program_fd(name)
        if name is None:
            name = next(iter(self._progs))
        frame = bytes(frame)
        try:
            return _test_run_fd(fd, frame, max(1, int(repeat)))
        except OSError as e:
            hint = None
            if e.errno == errno.EINVAL and len(frame) < 14:
                hint = "the kernel runs frames of 14 bytes (an Ethernet header) or more"
            what = f"; {hint}" if hint else ""
            raise KernelError(f"{self.path}: test run of '{name}' on a {len(frame)}-byte "
                              f"frame failed: {e.strerror}{what}", e.errno, hint) from None

    def _map(self, name):
        self._check_open()
        m = self._maps.get(name) or self._maps.get(name.replace(".", "_"))
        if m is None:
            raise KernelError(f"{self.path}: no map {name!r} (maps: {', '.join(self._maps)})")
        return m

    @staticmethod
    def _value_size(info):
        if info.type in _PERCPU_TYPES:
            return ((info.value_size + 7) // 8 * 8) * _possible_cpus()
        return info.value_size

    def map_lookup(self, name, key):
        """The value bytes at ``key`` (bytes) in map ``name``, or None."""
        fd, info = self._map(name)
        k = _sized(key, info.key_size, "key", name)
        v = ctypes.create_string_buffer(self._value_size(info))
        try:
            bpf(BPF_MAP_LOOKUP_ELEM, _attr("=I4xQQQ", fd, _addr(k), _addr(v), 0))
        except OSError as e:
            if e.errno == errno.ENOENT:
                return None
            raise KernelError(f"map '{name}': lookup failed: {e.strerror}", e.errno) from None
        return v.raw

    def map_update(self, name, key, value, flags=BPF_ANY):
        """Write ``value`` (bytes) at ``key`` (bytes) in map ``name``."""
        fd, info = self._map(name)
        k = _sized(key, info.key_size, "key", name)
        v = _sized(value, self._value_size(info), "value", name)
        try:
            bpf(BPF_MAP_UPDATE_ELEM, _attr("=I4xQQQ", fd, _addr(k), _addr(v), flags))
        except OSError as e:
            raise KernelError(f"map '{name}': update failed: {e.strerror}", e.errno) from None

    def ring_read(self, name):
        """Drain ring buffer ``name`` as a libbpf consumer does: the data of each
        submitted record (bytes), oldest first; a discarded one is skipped, a
        busy one (reserved, not submitted) ends the read."""
        import mmap
        from ..maps import BPF_RINGBUF_BUSY_BIT as BUSY, BPF_RINGBUF_DISCARD_BIT as DISCARD
        fd, info = self._map(name)
        size, page = info.max_entries, mmap.PAGESIZE
        # the consumer's page (read-write), then the producer's page and the
        # data pages, mapped twice so that a record across the end reads whole
        with mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as cp, \
                mmap.mmap(fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ,
                          offset=page) as pp:
            cons, prod = struct.unpack_from("=Q", cp)[0], struct.unpack_from("=Q", pp)[0]
            out = []
            while cons < prod:
                at = page + (cons & (size - 1))
                length = struct.unpack_from("=I", pp, at)[0]
                if length & BUSY:
                    break
                n = length & ~(BUSY | DISCARD)
                if not length & DISCARD:
                    out.append(bytes(pp[at + 8:at + 8 + n]))
                cons += (n + 8 + 7) // 8 * 8
            struct.pack_into("=Q", cp, 0, cons)
        return out

    def map_delete(self, name, key):
        fd, info = self._map(name)
        k = _sized(key, info.key_size, "key", name)
        try:
            bpf(BPF_MAP_DELETE_ELEM, _attr("=I4xQQQ", fd, _addr(k), 0, 0))
        except OSError as e:
            raise KernelError(f"map '{name}': delete failed: {e.strerror}", e.errno) from None

    def map_keys(self, name):
        """Every key of map ``name`` (bytes), in the kernel's iteration order."""
        fd, info = self._map(name)
        keys = []
        prev = None
        nxt = ctypes.create_string_buffer(info.key_size)
        while True:
            try:
                bpf(BPF_MAP_GET_NEXT_KEY, _attr("=I4xQQQ", fd, _addr(prev), _addr(nxt), 0))
            except OSError as e:
                if e.errno == errno.ENOENT:
                    return keys
                raise KernelError(f"map '{name}': iteration failed: {e.strerror}",
                                  e.errno) from None
            keys.append(nxt.raw)
            prev = ctypes.create_string_buffer(nxt.raw, info.key_size)

    def map_items(self, name):
        """``[(key, value)]`` bytes of every entry of map ``name`` (values of
        per-CPU maps: one slot of round_up(value_size, 8) bytes per possible CPU)."""
        out = []
        for k in self.map_keys(name):
            v = self.map_lookup(name, k)
            if v is not None:
                out.append((k, v))
        return out

    def close(self):
        """Close every descriptor and unpin (remove the pin directory). Idempotent."""
        if self.pin_dir is not None:
            self._finalizer()
        self._progs.clear()
        self._maps.clear()

    def _check_open(self):
        if self.closed:
            raise KernelError(f"{self.path}: the kernel object is closed")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self.closed else f"pinned at {self.pin_dir}"
        return f"KernelObject({str(self.path)!r}, programs={self.programs}, {state})"


def _sized(data, size, what, name):
    """``data`` (bytes) in a ctypes buffer of exactly ``size`` bytes, or KernelError;
    None for no bytes (a queue's or a stack's key: the syscall wants NULL)."""
    data = bytes(data)
    if len(data) != size:
        raise KernelError(f"map '{name}': a {what} is {size} bytes, not {len(data)}")
    return ctypes.create_string_buffer(data, size) if size else None


@functools.cache
def _possible_cpus():
    try:
        text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    except OSError:
        return os.cpu_count() or 1
    n = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        n += (int(hi) if hi else int(lo)) - int(lo) + 1
    return n


# ---------------------------------------------------------------- legacy "maps" objects

def _has_legacy_maps(path):
    """Whether the ELF object has a section named ``maps`` (struct bpf_map_def)."""
    try:
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile
    except ImportError:  # pragma: no cover - pyelftools is a dependency
        return False
    try:
        with open(path, "rb") as f:
            return ELFFile(f).get_section_by_name("maps") is not None
    except (ELFError, OSError, ValueError, struct.error):
        return False   # not an ELF file we can read: let bpftool say what is wrong


class _LegacyLoader:
    """Load an object whose maps are ``struct bpf_map_def`` in SEC("maps").

    What it supports is what such objects use: XDP programs (sections ``xdp``
    and ``xdp/...``), one or more functions per section, map references
    (R_BPF_64_64 against a map symbol). Anything else (bpf-to-bpf calls, global
    data, other program types) is refused with a KernelLoadError."""

    def __init__(self, path):
        from elftools.elf.elffile import ELFFile
        from elftools.elf.relocation import RelocationSection

        self.path = path
        with open(path, "rb") as f:
            elf = ELFFile(f)
            self.sections = [(s.name, s["sh_flags"], s["sh_type"], s.data()
                              if s["sh_type"] != "SHT_NOBITS" else b"")
                             for s in elf.iter_sections()]
            symtab = elf.get_section_by_name(".symtab")
            if symtab is None:
                raise KernelLoadError(f"{path}: no symbol table")
            self.symbols = [(s.name, s["st_shndx"], s["st_value"], s["st_size"],
                             s["st_info"]["type"]) for s in symtab.iter_symbols()]
            self.relocs = {}
            for s in elf.iter_sections():
                if isinstance(s, RelocationSection):
                    self.relocs[s["sh_info"]] = [(r["r_offset"], r["r_info_sym"],
                                                  r["r_info_type"]) for r in s.iter_relocations()]
        self.maps_index = next(i for i, s in enumerate(self.sections) if s[0] == "maps")
        lic = next((s[3] for s in self.sections if s[0] == "license"), b"")
        self.license = lic.split(b"\0")[0].decode() or "GPL"

    def _fail(self, why, log=""):
        raise KernelLoadError(f"{self.path}: {why}", log=log)

    def _create_maps(self, fds):
        data = self.sections[self.maps_index][3]
        maps = {}
        for i, (name, shndx, value, size, typ) in enumerate(self.symbols):
            if shndx != self.maps_index or typ == "STT_SECTION" or not name:
                continue
            raw = data[value:value + max(size, 16)]
            fields = struct.unpack_from(f"<{min(len(raw), 20) // 4}I", raw)
            mtype, key_size, value_size, max_entries = fields[:4]
            flags = fields[4] if len(fields) > 4 else 0
            attr = _attr("=7I16s", mtype, key_size, value_size, max_entries, flags, 0, 0,
                         _kernel_name(name))
            try:
                fd = bpf(BPF_MAP_CREATE, attr)
            except OSError as e:
                self._fail(f"map '{name}': BPF_MAP_CREATE failed: {e.strerror}")
            fds.append(fd)
            maps[i] = (name, fd)
        return maps

    def load_and_pin(self, pin_dir):
        fds = []
        try:
            maps = self._create_maps(fds)
            progs = []
            for idx, (sec, flags, _typ, code) in enumerate(self.sections):
                if not flags & 0x4 or not code:       # SHF_EXECINSTR with code
                    continue
                if sec == ".text":
                    self._fail("bpf-to-bpf calls (.text) are not supported with legacy maps")
                if sec != "xdp" and not sec.startswith(("xdp/", "xdp.")):
                    self._fail(f"section '{sec}': only XDP programs are supported")
                funcs = sorted((v, s, n) for n, sh, v, s, t in self.symbols
                               if sh == idx and t == "STT_FUNC")
                for start, size, name in funcs:
                    insns = bytearray(code[start:start + (size or len(code) - start)])
                    for off, sym, rtype in self.relocs.get(idx, ()):
                        if not start <= off < start + len(insns):
                            continue
                        if rtype != 1 or sym not in maps:     # R_BPF_64_64 to a map
                            what = self.symbols[sym][0] or f"symbol {sym}"
                            self._fail(f"program '{name}': relocation against '{what}' is "
                                       "not supported with legacy maps")
                        at = off - start
                        if insns[at] != 0x18:
                            self._fail(f"program '{name}': map relocation not on an lddw")
                        insns[at + 1] = (insns[at + 1] & 0x0F) | (BPF_PSEUDO_MAP_FD << 4)
                        struct.pack_into("<i", insns, at + 4, maps[sym][1])
                    fd, fail = prog_load(insns, self.license, name)
                    if fd is None:
                        fd, again = prog_load(insns, self.license, name, log_level=1)
                        if fd is not None:   # refused once, accepted with a log: odd, fine
                            fds.append(fd)
                            progs.append((name, fd))
                            continue
                        log = again[1]
                        body = [x for x in log.splitlines() if x.strip()
                                and not x.startswith(("processed ", "verification time"))]
                        reason = body[-1] if body else os.strerror(fail[0])
                        self._fail(f"the kernel refused program '{name}': {reason}", log)
                    fds.append(fd)
                    progs.append((name, fd))
            for name, fd in progs:
                obj_pin(fd, os.path.join(pin_dir, name))
            if maps:
                os.mkdir(os.path.join(pin_dir, "maps"), 0o700)
                for name, fd in maps.values():
                    obj_pin(fd, os.path.join(pin_dir, "maps", name))
        finally:
            _close_all(fds)
