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
"""

import ast
import builtins
import inspect
import types as pytypes

import numpy as np

from .errors import ProgramError
from .maps import Map

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

    def visit_Call(self, node):
        if node.keywords:
            self.fail(node, "keyword arguments are not allowed")
        if not isinstance(node.func, (ast.Name, ast.Attribute)):
            self.fail(node, "only named functions may be called")
        self.generic_visit(node)

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


def check_program(fn, filename=None):
    """Check ``fn`` and every same-file function it calls; return them, checked.

    ``filename`` is the name used in messages (the user's file when ``fn`` was
    loaded from a generated copy with the same lines).

    Returns a list of ``(function, transformed ast.Module)``: the program first,
    each with loop budgets inserted and line numbers of the original file.
    """
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
        tree = _BudgetInserter().visit(tree)
        ast.fix_missing_locations(tree)
        ast.increment_lineno(tree, first - 1)
        order.append((f, tree))
    return order
