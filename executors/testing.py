"""An executor double for tests, in the spirit of httpx's ``MockTransport``.

``FunctionExecutor(handler)`` runs no code: each execution calls
``handler(code, files, limits)`` (plain or ``async``) and returns what it
returns; an exception it raises propagates, as a broken executor's would.
Every call is recorded with its session, and so is every reset, so a test
can check what the loop asked for without a subprocess::

    executor = FunctionExecutor(lambda code, files, limits: ExecutionResult(outcome=Outcome.OK, stdout="42\\n"))
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from .base import BaseExecutor, ExecutionResult, InputFile, Limits

Handler = Callable[[str, Sequence[InputFile], Limits], "ExecutionResult | Awaitable[ExecutionResult]"]


@dataclass(frozen=True)
class Call:
    """One execution the double was asked for."""

    code: str
    files: tuple[InputFile, ...]
    limits: Limits
    session: str | None


class FunctionExecutor(BaseExecutor):
    """Test double: answers each execution with ``handler(code, files, limits)``."""

    def __init__(
        self, handler: Handler, *, name: str = "function", stateful: bool = False, limits: Limits | None = None
    ) -> None:
        super().__init__(limits)
        self.handler = handler
        self.name = name
        self.stateful = stateful
        self.calls: list[Call] = []
        self.resets: list[str | None] = []
        self.closed = False

    async def _run(
        self, code: str, *, files: Sequence[InputFile], limits: Limits, session: str | None
    ) -> ExecutionResult:
        self.calls.append(Call(code, tuple(files), limits, session))
        result = self.handler(code, files, limits)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, ExecutionResult):
            raise TypeError(f"FunctionExecutor handler returned {type(result).__name__}, not an ExecutionResult")
        if not result.executor:
            result.executor = self.name
        return result

    @property
    def sessions(self) -> list[str | None]:
        """The session each execution named, in order."""
        return [call.session for call in self.calls]

    async def reset(self, session: str | None = None) -> None:
        self.resets.append(session)

    async def aclose(self) -> None:
        self.closed = True


def returning(result: ExecutionResult) -> Handler:
    """A handler that answers every execution with a copy of ``result`` (callers may change theirs)."""
    return lambda code, files, limits: copy.deepcopy(result)


__all__ = ["Call", "FunctionExecutor", "Handler", "returning"]
