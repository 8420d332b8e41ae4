"""Load-time check of a Python program's source: the verifier of this project.

Before compiling, each function a program reaches is checked against a
whitelist (the API's names, arithmetic, control flow, bounded loops), the way
the kernel verifier walks eBPF instructions: a program cannot reach memory by
any road other than its checked packet view (no imports, no attribute access
but the context's fields and numpy integer types, no underscore names, only
constant or whitelisted globals, no dunder names). A rejection names file, line and construct.

Every loop body starts with ``if _dp_loop_budget_tick(): break``: a packet's
program may run config.LOOP_BUDGET iterations in all (kernels/budget.py), then
every loop breaks and the runner turns the verdict into XDP_ABORTED, as the
kernel bounds eBPF loops.

Strings: the only string a program may write is the format of a
``bpf_trace_printk`` call, its first argument, a constant. The check validates
it (TRACE_DIRECTIVES; at most 3 arguments, one per directive) and the call
becomes ``_dp_trace_printk(_dp_trace, FMT_ID, ...)`` (kernels/trace.py): the
format's index in the file's table (trace_format_table), so no string reaches
compiled code. Map helpers are checked against the map they name: a ringbuf
has no elements, and bpf_ringbuf_output needs a ringbuf.
"""

import ast
import builtins
import collections
import inspect
import types as pytypes

import numpy as np

from .errors import ProgramError
from .helpers import bpf_trace_printk
from .kernels.runner import TRACE_HANDLE
from .maps import (Map, bpf_map_delete_elem, bpf_map_lookup_elem, bpf_map_peek_elem,
                   bpf_map_pop_elem, bpf_map_push_elem, bpf_map_update_elem,
                   bpf_ringbuf_output)

_ALLOWED_NODES = (
    ast.Module, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.Assign,
    ast.AugAssign, ast.If, ast.While, ast.For, ast.Break, ast.Continue, ast.Pass,
    ast.Expr, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Compare, ast.IfExp, ast.Call,
    ast.Constant, ast.Name, ast.Subscript, ast.Tuple, ast.Attribute, ast.Load,
    ast.Store, ast.operator, ast.boolop, ast.unaryop, ast.cmpop,
)
_BUILTINS = {"len", "range", "min", "max", "abs", "int", "bool"}
#: Attributes of the context a program may read (struct xdp_md's public fields).
CONTEXT_ATTRIBUTES = {"pkt", "meta", "ingress_ifindex", "rx_queue_index"}
_NUMPY_ATTRIBUTES = {"uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"}
#: The budget intrinsic the check calls in every loop (users cannot write '_dp_' names).
BUDGET_TICK = "_dp_loop_budget_tick"


def is_api(obj):
    """True for dataplane helpers callable from programs (marked with jit.api)."""
    return getattr(obj, "__dataplane_api__", False)


# ---------------------------------------------------------------- trace formats

#: What a bpf_trace_printk format may hold (the kernel's bpf_bprintf_prepare, less
#: strings and pointers): %d %i %u %x %X with no length, l or ll (l and ll: 64
#: bits; none: the low 32, %d and %i signed), %c (the low byte), %%, each
#: directive with the flags '-' and '0' and a width.
TRACE_DIRECTIVES = "%d %i %u %x %X %ld %li %lu %lx %lX %lld %lli %llu %llx %llX %c %%"
#: The kernel's limit on arguments of bpf_trace_printk.
TRACE_MAX_ARGS = 3
# kinds: kernels/trace.py's TRACE_* (kept equal there; that module needs numba)
_KINDS = {("", "d"): 1, ("", "i"): 1, ("", "u"): 2, ("", "x"): 3, ("", "X"): 3,
          ("l", "d"): 4, ("l", "i"): 4, ("l", "u"): 5, ("l", "x"): 6, ("l", "X"): 6,
          ("", "c"): 7}
_KIND_CHAR = 7


