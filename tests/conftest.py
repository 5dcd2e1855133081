"""Shared fixtures. Areas keep their own fixtures in their own test modules."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from executors import Limits, LocalExecutor

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture
async def local_executor():
    executor = LocalExecutor(limits=Limits(timeout_s=10))
    yield executor
    await executor.aclose()


@pytest.fixture(autouse=True)
def _reset_logging():
    """The CLI configures structlog process-wide; give each test the defaults back."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session", autouse=True)
def _no_llama_server_left():
    """No test may leave a llama.cpp server child (real or fake) running."""
    import psutil

    yield
    left = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "llama_child" in " ".join(child.cmdline()):
                left.append(child.pid)
        except psutil.Error:
            pass  # exited meanwhile
    assert not left, f"llama.cpp server children left after the tests: pids {left}"
