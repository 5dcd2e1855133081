"""The committed real-model runs, reproduced from their cassettes: the model's
text is replayed, every execution and score is live, and the numbers must
match the report (benchmarks/reports/real-models/)."""

from __future__ import annotations

import pytest

from benchmarks.real_models import differences, load_runs, replay

RUNS = load_runs()


def test_real_model_runs_are_committed():
    assert RUNS, "benchmarks/reports/real-models/ holds no real-model run"


@pytest.mark.parametrize("run", RUNS, ids=[r.name for r in RUNS])
async def test_a_real_model_run_replays_to_its_recorded_numbers(run, tmp_path):
    replayed = await replay(run, tmp_path / "bench")
    assert differences(run.metrics, replayed) == []
