"""The texts the loop sends: environment, trimmed feedback, summary requests."""

from __future__ import annotations

from executors import ExecutionResult, InputFile, Limits, Outcome
from orchestrator.prompts import Prompts, clip, trim_traceback

PANDAS_TB = """Traceback (most recent call last):
  File "<code>", line 3, in <module>
    df["temperature"].mean()
  File "/venv/lib/python3.11/site-packages/pandas/core/frame.py", line 4102, in __getitem__
    indexer = self.columns.get_loc(key)
  File "/venv/lib/python3.11/site-packages/pandas/core/indexes/base.py", line 3812, in get_loc
    raise KeyError(key) from err
KeyError: 'temperature'"""


def test_system_instruction_describes_the_environment():
    text = Prompts().system(Limits(timeout_s=30, memory_bytes=2 * 1024**3), [InputFile("sales.csv", b"")])
    for needle in ("numpy", "pandas", "30 s", "2 GiB", "sales.csv", "print", "run_python"):
        assert needle in text


def test_traceback_keeps_user_frames_and_error_line():
    trimmed = trim_traceback(PANDAS_TB)
    assert 'File "<code>", line 3' in trimmed
    assert 'df["temperature"].mean()' in trimmed
    assert "KeyError: 'temperature'" in trimmed
    assert "frame.py" not in trimmed and "[... 2 library frames ...]" in trimmed


def test_feedback_is_capped():
    result = ExecutionResult(
        outcome=Outcome.FAILED,
        stdout="z" * 50_000,
        error_type="E",
        error_message="m",
        traceback="Traceback (most recent call last):\n" + "x" * 10_000 + "\nE: m",
    )
    text = Prompts(max_output_chars=1000, max_traceback_chars=500).feedback(result, retries_left=3)
    assert len(text) < 2000
    assert "E: m" in text and "3 retries left" in text


def test_every_text_is_overridable():
    p = Prompts().replace(
        summary_request="SUM",
        failure_summary_request="FAILED {failures}",
        feedback_ok="OK {output}",
        system_template="SYS {timeout}",
    )
    assert p.summary() == "SUM"
    assert p.failure_summary(6) == "FAILED 6"
    assert p.system(Limits(timeout_s=5)) == "SYS 5"
    assert p.feedback(ExecutionResult(outcome=Outcome.OK, stdout="1\n"), 5).startswith("OK stdout:")


def test_clip_keeps_head_and_tail():
    text = "head" + "-" * 100 + "tail"
    out = clip(text, 30)
    assert out.startswith("head") and out.endswith("tail") and "trimmed" in out
