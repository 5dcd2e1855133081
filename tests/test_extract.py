"""extract_code on replies in the styles real models write; each case lists
exactly the code strings that must come out, in order."""

import pytest

from orchestrator.extract import extract_code, join_blocks
from orchestrator.types import CodeBlock

CASES = [
    # --- Gemini ---------------------------------------------------------
    (
        "gemini_thoughts_then_python",
        """I need the first 50 primes. I will generate them with a simple sieve-free loop
and sum them.

```python
primes = []
n = 2
while len(primes) < 50:
    if all(n % p for p in primes):
        primes.append(n)
    n += 1
print(sum(primes))
```
""",
        [
            "primes = []\nn = 2\nwhile len(primes) < 50:\n    if all(n % p for p in primes):\n"
            "        primes.append(n)\n    n += 1\nprint(sum(primes))"
        ],
    ),
    (
        "gemini_tool_code_and_tool_outputs",
        """Let me compute that.
```tool_code
import math
print(math.factorial(20))
```
```tool_outputs
2432902008176640000
```
""",
        ["import math\nprint(math.factorial(20))"],
    ),
    ("gemini_tool_code_uppercase", "```TOOL_CODE\nprint(1)\n```", ["print(1)"]),
    (
        "gemini_final_answer_without_code",
        "The sum of the first 50 prime numbers is **5117**.",
        [],
    ),
    # --- GPT ------------------------------------------------------------
    (
        "gpt_explanation_code_explanation",
        """To find the mean, I'll load the CSV with pandas.

```python
import pandas as pd
df = pd.read_csv("data.csv")
print(df["price"].mean())
```

This prints the average price. Let me know if you need the median too.
""",
        ['import pandas as pd\ndf = pd.read_csv("data.csv")\nprint(df["price"].mean())'],
    ),
    (
        "gpt_several_blocks_in_order",
        """First, define the helper:

```python
def is_prime(n):
    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))
```

Then use it:

```python
print([n for n in range(20) if is_prime(n)])
```
""",
        [
            "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n**0.5) + 1))",
            "print([n for n in range(20) if is_prime(n)])",
        ],
    ),
    (
        "gpt_predicted_output_block_unlabelled_number",
        "```python\nprint(2 + 3)\n```\nOutput:\n```\n5\n```\n",
        ["print(2 + 3)"],
    ),
    (
        "gpt_output_label_ignored",
        "```python\nprint('hi')\n```\n```output\nprint('hi')\n```\n",
        ["print('hi')"],
    ),
    (
        "gpt_text_label_ignored",
        "```text\nx = 1\nprint(x)\n```\n",
        [],
    ),
    (
        "gpt_json_block_ignored",
        """The config looks like this:
```json
{"retries": 5, "timeout": 30}
```
```python
import json
print(json.dumps({"retries": 5}))
```
""",
        ['import json\nprint(json.dumps({"retries": 5}))'],
    ),
    (
        "gpt_unlabelled_json_output_ignored",
        '```\n{"mean": 3.5, "n": 10}\n```',
        [],
    ),
    # --- Llama / Qwen / DeepSeek ---------------------------------------
    ("llama_capitalised_python", "Here is the code:\n```Python\nprint('ok')\n```", ["print('ok')"]),
    (
        "llama_python3_label",
        "```python3\nimport sys\nprint(sys.version_info[0])\n```",
        ["import sys\nprint(sys.version_info[0])"],
    ),
    ("short_py_label", "```py\nx = [1, 2]\nprint(x)\n```", ["x = [1, 2]\nprint(x)"]),
    ("label_with_title_attribute", '```python title="primes.py"\nprint(7)\n```', ["print(7)"]),
    ("quarto_braced_label", "```{python}\nprint(8)\n```\n```{r}\nprint(9)\n```", ["print(8)"]),
    ("pandoc_dotted_braced_label", "```{.python .numberLines}\nprint(10)\n```", ["print(10)"]),
    (
        "qwen_missing_language_parses",
        "Sure!\n```\nimport statistics\nprint(statistics.median([3, 1, 2]))\n```\nThe median is 2.",
        ["import statistics\nprint(statistics.median([3, 1, 2]))"],
    ),
    (
        "unlabelled_prose_ignored",
        "```\nThe answer is 42 because the loop adds each prime once.\n```",
        [],
    ),
    (
        "unlabelled_bare_values_are_output",
        "```\n5117\n```\n```\nTotal: 42\n```\n```\n[1, 2, 3]\n```\n```\narray([1, 2, 3])\n```\n```\nHello\n```",
        [],
    ),
    (
        "unlabelled_print_call_is_code",
        "```\nprint(sum(range(10)))\n```",
        ["print(sum(range(10)))"],
    ),
    (
        "unterminated_python_fence_cut_off",
        "Computing now:\n```python\nfor i in range(3):\n    print(i)\n",
        ["for i in range(3):\n    print(i)"],
    ),
    (
        "unterminated_python_fence_mid_statement_still_runs",
        "```python\nvalues = [1, 2,",
        ["values = [1, 2,"],
    ),
    (
        "unterminated_unlabelled_that_parses",
        "```\nx = 2 ** 10\nprint(x)",
        ["x = 2 ** 10\nprint(x)"],
    ),
    (
        "unterminated_unlabelled_prose_ignored",
        "Result below\n```\nthe model stopped here and never",
        [],
    ),
    (
        "think_block_drafts_dropped",
        """<think>
Maybe something like
```python
print("draft")
```
No, use sum directly.
</think>
```python
print(sum([1, 2, 3]))
```
""",
        ["print(sum([1, 2, 3]))"],
    ),
    (
        "think_close_only_from_chat_template",
        "Draft:\n```python\nprint('draft')\n```\nOK.\n</think>\n\n```python\nprint('final')\n```",
        ["print('final')"],
    ),
    (
        "think_unclosed_cut_off_while_thinking",
        "<think>\nI could run\n```python\nprint('draft')\n```\nbut",
        [],
    ),
    ("labelled_python_syntax_error_still_runs", "```python\nprint('a'\n```", ["print('a'"]),
    # --- Shell and other languages beside Python -------------------------
    (
        "pip_install_in_bash_ignored",
        """Install the dependency first:
```bash
pip install sympy
```
Then:
```python
import sympy
print(sympy.isprime(97))
```
""",
        ["import sympy\nprint(sympy.isprime(97))"],
    ),
    (
        "shell_console_sql_js_r_ignored",
        "```sh\nls -la\n```\n```shell\necho hi\n```\n```console\n$ python x.py\n```\n"
        "```sql\nSELECT 1;\n```\n```js\nconsole.log(1)\n```\n```r\nx <- 1\n```\n```bash\nx=1\n```",
        [],
    ),
    ("pycon_repl_ignored", "```pycon\n>>> 1 + 1\n2\n```", []),
    ("unlabelled_shell_command_ignored", "```\npip install numpy pandas\n```", []),
    # --- Fence syntax ----------------------------------------------------
    (
        "crlf_line_endings",
        "Code:\r\n```python\r\nx = 1\r\nprint(x)\r\n```\r\nDone.\r\n",
        ["x = 1\nprint(x)"],
    ),
    (
        "indented_fences_in_numbered_list",
        """1. Load the data:
   ```python
   import csv
   rows = list(csv.reader(open("data.csv")))
   ```
2. Count the rows:
   ```python
   for row in rows:
       pass
   print(len(rows))
   ```
""",
        [
            'import csv\nrows = list(csv.reader(open("data.csv")))',
            "for row in rows:\n    pass\nprint(len(rows))",
        ],
    ),
    (
        "nested_list_fence_six_spaces",
        "- Step\n  - Sub step\n      ```python\n      print('deep')\n      ```\n",
        ["print('deep')"],
    ),
    (
        "content_less_indented_than_fence",
        "1. Run:\n    ```python\n  x = 1\n  print(x)\n    ```",
        ["x = 1\nprint(x)"],
    ),
    ("tilde_fence", "~~~python\nprint('tilde')\n~~~", ["print('tilde')"]),
    (
        "tilde_fence_with_backtick_line_inside",
        "~~~python\ns = '''\n```\n'''\nprint(s)\n~~~",
        ["s = '''\n```\n'''\nprint(s)"],
    ),
    (
        "longer_fence_containing_triple_backticks",
        '````python\nreport = """\n```text\n42\n```\n"""\nprint(report)\n````',
        ['report = """\n```text\n42\n```\n"""\nprint(report)'],
    ),
    (
        "triple_backtick_line_inside_python_string",
        '```python\nmd = """\n```\nprint(1)\n```\n"""\nprint(md)\n```\nThat writes a fenced block.',
        ['md = """\n```\nprint(1)\n```\n"""\nprint(md)'],
    ),
    (
        "inline_backticks_inside_string",
        '```python\nfence = "```"\nprint(fence + "python")\n```',
        ['fence = "```"\nprint(fence + "python")'],
    ),
    (
        "fence_opened_mid_line_is_prose",
        "Put your code in a ```python block, like this:\n\n```python\nprint('real')\n```",
        ["print('real')"],
    ),
    (
        "one_line_triple_backtick_is_inline_code",
        "```print(1)```\nThe real one:\n```python\nprint(2)\n```",
        ["print(2)"],
    ),
    (
        "content_indented_under_unindented_fence",
        "```python\n    x = 1\n    if x:\n        print(x)\n```",
        ["x = 1\nif x:\n    print(x)"],
    ),
    ("empty_fences", "```python\n```\n```\n\n```\n```python\n   \n```", []),
    (
        "fence_with_only_comments",
        "```python\n# load the data\n# then plot it\n```\n```\n# nothing here\n```",
        [],
    ),
    (
        "leading_and_trailing_blank_lines_trimmed",
        "```python\n\n\nprint(1)\n\n\n```",
        ["print(1)"],
    ),
    ("no_fence_at_all", "Just some prose.\nprint(1) is how you print in Python.", []),
    ("empty_text", "", []),
    (
        "backtick_fence_not_closed_by_tildes",
        "```python\nprint(1)\n~~~\n```",
        ["print(1)\n~~~"],
    ),
    (
        "closing_fence_shorter_than_opening_does_not_close",
        "````python\nprint('a')\n```\nprint('b')\n````",
        ["print('a')\n```\nprint('b')"],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_extract_code(text: str, expected: list[str]) -> None:
    assert [block.code for block in extract_code(text)] == expected


def test_blocks_are_python_fence_blocks() -> None:
    blocks = extract_code("```Python\nprint(1)\n```\n```tool_code\nprint(2)\n```\n```\nx = 3\n```")
    assert [(b.language, b.source, b.call_id) for b in blocks] == [("python", "fence", None)] * 3


def test_join_blocks_runs_in_order_separated_by_a_blank_line() -> None:
    blocks = [
        CodeBlock(code="x = 1"),
        CodeBlock(code="   "),
        CodeBlock(code="def f():\n    return x"),
        CodeBlock(code="print(f())"),
    ]
    assert join_blocks(blocks) == "x = 1\n\ndef f():\n    return x\n\nprint(f())"


def test_join_blocks_of_nothing_is_empty() -> None:
    assert join_blocks([]) == ""


def test_joined_turn_is_one_program() -> None:
    text = "```python\ndef square(n):\n    return n * n\n```\nNow call it:\n```python\nprint(square(12))\n```"
    namespace: dict = {}
    exec(compile(join_blocks(extract_code(text)), "<turn>", "exec"), namespace)
    assert namespace["square"](3) == 9
