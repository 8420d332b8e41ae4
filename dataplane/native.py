"""The native code cache: compiled kernels as shared objects, loaded with dlopen.

numba needs ~0.45 s before it runs anything, even from its own cache (import,
then the first dispatch's registry set-up): more than tcpdump's whole run on a
1M-packet capture. So a kernel is compiled by numba once, as a C-ABI ``cfunc``;
its optimised LLVM module is emitted as position-independent object code and
linked into a shared object in the cache directory; every later process loads
it with ctypes (~1 ms) without importing numba. This is the project's analogue
of the kernel keeping a JITed program image.

The object references a few numba runtime helpers on its error paths
(``numba_do_raise``, ``NRT_Free``, ...). They are not exported by numba's
extension modules, and the kernels never reach them (programs' exceptions are
caught per packet inside the loop), so inert stubs satisfy the linker (compiled
once per machine folder, ``_stubs_object``).

Without a C compiler the cache is unavailable and kernels run through numba's
JIT (same results, slower start).
"""

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from . import config
from .kernels.worker_state import WORKER_GLOBALS

_STUBS_C = r"""
#include <stdlib.h>
/* numba runtime helpers referenced on error paths that these kernels never take */
void NRT_Free(void *p) { free(p); }
void NRT_MemInfo_call_dtor(void *mi) { (void)mi; }
int numba_gil_ensure(void *s) { (void)s; return 0; }
void numba_gil_release(void *s) { (void)s; }
int numba_do_raise(void *e) { (void)e; return 0; }
void *numba_unpickle(const char *d, int n, const char *h) { (void)d; (void)n; (void)h; return 0; }
void *numba_runtime_build_excinfo_struct(void *a, void *b) { (void)a; (void)b; return 0; }
"""


class NativeUnavailable(Exception):
    """No C compiler/linker: kernels fall back to numba's JIT."""


@functools.lru_cache(maxsize=1)
def compiler():
    """The C compiler used to link shared objects, or None."""
    if os.environ.get("DATAPLANE_NO_NATIVE"):
        return None
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


