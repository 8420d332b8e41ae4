"""benchmarks/icount.py's reading of callgrind's per-instruction output
(--annotate): object names given once and recalled by number (also from a
call's cob= line), absolute, relative and repeated addresses, and a call's
inclusive cost, which is not the caller's own."""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "icount", Path(__file__).resolve().parent.parent / "benchmarks" / "icount.py")
icount = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(icount)

CALLGRIND = """\
# callgrind format
version: 1
positions: instr line
events: Ir
ob=(1) /lib/libpython.so
fn=(1) main
0x1000 0 5
+4 0 7
cob=(2) /cache/x._dp_run_prog-1.so
cfn=(2) entry
calls=1 0x2000 0
* 0 999
-2 0 3
ob=(2)
fn=(2)
0x2000 0 10
+0x3 0 20
* 0 1
"""


def test_cost_lines_follow_names_positions_and_calls(tmp_path):
    path = tmp_path / "out.cg"
    path.write_text(CALLGRIND)
    assert list(icount._cost_lines(str(path))) == [
        ("/lib/libpython.so", 0x1000, 5),
        ("/lib/libpython.so", 0x1004, 7),
        # the call's 999 is the callee's inclusive cost: skipped
        ("/lib/libpython.so", 0x1002, 3),
        ("/cache/x._dp_run_prog-1.so", 0x2000, 10),
        ("/cache/x._dp_run_prog-1.so", 0x2003, 20),
        ("/cache/x._dp_run_prog-1.so", 0x2003, 1),
    ]
