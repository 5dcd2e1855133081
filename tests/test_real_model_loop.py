"""The loop with a real model: the 0.5B Qwen coder served by llama.cpp
through ``local:``, at temperature 0, with live execution in the sandbox."""

from __future__ import annotations

import re

import pytest

from executors import Limits, get_executor
from orchestrator import Orchestrator, RunStatus
from orchestrator.models import get_model
from tests.real_models import REAL_MODEL, require_real_model

PRIMES = (
    "What is the sum of the first 50 prime numbers? Generate and run code for the calculation, "
    "and make sure you get all 50."
)


@pytest.mark.real_model
async def test_primes_prompt_through_local_runs_code_and_answers_what_it_printed():
    require_real_model()
    model = get_model(f"local:{REAL_MODEL}")
    executor = get_executor("sandbox")
    try:
        result = await Orchestrator(model, executor, limits=Limits(timeout_s=30)).run(PRIMES)
    finally:
        await model.aclose()
        await executor.aclose()
    assert result.status is RunStatus.SOLVED, (result.status, result.error, result.summary)
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    printed = re.findall(r"\d+", result.attempts[-1].result.stdout)
    assert printed, result.attempts[-1].result.stdout
    # Whatever the model concluded, its answer states a number the code really printed.
    assert any(re.search(rf"\b{n}\b", result.summary) for n in printed), (printed, result.summary)
    if "5117" not in result.attempts[-1].result.stdout:
        pytest.xfail(
            f"the 0.5B model computed {printed[-1]}, not 5117 (it sums the primes below 50); "
            "see benchmarks/reports/real-models.md"
        )
