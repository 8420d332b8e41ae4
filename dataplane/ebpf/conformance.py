"""Run bpf_conformance ISA vectors (``.data`` files) through the JIT.

A vector has sections (``-- asm``, ``-- raw``, ``-- mem``, ``-- result``,
``-- error``); ``-- raw`` (instruction words) replaces the assembly when
present. The runtime they assume: R1 = the memory block's address, R2 its
length, a 512-byte stack, helper 5 returning its first argument. The result is
R0 as an unsigned 64-bit number.

The plugin protocol of the bpf_conformance runner (``--plugin``): the memory
as hex in the argument, the program as hex on stdin, R0 printed in hex.

A vector's program is compiled here and run in a forked child: its memory
accesses are not proved (only the verifier's structural pass is consulted), so
one outside the block and the stack, or an endless loop, ends that child, and
the vector fails with the reason while the others still run.
"""

import ctypes
import faulthandler
import os
import signal
import struct
from pathlib import Path
from typing import NamedTuple

from ..errors import DataplaneError, UsageError
from . import asm, isa, jit, verifier


class Vector(NamedTuple):
    """One parsed ``.data`` file."""

    name: str
    code: list          # list[Insn]
    memory: bytes
    result: int         # None when the vector expects an error
    error: str


def _sections(text):
    out, current = {}, None
    for line in text.splitlines():
        if line.startswith("-- "):
            current = line[3:].strip()
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def _hex_bytes(lines, what):
    try:
        return bytes.fromhex("".join(ln.split("#")[0] for ln in lines))
    except ValueError:
        raise DataplaneError(f"{what}: memory is not hex bytes") from None


def parse_vector(path):
    """Read one ``.data`` file -> Vector (DataplaneError naming the file on bad content)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataplaneError(f"{path}: cannot read: {exc}") from None
    sec = _sections("\n".join(ln for ln in text.splitlines() if not ln.startswith("#")))
    if "raw" in sec:
        try:
            words = [int(w, 16) for ln in sec["raw"] for w in ln.split()]
        except ValueError:
            raise DataplaneError(f"{path}: -- raw: not 64-bit hex words") from None
        code = isa.decode(b"".join(w.to_bytes(8, "little") for w in words))
    elif "asm" in sec:
        code = asm.assemble("\n".join(sec["asm"]), name=str(path))
    else:
        raise DataplaneError(f"{path}: no -- asm or -- raw section")
    memory = _hex_bytes(sec.get("mem", []), str(path))
    result = None
    if "result" in sec:
        text = " ".join(sec["result"]).strip()
        try:
            result = int(text, 16) & 0xffffffffffffffff
        except ValueError:
            raise DataplaneError(f"{path}: -- result: '{text}' is not a hex number") from None
    return Vector(path.stem, code, memory, result, " ".join(sec.get("error", [])).strip())


def run(code, memory=b""):
    """Run a program on a memory block -> R0 (unsigned). Only the verifier's
    structural pass is consulted (opcodes, jump and call targets, lddw pairs,
    control falling off the end, recursion; unreachable code is allowed): what
    the JIT needs to emit code at all. Types and bounds are trusted: this is
    the ISA check only."""
    verifier.check_structure(code, "program", helpers=jit.RAW_HELPERS, raw=True)
    fn = jit.compile_raw(code)
    buf = ctypes.create_string_buffer(bytes(memory), max(len(memory), 1))
    return _in_child(fn, ctypes.addressof(buf) if memory else 0, len(memory))


#: Seconds a vector's program may run (the suite's take microseconds).
RUN_SECONDS = 2


class RunError(DataplaneError):
    """A vector's program crashed or did not finish (its child process ended)."""


def _in_child(fn, *args):
    """``fn(*args)`` (an unsigned 64-bit result) in a forked child process."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: nothing of the parent's Python runs here but this
        try:
            os.close(r)
            faulthandler.disable()  # a crash here is the answer, not a bug to report
            signal.alarm(RUN_SECONDS)  # its default action ends the process
            os.write(w, struct.pack("<Q", fn(*args)))
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    if len(data) == 8:
        return struct.unpack("<Q", data)[0]
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM:
        raise RunError(f"did not finish in {RUN_SECONDS} s (an endless loop?)")
    if os.WIFSIGNALED(status):
        raise RunError(f"crashed: {signal.Signals(os.WTERMSIG(status)).name} (a memory access "
                       "outside the block and the stack?)")
    raise RunError(f"ended without a result (exit status {os.waitstatus_to_exitcode(status)})")


def run_vector(vector):
    """(passed, detail) for one vector."""
    try:
        got = run(vector.code, vector.memory)
    except (jit.JitError, verifier.VerifierError, RunError) as exc:
        if vector.error:
            return True, f"error as expected: {exc}"
        return False, str(exc) if isinstance(exc, RunError) else f"not compiled: {exc}"
    if vector.result is None:
        return False, f"expected error '{vector.error}', got {got:#x}"
    if got != vector.result:
        return False, f"expected {vector.result:#x}, got {got:#x}"
    return True, f"{got:#x}"


def run_folder(folder, out=print, verbose=False):
    """Run every ``*.data`` of ``folder``, printing PASS/FAIL per test and the
    bpf_conformance runner's last line. Returns (passed, total)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"conformance: {folder}: not a directory")
    files = sorted(folder.glob("*.data"))
    if not files:
        raise UsageError(f"conformance: {folder}: no .data files")
    passed = 0
    for f in files:
        try:
            ok, detail = run_vector(parse_vector(f))
        except DataplaneError as exc:
            ok, detail = False, str(exc)
        passed += ok
        if not ok or verbose:
            out(f"{'PASS' if ok else 'FAIL'} {f.name}" + (f": {detail}" if not ok else ""))
        else:
            out(f"PASS {f.name}")
    out(f"Passed {passed} out of {len(files)} tests.")
    return passed, len(files)


def plugin(memory_hex, program_hex):
    """The bpf_conformance plugin protocol: -> R0 as the runner reads it (hex)."""
    try:
        memory = bytes.fromhex(memory_hex or "")
        code = isa.decode(bytes.fromhex("".join(program_hex.split())))
    except ValueError as exc:
        raise UsageError(f"conformance --plugin: bad hex: {exc}") from None
    return f"{run(code, memory):x}"
