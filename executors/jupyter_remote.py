"""``jupyter-remote``: kernels on a Jupyter Kernel Gateway, over REST and WebSocket.

The gateway's REST API starts, interrupts, restarts and deletes kernels
(``/api/kernels``); each kernel's ``/api/kernels/{id}/channels`` WebSocket
carries the Jupyter messages, JSON-encoded with a ``channel`` field. Every
request sends ``Authorization: token ...``.

Files move through the kernel itself: inputs are written by a silent cell
that decodes base64, and files the code writes in its working directory come
back from a silent cell that lists what changed since the last run. Each
session's kernel works in its own fresh directory on the gateway host.

A refused token is reported as a SANDBOX_ERROR result whose error_type is
``GatewayAuthError`` (the run never starts); call :meth:`check` first to get
the same problem as an exception.
"""

from __future__ import annotations

import ast
import asyncio
import base64
import datetime
import hashlib
import json
import os
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any, cast

import websockets
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

from ._shared import INSIDE
from .base import Artifact, InputFile, Isolation, Limits
from .kernel_common import DEFAULT_SESSION, KernelExecutorBase
from .kernel_messages import KernelDied, KernelHandle, KernelStartError, is_kernel_gone_status
from .workspace import artifact_of, safe_input_name

# Helper cells leave their JSON report here; it comes back as a user expression
# in the execute_reply (shell channel), which the gateway's IOPub data-rate
# limit does not touch, so megabytes of artifacts get through.
REPORT_EXPR = "__import__('sys').modules['codeloop_kernel_state'].out"


class GatewayError(KernelStartError):
    """The gateway could not be reached or refused a request."""


class GatewayAuthError(GatewayError):
    """The gateway refused the token."""


# Helper cells run silently in the kernel. The first sends over the source of
# inside/kernel_files.py and runs it into a module of its own, so the user's
# namespace never sees its names; the others call its functions, and each
# leaves its report in the module's ``out``.
KERNEL_FILES_SOURCE = (INSIDE / "kernel_files.py").read_text(encoding="utf-8")
_STATE = "__import__('sys').modules['codeloop_kernel_state']"
_SETUP = (
    "exec(compile(%(source)r, 'codeloop_kernel_files.py', 'exec'), __import__('sys').modules.setdefault("
    "'codeloop_kernel_state', __import__('types').ModuleType('codeloop_kernel_state')).__dict__)\n"
    + _STATE
    + ".setup(%(path)r)\n"
)
_UPLOAD = _STATE + ".upload(%(files)r)\n"
_COLLECT = _STATE + ".collect(%(count)d, %(size)d, %(total)d)\n"
_CLEANUP = _STATE + ".cleanup()\n"


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value or None


