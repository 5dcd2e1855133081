"""Shared fixtures, and the one table that says what kind each test module is.

Areas keep their own fixtures in their own test modules.
"""

from __future__ import annotations

import subprocess
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


# The kind of every test module, by file name (README "Running the tests" says how to run each):
#   unit         doubles only (scripted models, FunctionExecutor, fake servers on threads of this
#                process): no subprocess, sandbox, kernel or model; the whole set runs in seconds.
#   integration  real executors, subprocesses, kernels, servers in child processes, the CLI end to end.
#   hostile      the executors under attack (tests/hostile).
#   slow         minutes, not seconds (a Ray cluster).
# Tests needing a real model file carry @pytest.mark.real_model themselves, inside their module's kind.
# A module missing here fails collection: a new file says what it is before it runs.
KINDS: dict[str, str] = {
    "test_batch_report.py": "unit",
    "test_batch_runner.py": "unit",
    "test_bench_datasets.py": "unit",
    "test_bench_metrics.py": "unit",
    "test_bench_scoring.py": "unit",
    "test_extract.py": "unit",
    "test_inputs_batch.py": "unit",
    "test_jsondata.py": "unit",
    "test_jupyter_messages.py": "unit",
    "test_loop_policy.py": "unit",
    "test_mcp_units.py": "unit",
    "test_prompts.py": "unit",
    "test_provider_plumbing.py": "unit",
    "test_serve_wire.py": "unit",
    "test_store_batch.py": "unit",
    "test_toolcalls.py": "unit",
    "test_types.py": "unit",
    "test_anthropic.py": "integration",
    "test_gemini_env.py": "integration",
    "test_pool_warm.py": "integration",
    "test_batch_cli.py": "integration",
    "test_batch_crash.py": "integration",
    "test_bench_prompt_set.py": "integration",
    "test_bench_reference.py": "integration",
    "test_bench_refinement.py": "integration",
    "test_bench_report.py": "integration",
    "test_cli.py": "integration",
    "test_executor_contract.py": "integration",
    "test_fake_servers.py": "integration",
    "test_gemini.py": "integration",
    "test_images.py": "integration",
    "test_jupyter.py": "integration",
    "test_layering.py": "integration",
    "test_local_executor.py": "integration",
    "test_local_model.py": "integration",
    "test_logging.py": "integration",
    "test_loop.py": "integration",
    "test_loop_config.py": "integration",
    "test_loop_honesty.py": "integration",
    "test_loop_turns.py": "integration",
    "test_mcp.py": "integration",
    "test_model_files.py": "integration",
    "test_mcp_sessions.py": "integration",
    "test_openai_compat.py": "integration",
    "test_pool.py": "integration",
    "test_real_model_loop.py": "integration",
    "test_real_replays.py": "integration",
    "test_replay.py": "integration",
    "test_restricted.py": "integration",
    "test_sandbox.py": "integration",
    "test_secrets.py": "integration",
    "test_serve.py": "integration",
    "test_serve_cli.py": "integration",
    "test_serve_errors.py": "integration",
    "test_session.py": "integration",
    "test_store_migrations.py": "integration",
    "test_hostile.py": "hostile",
    "test_mcp_hostile.py": "hostile",
    "test_batch_ray.py": "slow",
}


# Kinds that are one per module: `-m unit` (say) need not even import the other modules.
MODULE_KINDS = ("unit", "integration", "hostile")


def pytest_ignore_collect(collection_path, config):
    wanted = (config.getoption("markexpr") or "").strip()
    kind = KINDS.get(collection_path.name)
    if wanted in MODULE_KINDS and kind is not None and kind != wanted:
        return True
    return None  # let pytest decide


def pytest_collection_modifyitems(config, items):
    unclassified = sorted({item.path.name for item in items if item.path.name not in KINDS})
    if unclassified:
        raise pytest.UsageError(
            f"tests/conftest.py KINDS: classify these test modules as unit, integration, "
            f"hostile or slow: {', '.join(unclassified)}"
        )
    for item in items:
        item.add_marker(KINDS[item.path.name])


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request, monkeypatch):
    """A unit test that starts a subprocess (directly or through asyncio) is misclassified."""
    if request.node.get_closest_marker("unit") is None:
        return

    def refuse(self, args, *rest, **kwargs):
        raise AssertionError(
            f"unit tests use doubles only, but this one started a process: {args!r}; "
            f"make it use a double or classify its module as integration in tests/conftest.py"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