# Each kind's Python expression of an argument's 64 bits (an int 0 .. 2**64 - 1).
_CONVERT = {1: "((({0}) & 0xFFFFFFFF) ^ 0x80000000) - 0x80000000", 2: "({0}) & 0xFFFFFFFF",
            3: "({0}) & 0xFFFFFFFF", 4: "(({0}) ^ 0x8000000000000000) - 0x8000000000000000",
            5: "{0}", 6: "{0}", 7: "({0}) & 0xFF"}


class TraceFormat(collections.namedtuple("TraceFormat",
                                         "text pyfmt kinds specs static_len render")):
    """A parsed bpf_trace_printk format: ``pyfmt`` (Python's %-format of the same
    output), each directive's kind, its SPEC for kernels/trace.py (kind | width
    << 8), the bytes printed outside the directives, and ``render(a1, a2, a3)``:
    the line for three 64-bit argument values, without the format's final
    newline (the way a trace line is shown)."""

    def format(self, args):
        """The line the kernel would print for these 64-bit argument values."""
        line = self.render(*(list(args) + [0] * (TRACE_MAX_ARGS - len(args))))
        return line + "\n" if self.pyfmt.endswith("\n") else line


def _renderer(pyfmt, kinds):
    """A compiled ``render(a1, a2, a3)`` (~0.3 us a line against ~2 us for a
    generic loop over converters): trace lines are formatted by the batch."""
    shown = pyfmt[:-1] if pyfmt.endswith("\n") else pyfmt
    args = "".join(_CONVERT[k].format(f"a{i + 1}") + ", " for i, k in enumerate(kinds))
    src = f"def render(a1, a2, a3):\n    return {shown!r} % ({args})\n"
    ns = {}
    exec(compile(src, "<bpf_trace_printk format>", "exec"), ns)
    return ns["render"]


def parse_trace_format(text):
    """A bpf_trace_printk format -> TraceFormat; ValueError says what is wrong."""
    pyfmt, kinds, specs, static, i, n = [], [], [], 0, 0, len(text)
    while i < n:
        ch = text[i]
        if ch != "%":
            pyfmt.append(ch)
            static += len(ch.encode())
            i += 1
            continue
        j = i + 1
        while j < n and text[j] in "-0+ #":
            j += 1
        flags = text[i + 1:j]
        k = j
        while k < n and (text[k].isdigit() or text[k] == "*"):
            k += 1
        width = text[j:k]
        p = k
        if p < n and text[p] == ".":  # a precision
            p += 1
            while p < n and (text[p].isdigit() or text[p] == "*"):
                p += 1
        m = p
        while m < n and text[m] in "hlLqjzt":
            m += 1
        length = text[p:m]
        if m >= n:
            raise ValueError(f"'{text[i:]}' at the end is not a directive "
                             f"(valid: {TRACE_DIRECTIVES})")
        conv = text[m]
        directive = text[i:m + 1]
        if directive == "%%":
            pyfmt.append("%%")
            static += 1
            i = m + 1
            continue
        size = {"": "", "l": "l", "ll": "l"}.get(length)  # l and ll: 64 bits
        kind = _KINDS.get((size, conv)) if size is not None else None
        if kind is None or conv == "%" or set(flags) - set("-0") or p != k or "*" in width:
            raise ValueError(f"'{directive}' is not supported (valid: {TRACE_DIRECTIVES}; "
                             "flags '-' and '0', a width)")
        py = {"d": "d", "i": "d", "u": "d", "x": "x", "X": "X", "c": "c"}[conv]
        if kind == _KIND_CHAR:
            flags = flags.replace("0", "")
        pyfmt.append(f"%{flags}{width}{py}")
        kinds.append(kind)
        specs.append(kind | (int(width or 0) << 8))
        i = m + 1
    pyfmt = "".join(pyfmt)
    return TraceFormat(text, pyfmt, tuple(kinds), tuple(specs), static, _renderer(pyfmt, kinds))


def _is_trace_call(node, global_of):
    """True for a call of bpf_trace_printk (under any name bound to it) whose first
    argument is a string constant."""
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
        and global_of(node.func.id) is bpf_trace_printk and bool(node.args) \
        and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)


