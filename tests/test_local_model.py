"""The local model: llama.cpp's server as a child codeloop owns (local:NAME).

Most tests run the lifecycle against tests/fake_llama_child.py, a test double
of the child with the real child's protections and a tiny HTTP server instead
of llama.cpp. Tests marked ``real_model`` load the 0.5B model file.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from orchestrator.models import ModelError, get_model, llama_server
from orchestrator.models.llama_server import (
    LlamaServer,
    LlamaServerError,
    LlamaServerSettings,
    LocalServers,
    child_environment,
    pick_free_port,
)
from orchestrator.models.local import LocalModel, LocalSettings, alias_for
from orchestrator.types import Conversation, UserMessage
from tests.conftest import ROOT
from tests.real_models import require_real_model

FAKE_CHILD = str(Path(__file__).with_name("fake_llama_child.py"))
SECRETS = {
    "OPENAI_API_KEY": "sk-test-secret",
    "GEMINI_API_KEY": "gemini-test-secret",
    "GOOGLE_API_KEY": "google-test-secret",
    "HF_TOKEN": "hf-test-secret",
}


def fake_model(tmp_path: Path, name: str = "fake.gguf", **behaviour) -> str:
    """A "model file" telling the fake child how to behave."""
    path = tmp_path / name
    path.write_text(json.dumps(behaviour))
    return str(path)


def fake_settings(model_path: str, tmp_path: Path, **overrides) -> LlamaServerSettings:
    options = {
        "alias": "fake",
        "n_ctx": 1024,
        "threads": 1,
        "startup_timeout_s": 10,
        "log_dir": str(tmp_path / "logs"),
        **overrides,
    }
    return LlamaServerSettings(model_path=model_path, **options)


def fake_server(settings: LlamaServerSettings, env=None) -> LlamaServer:
    return LlamaServer(settings, env=env, child_script=FAKE_CHILD)


def gone(pid: int, within_s: float = 5.0) -> bool:
    """True once ``pid`` no longer runs (exited, or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def conversation(text: str, system: str = "") -> Conversation:
    return Conversation(system=system, messages=[UserMessage(text=text)])


# -- settings and helpers -------------------------------------------------------


def test_pick_free_port_gives_a_port_that_can_be_bound():
    port = pick_free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("parallel", 0, "parallel must be at least 1"),
        ("threads", 0, "threads must be at least 1"),
        ("n_ctx", 0, "n_ctx must be at least 1"),
        ("alias", "two words", "alias must be a word"),
        ("startup_timeout_s", 0, "startup_timeout_s must be positive"),
    ],
)
def test_server_settings_reject_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        LlamaServerSettings(model_path="m.gguf", **{field: value})


def test_server_settings_need_enough_context_per_slot_and_round_trip():
    with pytest.raises(ValueError, match="fewer than 256 tokens per request"):
        LlamaServerSettings(model_path="m.gguf", n_ctx=1024, parallel=8)
    settings = LlamaServerSettings(model_path="m.gguf", n_ctx=4096, parallel=2, cache_prompt=False)
    assert settings.slot_context == 2048
    assert LlamaServerSettings.from_json(json.loads(json.dumps(settings.to_json()))) == settings
    args = settings.child_args(port=1234, parent_pid=99)
    assert args[args.index("--port") + 1] == "1234" and args[-1] == "--no-cache-prompt"


def test_local_settings_default_to_reproducible_sampling_and_validate():
    settings = LocalSettings()
    assert (settings.temperature, settings.seed, settings.cache_prompt) == (0.0, 0, True)
    assert settings.request_body() == {"cache_prompt": True, "seed": 0, "repeat_penalty": 1.05}
    assert LocalSettings.from_json(settings.to_json()) == settings
    for bad, message in [
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"tools": "maybe"}, "tools"),
        ({"parallel": 0}, "parallel"),
        ({"seed": -1}, "seed"),
    ]:
        with pytest.raises(ValueError, match=message):
            LocalSettings(**bad)


