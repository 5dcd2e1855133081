"""The report against the store it is computed from, resume, and the CLI."""

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from benchmarks import BenchStoreError, load_bench, run_benchmark
from orchestrator.batch import StoreError
from orchestrator.cli import main
from orchestrator.models.scripted import ScriptedModel
from orchestrator.types import ExecutionMessage

GSM8K = Path(__file__).parent / "data" / "gsm8k" / "test.jsonl"

ITEMS = [
    {"id": "add", "prompt": "Write add(a, b).", "test": "assert add(2, 3) == 5\nassert add(-1, 1) == 0"},
    {"id": "num", "prompt": "What is 6 times 7?", "answer": 42},
    {"id": "exact", "prompt": "Capital of France?", "answer": "Paris"},
    {"id": "hopeless", "prompt": "Divide by zero.", "answer": 7},
    {"id": "twice", "prompt": "Needs two fixes.", "answer": 3},
    {"id": "wrongadd", "prompt": "Write add(a, b) again.", "test": "assert add(2, 3) == 5"},
]

# Per prompt: the programs the double writes, one per execution so far (the last repeats).
PROGRAMS = {
    "Write add(a, b).": ["def add(a, b):\n    return a + b\nprint(add(2, 3))\n"],
    "What is 6 times 7?": ["print(6 * 7)\n"],
    "Capital of France?": ["print('Paris')\n"],
    "Divide by zero.": ["print(1 / 0)\n"],
    "Needs two fixes.": ["print(undefined_name)\n", "raise ValueError('still wrong')\n", "print(1 + 2)\n"],
    "Write add(a, b) again.": ["def add(a, b):\n    return a - b\nprint(add(2, 3))\n"],
}
SUMMARIES = {
    "What is 6 times 7?": "The answer is **42**.",
    "Capital of France?": "The capital:\nParis",
    "Divide by zero.": "I could not do it.",
    "Needs two fixes.": "The final answer is 3.",
}


def double_script(conversation, tools):
    """A test double that follows PROGRAMS, then summarises."""
    prompt = conversation.first_prompt
    executions = [m for m in conversation.messages if isinstance(m, ExecutionMessage)]
    if not tools or (executions and executions[-1].result.ok):
        return SUMMARIES.get(prompt, "Done.")
    programs = PROGRAMS[prompt]
    return f"```python\n{programs[min(len(executions), len(programs) - 1)]}```"