def trace_format_table(tree, module_globals):
    """The formats of every bpf_trace_printk call of a file, in order, once each:
    a format's index is its id (fixed by the file's text, so cached code agrees)."""
    table = []
    for node in ast.walk(tree):
        if _is_trace_call(node, module_globals.get) and node.args[0].value not in table:
            table.append(node.args[0].value)
    return table


def _constant_ok(value):
    if isinstance(value, (bool, int, float, np.integer)):
        return True
    if isinstance(value, tuple):
        return all(_constant_ok(v) for v in value)
    return False


class _Checker(ast.NodeVisitor):
    """Whitelist walk of one function; collects the same-module functions it calls."""

    def __init__(self, fn, filename, first_line):
        self.fn = fn
        self.filename = filename
        self.first_line = first_line
        self.globals = fn.__globals__
        self.calls = []          # same-module Python functions reached
        self.locals = set()
        # Field names of the file's maps' values: ``v.packets`` after a lookup.
        self.value_fields = {f for m in self.globals.values() if isinstance(m, Map)
                             for f in (m.value_dtype.names or ())}

    def fail(self, node, what):
        line = self.first_line + getattr(node, "lineno", 1) - 1
        raise ProgramError(f"{self.filename}:{line}: in {self.fn.__name__}(): {what}",
                           hint="programs may use only arithmetic, control flow, the packet "
                                "view, constants and dataplane helpers")

    def generic_visit(self, node):
        if not isinstance(node, _ALLOWED_NODES):
            self.fail(node, f"{type(node).__name__.lower()} is not allowed in a program")
        super().generic_visit(node)

    def visit_FunctionDef(self, node):
        if node is not self.root:
            self.fail(node, "nested functions are not allowed")
        if node.args.vararg or node.args.kwarg or node.args.kwonlyargs or node.args.defaults:
            self.fail(node, "only plain positional parameters are allowed")
        for a in node.args.args:
            self._name_ok(a, a.arg)
            self.locals.add(a.arg)
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]  # docstring
        for stmt in body:
            self.visit(stmt)

    def _name_ok(self, node, name):
        if name.startswith("__") or name.startswith("_dp_"):
            self.fail(node, f"name '{name}' is not allowed (names starting with '__' or '_dp_' "
                            "are reserved)")

    def visit_Name(self, node):
        self._name_ok(node, node.id)
        if isinstance(node.ctx, ast.Store):
            self.locals.add(node.id)
            return
        if node.id in self.locals or node.id in self.assigned:
            return
        self._global_ok(node, node.id)

    def _global_ok(self, node, name):
        if name in self.globals:
            value = self.globals[name]
        elif name in _BUILTINS or name in ("True", "False", "None"):
            return
        elif hasattr(builtins, name):
            self.fail(node, f"builtin '{name}' is not allowed")
        else:
            self.fail(node, f"name '{name}' is not defined")
        if value is np:
            return
        if _constant_ok(value) or is_api(value) or isinstance(value, Map):
            return
        if isinstance(value, pytypes.FunctionType) and value.__module__ == self.fn.__module__:
            self.calls.append(value)
            return
        self.fail(node, f"global '{name}' ({type(value).__name__}) is not a constant, a map, "
                        "a function of this file or a dataplane helper")

    def visit_Attribute(self, node):
        if isinstance(node.value, ast.Name) and self.globals.get(node.value.id) is np:
            if node.attr not in _NUMPY_ATTRIBUTES:
                self.fail(node, f"numpy attribute '{node.attr}' is not allowed "
                                f"(valid: {', '.join(sorted(_NUMPY_ATTRIBUTES))})")
            return
        if node.attr in self.value_fields:  # a map value's field, read or written
            self.visit(node.value)
            return
        if node.attr not in CONTEXT_ATTRIBUTES:
            valid = sorted(CONTEXT_ATTRIBUTES | self.value_fields)
            self.fail(node, f"attribute '{node.attr}' is not allowed (valid: {', '.join(valid)})")
        if isinstance(node.ctx, ast.Store):
            self.fail(node, f"attribute '{node.attr}' is read-only")
        self.visit(node.value)

    def _global_of(self, name):
        """The module global a name refers to here (None for a local)."""
        if name in self.locals or name in self.assigned:
            return None
        return self.globals.get(name)

    def visit_Call(self, node):
        if node.keywords:
            self.fail(node, "keyword arguments are not allowed")
        if not isinstance(node.func, (ast.Name, ast.Attribute)):
            self.fail(node, "only named functions may be called")
        helper = self._global_of(node.func.id) if isinstance(node.func, ast.Name) else None
        if helper is bpf_trace_printk:
            self._check_trace(node)
            self.visit(node.func)
            for arg in node.args[1:]:  # the format was checked: the one string allowed
                self.visit(arg)
            return
        if any(helper is h for h in _MAP_HELPERS):
            self._check_map_argument(node, helper)
        self.generic_visit(node)

    def _check_trace(self, node):
        name = node.func.id
        if not node.args or not (isinstance(node.args[0], ast.Constant)
                                 and isinstance(node.args[0].value, str)):
            self.fail(node, f"{name}'s first argument must be a string constant (the format)")
        text, nargs = node.args[0].value, len(node.args) - 1
        try:
            fmt = parse_trace_format(text)
        except ValueError as exc:
            self.fail(node.args[0], f"{name} format {text!r}: {exc}")
        if nargs > TRACE_MAX_ARGS:
            self.fail(node, f"{name} takes at most {TRACE_MAX_ARGS} arguments after the format "
                            f"(the kernel's limit), not {nargs}")
        if nargs != len(fmt.kinds):
            self.fail(node, f"{name} format {text!r} has {len(fmt.kinds)} directive"
                            f"{'s' if len(fmt.kinds) != 1 else ''} for {nargs} argument"
                            f"{'s' if nargs != 1 else ''}")

    def _check_map_argument(self, node, helper):
        first = node.args[0] if node.args else None
        m = self._global_of(first.id) if isinstance(first, ast.Name) else None
        if not isinstance(m, Map):
            return
        ring = getattr(m, "is_ringbuf", False)
        if helper is bpf_ringbuf_output and not ring:
            self.fail(node, f"bpf_ringbuf_output needs a ringbuf map: '{m.name}' is a "
                            f"{m.type_name}")
        if helper is not bpf_ringbuf_output and ring:
            self.fail(node, f"map '{m.name}' is a ringbuf: it has no elements for "
                            f"{node.func.id} (write records with bpf_ringbuf_output)")
        queue = getattr(m, "is_queue_stack", False)
        pushes_or_pops = any(helper is h for h in _QUEUE_HELPERS)
        if pushes_or_pops and not queue:
            self.fail(node, f"{node.func.id} needs a queue or a stack map: '{m.name}' is a "
                            f"{m.type_name}")
        if not pushes_or_pops and queue:
            self.fail(node, f"map '{m.name}' is a {m.type_name}: it has no keys for "
                            f"{node.func.id} (use bpf_map_push_elem, bpf_map_pop_elem, "
                            "bpf_map_peek_elem)")

    def visit_Constant(self, node):
        if not isinstance(node.value, (bool, int, float)) and node.value is not None:
            self.fail(node, f"{type(node.value).__name__} constants are not allowed")

    def visit_For(self, node):
        if node.orelse:
            self.fail(node, "for ... else is not allowed")
        self.generic_visit(node)

    def visit_While(self, node):
        if node.orelse:
            self.fail(node, "while ... else is not allowed")
        self.generic_visit(node)

    def check(self, tree):
        self.root = tree.body[0]
        # Names assigned anywhere in the function are locals (Python's own rule).
        self.assigned = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)
                         and isinstance(n.ctx, ast.Store)}
        self.visit_FunctionDef(self.root)


