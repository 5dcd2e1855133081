"""The pool's warm path: what the zygote does once and each spare rehearses
must make runs faster without leaking anything into them.

One zygote (``size=1``, no light zygotes) so that consecutive runs are forks of
the same process: state they shared would show.
"""

from __future__ import annotations

import asyncio
import io

import pytest
import pytest_asyncio

from executors import Outcome
from executors.inside.warm import rehearsal_steps, rehearse
from executors.pool import PoolExecutor

on_one_zygote = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def one_zygote():
    async with PoolExecutor(size=1, light_size=0) as executor:
        yield executor


async def run_ok(pool: PoolExecutor, code: str):
    result = await pool.execute(code)
    assert result.outcome is Outcome.OK, result.stderr
    return result


@on_one_zygote
async def test_forks_of_one_zygote_get_different_random_states(one_zygote):
    code = (
        "import random\nimport numpy as np\nprint(np.random.rand(), np.random.default_rng().random(), random.random())"
    )
    first = (await run_ok(one_zygote, code)).stdout.split()
    second = (await run_ok(one_zygote, code)).stdout.split()
    assert first[0] != second[0], "numpy's legacy random state was inherited unchanged"
    assert first[1] != second[1], "numpy's default_rng was seeded the same"
    assert first[2] != second[2], "Python's random state was inherited unchanged"


@on_one_zygote
async def test_a_run_starts_clean_after_the_spare_rehearsed(one_zygote):
    """The rehearsal drew nothing the run can see: no figure, no file, no traceback source."""
    code = (
        "import os, linecache\nimport matplotlib.pyplot as plt\n"
        "print(plt.get_fignums(), sorted(os.listdir('.')), linecache.getline('<code>', 1).startswith('import os'))"
    )
    result = await run_ok(one_zygote, code)
    assert result.stdout == "[] [] True\n"
    assert result.artifacts == []


@on_one_zygote
async def test_a_figure_drawn_after_warm_up_is_correct(one_zygote):
    """Pixels, not just a PNG: the zygote's warm-up draw must not bleed into a child's figure."""
    code = (
        "import numpy as np\nimport matplotlib.pyplot as plt\n"
        "fig = plt.figure(figsize=(2, 1), dpi=10)\n"
        "ax = fig.add_axes([0, 0, 1, 1])\nax.set_axis_off()\n"
        "ax.imshow(np.array([[[255, 0, 0], [0, 0, 255]]], dtype=np.uint8), aspect='auto', interpolation='nearest')\n"
        "plt.show()\n"
    )
    result = await run_ok(one_zygote, code)
    assert [a.name for a in result.images] == ["figure_1.png"]
    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(result.images[0].data), format="png")
    assert pixels.shape[:2] == (10, 20)
    assert pixels[5, 2, :3].tolist() == [1.0, 0.0, 0.0]  # the left half is red
    assert pixels[5, 17, :3].tolist() == [0.0, 0.0, 1.0]  # the right half is blue


@on_one_zygote
async def test_frozen_objects_do_not_carry_state_between_runs(one_zygote):
    """The zygote froze its heap (gc.freeze) before forking: a run that freezes,
    unfreezes or collects changes only its own process."""
    probe = "import gc\nprint(gc.isenabled(), gc.get_freeze_count() > 0)"
    assert (await run_ok(one_zygote, probe)).stdout == "True True\n"
    before = (await run_ok(one_zygote, "import gc\nprint(gc.get_freeze_count())")).stdout
    await run_ok(one_zygote, "import gc, json\njson.LEAK = [object() for _ in range(1000)]\ngc.freeze()\ngc.disable()")
    await run_ok(one_zygote, "import gc\ngc.unfreeze()\ngc.collect()")
    after = await run_ok(
        one_zygote, "import gc, json\nprint(gc.get_freeze_count())\nprint(gc.isenabled(), hasattr(json, 'LEAK'))"
    )
    assert after.stdout == before + "True False\n"


def test_rehearsal_stops_once_a_request_is_waiting():
    ran: list[int] = []
    waiting = iter([False, False, True, True])
    rehearse([lambda: ran.append(1), lambda: ran.append(2), lambda: ran.append(3)], lambda: next(waiting))
    assert ran == [1, 2]


