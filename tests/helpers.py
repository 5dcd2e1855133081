"""Helpers shared by several test files."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from orchestrator.testing.fake_http import FakeModelServer
from orchestrator.types import CodeBlock, Conversation, ModelTurn, UserMessage


def fake_server_fixture(server_cls: type[FakeModelServer]) -> Callable[[], Iterator[FakeModelServer]]:
    """A ``fake`` fixture serving an empty script of ``server_cls`` for one test."""

    @pytest.fixture
    def fake() -> Iterator[FakeModelServer]:
        with server_cls() as server:
            yield server

    return fake


def ask(text: str = "hi", system: str = "") -> Conversation:
    """A conversation of one user message."""
    return Conversation(system=system, messages=[UserMessage(text=text)])


def tool_call_turn(code: str, call_id: str, text: str = "") -> ModelTurn:
    """A model turn that called run_python once (as another provider's model would have written it)."""
    return ModelTurn(text=text, code_blocks=[CodeBlock(code, source="tool_call", call_id=call_id)])
