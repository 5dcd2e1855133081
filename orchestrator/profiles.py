"""Prompt profiles by model family: the wording, a short example and stop
sequences that suit a family, chosen from the model's name.

A profile only adjusts the defaults. Users who pass their own
:class:`~orchestrator.prompts.Prompts` to the orchestrator get exactly what
they passed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .prompts import Prompts

# Small code models copy the shape of an example closely, so it shows the
# whole exchange: one program, its printed checks, a plain-text answer.
FENCED_EXAMPLE = """\
Example:
Task: How many of the numbers 1..1000 are divisible by 7 or 11?
You write:
```python
hits = [n for n in range(1, 1001) if n % 7 == 0 or n % 11 == 0]
print("count:", len(hits), "first:", hits[:3], "last:", hits[-1])
```
The output comes back: count: 220 first: [7, 11, 14] last: 994
You answer: 220 of the numbers 1..1000 are divisible by 7 or 11."""


@dataclass(frozen=True)
class Profile:
    """How to talk to one family of models.

    ``native_tool_calls`` is what the family is known to do when offered a
    tool: True (fills ``tool_calls``), False (writes the call as text, so
    ``tools="auto"`` starts with fenced code), None (unknown: try tools).
    ``stop``: sequences after which the model only invents output.
    """

    name: str
    pattern: str  # matched against the model's name, case-insensitively
    prompt_changes: dict = field(default_factory=dict)
    stop: tuple[str, ...] = ()
    native_tool_calls: bool | None = None

    def matches(self, model_name: str) -> bool:
        return re.search(self.pattern, model_name, re.IGNORECASE) is not None

    def prompts(self, base: Prompts | None = None) -> Prompts:
        return (base or Prompts()).replace(**self.prompt_changes)


GENERIC = Profile(name="generic", pattern=r".*")

PROFILES: tuple[Profile, ...] = (
    # Small Qwen coders served by llama.cpp: the Hermes call format appears
    # as plain text, and a reply goes on to invent the program's output.
    Profile(
        name="local-qwen-coder",
        pattern=r"^local:.*qwen",
        prompt_changes={"fence_example": FENCED_EXAMPLE},
        stop=("```output", "The output comes back:"),
        native_tool_calls=False,
    ),
    Profile(
        name="qwen",
        pattern=r"qwen",
        prompt_changes={"fence_example": FENCED_EXAMPLE},
        stop=("```output",),
    ),
    Profile(name="gemini", pattern=r"^gemini", native_tool_calls=True),
    GENERIC,
)


def profile_for(model_name: str) -> Profile:
    """The first profile whose pattern matches ``model_name`` (GENERIC at worst)."""
    return next(p for p in PROFILES if p.matches(model_name))
