"""clang for the tests: C compiled to BPF objects at test time (the tests that
need it skip when clang is missing)."""

import glob
import os
import shutil
import subprocess

CLANG = shutil.which("clang")


def include_flags():
    """``-I`` for the multiarch folder that holds ``asm/types.h`` (linux/types.h
    includes it; ``-target bpf`` does not look there by itself)."""
    for d in sorted(glob.glob("/usr/include/*-linux-gnu")):
        if os.path.exists(os.path.join(d, "asm", "types.h")):
            return ["-I" + d]
    return []


def compile_bpf(src, out, extra=(), debug=True):
    """``clang -O2 [-g] -target bpf`` of C file ``src`` into ``out`` (returned);
    a failure fails the test with clang's message."""
    cmd = [CLANG, "-O2", *(["-g"] if debug else []), "-target", "bpf", *include_flags(),
           *extra, "-c", str(src), "-o", str(out)]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)}\n{r.stderr}"
    return str(out)
