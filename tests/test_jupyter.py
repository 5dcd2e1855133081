"""The Jupyter executors against real kernels: a local ipykernel and a real
Jupyter Kernel Gateway started on 127.0.0.1 with a token by the fixture below.

Each check runs for both executors (``kind`` is "local" or "remote"). The
executors live for the whole module, and checks that do not need a fresh
interpreter share the session "main-<kind>": starting kernels is the slow part.
Checks that restart, kill or reset a kernel use sessions of their own.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")
pytest.importorskip("kernel_gateway")

from benchmarks.perf.local_gateway import LocalGateway
from executors import Executor, InputFile, Limits, Outcome, get_executor
from executors.jupyter import JupyterExecutor
from executors.jupyter_remote import GatewayAuthError, JupyterRemoteExecutor

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
KINDS = ["local", "remote"]


# -- fixtures ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str | None) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def gateway():
    """A real ``jupyter kernelgateway`` on a free local port (the benchmarks' LocalGateway); yields (url, token)."""
    with LocalGateway(startup_timeout_s=30) as running:
        yield running.url, running.token


@pytest.fixture(scope="module")
def executors(gateway):
    """One executor of each kind for the module; closed (kernels stopped) at the end."""
    url, token = gateway
    made = {
        "local": JupyterExecutor(interrupt_grace_s=2.5, max_kernels=8),
        "remote": JupyterRemoteExecutor(url, token=token, interrupt_grace_s=2.5, max_kernels=8),
    }
    yield made
    for ex in made.values():
        asyncio.run(ex.aclose())


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.fixture
def ex(executors, kind):
    return executors[kind]


def _alive(proc: int | psutil.Process) -> bool:
    """Running and not a zombie (a zombie is dead; only its exit status is left)."""
    try:
        p = proc if isinstance(proc, psutil.Process) else psutil.Process(proc)
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _kernel_pid_local(ex: JupyterExecutor, session: str) -> int:
    """The ipykernel process itself, wherever it sits under the launcher (below its init)."""
    launcher = psutil.Process(ex.kernel_pid(session))
    found = [
        p.pid
        for p in [launcher, *launcher.children(recursive=True)]
        if "kernelapp.launch_new_instance" in " ".join(p.cmdline())
    ]
    assert found, "no ipykernel process under the launcher"
    return found[-1]


async def _kernel_pid(ex, kind: str, session: str) -> int:
    if kind == "local":
        await ex.execute("pass", session=session)
        return _kernel_pid_local(ex, session)
    r = await ex.execute("import os; os.getpid()", session=session)
    return int(r.results[0])


def _workdir(ex, kind: str, session: str) -> Path:
    """The session kernel's working directory as the host sees it (the gateway runs on this host)."""
    handle = ex._sessions[session].handle
    return Path(handle.work if kind == "local" else handle.cwd)


async def _until(condition, timeout_s: float = 20.0) -> None:
    """Wait for ``condition()`` to hold: a wait on the event itself, not a guessed sleep."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{condition} did not become true within {timeout_s} s"
        await asyncio.sleep(0.01)


# -- the checks, for both executors -------------------------------------------------


async def test_variables_persist_across_three_executions(ex, kind):
    s = f"main-{kind}"
    r1 = await ex.execute("x = 20\nprint('set')", session=s)
    r2 = await ex.execute("x += 1\ny = x * 2", session=s)
    r3 = await ex.execute("print(x, y)\ny", session=s)
    assert [r.outcome for r in (r1, r2, r3)] == [Outcome.OK] * 3, (r1, r2, r3)
    assert r1.stdout == "set\n"
    assert r3.stdout == "21 42\n"
    assert r3.results == ["42"]
    assert r3.executor == ex.name


async def test_plot_comes_back_as_png(ex, kind):
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [1, 4, 9])\n"
        "plt.show()\n"
        "plt.figure(); plt.bar(['a', 'b'], [3, 5]);\n"  # not shown: the inline backend flushes it
    )
    r = await ex.execute(code, session=f"main-{kind}")
    assert r.outcome is Outcome.OK, r
    pngs = [a for a in r.artifacts if a.mime_type == "image/png"]
    assert len(pngs) == 2 and len({a.name for a in pngs}) == 2
    assert all(re.fullmatch(r"figure_\d+\.png", a.name) for a in pngs)
    assert all(a.data.startswith(PNG_MAGIC) and a.size > 1000 for a in pngs)
    assert r.results == []  # "<Figure size ...>" text is not a result


async def test_error_is_failed_with_plain_traceback(ex, kind):
    r = await ex.execute("def f():\n    return 1 / 0\nf()", session=f"main-{kind}")
    assert r.outcome is Outcome.FAILED
    assert r.error_type == "ZeroDivisionError"
    assert r.error_message == "division by zero"
    assert "\x1b[" not in r.traceback and "return 1 / 0" in r.traceback


async def test_infinite_loop_is_interrupted_and_kernel_keeps_state(ex, kind):
    s = f"main-{kind}"
    await ex.execute("kept = 'yes'", session=s)
    start = time.monotonic()
    r = await ex.execute("print('started', flush=True)\nwhile True:\n    pass", session=s, limits=Limits(timeout_s=1.5))
    elapsed = time.monotonic() - start
    assert r.outcome is Outcome.DEADLINE_EXCEEDED, r
    assert r.error_type == "TimeoutError" and "kept" in r.error_message
    assert "started" in r.stdout
    assert elapsed < 1.5 + ex.interrupt_grace_s + 2.0  # slack for a loaded machine
    after = await ex.execute("kept", session=s)
    assert after.outcome is Outcome.OK and after.results == ["'yes'"]


async def test_loop_that_ignores_interrupt_gets_kernel_restarted(ex, kind):
    s = f"stubborn-{kind}"
    await ex.execute("lost = 1", session=s)
    code = "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"
    r = await ex.execute(code, session=s, limits=Limits(timeout_s=1.0))
    assert r.outcome is Outcome.DEADLINE_EXCEEDED
    assert "restarted" in r.error_message
    after = await ex.execute("print(2 + 2)\n'lost' in dir()", session=s)
    assert after.outcome is Outcome.OK, after
    assert after.stdout == "4\n" and after.results == ["False"]
    assert "restarted" in after.stderr  # the model is told why its variables are gone


async def test_killed_kernel_is_reported_and_next_run_works(ex, kind):
    s = f"kill-{kind}"
    await ex.execute("before = 1", session=s)
    pid = await _kernel_pid(ex, kind, s)
    marker = _workdir(ex, kind, s) / "started"

    async def kill_once_running():
        await _until(marker.exists)  # the code is running: its first line wrote the marker
        os.kill(pid, signal.SIGKILL)

    killer = asyncio.create_task(kill_once_running())
    start = time.monotonic()
    r = await ex.execute(
        "open('started', 'w').close()\nimport time\ntime.sleep(60)", session=s, limits=Limits(timeout_s=30)
    )
    await killer
    assert time.monotonic() - start < 15  # noticed, not waited out to the deadline
    assert r.outcome is Outcome.KILLED, r
    assert r.error_type == "KernelDied" and "restarted" in r.error_message
    after = await ex.execute("'before' in dir(), 6 * 7", session=s)
    assert after.outcome is Outcome.OK, after
    assert after.results == ["(False, 42)"]


async def test_input_file_is_readable_and_written_files_come_back(ex, kind):
    s = f"main-{kind}"
    data = InputFile("sales.csv", b"region,amount\nnorth,10\nsouth,32\n")
    r = await ex.execute(
        "import pandas as pd\ndf = pd.read_csv('sales.csv')\n"
        "df.to_csv('doubled.csv', index=False)\nint(df.amount.sum())",
        files=[data],
        session=s,
    )
    assert r.outcome is Outcome.OK, r
    assert r.results == ["42"]
    assert [a.name for a in r.artifacts] == ["doubled.csv"]  # the input is not echoed back
    # The next question in the session uses the variable from the first one.
    r2 = await ex.execute("int(df.amount.max())", files=[data], session=s)
    assert r2.results == ["32"] and r2.artifacts == []


async def test_reset_clears_state_and_sessions_are_separate(ex, kind):
    s = f"reset-{kind}"
    await ex.execute("shared = 1", session=f"main-{kind}")
    other = await ex.execute("shared", session=s)
    assert other.outcome is Outcome.FAILED and other.error_type == "NameError"
    before = await ex.execute("secret_value = 5\nimport os\nos.getcwd()", session=s)
    await ex.reset(s)
    if kind == "remote":  # the gateway runs here, so its kernel's directory is visible
        assert not os.path.exists(eval(before.results[0])), "reset left the working directory behind"
    r = await ex.execute("secret_value", session=s)
    assert r.outcome is Outcome.FAILED and r.error_type == "NameError"


async def test_result_round_trips_through_json(ex, kind):
    r = await ex.execute("import matplotlib.pyplot as plt\nplt.plot([1]); plt.show()\n'done'", session=f"main-{kind}")
    again = type(r).from_json(json.loads(json.dumps(r.to_json())))
    assert again == r


async def test_chat_over_a_csv_keeps_variables_between_turns(ex, kind):
    """Two chat turns through the loop: the second question uses the first's DataFrame."""
    from orchestrator import Orchestrator, RunStatus, ScriptedModel
    from orchestrator.types import Conversation

    csv = InputFile("sales.csv", b"region,amount\nnorth,10\nsouth,32\nnorth,5\n")
    model = ScriptedModel(
        [
            "```python\nimport pandas as pd\nsales = pd.read_csv('sales.csv')\nprint(len(sales))\n```",
            "There are 3 rows.",
            "```python\nprint(sales.groupby('region').amount.sum().to_dict())\n```",
            "north 15, south 32.",
        ]
    )
    orch = Orchestrator(model, ex)
    conv = Conversation()
    first = await orch.run("How many rows?", files=[csv], conversation=conv, session=f"main-{kind}")
    second = await orch.run("Total per region?", files=[csv], conversation=conv, session=f"main-{kind}")
    assert first.status is RunStatus.SOLVED and second.status is RunStatus.SOLVED, (first, second)
    assert first.attempts[0].result.stdout == "3\n"
    assert second.attempts[0].result.stdout == "{'north': 15, 'south': 32}\n"


async def test_output_flood_is_stopped_and_state_kept(ex, kind):
    s = f"main-{kind}"
    await ex.execute("flood_kept = 1", session=s)
    r = await ex.execute(
        "while True:\n    print('x' * 1000)",
        session=s,
        limits=Limits(timeout_s=20, output_bytes=1000, output_hard_bytes=200_000),
    )
    assert r.outcome is Outcome.OUTPUT_LIMIT, r
    assert r.stdout_truncated and len(r.stdout) == 1000
    after = await ex.execute("flood_kept", session=s)
    assert after.results == ["1"]


# -- remote only ----------------------------------------------------------------------------


async def test_wrong_token_is_a_clear_error(gateway):
    url, _ = gateway
    bad = JupyterRemoteExecutor(url, token="not-the-token")
    r = await bad.execute("1 + 1")
    assert r.outcome is Outcome.SANDBOX_ERROR
    assert r.error_type == "GatewayAuthError"
    assert "401" in r.error_message and "token" in r.error_message
    assert "not-the-token" not in r.error_message
    with pytest.raises(GatewayAuthError, match="token was refused"):
        await bad.check()
    await bad.aclose()
    good = JupyterRemoteExecutor(url, token=gateway[1])
    await good.check()  # no kernel is started for this
    await good.aclose()


async def test_unreachable_gateway_is_a_clear_error():
    ex = JupyterRemoteExecutor(f"http://127.0.0.1:{_free_port()}", token="t", request_timeout_s=5)
    r = await ex.execute("1")
    assert r.outcome is Outcome.SANDBOX_ERROR
    assert r.error_type == "GatewayError" and "cannot reach" in r.error_message
    await ex.aclose()


async def test_bad_input_file_name_is_a_clear_error(ex, kind):
    r = await ex.execute("1", files=[InputFile("..", b"x")], session=f"main-{kind}")
    assert r.outcome is Outcome.SANDBOX_ERROR and "bad input file name" in r.error_message


async def test_remote_finalizer_deletes_kernels(gateway):
    url, token = gateway
    ex = JupyterRemoteExecutor(url, token=token)
    r = await ex.execute("import os\nos.getcwd()")
    kernel_id = ex.kernel_id()
    assert _get(f"{url}/api/kernels/{kernel_id}", token) == 200
    del ex
    gc.collect()
    assert _get(f"{url}/api/kernels/{kernel_id}", token) == 404
    shutil.rmtree(eval(r.results[0]))  # a finalizer cannot ask the kernel to remove its directory


async def test_concurrent_sessions_respect_the_kernel_bound(gateway):
    url, token = gateway
    ex = JupyterRemoteExecutor(url, token=token, max_kernels=2)
    try:
        runs = [ex.execute(f"import time; time.sleep(0.3); v = {i}; v", session=f"c{i}") for i in range(3)]
        runs += [ex.execute("1 + 1", session="c0") for _ in range(2)]
        results = await asyncio.gather(*runs)
        assert [r.results for r in results] == [["0"], ["1"], ["2"], ["2"], ["2"]]
        assert len(ex.sessions()) <= 2
    finally:
        await ex.aclose()


def test_registry_builds_both(gateway):
    url, token = gateway
    local = get_executor("jupyter")
    assert isinstance(local, JupyterExecutor) and isinstance(local, Executor) and local.stateful
    remote = get_executor("jupyter-remote", gateway_url=url, token=token)
    assert isinstance(remote, JupyterRemoteExecutor) and isinstance(remote, Executor) and remote.stateful
    assert token not in repr(remote)


# -- local only ---------------------------------------------------------------------------


async def test_local_kernel_sees_no_secrets(monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "sk-test-secret")
    ex = JupyterExecutor(max_kernels=1, idle_timeout_s=1.0)
    try:
        r = await ex.execute("import os\nsorted(k for k in os.environ if 'KEY' in k or 'SECRET' in k)")
        assert r.results == ["[]"], r
        pid = ex.kernel_pid()
        # A second session evicts the first (max_kernels=1) and stops its kernel.
        await ex.execute("1", session="other")
        assert ex.sessions() == ["other"]
        assert not _alive(pid)
        other_pid = ex.kernel_pid("other")
        # Idle kernels are shut down by the sweep.
        deadline = time.monotonic() + 5
        while ex.sessions() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert ex.sessions() == []
        # The sweep forgets the session first, then stops its kernel.
        while _alive(other_pid) and time.monotonic() < deadline + 3:
            await asyncio.sleep(0.05)
        assert not _alive(other_pid)
    finally:
        await ex.aclose()


async def test_local_finalizer_kills_kernels():
    ex = JupyterExecutor()
    await ex.execute("1")
    pid = ex.kernel_pid()
    assert psutil.pid_exists(pid)
    del ex
    gc.collect()
    deadline = time.monotonic() + 3
    while _alive(pid):
        assert time.monotonic() < deadline, "the kernel outlived its executor"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("level", ["bwrap", "unshare", "rlimits"])
async def test_local_kernel_runs_inside_the_sandbox_isolation(level):
    """At each level we can force (no bubblewrap is simulated by forcing ``unshare``), the kernel
    sees the host's files and network exactly as that level promises."""
    from executors.isolation import (
        HOST_FILES,
        NO_NETWORK,
        PRIVATE_TMP,
        PRIVATE_TMP_DIRS,
        IsolationUnavailable,
        Isolator,
    )

    isolator = Isolator(level_request=level)
    try:
        await asyncio.to_thread(isolator.detect)
    except IsolationUnavailable as exc:
        if level == "bwrap" and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must have bubblewrap: {exc}")
        pytest.skip(f"{level} is not available here: {exc}")
    ex = JupyterExecutor(isolation=isolator)
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        listener.listen()
        probe_file = os.path.abspath(__file__)
        r = await ex.execute(
            "import os, signal, socket\n"
            "def can_connect():\n"
            "    try:\n"
            f"        socket.create_connection(('127.0.0.1', {listener.getsockname()[1]}), timeout=1).close()\n"
            "        return True\n"
            "    except OSError:\n"
            "        return False\n"
            f"os.path.exists({probe_file!r}), can_connect()",
        )
        assert r.outcome is Outcome.OK, r
        assert r.isolation == isolator.detected == level
        sees_host_file, reaches_host_port = eval(r.results[0])
        guarantees = isolator.guarantees
        # A checkout under the temp dir is hidden by a private /tmp even where host files are visible.
        in_private_tmp = PRIVATE_TMP in guarantees and any(
            probe_file.startswith(d.rstrip("/") + "/") for d in PRIVATE_TMP_DIRS
        )
        assert sees_host_file is (HOST_FILES not in guarantees and not in_private_tmp)
        assert reaches_host_port is (NO_NETWORK not in guarantees)
        # The kernel is not a PID namespace's first process: a signal it sends itself is not dropped.
        crash = await ex.execute("os.kill(os.getpid(), signal.SIGSEGV)")
        assert crash.outcome is Outcome.KILLED and crash.error_type == "KernelDied", crash
    finally:
        listener.close()
        await ex.aclose()


async def test_local_memory_limit_is_reported(executors):
    r = await executors["local"].execute("block = bytearray(3 * 1024**3)", session="main-local")
    assert r.outcome is Outcome.MEMORY_EXCEEDED and r.error_type == "MemoryError"


def test_local_kernel_dies_with_a_killed_parent(tmp_path):
    """SIGKILL skips every finalizer: the kernel must still go (PR_SET_PDEATHSIG)."""
    script = (
        "import asyncio\n"
        "from executors.jupyter import JupyterExecutor\n"
        "async def main():\n"
        f"    ex = JupyterExecutor(base_dir={str(tmp_path)!r})  # nobody is left to remove it\n"
        "    await ex.execute('1')\n"
        "    print(ex.kernel_pid(), flush=True)\n"
        "    await asyncio.sleep(120)\n"
        "asyncio.run(main())\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        launcher = psutil.Process(int(parent.stdout.readline()))
        tree = [launcher, *launcher.children(recursive=True)]
        assert any("kernelapp" in " ".join(p.cmdline()) for p in tree)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5
    while any(_alive(p) for p in tree):
        assert time.monotonic() < deadline, "a kernel process outlived its killed parent"
        time.sleep(0.05)
