"""The ``pool`` executor: correctness, per-execution isolation of state, and its life cycle.

One warm pool is shared by the correctness tests (starting zygotes that
preload numpy, pandas, matplotlib and sympy takes seconds); the life-cycle
tests (crash, recycle, close) use small pools that preload nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from executors import InputFile, Limits, Outcome, available_executors, get_executor
from executors._shared import INSIDE
from executors.isolation import IsolationUnavailable, Isolator
from executors.pool import PoolExecutor, PoolSettings

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pool():
    async with PoolExecutor(size=2) as executor:
        yield executor


def zygote_processes(executor: PoolExecutor) -> list[psutil.Process]:
    """The zygote interpreters (below their isolation wrappers), topmost first."""
    found = []
    for pid in executor.zygote_pids:
        try:
            tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            continue
        for proc in tree:
            try:
                cmdline = proc.cmdline()
                if "python" in os.path.basename(cmdline[0]) and any(p.endswith("zygote.py") for p in cmdline):
                    found.append(proc)
                    break  # the first one in the tree is the zygote; the rest are its forks
            except psutil.Error:
                continue
    return found


async def _until(condition, timeout_s: float = 20.0) -> None:
    """Wait for ``condition()`` to hold: a wait on the event itself, not a guessed sleep."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{condition} did not become true within {timeout_s} s"
        await asyncio.sleep(0.01)


def tree_of(pids: list[int]) -> list[psutil.Process]:
    procs = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs += [root, *root.children(recursive=True)]
        except psutil.Error:
            pass
    return procs


async def test_prints_and_reports_ok(pool):
    result = await pool.execute("print('hello from the pool')")
    assert result.outcome is Outcome.OK, result
    assert result.stdout == "hello from the pool\n"
    assert result.executor == "pool"
    assert result.isolation in ("bwrap", "unshare", "rlimits")
    assert result.cpu_time_s is not None and result.duration_s > 0


async def test_exception_has_parsed_user_only_traceback(pool):
    code = "def divide(a, b):\n    return a / b\n\nprint('before')\ndivide(1, 0)\n"
    result = await pool.execute(code)
    assert result.outcome is Outcome.FAILED
    assert result.error_type == "ZeroDivisionError"
    assert result.error_message == "division by zero"
    assert 'File "<code>", line 2, in divide' in result.traceback
    assert "zygote" not in result.traceback and "harness" not in result.traceback
    assert result.stdout == "before\n"
    assert "ZeroDivisionError" in result.stderr


async def test_nonzero_exit_is_failed(pool):
    result = await pool.execute("import sys\nsys.exit(3)")
    assert result.outcome is Outcome.FAILED
    assert result.exit_code == 3


async def test_figure_captured_as_png_without_savefig(pool):
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.title('squares')\n"
    result = await pool.execute(code)
    assert result.outcome is Outcome.OK, result.stderr
    images = result.images
    assert [a.name for a in images] == ["figure_1.png"]
    assert images[0].data.startswith(b"\x89PNG\r\n\x1a\n")


async def test_input_files_readable_and_artifacts_returned(pool):
    data = InputFile("sales.csv", b"region,amount\nnorth,3\nsouth,5\nnorth,4\n")
    code = (
        "import pandas as pd\n"
        "df = pd.read_csv('sales.csv')\n"
        "totals = df.groupby('region')['amount'].sum()\n"
        "totals.to_csv('totals.csv')\n"
        "print(totals.to_dict())\n"
    )
    result = await pool.execute(code, files=[data])
    assert result.outcome is Outcome.OK, result.stderr
    assert result.stdout == "{'north': 7, 'south': 5}\n"
    assert [a.name for a in result.artifacts] == ["totals.csv"]
    assert result.artifacts[0].data == b"region,amount\nnorth,7\nsouth,5\n"


async def test_input_files_are_read_only(pool):
    whoami = await pool.execute("import os\nprint(os.geteuid())")
    if whoami.stdout.strip() == "0":
        pytest.skip("the code runs as root at this isolation level, and root ignores file modes")
    result = await pool.execute("open('in.txt', 'w').write('changed')", files=[InputFile("in.txt", b"x")])
    assert result.outcome is Outcome.FAILED
    assert result.error_type == "PermissionError"


