"""Which libraries executed code can import: probed in the executor's interpreter.

The system prompt names the modules the model may import. Naming one that is
not installed costs a failed run; leaving one out makes the model avoid it. So
the list is asked of the interpreter the executor runs, once per interpreter
file (path and modification time), with a tiny standard-library script that
only looks modules up (``importlib.util.find_spec``): importing scikit-learn
and statsmodels to check would cost seconds.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Sequence

# Gemini's code execution environment, by import name (opencv is cv2, scikit-learn
# is sklearn, pdfminer.six is pdfminer). The gemini-env extra installs the ones
# codeloop does not depend on.
GEMINI_LIBRARIES = (
    "numpy",
    "pandas",
    "matplotlib",
    "sympy",
    "altair",
    "chess",
    "cv2",
    "mpmath",
    "pdfminer",
    "reportlab",
    "seaborn",
    "sklearn",
    "statsmodels",
    "striprtf",
    "tabulate",
)

# What a pool zygote imports to have Gemini's set warm (``PoolExecutor(preload=
# DEFAULT_PRELOAD + GEMINI_PRELOAD)``): the submodules code really uses, since
# ``import sklearn`` alone loads none of its estimators.
GEMINI_PRELOAD = (
    "altair",
    "chess",
    "cv2",
    "mpmath",
    "pdfminer.high_level",
    "reportlab.lib.pagesizes",
    "reportlab.pdfgen.canvas",
    "seaborn",
    "sklearn.linear_model",
    "sklearn.model_selection",
    "sklearn.metrics",
    "sklearn.ensemble",
    "statsmodels.api",
    "striprtf.striprtf",
    "tabulate",
)

# Runs in the executor's interpreter: the standard library only, names in argv.
PROBE = (
    "import importlib.util, json, sys\n"
    "found = []\n"
    "for name in json.loads(sys.argv[1]):\n"
    "    try:\n"
    "        if importlib.util.find_spec(name) is not None:\n"
    "            found.append(name)\n"
    "    except (ImportError, ValueError):\n"
    "        pass\n"
    "print(json.dumps(found))\n"
)


class ProbeError(RuntimeError):
    """The interpreter could not be asked which modules it has."""


def importable_modules(
    python: str, candidates: Sequence[str] = GEMINI_LIBRARIES, timeout_s: float = 30.0
) -> tuple[str, ...]:
    """The names in ``candidates`` that ``python`` can import, in the given order."""
    # Not realpath: a venv's python is a symlink whose own path selects the venv.
    path = os.path.abspath(python)
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError as exc:
        raise ProbeError(f"cannot probe the interpreter {python}: {exc.strerror}") from exc
    return _probe(path, mtime, tuple(candidates), timeout_s)


@functools.lru_cache(maxsize=16)
def _probe(path: str, mtime_ns: int, candidates: tuple[str, ...], timeout_s: float) -> tuple[str, ...]:
    """Memoised by interpreter path and mtime: a rebuilt interpreter is probed again."""
    # -s as the sandbox runs it: the user's site-packages are not on its path.
    argv = [path, "-s", "-c", PROBE, json.dumps(list(candidates))]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, env={"PATH": os.defpath}, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProbeError(f"cannot probe the interpreter {path}: {exc}") from exc
    if done.returncode != 0:
        raise ProbeError(
            f"probing the interpreter {path} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}"
        )
    try:
        found = json.loads(done.stdout)
    except ValueError:
        raise ProbeError(f"probing the interpreter {path} printed {done.stdout[:200]!r}, not a JSON list") from None
    return tuple(name for name in candidates if name in found)


def executor_libraries(executor, candidates: Sequence[str] = GEMINI_LIBRARIES) -> tuple[str, ...] | None:
    """The candidates the executor's code can import, or None when the executor runs
    no local interpreter it names (a remote kernel, a test double)."""
    python = getattr(executor, "python", None)
    if not isinstance(python, str) or not python:
        return None
    return importable_modules(python, candidates)