def test_a_failing_rehearsal_step_ends_the_rehearsal_quietly():
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    rehearse([broken, lambda: ran.append("after")], lambda: False)
    assert ran == []


def test_light_zygotes_rehearse_only_the_harness():
    class HarnessDouble:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def prepare_matplotlib(self, saver) -> None:
            self.calls.append("matplotlib")

        def reseed(self) -> None:
            self.calls.append("reseed")

        def execute(self, code: str) -> dict:
            self.calls.append(f"execute {code}")
            return {}

    harness = HarnessDouble()
    steps = rehearsal_steps(harness, libraries=False)
    rehearse(steps, lambda: False)
    assert harness.calls == ["matplotlib", "reseed", "execute pass"]
    import numpy  # noqa: F401  (the library steps need it imported, as in a zygote)

    assert len(rehearsal_steps(harness, libraries=True)) > len(steps)


# -- the answer waits for the child's exit ------------------------------------


@on_one_zygote
async def test_a_thread_left_running_gets_the_ordinary_path(one_zygote):
    """A live thread of the code means the child does not announce its end early;
    the run still returns at once (its exit stops the thread) with its output."""
    code = "import threading, time\nthreading.Thread(target=time.sleep, args=(30,)).start()\nprint('started')"
    started = asyncio.get_running_loop().time()
    result = await one_zygote.execute(code)
    assert result.outcome is Outcome.OK and result.stdout == "started\n"
    assert asyncio.get_running_loop().time() - started < 10
    assert (await run_ok(one_zygote, "print(2)")).stdout == "2\n"


@on_one_zygote
async def test_a_process_left_running_is_killed_before_the_answer(one_zygote):
    code = "import subprocess\np = subprocess.Popen(['sleep', '30'], start_new_session=True)\nprint(p.pid)"
    result = await run_ok(one_zygote, code)
    pid = int(result.stdout)
    check = await run_ok(
        one_zygote,
        f"import os\ntry:\n    os.kill({pid}, 0)\n    print('alive')\nexcept ProcessLookupError:\n    print('gone')",
    )
    assert check.stdout == "gone\n"


@on_one_zygote
async def test_a_forged_end_message_neither_ends_the_run_nor_sets_its_status(one_zygote):
    """The status is the kernel's: code that writes "my run is over, exit 0" to
    every pipe it holds, then keeps running and exits 9, is reported as exit 9
    after it really ended."""
    code = (
        "import os, json, time\n"
        "for fd in map(int, os.listdir('/proc/self/fd')):\n"
        "    try:\n"
        "        if fd > 2 and 'pipe' in os.readlink(f'/proc/self/fd/{fd}'):\n"
        "            os.write(fd, json.dumps({'exit_code': 0, 'error_type': None}).encode())\n"
        "    except OSError:\n"
        "        pass\n"
        "time.sleep(1)\n"
        "os._exit(9)\n"
    )
    forged = await one_zygote.execute(code)
    assert forged.outcome is Outcome.FAILED and forged.exit_code == 9, forged
    assert forged.duration_s >= 1.0
    assert (await run_ok(one_zygote, "print(2)")).stdout == "2\n"


@on_one_zygote
async def test_a_light_child_still_captures_pyplot_imported_at_run_time():
    """The rehearsal of a light spare installs its own pyplot hook; the run's must win."""
    async with PoolExecutor(size=1, light_size=1, preload=("json",)) as pool:
        # Two show() calls: only a show() that really saves (and closes) the first
        # figure makes the second plot a figure of its own.
        code = (
            "plt = __import__('matplotlib.pyplot', fromlist=['plot'])\n"
            "plt.plot([1, 2], [3, 4])\nplt.show()\nplt.plot([5, 6], [7, 8])\nplt.show()\nprint('drawn')"
        )
        assert not pool.needs_preload(code)  # so it runs on the light zygote
        result = await pool.execute(code)
    assert result.outcome is Outcome.OK, result.stderr
    assert result.stdout == "drawn\n"
    assert [a.name for a in result.images] == ["figure_1.png", "figure_2.png"]
