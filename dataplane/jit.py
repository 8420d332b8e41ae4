"""Kernels: numba-compiled functions that do not need numba at run time.

``@kernel(**opts)`` marks a function written for numba's nopython mode. It is
compiled lazily, in one of two roles:
- called from another compiled function (a program, a loop): it is a numba
  dispatcher there, inlined by LLVM;
- called from Python: through a native entry point (native.py), a C-ABI
  wrapper whose shared object is cached on disk, so a later process calls the
  machine code through ctypes without importing numba.

Kernel modules stay importable without numba: numba objects they use
(intrinsics, types) are named with ``lazy("module", "name")`` and resolved only
when something is compiled. A native entry is keyed by a hash of every file of
dataplane's compiled core, the kernel's own file and its argument types, so a
cached shared object is never stale.
"""

import contextlib
import functools
import hashlib
import threading
import time
import types as pytypes
import weakref
from pathlib import Path

import numpy as np

from . import lazy_codegen, native

_PACKAGE = Path(__file__).resolve().parent


class LazyRef:
    """A numba object (intrinsic, type) imported only when compiling."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def resolve(self):
        import importlib
        return getattr(importlib.import_module(self.module), self.name)


def lazy(module, name):
    """Refer to ``module.name`` without importing it until a compile needs it."""
    return LazyRef(module, name)


@functools.lru_cache(maxsize=1)
def core_hash():
    """Hash of the files whose code can end up in compiled kernels: every module
    of the package but the command line (program checking and transforming,
    map layouts and key packing, helpers, kernels)."""
    h = hashlib.sha256()
    files = sorted(p for p in _PACKAGE.rglob("*.py") if "cli" not in p.parts)
    for p in files:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    # numba's and llvmlite's versions, from their dist-info folders' names:
    # importlib.metadata costs ~25 ms and importing them ~0.2 s.
    import importlib.util
    for dist in ("numba", "llvmlite"):
        spec = importlib.util.find_spec(dist)
        if spec and spec.origin:
            site = Path(spec.origin).parent.parent
            h.update(" ".join(sorted(p.name for p in site.glob(f"{dist}-*.dist-info"))).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _file_hash(filename):
    try:
        return hashlib.sha256(Path(filename).read_bytes()).hexdigest()
    except OSError:
        return "nofile"


def materialize(namespace, names=None):
    """Replace kernels and lazy references in ``namespace`` by numba objects.

    Only ``names`` when given (a function's ``co_names``): materializing a kernel
    fixes its own namespace, so kernels nobody calls are left alone.
    """
    for k in list(namespace if names is None else names):
        v = namespace.get(k)
        if isinstance(v, Kernel):
            namespace[k] = v.dispatcher
        elif isinstance(v, LazyRef):
            namespace[k] = v.resolve()


_addresses = {}

#: One build at a time in a process: numba's compiler and the shared object's
#: temporary files (named by process id) are not for two threads at once.
_build_lock = threading.RLock()

#: Nanoseconds spent building native code in this process (a run's timing
#: leaves it out and reports it apart: it is paid once per program version).
build_ns = 0


def address(a):
    """Data pointer of a numpy array (cached by identity: a lookup costs ~1 us).
    The cache holds weak references: it must not keep a batch alive."""
    e = _addresses.get(id(a))
    if e is not None and e[0]() is a:
        return e[1]
    if not a.flags.c_contiguous:
        raise ValueError("kernel arguments must be C-contiguous arrays")
    if len(_addresses) > 512:
        _addresses.clear()
    p = a.ctypes.data
    _addresses[id(a)] = (weakref.ref(a), p)
    return p


def kind_of(a):
    """What a kernel's native entry is compiled for, of argument ``a``: an
    array's dtype and dimensions, "f" or "i" for a scalar."""
    if isinstance(a, np.ndarray):  # (a record's dtype.str is only its size: '|V24')
        return (a.dtype.str if a.dtype.names is None else str(a.dtype), a.ndim)
    if isinstance(a, (float, np.floating)):
        return "f"
    return "i"


def plain_dispatcher(fn, opts):
    """``njit(**opts)(fn)``, typed on its arguments' plain types (int64, not
    Literal[int](7)) when compiled code calls it: for programs' own functions.
    numba otherwise compiles one specialization per distinct constant a call
    passes, each a whole type inference, lowering and CPython wrapper (cold,
    l4lb compiled its verdict() 14 times and bump() 17); LLVM inlines them and
    sees the constants all the same. A function that types only with a literal
    still gets that one. Kernels keep numba's way: some are written for a
    constant argument (parse._store_be's size picks one of three stores, and
    its branches fold away only for a constant; when it was a byte loop,
    compiled for any size it stayed a loop: l4lb +75 instructions a packet)."""
    from numba import njit
    from numba.core import errors, types

    dispatcher = njit(**opts)(fn)
    literal = type(dispatcher).get_call_template

    def get_call_template(args, kws):
        plain = tuple(types.unliteral(a) for a in args)
        plain_kws = {k: types.unliteral(v) for k, v in kws.items()}
        if plain != tuple(args) or plain_kws != kws:
            try:
                return literal(dispatcher, plain, plain_kws)
            except errors.TypingError:
                pass
        return literal(dispatcher, args, kws)

    dispatcher.get_call_template = get_call_template
    return dispatcher


class Kernel:
    """A compiled function: a numba dispatcher inside compiled code, a cached
    native entry point when called from Python."""

    __dataplane_api__ = False

    def __init__(self, fn, opts):
        self.py_func = fn
        self.opts = opts
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self.__module__ = fn.__module__
        self._dispatcher = None
        self._entries = {}

    def __repr__(self):
        return f"<kernel {self.__module__}.{self.__name__}>"

    @property
    def dispatcher(self):
        """The numba dispatcher, for compiled code to call (compiles nothing until
        then). Python calls the kernel itself: the dispatcher has no CPython
        wrapper (config._NO_WRAPPERS)."""
        if self._dispatcher is None:
            from numba import njit
            fn = self.py_func
            namespace = dict(fn.__globals__)
            copy = pytypes.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__,
                                        fn.__closure__)
            copy.__qualname__, copy.__doc__ = fn.__qualname__, fn.__doc__
            copy.__module__ = fn.__module__
            self._dispatcher = njit(**self.opts)(copy)
            # numba resolves globals when it compiles, so kernels that name each
            # other (or themselves) can be swapped in after the dispatcher exists.
            materialize(namespace, fn.__code__.co_names)
        return self._dispatcher

    def __call__(self, *args):
        # One pass builds the C-ABI arguments (an array is its pointer and shape)
        # and the key of the entry point; this runs per batch, so keep it lean.
        flat, key = [], []
        for a in args:
            if a.__class__ is np.ndarray:
                flat.append(address(a))
                flat += a.shape
                c = a.dtype.char  # a record's is 'V' whatever its fields: the dtype then
                key.append(c if c != "V" else a.dtype)
                key.append(a.ndim)
            else:
                flat.append(a)
                key.append(isinstance(a, float))
        entry = self._entries.get(tuple(key))
        if entry is None:
            entry = self._entries[tuple(key)] = self.entry(tuple(kind_of(a) for a in args), args)
        return entry(*flat)

    def _paths(self, kinds, block=False):
        key = hashlib.sha256(repr((core_hash(), _file_hash(self.py_func.__code__.co_filename),
                                   self.__module__, self.py_func.__qualname__,
                                   kinds, block)).encode()).hexdigest()[:24]
        path = native.shared_object_path(f"{self.__module__.rsplit('.', 1)[-1]}."
                                         f"{self.__name__}-{key}")
        return path, path.with_suffix(".sym")

    def is_cached(self, kinds, block=False):
        """True when native code for these argument kinds is on disk."""
        return all(p.exists() for p in self._paths(kinds, block))

    def entry(self, kinds, args, block=False):
        """The native entry for these argument kinds (built on a cache miss).

        It takes the C-ABI arguments: an array as its pointer and shape, a
        scalar as itself. With ``block``, it takes one pointer to an int64
        array holding those arguments instead (integer scalars only): a ctypes
        call costs ~150 ns per argument, so a caller that repeats most of them
        writes them once and passes the block.
        """
        global build_ns
        path, meta = self._paths(kinds, block)
        with _build_lock:  # worker threads may reach a kernel first at the same time
            if path.exists() and meta.exists():
                symbol, nargs, returns = meta.read_text().split()
                fn = native.load(path, symbol, int(nargs), returns == "int")
            else:
                t0 = time.perf_counter_ns()
                fn = self._build(kinds, args, path, meta, block)
                build_ns += time.perf_counter_ns() - t0
        if not block:
            self._entries[kinds] = fn
        return fn

    def _build(self, kinds, args, path, meta, block):
        native.prepare()  # the C parts of the link, meanwhile
        from numba import cfunc, types
        from numba.core.typing.typeof import typeof

        disp = self.dispatcher
        argtypes = tuple(typeof(a.astype(a.dtype, copy=False)) if isinstance(a, np.ndarray)
                         else (types.float64 if k == "f" else types.int64)
                         for a, k in zip(args, kinds))
        native_only = native.compiler() is not None
        building = functools.partial(
            _native_build, self.py_func.__globals__.get("__dataplane_trusted__", False)) \
            if native_only else contextlib.nullcontext
        with building():
            disp.compile(argtypes)
        ret = disp.overloads[argtypes].signature.return_type
        returns_int = not isinstance(ret, types.NoneType)
        from numba import carray
        ns = {"carray": carray, "kernel": disp, "as_pointer": lazy(
            "dataplane.kernels.memory", "as_pointer").resolve()}
        params, prelude, call, ctypes_ = [], [], [], []
        slot = 0  # block ABI: next int64 of the block
        for i, (k, t) in enumerate(zip(kinds, argtypes)):
            if isinstance(k, tuple) and block:
                # (a record's dtype string has lost its fields: the dtype itself)
                ns[f"dtype{i}"] = args[i].dtype if args[i].dtype.names else np.dtype(k[0]).type
                dims = [f"blk[{slot + 1 + d}]" for d in range(k[1])]
                prelude.append(f"a{i} = carray(as_pointer(blk[{slot}], dtype{i}), "
                               f"({', '.join(dims)},))")
                call.append(f"a{i}")
                slot += 1 + k[1]
            elif isinstance(k, tuple):
                dims = [f"s{i}_{d}" for d in range(k[1])]
                params += [f"p{i}"] + dims
                ctypes_ += [types.CPointer(t.dtype)] + [types.int64] * len(dims)
                prelude.append(f"a{i} = carray(p{i}, ({', '.join(dims)},))")
                call.append(f"a{i}")
            elif block:
                call.append(f"blk[{slot}]")
                slot += 1
            else:
                params.append(f"x{i}")
                ctypes_.append(t)
                call.append(f"x{i}")
        if block:
            params, ctypes_ = ["blkp"], [types.CPointer(types.int64)]
            prelude.insert(0, f"blk = carray(blkp, ({slot},))")
        src = (f"def entry({', '.join(params)}):\n    " + "\n    ".join(prelude + [
            f"return kernel({', '.join(call)})" if returns_int else f"kernel({', '.join(call)})"]))
        exec(compile(src, f"<native entry of {self.__name__}>", "exec"), ns)
        sig = (types.int64 if returns_int else types.void)(*ctypes_)
        with building():
            c = lazy_codegen.cfunc(sig, ns["entry"], error_model="numpy") if native_only \
                else cfunc(sig, error_model="numpy")(ns["entry"])
        try:
            native.build(c, path)
        except native.NativeUnavailable:  # run numba's JIT code through the same ABI
            return native.from_address(c.address, len(ctypes_), returns_int)
        native.write_atomically(meta, f"{c.native_name} {len(ctypes_)} "
                                      f"{'int' if returns_int else 'void'}")
        return native.load(path, c.native_name, len(ctypes_), returns_int)


