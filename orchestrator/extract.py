"""Find the Python a model wrote in its reply.

A line-based reader of Markdown code fences (CommonMark rules, loosened where
models are sloppy). Which fences count as code:

- labelled ``python``, ``py``, ``python3``, ``py3`` or ``tool_code`` (Gemini),
  in any case and with extras after the label (```` ```Python ````,
  ```` ```python title="x" ````, ```` ```{python} ````): always code, even when it
  does not parse, so the syntax error goes back to the model;
- unlabelled: code only when it parses and does something (see ``_does_something``);
- any other label (bash, json, output, text, sql, pycon, ...): never code.

Blocks with no statements (empty, only comments) are dropped. Fences inside a
``<think>...</think>`` section are drafts from the model's reasoning and are
dropped too. ``>>>`` REPL transcripts are not converted: models write them to
illustrate, not to be run, and the output lines mixed in make them ambiguous.

Tool calls written as text (see :mod:`orchestrator.toolcalls`) come first: when
a reply holds a call to an offered tool, that call's code is the turn's code
and nothing else in the reply runs. A fenced block that is itself a tool-call
object is never run as a dict literal, and a program that only wraps itself
in ``run_python(...)`` is unwrapped.
"""

from __future__ import annotations

import ast
import builtins
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.toolcalls import find_text_tool_calls, literal_call, looks_like_tool_call, unwrap_tool_program
from orchestrator.types import RUN_PYTHON, CodeBlock

PYTHON_LABELS = frozenset({"python", "py", "python3", "py3", "tool_code"})

# CommonMark allows 3 spaces; fences inside (nested) list items sit deeper.
MAX_FENCE_INDENT = 8

_FENCE_OPEN = re.compile(r"(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)")
# First word of the info string: "python", "{python echo=FALSE}", "{.py}", "python:main.py".
_LABEL = re.compile(r"\{?\s*\.?(?P<label>[\w+#-]*)")
_BUILTIN_NAMES = frozenset(dir(builtins))
_THINKING = re.compile(r"<think>.*?(?:</think>|\Z)|\A.*?</think>", re.DOTALL)
DEFAULT_TOOL_NAMES = (RUN_PYTHON.name,)


@dataclass(frozen=True)
class _Fence:
    indent: int
    char: str
    length: int
    label: str | None  # lower-cased first word of the info string; None when unlabelled

    @property
    def may_be_python(self) -> bool:
        return self.label is None or self.label in PYTHON_LABELS


def extract_code(text: str, tool_names: Iterable[str] = DEFAULT_TOOL_NAMES) -> list[CodeBlock]:
    """The Python code in a model's reply, in order: the calls to ``tool_names``
    written as text if there are any, else the fenced code blocks."""
    names = tuple(tool_names)
    calls = find_text_tool_calls(_THINKING.sub("", text), names)
    if calls:
        return [CodeBlock(code=unwrap_tool_program(code, names) or code, source="text_tool_call") for code in calls]
    blocks = []
    for block in _fenced_blocks(text):
        if looks_like_tool_call(literal_call(block.code)):
            continue  # a call to some other name: never run as a dict literal
        inner = unwrap_tool_program(block.code, names) if names else None
        blocks.append(CodeBlock(code=inner, language="python", source="text_tool_call") if inner else block)
    return blocks


def _fenced_blocks(text: str) -> list[CodeBlock]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[CodeBlock] = []
    thinking_from: int | None = None  # len(blocks) when a <think> section opened
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _open_fence(line)
        if fence is None:
            if line.lstrip().startswith("<think>"):
                thinking_from = len(blocks)
            if "</think>" in line:
                # Some chat templates put <think> in the prompt, so only the close shows.
                del blocks[thinking_from or 0 :]
                thinking_from = None
            i += 1
            continue
        end = _close_index(lines, i + 1, fence)
        body = _body(lines[i + 1 : end], fence.indent)
        if _is_code(body, fence):
            blocks.append(CodeBlock(code=body, language="python", source="fence"))
        i = end + 1
    if thinking_from is not None:  # cut off while still thinking
        del blocks[thinking_from:]
    return blocks