_QUEUE_HELPERS = (bpf_map_push_elem, bpf_map_pop_elem, bpf_map_peek_elem)
_MAP_HELPERS = (bpf_map_lookup_elem, bpf_map_update_elem, bpf_map_delete_elem,
                bpf_ringbuf_output) + _QUEUE_HELPERS


class _TraceRewriter(ast.NodeTransformer):
    """``bpf_trace_printk("fmt", a, b)`` -> ``_dp_trace_printk(_dp_trace, ID, STATIC,
    S1, S2, S3, a, b, 0)`` (kernels/trace.py), the format's id from ``formats``."""

    def __init__(self, fn, formats):
        self.globals, self.formats = fn.__globals__, formats

    def rewrite(self, tree):
        fdef = tree.body[0]
        self.local = {a.arg for a in fdef.args.args} | {
            n.id for n in ast.walk(tree)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
        return self.visit(tree)

    def _global_of(self, name):
        return None if name in self.local else self.globals.get(name)

    def visit_Call(self, node):
        self.generic_visit(node)
        if not _is_trace_call(node, self._global_of):
            return node
        text = node.args[0].value
        if text not in self.formats:
            self.formats.append(text)
        fmt = parse_trace_format(text)
        specs = list(fmt.specs) + [0] * (TRACE_MAX_ARGS - len(fmt.specs))
        args = node.args[1:] + [ast.Constant(0)] * (TRACE_MAX_ARGS - len(node.args) + 1)
        call = ast.Call(func=ast.Name("_dp_trace_printk", ast.Load()), keywords=[], args=[
            ast.Name(TRACE_HANDLE, ast.Load()), ast.Constant(self.formats.index(text)),
            ast.Constant(fmt.static_len), *(ast.Constant(s) for s in specs), *args])
        for sub in ast.walk(call):
            ast.copy_location(sub, node)
        return call


class _BudgetInserter(ast.NodeTransformer):
    """Prefix every loop body with the budget check (the loop bound)."""

    def _guard(self, loop):
        tick = ast.Call(func=ast.Name(BUDGET_TICK, ast.Load()), args=[], keywords=[])
        guard = ast.If(test=tick, body=[ast.Break()], orelse=[])
        for sub in ast.walk(guard):
            ast.copy_location(sub, loop)
        loop.body = [guard] + loop.body
        return loop

    def visit_For(self, node):
        self.generic_visit(node)
        return self._guard(node)

    def visit_While(self, node):
        self.generic_visit(node)
        return self._guard(node)


def function_tree(fn, filename=None):
    """The function's source as an ast.Module, and its file and first line."""
    try:
        lines, first = inspect.getsourcelines(fn)
        filename = filename or inspect.getsourcefile(fn) or "<unknown>"
    except (OSError, TypeError) as exc:
        raise ProgramError(f"{fn.__name__}: cannot read the program's source ({exc})") from None
    if lines[0][:1].isspace():
        raise ProgramError(f"{filename}:{first}: {fn.__name__} must be a top-level function")
    tree = ast.parse("".join(lines))
    fdef = tree.body[0]
    if not isinstance(fdef, ast.FunctionDef):
        raise ProgramError(f"{filename}:{first}: {fn.__name__} is not a plain function")
    fdef.decorator_list = []
    return tree, filename, first


def check_program(fn, filename=None, trace_formats=None):
    """Check ``fn`` and every same-file function it calls; return them, checked.

    ``filename`` is the name used in messages (the user's file when ``fn`` was
    loaded from a generated copy with the same lines). ``trace_formats`` is the
    file's format table (trace_format_table): bpf_trace_printk formats become
    their index in it (a format missing from it is appended).

    Returns a list of ``(function, transformed ast.Module)``: the program first,
    each with loop budgets inserted, bpf_trace_printk calls rewritten, and line
    numbers of the original file.
    """
    formats = [] if trace_formats is None else trace_formats
    done, order, todo = set(), [], [fn]
    while todo:
        f = todo.pop()
        if f in done:
            continue
        done.add(f)
        tree, filename, first = function_tree(f, filename)
        checker = _Checker(f, filename, first)
        checker.check(tree)
        todo.extend(checker.calls)
        tree = _TraceRewriter(f, formats).rewrite(tree)
        tree = _BudgetInserter().visit(tree)
        ast.fix_missing_locations(tree)
        ast.increment_lineno(tree, first - 1)
        order.append((f, tree))
    return order