class RemoteKernel(KernelHandle):
    def __init__(self, executor: JupyterRemoteExecutor, kernel_id: str) -> None:
        self.ex = executor
        self.kernel_id = kernel_id
        self.ws: Any = None
        self.session_id = uuid.uuid4().hex
        self.cwd: str | None = None
        self._uploaded: dict[str, str] = {}
        self._ws_loop: Any = None
        self._setup_done = False
        self._server_restarting = False  # the gateway said it is restarting this kernel

    # -- transport -----------------------------------------------------------------

    async def attach(self) -> None:
        loop = asyncio.get_running_loop()
        if self.ws is not None and self._ws_loop is loop and self.ws.state.name == "OPEN":
            return
        await self._close_ws()
        url = self.ex.ws_url(f"/api/kernels/{self.kernel_id}/channels")
        try:
            self.ws = await websockets.connect(
                url,
                additional_headers=self.ex.headers(),
                max_size=None,
                open_timeout=self.ex.request_timeout_s,
                close_timeout=2,
                ping_interval=20,
            )
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401:
                raise GatewayAuthError(self.ex.auth_message(status)) from None
            if status == 404:
                raise KernelDied(f"the gateway no longer has kernel {self.kernel_id}") from None
            raise GatewayError(f"the gateway refused the kernel channels (HTTP {status})") from None
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            raise GatewayError(f"cannot open the kernel channels at {url}: {exc}") from exc
        self._ws_loop = loop
        await self._wait_ready()
        if not self._setup_done:
            await self._setup()

    async def _wait_ready(self) -> None:
        """A kernel_info reply proves the kernel and its channels are up."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.ex.startup_timeout_s
        while loop.time() < end:
            msg_id = await self._send("kernel_info_request", {}, channel="shell")
            slice_end = min(end, loop.time() + 1.0)
            while loop.time() < slice_end:
                msg = await self._recv(slice_end - loop.time())
                if msg is None:
                    break
                if msg.get("channel") == "shell" and (msg.get("parent_header") or {}).get("msg_id") == msg_id:
                    return
        raise KernelStartError(f"the remote kernel did not answer within {self.ex.startup_timeout_s:g} s")

    async def _send(self, msg_type: str, content: dict[str, Any], *, channel: str) -> str:
        msg_id = uuid.uuid4().hex
        msg = {
            "header": {
                "msg_id": msg_id,
                "username": "codeloop",
                "session": self.session_id,
                "msg_type": msg_type,
                "version": "5.3",
                "date": datetime.datetime.now(datetime.UTC).isoformat(),
            },
            "parent_header": {},
            "metadata": {},
            "content": content,
            "channel": channel,
            "buffers": [],
        }
        try:
            await self.ws.send(json.dumps(msg))
        except websockets.ConnectionClosed as exc:
            raise KernelDied(f"the gateway closed the kernel's channels ({exc})") from None
        self._quickack()
        return msg_id

    async def _recv(self, timeout: float) -> dict[str, Any] | None:
        try:
            raw = await asyncio.wait_for(self.ws.recv(), max(0.0, timeout))
        except TimeoutError:
            return None
        except websockets.ConnectionClosed as exc:
            raise KernelDied(f"the gateway closed the kernel's channels ({exc})") from None
        self._quickack()
        if isinstance(raw, bytes):
            return {"channel": "binary"}  # v1 binary frames are not requested; skip
        msg = json.loads(raw)
        if is_kernel_gone_status(msg):
            state = msg["content"]["execution_state"]
            self._server_restarting = state != "dead"
            raise KernelDied(f"the gateway reported the kernel as {state}")
        return msg

    def _quickack(self) -> None:
        """Acknowledge at once so the gateway's next message is not held back.

        The gateway writes each message as a small WebSocket frame without
        TCP_NODELAY; with delayed ACKs on our side, Nagle's algorithm holds its
        second frame for ~40 ms. Linux resets QUICKACK by itself, hence per read.
        """
        sock = self.ws.transport.get_extra_info("socket") if self.ws is not None else None
        if sock is not None and hasattr(socket, "TCP_QUICKACK"):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                pass

    async def send_execute(self, code: str) -> str:
        return await self._send(
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            channel="shell",
        )

    async def next_iopub(self, timeout: float) -> dict[str, Any] | None:
        msg = await self._recv(timeout)
        if msg is None or msg.get("channel") != "iopub":
            return None
        return msg

    async def interrupt(self) -> None:
        try:
            await self.ex.request("POST", f"/api/kernels/{self.kernel_id}/interrupt")
        except GatewayError as exc:  # gone from the gateway, or the gateway is gone
            raise KernelDied(f"the kernel could not be interrupted: {exc}") from None

    async def restart(self) -> None:
        await self._close_ws()
        self._setup_done = False
        self._uploaded.clear()
        if self._server_restarting:
            # The gateway is already restarting the kernel: wait for it, do not restart twice.
            self._server_restarting = False
            try:
                await self.attach()
                return
            except (KernelDied, KernelStartError):
                await self._close_ws()
        # A new kernel rather than POST .../restart: the gateway's restart first asks
        # a busy kernel to shut down and waits up to 5 s for it. The old kernel is
        # deleted in the background (the same wait, but nobody waits on it).
        old_id = self.kernel_id
        self.ex.forget_cleanup(self)
        self.ex.delete_in_background(old_id)
        self.kernel_id = await self.ex.create_kernel()
        self.ex.register_remote(self)
        await self.attach()

    async def shutdown(self) -> None:
        if self._setup_done:
            # The working directory is on the gateway host: only the kernel can remove it.
            try:
                await asyncio.wait_for(self._remove_workdir(), 5)
            except (TimeoutError, KernelDied, KernelStartError):
                pass  # a busy or dead kernel keeps its directory; the DELETE still stops it
        await self._close_ws()
        await self.ex.delete_kernel(self.kernel_id)

    async def _remove_workdir(self) -> None:
        await self.attach()  # reconnects when the channels belong to an earlier event loop
        await self._helper(_CLEANUP)

    async def _close_ws(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            try:
                await ws.close()
            except Exception:  # a socket from a closed event loop cannot be closed politely
                pass

    # -- helper cells ----------------------------------------------------------------

    async def _helper(self, code: str) -> dict[str, Any]:
        """Run a silent helper cell; return the JSON report it left in the kernel."""
        msg_id = await self._send(
            "execute_request",
            {
                "code": code,
                "silent": True,
                "store_history": False,
                "user_expressions": {"report": REPORT_EXPR},
                "allow_stdin": False,
                "stop_on_error": False,
            },
            channel="shell",
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ex.request_timeout_s
        reply: dict[str, Any] | None = None
        idle = False
        while reply is None or not idle:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise GatewayError(f"a codeloop helper cell got no answer within {self.ex.request_timeout_s:g} s")
            msg = await self._recv(remaining)
            if msg is None or (msg.get("parent_header") or {}).get("msg_id") != msg_id:
                continue
            msg_type = msg["header"]["msg_type"]
            if msg.get("channel") == "shell" and msg_type == "execute_reply":
                reply = msg.get("content") or {}
            elif msg_type == "status" and (msg.get("content") or {}).get("execution_state") == "idle":
                idle = True
        if reply.get("status") != "ok":
            raise GatewayError(
                f"a codeloop helper cell failed in the remote kernel: {reply.get('ename')}: {reply.get('evalue')}"
            )
        value = (reply.get("user_expressions") or {}).get("report") or {}
        text = (value.get("data") or {}).get("text/plain")
        if value.get("status") != "ok" or not isinstance(text, str):
            raise GatewayError(f"a codeloop helper cell left no report: {value.get('ename')}: {value.get('evalue')}")
        return json.loads(ast.literal_eval(text))  # text/plain is the repr of the JSON string

    async def _setup(self) -> None:
        report = await self._helper(_SETUP % {"source": KERNEL_FILES_SOURCE, "path": self.cwd})
        self.cwd = report["cwd"]
        self._setup_done = True

    async def upload(self, files: Sequence[InputFile]) -> None:
        batch = []
        for f in files:
            name = safe_input_name(f.name)
            digest = hashlib.sha256(f.data).hexdigest()
            if self._uploaded.get(name) == digest:
                continue
            batch.append((name, base64.b64encode(f.data).decode("ascii"), digest))
        if not batch:
            return
        await self._helper(_UPLOAD % {"files": [(n, d) for n, d, _ in batch]})
        for name, _, digest in batch:
            self._uploaded[name] = digest

    async def collect_files(self, limits: Limits) -> list[Artifact]:
        report = await self._helper(
            _COLLECT
            % {
                "count": limits.max_artifacts,
                "size": limits.artifact_bytes,
                "total": limits.artifacts_total_bytes,
            }
        )
        return [
            artifact_of(item["name"], None if item.get("truncated") else base64.b64decode(item["data"]))
            for item in report["files"]
        ]


class JupyterRemoteExecutor(KernelExecutorBase):
    """Stateful: one kernel per session on a Jupyter Kernel Gateway.

    ``gateway_url`` and ``token`` default to the ``CODELOOP_GATEWAY_URL`` and
    ``CODELOOP_GATEWAY_TOKEN`` environment variables (read here, at the edge).
    The other options (``limits``, ``max_kernels``, ``idle_timeout_s``,
    ``interrupt_grace_s``, ``startup_timeout_s``) are :class:`KernelExecutorBase`'s.
    """

    name = "jupyter-remote"

    def __init__(
        self,
        gateway_url: str | None = None,
        *,
        token: str | None = None,
        kernel_name: str | None = None,
        request_timeout_s: float = 30.0,
        **kernel_options: Any,
    ) -> None:
        super().__init__(**kernel_options)
        url = gateway_url or _env("CODELOOP_GATEWAY_URL")
        if not url:
            raise ValueError(
                "jupyter-remote needs a gateway URL: pass gateway_url (CLI: --gateway-url) or set CODELOOP_GATEWAY_URL"
            )
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"gateway_url must start with http:// or https://, got {url!r}")
        self.gateway_url = url.rstrip("/")
        self._token = token if token is not None else _env("CODELOOP_GATEWAY_TOKEN")
        self.kernel_name = kernel_name
        self.request_timeout_s = request_timeout_s
        self._deleting: dict[str, asyncio.Task] = {}

    def __repr__(self) -> str:  # never show the token
        return f"JupyterRemoteExecutor({self.gateway_url!r})"

    @property
    def isolation(self) -> Isolation:
        return Isolation.KERNEL

    # -- REST --------------------------------------------------------------------------

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"token {self._token}"} if self._token else {}

    def ws_url(self, path: str) -> str:
        return "ws" + self.gateway_url[len("http") :] + path

    def auth_message(self, status: int) -> str:
        given = "no token was given" if not self._token else "the token was refused"
        return (
            f"the Jupyter Kernel Gateway at {self.gateway_url} answered HTTP {status}: {given}; "
            "pass token=... (CLI: --gateway-token, or CODELOOP_GATEWAY_TOKEN)"
        )

    async def request(self, method: str, path: str, body: dict | None = None, *, timeout: float | None = None) -> Any:
        req = HTTPRequest(
            self.gateway_url + path,
            method=method,
            headers={**self.headers(), "Content-Type": "application/json"},
            body=json.dumps(body) if body is not None else (b"" if method == "POST" else None),
            request_timeout=timeout or self.request_timeout_s,
            connect_timeout=self.request_timeout_s,
        )
        try:
            resp = await AsyncHTTPClient().fetch(req, raise_error=False)
        except (OSError, HTTPClientError) as exc:  # refused, unresolvable, timed out
            raise GatewayError(f"cannot reach the Jupyter Kernel Gateway at {self.gateway_url}: {exc}") from None
        if resp.code == 599:
            raise GatewayError(f"cannot reach the Jupyter Kernel Gateway at {self.gateway_url}: {resp.error}")
        if resp.code == 401:
            raise GatewayAuthError(self.auth_message(resp.code))
        if resp.code >= 400:
            detail = resp.body.decode("utf-8", "replace")[:300] if resp.body else resp.reason
            raise GatewayError(f"{method} {path} on the Kernel Gateway failed with HTTP {resp.code}: {detail}")
        return json.loads(resp.body) if resp.body else None

    async def check(self) -> None:
        """Raise GatewayError/GatewayAuthError unless the gateway answers this token."""
        await self.request("GET", "/api/kernelspecs")

    async def create_kernel(self) -> str:
        body = {"name": self.kernel_name} if self.kernel_name else {}
        info = await self.request("POST", "/api/kernels", body, timeout=self.startup_timeout_s)
        return info["id"]

    def delete_in_background(self, kernel_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self.delete_kernel(kernel_id))
        self._deleting[kernel_id] = task
        # Until the DELETE is done the finalizer still knows the kernel.
        self._cleanups[hash(kernel_id)] = _sync_delete(self.gateway_url, kernel_id, self.headers())

        def done(_task: asyncio.Task) -> None:
            self._deleting.pop(kernel_id, None)
            self._cleanups.pop(hash(kernel_id), None)

        task.add_done_callback(done)

    async def aclose(self) -> None:
        pending = [t for t in self._deleting.values() if t.get_loop() is asyncio.get_running_loop()]
        if pending:  # before the finalizer, which would repeat them synchronously
            await asyncio.wait(pending, timeout=self.request_timeout_s)
        await super().aclose()

    async def delete_kernel(self, kernel_id: str) -> None:
        try:
            await self.request("DELETE", f"/api/kernels/{kernel_id}")
        except GatewayError:
            pass  # already gone, or the gateway is: nothing left to stop

    def register_remote(self, handle: RemoteKernel) -> None:
        self.register_cleanup(handle, _sync_delete(self.gateway_url, handle.kernel_id, self.headers()))

    async def start_kernel(self, session: str, limits: Limits) -> KernelHandle:
        handle = RemoteKernel(self, await self.create_kernel())
        self.register_remote(handle)
        try:
            await handle.attach()
        except BaseException:
            await handle.shutdown()
            self.forget_cleanup(handle)
            raise
        return handle

    def kernel_id(self, session: str | None = None) -> str | None:
        """The gateway's id for a session's kernel, or None without one."""
        sess = self._sessions.get(session or DEFAULT_SESSION)
        return cast(RemoteKernel, sess.handle).kernel_id if sess is not None else None  # this executor makes only these


def _sync_delete(base_url: str, kernel_id: str, headers: dict[str, str]):
    """A blocking DELETE for the finalizer, which runs when no event loop may exist."""

    def delete() -> None:
        req = urllib.request.Request(f"{base_url}/api/kernels/{kernel_id}", method="DELETE", headers=headers)
        try:
            urllib.request.urlopen(req, timeout=5).close()
        except (urllib.error.URLError, OSError):
            pass

    return delete
