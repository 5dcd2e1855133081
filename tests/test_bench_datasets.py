"""Loading HumanEval, GSM8K and custom JSONL, and the errors bad files get."""

import gzip
import json
from pathlib import Path

import pytest

from benchmarks import BenchItem, DatasetError, load_dataset

GSM8K = Path(__file__).parent / "data" / "gsm8k" / "test.jsonl"


def test_humaneval_has_164_problems_with_hidden_tests():
    items = load_dataset("humaneval")
    assert len(items) == 164
    first = items[0]
    assert first.id == "HumanEval-0" and first.meta["task_id"] == "HumanEval/0"
    assert first.scoring == "humaneval" and first.entry_point == "has_close_elements"
    assert first.source_prompt in first.prompt  # the model sees the signature and docstring...
    assert (
        "def check" not in first.prompt and first.meta["canonical_solution"] not in first.prompt
    )  # ...not the answers
    assert len({i.id for i in items}) == 164


def test_humaneval_from_a_given_file_and_limit(tmp_path):
    path = tmp_path / "he.jsonl.gz"
    row = {
        "task_id": "T/1",
        "prompt": "def f():\n    '''x'''\n",
        "entry_point": "f",
        "test": "def check(c): pass",
        "canonical_solution": "    return 1\n",
    }
    with gzip.open(path, "wt") as handle:
        handle.write(json.dumps(row) + "\n" + json.dumps({**row, "task_id": "T/2"}) + "\n")
    items = load_dataset("humaneval", data=path, limit=1)
    assert [i.id for i in items] == ["T-1"]


def test_gsm8k_slice_has_reference_answers():
    items = load_dataset("gsm8k", data=GSM8K)
    assert len(items) == 250
    assert items[0].answer == "18" and items[2].answer == "70000"
    assert items[0].scoring == "numeric" and "####" not in items[0].prompt
    assert (GSM8K.parent / "LICENSE").read_text().startswith("MIT License")


def test_custom_jsonl_answer_and_test_items(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": "a", "prompt": "p1", "answer": 4.5}\n'
        "\n"
        '{"prompt": "p2", "answer": "Paris"}\n'
        '{"prompt": "p3", "answer": "12", "match": "numeric"}\n'
        '{"id": "t", "prompt": "p4", "test": "assert f() == 1"}\n'
    )
    items = load_dataset(str(path))
    assert [(i.id, i.scoring, i.answer) for i in items] == [
        ("a", "numeric", "4.5"),
        ("item-2", "exact", "Paris"),
        ("item-3", "numeric", "12"),
        ("t", "test", None),
    ]
    assert items[3].test == "assert f() == 1"
    assert BenchItem.from_json(items[0].to_json()) == items[0]
    assert all(i.requires_code for i in items)  # answers must come from code that ran, unless the line says not


def test_custom_jsonl_expect_items_with_files(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "t.csv").write_text("a,b\n1,2\n")
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": "e", "prompt": "p", "files": ["data/t.csv"], "expect": [{"number": 3, "tol": 0.1}, {"text": "b"}]}\n'
        '{"id": "n", "prompt": "q", "expect": [{"no_code": true}]}\n'
        '{"id": "x", "prompt": "r", "answer": "yes", "requires_code": false}\n'
    )
    e, n, x = load_dataset(str(path))
    assert e.scoring == "expect" and e.files == [str((tmp_path / "data" / "t.csv").resolve())]
    assert e.expect == [{"number": 3.0, "tol": 0.1}, {"text": ["b"]}] and e.requires_code
    assert n.expect == [{"no_code": True}] and not n.requires_code  # a no-code check needs no execution
    assert x.scoring == "exact" and not x.requires_code
    assert BenchItem.from_json(e.to_json()) == e


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prompt": "p"}\n', "c.jsonl:1: give exactly one of the fields 'answer', 'test' or 'expect'"),
        ('{"prompt": "p", "answer": 1, "expect": [{"no_code": true}]}\n', "c.jsonl:1: give exactly one"),
        ('{"prompt": "p", "answer": 1, "anwser": 2}\n', "c.jsonl:1: unknown field(s) ['anwser']"),
        ('{"prompt": "p", "expect": []}\n', "c.jsonl:1: field 'expect': 'expect' must be a non-empty list"),
        (
            '{"prompt": "p", "expect": [{"number": "5"}]}\n',
            "c.jsonl:1: field 'expect': expect[0]: number check: 'number' must be a number",
        ),
        ('{"prompt": "p", "expect": [{"number": 5, "tol": -1}]}\n', "expect[0]: number check: 'tol' must be"),
        ('{"prompt": "p", "expect": [{"text": 5, "number": 5}]}\n', "expect[0]: a check needs exactly one of"),
        ('{"prompt": "p", "expect": [{"file": "out/x.png"}]}\n', "expect[0]: file check: 'file' must be a plain"),
        ('{"prompt": "p", "expect": [{"text": "a", "tol": 1}]}\n', "expect[0]: text check: unknown keys ['tol']"),
        ('{"prompt": "p", "expect": [{"no_code": false}]}\n', "expect[0]: no_code check: 'no_code' must be true"),
        ('{"prompt": "p", "answer": 1, "files": ["missing.csv"]}\n', "c.jsonl:1: field 'files': 'missing.csv' is not"),
        ('{"prompt": "p", "answer": 1, "files": "a.csv"}\n', "c.jsonl:1: field 'files' must be a list of paths"),
        ('{"prompt": "p", "answer": 1, "requires_code": "no"}\n', "c.jsonl:1: field 'requires_code' must be true"),
        ('{"prompt": "p", "answer": 1, "test": "x"}\n', "c.jsonl:1: give exactly one"),
        ('{"prompt": "ok", "answer": 1}\nnot json\n', "c.jsonl:2: not valid JSON"),
        ("[1, 2]\n", "c.jsonl:1: expected a JSON object"),
        ('{"answer": 1}\n', "c.jsonl:1: field 'prompt' is missing"),
        ('{"prompt": "p", "answer": [1]}\n', "c.jsonl:1: field 'answer' must be a string or a number"),
        ('{"prompt": "p", "answer": 1, "match": "fuzzy"}\n', "c.jsonl:1: field 'match' must be"),
        ('{"id": "a/b", "prompt": "p", "answer": 1}\n', "c.jsonl:1: field 'id' 'a/b' cannot name a directory"),
        ('{"id": "x", "prompt": "p", "answer": 1}\n{"id": "x", "prompt": "q", "answer": 2}\n', "'x' appears more"),
        ("\n", "c.jsonl: no items"),
    ],
)
def test_custom_jsonl_errors_name_file_line_and_field(tmp_path, content, message):
    path = tmp_path / "c.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetError) as err:
        load_dataset(str(path))
    assert message in str(err.value)


def test_gsm8k_errors(tmp_path):
    with pytest.raises(DatasetError, match="needs --data"):
        load_dataset("gsm8k")
    bad = tmp_path / "g.jsonl"
    bad.write_text('{"question": "q", "answer": "no marker"}\n')
    with pytest.raises(DatasetError, match=r"g.jsonl:1: field 'answer' has no number after '####'"):
        load_dataset("gsm8k", data=bad)
    with pytest.raises(DatasetError, match="cannot open"):
        load_dataset("gsm8k", data=tmp_path / "missing.jsonl")
    with pytest.raises(DatasetError, match="unknown benchmark 'mbpp'"):
        load_dataset("mbpp")
    with pytest.raises(DatasetError, match="limit must be at least 1"):
        load_dataset("humaneval", limit=0)
