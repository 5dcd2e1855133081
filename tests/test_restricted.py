"""The ``restricted`` executor: ordinary analysis code runs, known RestrictedPython escapes do not."""

from __future__ import annotations

import math

import pytest
import pytest_asyncio

from executors import InputFile, Outcome, get_executor
from executors.pool import PoolExecutor
from executors.restricted import RestrictedExecutor

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def restricted():
    async with RestrictedExecutor(size=1) as executor:
        yield executor


ORDINARY_ANALYSIS = """
import math
import statistics
from collections import Counter
import numpy as np
import pandas as pd

df = pd.DataFrame({"city": list("abcab"), "temp": np.arange(5.0)})
df["double"] = df["temp"] * 2
df.loc[df["city"] == "c", "temp"] = 10.0
df.columns = ["city", "temp", "twice"]
means = df.groupby("city")["temp"].mean()
total = 0
for i, (city, value) in enumerate(means.items()):
    total += value * i
squares = [n * n for n in range(2000)]
lookup = {}
lookup["k"] = sum(squares)
counts = Counter("mississippi")
class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y
p = Point(3, 4)
p.x += 1
lookup["k"] += 1
grid = [[0, 0], [0, 0]]
grid[1][0] += 5
a, (b, c) = 1, (2, 3)
print(means.round(2).to_dict())
print(total, lookup["k"], counts.most_common(1), math.hypot(p.x, p.y), statistics.mean([a, b, c]))
print(sorted(zip("ba", [2, 1])), isinstance(df, pd.DataFrame), hasattr(p, "x"), grid)
print(eval("2 + 3 * 4"), eval("n * 2", {"n": 21}))
"""


async def test_ordinary_pandas_numpy_code_works(restricted):
    result = await restricted.execute(ORDINARY_ANALYSIS)
    assert result.outcome is Outcome.OK, result.stderr
    assert result.stdout.splitlines() == [
        "{'a': 1.5, 'b': 2.5, 'c': 10.0}",
        "22.5 2664667001 [('i', 4)] 5.656854249492381 2",
        "[('a', 1), ('b', 2)] True True [[0, 0], [5, 0]]",
        "14 42",
    ]
    assert result.executor == "restricted"
    assert result.isolation == "restricted"


async def test_figure_captured(restricted):
    result = await restricted.execute("import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [1, 2])\nplt.show()")
    assert result.outcome is Outcome.OK, result.stderr
    assert [a.name for a in result.images] == ["figure_1.png"]
    assert result.images[0].data.startswith(b"\x89PNG")


async def test_input_files_readable_and_artifacts_returned(restricted):
    files = [InputFile("data.csv", b"x,y\n1,2\n3,4\n")]
    code = (
        "import pandas as pd\n"
        "df = pd.read_csv('data.csv')\n"
        "with open('data.csv') as fh:\n"
        "    header = fh.readline().strip()\n"
        "with open('out.txt', 'w') as fh:\n"
        "    fh.write(str(int(df['y'].sum())))\n"
        "print(header)\n"
    )
    result = await restricted.execute(code, files=files)
    assert result.outcome is Outcome.OK, result.stderr
    assert result.stdout == "x,y\n"
    assert [(a.name, a.data) for a in result.artifacts] == [("out.txt", b"6")]


async def test_runtime_errors_keep_their_type_and_traceback(restricted):
    result = await restricted.execute("def f(d):\n    return d['missing']\nf({})")
    assert result.outcome is Outcome.FAILED
    assert result.error_type == "KeyError"
    assert 'File "<code>", line 2, in f' in result.traceback


async def test_policy_compile_errors_are_syntax_errors(restricted):
    result = await restricted.execute("x = 1\nprint(x.__dict__)")
    assert result.outcome is Outcome.FAILED
    assert result.error_type == "SyntaxError"
    assert 'Line 2: "__dict__" is an invalid attribute name because it starts with "_"' in result.error_message


async def test_plain_syntax_errors_are_reported(restricted):
    result = await restricted.execute("def broken(:\n    pass")
    assert result.outcome is Outcome.FAILED
    assert result.error_type == "SyntaxError"
    assert "Line 1" in result.error_message


