"""The executor contract every backend shares: the base class, the one Isolation
vocabulary, the test double, the code that runs inside the sandbox, and the
minimal init the code runs under at every level."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from executors import BaseExecutor, ExecutionResult, Isolation, Limits, LocalExecutor, Outcome, get_executor
from executors._shared import INSIDE
from executors.isolation import IsolationUnavailable, Isolator
from executors.sandbox import SandboxExecutor
from executors.testing import FunctionExecutor, returning

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# restricted_policy.py is RestrictedPython's policy: the one third-party import the child makes.
ALLOWED_THIRD_PARTY = {"restricted_policy.py": {"RestrictedPython"}}


# -- code that runs inside the sandbox ----------------------------------------------------


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", sorted(INSIDE.glob("*.py")), ids=lambda p: p.name)
def test_code_inside_the_sandbox_imports_only_the_standard_library(path):
    siblings = {p.stem for p in INSIDE.glob("*.py")}  # run as scripts, they import each other by name
    allowed = set(sys.stdlib_module_names) | siblings | {"__future__"} | ALLOWED_THIRD_PARTY.get(path.name, set())
    assert _imported_roots(path) - allowed == set(), f"{path.name} imports outside the standard library"


def test_the_inside_check_catches_a_third_party_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom numpy import array\nimport json.decoder\n")
    assert _imported_roots(probe) - set(sys.stdlib_module_names) == {"numpy"}


# -- one Isolation, one result shape ----------------------------------------------------------


def test_isolation_is_one_string_enum_and_results_round_trip_through_json():
    assert Isolation.BWRAP == "bwrap" and f"{Isolation.REMOTE}" == "remote"
    result = ExecutionResult(outcome=Outcome.OK, isolation=Isolation.UNSHARE)
    stored = json.loads(json.dumps(result.to_json()))
    assert stored["isolation"] == "unshare"
    assert ExecutionResult.from_json(stored).isolation is Isolation.UNSHARE


@pytest.mark.parametrize(
    "stored, loaded",
    [
        ("bwrap", Isolation.BWRAP),
        ("remote", Isolation.REMOTE),
        ("kernel", Isolation.KERNEL),
        ("undetected", Isolation.NONE),
    ],
)
def test_results_stored_with_plain_strings_still_load(stored, loaded):
    assert ExecutionResult.from_json({"outcome": "OK", "isolation": stored}).isolation is loaded
    assert ExecutionResult(outcome=Outcome.OK, isolation=stored).isolation is loaded


def test_an_unknown_stored_isolation_is_a_clear_error():
    with pytest.raises(ValueError, match=r"ExecutionResult.isolation: cannot read 'moon'"):
        ExecutionResult.from_json({"outcome": "OK", "isolation": "moon"})


def test_sandbox_error_results_are_made_one_way():
    result = ExecutionResult.sandbox_error("no room", executor="x", isolation=Isolation.BWRAP, duration_s=1.5)
    assert (result.outcome, result.error_type, result.error_message, result.duration_s) == (
        Outcome.SANDBOX_ERROR,
        "SandboxError",
        "no room",
        1.5,
    )


def test_reading_an_executors_isolation_never_probes():
    isolator = Isolator(level_request="rlimits")
    executor = SandboxExecutor(isolation=isolator)
    assert executor.isolation is None and isolator.detected is None
    assert LocalExecutor().isolation is Isolation.NONE


# -- the base class and the double ---------------------------------------------------------


async def test_limits_are_resolved_once_for_every_backend():
    seen = []
    default = Limits(timeout_s=3)
    executor = FunctionExecutor(
        lambda code, files, limits: seen.append(limits) or ExecutionResult(Outcome.OK), limits=default
    )
    await executor.execute("a")
    await executor.execute("b", limits=Limits(timeout_s=9))
    assert [limits.timeout_s for limits in seen] == [3, 9]


async def test_function_executor_records_calls_and_accepts_async_handlers():
    async def handler(code, files, limits):
        await asyncio.sleep(0)
        return ExecutionResult(outcome=Outcome.OK, stdout=code.upper())

    async with FunctionExecutor(handler, stateful=True) as executor:
        result = await executor.execute("hi", session="s1")
        await executor.reset("s1")
    assert result.stdout == "HI" and result.executor == "function"
    assert executor.sessions == ["s1"] and executor.resets == ["s1"] and executor.closed
    assert isinstance(executor, BaseExecutor)


async def test_function_executor_lets_handler_errors_through_and_checks_what_it_returns():
    def broken(code, files, limits):
        raise RuntimeError("no room at the inn")

    with pytest.raises(RuntimeError, match="no room"):
        await FunctionExecutor(broken).execute("x")
    with pytest.raises(TypeError, match="returned str, not an ExecutionResult"):
        await FunctionExecutor(lambda _code, _files, _limits: "OK").execute("x")
    canned = ExecutionResult(outcome=Outcome.FAILED, stdout="same")
    double = FunctionExecutor(returning(canned))
    first, second = await double.execute("x"), await double.execute("y")
    assert first.stdout == second.stdout == "same" and first is not second


def test_every_built_in_executor_is_a_base_executor():
    for name in ("local", "sandbox", "pool", "restricted"):
        assert isinstance(get_executor(name), BaseExecutor), name


# -- the minimal init ----------------------------------------------------------------------

SELF_SIGNAL = "import os, signal\nprint('running', flush=True)\nos.kill(os.getpid(), signal.SIGSEGV)\nprint('survived')"


@pytest.mark.parametrize("level", ["bwrap", "unshare", "rlimits"])
async def test_a_signal_the_code_sends_itself_is_delivered_at_every_level(level):
    isolator = Isolator(level_request=level)
    try:
        await asyncio.to_thread(isolator.detect)
    except IsolationUnavailable as exc:
        if level == "bwrap" and IN_CI:
            pytest.fail(f"CI must have bubblewrap: {exc}")
        pytest.skip(f"{level} is not available here: {exc}")
    async with SandboxExecutor(isolation=isolator) as executor:
        result = await executor.execute(SELF_SIGNAL)
        pid = await executor.execute("import os\nprint(os.getpid())")
    assert result.outcome is Outcome.KILLED and result.signal == signal.SIGSEGV, result
    assert result.stdout == "running\n"
    assert pid.stdout.strip() != "1", "the code must never be a PID namespace's first process"


async def test_a_signal_the_code_sends_itself_is_delivered_without_isolation():
    async with LocalExecutor() as executor:
        result = await executor.execute(SELF_SIGNAL)
        term = await executor.execute("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)")
    assert result.outcome is Outcome.KILLED and result.signal == signal.SIGSEGV, result
    assert term.outcome is Outcome.KILLED and term.signal == signal.SIGTERM


async def test_the_init_forwards_a_signal_to_the_code_and_passes_its_exit_status_on(tmp_path):
    init = str(INSIDE / "init.py")
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, init, sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"ready\n"
    proc.send_signal(signal.SIGTERM)  # to the init, which passes it to the code
    assert await asyncio.wait_for(proc.wait(), 10) == 7
