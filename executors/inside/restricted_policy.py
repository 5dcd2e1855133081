"""The ``restricted`` executor's policy, applied inside a pool child.

RestrictedPython rewrites the code at compile time so that attribute access,
item access, iteration, writes and imports go through the guards defined here.
This is a policy layer: once numpy or pandas are importable, a determined
author can reach unguarded machinery through them. The isolation boundary is
the process sandbox (bubblewrap namespaces, rlimits) that this runs inside.

Loaded by path in the pool's zygote (``zygote.py``), so it imports only the
standard library and RestrictedPython at module level.
"""

from __future__ import annotations

import ast
import builtins
import copy
import operator
import os
import sys
import types

from RestrictedPython import compile_restricted_eval as _rp_compile_eval
from RestrictedPython import compile_restricted_exec as _rp_compile
from RestrictedPython import limited_builtins, safe_builtins, utility_builtins
from RestrictedPython.Eval import default_guarded_getitem, default_guarded_getiter
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence, safer_getattr
from RestrictedPython.transformer import RestrictingNodeTransformer

# Modules the code may import, with every submodule of the packages marked True.
ALLOWED_MODULES: dict[str, bool] = {
    "math": False,
    "cmath": False,
    "statistics": False,
    "random": False,
    "itertools": False,
    "functools": False,
    "operator": False,
    "collections": True,
    "heapq": False,
    "bisect": False,
    "re": False,
    "json": False,
    "csv": False,
    "string": False,
    "textwrap": False,
    "datetime": False,
    "time": False,
    "calendar": False,
    "decimal": False,
    "fractions": False,
    "numbers": False,
    "typing": False,
    "dataclasses": False,
    "enum": False,
    "copy": False,
    "pprint": False,
    "hashlib": False,
    "base64": False,
    "unicodedata": False,
    "array": False,
    "numpy": True,
    "pandas": True,
    "matplotlib": True,
    "sympy": True,
    "scipy": True,
}
# Submodules that hand out raw memory or the operating system even under an
# allowed package.
DENIED_PARTS = frozenset({"ctypeslib", "ctypes", "f2py", "distutils", "testing", "os", "subprocess", "sys"})
# Modules never returned from an attribute lookup, even on an allowed module
# (``pandas.io.common.os`` and friends).
WRITE_PROTECTED_TYPES = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)


def module_allowed(name: str) -> bool:
    parts = name.split(".")
    if any(p.startswith("_") or p in DENIED_PARTS for p in parts):
        return False
    if name in ALLOWED_MODULES:
        return True
    return ALLOWED_MODULES.get(parts[0], False)


def _check_value(value, where: str):
    """Refuse modules outside the allow list, however they were reached."""
    if isinstance(value, types.ModuleType) and not module_allowed(value.__name__):
        raise ImportError(f"module {value.__name__!r} is not allowed here ({where})")
    return value


def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level != 0:
        raise ImportError("relative imports are not allowed")
    if not module_allowed(name):
        raise ImportError(f"import of {name!r} is not allowed; allowed: {', '.join(sorted(ALLOWED_MODULES))}")
    if name == "string":
        return utility_builtins["string"]  # the copy without string.Formatter
    module = builtins.__import__(name, globals, locals, fromlist or (), 0)
    for attr in fromlist or ():
        if attr.startswith("_"):
            raise ImportError(f"cannot import private name {attr!r} from {name!r}")
        if attr != "*":
            _check_value(getattr(module, attr, None), f"from {name} import {attr}")
    return module


_MISSING = object()


def guarded_getattr(obj, name, default=None, getattr=getattr):
    return _check_value(safer_getattr(obj, name, default, getattr), f"attribute {name!r}")


def guarded_hasattr(obj, name) -> bool:
    try:
        return guarded_getattr(obj, name, _MISSING) is not _MISSING
    except AttributeError:
        return False


def guarded_getitem(obj, index):
    return _check_value(default_guarded_getitem(obj, index), "item access")


def write_guard(obj):
    """Allow writes to data (lists, dicts, DataFrames, arrays, instances), not to code or modules."""
    if isinstance(obj, WRITE_PROTECTED_TYPES):
        raise TypeError(f"cannot modify {type(obj).__name__} objects in restricted code")
    return obj


INPLACE_OPERATORS = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "&=": operator.iand,
    "|=": operator.ior,
    "^=": operator.ixor,
    "@=": operator.imatmul,
}


def inplace_var(op: str, target, value):
    try:
        return INPLACE_OPERATORS[op](target, value)
    except KeyError:
        raise SyntaxError(f"unsupported in-place operator {op!r}") from None


def apply(func, *args, **kwargs):
    return func(*args, **kwargs)


class StdoutPrinter:
    """``_print_`` for RestrictedPython: print straight to the captured stdout."""

    def __init__(self, _getattr_=None) -> None:
        pass

    def _call_print(self, *objects, **kwargs) -> None:
        if kwargs.get("file") is None:
            kwargs["file"] = sys.stdout
        print(*objects, **kwargs)

    def __call__(self) -> str:
        return ""  # the ``printed`` name of PrintCollector: output already went to stdout


def guarded_open(file, mode="r", *args, **kwargs):
    """``open`` limited to the execution's working directory."""
    if not isinstance(file, (str, bytes, os.PathLike)):
        raise TypeError("open() takes a path in restricted code")
    here = os.path.realpath(os.getcwd())
    target = os.path.realpath(os.fsdecode(file))
    if os.path.commonpath([here, target]) != here:
        raise PermissionError(
            f"restricted code may only open files in its working directory, not {os.fsdecode(file)!r}"
        )
    return open(target, mode, *args, **kwargs)


