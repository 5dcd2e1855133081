"""The pool's handle on one zygote: its process, its control socket, its spare child.

The zygote (``inside/zygote.py``) runs inside the sandbox; this side starts it
through the isolation wrapper, waits for its ``ready`` message, takes the
socket to each pre-forked child (``spare``) as it arrives, and kills the whole
tree when asked or when the pool is dropped.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .inside.zygote import MAX_MESSAGE, decode, encode
from .isolation import SandboxCommand
from .process import kill_tree

CONTROL_FD_MIN = 100


class ZygoteError(RuntimeError):
    """The zygote could not start or stopped answering."""


class ZygoteDied(ZygoteError):
    pass


def kill_processes(pids: set[int]) -> None:
    """Finalizer: kill every zygote tree still registered, and reap them. Runs at exit too."""
    for pid in list(pids):
        kill_tree(pid)
    deadline = time.monotonic() + 2
    for pid in list(pids):
        while time.monotonic() < deadline:
            try:
                if os.waitpid(pid, os.WNOHANG)[0] != 0:
                    break
            except ChildProcessError:
                break
            time.sleep(0.005)
    pids.clear()


class ZygoteProcess:
    """The orchestrator's handle on one zygote: its process and control socket."""

    def __init__(self, command: Callable[[dict], SandboxCommand], log_path: Path, registry: set[int]) -> None:
        self.command: Callable[[dict], SandboxCommand] | None = (
            command  # config -> the wrapped command line that starts the zygote
        )
        self.log_path = log_path
        self.registry = registry
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.spare: socket.socket | None = None  # the forked child waiting for its request
        self.spare_ready = asyncio.Event()
        self.died = asyncio.Event()
        self.alive = False
        self.executions = 0
        self.preload_failures: list[str] = []

    async def start(self, config: dict, timeout_s: float) -> None:
        ours, pair_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # A high descriptor number: wrappers (unshare's set-up script) use the low ones.
        theirs = fcntl.fcntl(pair_end.fileno(), fcntl.F_DUPFD, CONTROL_FD_MIN)
        pair_end.close()
        if self.command is None:
            raise ZygoteError("a zygote process starts once; make a new one to start again")
        command = self.command({**config, "control_fd": theirs})
        self.command = None  # it is bound to the pool: holding it would keep a dropped pool alive
        with open(self.log_path, "ab") as log:
            try:
                self.proc = subprocess.Popen(
                    command.argv,
                    env=command.env,
                    cwd=command.cwd,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    pass_fds=(theirs,),
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                ours.close()
                raise ZygoteError(f"could not start the zygote ({command.argv[0]}): {exc}") from exc
            finally:
                os.close(theirs)
        self.registry.add(self.proc.pid)
        self.sock = ours
        self.sock.setblocking(False)
        self.alive = True
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._on_readable)
        try:
            ready = await asyncio.wait_for(self.receive(), timeout_s)
        except TimeoutError:
            await self.kill()
            raise ZygoteError(f"the zygote did not become ready within {timeout_s:g} s; {self.log_tail()}") from None
        except ZygoteDied:
            await self.kill()
            raise ZygoteError(f"the zygote exited during start-up; {self.log_tail()}") from None
        except asyncio.CancelledError:
            self.kill_now()
            raise
        if ready.get("op") != "ready":
            await self.kill()
            raise ZygoteError(f"the zygote sent {ready!r} instead of a ready message")
        self.preload_failures = list(ready.get("preload_failures") or [])

    def log_tail(self, limit: int = 2000) -> str:
        try:
            text = self.log_path.read_bytes()[-limit:].decode("utf-8", errors="replace").strip()
        except OSError:
            text = ""
        return f"its output: {text}" if text else "it printed nothing"

    def _on_readable(self) -> None:
        try:
            assert self.sock is not None  # the reader is removed before the socket is dropped
            frame, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE, 4)
        except BlockingIOError:
            return
        except OSError:
            frame, fds = b"", []
        try:
            message = decode(frame) if frame else None
        except ValueError:
            message = None
        if message is not None and message.get("op") == "spare" and len(fds) == 1:
            self._set_spare(socket.socket(fileno=fds[0]))
            return
        for fd in fds:
            os.close(fd)
        if message is None:
            self._mark_dead()
            return
        self.inbox.put_nowait(message)

    def _set_spare(self, sock: socket.socket | None) -> None:
        if self.spare is not None:
            self.spare.close()
        self.spare = sock
        if sock is None:
            self.spare_ready.clear()
        else:
            self.spare_ready.set()

    async def take_spare(self) -> socket.socket:
        """The socket to the child forked for the next execution (waits for the fork)."""
        while self.spare is None:
            if not self.alive:
                raise ZygoteDied("the zygote exited")
            dead = asyncio.ensure_future(self.died.wait())
            ready = asyncio.ensure_future(self.spare_ready.wait())
            try:
                await asyncio.wait({dead, ready}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                dead.cancel()
                ready.cancel()
        sock, self.spare = self.spare, None
        self.spare_ready.clear()
        return sock

    def _mark_dead(self) -> None:
        if self.alive:
            self.alive = False
            if self.sock is not None:
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.inbox.put_nowait(None)
            self.died.set()
            self._set_spare(None)

    def check_alive(self) -> bool:
        """True unless the zygote is known dead or its socket says so right now."""
        if not self.alive or self.sock is None:
            return False
        try:
            peek = self.sock.recv(MAX_MESSAGE, socket.MSG_PEEK)
        except BlockingIOError:
            return True  # nothing pending: the usual idle state
        except OSError:
            peek = b""
        if not peek:
            self._mark_dead()
            return False
        return True

    async def receive(self) -> dict:
        message = await self.inbox.get()
        if message is None:
            self.inbox.put_nowait(None)  # every later receive sees the death too
            raise ZygoteDied("the zygote exited")
        return message

    def send(self, message: dict) -> None:
        frame = encode(message)
        if self.sock is None:
            raise ZygoteDied("the zygote is not running")
        try:
            self.sock.sendall(frame)
        except OSError as exc:
            self._mark_dead()
            raise ZygoteDied(f"could not reach the zygote: {exc}") from exc

    async def kill(self) -> None:
        """Kill the zygote's whole tree (wrapper, zygote, children) and reap it."""
        self._terminate()
        if self.proc is None:
            return
        deadline = time.monotonic() + 5
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        self.registry.discard(self.proc.pid)

    def kill_now(self) -> None:
        """The same, without awaiting: for paths that are being cancelled."""
        self._terminate()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=2)
                self.registry.discard(self.proc.pid)
            except Exception:
                pass  # the finaliser tries again at exit

    def _terminate(self) -> None:
        self._set_spare(None)
        if self.sock is not None:
            if self.alive:
                self.alive = False
                self.died.set()
                self.inbox.put_nowait(None)  # an execution waiting for a verdict learns of the death
                try:
                    asyncio.get_running_loop().remove_reader(self.sock.fileno())
                except (RuntimeError, ValueError):
                    pass
            self.sock.close()
            self.sock = None
        if self.proc is not None:
            kill_tree(self.proc.pid)