@contextlib.contextmanager
def _native_build(trusted):
    """How a kernel compiles for its shared object: no MCJIT machine code
    (lazy_codegen.py: the entry runs from the .so), and for ``trusted`` code
    (eBPF objects' generated files, large straight from the JIT) none of
    numba's LLVM passes either."""
    with lazy_codegen.deferred(), \
            (_no_numba_optimisation() if trusted else contextlib.nullcontext()):
        yield


@contextlib.contextmanager
def _no_numba_optimisation():
    """Compile without numba's LLVM passes, per function and whole-module:
    native.build inlines every function and runs O3 on the result anyway. On a
    3,000-instruction eBPF object they took 1.2 s of 4.2 s (module) and 0.26 s
    of 2.4 s (functions), and native.build's O3 went from 0.39 to 0.27 s
    without them; the objects' ns/packet did not change. Not for Python
    programs: numba's passes before native.build's made flow_counter 36 ns/pkt
    instead of 47 (and l4lb 97-110 instead of 91-96: no clean win)."""
    import numba.core.codegen as codegen

    def layout_only(self, ll_module):
        ll_module.data_layout = self._codegen._data_layout
    saved = codegen.CPUCodeLibrary._optimize_final_module, \
        codegen.CPUCodeLibrary._optimize_functions
    codegen.CPUCodeLibrary._optimize_final_module = lambda self: None
    codegen.CPUCodeLibrary._optimize_functions = layout_only
    try:
        yield
    finally:
        codegen.CPUCodeLibrary._optimize_final_module, \
            codegen.CPUCodeLibrary._optimize_functions = saved


def start_numba():
    """Import numba and set up its registries: what a process's first compile
    does before any of its own work (0.26-0.35 s; ebpf/forked_verify.py runs
    the verifier meanwhile)."""
    from numba.core.registry import cpu_target
    cpu_target.target_context.refresh()


def kernel(**opts):
    """Decorator: a compiled kernel with the given numba options (config.py)."""
    def wrap(fn):
        return Kernel(fn, opts)
    return wrap


def api(obj):
    """Mark a kernel (or constant holder) as callable from users' programs."""
    obj.__dataplane_api__ = True
    return obj
