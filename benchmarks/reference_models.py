"""Reference models: scripted test doubles whose scores are known in advance.

They check the harness itself (data loading, the loop, the executor, answer
extraction, scoring, metrics), not any real model. Each is a
:class:`ScriptedModel` whose script looks up the item by its prompt:

- ``canonical_humaneval_model``: HumanEval's canonical solution, tested with
  the problem's own check(); must score 164/164.
- ``broken_then_fixed_humaneval_model``: the canonical solution with a
  ``raise`` as the first statement of the function on the first attempt, the
  canonical solution after the error comes back; must score 0 at k=0 and
  every item at k=1.
- ``wrong_humaneval_model``: a function that returns None; it runs without
  error, and must score 0.
- ``annotation_gsm8k_model``: a program that evaluates, in order, the
  calculator annotations (``<<48/2=24>>``) of GSM8K's reference solution and
  prints the last value; the summary states the printed number. It solves
  exactly the problems whose last annotation is the final answer.
- ``wrong_gsm8k_model``: prints the reference answer plus one; must score 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from orchestrator.models.scripted import ScriptedModel
from orchestrator.types import Conversation, ExecutionMessage, ToolSpec

from .datasets import BenchItem
from .scoring import format_number, parse_number

ANNOTATION = re.compile(r"<<([^<>=]*)=([^<>]*)>>")

BROKEN_MARKER = "reference double: broken on purpose on the first attempt"


# --- Programs ----------------------------------------------------------------------


def canonical_program(item: BenchItem) -> str:
    """The full function (prompt + canonical body) and the problem's own test."""
    solution = item.source_prompt + item.meta["canonical_solution"]
    return f"{solution}\n\n{item.test}\n\ncheck({item.entry_point})\nprint('all tests passed')\n"


def broken_program(item: BenchItem) -> str:
    """The canonical program whose function raises before doing anything."""
    broken = item.source_prompt + f"    raise RuntimeError({BROKEN_MARKER!r})\n" + item.meta["canonical_solution"]
    return f"{broken}\n\n{item.test}\n\ncheck({item.entry_point})\nprint('all tests passed')\n"


def wrong_program(item: BenchItem) -> str:
    """A function that runs fine and answers None to everything."""
    return f"{item.source_prompt}    return None\n\nprint({item.entry_point}.__name__, 'defined')\n"


def annotation_program(solution: str) -> str:
    """A program that evaluates GSM8K's calculator annotations in order and
    prints the last value (as an integer when it is one)."""
    steps = [expr.strip() for expr, _ in ANNOTATION.findall(solution)]
    if not steps:
        return "print('the reference solution has no calculator annotation')\n"
    lines = [f"step_{i} = {expr}" for i, expr in enumerate(steps)]
    last = f"step_{len(steps) - 1}"
    lines.append(f"answer = int({last}) if float({last}).is_integer() else {last}")
    lines.append("print(answer)")
    return "\n".join(lines) + "\n"


def wrong_answer_program(item: BenchItem) -> str:
    value = parse_number(item.answer or "0") or 0.0
    return f"print({format_number(value + 1)})\n"


# --- Scripts -----------------------------------------------------------------------


def fenced(code: str) -> str:
    return f"Here is the program.\n\n```python\n{code}```\n"


def _last_execution(conversation: Conversation):
    return next((m.result for m in reversed(conversation.messages) if isinstance(m, ExecutionMessage)), None)


class ItemScript:
    """The script behind a reference model: ``program(item, executions_so_far)``
    writes the code; ``summary(item, last_stdout)`` writes the final answer.

    A summary is given when the loop asks without tools, or after the last
    execution succeeded (a model that is done stops writing code)."""

    def __init__(
        self,
        items: Sequence[BenchItem],
        program: Callable[[BenchItem, int], str],
        summary: Callable[[BenchItem, str], str],
    ) -> None:
        self.by_prompt = {item.prompt: item for item in items}
        self.program = program
        self.summary = summary

    def __call__(self, conversation: Conversation, tools: Sequence[ToolSpec]) -> str:
        prompt = conversation.first_prompt
        item = self.by_prompt.get(prompt)
        if item is None:
            raise KeyError(f"reference model: no benchmark item has the prompt {prompt[:80]!r}")
        last = _last_execution(conversation)
        if not tools or (last is not None and last.ok):
            return self.summary(item, last.stdout if last is not None else "")
        return fenced(self.program(item, conversation.count("execution")))


def _code_summary(item: BenchItem, stdout: str) -> str:
    return f"The function `{item.entry_point}` is written above and its tests ran."


def _number_summary(item: BenchItem, stdout: str) -> str:
    value = parse_number(stdout)
    if value is None:
        return "The program printed no number, so I have no answer."
    return f"The final answer is {format_number(value)}."


def canonical_humaneval_model(items: Sequence[BenchItem]) -> ScriptedModel:
    return ScriptedModel(
        ItemScript(items, lambda item, n: canonical_program(item), _code_summary), name="reference:canonical"
    )


def broken_then_fixed_humaneval_model(items: Sequence[BenchItem]) -> ScriptedModel:
    script = ItemScript(
        items, lambda item, n: broken_program(item) if n == 0 else canonical_program(item), _code_summary
    )
    return ScriptedModel(script, name="reference:broken-then-fixed")


def wrong_humaneval_model(items: Sequence[BenchItem]) -> ScriptedModel:
    return ScriptedModel(ItemScript(items, lambda item, n: wrong_program(item), _code_summary), name="reference:wrong")


def annotation_gsm8k_model(items: Sequence[BenchItem]) -> ScriptedModel:
    script = ItemScript(items, lambda item, n: annotation_program(item.meta["solution"]), _number_summary)
    return ScriptedModel(script, name="reference:gsm8k-annotations")


def wrong_gsm8k_model(items: Sequence[BenchItem]) -> ScriptedModel:
    return ScriptedModel(
        ItemScript(items, lambda item, n: wrong_answer_program(item), _number_summary), name="reference:gsm8k-wrong"
    )


REFERENCE_MODELS: dict[str, Callable[[Sequence[BenchItem]], ScriptedModel]] = {
    "canonical": canonical_humaneval_model,
    "broken-then-fixed": broken_then_fixed_humaneval_model,
    "wrong": wrong_humaneval_model,
    "gsm8k-annotations": annotation_gsm8k_model,
    "gsm8k-wrong": wrong_gsm8k_model,
}
