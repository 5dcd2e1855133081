"""Executors under attack: every sandboxing executor, each isolation level we can force.

Each executor is built once per module (pool zygotes take seconds to warm).
A target whose isolation is not available here is skipped with the reason;
with ``CI=true`` a missing bubblewrap is an error instead, because CI must
test the real boundary.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from executors import Executor, UnknownExecutorError, get_executor
from executors.isolation import IsolationUnavailable, Isolator
from executors.sandbox import SandboxExecutor

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

TARGETS = ["sandbox-bwrap", "sandbox-unshare", "sandbox-rlimits", "pool", "restricted"]


@dataclass
class Target:
    """One executor under test and what its isolation promises."""

    label: str
    executor: Executor
    guarantees: frozenset[str]
    restricted: bool  # runs RestrictedPython: most imports are refused by policy
    work_root: Path | None = None  # where the executor makes its workspaces, when we chose it


def _skip_or_fail(reason: str, *, required_in_ci: bool) -> None:
    if required_in_ci and IN_CI:
        pytest.fail(f"CI must test this boundary, but: {reason}", pytrace=False)
    pytest.skip(reason)


async def _sandbox_target(level: str) -> Target:
    if level == "bwrap" and shutil.which("bwrap") is None:
        _skip_or_fail("bubblewrap is not installed (apt-get install bubblewrap)", required_in_ci=True)
    isolator = Isolator(level_request=level)
    work_root = Path(tempfile.mkdtemp(prefix="codeloop-hostile-work-"))
    work_root.chmod(0o711)  # the sandbox user must pass through at the rlimits level
    executor = SandboxExecutor(isolation=isolator, work_root=str(work_root))
    try:
        await executor.level()
    except IsolationUnavailable as exc:
        shutil.rmtree(work_root)
        _skip_or_fail(f"isolation level {level!r} is not available here: {exc}", required_in_ci=level == "bwrap")
    return Target(f"sandbox-{level}", executor, isolator.guarantees, restricted=False, work_root=work_root)


async def _registered_target(name: str) -> Target:
    try:
        executor = get_executor(name)
    except UnknownExecutorError:
        pytest.skip(f"executor {name!r} is not registered yet")
    start = getattr(executor, "start", None)
    if start is not None:
        await start()
    isolator = getattr(executor, "isolator", None)
    if not isinstance(isolator, Isolator):
        # Pool-based executors use the same detection as the sandbox: the strongest level available.
        isolator = Isolator()
    return Target(name, executor, isolator.guarantees, restricted=name == "restricted")


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=TARGETS)
async def target(request):
    label = request.param
    if label.startswith("sandbox-"):
        built = await _sandbox_target(label.removeprefix("sandbox-"))
    else:
        built = await _registered_target(label)
    yield built
    await built.executor.aclose()
    if built.work_root is not None:
        shutil.rmtree(built.work_root)
