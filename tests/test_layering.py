"""Layering: `import orchestrator` stays light, the orchestrator never imports
the benchmarks (the bench command comes in through an entry point), and every
built-in executor, model and command is registered once, as an entry point,
through one loader that tests can feed their own entry points."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from executors.plugins import CHECKOUT_PYPROJECT, PluginTable, checkout_entry_points, merge
from executors.registry import GROUP as EXECUTORS
from executors.registry import UnknownExecutorError, available_executors, get_executor
from orchestrator.cli import build_parser, main
from orchestrator.config import GenerationOptions
from orchestrator.models import ScriptedModel, UnknownModelError
from orchestrator.models.registry import GROUP as MODELS
from orchestrator.models.registry import ModelRegistry

ROOT = Path(__file__).resolve().parent.parent


def test_importing_orchestrator_loads_no_batch_machinery():
    code = (
        "import orchestrator, sys; assert 'sqlite3' not in sys.modules and 'rich' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('sqlite3', 'rich')))"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_the_cli_imports_the_benchmarks_only_through_the_entry_point():
    code = "import orchestrator.cli, sys; assert 'benchmarks' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    importers = []
    for path in (ROOT / "orchestrator").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            if any(name == "benchmarks" or name.startswith("benchmarks.") for name in names):
                importers.append(str(path.relative_to(ROOT)))
    assert importers == []


@pytest.mark.parametrize(
    ("group", "names"),
    [
        ("codeloop.executors", {"local", "sandbox", "pool", "restricted", "jupyter", "jupyter-remote"}),
        ("codeloop.models", {"replay", "scripted", "gemini", "gemini-server", "openai", "anthropic", "local"}),
        ("codeloop.commands", {"bench"}),
    ],
)
def test_the_built_ins_are_listed_once_in_pyproject_and_each_loads(group, names):
    entries = checkout_entry_points(CHECKOUT_PYPROJECT, group)
    assert {ep.name for ep in entries} == names
    for entry in entries:
        assert callable(entry.load()), entry


def ours(name: str, value: str, group: str) -> EntryPoint:
    """An entry point as installed metadata of codeloop itself would give it."""

    class Dist:
        pass

    dist = Dist()
    dist.name = "codeloop"
    return EntryPoint(name, value, group)._for(dist)


def test_stale_installed_metadata_does_not_hide_or_resurrect_built_ins():
    stale = [
        ours("local", "executors.local:LocalExecutor", EXECUTORS),
        ours("removed", "executors.gone:Gone", EXECUTORS),
    ]
    plugin = EntryPoint("remote-box", "acme.box:BoxExecutor", EXECUTORS)
    checkout = [
        EntryPoint("local", "executors.local:LocalExecutor", EXECUTORS),
        EntryPoint("sandbox", "executors.sandbox:SandboxExecutor", EXECUTORS),
    ]
    table = PluginTable.of(EXECUTORS, merge([*stale, plugin], checkout))
    assert table.names() == ["local", "remote-box", "sandbox"]
    # An installed wheel has no checkout beside it: its metadata is the list.
    assert PluginTable.of(EXECUTORS, merge([*stale, plugin], None)).names() == ["local", "remote-box", "removed"]


def test_a_table_of_injected_entry_points_needs_no_installed_metadata():
    table = PluginTable.of(
        EXECUTORS,
        [EntryPoint("only", "executors.local:LocalExecutor", EXECUTORS), EntryPoint("other-group", "x:y", MODELS)],
    )
    assert available_executors(table) == ["only"]
    executor = get_executor("only", table=table)
    assert executor.name == "local"
    with pytest.raises(UnknownExecutorError, match="unknown executor 'sandbox'; choose one of: only"):
        get_executor("sandbox", table=table)


def plugin_model(argument):
    """A third party's factory: the argument only."""
    return ScriptedModel([argument], name=f"plugin:{argument}")


def options_model(argument, options):
    return ScriptedModel([f"{argument} at {options.temperature}"], name="with-options")


async def test_a_model_registry_is_a_value_built_from_entry_points_and_factories():
    registry = ModelRegistry.of([EntryPoint("plug", "tests.test_layering:plugin_model", MODELS)])
    assert registry.prefixes() == ["plug"]
    assert registry.get("plug:hello").name == "plugin:hello"
    extended = registry.with_factory("opts", options_model)
    assert registry.prefixes() == ["plug"] and extended.prefixes() == ["opts", "plug"]
    model = extended.get("opts:x", GenerationOptions(temperature=0.5))
    from orchestrator.types import Conversation, UserMessage

    turn = await model.generate(Conversation(messages=[UserMessage(text="q")]))
    assert turn.text == "x at 0.5"
    with pytest.raises(UnknownModelError, match=r"start with one of: opts:…, plug:…"):
        extended.get("nosuch:x")
    with pytest.raises(UnknownModelError, match=re.escape("needs an argument after the colon, e.g. plug:ARGUMENT")):
        extended.get("plug:")


def test_built_in_models_come_from_the_default_registry():
    from orchestrator.models import available_models, get_model

    assert {"replay", "scripted", "gemini", "openai", "local"} <= set(available_models())
    with pytest.raises(UnknownModelError, match=re.escape("e.g. replay:examples/cassette.jsonl")):
        get_model("replay:")


def register_hello(sub):
    parser = sub.add_parser("hello", help="say hello")
    parser.set_defaults(handler=lambda args: print("hello from a plugin") or 0)


def test_commands_come_from_entry_points_and_a_broken_one_says_why(capsys):
    commands = PluginTable.of(
        "codeloop.commands",
        [
            EntryPoint("hello", "tests.test_layering:register_hello", "codeloop.commands"),
            EntryPoint("broken", "no_such_package.cli:register", "codeloop.commands"),
        ],
    )
    parser = build_parser(commands)
    args = parser.parse_args(["hello"])
    assert args.handler(args) == 0 and "hello from a plugin" in capsys.readouterr().out
    args = parser.parse_args(["broken", "--anything"])
    from orchestrator.cli import UsageError

    with pytest.raises(UsageError, match="the 'broken' command cannot be loaded: No module named 'no_such_package'"):
        args.handler(args)


def test_the_bench_command_is_registered_through_its_entry_point(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "humaneval" in capsys.readouterr().out
