"""The prompt set's checks: numbers and text from the prose or printed output (never code),
files produced, no-code answers; the shipped set loads; the cassette's examples score right."""

import json
from pathlib import Path

import pytest

from benchmarks import load_dataset, run_benchmark
from benchmarks.prompt_set import Check, CheckSpecError, check_expectations, parse_check, parse_checks
from executors.base import Artifact, ExecutionResult, Outcome
from orchestrator.cli import main
from orchestrator.models.scripted import ScriptedModel
from orchestrator.types import Attempt, ExecutionMessage, RunResult, RunStatus

ROOT = Path(__file__).resolve().parent.parent
PROMPT_SET = ROOT / "benchmarks" / "data" / "prompts" / "prompts.jsonl"
EXAMPLE_IDS = ["primes", "sales-stats", "plot", "weather-retry", "no-code"]


def run_of(summary, *attempts):
    status = (
        RunStatus.SOLVED
        if attempts and attempts[-1].ok
        else (RunStatus.ANSWERED_WITHOUT_CODE if not attempts else RunStatus.FAILED)
    )
    return RunResult(prompt="p", summary=summary, status=status, attempts=list(attempts))


def ok(stdout="", artifacts=(), code="print(1)"):
    return Attempt(code=code, result=ExecutionResult(outcome=Outcome.OK, stdout=stdout, artifacts=list(artifacts)))


def check(run, *specs, requires_code=True):
    return check_expectations("i", parse_checks(list(specs)), run, requires_code=requires_code)


def test_check_specs_round_trip_and_describe():
    for spec in (
        {"number": 152.43, "tol": 0.01},
        {"number": 5117.0},
        {"text": ["East"]},
        {"file": "trig.png"},
        {"no_code": True},
    ):
        assert parse_check(spec).to_json() == spec
    assert parse_check({"text": "East"}) == Check(kind="text", texts=("East",))
    assert parse_check({"number": 4.89, "tol": 0.01}).describe() == "4.89 ±0.01"
    with pytest.raises(CheckSpecError, match=r"expect\[1\]: a check needs exactly one of"):
        parse_checks([{"number": 1}, {"colour": "red"}])


def test_a_number_in_the_printed_output_or_the_prose_counts():
    assert check(run_of("Done.", ok("sum: 5117\n")), {"number": 5117}).correct
    assert check(run_of("The sum is 5117.", ok("")), {"number": 5117}).correct
    assert check(
        run_of("Mean 21.22, std 4.89, rain 66.9 mm.", ok()),
        {"number": 21.22, "tol": 0.01},
        {"number": 4.89, "tol": 0.01},
        {"number": 66.9, "tol": 0.05},
    ).correct


def test_a_number_only_inside_code_or_json_does_not_count():
    summary = "I computed it with:\n```python\ntotal = 5117\nprint(total)\n```\n"
    score = check(run_of(summary, ok("done\n", code="total = 5117\nprint('done')")), {"number": 5117})
    assert not score.correct and "5117 not stated" in score.detail
    score = check(run_of('{"name": "run_python", "arguments": {"total": 5117}}'), {"number": 5117})
    assert not score.correct and "no successful execution" in score.detail


def test_a_wrong_stated_answer_is_wrong_even_when_the_printed_table_holds_the_right_one():
    printed = "region\nEast     152.43\nNorth    136.34\n"
    score = check(
        run_of("North has the highest average, 136.34.", ok(printed)), {"text": "East"}, {"number": 152.43, "tol": 0.01}
    )
    assert not score.correct and "'East' not stated" in score.detail and "152.43 ±0.01 not stated" in score.detail


def test_a_file_expectation_needs_an_artifact_of_that_name():
    png = Artifact.of("trig.png", b"\x89PNG\r\n\x1a\n" + b"0" * 20)
    assert check(run_of("Saved.", ok(artifacts=[png])), {"file": "trig.png"}).correct
    assert not check(run_of("Saved.", ok(artifacts=[Artifact.of("plot.png", png.data)])), {"file": "trig.png"}).correct
    fake = Artifact.of("trig.png", b"not an image")
    assert not check(run_of("Saved.", ok(artifacts=[fake])), {"file": "trig.png"}).correct


