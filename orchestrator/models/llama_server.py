"""llama.cpp's server as a child process that codeloop owns.

:class:`LlamaServer` runs one model in one child (``_llama_child.py``) on a free
port of 127.0.0.1 and knows when it is ready (``GET /health``). The child never
outlives us: it dies with its parent (``PR_SET_PDEATHSIG``), on EOF of its stdin
pipe, and on :meth:`LlamaServer.aclose` / :meth:`LlamaServer.close`, which an
``atexit`` hook also calls. :class:`LocalServers` shares one server per model
and settings between the users of a process.

The child is spawned from the calling thread, and the kernel's parent-death
signal follows that *thread*: start servers from a thread that lives as long
as they do (the event loop's), never from a short-lived worker thread.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

CHILD_SCRIPT = str(Path(__file__).with_name("_llama_child.py"))

# What the child may see of our environment: enough to run Python and load
# libraries, and never an API key (it gets nothing else).
CHILD_ENV_KEEP = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "USER",
    "LOGNAME",
    "LD_LIBRARY_PATH",
    "CUDA_VISIBLE_DEVICES",
)
PORT_ATTEMPTS = 3
STOP_GRACE_S = 5.0
LOG_TAIL_LINES = 15


class LlamaServerError(RuntimeError):
    """The server could not start or died; the message names its log file."""


class PortTakenError(LlamaServerError):
    """Another process answers on the port the child was given."""


def default_threads() -> int:
    """One thread per core we may run on, at most 8. In the loop, generation
    and execution take turns, so the cores are free while the model writes.
    Measured with the 0.5B model on 2 idle cores (441 prompt + 200 generated
    tokens): 2 threads 10.6 s, 1 thread 16.7 s. Under other load the picture
    turns: llama.cpp's threads wait for each other at every step, and on 2
    cores shared with work at load average 5, 1 thread generated 14-21 tokens/s
    against 0.2-4 for 2; pass --threads 1 on a busy machine."""
    return max(1, min(len(os.sched_getaffinity(0)), 8))


def default_log_dir() -> str:
    return str(Path(tempfile.gettempdir()) / "codeloop-llama")


@dataclass(frozen=True)
class LlamaServerSettings:
    """How one server runs. ``n_ctx`` is shared by the ``parallel`` slots:
    each request gets ``n_ctx // parallel`` tokens of context."""

    model_path: str
    alias: str = "local"
    n_ctx: int = 8192
    threads: int = field(default_factory=default_threads)
    parallel: int = 1
    cache_prompt: bool = True
    host: str = "127.0.0.1"
    startup_timeout_s: float = 120.0
    log_dir: str = field(default_factory=default_log_dir)

    def __post_init__(self) -> None:
        if not self.model_path:
            raise ValueError("LlamaServerSettings.model_path must name a .gguf file")
        if not self.alias or any(c.isspace() for c in self.alias):
            raise ValueError(f"LlamaServerSettings.alias must be a word without spaces, got {self.alias!r}")
        for name in ("n_ctx", "threads", "parallel"):
            if getattr(self, name) < 1:
                raise ValueError(f"LlamaServerSettings.{name} must be at least 1, got {getattr(self, name)}")
        if self.n_ctx // self.parallel < 256:
            raise ValueError(
                f"LlamaServerSettings: n_ctx {self.n_ctx} over {self.parallel} parallel slots "
                "leaves fewer than 256 tokens per request"
            )
        if self.startup_timeout_s <= 0:
            raise ValueError(f"LlamaServerSettings.startup_timeout_s must be positive, got {self.startup_timeout_s}")

    @property
    def slot_context(self) -> int:
        return self.n_ctx // self.parallel

    def child_args(self, port: int, parent_pid: int) -> list[str]:
        args = [
            "--parent-pid",
            str(parent_pid),
            "--model",
            self.model_path,
            "--alias",
            self.alias,
            "--host",
            self.host,
            "--port",
            str(port),
            "--ctx-size",
            str(self.n_ctx),
            "--threads",
            str(self.threads),
            "--parallel",
            str(self.parallel),
        ]
        return args if self.cache_prompt else [*args, "--no-cache-prompt"]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LlamaServerSettings:
        return cls(**data)


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now. Another process may take it before
    the child binds it; :meth:`LlamaServer.start` then tries another."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    kept = {name: env[name] for name in CHILD_ENV_KEEP if name in env}
    return {**kept, "OPENBLAS_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def log_tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if path is None:
        return "(no log)"
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _get_json(url: str, timeout_s: float = 1.0) -> tuple[int, Any]:
    """Status and body of a GET; (0, None) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


class LlamaServer:
    """One llama.cpp server child. ``async with LlamaServer(settings) as server:``
    or :meth:`start` then :meth:`aclose`; :attr:`base_url` is its OpenAI API."""

    def __init__(
        self,
        settings: LlamaServerSettings,
        *,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        child_script: str = CHILD_SCRIPT,
    ) -> None:
        self.settings = settings
        self.python = python
        self.child_script = child_script
        self._env = child_environment(os.environ if env is None else env)
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path: Path | None = None

    def __repr__(self) -> str:
        state = f"pid {self.pid} on port {self.port}" if self.running else "not running"
        return f"LlamaServer({self.settings.alias!r}, {state})"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def url(self) -> str:
        if self.port is None:
            raise LlamaServerError("the llama.cpp server has not been started")
        return f"http://{self.settings.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    async def __aenter__(self) -> LlamaServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    # -- starting ------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the child and wait until it serves. Raises LlamaServerError
        (naming the log) when it exits, or is not ready within the timeout."""
        if self.running:
            return
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self._spawn(pick_free_port(self.settings.host))
            try:
                await self._wait_ready()
                return
            except LlamaServerError as exc:
                collided = isinstance(exc, PortTakenError) or "couldn't bind" in log_tail(self.log_path)
                self.close(keep_log=True)
                if not collided or attempt == PORT_ATTEMPTS:
                    raise
            except BaseException:  # cancelled (Ctrl-C) while loading: the child goes too
                self.close(keep_log=True)
                raise

    def _spawn(self, port: int) -> None:
        log_dir = Path(self.settings.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.log_path = log_dir / f"llama-{self.settings.alias.replace('/', '_')}-{os.getpid()}-{port}.log"
        with open(self.log_path, "wb") as log:
            # Popen in this thread: the parent-death signal follows the spawning thread.
            self.process = subprocess.Popen(
                [self.python, "-P", self.child_script, *self.settings.child_args(port, os.getpid())],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                env=self._env,
                cwd=log_dir,
                close_fds=True,
            )
        atexit.register(self.close)

    @property
    def _child(self) -> subprocess.Popen:
        """The running child; only called between _spawn and _finish."""
        if self.process is None:
            raise LlamaServerError(f"the llama.cpp server for {self.settings.model_path} is not running")
        return self.process

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        delay = 0.05
        while True:
            code = self._child.poll()
            if code is not None:
                raise self._error(f"exited with code {code} while starting")
            status, _ = await asyncio.to_thread(_get_json, f"{self.url}/health")
            if status == 200:
                await self._check_identity()
                return
            if time.monotonic() > deadline:
                raise self._error(f"was not ready within {self.settings.startup_timeout_s:g}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _check_identity(self) -> None:
        """The port answers: make sure it is our child that answers, not a
        process that took the port first."""
        _status, props = await asyncio.to_thread(_get_json, f"{self.url}/props")
        served = props.get("model_path") if isinstance(props, dict) else None
        if self._child.poll() is not None or served != self.settings.model_path:
            raise PortTakenError(
                self._error(f"found port {self.port} answered by another server (serving {served!r})").args[0]
            )

    def _error(self, what: str) -> LlamaServerError:
        return LlamaServerError(
            f"the llama.cpp server for {self.settings.model_path} {what}. Its log is {self.log_path}; "
            f"last lines:\n{log_tail(self.log_path)}"
        )

    def check_alive(self) -> None:
        """Raise LlamaServerError if the child has exited (crashed, killed)."""
        if self.process is not None and self.process.poll() is not None:
            raise self._error(f"has exited (code {self.process.returncode})")

    # -- stopping --------------------------------------------------------------

    def _signal_stop(self) -> bool:
        """Ask the child to stop; False if it had already exited."""
        child = self._child
        if child.poll() is not None:
            return False
        try:
            if child.stdin is not None:
                child.stdin.close()
        except OSError:
            pass
        child.send_signal(signal.SIGTERM)
        return True

    def _finish(self, keep_log: bool) -> None:
        atexit.unregister(self.close)
        # A child we stopped leaves nothing worth reading; a crash keeps its log.
        stopped_by_us = self._child.returncode in (0, -signal.SIGTERM, -signal.SIGKILL)
        if self.log_path and stopped_by_us and not keep_log:
            self.log_path.unlink(missing_ok=True)
        self.process = None

    async def aclose(self, *, keep_log: bool = False) -> None:
        """SIGTERM (and EOF on stdin), then SIGKILL after a grace period."""
        if self.process is None:
            return
        if self._signal_stop():
            deadline = time.monotonic() + STOP_GRACE_S
            while self.process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if self.process.poll() is None:
                self.process.kill()
                await asyncio.to_thread(self.process.wait)
        self._finish(keep_log)

    def close(self, *, keep_log: bool = False) -> None:
        """The same, blocking: for interpreter exit and synchronous callers."""
        if self.process is None:
            return
        if self._signal_stop():
            try:
                self.process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._finish(keep_log)


ServerFactory = Callable[[LlamaServerSettings], LlamaServer]


@dataclass
class _Shared:
    server: LlamaServer
    users: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class LocalServers:
    """One server per (model, settings), shared by its users: :meth:`acquire`
    starts it on first use (concurrent first users wait for one start) and
    :meth:`release` stops it when its last user is done."""

    def __init__(self, server_factory: ServerFactory = LlamaServer) -> None:
        self._server_factory = server_factory
        self._shared: dict[LlamaServerSettings, _Shared] = {}

    def __len__(self) -> int:
        return len(self._shared)

    async def acquire(self, settings: LlamaServerSettings) -> LlamaServer:
        shared = self._shared.get(settings)
        if shared is None:
            shared = self._shared[settings] = _Shared(self._server_factory(settings))
        shared.users += 1
        try:
            async with shared.lock:
                if not shared.server.running:
                    await shared.server.start()
        except BaseException:
            await self._drop_user(settings, shared)
            raise
        return shared.server

    async def release(self, server: LlamaServer) -> None:
        shared = self._shared.get(server.settings)
        if shared is None or shared.server is not server:
            raise ValueError(f"{server!r} was not acquired from this LocalServers")
        await self._drop_user(server.settings, shared)

    async def _drop_user(self, settings: LlamaServerSettings, shared: _Shared) -> None:
        shared.users -= 1
        if shared.users == 0 and self._shared.get(settings) is shared:
            del self._shared[settings]
            await shared.server.aclose()

    async def aclose(self) -> None:
        """Stop every server, whoever still uses it."""
        shared, self._shared = list(self._shared.values()), {}
        for entry in shared:
            await entry.server.aclose()


_process_servers: LocalServers | None = None


def process_servers() -> LocalServers:
    """The servers of this process. Shared on purpose: a llama.cpp server is a
    process-wide resource (a child holding a model in memory), and concurrent
    runs of one model must use one server, however their models were built."""
    global _process_servers
    if _process_servers is None:
        _process_servers = LocalServers()
    return _process_servers