async def test_bad_input_file_name_is_a_sandbox_error_naming_it(pool):
    result = await pool.execute("pass", files=[InputFile("..", b"x")])
    assert result.outcome is Outcome.SANDBOX_ERROR
    assert "'..'" in result.error_message
    assert (await pool.execute("print(1)")).stdout == "1\n"  # the slot is still usable


async def test_each_fork_is_reseeded(pool):
    code = "import random\nimport numpy as np\nprint(np.random.rand(), random.random())"
    first, second = await pool.execute(code), await pool.execute(code)
    assert first.outcome is second.outcome is Outcome.OK
    a, b = first.stdout.split(), second.stdout.split()
    assert a[0] != b[0], "numpy's random state was inherited unchanged"
    assert a[1] != b[1], "Python's random state was inherited unchanged"


async def test_state_does_not_leak_between_executions(pool):
    await pool.execute("import numpy as np\nnp.LEAK = 1\nLEAK = 2")
    result = await pool.execute("import numpy as np\nprint(hasattr(np, 'LEAK'), 'LEAK' in globals())")
    assert result.stdout == "False False\n"


async def test_streams_are_separate_per_execution(pool):
    code = "import sys, time\nfor _ in range(5):\n    print('out-{0}')\n    print('err-{0}', file=sys.stderr)\n    time.sleep(0.01)\n"
    results = await asyncio.gather(*(pool.execute(code.format(i)) for i in range(4)))
    for i, result in enumerate(results):
        assert result.outcome is Outcome.OK
        assert result.stdout == f"out-{i}\n" * 5
        assert result.stderr == f"err-{i}\n" * 5


async def test_twenty_concurrent_executions_all_correct(pool):
    codes = [f"import numpy as np\nprint(int(np.arange({i}).sum()) + {i})" for i in range(20)]
    results = await asyncio.gather(*(pool.execute(code) for code in codes))
    assert [r.outcome for r in results] == [Outcome.OK] * 20
    assert [r.stdout for r in results] == [f"{i * (i - 1) // 2 + i}\n" for i in range(20)]


async def test_deadline_enforced(pool):
    start = time.perf_counter()
    result = await pool.execute("import time\ntime.sleep(60)", limits=Limits(timeout_s=0.5))
    assert result.outcome is Outcome.DEADLINE_EXCEEDED
    assert time.perf_counter() - start < 3


async def test_output_flood_stopped(pool):
    limits = Limits(output_hard_bytes=2 * 1024**2, timeout_s=20)
    start = time.perf_counter()
    result = await pool.execute("while True:\n    print('x' * 10000)", limits=limits)
    assert result.outcome is Outcome.OUTPUT_LIMIT
    assert result.stdout_truncated
    assert len(result.stdout) <= limits.output_bytes
    assert time.perf_counter() - start < 10


async def test_peak_memory_excludes_the_inherited_zygote(pool):
    small = await pool.execute("print(1)")
    big = await pool.execute("block = bytearray(200 * 1024 * 1024)\nblock[::4096] = b'x' * len(block[::4096])")
    assert big.outcome is Outcome.OK, big.stderr
    assert small.peak_memory_bytes < 50 * 1024**2
    assert 195 * 1024**2 <= big.peak_memory_bytes < 300 * 1024**2


async def test_memory_limit_gives_memory_exceeded(pool):
    result = await pool.execute("x = bytearray(600 * 1024 * 1024)", limits=Limits(memory_bytes=256 * 1024**2))
    assert result.outcome is Outcome.MEMORY_EXCEEDED


async def test_escaped_grandchild_is_killed(pool):
    code = (
        "import subprocess\nsubprocess.Popen(['sleep', '313'], start_new_session=True)\nprint('left a daemon behind')\n"
    )
    result = await pool.execute(code)
    assert result.outcome is Outcome.OK, result.stderr
    leftovers = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.info["cmdline"] == ["sleep", "313"] and proc.status() != psutil.STATUS_ZOMBIE:
            leftovers.append(proc.pid)
    assert leftovers == []


