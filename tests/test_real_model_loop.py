"""The loop with a real model: the 0.5B Qwen coder served by llama.cpp
through ``local:``, at temperature 0, with live execution."""

from __future__ import annotations

import pytest

from executors import Limits, get_executor
from orchestrator import Orchestrator, RunStatus
from orchestrator.models import get_model
from tests.real_models import REAL_MODEL, require_real_model

PRIMES = ("What is the sum of the first 50 prime numbers? Generate and run code for the calculation, "
          "and make sure you get all 50.")


@pytest.mark.real_model
async def test_primes_prompt_gives_5117_through_local():
    require_real_model()
    model = get_model(f"local:{REAL_MODEL}")
    executor = get_executor("sandbox")
    try:
        result = await Orchestrator(model, executor, limits=Limits(timeout_s=30)).run(PRIMES)
    finally:
        await model.aclose()
        await executor.aclose()
    assert result.status is RunStatus.SOLVED, (result.status, result.error, result.summary)
    assert "5117" in result.attempts[-1].result.stdout, [a.code for a in result.attempts]
    assert "5117" in result.summary