@functools.lru_cache(maxsize=1)
def host_cpu():
    """The first CPU's fields in /proc/cpuinfo ({} where it cannot be read)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                name, _, value = line.partition(":")
                fields[name.strip()] = value.strip()
    except OSError:
        pass
    return fields


@functools.lru_cache(maxsize=1)
def machine_key():
    """What the machine code depends on: CPU features, architecture, Python."""
    cpu = host_cpu()
    h = hashlib.sha256(f"{platform.machine()} {sys.version_info[:2]} "
                       f"{config.CPU_NAME} {config.CPU_FEATURES}".encode())
    for field in ("flags", "model name", "Features"):
        h.update(f"{field}: {cpu.get(field, '')}\n".encode())
    return h.hexdigest()[:12]


def cache_dir():
    """Where shared objects live: one folder per machine key."""
    return Path(config.CACHE_DIR) / "native" / machine_key()


def shared_object_path(key):
    return cache_dir() / f"{key}.so"


#: A per-worker global's definition in numba's IR (kernels/budget.py worker_global).
_WORKER_GLOBAL = re.compile(r'^(@"?(dataplane_\w+)"?) = linkonce_odr [\w ]*global i64 [^\n]*$',
                            re.M)


def _thread_local(llvm_ir):
    """Make the module's per-worker globals references to the thread-local ones
    of the worker-state library: each thread running a loop (workers.py) then
    has its own loop budget, tail-call state, random state and worker number.
    The initial-exec model makes an access one %fs-relative load; one library
    holds them all, so the static TLS a dlopen may take stays 64 bytes."""
    def sub(m):
        if m.group(2) not in WORKER_GLOBALS:
            return m.group(0)
        return f"{m.group(1)} = external thread_local(initialexec) global i64"
    return _WORKER_GLOBAL.sub(sub, llvm_ir)


@functools.lru_cache(maxsize=1)
def worker_state_library():
    """Build (once per machine and table) and load, RTLD_GLOBAL, the library
    defining the per-worker globals (kernels/worker_state.py) thread-local."""
    return ctypes.CDLL(str(_worker_state_path()), mode=ctypes.RTLD_GLOBAL)


def _worker_state_path():
    _wait_prepared()
    return _build_worker_state()


def _build_worker_state():
    src = "".join(f'__attribute__((tls_model("initial-exec"))) __thread long long {name} = '
                  f"(long long){value:#x}ULL;\n" for name, value in WORKER_GLOBALS.items())
    key = hashlib.sha256(src.encode()).hexdigest()[:16]
    path = cache_dir() / f"worker-state-{key}.so"
    if not path.exists():
        _link(path, {".c": src})
    return path


_prepare_lock = threading.Lock()
_prepare_thread = None


def prepare():
    """Start compiling, on a thread, what every kernel's link needs (the stubs
    and the worker-state library) when the cache lacks them: on a cold cache
    the C compiler's 65 ms then overlap numba's typing of the first kernel
    instead of following it."""
    global _prepare_thread
    if compiler() is None:
        return
    with _prepare_lock:
        if _prepare_thread is None:
            _prepare_thread = threading.Thread(target=_prepare_parts,
                                               name="dataplane-native-prepare", daemon=True)
            _prepare_thread.start()


def _prepare_parts():
    try:
        _build_stubs()
        _build_worker_state()
    except (OSError, NativeUnavailable):
        pass  # the build that needs them tries again and reports it


def _wait_prepared():
    # (in a forked child the parent's thread is not alive: join returns at once)
    if _prepare_thread is not None:
        _prepare_thread.join()


def _link(path, inputs, objects=(), flags=("-shared",)):
    """Write ``inputs`` {suffix: text or bytes} to temporary files and build them,
    with the ``objects`` already built, with the C compiler into ``path``
    (``flags``: a shared object), replaced whole (another process may be
    building the same one)."""
    cc = compiler()
    if cc is None:
        raise NativeUnavailable("no C compiler")
    path.parent.mkdir(parents=True, exist_ok=True)
    files = {s: private_name(path, s) for s in inputs}
    out = private_name(path, ".tmp")
    try:
        for s, data in inputs.items():
            (files[s].write_bytes if isinstance(data, bytes) else files[s].write_text)(data)
        r = subprocess.run([cc, *flags, "-fPIC", "-O2", "-o", str(out),
                            *map(str, files.values()), *map(str, objects)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise NativeUnavailable(f"{cc} failed: {r.stderr.strip()[:300]}")
        os.replace(out, path)
    finally:
        for f in (*files.values(), out):
            if f.exists():
                f.unlink()


def _stubs_object():
    """The runtime stubs compiled once per machine (an object file in the cache):
    compiling them again for every kernel cost ~35 ms of its ~60 ms link."""
    _wait_prepared()
    return _build_stubs()


def _build_stubs():
    key = hashlib.sha256(_STUBS_C.encode()).hexdigest()[:16]
    path = cache_dir() / f"stubs-{key}.o"
    if not path.exists():
        _link(path, {".c": _STUBS_C}, flags=("-c",))
    return path


def private_name(path, suffix):
    """``path`` with ``.PID.suffix`` added: a temporary file no other process
    writes (with_suffix would have replaced the pid rather than added to it)."""
    return path.with_name(f"{path.name}.{os.getpid()}{suffix}")


def write_atomically(path, text):
    """Write ``path`` whole or not at all (another process may read it meanwhile)."""
    tmp = private_name(path, ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load(path, symbol, nargs, returns_int):
    """A ctypes function for ``symbol`` in the shared object at ``path``."""
    worker_state_library()  # the thread-local globals its code refers to
    lib = ctypes.CDLL(str(path))
    proto = ctypes.CFUNCTYPE(ctypes.c_int64 if returns_int else None,
                             *([ctypes.c_int64] * nargs))
    return proto((symbol, lib))


def from_address(addr, nargs, returns_int):
    """A ctypes function for machine code already in memory (numba's JIT)."""
    proto = ctypes.CFUNCTYPE(ctypes.c_int64 if returns_int else None,
                             *([ctypes.c_int64] * nargs))
    return proto(addr)


def _inline_all(ll, module, tm, entry):
    """Inline every function of the module into ``entry`` and optimise again.

    numba gives each compiled function ODR linkage and leaves inlining to LLVM's
    size threshold, so a program's per-packet path stayed a chain of calls
    (runner -> program -> its helpers -> map kernels), each passing tuples
    through memory and checking a status word, and the out-of-order core could
    not overlap one packet's cache misses with the next one's. Internal and
    always-inline, the whole path becomes the loop body: flow_counter went from
    112 to 42 ns/pkt on the 1M-packet capture, drop_udp from 15.0 to 13.1."""
    for fn in module.functions:
        if not fn.is_declaration and fn.name != entry:
            fn.linkage = "internal"
            if "noinline" not in str(list(fn.attributes)):
                fn.add_function_attribute("alwaysinline")
    pb = ll.create_pass_builder(tm, ll.PipelineTuningOptions(speed_level=3))
    pb.getModulePassManager().run(module, pb)


def build(cfunc, path):
    """Emit ``cfunc``'s module as PIC object code and link it into ``path``."""
    if compiler() is None:
        raise NativeUnavailable("no C compiler")
    import llvmlite.binding as ll

    module = ll.parse_assembly(_thread_local(cfunc._library.get_llvm_str()))
    module.verify()
    if config.CPU_NAME:
        cpu, features = config.CPU_NAME, config.CPU_FEATURES
    else:
        cpu, features = ll.get_host_cpu_name(), ll.get_host_cpu_features().flatten()
    tm = ll.Target.from_default_triple().create_target_machine(
        cpu=cpu, features=features,
        opt=3, reloc="pic", codemodel="default")
    _inline_all(ll, module, tm, cfunc.native_name)
    # temporary names of this process only: Dask workers build the same kernel at once
    _link(path, {".o": tm.emit_object(module)}, objects=[_stubs_object()])
