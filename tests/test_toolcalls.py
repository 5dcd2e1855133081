"""Tool calls written as text, in the forms real open models emit. Each case
lists exactly the code strings extract_code must return and their source.
Cases marked "real" are replies a real model (Qwen2.5-Coder 0.5B/1.5B via
llama.cpp) gave to codeloop."""

import pytest

from orchestrator.extract import extract_code
from orchestrator.toolcalls import find_text_tool_calls, unwrap_tool_program

PRIMES = "primes = [2, 3]\nprint(sum(primes))"

CASES = [
    (
        "real_qwen05_json_fence_other_name",  # real: names a tool we never offered, so nothing runs
        '```json\n{\n  "name": "sum_of_first_50_primes",\n  "arguments": {\n    "code": "import sympy as sp\\n'
        'print(sum(sp.primerange(2, 51)))"\n  }\n}\n```',
        [],
        None,
    ),
    (
        "real_qwen15_json_fence_run_python",
        '```json\n{\n  "name": "run_python",\n  "arguments": {\n    "code": "primes = [2, 3]\\nprint(sum(primes))"\n'
        "  }\n}\n```",
        [PRIMES],
        "text_tool_call",
    ),
    (
        "real_bare_json_after_prose",
        'I will compute it.\n{"name": "run_python", "arguments": {"code": "primes = [2, 3]\\nprint(sum(primes))"}}',
        [PRIMES],
        "text_tool_call",
    ),
    (
        "real_python_fence_holding_dict",  # ran "OK" as a dict literal and was called solved
        '```python\n{"name": "run_python", "arguments": {"code": "import matplotlib.pyplot as plt\\n'
        "plt.plot([1, 2])\\nplt.savefig('trig.png')\"}}\n```",
        ["import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.savefig('trig.png')"],
        "text_tool_call",
    ),
    (
        "real_run_python_triple_quoted",  # NameError: run_python, six times
        '```python\nrun_python("""\nprimes = [2, 3]\nprint(sum(primes))\n""")\n```',
        ["\nprimes = [2, 3]\nprint(sum(primes))\n"],
        "text_tool_call",
    ),
    (
        "real_import_run_python_from_library_line",
        '```python\nfrom the_python_standard_library import run_python\n\nrun_python(code="print(2 + 2)")\n```',
        ["print(2 + 2)"],
        "text_tool_call",
    ),
    (
        "hermes_tool_call_tags",
        '<tool_call>\n{"name": "run_python", "arguments": {"code": "print(1)"}}\n</tool_call>',
        ["print(1)"],
        "text_tool_call",
    ),
    (
        "hermes_unclosed_tag",
        'Let me run it.\n<tool_call>\n{"name": "run_python", "arguments": {"code": "print(1)"}}',
        ["print(1)"],
        "text_tool_call",
    ),
    (
        "json_with_raw_newlines_in_string",  # invalid JSON that models write anyway
        '<tool_call>\n{"name": "run_python", "arguments": {"code": "x = 1\nprint(x)"}}\n</tool_call>',
        ["x = 1\nprint(x)"],
        "text_tool_call",
    ),
    (
        "openai_shape_arguments_string",
        '{"type": "function", "function": {"name": "run_python", "arguments": "{\\"code\\": \\"print(3)\\"}"}}',
        ["print(3)"],
        "text_tool_call",
    ),
    (
        "llama_parameters_key",
        '{"name": "run_python", "parameters": {"code": "print(4)"}}',
        ["print(4)"],
        "text_tool_call",
    ),
    (
        "mistral_tool_calls_list",
        '[TOOL_CALLS] [{"name": "run_python", "arguments": {"code": "print(5)"}}]',
        ["print(5)"],
        "text_tool_call",
    ),
    (
        "function_tag",
        '<function=run_python>{"code": "print(6)"}</function>',
        ["print(6)"],
        "text_tool_call",
    ),
    (
        "pythonic_list_call_in_tool_code",
        '```tool_code\n[run_python(code="print(7)")]\n```',
        ["print(7)"],
        "text_tool_call",
    ),
    (
        "two_calls_in_order",
        '<tool_call>{"name": "run_python", "arguments": {"code": "a = 1"}}</tool_call>\n'
        '<tool_call>{"name": "run_python", "arguments": {"code": "print(a)"}}</tool_call>',
        ["a = 1", "print(a)"],
        "text_tool_call",
    ),
    (
        "call_wins_over_other_fences",  # nothing else in a reply runs once a call is found
        '```python\nprint("draft")\n```\n<tool_call>{"name": "run_python", "arguments": {"code": "print(8)"}}</tool_call>',
        ["print(8)"],
        "text_tool_call",
    ),
    (
        "call_inside_think_is_a_draft",
        '<think>{"name": "run_python", "arguments": {"code": "print(0)"}}</think>\n```python\nprint(9)\n```',
        ["print(9)"],
        "fence",
    ),
    (
        "program_that_uses_the_name_is_real_code",
        '```python\ndef run_python(code):\n    return len(code)\nprint(run_python("abc"))\n```',
        ['def run_python(code):\n    return len(code)\nprint(run_python("abc"))'],
        "fence",
    ),
    (
        "ordinary_dict_literal_program_still_runs",
        '```python\nconfig = {"name": "x", "arguments": 1}\nprint(config)\n```',
        ['config = {"name": "x", "arguments": 1}\nprint(config)'],
        "fence",
    ),
    (
        "json_in_prose_that_is_not_a_call",
        'The data is {"eggs_per_duck_per_day": 16}. The answer is 18.',
        [],
        None,
    ),
]


@pytest.mark.parametrize("name,text,expected,source", CASES, ids=[c[0] for c in CASES])
def test_text_tool_calls(name, text, expected, source):
    blocks = extract_code(text)
    assert [b.code for b in blocks] == expected
    if expected:
        assert {b.source for b in blocks} == {source}


def test_only_offered_names_count():
    text = '<tool_call>{"name": "shell", "arguments": {"code": "rm -rf /"}}</tool_call>'
    assert find_text_tool_calls(text, ["run_python"]) == []
    assert find_text_tool_calls(text, ["shell"]) == ["rm -rf /"]
    assert find_text_tool_calls(text, []) == []


def test_unwrap_refuses_programs_that_do_more():
    assert unwrap_tool_program('run_python("print(1)")\nprint(2)', ["run_python"]) is None
    assert unwrap_tool_program('code = "print(1)"\nrun_python(code)', ["run_python"]) == "print(1)"
    assert unwrap_tool_program('print(run_python("print(1)"))', ["run_python"]) == "print(1)"
    assert unwrap_tool_program("run_python(make_code())", ["run_python"]) is None
