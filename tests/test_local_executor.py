"""The local executor: a fresh subprocess, capped output, a deadline that kills the tree."""

from __future__ import annotations

import asyncio
import os
import time

import psutil
import pytest

from executors import InputFile, Limits, LocalExecutor, Outcome, available_executors, get_executor
from executors.registry import UnknownExecutorError

FAST = Limits(timeout_s=5)


async def test_stdout_and_exit(local_executor):
    r = await local_executor.execute("print('hello')")
    assert r.outcome is Outcome.OK and r.stdout == "hello\n" and r.exit_code == 0
    assert r.cpu_time_s is not None and r.peak_memory_bytes > 0
    assert r.executor == "local" and r.isolation == "none"


async def test_exception_is_parsed_from_the_child(local_executor):
    r = await local_executor.execute("def f():\n    return {}['k']\nf()")
    assert r.outcome is Outcome.FAILED
    assert r.error_type == "KeyError" and r.error_message == "'k'"
    assert 'File "<code>", line 3' in r.traceback and "harness" not in r.traceback
    assert "KeyError" in r.stderr


async def test_sys_exit_codes(local_executor):
    assert (await local_executor.execute("import sys; sys.exit(0)")).outcome is Outcome.OK
    r = await local_executor.execute("import sys; sys.exit(3)")
    assert r.outcome is Outcome.FAILED and r.exit_code == 3
    r = await local_executor.execute("import os; os._exit(4)")
    assert r.outcome is Outcome.FAILED and r.exit_code == 4


async def test_deadline_kills_the_whole_tree(local_executor, tmp_path):
    token = f"codeloop-tree-{os.getpid()}-{id(tmp_path)}"
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', '{token}'])\n"
        "time.sleep(60)\n"
    )
    r = await local_executor.execute(code, limits=Limits(timeout_s=1))
    assert r.outcome is Outcome.DEADLINE_EXCEEDED
    assert r.duration_s < 5
    # Each was sent SIGKILL before execute returned: wait for those deaths (a zombie is dead),
    # not a guessed while.
    deadline = time.monotonic() + 5
    while survivors := [
        p
        for p in psutil.process_iter(["cmdline", "status"])
        if token in " ".join(p.info["cmdline"] or []) and p.info["status"] != psutil.STATUS_ZOMBIE
    ]:
        assert time.monotonic() < deadline, f"the tree outlived its deadline: {survivors}"
        await asyncio.sleep(0.01)


async def test_output_is_capped_and_flagged(local_executor):
    r = await local_executor.execute("print('x' * 200_000)", limits=Limits(output_bytes=1000))
    assert r.outcome is Outcome.OK
    assert len(r.stdout) == 1000 and r.stdout_truncated


async def test_output_flood_stops_the_run(local_executor):
    code = "import sys\nwhile True: sys.stdout.write('y' * 65536)"
    r = await local_executor.execute(code, limits=Limits(output_bytes=1000, output_hard_bytes=2_000_000))
    assert r.outcome is Outcome.OUTPUT_LIMIT
    assert r.stdout_truncated


async def test_input_files_and_artifacts(local_executor):
    code = "data = open('in.txt').read()\nopen('out.txt', 'w').write(data.upper())"
    r = await local_executor.execute(code, files=[InputFile("in.txt", b"abc")])
    assert [(a.name, a.data) for a in r.artifacts] == [("out.txt", b"ABC")]


async def test_bad_input_file_name_is_a_sandbox_error_naming_it(local_executor):
    r = await local_executor.execute("pass", files=[InputFile("..", b"x")])
    assert r.outcome is Outcome.SANDBOX_ERROR
    assert "'..'" in r.error_message


async def test_unshown_figures_are_captured_as_png(local_executor):
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()\nplt.figure()\nplt.bar([1], [2])"
    r = await local_executor.execute(code)
    assert r.outcome is Outcome.OK
    assert sorted(a.name for a in r.images) == ["figure_1.png", "figure_2.png"]
    assert all(a.data.startswith(b"\x89PNG") for a in r.images)
    assert "non-interactive" not in r.stderr


async def test_cwd_holds_only_the_inputs(local_executor):
    r = await local_executor.execute("import os; print(sorted(os.listdir('.')))", files=[InputFile("in.txt", b"x")])
    assert r.stdout == "['in.txt']\n"


async def test_child_environment_holds_no_secrets(local_executor, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaSy-test-secret-never-leak-0000000000")
    r = await local_executor.execute("import os; print(sorted(os.environ))")
    assert "GEMINI_API_KEY" not in r.stdout
    r = await local_executor.execute(
        "import os; print(os.environ.get('MPLBACKEND'), os.environ.get('OPENBLAS_NUM_THREADS'))"
    )
    assert r.stdout == "Agg 1\n"


async def test_concurrent_executions_are_independent(local_executor):
    results = await asyncio.gather(*(local_executor.execute(f"print({i} * 2)") for i in range(12)))
    assert [r.stdout for r in results] == [f"{i * 2}\n" for i in range(12)]


def test_registry_knows_local_and_rejects_unknown_names():
    assert "local" in available_executors()
    assert isinstance(get_executor("local"), LocalExecutor)
    with pytest.raises(UnknownExecutorError, match=r"choose one of: .*local"):
        get_executor("no-such-executor")


async def test_a_figure_the_code_saved_is_not_captured_twice(local_executor):
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.savefig('mine.png')"
    r = await local_executor.execute(code)
    assert [a.name for a in r.artifacts] == ["mine.png"]


def test_report_is_length_prefixed_and_damage_is_detected():
    from executors.inside.harness import decode_report, encode_report

    raw = encode_report({"exit_code": 0, "error_type": None})
    assert decode_report(raw) == {"exit_code": 0, "error_type": None}
    assert decode_report(raw[:-1]) is None  # cut short
    assert decode_report(raw + b"x") is None  # something appended after the report
    assert decode_report(b"") is None
    assert decode_report(encode_report({"a": 1})[:4] + b"[1]") is None  # not ours
