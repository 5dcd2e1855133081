"""Library logging is quiet until the application configures structlog."""

from __future__ import annotations

from orchestrator import Orchestrator, ScriptedModel
from orchestrator.models import ModelError


async def test_unconfigured_library_prints_only_warnings_to_stderr(capsys, local_executor):
    await Orchestrator(ScriptedModel(["```python\nprint(1)\n```", "one"]), local_executor).run("q")
    out, err = capsys.readouterr()
    assert out == "" and err == ""  # info events (run.start, run.done) stay silent

    def broken(conversation, tools):
        raise ModelError("upstream is down", status_code=503)

    await Orchestrator(ScriptedModel(broken), local_executor).run("q")
    out, err = capsys.readouterr()
    assert out == ""
    assert "model.error" in err and "upstream is down" in err
