"""Tool calls that a model wrote as text instead of filling ``tool_calls``.

Small open models are offered a function and then write the call out in
their reply. These are the forms seen from real models (Qwen, Hermes, Llama,
Mistral, Gemma, functionary), each read as a call to the offered tool:

- ``<tool_call>{"name": "run_python", "arguments": {"code": ...}}</tool_call>``
  (Hermes/Qwen; the closing tag may be missing when generation stopped);
- the same JSON object bare in the text, or in a fenced block of any label
  (``json``, ``tool_call``, none, even ``python`` where it would otherwise
  run as a dict literal), also as a list of calls or after ``[TOOL_CALLS]``;
- the OpenAI shape ``{"type": "function", "function": {"name": ..., "arguments": "<json string>"}}``
  and Llama's ``{"name": ..., "parameters": {...}}``;
- ``<function=run_python>{"code": ...}</function>``;
- a program that only wraps itself: ``run_python('''...''')``,
  ``run_python(code=...)``, ``[run_python(code="...")]``, with or without an
  ``import`` of ``run_python`` (see :func:`unwrap_tool_program`).

Only the offered tool's names count: a call naming anything else is never
run, and neither is the rest of the reply once a call was found.
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
from collections.abc import Collection, Iterator
from typing import Any

_TAGGED = re.compile(r"<tool_call>\s*(?P<body>.*?)\s*(?:</tool_call>|\Z)", re.DOTALL)
_FUNCTION_TAG = re.compile(r"<function=(?P<name>[\w.-]+)>\s*(?P<body>.*?)\s*(?:</function>|\Z)", re.DOTALL)
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n(?P<body>.*?)^[ \t]*\1[ \t]*$", re.DOTALL | re.MULTILINE)
# Where a bare JSON call may start: an opening brace or bracket followed by a key.
_OBJECT_START = re.compile(r"[\[{]\s*[\[{]?\s*[\"']")

_NAME_KEYS = ("name", "tool", "tool_name", "function_name", "recipient_name")
_ARGUMENT_KEYS = ("arguments", "parameters", "args", "input", "kwargs")


def find_text_tool_calls(text: str, tool_names: Collection[str]) -> list[str]:
    """The code of each call to one of ``tool_names`` written in ``text``, in order.

    Calls to other names are ignored (and never executed); an empty list means
    the reply holds no call to an offered tool written as text.
    """
    if not tool_names or not text:
        return []
    codes: list[str] = []
    for obj in _candidate_objects(text, tool_names):
        code = _code_of_call(obj, tool_names)
        if code is not None and code.strip():
            # Code in a triple-quoted string keeps the indentation of the JSON around it.
            code = textwrap.dedent(code).strip("\n")
            if code not in codes:
                codes.append(code)
    return codes


def find_misnamed_calls(text: str, tool_names: Collection[str]) -> list[str]:
    """Names of calls written as text that carry code but name a tool that
    was never offered (small models name the call after the task, such as
    ``sum_of_first_50_primes``). They are not run; the model is told."""
    names: list[str] = []
    for obj in _candidate_objects(text, ()):
        if not looks_like_tool_call(obj):
            continue
        inner = obj["function"] if isinstance(obj.get("function"), dict) else obj
        name = next((inner[k] for k in _NAME_KEYS if isinstance(inner.get(k), str)), None)
        if name and name not in tool_names and _code_of_call(obj, (name,)) and name not in names:
            names.append(name)
    return names


def looks_like_tool_call(value: Any) -> bool:
    """A dict (or list of dicts) shaped like a tool call, whatever the name:
    such a value written as a program is a call, not code to run."""
    if isinstance(value, list):
        return bool(value) and all(looks_like_tool_call(v) for v in value)
    if not isinstance(value, dict):
        return False
    if isinstance(value.get("function"), dict):
        return True
    has_name = any(isinstance(value.get(k), str) for k in _NAME_KEYS)
    return has_name and any(k in value for k in _ARGUMENT_KEYS)


def literal_call(code: str) -> Any:
    """The value of a program that is a single dict/list literal, else None."""
    try:
        tree = ast.parse(code.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        return _loads(code)  # JSON with true/false/null is not a Python literal
    if not isinstance(tree.body, (ast.Dict, ast.List)):
        return None
    try:
        return ast.literal_eval(tree.body)
    except (ValueError, SyntaxError, TypeError, RecursionError):
        return None


def unwrap_tool_program(code: str, tool_names: Collection[str]) -> str | None:
    """The inner code when a program only calls an offered tool with literal code.

    ``run_python('''print(1)''')`` becomes ``print(1)``. Statements that import
    the tool (``from x import run_python``), assign the literal code to a name
    that is then passed, or wrap the call in ``print(...)`` or a list are part
    of the wrapper. Anything else in the program means it is real code that
    happens to mention the name: None.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):
        return None
    strings: dict[str, str] = {}
    inner: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and _imports_only(node, tool_names):
            continue
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            strings[node.targets[0].id] = node.value.value
            continue
        calls = _tool_calls_in(node, tool_names)
        if calls is None:
            return None
        for call in calls:
            argument = _code_argument(call, strings)
            if argument is None:
                return None
            inner.append(argument)
    return "\n\n".join(inner) if inner else None


