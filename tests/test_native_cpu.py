"""NUMBA_CPU_NAME / NUMBA_CPU_FEATURES (numba's own variables) also choose the
CPU that dataplane's cached shared objects are built for, in a folder of their
own (benchmarks/icount.py builds for haswell: valgrind decodes no AVX-512)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dataplane import native

pytestmark = pytest.mark.skipif(native.compiler() is None, reason="no C compiler")

CHILD = """
import numpy as np
from dataplane import native
from dataplane.jit import kernel
@kernel(nogil=True, _nrt=False)
def total(a):
    t = 0
    for x in a:
        t += x * 3
    return t
print(total(np.arange(100, dtype=np.int64)), native.cache_dir())
"""


def _build(cache, stderr=None, **cpu):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_CPU", "CC"))}
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         check=True, env=dict(env, DATAPLANE_CACHE_DIR=str(cache), **cpu))
    if stderr is not None:
        stderr.append(out.stderr)
    total, folder = out.stdout.split()
    return int(total), Path(folder)


def _vector_registers(folder):
    """How many instructions of the folder's shared objects name ymm/zmm registers."""
    text = "".join(subprocess.run(["objdump", "-d", str(so)], capture_output=True, text=True,
                                  check=True).stdout for so in folder.glob("*.so"))
    return sum(("%ymm" in line or "%zmm" in line) for line in text.splitlines())


def test_numba_cpu_name_builds_for_that_cpu_in_a_folder_of_its_own(tmp_path):
    host_total, host_dir = _build(tmp_path)
    base_total, base_dir = _build(tmp_path, NUMBA_CPU_NAME="x86-64", NUMBA_CPU_FEATURES="")
    assert host_total == base_total == 3 * sum(range(100))
    assert host_dir != base_dir
    assert list(base_dir.glob("*.so"))
    # the runtime stubs were compiled once per folder, not into each object anew
    assert len(list(host_dir.glob("stubs-*.o"))) == len(list(base_dir.glob("stubs-*.o"))) == 1
    assert len(list(host_dir.glob("worker-state-*.so"))) == 1
    assert not [p for p in host_dir.iterdir() if ".tmp" in p.name or p.suffix == ".c"]
    if shutil.which("objdump") is None:
        pytest.skip("no objdump to read the machine code")
    if _vector_registers(host_dir) == 0:
        pytest.skip("this host's build uses no AVX registers either")
    assert _vector_registers(base_dir) == 0  # x86-64 has SSE2 only


def test_a_failing_c_compiler_leaves_the_kernel_to_numbas_jit(tmp_path):
    """The stubs and worker-state library are compiled on a thread (native.prepare)
    while numba types the first kernel: a compiler that fails there is reported
    by no one, and the kernel runs from numba's JIT with the same result."""
    stderr = []
    total, folder = _build(tmp_path, stderr, CC="/bin/false")
    assert total == 3 * sum(range(100))
    assert "Traceback" not in stderr[0] and "Exception" not in stderr[0]
    assert not list(folder.glob("*.so")) and not list(folder.glob("*.o"))
