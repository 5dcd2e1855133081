"""The ``sandbox`` executor and its isolation: what the child sees, what comes back, how levels are chosen.

The hostile-code suite (tests/hostile) covers attacks; these tests cover the
ordinary contract: results, files, figures, accounting, detection, strict mode.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import pytest_asyncio

from executors import (
    DEFAULT_EXECUTOR,
    ExecutionResult,
    InputFile,
    Isolation,
    Limits,
    Outcome,
    available_executors,
    get_executor,
)
from executors.isolation import (
    HOST_FILES,
    NO_NETWORK,
    PROCESS_LIMIT,
    PROCESS_TREE,
    SANDBOX_WORK,
    IsolationUnavailable,
    Isolator,
    Mount,
)
from executors.sandbox import SandboxExecutor

module_loop = pytest.mark.asyncio(loop_scope="module")  # shares the module-scoped sandbox

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
needs_bwrap = pytest.mark.skipif(
    shutil.which("bwrap") is None and not IN_CI,
    reason="bubblewrap is not installed (apt-get install bubblewrap); CI installs it and never skips",
)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sandbox():
    executor = SandboxExecutor(limits=Limits(timeout_s=10))
    yield executor
    await executor.aclose()


@module_loop
async def test_is_the_default_executor_and_registered_by_name_and_entry_point():
    assert DEFAULT_EXECUTOR == "sandbox"
    assert "sandbox" in available_executors()
    executor = get_executor("sandbox", strict=True)
    assert isinstance(executor, SandboxExecutor) and executor.name == "sandbox"


@module_loop
async def test_runs_code_and_records_the_isolation_level(sandbox):
    result = await sandbox.execute("print(sum(range(10)))")
    assert result.outcome is Outcome.OK, result.stderr
    assert result.stdout == "45\n"
    assert result.executor == "sandbox"
    assert result.isolation == sandbox.isolation == (await sandbox.level()).value
    if IN_CI:
        assert result.isolation == "bwrap", "CI installs bubblewrap: the sandbox must use it"


@module_loop
async def test_error_type_message_and_user_only_traceback(sandbox):
    result = await sandbox.execute("def f():\n    return {}['missing']\nf()")
    assert result.outcome is Outcome.FAILED
    assert result.error_type == "KeyError" and result.error_message == "'missing'"
    assert 'File "<code>", line 2, in f' in result.traceback
    assert "harness" not in result.traceback


@module_loop
async def test_environment_is_the_allow_list_only(sandbox, monkeypatch):
    monkeypatch.setenv("CODELOOP_TEST_SECRET", "sk-never-in-the-child")
    result = await sandbox.execute("import os, json, getpass\ngetpass.getuser()\nprint(json.dumps(dict(os.environ)))")
    assert result.outcome is Outcome.OK
    env = __import__("json").loads(result.stdout)
    assert "CODELOOP_TEST_SECRET" not in env
    assert env["MPLBACKEND"] == "Agg" and env["OPENBLAS_NUM_THREADS"] == "1"
    assert set(env) <= {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "TMPDIR",
        "LANG",
        "PYTHONIOENCODING",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONHASHSEED",
        "MPLBACKEND",
        "MPLCONFIGDIR",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "PWD",
        "OLDPWD",
        "SHLVL",  # set by the shell that prepares the unshare level
    }


@module_loop
async def test_inputs_are_read_only_and_written_files_come_back(sandbox):
    code = (
        "data = open('table.csv').read()\n"
        "open('doubled.csv', 'w').write(data * 2)\n"
        "import os\n"
        "os.makedirs('out', exist_ok=True)\n"
        "open('out/n.txt', 'w').write(str(len(data)))\n"
        "try:\n"
        "    open('table.csv', 'a').write('tampered')\n"
        "except OSError as exc:\n"
        "    print('read-only', type(exc).__name__)\n"
    )
    result = await sandbox.execute(code, files=[InputFile("table.csv", b"a,b\n1,2\n")])
    assert result.outcome is Outcome.OK, result.stderr
    assert "read-only" in result.stdout
    by_name = {a.name: a.data for a in result.artifacts}
    assert by_name == {"doubled.csv": b"a,b\n1,2\n" * 2, "out/n.txt": b"8"}


@module_loop
async def test_bad_input_file_name_is_a_sandbox_error_naming_it(sandbox):
    result = await sandbox.execute("pass", files=[InputFile("..", b"x")])
    assert result.outcome is Outcome.SANDBOX_ERROR
    assert "'..'" in result.error_message


@module_loop
async def test_matplotlib_figures_are_captured_without_savefig(sandbox):
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()\nplt.figure()\nplt.bar([1], [2])\n"
    result = await sandbox.execute(code)
    assert result.outcome is Outcome.OK, result.stderr
    images = result.images
    assert [a.name for a in images] == ["figure_1.png", "figure_2.png"]
    assert all(a.data.startswith(b"\x89PNG") for a in images)


@module_loop
async def test_cpu_time_and_peak_memory_are_measured(sandbox):
    code = (
        "import time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.4:\n"
        "    pass\n"
        "block = bytearray(150 * 2**20)\n"
        "for i in range(0, len(block), 4096):\n"
        "    block[i] = 1\n"
    )
    result = await sandbox.execute(code)
    assert result.outcome is Outcome.OK, result.stderr
    assert result.cpu_time_s >= 0.4
    assert result.peak_memory_bytes >= 150 * 2**20
    assert result.duration_s >= 0.4


@module_loop
async def test_address_space_limit_gives_memory_exceeded(sandbox):
    result = await sandbox.execute("x = bytearray(3 * 2**30)", limits=Limits(memory_bytes=512 * 2**20))
    assert result.outcome is Outcome.MEMORY_EXCEEDED
    assert result.error_type == "MemoryError"


@module_loop
async def test_site_builtins_exist(sandbox):
    exited = await sandbox.execute("print(type(help).__name__, type(copyright).__name__)\nexit(3)")
    assert (exited.outcome, exited.exit_code, exited.stdout) == (Outcome.FAILED, 3, "_Helper _Printer\n")
    quitted = await sandbox.execute("quit()")
    assert quitted.outcome is Outcome.OK


@module_loop
async def test_exit_status_and_signals_are_reported(sandbox):
    exited = await sandbox.execute("import sys\nsys.exit(4)")
    assert (exited.outcome, exited.exit_code) == (Outcome.FAILED, 4)
    crashed = await sandbox.execute("import ctypes\nctypes.string_at(0)")
    assert (crashed.outcome, crashed.signal) == (Outcome.KILLED, 11)


@module_loop
async def test_deadline_stops_the_run(sandbox):
    started = time.monotonic()
    result = await sandbox.execute("import time\ntime.sleep(30)", limits=Limits(timeout_s=0.5))
    assert result.outcome is Outcome.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5


@module_loop
async def test_concurrent_executions_are_bounded():
    executor = SandboxExecutor(max_concurrency=2)
    code = "import time\ntime.sleep(0.4)\nprint('done')"
    started = time.monotonic()
    results = await asyncio.gather(*(executor.execute(code) for _ in range(4)))
    elapsed = time.monotonic() - started
    assert [r.stdout for r in results] == ["done\n"] * 4
    assert elapsed >= 0.8, "four 0.4 s runs two at a time cannot finish in under 0.8 s"


@module_loop
async def test_result_round_trips_through_json(sandbox):
    result = await sandbox.execute("open('a.txt', 'w').write('x')\nprint('hi')")
    again = ExecutionResult.from_json(result.to_json())
    assert again == result


# -- isolation detection and strict mode ------------------------------------------


def test_detection_picks_the_strongest_level_and_caches_it():
    isolator = Isolator()
    assert isolator.detected is None  # reading never probes
    level = isolator.detect()
    assert level in (Isolation.BWRAP, Isolation.UNSHARE, Isolation.RLIMITS)
    if shutil.which("bwrap"):
        assert level is Isolation.BWRAP, isolator.failures
    assert isolator.detect() is level and isolator.detected is level


def test_strict_mode_refuses_to_run_without_a_boundary():
    isolator = Isolator(strict=True, bwrap_path=None, unshare_path=None)
    with pytest.raises(IsolationUnavailable, match="strict mode refuses"):
        isolator.detect()
    with pytest.raises(ValueError, match="not one"):
        Isolator(level_request="rlimits", strict=True)


@module_loop
async def test_strict_executor_without_a_boundary_reports_sandbox_error():
    executor = SandboxExecutor(isolation=Isolator(strict=True, bwrap_path=None, unshare_path=None))
    result = await executor.execute("print(1)")
    assert result.outcome is Outcome.SANDBOX_ERROR
    assert "bwrap is not installed" in result.error_message and "unshare is not installed" in result.error_message


def test_forcing_a_missing_level_names_why():
    isolator = Isolator(level_request="bwrap", bwrap_path=None)
    with pytest.raises(IsolationUnavailable, match="bwrap is not installed"):
        isolator.detect()


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="max_concurrency"):
        SandboxExecutor(max_concurrency=0)


def test_unknown_level_is_rejected():
    with pytest.raises(ValueError):
        Isolator(level_request="docker")


@needs_bwrap
def test_bwrap_guarantees_and_view():
    isolator = Isolator(level_request="bwrap")
    assert {HOST_FILES, NO_NETWORK, PROCESS_TREE} <= isolator.guarantees
    view = isolator.view("/host/work", [Mount("/host/data/x.csv", "/sandbox/data/x.csv")])
    assert view.work_dir == SANDBOX_WORK
    assert view.inside("/host/work/a/b.txt") == f"{SANDBOX_WORK}/a/b.txt"
    assert view.inside("/host/data/x.csv") == "/sandbox/data/x.csv"


@module_loop
@needs_bwrap
async def test_bwrap_child_sees_no_host_filesystem_and_no_root(tmp_path):
    executor = SandboxExecutor(isolation="bwrap")
    code = (
        "import os\n"
        "print(os.getcwd())\n"
        "print(sorted(os.listdir('/')))\n"
        "print(os.path.exists('/etc/shadow'), os.path.exists('/etc/passwd'))\n"
        "print(os.getuid() != 0)\n"
    )
    result = await executor.execute(code)
    assert result.outcome is Outcome.OK, result.stderr
    cwd, top, etc, not_root = result.stdout.splitlines()
    assert cwd == SANDBOX_WORK
    interpreter_tops = {Path(p).parts[1] for p in (sys.prefix, sys.base_prefix, os.path.realpath(sys.executable))}
    allowed = {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "proc", "dev", "tmp", "sandbox"}
    assert set(eval(top)) <= allowed | interpreter_tops, f"unexpected host paths visible: {top}"
    assert etc == "False False"
    assert not_root == "True"


def test_wrap_makes_mounts_visible_at_their_target(tmp_path):
    isolator = Isolator()
    data = tmp_path / "data.txt"
    data.write_text("hello from the host")
    os.chmod(tmp_path, 0o755)
    work = tmp_path / "work"
    work.mkdir()
    isolator.prepare(work)
    cmd = isolator.wrap(
        [
            isolator.python,
            "-c",
            "import sys; print(open(sys.argv[1]).read())",
            isolator.view(work, [Mount(str(data), "/sandbox/data.txt")]).inside(data),
        ],
        work_dir=work,
        mounts=[Mount(str(data), "/sandbox/data.txt")],
        env={"PATH": "/usr/bin:/bin"},
    )
    done = subprocess.run(cmd.argv, env=cmd.env, cwd=cmd.cwd, capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == "hello from the host", done.stderr


@module_loop
async def test_data_libraries_import_but_codeloop_itself_does_not(sandbox):
    code = (
        "import numpy, pandas, matplotlib, sympy\n"
        "try:\n"
        "    import executors\n"
        "    print('codeloop importable')\n"
        "except ImportError:\n"
        "    print('codeloop hidden')\n"
    )
    result = await sandbox.execute(code)
    assert result.outcome is Outcome.OK, result.stderr
    if (await sandbox.level()) is Isolation.BWRAP:
        assert result.stdout == "codeloop hidden\n"


ORPHAN_DRIVER = """
import asyncio, sys
from executors.sandbox import SandboxExecutor
code = "import ctypes, time\\nctypes.CDLL(None).prctl(15, sys_name, 0, 0, 0)\\ntime.sleep(60)"
code = code.replace("sys_name", repr(sys.argv[2].encode()))
asyncio.run(SandboxExecutor(isolation=sys.argv[1], work_root=sys.argv[3]).execute(code))
"""


def _named(name: str) -> list:
    import psutil

    return [
        p
        for p in psutil.process_iter(["name", "status"])
        if p.info["name"] == name and p.info["status"] != psutil.STATUS_ZOMBIE
    ]


@pytest.mark.parametrize("level", ["bwrap", "unshare", "rlimits"])
def test_the_sandbox_dies_with_the_orchestrator(level):
    try:
        Isolator(level_request=level).detect()
    except IsolationUnavailable as exc:
        if level == "bwrap" and IN_CI:
            pytest.fail(f"CI must have bubblewrap: {exc}")
        pytest.skip(f"{level} is not available here: {exc}")
    name = f"cldeath{os.getpid() % 1000:03d}"
    # The killed driver leaves its workspace behind: keep it where we can remove it. Not under
    # pytest's 0700 tmp_path, which the sandbox user could not pass through at the rlimits level.
    work_root = tempfile.mkdtemp(prefix="codeloop-orphan-test-")
    os.chmod(work_root, 0o711)
    driver = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_DRIVER, level, name, work_root], cwd=str(Path(__file__).parent.parent)
    )
    try:
        deadline = time.monotonic() + 20
        while not _named(name):
            assert driver.poll() is None, "the driver ended before the sandboxed code started"
            assert time.monotonic() < deadline, "the sandboxed code never started"
            time.sleep(0.05)
    finally:
        driver.kill()  # the orchestrator dies without any chance to clean up
        driver.wait()
    deadline = time.monotonic() + 3
    while _named(name) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = _named(name)
    for proc in survivors:
        proc.kill()
    shutil.rmtree(work_root)
    assert not survivors, f"sandboxed code outlived its orchestrator at the {level} level"


@module_loop
async def test_killed_run_reports_usage_it_can_vouch_for(sandbox):
    result = await sandbox.execute("while True:\n    pass", limits=Limits(timeout_s=0.6))
    assert result.outcome is Outcome.DEADLINE_EXCEEDED
    if (await sandbox.level()) is Isolation.RLIMITS:
        assert result.cpu_time_s > 0.1  # the interpreter is our direct child: the kernel saw it all
    else:
        assert result.cpu_time_s is None and result.peak_memory_bytes is None


@module_loop
async def test_a_fork_bomb_does_not_stop_a_neighbour_from_forking():
    executor = SandboxExecutor(max_concurrency=2)
    if not {PROCESS_LIMIT} <= executor.isolator.guarantees:
        pytest.skip(f"{executor.isolation} does not enforce a process limit here")
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    neighbour = (
        "import os, time\n"
        "time.sleep(0.5)  # let the bomb reach its limit first\n"
        "pids = [os.fork() or os._exit(0) for _ in range(20)]\n"
        "for pid in pids:\n"
        "    os.waitpid(pid, 0)\n"
        "print('forked 20')"
    )
    bombed, other = await asyncio.gather(
        executor.execute(bomb, limits=Limits(timeout_s=1.5)), executor.execute(neighbour, limits=Limits(timeout_s=10))
    )
    assert bombed.outcome is Outcome.DEADLINE_EXCEEDED
    assert other.outcome is Outcome.OK, (other.error_type, other.error_message)
    assert other.stdout == "forked 20\n"


@module_loop
async def test_concurrent_hostile_and_ordinary_runs_each_get_their_own_result():
    executor = SandboxExecutor(max_concurrency=4)
    limits = Limits(timeout_s=4, memory_bytes=256 * 2**20, output_hard_bytes=2 * 2**20)
    runs = {
        "flood": ("import sys\nwhile True:\n    sys.stdout.write('f' * 65536)", Outcome.OUTPUT_LIMIT),
        "memory": ("x = []\nwhile True:\n    x.append(' ' * 2**24)", Outcome.MEMORY_EXCEEDED),
        "crash": ("import ctypes\nctypes.string_at(0)", Outcome.KILLED),
        **{f"ordinary{i}": (f"print('run {i}')", Outcome.OK) for i in range(5)},
    }
    results = await asyncio.gather(*(executor.execute(code, limits=limits) for code, _ in runs.values()))
    for (name, (_, expected)), result in zip(runs.items(), results, strict=True):
        assert result.outcome is expected, (name, result.outcome, result.error_message)
        if name.startswith("ordinary"):
            assert result.stdout == f"run {name.removeprefix('ordinary')}\n"
    await executor.aclose()