def join_blocks(blocks: Iterable[CodeBlock]) -> str:
    """One program from a turn's blocks: they run together, in order."""
    return "\n\n".join(block.code for block in blocks if block.code.strip())


def _indent_width(line: str) -> int:
    """Leading whitespace, in characters (a tab counts as one, as models rarely mix)."""
    return len(line) - len(line.lstrip(" \t"))


def _open_fence(line: str) -> _Fence | None:
    match = _FENCE_OPEN.fullmatch(line)
    if match is None or _indent_width(line) > MAX_FENCE_INDENT:
        return None
    fence, info = match["fence"], match["info"].strip()
    if fence[0] == "`" and "`" in info:
        return None  # inline code on one line, such as ```print(1)```
    label_match = _LABEL.match(info)  # every part of the pattern is optional, so it always matches
    label = (label_match["label"].lower() or None) if label_match else None
    return _Fence(indent=_indent_width(line), char=fence[0], length=len(fence), label=label)


def _closes(line: str, fence: _Fence) -> bool:
    stripped = line.strip()
    return len(stripped) >= fence.length and set(stripped) == {fence.char} and _indent_width(line) <= MAX_FENCE_INDENT


def _close_index(lines: list[str], start: int, fence: _Fence) -> int:
    """Index of the line closing ``fence``; len(lines) when it is never closed."""
    candidates = (j for j in range(start, len(lines)) if _closes(lines[j], fence))
    first = next(candidates, len(lines))
    # A bare ``` line can sit inside a Python triple-quoted string (code that
    # writes Markdown). If cutting there leaves such a string open, prefer the
    # first later closing line that yields code which parses.
    if not (fence.may_be_python and _opens_triple_quote(_body(lines[start:first], fence.indent))):
        return first
    for j in candidates:
        if parses(_body(lines[start:j], fence.indent)):
            return j
    return first


def _body(lines: list[str], indent: int) -> str:
    """Content lines without the fence's own indentation (as CommonMark strips it)."""
    stripped = [line[min(indent, _indent_width(line)) :] for line in lines]
    body = textwrap.dedent("\n".join(stripped))
    return re.sub(r"\A(?:[ \t]*\n)+", "", body).rstrip()


def _parse(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError, RecursionError):  # ValueError: null bytes; deep nesting
        return None


def _opens_triple_quote(code: str) -> bool:
    try:
        ast.parse(code)
    except SyntaxError as error:
        return "unterminated triple-quoted string" in str(error.msg)
    except (ValueError, RecursionError):
        return False
    return False


def parses(code: str) -> bool:
    """Whether ``code`` is a complete Python program (it may still fail when run)."""
    return _parse(code) is not None


def _is_code(body: str, fence: _Fence) -> bool:
    if not fence.may_be_python:
        return False
    tree = _parse(body)
    if tree is None:
        return fence.label is not None  # labelled Python with a syntax error still runs
    if not tree.body:
        return False  # empty, or only comments
    return fence.label is not None or _does_something(tree)


def _does_something(tree: ast.Module) -> bool:
    """Whether an unlabelled block is a program rather than output or prose
    that happens to parse: ``5117``, ``[1, 2]``, ``Hello``, ``Total: 42`` (an
    annotation), ``array([1, 2])`` are output; an assignment, import, def,
    loop, or a call to a builtin such as ``print(...)`` is code."""
    for node in tree.body:
        if isinstance(node, ast.Expr):
            if any(
                isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _BUILTIN_NAMES
                for n in ast.walk(node.value)
            ):
                return True
        elif not (isinstance(node, ast.AnnAssign) and node.value is None):
            return True
    return False