async def test_code_cannot_kill_its_zygote_for_good(pool):
    await pool.execute("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    after = await pool.execute("print('still serving')")
    assert after.outcome is Outcome.OK and after.stdout == "still serving\n"


async def test_crashed_zygote_is_replaced():
    async with PoolExecutor(size=1, preload=()) as executor:
        before = zygote_processes(executor)
        assert len(before) == 1
        before[0].send_signal(signal.SIGKILL)
        before[0].wait(5)
        result = await executor.execute("print('after the crash')")
        assert result.outcome is Outcome.OK and result.stdout == "after the crash\n"
        after = zygote_processes(executor)
        assert len(after) == 1 and after[0].pid != before[0].pid


async def test_zygote_killed_mid_execution_gives_sandbox_error_then_recovers():
    async with PoolExecutor(size=1, preload=()) as executor:
        running = asyncio.ensure_future(executor.execute("open('started', 'w').close()\nimport time\ntime.sleep(30)"))
        marker = executor.root / "slot-0" / "work" / "started"
        await _until(marker.exists)  # the code is running: its first line wrote the marker
        zygote_processes(executor)[0].send_signal(signal.SIGKILL)
        result = await asyncio.wait_for(running, 10)
        assert result.outcome is Outcome.SANDBOX_ERROR
        assert "zygote" in result.error_message
        follow_up = await executor.execute("print(2 + 2)")
        assert follow_up.outcome is Outcome.OK and follow_up.stdout == "4\n"


async def test_zygote_recycled_after_max_executions():
    async with PoolExecutor(size=1, preload=(), max_executions=2) as executor:
        first = zygote_processes(executor)[0]
        for _ in range(2):
            assert (await executor.execute("print('ok')")).outcome is Outcome.OK
        # The successor warms up while the old zygote keeps serving; it takes over
        # on the first execution after it is ready, and the old one is killed.
        deadline = time.monotonic() + 30
        while zygote_processes(executor)[0].pid == first.pid:
            assert time.monotonic() < deadline, "the zygote was never recycled"
            assert (await executor.execute("print('ok')")).outcome is Outcome.OK
            await executor.settled()
        first.wait(5)
        assert not first.is_running()


async def test_recycling_is_staggered_across_zygotes():
    async with PoolExecutor(size=2, preload=(), max_executions=4) as executor:
        before = {p.pid for p in zygote_processes(executor)}
        for _ in range(2):  # in pairs, so each zygote runs two: the first reaches its staggered limit (2 of 4)
            results = await asyncio.gather(*(executor.execute("print(1)") for _ in range(2)))
            assert all(r.outcome is Outcome.OK for r in results)
        await executor.settled()  # the successor zygote is warm
        await asyncio.gather(*(executor.execute("print(1)") for _ in range(2)))
        after = {p.pid for p in zygote_processes(executor)}
        assert len(before & after) == 1, "exactly one zygote (the one with the staggered limit) is recycled first"


async def test_no_process_or_directory_left_after_aclose():
    executor = PoolExecutor(size=2, preload=())
    await executor.start()
    await executor.execute("import subprocess\nsubprocess.Popen(['sleep', '314'], start_new_session=True)")
    procs = tree_of(executor.zygote_pids)
    assert len(procs) >= 2
    root = executor.root
    assert root is not None and root.exists()
    await executor.aclose()
    _gone, alive = psutil.wait_procs(procs, timeout=5)
    assert alive == []
    assert not root.exists()


async def test_finalizer_kills_zygotes_of_a_dropped_pool():
    executor = PoolExecutor(size=1, preload=())
    await executor.start()
    procs = tree_of(executor.zygote_pids)
    del executor
    import gc

    gc.collect()
    _gone, alive = psutil.wait_procs(procs, timeout=5)
    assert alive == []


async def test_settings_are_validated():
    with pytest.raises(ValueError, match="size"):
        PoolSettings(size=0)
    with pytest.raises(TypeError, match="unknown pool setting"):
        PoolExecutor(sizes=2)


async def test_registered_by_name():
    assert {"pool", "restricted"} <= set(available_executors())
    async with get_executor("pool", size=1, preload=()) as executor:
        assert isinstance(executor, PoolExecutor)
        result = await executor.execute("print(6 * 7)")
        assert result.stdout == "42\n"


async def test_large_code_and_leftover_files_do_not_leak(pool):
    big = "x = 0\n" + "x += 1\n" * 20000 + "print(x)\n"
    result = await pool.execute(big)
    assert result.outcome is Outcome.OK and result.stdout == "20000\n"
    await pool.execute(
        "import os\nos.makedirs('deep/er')\nopen('deep/er/f.txt', 'w').write('1')\nos.chmod('deep', 0o500)"
    )
    listing = await asyncio.gather(*(pool.execute("import os\nprint(sorted(os.listdir('.')))") for _ in range(4)))
    assert [r.stdout for r in listing] == ["[]\n"] * 4


async def test_cancelled_execution_leaves_the_pool_usable():
    async with PoolExecutor(size=1, preload=()) as executor:
        running = asyncio.ensure_future(executor.execute("open('started', 'w').close()\nimport time\ntime.sleep(30)"))
        await _until((executor.root / "slot-0" / "work" / "started").exists)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        results = [await executor.execute(f"print({i})") for i in range(3)]
        assert [r.stdout for r in results] == ["0\n", "1\n", "2\n"]


async def test_cold_pool_starts_zygotes_on_demand():
    async with PoolExecutor(size=1, preload=(), warm=False) as executor:
        assert executor.zygote_pids == []
        result = await executor.execute("print('lazy')")
        assert result.stdout == "lazy\n"
        assert len(executor.zygote_pids) == 1


async def test_strict_mode_refuses_rlimits_only():
    with pytest.raises(ValueError, match="strict mode"):
        PoolExecutor(isolation="rlimits", strict=True)


async def test_records_the_isolation_it_ran_under():
    async with PoolExecutor(size=1, preload=(), isolation="rlimits") as executor:
        result = await executor.execute("print(1)")
    assert result.isolation == "rlimits" and executor.isolation.value == "rlimits"


async def test_code_without_library_imports_runs_on_a_light_zygote(pool):
    plain = await pool.execute("import sys, math\nprint('pandas' in sys.modules, math.factorial(5))")
    assert plain.stdout == "False 120\n"
    heavy = await pool.execute("import numpy\nimport sys\nprint('pandas' in sys.modules)")
    assert heavy.stdout == "True\n"
    # An import the scan cannot see still works: the light zygote's child imports it.
    dynamic = await pool.execute("np = __import__('numpy')\nprint(int(np.arange(4).sum()))")
    assert dynamic.outcome is Outcome.OK and dynamic.stdout == "6\n"


async def test_light_zygotes_can_be_turned_off():
    async with PoolExecutor(size=1, light_size=0, preload=("json",)) as executor:
        assert len(executor.zygote_pids) == 1
        result = await executor.execute("print(1)")
        assert result.stdout == "1\n"


def _forced_pool(level: str, **settings) -> PoolExecutor:
    """A pool at a forced level (forcing ``unshare`` is how a machine without bubblewrap is simulated)."""
    isolator = Isolator(level_request=level)
    try:
        isolator.detect()
    except IsolationUnavailable as exc:
        if level == "bwrap" and IN_CI:
            pytest.fail(f"CI must have bubblewrap: {exc}")
        pytest.skip(f"{level} is not available here: {exc}")
    return PoolExecutor(isolation=level, **settings)


@pytest.mark.parametrize("level", ["bwrap", "unshare"])
async def test_private_tmp_is_emptied_between_executions(level):
    async with _forced_pool(level, size=1, light_size=0, preload=("json",)) as executor:
        assert "private_tmp" in executor.isolator.guarantees
        first = await executor.execute(
            "open('/tmp/left-behind', 'w').write('from run 1')\nimport os\nos.makedirs('/tmp/d/e')\nos.chmod('/tmp/d', 0o500)"
        )
        assert first.outcome is Outcome.OK, first.stderr
        second = await executor.execute("import os\nprint(sorted(os.listdir('/tmp')))")
        assert second.outcome is Outcome.OK, second.stderr
        # Only what the zygote's sandbox binds back in at its own path shows under the private /tmp:
        # an interpreter installed under /tmp (a CI checkout), codeloop's inside/ directory, and
        # outside bwrap (where paths are the host's own) the slot's directory in the pool's root.
        bound = [sys.prefix, sys.base_prefix, str(INSIDE)] + ([str(executor.root)] if level == "unshare" else [])
        parts = [Path(p).parts for p in bound]
        assert second.stdout == f"{sorted({p[2] for p in parts if p[:2] == ('/', 'tmp') and len(p) > 2})}\n"
        third = await executor.execute("print('still served')")
        assert third.stdout == "still served\n", "emptying /tmp must not remove the slot's bound directory"


@pytest.mark.parametrize("level", ["bwrap", "unshare", "rlimits"])
async def test_a_signal_the_code_sends_itself_is_delivered(level):
    async with _forced_pool(level, size=1, light_size=0, preload=()) as executor:
        result = await executor.execute("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)")
        assert result.outcome is Outcome.KILLED and result.signal == signal.SIGSEGV, result


async def test_a_zygote_cannot_reach_another_slots_directory(pool):
    if pool.isolation.value != "bwrap":
        pytest.skip("only bubblewrap hides the host's paths")
    other_slots = [str(p / "work") for p in sorted(pool.root.glob("slot-*"))]
    code = f"import os\nprint([os.path.exists(p) for p in {other_slots!r}])"
    result = await pool.execute(code)
    assert result.stdout == f"{[False] * len(other_slots)}\n"


async def test_aclose_releases_executions_waiting_for_a_zygote():
    executor = PoolExecutor(size=1, preload=())
    await executor.start()
    running = asyncio.ensure_future(executor.execute("open('started', 'w').close()\nimport time\ntime.sleep(30)"))
    await _until((executor.root / "slot-0" / "work" / "started").exists)
    waiting = [asyncio.ensure_future(executor.execute("print(1)")) for _ in range(3)]
    await asyncio.sleep(0)  # one turn of the loop: each is now waiting for the busy zygote
    await executor.aclose()
    results = await asyncio.wait_for(asyncio.gather(running, *waiting), 10)
    assert [r.outcome for r in results] == [Outcome.SANDBOX_ERROR] * 4
    after = await executor.execute("print(1)")
    assert after.outcome is Outcome.SANDBOX_ERROR and "closed" in after.error_message


async def test_using_a_pool_from_another_event_loop_is_a_clear_error():
    executor = PoolExecutor(size=1, preload=())
    await asyncio.to_thread(asyncio.run, executor.start())  # started on a loop of its own
    try:
        with pytest.raises(RuntimeError, match="another event loop"):
            await executor.execute("print(1)")
    finally:
        await asyncio.to_thread(asyncio.run, executor.aclose())
    assert not executor.root.exists()


async def test_each_slot_runs_as_its_own_user(pool):
    if pool.isolator.runs_as_root:
        pytest.skip("the code keeps our user id at this isolation level")
    code = "import os, time\ntime.sleep(0.3)\nprint(os.getuid())"
    results = await asyncio.gather(*(pool.execute(code) for _ in range(2)))
    uids = {r.stdout for r in results}
    assert len(uids) == 2 and "0\n" not in uids


ROUTING = {
    "print(1)": False,
    "import math, json as j": False,
    "from collections import Counter": False,
    "import numpy as np": True,
    "from pandas import DataFrame": True,
    "import matplotlib.pyplot as plt": True,
    "def f():\n    import sympy\n    return sympy": True,
    "x = 1; import requests": True,
    "import os, numpy": True,
    "from . import sibling": False,
    "text = 'import numpy'": False,
}


@pytest.mark.parametrize("code", sorted(ROUTING))
async def test_routing_reads_the_imports(code):
    assert PoolExecutor().needs_preload(code) is ROUTING[code]
