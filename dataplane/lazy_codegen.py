"""numba's machine code made only when asked for.

numba hands every function it compiles to MCJIT at once, so that Python can
call it. A kernel built for a native entry (jit.py) never runs from there: the
entry's shared object is emitted by native.build from the same IR, optimised
again with every call inlined. On a cold cache MCJIT compiled the biggest
module of a program load three times (program, loop, entry: each links in the
one before) for nothing: 0.4 s of the 3.0 s a 3,000-instruction eBPF object
took.

Inside ``deferred()`` numba finalizes (links, verifies) what it compiles
without MCJIT, and the Python-callable object it keeps for each function makes
the machine code on its first call (a test calling a kernel's dispatcher
directly). ``cfunc`` is numba's @cfunc made the same way, its ``address`` on
demand. The kernel has no counterpart: it has one code generator, not two.
"""

import contextlib
import ctypes
import functools
import threading

_state = threading.local()
_install_lock = threading.Lock()
_installed = False


@contextlib.contextmanager
def deferred():
    """Compile without MCJIT (in this thread) until asked for machine code."""
    _install()
    saved = getattr(_state, "on", False)
    _state.on = True
    try:
        yield
    finally:
        _state.on = saved


def defer(library):
    """Keep ``library`` (a numba code library) away from MCJIT until its machine
    code is asked for (``get_pointer_to_function``)."""
    library._dp_deferred = True


def is_deferred(library):
    """True while ``library`` has no machine code of its own."""
    return getattr(library, "_dp_deferred", False)


@functools.lru_cache(maxsize=1)
def _cfunc_class():
    from numba.core.ccallback import CFunc

    class NativeOnlyCFunc(CFunc):
        """numba's CFunc whose ``address`` makes the machine code when asked."""

        @property
        def address(self):
            if self._wrapper_address is None:
                self._wrapper_address = self._library.get_pointer_to_function(
                    self._wrapper_name)
            return self._wrapper_address

    return NativeOnlyCFunc


def cfunc(sig, fn, **options):
    """numba's ``cfunc(sig, **options)(fn)`` without its machine code: finalized
    (linked) for native.build; ``.address`` makes the code (numba's JIT path)."""
    from numba.core import sigutils
    from numba.core.compiler_lock import global_compiler_lock

    c = _cfunc_class()(fn, sigutils.normalize_signature(sig), {}, options)
    with global_compiler_lock, deferred():
        cres = c._compile_uncached()
        c._library, c._wrapper_name = cres.library, cres.fndesc.llvm_cfunc_wrapper_name
        defer(c._library)
        c._library._ensure_finalized()
    return c


#: PyCFunctionWithKeywords: (self, args, kwargs) -> new reference or NULL.
_PYCFUNCTION = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.py_object,
                                ctypes.c_void_p)


def _on_first_call(make, fndesc, env, library):
    """A builtin function (numba's dispatchers accept nothing else) that builds
    the real one with ``make()`` when first called, then calls it. An exception
    inside cannot cross the ctypes callback: it is printed, and the caller gets
    SystemError; dataplane's kernels raise nothing once compiled."""
    from numba import _dynfunc
    real = []

    def call(_self, args, kwargs):
        if not real:
            real.append(make())
        kw = ctypes.cast(kwargs, ctypes.py_object).value if kwargs else {}
        result = real[0](*args, **kw)
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(result))
        return id(result)

    thunk = _PYCFUNCTION(call)
    return _dynfunc.make_function(fndesc.lookup_module(), fndesc.qualname.split(".")[-1],
                                  f"compiled wrapper for {fndesc.qualname!r}",
                                  ctypes.cast(thunk, ctypes.c_void_p).value, env,
                                  (library, thunk))


def _install():
    """Wrap the five numba methods involved, once per process; they behave as
    before outside ``deferred()`` and for every library that is not deferred."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from numba.core import codegen, cpu
        get_executable = cpu.CPUContext.get_executable
        final_module = codegen.JITCodeLibrary._finalize_final_module
        add_module = codegen.JITCPUCodegen._add_module
        finalize_object = codegen.JITCodeLibrary._finalize_specific
        get_pointer = codegen.JITCodeLibrary.get_pointer_to_function

        def lazy_get_executable(self, library, fndesc, env):
            if not getattr(_state, "on", False):
                return get_executable(self, library, fndesc, env)
            defer(library)
            return _on_first_call(lambda: get_executable(self, library, fndesc, env),
                                  fndesc, env, library)

        def lazy_final_module(self):
            if getattr(_state, "on", False):  # (internal subroutines have no executable)
                defer(self)
            # numba adds the module to MCJIT from inside this method
            _state.holding = is_deferred(self)
            try:
                final_module(self)
            finally:
                _state.holding = False

        def lazy_add_module(self, module):
            if not getattr(_state, "holding", False):
                return add_module(self, module)

        def lazy_finalize_object(self):
            if not is_deferred(self):
                finalize_object(self)

        def get_pointer_when_asked(self, name):
            if is_deferred(self):
                self._dp_deferred = False
                if self._finalized:  # linked without machine code: make it now
                    add_module(self._codegen, self._final_module)
                    finalize_object(self)
            return get_pointer(self, name)

        cpu.CPUContext.get_executable = lazy_get_executable
        codegen.JITCodeLibrary._finalize_final_module = lazy_final_module
        codegen.JITCPUCodegen._add_module = lazy_add_module
        codegen.JITCodeLibrary._finalize_specific = lazy_finalize_object
        codegen.JITCodeLibrary.get_pointer_to_function = get_pointer_when_asked
        _installed = True
