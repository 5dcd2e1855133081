"""``codeloop batch``, ``codeloop export`` and ``codeloop report`` end to end, with
a scripted model file and the real ``local`` executor."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from orchestrator.batch import BatchStore
from orchestrator.cli import main
from orchestrator.types import RunResult


@pytest.fixture
def batch_files(tmp_path: Path) -> tuple[Path, Path]:
    """A scripted model file and a JSONL batch. The list script replays the same turns for every prompt; the
    code reads its item's prompt from an input file, fails on "fail" prompts and writes an artifact. Solved
    items end at the second turn (the model restates code that worked); failing ones retry once, then summarise."""
    script = tmp_path / "script.json"
    code = (
        "```python\nimport pathlib\nprompt = pathlib.Path('prompt.txt').read_text()\n"
        "if 'fail' in prompt:\n    1 / 0\npathlib.Path('answer.txt').write_text(prompt.upper())\n"
        "print(len(prompt))\n```"
    )
    script.write_text(json.dumps([code, code, "gave up after a retry"]))
    lines = []
    for item_id, text in (("a", "alpha"), ("b", "fail please"), ("c", "gamma")):
        (tmp_path / item_id).mkdir()
        (tmp_path / item_id / "prompt.txt").write_text(text)
        lines.append(
            json.dumps(
                {"id": item_id, "prompt": text, "files": [f"{item_id}/prompt.txt"], "metadata": {"kind": "test"}}
            )
        )
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    return script, prompts


def local_batch(script: Path, prompts: Path, run_dir: Path, *options: str) -> list[str]:
    """``codeloop batch`` of the fixture's prompts with its scripted model on the local executor, quietly."""
    return [
        "batch",
        str(prompts),
        "-o",
        str(run_dir),
        "--model",
        f"scripted:{script}",
        "--executor",
        "local",
        "--no-progress",
        *options,
    ]


def test_batch_then_report_then_export_agree_with_the_store(tmp_path: Path, batch_files, capsys) -> None:
    script, prompts = batch_files
    run_dir = tmp_path / "run"
    code = main(local_batch(script, prompts, run_dir, "--concurrency", "3", "--max-retries", "1"))
    assert code == 0
    assert "3 run:" in capsys.readouterr().err
    with BatchStore(run_dir) as store:
        records = {r.id: r for r in store.records()}
        results = {item_id: store.result(item_id) for item_id in records}
    assert set(records) == {"a", "b", "c"}
    assert records["b"].run_status == "failed" and records["b"].retries == 1

    assert main(["report", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    assert "solved" in printed and "latency p95" in printed
    report = json.loads((run_dir / "report.json").read_text())
    assert (report["solved"], report["failed"], report["errors"], report["finished"]) == (2, 1, 0, 3)
    assert report["retries_histogram"] == {"0": 2, "1": 1}
    assert report["requests"] == sum(r.requests for r in records.values())
    assert report["total_tokens"] == sum(r.total_tokens for r in records.values())
    walls = sorted(r.wall_time_s for r in records.values())
    assert report["latency_p50_s"] == pytest.approx(walls[1])
    for plot in ("report-retries.png", "report-latency.png"):
        assert (run_dir / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    out = tmp_path / "export.jsonl"
    assert main(["export", str(run_dir), "--format", "jsonl", "-o", str(out)]) == 0
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["id"] for e in exported] == ["a", "b", "c"]
    for entry in exported:
        assert RunResult.from_json(entry["result"]) == results[entry["id"]]
    answer = results["a"].artifacts[0]
    assert (answer.name, answer.data) == ("answer.txt", b"ALPHA")
    assert (run_dir / "artifacts" / "a" / "answer.txt").read_bytes() == b"ALPHA"

    assert main(["export", str(run_dir), "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(r["id"], r["run_status"], r["metadata"]) for r in rows] == [
        ("a", "solved", '{"kind": "test"}'),
        ("b", "failed", '{"kind": "test"}'),
        ("c", "solved", '{"kind": "test"}'),
    ]
    assert "1 / 0" in rows[1]["code"]


def test_bad_input_is_reported_with_lines_and_nothing_runs(tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "bad.jsonl"
    prompts.write_text('{"id": "x", "prompt": "ok"}\n{"id": "x", "prompt": ""}\nnot json\n')
    run_dir = tmp_path / "run"
    script = tmp_path / "script.json"
    script.write_text('["never used"]')
    assert main(["batch", str(prompts), "-o", str(run_dir), "--model", f"scripted:{script}"]) == 2
    err = capsys.readouterr().err
    assert f"{prompts}:2: empty prompt" in err and f"{prompts}:2: duplicate id 'x'" in err
    assert f"{prompts}:3: malformed JSON" in err
    assert not (run_dir / "runs.db").exists()


def test_resume_with_other_settings_is_refused_unless_forced(tmp_path: Path, batch_files, capsys) -> None:
    script, prompts = batch_files
    run_dir = tmp_path / "run"
    base = local_batch(script, prompts, run_dir)
    assert main([*base, "--max-retries", "1"]) == 0
    assert main([*base, "--max-retries", "1"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main([*base, "--resume", "--max-retries", "3"]) == 2
    assert "max_retries: stored 1, now 3" in capsys.readouterr().err
    # With no flags a resume takes the stored settings; nothing is left to run.
    assert main(["batch", "-o", str(run_dir), "--resume", "--no-progress"]) == 0
    assert main([*base, "--resume", "--max-retries", "3", "--force"]) == 0
    with BatchStore(run_dir) as store:
        assert store.settings()["config"]["max_retries"] == 3
        assert [s["end_reason"] for s in store.sessions()] == ["completed"] * 3


def test_a_bad_model_string_is_a_usage_error_before_anything_runs(tmp_path: Path, capsys) -> None:
    prompts = tmp_path / "p.txt"
    prompts.write_text("hello\n")
    assert main(["batch", str(prompts), "-o", str(tmp_path / "run"), "--model", "nosuch:thing"]) == 2
    assert "unknown model 'nosuch:thing'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_report_and_export_need_a_store(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert main(["export", str(tmp_path)]) == 2
    assert "holds no batch" in capsys.readouterr().err