# -- finding candidates ----------------------------------------------------------


def _candidate_objects(text: str, tool_names: Collection[str]) -> Iterator[Any]:
    for match in _TAGGED.finditer(text):
        yield from _flatten(_loads(match["body"]))
    for match in _FUNCTION_TAG.finditer(text):
        arguments = _loads(match["body"])
        yield {"name": match["name"], "arguments": arguments if arguments is not None else match["body"]}
    for match in _FENCE.finditer(text):
        body = match["body"].strip()
        if body[:1] in "{[":
            yield from _flatten(literal_call(body))
    yield from _bare_objects(text)


def _bare_objects(text: str) -> Iterator[Any]:
    decoder = json.JSONDecoder(strict=False)  # models put raw newlines inside strings
    position = 0
    while True:
        match = _OBJECT_START.search(text, position)
        if match is None:
            return
        start = match.start()
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            position = start + 1
            continue
        yield from _flatten(value)
        position = end


def _flatten(value: Any) -> Iterator[Any]:
    if isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    elif isinstance(value, dict):
        yield value


def _loads(text: str) -> Any:
    text = text.strip()
    if text.startswith("[TOOL_CALLS]"):
        text = text[len("[TOOL_CALLS]") :].strip()
    try:
        return json.loads(text, strict=False)
    except ValueError:
        pass
    try:
        tree = ast.parse(text, mode="eval")
        return ast.literal_eval(tree.body) if isinstance(tree.body, (ast.Dict, ast.List)) else None
    except (SyntaxError, ValueError, TypeError, RecursionError):
        return None


# -- reading one call ------------------------------------------------------------


def _code_of_call(obj: dict[str, Any], tool_names: Collection[str]) -> str | None:
    function = obj.get("function")
    if isinstance(function, dict):
        obj = function
    name = next((obj[k] for k in _NAME_KEYS if isinstance(obj.get(k), str)), None)
    if name is None and isinstance(function, str):
        name = function
    if name not in tool_names:
        return None
    arguments = next((obj[k] for k in _ARGUMENT_KEYS if k in obj), None)
    if arguments is None and isinstance(obj.get("code"), str):
        return obj["code"]
    if isinstance(arguments, str):
        decoded = _loads(arguments)
        if isinstance(decoded, dict):
            arguments = decoded
        else:
            return arguments  # the code itself, given as the arguments string
    if isinstance(arguments, dict):
        code = arguments.get("code", arguments.get("source", arguments.get("program")))
        return code if isinstance(code, str) else None
    return None


def _imports_only(node: ast.Import | ast.ImportFrom, tool_names: Collection[str]) -> bool:
    return all((alias.asname or alias.name).split(".")[-1] in tool_names for alias in node.names)


def _tool_calls_in(node: ast.stmt, tool_names: Collection[str]) -> list[ast.Call] | None:
    """The tool calls making up a statement, or None if it does anything else."""
    if not isinstance(node, ast.Expr):
        return None
    value = node.value
    if isinstance(value, ast.Call) and _func_name(value.func) == "print" and len(value.args) == 1:
        value = value.args[0]
    items = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
    calls = [item for item in items if isinstance(item, ast.Call) and _func_name(item.func) in tool_names]
    return calls if calls and len(calls) == len(items) else None


def _func_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _code_argument(call: ast.Call, strings: dict[str, str]) -> str | None:
    candidates = list(call.args[:1]) + [kw.value for kw in call.keywords if kw.arg in ("code", "source", None)]
    for value in candidates:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            return value.value
        if isinstance(value, ast.Name) and value.id in strings:
            return strings[value.id]
    return None
