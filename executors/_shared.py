"""What the process-based backends share, so none borrows from another.

The child's environment, the per-child user ids, the paths of the code that
runs inside the sandbox, matplotlib's font cache, and detecting the
isolation level off the event loop.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

from .base import Isolation
from .isolation import SANDBOX_ROOT, Isolator, Mount
from .process import run_process

INSIDE = Path(__file__).resolve().parent / "inside"  # code that runs in the child (standard library only)
HARNESS = str(INSIDE / "harness.py")

# Per-child user ids (used when we drop root): 2**30 .. 2**31, unused by accounts and subuid maps.
UID_BLOCKS_START = 1 << 30
UID_BLOCKS_SPAN = 1 << 30


def child_env(workdir: str | Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The whole environment a child sees: nothing inherited, nothing secret."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workdir),
        "TMPDIR": str(workdir),
        "LANG": "C.UTF-8",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "random",
        "MPLBACKEND": "Agg",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    if extra:
        env.update(extra)
    return env


def sandbox_env(home: str) -> dict[str, str]:
    """The environment of a sandboxed child: an allow list, nothing inherited."""
    # There is no /etc/passwd inside bwrap: getpass.getuser() reads USER/LOGNAME first.
    return child_env(home, {"USER": "sandbox", "LOGNAME": "sandbox", "TMPDIR": "/tmp"})


def uid_block(count: int) -> list[int]:
    """``count`` consecutive user ids from a random block far above ordinary ids.

    One id per concurrent child (when we drop root): children then do not share an
    RLIMIT_NPROC count, so one fork bomb cannot stop its neighbours forking, and the
    random block keeps separate executors apart.
    """
    count = max(1, count)
    first = UID_BLOCKS_START + secrets.randbelow(max(1, UID_BLOCKS_SPAN // count)) * count
    return list(range(first, first + count))


async def detect_isolation(isolator: Isolator) -> Isolation:
    """The isolator's level, probed once off the event loop (probes run processes)."""
    detected = isolator.detected
    return detected if detected is not None else await asyncio.to_thread(isolator.detect)


def mentions_matplotlib(code: str) -> bool:
    """Cheap guess that code plots; it only decides whether a prebuilt font cache is offered."""
    return "matplotlib" in code or "plt." in code or ".plot(" in code


async def build_font_cache(isolator: Isolator, seed: Path) -> bool:
    """Import matplotlib's font manager in a sandboxed run with no user code, so its font
    cache lands in ``seed``; True if a cache was written there."""
    isolator.prepare(seed)
    mounts = [Mount(str(seed), f"{SANDBOX_ROOT}/mpl", writable=True)]
    view = isolator.view(seed, mounts)
    cmd = isolator.wrap(
        [isolator.python, "-s", "-c", "import matplotlib.font_manager"],
        work_dir=seed,
        mounts=mounts,
        env={**sandbox_env(home="/tmp"), "MPLCONFIGDIR": view.inside(seed)},
    )
    proc = await run_process(
        cmd.argv, cwd=cmd.cwd, env=cmd.env, timeout_s=60, keep_bytes=4096, hard_bytes=65536, with_report_fd=False
    )
    return proc.returncode == 0 and any(seed.glob("fontlist-*.json"))
