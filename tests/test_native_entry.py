"""A kernel's C-ABI entry (jit.py: numba's carray entry as a cfunc): arrays of every
shape and dtype come back as the kernel's arrays, through both ABIs (pointer
and shape per array; one block of int64s) and through numba's own code when
the link fails. Oracle: numpy computing the same sums."""

import os
import time

import numpy as np
import pytest

from dataplane import native
from dataplane.io.bound import BoundCall
from dataplane.jit import kernel

pytestmark = pytest.mark.skipif(native.compiler() is None, reason="no C compiler")

RECORD = np.dtype([("a", "<u2"), ("b", "<u8"), ("c", "u1")], align=True)
SOURCE = """
def mix(grid, rows, k, recs):
    t = 0
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            t += grid[i, j] * (i + 1) * (j + 3)
    for r in range(rows.shape[0]):
        t += rows[r] * 7
    column = grid[:, 2]  # a view: numba indexes it by the strides the entry set
    for i in range(column.shape[0]):
        t += column[i] * 13
    t += grid.strides[0] * 1000 + recs.itemsize * 100000
    for x in range(recs.shape[0]):
        t += recs[x].a * 5 + recs[x].b + recs[x].c * 11
    return t * k + grid.shape[1]

def fill(grid, v):
    for i in range(grid.shape[0]):
        for j in range(grid.shape[1]):
            grid[i, j] = v + i * 100 + j
"""


def _fresh(source, *names):
    """Kernels ``names`` of ``source``, never in the cache (a module name of their own)."""
    ns = {"__name__": f"test_native_entry_{os.getpid()}_{time.time_ns()}"}
    exec(source, ns)
    return [kernel(nogil=True, _nrt=False)(ns[n]) for n in names]


def _inputs():
    grid = np.arange(3 * 5, dtype=np.int32).reshape(3, 5) - 4
    rows = np.array([9, 1 << 40, 3], np.uint64)
    recs = np.zeros(4, RECORD)
    recs["a"], recs["b"], recs["c"] = [1, 2, 3, 65535], [10, 1 << 50, 30, 40], [0, 1, 2, 255]
    return grid, rows, recs


def _expected(grid, rows, k, recs):
    i, j = np.indices(grid.shape)
    t = int((grid.astype(np.int64) * (i + 1) * (j + 3)).sum()) + int(rows.astype(object).sum()) * 7
    t += sum(int(r["a"]) * 5 + int(r["b"]) + int(r["c"]) * 11 for r in recs)
    t += int(grid[:, 2].sum()) * 13 + grid.strides[0] * 1000 + recs.itemsize * 100000
    return (t * k + grid.shape[1]) & ((1 << 64) - 1)


def _signed(v):
    return v - (1 << 64) if v >= 1 << 63 else v


@pytest.mark.parametrize("via", ["arguments", "block", "numba's code"])
def test_arrays_of_any_shape_and_dtype_reach_the_kernel(via, monkeypatch):
    if via == "numba's code":  # the link fails: the entry's own machine code runs
        def no_link(*a):
            raise native.NativeUnavailable("no linker in this test")
        monkeypatch.setattr(native, "build", no_link)
    mix, fill = _fresh(SOURCE, "mix", "fill")
    grid, rows, recs = _inputs()
    want = _signed(_expected(grid, rows, 3, recs))
    if via == "block":
        assert BoundCall(mix, grid, rows, 3, recs).call() == want
    else:
        assert mix(grid, rows, 3, recs) == want
    out = np.zeros((4, 6), np.int64)
    assert fill(out, 7) is None  # a kernel returning nothing: a void entry
    assert (out == 7 + np.arange(4)[:, None] * 100 + np.arange(6)).all()


def test_records_of_one_size_but_other_fields_get_their_own_code():
    """A record's dtype string is only its size ('|V16'): the entry's key and
    its file in the cache take the fields too, else the second dtype ran the
    first one's code."""
    first, = _fresh("def first(r):\n    return r[0].x * 1000 + r[0].y\n", "first")
    a = np.zeros(1, [("x", "<u8"), ("y", "<u8")])
    b = np.zeros(1, [("y", "<u8"), ("x", "<u8")])  # the same size, the fields swapped
    a[0], b[0] = (1, 2), (2, 1)  # b: y=2, x=1 as well, stored the other way round
    assert first(a) == first(b) == 1002
    assert BoundCall(first, a).call() == BoundCall(first, b).call() == 1002
