"""lazy_codegen: kernels built for native entries get no MCJIT code until asked,
and everything asked of numba afterwards still works."""

import ctypes
import os
import time

import numpy as np
import pytest

from dataplane import lazy_codegen, native
from dataplane.jit import kernel

pytestmark = pytest.mark.skipif(native.compiler() is None, reason="no C compiler")


def _fresh_kernels():
    """An outer kernel calling an inner one, both never in the cache."""
    unique = f"{os.getpid()}_{time.time_ns()}"
    ns = {"__name__": f"test_lazy_codegen_{unique}"}
    exec("def inner(x):\n    return x * 3 + 1\n"
         "def outer(a, n):\n    t = 0\n    for i in range(n):\n"
         "        t += inner(a[i])\n    return t\n", ns)
    inner = kernel(nogil=True, _nrt=False)(ns["inner"])
    ns["inner"] = inner
    return kernel(nogil=True, _nrt=False)(ns["outer"]), inner


def test_native_build_leaves_numba_without_machine_code_until_asked():
    from numba import types
    outer, inner = _fresh_kernels()
    a = np.arange(50, dtype=np.int64)
    want = int((a * 3 + 1).sum())
    assert outer(a, 50) == want  # the shared object, built now
    sig = (types.Array(types.int64, 1, "C"), types.int64)
    library = outer.dispatcher.overloads[sig].library
    assert lazy_codegen.is_deferred(library)
    # Python calls the dispatchers themselves: their code is made on the first call
    assert outer.dispatcher(a, 50) == want
    assert not lazy_codegen.is_deferred(library)
    assert inner.dispatcher(7) == 22


def test_numba_compiles_as_before_outside_deferred():
    from numba import njit
    f = njit(lambda x: x + 1)
    assert f(1) == 2
    assert not lazy_codegen.is_deferred(f.overloads[f.signatures[0]].library)


def test_cfunc_address_makes_the_code_on_demand():
    from numba import types
    c = lazy_codegen.cfunc(types.int64(types.int64), lambda x: x * 5, error_model="numpy")
    assert lazy_codegen.is_deferred(c._library)
    fn = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(c.address)
    assert fn(9) == 45
    assert not lazy_codegen.is_deferred(c._library)
