"""``codeloop serve`` on the command line: its options, and a real process
answering the google-genai SDK."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from google import genai
from google.genai import types

from orchestrator.cli import UsageError, build_parser
from orchestrator.cli.serve import (
    build_backends,
    default_alias,
    parse_model_option,
    settings_from,
)
from tests.conftest import ROOT

PRIMES_CODE = (
    "primes = []\nn = 2\nwhile len(primes) < 50:\n    if all(n % p for p in primes):\n"
    "        primes.append(n)\n    n += 1\nprint(sum(primes))"
)


def args_of(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


@pytest.mark.parametrize(
    ("value", "alias", "spec"),
    [
        ("qwen=local:qwen2.5-coder-1.5b", "qwen", "local:qwen2.5-coder-1.5b"),
        ("local:qwen2.5-coder-1.5b", "qwen2.5-coder-1.5b", "local:qwen2.5-coder-1.5b"),
        ("local:/models/My Model.Q4.gguf", "My-Model.Q4", "local:/models/My Model.Q4.gguf"),
        ("openai:llama3@http://127.0.0.1:11434/v1?x=1", "llama3", "openai:llama3@http://127.0.0.1:11434/v1?x=1"),
        ("fast=openai:m@http://h/v1?a=b", "fast", "openai:m@http://h/v1?a=b"),
        ("gemini:gemini-2.5-flash", "gemini-2.5-flash", "gemini:gemini-2.5-flash"),
    ],
)
def test_model_options_name_their_alias(value, alias, spec):
    assert parse_model_option(value) == (alias, spec)


def test_a_model_option_with_an_empty_alias_or_spec_is_a_usage_error():
    for value in ("=local:x", "qwen="):
        with pytest.raises(UsageError, match="ALIAS=SPEC"):
            parse_model_option(value)


def test_default_alias_of_a_scripted_file():
    assert default_alias("scripted:/tmp/my script.json") == "my-script"


def test_settings_come_from_flags_and_the_key_from_the_environment():
    settings = settings_from(
        args_of("--port", "0", "--max-concurrent", "2", "--max-body-mb", "1", "--run-timeout", "9"),
        {"CODELOOP_SERVE_API_KEY": "from-env"},
    )
    assert (settings.port, settings.max_concurrent_runs, settings.max_body_bytes, settings.run_timeout_s) == (
        0,
        2,
        1024 * 1024,
        9.0,
    )
    assert settings.api_key == "from-env" and "from-env" not in repr(settings)
    assert settings.host == "127.0.0.1"  # this machine only, unless told
    assert settings_from(args_of("--api-key", "flag"), {"CODELOOP_SERVE_API_KEY": "env"}).api_key == "flag"


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (("--max-concurrent", "0"), "--max-concurrent"),
        (("--run-timeout", "-1"), "--run-timeout"),
        (("--port", "70000"), "--port"),
    ],
)
def test_bad_settings_are_usage_errors_naming_the_flag(flags, named):
    with pytest.raises(UsageError, match=named):
        settings_from(args_of(*flags), {})


def test_two_backends_with_one_alias_are_refused(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps(["hi"]))
    args = args_of("--model", f"a=scripted:{script}", "--model", f"b=scripted:{script}", "--executor", "local")
    backends = build_backends(args, {})
    assert [b.alias for b in backends] == ["a", "b"]
    assert backends[0].executor is backends[1].executor  # one executor serves them all
    from orchestrator.serve import create_app

    with pytest.raises(ValueError, match="two backends are named 'a'"):
        create_app([backends[0], backends[0]])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_codeloop_serve_process_answers_the_sdk_and_stops_on_ctrl_c(tmp_path):
    script = tmp_path / "primes.json"
    script.write_text(json.dumps([f"```python\n{PRIMES_CODE}\n```", "The sum is 5117."]))
    port = free_port()
    env = {**os.environ, "CODELOOP_SERVE_API_KEY": "cli-key", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "serve",
            "--model",
            f"primes=scripted:{script}",
            "--executor",
            "local",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "codeloop serve did not start listening"
                time.sleep(0.1)
        client = genai.Client(api_key="cli-key", http_options=types.HttpOptions(base_url=f"http://127.0.0.1:{port}"))
        response = client.models.generate_content(
            model="primes",
            contents="Sum the first 50 primes with code.",
            config=types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution())]),
        )
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=20)
    assert response.code_execution_result.strip() == "5117" and response.text.endswith("The sum is 5117.")
    assert proc.returncode == 0, stderr
    assert f"http://127.0.0.1:{port}/v1beta" in stderr and "models/primes" in stderr
    assert "API key required" in stderr and "cli-key" not in stderr
