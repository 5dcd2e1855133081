"""An API key passed in config or environment never appears in logs or results."""

from __future__ import annotations

import io
import json

import structlog

from orchestrator import Orchestrator, ScriptedModel
from orchestrator.logs import Redactor, configure_logging

KEY = "AIzaSyD-this-is-a-fake-key-for-tests-123456"
OTHER = "plain-secret-value-42"


async def test_key_never_reaches_logs_results_or_the_child(monkeypatch, local_executor):
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    stream = io.StringIO()
    configure_logging(json_lines=True, level="debug", secrets=[OTHER], stream=stream)
    try:
        code = "import os\nprint({k: v for k, v in os.environ.items()})"
        model = ScriptedModel([f"```python\n{code}\n```", f"done; by the way my key is {KEY} and {OTHER}"])
        result = await Orchestrator(model, local_executor).run(f"use key {OTHER}")
        structlog.get_logger("codeloop").info("explicit", api_key=KEY, nested={"k": [OTHER]})
    finally:
        structlog.reset_defaults()
    logs = stream.getvalue()
    assert logs.count("\n") >= 5
    assert KEY not in logs and OTHER not in logs
    assert "[REDACTED]" in logs
    assert all(json.loads(line)["event"] for line in logs.splitlines())
    assert "run_id" in logs and "execution.finished" in logs
    child_env = result.attempts[0].result.stdout
    assert KEY not in child_env and "GEMINI_API_KEY" not in child_env


def test_redactor_catches_key_shapes_it_was_not_told_about():
    r = Redactor()
    assert r.scrub("key=AIzaSyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA end") == "key=[REDACTED] end"
    assert r.scrub("Authorization: Bearer abcdefghijklmnopqrstuvwxyz") == "Authorization: [REDACTED]"
    assert r.scrub("sk-proj-abcdefghijklmnop1234") == "[REDACTED]"