def test_no_code_means_no_execution():
    assert check(run_of("A tuple is immutable."), {"no_code": True}, requires_code=False).correct
    score = check(run_of("A tuple is immutable.", ok()), {"no_code": True}, requires_code=False)
    assert not score.correct and "1 execution(s) ran" in score.detail


def test_the_shipped_prompt_set_loads_with_its_files():
    items = load_dataset(str(PROMPT_SET))
    assert len(items) >= 25 and all(i.scoring == "expect" and i.expect for i in items)
    assert [i.id for i in items[:5]] == EXAMPLE_IDS
    assert all(Path(f).is_file() for i in items for f in i.files)
    kinds = {next(iter(c)) for i in items for c in i.expect}  # each check's first key names its kind
    assert {"number", "text", "file", "no_code"} <= kinds


# --- Through the runner and the CLI ------------------------------------------------------


def script(conversation, tools):
    """A test double: per prompt, the program it runs and what it says after."""
    prompt = conversation.first_prompt
    executions = [m for m in conversation.messages if isinstance(m, ExecutionMessage)]
    if not tools or (executions and executions[-1].result.ok):
        return {
            "count": "Done: the program printed it.",
            "hidden": "Here is how:\n```python\nanswer = 9\n```",
            "plot": "Saved the chart.",
        }[prompt]
    return {
        "count": "```python\nimport csv\nrows = list(csv.DictReader(open('t.csv')))\nprint(len(rows))\n```",
        "hidden": "```python\nanswer = 9\nprint('computed')\n```",
        "plot": "```python\nimport matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
        "plt.plot([1, 2], [3, 4])\nplt.savefig('line.png')\n```",
    }[prompt]


async def test_the_runner_scores_expect_items_with_input_files(tmp_path):
    (tmp_path / "t.csv").write_text("a\n1\n2\n3\n")
    items = [
        {"id": "count", "prompt": "count", "files": ["t.csv"], "expect": [{"number": 3}]},
        {"id": "hidden", "prompt": "hidden", "expect": [{"number": 9}]},
        {"id": "plot", "prompt": "plot", "expect": [{"file": "line.png"}]},
    ]
    path = tmp_path / "set.jsonl"
    path.write_text("".join(json.dumps(i) + "\n" for i in items))
    result = await run_benchmark(
        str(path),
        model=ScriptedModel(script, name="double"),
        bench_dir=tmp_path / "b",
        executor="local",
        scoring_executor="local",
    )
    scores = {r.item_id: r.score for r in result.records}
    assert scores["count"].correct and scores["count"].solved_at == 0  # read t.csv, printed 3
    assert not scores["hidden"].correct  # 9 only in code
    assert scores["plot"].correct


def test_the_cli_scores_the_cassette_examples(tmp_path, capsys):
    # The five example prompts with the demo cassette's answers: each expectation holds for them.
    lines = []
    for line in PROMPT_SET.read_text().splitlines():
        item = json.loads(line)
        if item["id"] in EXAMPLE_IDS:
            item["files"] = [str(PROMPT_SET.parent / f) for f in item.get("files", [])]
            lines.append(json.dumps(item))
    examples = tmp_path / "examples.jsonl"
    examples.write_text("\n".join(lines) + "\n")
    code = main(
        [
            "bench",
            str(examples),
            "--model",
            f"replay:{ROOT / 'examples' / 'cassette.jsonl'}",
            "-o",
            str(tmp_path / "b"),
            "--executor",
            "local",
            "--scoring-executor",
            "local",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "solved (scored correct)" in out and "5 (100.0%)" in out
    assert "k=0: 80.0%  k=1: 100.0%" in out  # weather-retry fixes a wrong column name at k=1