@pytest.fixture
def items_file(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    return path


async def local_run(items_file: Path, bench_dir: Path, *, limit: int) -> ScriptedModel:
    """The first ``limit`` items run with the doubling script and scored, locally; its model, to count calls."""
    model = ScriptedModel(double_script, name="double")
    await run_benchmark(
        str(items_file), model=model, bench_dir=bench_dir, limit=limit, executor="local", scoring_executor="local"
    )
    return model


async def test_report_numbers_match_the_store(items_file, tmp_path):
    bench_dir = tmp_path / "bench"
    result = await run_benchmark(
        str(items_file),
        model=ScriptedModel(double_script, name="double"),
        bench_dir=bench_dir,
        max_retries=3,
        executor="local",
        scoring_executor="local",
    )

    # Read the store directly, independently of benchmarks.store.
    db = sqlite3.connect(bench_dir / "runs.db")
    rows = db.execute(
        "SELECT i.id, i.retries, i.wall_time_s, i.input_tokens, i.output_tokens, i.requests, "
        "i.model_time_s, i.execution_time_s, s.correct, i.run_status, s.solved_at FROM items i JOIN bench_scores s "
        "ON s.item_id = i.id ORDER BY i.seq"
    ).fetchall()
    db.close()
    assert [r[0] for r in rows] == [i["id"] for i in ITEMS]
    correct = {r[0]: bool(r[8]) for r in rows}
    retries = {r[0]: r[1] for r in rows}
    assert correct == {"add": True, "num": True, "exact": True, "hopeless": False, "twice": True, "wrongadd": False}
    assert retries == {"add": 0, "num": 0, "exact": 0, "hopeless": 3, "twice": 2, "wrongadd": 0}

    solved_at = {r[0]: r[10] for r in rows}
    assert solved_at == {"add": 0, "num": 0, "exact": 0, "hopeless": None, "twice": 2, "wrongadd": None}
    curve = [sum(1 for r in rows if r[10] is not None and r[10] <= k) for k in range(6)]
    latencies = [r[2] for r in rows]
    on_disk = json.loads((bench_dir / "metrics.json").read_text())["metrics"]
    assert on_disk["items"] == 6 and on_disk["solved"] == 4
    assert on_disk["curve"] == curve == [3, 3, 4, 4, 4, 4]
    assert on_disk["input_tokens"] == sum(r[3] for r in rows)
    assert on_disk["output_tokens"] == sum(r[4] for r in rows)
    assert on_disk["requests"] == sum(r[5] for r in rows)
    assert on_disk["latency_p50_s"] == pytest.approx(float(np.percentile(latencies, 50)))
    assert on_disk["latency_p95_s"] == pytest.approx(float(np.percentile(latencies, 95)))
    assert on_disk["model_time_s"] == pytest.approx(sum(r[6] for r in rows))
    assert on_disk["execution_time_s"] == pytest.approx(sum(r[7] for r in rows))
    assert on_disk["loop_solved"] == sum(1 for r in rows if r[9] == "solved") == 5  # all but 'hopeless'
    assert on_disk["retries_solved"] == {"0": 3, "2": 1}
    assert on_disk["retries_unsolved"] == {"0": 1, "3": 1}
    assert result.metrics.to_json() == on_disk

    report = (bench_dir / "report.md").read_text()
    assert "| solved (scored correct) | 4 (66.7%) |" in report
    assert "| passed at first attempt (k=0) | 3 (50.0%) |" in report
    assert "| runs that ran code (any / a successful execution) | 6 (100.0%) / 5 (83.3%) |" in report
    assert "| twice | no | yes | 2 | 2 | solved | 3 |" in report  # the per-item table
    assert "| 2 | 4 | 66.7% |" in report  # the curve table, k=2
    assert f"| input tokens (total / per item) | {sum(r[3] for r in rows)} / " in report
    assert "| hopeless | 3 | 7 |" in report  # unsolved: retries, expected
    for name in ("refinement_curve.png", "retries_histogram.png", "latency.png"):
        assert (bench_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Recomputing from the store alone gives the same numbers.
    assert load_bench(bench_dir).metrics.to_json() == on_disk


async def test_resume_runs_only_new_items_and_scores_leftovers(items_file, tmp_path):
    bench_dir = tmp_path / "bench"
    first = await local_run(items_file, bench_dir, limit=3)
    assert first.calls == 6  # three items, code then summary each

    with pytest.raises(BenchStoreError, match="--resume"):
        await run_benchmark(
            str(items_file), model=first, bench_dir=bench_dir, executor="local", scoring_executor="local"
        )

    # A score lost between the run and its scoring (a crash) is redone on resume, without the model.
    db = sqlite3.connect(bench_dir / "runs.db")
    db.execute("DELETE FROM bench_scores WHERE item_id = 'num'")
    db.commit()
    db.close()

    second = ScriptedModel(double_script, name="double")
    result = await run_benchmark(
        str(items_file),
        model=second,
        bench_dir=bench_dir,
        limit=5,
        resume=True,
        executor="local",
        scoring_executor="local",
    )
    # Only the two new items ran: 'hopeless' (6 failing programs, then the summary) and 'twice' (3 programs, summary).
    assert second.calls == 7 + 4
    assert result.metrics.items == 5
    assert {r.item_id for r in result.records} == {"add", "num", "exact", "hopeless", "twice"}


async def test_resume_refuses_another_benchmark(items_file, tmp_path):
    bench_dir = tmp_path / "bench"
    await local_run(items_file, bench_dir, limit=1)
    with pytest.raises(BenchStoreError, match="different benchmark"):
        await run_benchmark(
            "gsm8k",
            data=GSM8K,
            model="reference:gsm8k-wrong",
            bench_dir=bench_dir,
            limit=1,
            resume=True,
            executor="local",
            scoring_executor="local",
        )


def test_cli_runs_gsm8k_and_compares(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--data", str(GSM8K), "--limit", "5", "--executor", "local", "--scoring-executor", "local"]
    assert main(["bench", "gsm8k", "--model", "reference:gsm8k-annotations", "-o", str(a), *common]) == 0
    out = capsys.readouterr().out
    assert "solved" in out and "5 (100.0%)" in out and "k=0: 100.0%" in out
    assert (
        main(
            [
                "bench",
                "gsm8k",
                "--model",
                "reference:gsm8k-wrong",
                "-o",
                str(b),
                *common,
                "--price-input",
                "1.0",
                "--price-output",
                "2.0",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["bench", "compare", str(a), str(b)]) == 0
    table = capsys.readouterr().out
    assert "| model | reference:gsm8k-annotations | reference:gsm8k-wrong |" in table
    assert "| solved (scored correct) | 5 (100.0%) | 0 (0.0%) |" in table
    assert "| solve rate, B - A | -100.0 points |" in table
    assert "(estimated)" in table


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "gsm8k", "--model", "reference:gsm8k-wrong", "-o", "{tmp}/x"], "needs --data"),
        (["bench", "humaneval", "--model", "reference:canonical"], "-o BENCH_DIR is required"),
        (["bench", "compare", "{tmp}/only-one"], "exactly two"),
        (["bench", "{tmp}/bad.jsonl", "--model", "reference:wrong", "-o", "{tmp}/y"], "bad.jsonl:2: "),
        (["bench", "humaneval", "--model", "reference:nope", "-o", "{tmp}/z"], "unknown reference model"),
        (
            ["bench", "humaneval", "--model", "reference:canonical", "-o", "{tmp}/w", "--executor", "nope"],
            "unknown executor",
        ),
    ],
)
def test_cli_bad_usage_exits_2_with_a_clear_message(tmp_path, capsys, argv, message):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "ok", "answer": 1}\n{"prompt": "no answer"}\n')
    assert main([arg.replace("{tmp}", str(tmp_path)) for arg in argv]) == 2
    assert message in capsys.readouterr().err


async def test_a_resume_the_batch_refuses_keeps_the_stored_config(items_file, tmp_path):
    bench_dir = tmp_path / "bench"
    model = await local_run(items_file, bench_dir, limit=1)
    with pytest.raises(StoreError, match="different settings"):
        await run_benchmark(
            str(items_file),
            model=model,
            bench_dir=bench_dir,
            limit=1,
            max_retries=2,
            resume=True,
            executor="local",
            scoring_executor="local",
        )
    # The runs were made with max_retries 5; the report must not claim otherwise.
    assert load_bench(bench_dir).config["max_retries"] == 5