def test_specs_are_checked_before_anything_starts(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LocalModel(str(tmp_path / "missing.gguf"))
    with pytest.raises(ValueError, match="needs a model"):
        LocalModel("")
    assert alias_for("/models/qwen.gguf") == "qwen" and alias_for("qwen2.5-coder-0.5b") == "qwen2.5-coder-0.5b"
    model = get_model(f"local:{fake_model(tmp_path)}")
    assert isinstance(model, LocalModel) and model.server is None  # nothing started yet


def test_the_child_environment_keeps_no_secret():
    env = {**SECRETS, "PATH": "/usr/bin", "HOME": "/home/u", "LANG": "C.UTF-8", "AWS_SECRET_ACCESS_KEY": "x"}
    child = child_environment(env)
    assert child == {
        "PATH": "/usr/bin",
        "HOME": "/home/u",
        "LANG": "C.UTF-8",
        "OPENBLAS_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


# -- the server's lifecycle, with the fake child ----------------------------------


async def test_a_started_server_answers_has_no_secrets_and_stops_on_close(tmp_path):
    server = fake_server(fake_settings(fake_model(tmp_path), tmp_path), env={**os.environ, **SECRETS})
    async with server:
        pid = server.pid
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode()
        assert "PATH=" in environ
        assert not any(secret in environ for secret in SECRETS.values())
        assert not any(f"{name}=" in environ for name in SECRETS)
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        log = server.log_path
    assert server.process is None and gone(pid, within_s=0.5)
    assert not log.exists()  # a server we stopped leaves no log behind


async def test_a_child_that_dies_while_loading_is_a_clear_error_naming_its_log(tmp_path):
    server = fake_server(fake_settings(fake_model(tmp_path, crash=True), tmp_path))
    with pytest.raises(LlamaServerError, match="exited with code 4 while starting") as caught:
        await server.start()
    message = str(caught.value)
    assert "failed to load the model" in message and str(server.log_path) in message
    assert server.log_path.exists()  # kept: it explains the failure
    assert server.process is None


async def test_a_server_not_ready_in_time_is_stopped_and_reported(tmp_path):
    settings = fake_settings(fake_model(tmp_path, load_s=30), tmp_path, startup_timeout_s=0.5)
    server = fake_server(settings)
    started = time.monotonic()
    with pytest.raises(LlamaServerError, match=r"was not ready within 0.5s"):
        await server.start()
    assert time.monotonic() - started < 5
    assert server.process is None


async def test_a_start_cancelled_while_loading_stops_the_child(tmp_path):
    server = fake_server(fake_settings(fake_model(tmp_path, load_s=30), tmp_path))
    task = asyncio.create_task(server.start())
    while server.process is None:
        await asyncio.sleep(0.01)
    pid = server.pid
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert server.process is None and gone(pid, within_s=0.5)


async def test_a_port_someone_else_answers_on_is_not_taken_for_ours(tmp_path):
    server = fake_server(fake_settings(fake_model(tmp_path, claims_model_path="/other.gguf"), tmp_path))
    with pytest.raises(LlamaServerError, match="answered by another server"):  # after trying other ports
        await server.start()
    assert server.process is None


async def test_a_port_taken_before_the_child_binds_it_is_retried_with_another(tmp_path, monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = [taken.getsockname()[1]]
    real_pick = llama_server.pick_free_port
    monkeypatch.setattr(llama_server, "pick_free_port", lambda host: ports.pop() if ports else real_pick(host))
    try:
        async with fake_server(fake_settings(fake_model(tmp_path), tmp_path)) as server:
            assert server.port != taken.getsockname()[1] and server.running
    finally:
        taken.close()


def test_close_is_synchronous_for_interpreter_exit(tmp_path):
    server = fake_server(fake_settings(fake_model(tmp_path), tmp_path))
    asyncio.run(server.start())
    pid = server.pid
    server.close()
    assert gone(pid, within_s=0.5)


async def test_concurrent_first_users_share_one_server_until_the_last_leaves(tmp_path):
    made = []

    def factory(settings):
        made.append(fake_server(settings))
        return made[-1]

    servers = LocalServers(server_factory=factory)
    settings = fake_settings(fake_model(tmp_path, load_s=0.3), tmp_path)
    first, second = await asyncio.gather(servers.acquire(settings), servers.acquire(settings))
    assert first is second and len(made) == 1 and len(servers) == 1
    other = await servers.acquire(fake_settings(fake_model(tmp_path, "other.gguf"), tmp_path))
    assert other is not first and len(servers) == 2
    pid = first.pid
    await servers.release(first)
    assert first.running  # one user left
    await servers.release(second)
    assert gone(pid, within_s=0.5) and len(servers) == 1
    with pytest.raises(ValueError, match="was not acquired"):
        await servers.release(first)
    await servers.aclose()
    assert not other.running and len(servers) == 0


async def test_a_failed_start_leaves_no_user_behind(tmp_path):
    servers = LocalServers(server_factory=fake_server)
    with pytest.raises(LlamaServerError):
        await servers.acquire(fake_settings(fake_model(tmp_path, crash=True), tmp_path))
    assert len(servers) == 0


# -- LocalModel over the fake child ---------------------------------------------------


def fake_local_model(tmp_path: Path, servers: LocalServers, **settings) -> LocalModel:
    return LocalModel(
        fake_model(tmp_path), LocalSettings(threads=1, **settings), servers=servers, env={**os.environ, **SECRETS}
    )


async def test_local_model_sends_reproducible_settings_and_the_prompt_cache_flag(tmp_path):
    servers = LocalServers(server_factory=fake_server)
    model = fake_local_model(tmp_path, servers, max_tokens=64, seed=5, n_ctx=4096, parallel=2, tools="off")
    assert model.name.startswith("local:") and model.context_length == 2048
    turn = await model.generate(conversation("hi"))
    request = json.loads(turn.text)  # the fake answers with what it was sent
    assert request["model"] == "fake" and request["temperature"] == 0
    assert (request["max_tokens"], request["seed"], request["cache_prompt"]) == (64, 5, True)
    assert "tools" not in request
    pid = model.server.pid
    await model.aclose()
    await model.aclose()  # closing twice is harmless
    assert gone(pid, within_s=0.5) and len(servers) == 0


async def test_two_local_models_of_one_file_share_one_server(tmp_path):
    servers = LocalServers(server_factory=fake_server)
    path = fake_model(tmp_path)
    first, second = (LocalModel(path, LocalSettings(threads=1), servers=servers) for _ in range(2))
    await asyncio.gather(first.generate(conversation("a")), second.generate(conversation("b")))
    assert first.server is second.server
    pid = first.server.pid
    await first.aclose()
    assert psutil.pid_exists(pid)
    await second.aclose()
    assert gone(pid, within_s=0.5)


async def test_a_dead_server_is_named_in_the_model_error(tmp_path):
    servers = LocalServers(server_factory=fake_server)
    model = fake_local_model(tmp_path, servers)
    await model.start()
    model.server.process.kill()
    model.server.process.wait()
    started = time.monotonic()
    with pytest.raises(ModelError, match="has exited"):
        await model.generate(conversation("hi"))
    assert time.monotonic() - started < 2  # not retried against a server that is gone
    await model.aclose()


# -- no server outlives codeloop, with the fake child -----------------------------------

OWNER_SCRIPT = """
import asyncio, sys
sys.path.insert(0, {root!r})
from orchestrator.models.llama_server import LlamaServer, LlamaServerSettings

async def main():
    settings = LlamaServerSettings(model_path={model!r}, alias="owned", n_ctx={n_ctx}, threads=1,
                                   startup_timeout_s=120, log_dir={log_dir!r})
    async with LlamaServer(settings, child_script={child!r}) as server:
        print(server.pid, flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def start_owner(model: str, tmp_path: Path, child: str, n_ctx: int = 1024) -> tuple[subprocess.Popen, int]:
    """A codeloop process that starts a server and waits; returns it and the server's pid."""
    code = OWNER_SCRIPT.format(root=str(ROOT), model=model, n_ctx=n_ctx, log_dir=str(tmp_path / "logs"), child=child)
    owner = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    line = owner.stdout.readline()
    if not line.strip():
        owner.kill()
        raise AssertionError(f"the owner did not start its server: {owner.stderr.read()[-2000:]}")
    return owner, int(line)


@pytest.mark.parametrize("how", ["sigint", "sigterm", "sigkill"])
def test_no_server_outlives_its_owner(tmp_path, how):
    owner, pid = start_owner(fake_model(tmp_path), tmp_path, FAKE_CHILD)
    try:
        owner.send_signal({"sigint": signal.SIGINT, "sigterm": signal.SIGTERM, "sigkill": signal.SIGKILL}[how])
        owner.wait(timeout=10)
        assert gone(pid, within_s=5), f"the server (pid {pid}) outlived its owner after {how}"
    finally:
        owner.kill()
        owner.wait()


def test_a_child_whose_parent_is_already_gone_exits_at_once(tmp_path):
    """The race before PR_SET_PDEATHSIG: the child checks who its parent is."""
    child = subprocess.run(
        [
            sys.executable,
            "-P",
            FAKE_CHILD,
            "--parent-pid",
            "1",
            "--model",
            fake_model(tmp_path),
            "--alias",
            "a",
            "--port",
            "1",
            "--ctx-size",
            "512",
            "--threads",
            "1",
            "--parallel",
            "1",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=10,
    )
    assert child.returncode == 3


# -- with the real model ------------------------------------------------------------------


@pytest.mark.real_model
async def test_real_model_is_deterministic_shared_and_stopped(monkeypatch):
    path = require_real_model()
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    servers = LocalServers()
    settings = LocalSettings(n_ctx=1024, max_tokens=12, tools="off")
    first, second = (LocalModel(str(path), settings, servers=servers) for _ in range(2))
    ask = conversation("Reply with one word: the capital of France.", system="Answer tersely.")
    try:
        one, two = await asyncio.gather(first.generate(ask), second.generate(ask))
        again = await first.generate(ask)
        assert first.server is second.server and len(servers) == 1
        assert one.text == two.text == again.text and one.text.strip()
        assert 0 < again.usage.output_tokens <= 12
        environ = Path(f"/proc/{first.server.pid}/environ").read_bytes().decode()
        assert not any(secret in environ for secret in SECRETS.values())
        pid = first.server.pid
    finally:
        await first.aclose()
        await second.aclose()
    assert gone(pid, within_s=5)


@pytest.mark.real_model
@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_real_server_does_not_outlive_its_owner(tmp_path, how):
    path = require_real_model()
    owner, pid = start_owner(str(path), tmp_path, llama_server.CHILD_SCRIPT, n_ctx=512)
    try:
        assert psutil.Process(pid).is_running()
        owner.send_signal(signal.SIGINT if how == "sigint" else signal.SIGKILL)
        owner.wait(timeout=15)
        assert gone(pid, within_s=5), f"the llama.cpp server (pid {pid}) outlived its owner after {how}"
    finally:
        owner.kill()
        owner.wait()
