"""Helpers shared by several test files."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from orchestrator.testing.fake_http import FakeModelServer


def fake_server_fixture(server_cls: type[FakeModelServer]) -> Callable[[], Iterator[FakeModelServer]]:
    """A ``fake`` fixture serving an empty script of ``server_cls`` for one test."""

    @pytest.fixture
    def fake() -> Iterator[FakeModelServer]:
        with server_cls() as server:
            yield server

    return fake
