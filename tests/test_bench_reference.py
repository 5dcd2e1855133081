"""The harness's self-check: reference test doubles whose scores are known.

These run real executions through the loop and the batch runner with the
local executor (the fastest available; the code is the data set's own
canonical solutions). The canonical check runs all 164 HumanEval problems.
"""

import re
from pathlib import Path

import pytest

from benchmarks import load_dataset, run_benchmark
from benchmarks.reference_models import (
    BROKEN_MARKER,
    annotation_program,
    broken_program,
    canonical_program,
    wrong_program,
)
from benchmarks.scoring import parse_number

GSM8K = Path(__file__).parent / "data" / "gsm8k" / "test.jsonl"
FAST = dict(executor="local", scoring_executor="local", concurrency=8)


@pytest.fixture(scope="module")
def humaneval():
    return load_dataset("humaneval")


async def test_canonical_model_scores_164_of_164(humaneval, tmp_path):
    assert len(humaneval) == 164
    result = await run_benchmark(humaneval, model="reference:canonical", bench_dir=tmp_path, **FAST)
    m = result.metrics
    assert (m.items, m.solved, m.solved_first_attempt) == (164, 164, 164)
    assert m.curve == [164] * 6
    assert m.retries_solved == {0: 164} and m.retries_unsolved == {}


async def test_broken_then_fixed_scores_zero_at_k0_and_all_at_k1(humaneval, tmp_path):
    subset = humaneval[::6]  # 28 problems spread over the whole set
    result = await run_benchmark(subset, model="reference:broken-then-fixed", bench_dir=tmp_path, **FAST)
    m = result.metrics
    assert m.curve_rates[0] == 0.0
    assert m.curve_rates[1:] == [1.0] * 5
    assert m.retries_solved == {1: len(subset)}
    for record in result.records:
        first, second = record.run.attempts
        assert not first.ok and BROKEN_MARKER in (first.result.error_message or "")
        assert second.ok


async def test_wrong_program_scores_zero(humaneval, tmp_path):
    subset = humaneval[::4]  # 41 problems spread over the whole set
    result = await run_benchmark(subset, model="reference:wrong", bench_dir=tmp_path, **FAST)
    m = result.metrics
    assert m.items == len(subset) and m.solved == 0 and m.curve == [0] * 6
    # It ran cleanly: the zero comes from the hidden tests, not from a crash in the loop.
    assert all(r.run.attempts and r.run.attempts[-1].ok for r in result.records)
    assert all(r.score.detail for r in result.records)


def stated_last_annotation(solution: str) -> float | None:
    """The result the GSM8K annotator wrote in the last <<expr=result>>."""
    found = re.findall(r"<<[^<>=]*=([^<>]*)>>", solution)
    return float(found[-1]) if found else None


async def test_annotation_model_solves_exactly_the_problems_its_annotations_answer(tmp_path):
    items = load_dataset("gsm8k", data=GSM8K, limit=200)
    # Expected, from the data alone: problems whose last annotation states the '####' answer.
    expected = {
        item.id
        for item in items
        if (value := stated_last_annotation(item.meta["solution"])) is not None
        and abs(value - parse_number(item.answer)) < 1e-6
    }
    assert len(expected) >= 180  # the slice is what we think it is
    result = await run_benchmark(items, model="reference:gsm8k-annotations", bench_dir=tmp_path, **FAST)
    solved = {r.item_id for r in result.records if r.score.correct}
    assert result.metrics.items == 200
    assert solved == expected


async def test_wrong_gsm8k_model_scores_zero(tmp_path):
    items = load_dataset("gsm8k", data=GSM8K, limit=100)
    result = await run_benchmark(items, model="reference:gsm8k-wrong", bench_dir=tmp_path, **FAST)
    assert result.metrics.items == 100 and result.metrics.solved == 0
    assert all(r.score.got is not None for r in result.records)  # an answer was read, and it was wrong


def test_reference_programs_are_what_they_claim(humaneval):
    item = humaneval[0]
    assert item.meta["canonical_solution"] in canonical_program(item)
    assert "raise RuntimeError" in broken_program(item)
    assert "return None" in wrong_program(item)
    program = annotation_program("2+3=<<2+3=5>>5 and 5*4=<<5*4=20>>20\n#### 20")
    assert (
        program
        == "step_0 = 2+3\nstep_1 = 5*4\nanswer = int(step_1) if float(step_1).is_integer() else step_1\nprint(answer)\n"
    )
