"""The command line: exit codes, JSON output, recording, the offline demo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from orchestrator.cli import main
from tests.conftest import EXAMPLES, ROOT

FAIL = "```python\nraise ValueError('boom')\n```"


def script(tmp_path, turns) -> str:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(turns))
    return f"scripted:{path}"


def test_run_solved_prints_code_output_and_summary(tmp_path, capsys):
    model = script(tmp_path, ["```python\nprint(2 + 3)\n```", "It is 5."])
    assert main(["run", "add 2 and 3", "--model", model, "--executor", "local"]) == 0
    out = capsys.readouterr().out
    assert "print(2 + 3)" in out and "  5" in out and "It is 5." in out


def test_run_always_failing_exits_1_after_six_executions(tmp_path, capsys):
    model = script(
        tmp_path, [FAIL.replace("boom", f"boom {n}") for n in range(6)] + ["Every attempt raised ValueError."]
    )
    code = main(["run", "q", "--model", model, "--executor", "local", "--json"])
    assert code == 1
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "failed"
    assert len(result["attempts"]) == 6
    assert result["summary"] == "Every attempt raised ValueError."


def test_answer_without_code_exits_0(tmp_path, capsys):
    assert main(["run", "q", "--model", script(tmp_path, ["Just an answer."]), "--executor", "local", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "answered_without_code"


def test_prompt_from_file_and_input_files(tmp_path, capsys):
    (tmp_path / "prompt.txt").write_text("read it")
    (tmp_path / "d.csv").write_text("x\n7\n")
    model = script(tmp_path, ["```python\nprint(open('d.csv').read().split()[1])\n```", "7"])
    code = main(
        [
            "run",
            "-f",
            str(tmp_path / "prompt.txt"),
            "--file",
            str(tmp_path / "d.csv"),
            "--model",
            model,
            "--executor",
            "local",
            "--json",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["attempts"][0]["result"]["stdout"] == "7\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "q", "--model", "nonsense:x"], "unknown model 'nonsense:x'; model strings start with one of"),
        (["run", "q", "--model", "replay"], "needs an argument after the colon"),
        (["run", "q", "--model", "replay:/nope.jsonl"], "cannot be read"),
        (["run", "q", "--model", "scripted:EMPTY", "--executor", "nope"], "unknown executor 'nope'; choose one of"),
        (["run"], "no prompt"),
        (["run", "q", "--file", "/no/such.csv", "--model", "replay:x"], "/no/such.csv"),
        (["run", "q", "--timeout", "0", "--model", "replay:x"], "--timeout must be positive"),
    ],
)
def test_bad_usage_exits_2_with_a_clear_message(argv, message, capsys, tmp_path):
    argv = [a.replace("scripted:EMPTY", script(tmp_path, [])) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_no_model_and_no_key_uses_the_local_model_and_says_why(tmp_path, capsys, monkeypatch):
    from orchestrator.cli import build_parser
    from orchestrator.cli._common import resolve_model
    from orchestrator.models import registry
    from orchestrator.models.local import LocalModel

    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    weights = tmp_path / "default.gguf"  # a file that is never loaded: the server starts on the first request
    weights.write_bytes(b"GGUF")
    monkeypatch.setattr(registry, "DEFAULT_LOCAL_MODEL", str(weights))
    model = resolve_model(build_parser().parse_args(["run", "q", "--ctx-size", "4096", "--seed", "7"]))
    err = capsys.readouterr().err
    assert err == (
        f"codeloop: using local:{weights} (no --model given and no "
        "GEMINI_API_KEY/GOOGLE_API_KEY/OPENAI_API_KEY/ANTHROPIC_API_KEY set)\n"
    )
    assert isinstance(model, LocalModel) and model.server is None
    assert (model.settings.n_ctx, model.settings.seed, model.context_length) == (4096, 7, 4096)


def test_bad_local_settings_are_usage_errors(capsys):
    assert main(["run", "q", "--model", "local:/nowhere/model.gguf", "--executor", "local"]) == 2
    assert "/nowhere/model.gguf does not exist" in capsys.readouterr().err
    assert main(["run", "q", "--model", "local:x.gguf", "--parallel", "0", "--executor", "local"]) == 2
    assert "--parallel must be at least 1" in capsys.readouterr().err


def test_record_then_replay_gives_the_same_turns(tmp_path, capsys):
    cassette = tmp_path / "c.jsonl"
    model = script(tmp_path, ["```python\nprint(40 + 2)\n```", "42."])
    assert main(["run", "q", "--model", model, "--executor", "local", "--record", str(cassette), "--json"]) == 0
    recorded = json.loads(capsys.readouterr().out)
    assert len(cassette.read_text().splitlines()) == 2
    assert main(["run", "q", "--model", f"replay:{cassette}", "--executor", "local", "--json"]) == 0
    replayed = json.loads(capsys.readouterr().out)
    assert replayed["summary"] == recorded["summary"] == "42."
    assert replayed["attempts"][0]["result"]["stdout"] == "42\n"


def test_version():
    out = subprocess.run([sys.executable, "-m", "orchestrator.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("codeloop ")


def test_demo_runs_offline_with_live_output():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "demo",
            "--executor",
            "local",
            "--prompts",
            str(EXAMPLES / "prompts.jsonl"),
            "--replay",
            str(EXAMPLES / "cassette.jsonl"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "count=50 last=229\n  5117" in out  # live output of the primes program
    assert "── retry 1" in out  # the weather prompt fails first and is fixed
    assert "trig.png" in out
    assert "5 prompts: 4 solved, 1 answered_without_code." in out


def test_demo_names_a_missing_input_file_and_its_line_before_running(tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": "y", "files": ["gone.csv"]}\n')
    assert (
        main(["demo", "--prompts", str(prompts), "--replay", str(tmp_path / "none.jsonl"), "--executor", "local"]) == 2
    )
    err = capsys.readouterr().err
    assert f"{prompts}:2:" in err and "gone.csv" in err
