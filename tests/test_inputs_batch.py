"""Batch input formats and validation: every problem reported at once, with file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.batch import BatchInputError, BatchItem, coerce_items, load_items


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_reads_ids_prompts_files_and_metadata(tmp_path: Path) -> None:
    (tmp_path / "data.csv").write_text("x\n1\n")
    source = write(
        tmp_path / "p.jsonl",
        "\n".join(
            [
                json.dumps({"id": "a", "prompt": "add 1 and 2", "files": ["data.csv"], "metadata": {"level": 1}}),
                "",
                json.dumps({"id": 7, "prompt": "square 3"}),
                json.dumps({"prompt": "no id: the line number names it"}),
            ]
        )
        + "\n",
    )
    items = load_items(source)
    assert [i.id for i in items] == ["a", "7", "4"]
    assert items[0].files == [str((tmp_path / "data.csv").resolve())]
    assert items[0].metadata == {"level": 1}
    assert items[0].source == f"{source}:1"
    assert items[1].prompt == "square 3" and items[1].files == []


def test_csv_reads_id_and_prompt_and_keeps_other_columns_as_metadata(tmp_path: Path) -> None:
    source = write(
        tmp_path / "p.csv", 'id,prompt,topic\nq1,"sum, then print",math\nq2,"multi\nline prompt",text\n\nq3,last,x\n'
    )
    items = load_items(source)
    assert [(i.id, i.prompt) for i in items] == [
        ("q1", "sum, then print"),
        ("q2", "multi\nline prompt"),
        ("q3", "last"),
    ]
    assert items[0].metadata == {"topic": "math"}
    # q3 starts on line 6: the quoted newline in q2 and the blank line both count.
    assert items[2].source == f"{source}:6"


def test_plain_text_takes_one_prompt_per_non_empty_line_with_line_number_ids(tmp_path: Path) -> None:
    source = write(tmp_path / "p.txt", "first prompt\n\n  second prompt  \n")
    items = load_items(source)
    assert [(i.id, i.prompt) for i in items] == [("1", "first prompt"), ("3", "second prompt")]


def test_directory_takes_one_prompt_per_txt_or_md_file_named_by_stem(tmp_path: Path) -> None:
    write(tmp_path / "alpha.txt", "prompt A\nsecond line\n")
    write(tmp_path / "beta.md", "# prompt B\n")
    write(tmp_path / "notes.json", "{}")  # not a prompt file
    (tmp_path / "sub").mkdir()
    items = load_items(tmp_path)
    assert [(i.id, i.prompt) for i in items] == [("alpha", "prompt A\nsecond line"), ("beta", "# prompt B")]


def test_every_jsonl_problem_is_reported_together_with_file_and_line(tmp_path: Path) -> None:
    source = write(
        tmp_path / "bad.jsonl",
        "\n".join(
            [
                json.dumps({"id": "a", "prompt": "ok"}),
                "{not json",
                json.dumps({"id": "a", "prompt": "again"}),
                json.dumps({"id": "b", "prompt": "   "}),
                json.dumps({"id": "c", "prompt": "p", "files": ["missing.csv"]}),
                json.dumps({"id": "d"}),
                json.dumps(["a", "list"]),
                json.dumps({"id": "e", "prompt": "p", "promt": "typo"}),
                json.dumps({"id": "f/../g", "prompt": "p"}),
            ]
        )
        + "\n",
    )
    with pytest.raises(BatchInputError) as info:
        load_items(source)
    wheres = [p.where for p in info.value.problems]
    assert wheres == [f"{source}:{n}" for n in (2, 3, 4, 5, 6, 7, 8, 9)]
    text = str(info.value)
    assert "8 problems" in text and "nothing was run" in text
    for expected in (
        "malformed JSON",
        "duplicate id 'a'",
        "empty prompt",
        "'missing.csv' not found",
        "field 'prompt' is missing",
        "expected a JSON object",
        "unknown field(s) 'promt'",
        "cannot name a directory",
    ):
        assert expected in text, expected
    assert f"first at {source}:1" in text


def test_csv_problems_name_lines(tmp_path: Path) -> None:
    source = write(tmp_path / "bad.csv", "id,prompt\nq1,fine\nq1,dup\nq2,\nq3,too,many\n")
    with pytest.raises(BatchInputError) as info:
        load_items(source)
    assert [str(p) for p in info.value.problems] == [
        f"{source}:3: duplicate id 'q1' (first at {source}:2)",
        f"{source}:4: empty prompt (id 'q2')",
        f"{source}:5: expected 2 columns, got 3",
    ]


def test_csv_without_id_and_prompt_header_is_rejected(tmp_path: Path) -> None:
    source = write(tmp_path / "bad.csv", "question,answer\nq,a\n")
    with pytest.raises(BatchInputError, match=r"bad\.csv:1: header must name the columns 'id' and 'prompt'"):
        load_items(source)


def test_directory_with_an_empty_file_and_colliding_stems(tmp_path: Path) -> None:
    write(tmp_path / "a.txt", "x")
    write(tmp_path / "a.md", "y")
    write(tmp_path / "empty.txt", "\n\n")
    with pytest.raises(BatchInputError) as info:
        load_items(tmp_path)
    text = str(info.value)
    assert "duplicate id 'a'" in text and "empty prompt (id 'empty')" in text


def test_missing_path_and_empty_input_are_errors(tmp_path: Path) -> None:
    with pytest.raises(BatchInputError, match="no such file or directory"):
        load_items(tmp_path / "nope.jsonl")
    with pytest.raises(BatchInputError, match="no prompts found"):
        load_items(write(tmp_path / "blank.txt", "\n \n"))


def test_non_utf8_text_is_reported_not_crashed(tmp_path: Path) -> None:
    source = tmp_path / "latin.txt"
    source.write_bytes(b"caf\xe9\n")
    with pytest.raises(BatchInputError, match="not UTF-8"):
        load_items(source)


def test_python_items_accept_strings_items_and_mappings(tmp_path: Path) -> None:
    data = write(tmp_path / "in.txt", "x")
    items = coerce_items(["one", {"id": "m", "prompt": "two", "files": [str(data)]}, BatchItem(id="b", prompt="three")])
    assert [(i.id, i.prompt) for i in items] == [("1", "one"), ("m", "two"), ("b", "three")]
    assert items[1].files == [str(data.resolve())]
    with pytest.raises(BatchInputError) as info:
        coerce_items(["ok", "", 3, {"id": "1", "prompt": "dup"}])
    assert [p.where for p in info.value.problems] == ["items[1]", "items[2]", "items[3]"]


def test_batch_item_json_round_trip() -> None:
    item = BatchItem(id="x", prompt="p", files=["/a"], metadata={"k": [1]}, source="f:1")
    assert BatchItem.from_json(json.loads(json.dumps(item.to_json()))) == item