ESCAPES = {
    "generator frame walk": (
        "g = (x for x in [1])\nprint(g.gi_frame.f_back.f_back.f_globals)",
        "SyntaxError",
        '"gi_frame" is a restricted name',
    ),
    "frame walk through getattr": (
        "g = (x for x in [1])\nprint(getattr(g, 'gi_frame'))",
        "AttributeError",
        '"gi_frame" is a restricted name',
    ),
    "str.format attribute access": ("print('{0.__class__.__mro__}'.format(1))", "NotImplementedError", "format"),
    "str.format_map": ("print('{x.__class__}'.format_map({'x': 1}))", "NotImplementedError", "format"),
    "string.Formatter": (
        "import string\nprint(string.Formatter().format('{0.__class__}', 1))",
        "NotImplementedError",
        "string.Formatter is not safe",
    ),
    "try/except* type confusion": (
        "try:\n    raise ExceptionGroup('g', [ValueError(1)])\nexcept* ValueError as eg:\n    print(eg.exceptions)",
        "SyntaxError",
        "TryStar statements are not allowed",
    ),
    "__subclasses__": ("print(().__class__.__bases__[0].__subclasses__())", "SyntaxError", "__subclasses__"),
    "dunder through getattr": ("print(getattr((), '__class__'))", "AttributeError", "__class__"),
    "import os": ("import os\nprint(os.listdir('/'))", "ImportError", "import of 'os' is not allowed"),
    "import subprocess": ("import subprocess", "ImportError", "'subprocess' is not allowed"),
    "__import__ builtin": ("__import__('os')", "SyntaxError", "__import__"),
    "os reached through pandas": ("import pandas as pd\nprint(pd.io.common.os)", "ImportError", "'os' is not allowed"),
    "from-import of os": ("from pandas.io.common import os", "ImportError", "'os' is not allowed"),
    "numpy ctypeslib": ("import numpy.ctypeslib", "ImportError", "numpy.ctypeslib"),
    "module attribute overwrite": ("import math\nmath.pi = 3", "TypeError", "cannot modify module"),
    "open outside the working directory": ("print(open('/etc/passwd').read())", "PermissionError", "working directory"),
    "exec builtin": ("exec('print(1)')", "SyntaxError", "Exec calls are not allowed"),
    "eval of a dunder expression": ("eval('().__class__')", "SyntaxError", '"__class__" is an invalid attribute name'),
    "eval with forged builtins": (
        "print(eval('open', {'__builtins__': {'open': 1}}))\nprint(eval('x', {'x': 1, '_getattr_': None}))\n"
        "eval('y.__class__', {'y': 1})",
        "SyntaxError",
        "__class__",
    ),
    "augmented assignment with a call in the target": (
        "def k():\n    return 0\nl = [1]\nl[k()] += 1",
        "SyntaxError",
        "Augmented assignment of object items",
    ),
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
async def test_known_escapes_are_blocked(restricted, name):
    code, error_type, fragment = ESCAPES[name]
    result = await restricted.execute(code)
    assert result.outcome is Outcome.FAILED, (name, result.stdout)
    assert result.error_type == error_type, (name, result.error_type, result.error_message)
    assert fragment in result.error_message, (name, result.error_message)
    assert "class" not in result.stdout and "root:" not in result.stdout


async def test_module_writes_never_reach_the_host(restricted):
    await restricted.execute("import math\nmath.pi = 3")
    assert math.pi == pytest.approx(3.141592653589793)


async def test_shares_zygotes_with_a_pool_executor():
    async with PoolExecutor(size=1, preload=()) as pool:
        executor = RestrictedExecutor(pool=pool)
        restricted_result = await executor.execute("print(sum(range(10)))")
        plain_result = await pool.execute("import os\nprint(os.sep)")
        blocked = await executor.execute("import os")
        await executor.aclose()  # does not close a pool it does not own
        again = await pool.execute("print('pool still open')")
    assert restricted_result.stdout == "45\n" and restricted_result.executor == "restricted"
    assert plain_result.stdout == "/\n" and plain_result.executor == "pool"
    assert blocked.error_type == "ImportError"
    assert again.outcome is Outcome.OK


async def test_registered_by_name():
    async with get_executor("restricted", size=1, preload=()) as executor:
        assert isinstance(executor, RestrictedExecutor)
        result = await executor.execute("print('registered')")
        assert result.stdout == "registered\n"


async def test_rejects_conflicting_options():
    async with PoolExecutor(size=1, preload=(), warm=False) as pool:
        with pytest.raises(ValueError, match="either pool= or pool settings"):
            RestrictedExecutor(pool=pool, size=2)
