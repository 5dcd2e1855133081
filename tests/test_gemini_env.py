"""Gemini's library set (the gemini-env extra) inside the sandbox and the pool.

Each library runs one real snippet whose printed values are checked, on the
``sandbox`` executor (a cold interpreter per run) and on a ``pool`` whose
zygote preloads the whole set. The system prompt's module list is probed from
the executor's interpreter.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass

import pytest
import pytest_asyncio

from executors import Limits, Outcome
from executors.modules import (
    GEMINI_LIBRARIES,
    GEMINI_PRELOAD,
    ProbeError,
    executor_libraries,
    importable_modules,
)
from executors.pool import DEFAULT_PRELOAD, PoolExecutor
from executors.sandbox import SandboxExecutor

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
MISSING = [name for name in GEMINI_LIBRARIES if name not in importable_modules(sys.executable)]
if MISSING and IN_CI:
    raise RuntimeError(
        f"CI=true but the gemini-env libraries {MISSING} are not installed (pip install -e '.[gemini-env]')"
    )
needs_set = pytest.mark.skipif(bool(MISSING), reason=f"gemini-env extra not installed (missing {MISSING})")
LIMITS = Limits(timeout_s=60)


@dataclass(frozen=True)
class Snippet:
    library: str
    code: str
    stdout: str
    files: tuple[str, ...] = ()  # artifacts the code must leave
    images: int = 0


SNIPPETS = (
    Snippet(
        "sklearn",
        "import numpy as np\nfrom sklearn.linear_model import LinearRegression\n"
        "x = np.arange(10.0).reshape(-1, 1)\nmodel = LinearRegression().fit(x, 2 * x.ravel() + 1)\n"
        "print(round(float(model.coef_[0]), 6), round(float(model.intercept_), 6), model.predict([[20.0]]).round(6).tolist())",
        "2.0 1.0 [41.0]\n",
    ),
    Snippet(
        "statsmodels",
        "import numpy as np\nimport statsmodels.api as sm\n"
        "x = np.arange(20.0)\ny = 3 * x - 4 + np.tile([0.5, -0.5, -0.5, 0.5], 5)  # noise orthogonal to 1 and x\n"
        "fit = sm.OLS(y, sm.add_constant(x)).fit()\n"
        "print(fit.params.round(3).tolist(), fit.nobs, round(fit.rsquared, 4))",
        "[-4.0, 3.0] 20.0 0.9992\n",  # R² = 1 - 5 / 5990
    ),
    Snippet(
        "chess",
        "import chess\nboard = chess.Board()\nprint(board.legal_moves.count())\n"
        "for move in ['e4', 'e5', 'Qh5', 'Nc6', 'Bc4', 'Nf6', 'Qxf7']:\n    board.push_san(move)\n"
        "print(board.is_checkmate(), board.fen())",
        "20\nTrue r1bqkb1r/pppp1Qpp/2n2n2/4p3/2B1P3/8/PPPP1PPP/RNB1K1NR b KQkq - 0 4\n",
    ),
    Snippet(
        "altair",
        "import json\nimport altair as alt\nimport pandas as pd\n"
        "df = pd.DataFrame({'city': ['A', 'B'], 'rain': [3, 7]})\n"
        "alt.Chart(df).mark_bar().encode(x='city', y='rain').save('chart.json')\n"
        "spec = json.load(open('chart.json'))\nmark = spec['mark']\n"
        "print(mark if isinstance(mark, str) else mark['type'], spec['encoding']['y']['field'],\n"
        "      [row['rain'] for row in spec['datasets'][next(iter(spec['datasets']))]])",
        "bar rain [3, 7]\n",
        files=("chart.json",),
    ),
    Snippet(
        "reportlab+pdfminer",
        "from reportlab.lib.pagesizes import A4\nfrom reportlab.pdfgen import canvas\n"
        "pdf = canvas.Canvas('report.pdf', pagesize=A4)\npdf.drawString(72, 720, 'Total rainfall: 42 mm')\n"
        "pdf.showPage()\npdf.drawString(72, 720, 'Page two')\npdf.save()\n"
        "from pdfminer.high_level import extract_pages, extract_text\n"
        "print(repr(extract_text('report.pdf').strip()), len(list(extract_pages('report.pdf'))))",
        "'Total rainfall: 42 mm\\n\\n\\x0cPage two' 2\n",
        files=("report.pdf",),
    ),
    Snippet(
        "cv2",
        "import cv2\nimport numpy as np\nimage = np.zeros((20, 30, 3), np.uint8)\n"
        "cv2.rectangle(image, (5, 5), (14, 14), (0, 255, 0), -1)\n"
        "gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)\nok, png = cv2.imencode('.png', image)\n"
        "back = cv2.imdecode(png, cv2.IMREAD_COLOR)\n"
        "print(gray.shape, int(gray[10, 10]), int(gray[0, 0]), cv2.countNonZero(gray), ok, bool((back == image).all()))",
        "(20, 30) 150 0 100 True True\n",
    ),
    Snippet(
        "striprtf",
        "from striprtf.striprtf import rtf_to_text\n"
        "print(repr(rtf_to_text(r'{\\rtf1\\ansi{\\fonttbl\\f0\\fswiss Helvetica;}\\f0\\pard Rain was {\\b 42} mm.\\par}').strip()))",
        "'Rain was 42 mm.'\n",
    ),
    Snippet(
        "tabulate",
        "from tabulate import tabulate\n"
        "print(tabulate([['A', 3], ['B', 17]], headers=['city', 'rain'], tablefmt='github'))",
        "| city   |   rain |\n|--------|--------|\n| A      |      3 |\n| B      |     17 |\n",
    ),
    Snippet(
        "mpmath",
        "from mpmath import mp\nmp.dps = 30\nprint(mp.pi)\nprint(mp.sqrt(2))\nprint(mp.quad(lambda t: mp.exp(-t**2), [-mp.inf, mp.inf]) ** 2)",
        "3.14159265358979323846264338328\n1.41421356237309504880168872421\n3.14159265358979323846264338328\n",
    ),
    Snippet(
        "seaborn",
        "import matplotlib.pyplot as plt\nimport pandas as pd\nimport seaborn as sns\n"
        "df = pd.DataFrame({'city': ['A', 'B', 'C'], 'rain': [3, 7, 5]})\n"
        "ax = sns.barplot(data=df, x='city', y='rain')\n"
        "print(len(ax.patches), [round(p.get_height()) for p in ax.patches], ax.get_ylabel())\nplt.show()",
        "3 [3, 7, 5] rain\n",
        images=1,
    ),
    Snippet(
        "sympy",
        "import sympy as sp\nx = sp.symbols('x')\n"
        "print(sp.integrate(x**2, (x, 0, 3)), sorted(sp.solve(x**2 - 4, x)), sp.factor(x**2 - 5*x + 6))",
        "9 [-2, 2] (x - 3)*(x - 2)\n",
    ),
)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sandbox():
    executor = SandboxExecutor(limits=LIMITS, max_concurrency=2)
    yield executor
    await executor.aclose()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def full_pool():
    """One zygote that preloads Gemini's whole set, as the benchmark's full-set run does."""
    preload = DEFAULT_PRELOAD + GEMINI_PRELOAD
    executor = PoolExecutor(limits=LIMITS, size=1, light_size=0, preload=preload)
    await executor.start()
    yield executor
    await executor.aclose()


def check(snippet: Snippet, result) -> None:
    assert result.outcome is Outcome.OK, f"{snippet.library}: {result.error_type}: {result.stderr[-2000:]}"
    assert result.stdout == snippet.stdout, snippet.library
    names = {a.name for a in result.artifacts}
    for name in snippet.files:
        assert name in names, f"{snippet.library}: {name} was not returned ({sorted(names)})"
    if "report.pdf" in snippet.files:
        assert next(a for a in result.artifacts if a.name == "report.pdf").data.startswith(b"%PDF-")
    assert len(result.images) == snippet.images, snippet.library
    for image in result.images:
        assert image.data.startswith(b"\x89PNG\r\n\x1a\n")


@needs_set
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.library)
async def test_library_runs_on_the_sandbox(sandbox, snippet):
    check(snippet, await sandbox.execute(snippet.code))


@needs_set
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.library)
async def test_library_runs_on_a_pool_preloading_the_set(full_pool, snippet):
    check(snippet, await full_pool.execute(snippet.code))


@needs_set
@pytest.mark.asyncio(loop_scope="module")
async def test_the_full_preload_imports_every_library(full_pool):
    result = await full_pool.execute(f"import sys\nprint(sorted(m for m in {GEMINI_PRELOAD!r} if m in sys.modules))")
    assert result.stdout == f"{sorted(GEMINI_PRELOAD)}\n"
    assert {name.split(".")[0] for name in GEMINI_PRELOAD} | set(DEFAULT_PRELOAD) >= set(GEMINI_LIBRARIES)
    assert all(s.zygote.preload_failures == [] for s in full_pool._all_slots)


# -- the probe behind the system prompt's module list ----------------------


def test_probe_finds_what_the_interpreter_has_and_not_what_it_lacks():
    found = importable_modules(sys.executable, ("json", "numpy", "no_such_module_codeloop", "os.path"))
    assert found == ("json", "numpy", "os.path")


def test_probe_is_done_once_per_interpreter(tmp_path):
    python = tmp_path / "python"
    counter = tmp_path / "runs"
    python.write_text(f'#!/bin/sh\necho x >> {counter}\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    first = importable_modules(str(python), ("json", "numpy"))
    again = importable_modules(str(python), ("json", "numpy"))
    assert first == again == ("json", "numpy")
    assert counter.read_text().count("x") == 1
    os.utime(python, ns=(1, 1))  # a replaced interpreter (new mtime) is probed again
    importable_modules(str(python), ("json", "numpy"))
    assert counter.read_text().count("x") == 2


def test_probe_errors_name_the_interpreter(tmp_path):
    with pytest.raises(ProbeError, match="no-python"):
        importable_modules(str(tmp_path / "no-python"))
    broken = tmp_path / "broken-python"
    broken.write_text("#!/bin/sh\necho boom >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(ProbeError, match=r"broken-python.*exit 3.*boom"):
        importable_modules(str(broken))


def test_executors_name_their_interpreter_and_others_get_none():
    class RemoteExecutorDouble:
        pass

    assert executor_libraries(RemoteExecutorDouble()) is None
    assert executor_libraries(SandboxExecutor(python=sys.executable)) == importable_modules(sys.executable)
    assert executor_libraries(PoolExecutor(python=sys.executable)) == importable_modules(sys.executable)
    jupyter = pytest.importorskip("executors.jupyter")
    assert executor_libraries(jupyter.JupyterExecutor()) == importable_modules(sys.executable)


@needs_set
def test_system_prompt_lists_the_probed_modules():
    from orchestrator import Orchestrator, ScriptedModel

    orch = Orchestrator(ScriptedModel([]), SandboxExecutor(python=sys.executable))
    line = next(ln for ln in orch.prompts.system(LIMITS).splitlines() if ln.startswith("- Importable modules"))
    for name in GEMINI_LIBRARIES:
        assert f" {name}," in line or f" {name} " in line, name
    own = Orchestrator(ScriptedModel([]), SandboxExecutor(python=sys.executable), libraries=["numpy"])
    assert "Importable modules: numpy, and" in own.prompts.system(LIMITS)


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs /bin/sh for the interpreter double")
def test_prompt_leaves_out_a_module_the_interpreter_lacks(tmp_path):
    from orchestrator import Orchestrator, ScriptedModel

    python = tmp_path / "python-without-sklearn"
    # An interpreter double: the real one, with sklearn hidden from find_spec.
    python.write_text(
        f"#!/bin/sh\nexec {sys.executable} -c \"import sys; sys.modules['sklearn'] = None; "
        f'code = sys.argv[3]; sys.argv = sys.argv[3:]; exec(code)" "$@"\n'
    )
    python.chmod(0o755)
    orch = Orchestrator(ScriptedModel([]), SandboxExecutor(python=str(python)))
    assert "sklearn" not in orch.prompts.libraries
    assert "numpy" in orch.prompts.libraries