# Plain functions and types ordinary code uses that RestrictedPython's sets
# leave out; none of them reaches frames, globals or code objects.
EXTRA_BUILTINS = (
    "all",
    "any",
    "dict",
    "enumerate",
    "filter",
    "frozenset",
    "iter",
    "list",
    "map",
    "max",
    "min",
    "next",
    "reversed",
    "set",
    "sum",
    "type",
    "object",
    "super",
    "Exception",
    "sorted",
    "zip",
    "bytes",
    "bytearray",
    "bin",
    "ascii",
    "classmethod",
    "staticmethod",
    "property",
    "NotImplemented",
    "ExceptionGroup",
    "BaseExceptionGroup",
    "FileNotFoundError",
    "FileExistsError",
    "PermissionError",
    "RecursionError",
    "TimeoutError",
    "ModuleNotFoundError",
    "StopAsyncIteration",
)


def build_builtins() -> dict:
    names = {}
    names.update(safe_builtins)
    names.update(limited_builtins)
    names.update(utility_builtins)
    for extra in EXTRA_BUILTINS:
        names.setdefault(extra, getattr(builtins, extra))
    # limited_builtins caps range() at 1000 items and refuses list("abc"):
    # ordinary analysis code needs both, and memory/CPU are bounded by the
    # sandbox's rlimits, so the real ones are used.
    names.update(
        {
            "range": range,
            "list": list,
            "tuple": tuple,
            "__import__": guarded_import,
            "__build_class__": builtins.__build_class__,
            "getattr": guarded_getattr,
            "hasattr": guarded_hasattr,
            "open": guarded_open,
            "_getattr_": guarded_getattr,
        }
    )
    return names


def build_namespace() -> dict:
    """A fresh global namespace for one restricted execution."""
    builtins_ = build_builtins()
    namespace = {
        "__builtins__": builtins_,
        "__name__": "__main__",
        "__metaclass__": type,
        "_print_": StdoutPrinter,
        "_getattr_": guarded_getattr,
        "_getitem_": guarded_getitem,
        "_getiter_": default_guarded_getiter,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
        "_unpack_sequence_": guarded_unpack_sequence,
        "_write_": write_guard,
        "_inplacevar_": inplace_var,
        "_apply_": apply,
    }
    builtins_["eval"] = builtins_["restricted_eval"] = make_restricted_eval(namespace)
    return namespace


SIDE_EFFECT_NODES = (ast.Call, ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)


class CodeloopPolicy(RestrictingNodeTransformer):
    """RestrictedPython's transformer plus two things ordinary code needs.

    ``counts[k] += 1`` and ``point.x += 1`` are rewritten as ``counts[k] =
    counts[k] + 1`` (then guarded like any item/attribute read and write)
    when the target has no calls in it, so evaluating it twice changes
    nothing. ``eval(text)`` is allowed because the builtin ``eval`` here
    compiles ``text`` under this same policy (see :func:`restricted_eval`).
    """

    def visit_AugAssign(self, node: ast.AugAssign):
        target = node.target
        if isinstance(target, (ast.Attribute, ast.Subscript)) and not any(
            isinstance(n, SIDE_EFFECT_NODES) for n in ast.walk(target)
        ):
            load = copy.deepcopy(target)
            for n in ast.walk(load):
                if hasattr(n, "ctx"):
                    n.ctx = ast.Load()
            rewritten = ast.Assign(targets=[target], value=ast.BinOp(left=load, op=node.op, right=node.value))
            ast.copy_location(rewritten, node)
            ast.fix_missing_locations(rewritten)
            return self.visit(rewritten)
        return super().visit_AugAssign(node)

    def visit_Call(self, node: ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id == "eval":
            node.func.id = "restricted_eval"  # past the parent's eval check; same builtin below
            result = super().visit_Call(node)
            node.func.id = "eval"
            return result
        return super().visit_Call(node)


def _raise_policy_errors(result) -> None:
    if result.errors or result.code is None:
        raise SyntaxError("; ".join(result.errors) or "the code could not be compiled under the restricted policy")


def compile_restricted_exec(code: str, filename: str, mode: str = "exec"):
    """Compile under the policy; policy violations raise SyntaxError with every message."""
    result = _rp_compile(code, filename=filename, policy=CodeloopPolicy)
    _raise_policy_errors(result)
    return result.code


def make_restricted_eval(namespace: dict):
    """``eval`` for restricted code: the expression is compiled under the same policy
    and evaluated with the execution's guards, whatever globals the caller passes."""

    def restricted_eval(source, globals=None, locals=None):
        if not isinstance(source, str):
            raise TypeError("eval() in restricted code takes a string")
        result = _rp_compile_eval(source.strip(), filename="<eval>", policy=CodeloopPolicy)
        _raise_policy_errors(result)
        assert result.code is not None  # no errors, so it compiled
        if globals is None:
            return builtins.eval(result.code, namespace, locals)
        if not isinstance(globals, dict):
            raise TypeError("eval() globals must be a dict")
        guards = {k: v for k, v in namespace.items() if k == "__builtins__" or (k.startswith("_") and k.endswith("_"))}
        return builtins.eval(result.code, {**globals, **guards}, locals)

    return restricted_eval


def warm_up() -> None:
    """Compile once in the zygote so forks share RestrictedPython's imported state."""
    compile_restricted_exec("x = [i for i in range(3)]\nprint(x)", "<warm-up>")
