"""The shared machinery of the fake model servers (test doubles).

A :class:`FakeModelServer` is a real HTTP server on 127.0.0.1 (port 0 by
default) run in a background thread, so the real SDKs talk to it over real
sockets from any event loop. Each request is recorded and answered from a
*script*: a list of replies consumed in order, or a function of the recorded
request. A reply is a response body (a dict), or one of the fault types below.
"""

from __future__ import annotations

import abc
import argparse
import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Fault:
    """Answer with an HTTP error status and the provider's error body."""

    status: int
    message: str = ""
    retry_after_s: float | None = None  # sent as a Retry-After header


@dataclass(frozen=True)
class Malformed:
    """Answer with a body that is not what the SDK expects."""

    body: bytes = b'{"candidates": [ this is not json'
    status: int = 200
    content_type: str = "application/json"


@dataclass(frozen=True)
class Disconnect:
    """Close the connection without answering (a dropped connection)."""


@dataclass(frozen=True)
class Delay:
    """Wait before answering with ``then`` (to exercise request timeouts)."""

    seconds: float
    then: Reply


@dataclass(frozen=True)
class Stream:
    """Answer a streaming request with these chunks, as server-sent events.
    A ``bytes`` chunk is sent verbatim (to break the stream on purpose)."""

    chunks: Sequence[dict[str, Any] | bytes]
    delay_s: float = 0.0  # pause between chunks


Reply = dict | Fault | Malformed | Disconnect | Delay | Stream


@dataclass
class RecordedRequest:
    """A request the fake received. The API key itself is never kept: only a
    short fingerprint, so tests can tell which key was sent."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]
    key_fingerprint: str | None = None
    received_at: float = field(default_factory=time.monotonic)


def key_fingerprint(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


ScriptFunction = Callable[[RecordedRequest], Reply]
Script = Sequence[Reply] | ScriptFunction

_SECRET_HEADERS = {"authorization", "x-goog-api-key", "api-key", "x-api-key"}


class FakeModelServer(abc.ABC):
    """Base of the provider fakes; subclasses define routes and wire formats.
    ``expected_key``: when set, requests with another key get the answer the
    real API gives a wrong key (:meth:`wrong_key_fault`)."""

    provider = "fake"
    # For ``python -m``: the API served and what one script entry holds.
    api = "model"
    replies = "reply bodies"

    def __init__(
        self, script: Script = (), *, expected_key: str | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._expected_key = key_fingerprint(expected_key) if expected_key else None
        self._script_fn: ScriptFunction | None = script if callable(script) else None
        self._queue: list[Reply] = [] if callable(script) else list(script)
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self._host, self._port = host, port
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------

    def start(self) -> FakeModelServer:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = ThreadingHTTPServer((self._host, self._port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=f"{self.provider}-fake", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError(f"the fake {self.provider} server is not running: call start() first")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """The base URL to give the SDK (no API version path)."""
        return f"http://{self._host}:{self.port}"

    def _wrong_key(self, request: RecordedRequest) -> bool:
        """Whether a key is expected and ``request`` carried another one, or none."""
        return self._expected_key is not None and request.key_fingerprint != self._expected_key

    def banner(self) -> str:
        """What ``python -m`` prints: where the fake listens (subclasses add how to point codeloop at it)."""
        return f"fake {self.api} API at {self.url}"

    # -- scripting --------------------------------------------------------

    def add(self, *replies: Reply) -> None:
        """Queue more replies (only for list scripts)."""
        if self._script_fn is not None:
            raise TypeError("this fake answers from a function; it has no reply queue")
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Replies not yet used."""
        return len(self._queue)

    def next_reply(self, request: RecordedRequest) -> Reply:
        if self._script_fn is not None:
            return self._script_fn(request)
        with self._lock:
            if not self._queue:
                return Fault(500, f"fake {self.provider} script exhausted after {len(self.requests) - 1} replies")
            return self._queue.pop(0)

    # -- provider hooks ---------------------------------------------------

    def route_error(self, request: RecordedRequest) -> Fault | None:
        """A Fault for a request the real API would refuse (unknown path, wrong key, bad body), or None."""
        if not self.serves(request.path):
            return Fault(404, f"the fake {self.api} server does not serve {request.method} {request.path}")
        if self._wrong_key(request):
            return self.wrong_key_fault()
        return self.body_error(request)

    @abc.abstractmethod
    def serves(self, path: str) -> bool:
        """Whether ``path`` is this fake's endpoint."""

    @abc.abstractmethod
    def wrong_key_fault(self) -> Fault:
        """What the real API answers a wrong key."""

    def body_error(self, request: RecordedRequest) -> Fault | None:
        """A Fault for a body the real API refuses, or None."""
        return None

    @abc.abstractmethod
    def is_stream(self, request: RecordedRequest) -> bool: ...

    @abc.abstractmethod
    def api_key_of(self, headers: dict[str, str], query: dict[str, str]) -> str | None: ...

    @abc.abstractmethod
    def error_body(self, fault: Fault) -> dict[str, Any]: ...

    def stream_chunks(self, reply: dict[str, Any]) -> list[dict[str, Any]]:
        """How a plain response body is streamed when a stream was asked for."""
        return [reply]

    def sse_event(self, chunk: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"

    def sse_end(self) -> bytes:
        return b""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeModelServer

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self._answer_fault(Fault(404, f"{self.path} is not served by the fake {self.fake.provider} server"))

    def do_POST(self) -> None:
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in self.headers.items()}
        key = self.fake.api_key_of(headers, query)
        safe_headers = {k: ("<redacted>" if k in _SECRET_HEADERS else v) for k, v in headers.items()}
        query.pop("key", None)
        request = RecordedRequest(
            method="POST",
            path=split.path,
            query=query,
            body=body,
            headers=safe_headers,
            key_fingerprint=key_fingerprint(key) if key else None,
        )
        with self.fake._lock:
            self.fake.requests.append(request)
        problem = self.fake.route_error(request)
        reply = problem if problem is not None else self.fake.next_reply(request)
        self._answer(reply, self.fake.is_stream(request))

    def _answer(self, reply: Reply, stream: bool) -> None:
        while isinstance(reply, Delay):
            time.sleep(reply.seconds)
            reply = reply.then
        if isinstance(reply, Disconnect):
            self.close_connection = True
            self.connection.close()
        elif isinstance(reply, Fault):
            self._answer_fault(reply)
        elif isinstance(reply, Malformed):
            self._send(reply.status, reply.body, reply.content_type)
        elif isinstance(reply, Stream):
            self._answer_stream(list(reply.chunks), reply.delay_s)
        elif isinstance(reply, dict):
            if stream:
                self._answer_stream(self.fake.stream_chunks(reply), 0.0)
            else:
                self._send(200, json.dumps(reply).encode(), "application/json")
        else:
            self._answer_fault(Fault(500, f"the fake's script gave a reply of type {type(reply).__name__}"))

    def _answer_fault(self, fault: Fault) -> None:
        extra = {"Retry-After": f"{fault.retry_after_s:g}"} if fault.retry_after_s is not None else {}
        self._send(fault.status, json.dumps(self.fake.error_body(fault)).encode(), "application/json", extra)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _answer_stream(self, chunks: Sequence[dict[str, Any] | bytes], delay_s: float) -> None:
        # Chunked transfer encoding, one HTTP chunk per event, so each event
        # reaches the client as soon as it is written.
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        events = [c if isinstance(c, bytes) else self.fake.sse_event(c) for c in chunks] + [self.fake.sse_end()]
        for i, event in enumerate(e for e in events if e):
            if i and delay_s:
                time.sleep(delay_s)
            self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def reply_from_json(data: Any) -> Reply:
    """A reply from a JSON script entry: a response body, or one of
    ``{"fault": 429, "message": ...}``, ``{"malformed": "text"}``,
    ``{"disconnect": true}``, ``{"delay": 2.0, "then": ...}``, ``{"stream": [chunks]}``."""
    if not isinstance(data, dict):
        raise ValueError(f"a script entry must be a JSON object, got {type(data).__name__}")
    if "fault" in data:
        return Fault(int(data["fault"]), data.get("message", ""), data.get("retry_after_s"))
    if "malformed" in data:
        return Malformed(str(data["malformed"]).encode())
    if data.get("disconnect"):
        return Disconnect()
    if "delay" in data:
        return Delay(float(data["delay"]), reply_from_json(data["then"]))
    if "stream" in data:
        return Stream(list(data["stream"]), float(data.get("delay_s", 0.0)))
    return data


def load_script(path: str) -> list[Reply]:
    """Read a JSON list of script entries (see :func:`reply_from_json`)."""
    with open(path, encoding="utf-8") as f:
        entries = json.load(f)
    if not isinstance(entries, list):
        raise ValueError(f"{path}: a script is a JSON list of replies")
    replies = []
    for i, entry in enumerate(entries):
        try:
            replies.append(reply_from_json(entry))
        except ValueError as exc:
            raise ValueError(f"{path}: entry {i}: {exc}") from None
    return replies


def serve_command_line(server_cls: type[FakeModelServer], argv: list[str] | None) -> int:
    """``python -m`` entry of a fake: serve ``--script`` until interrupted,
    printing the fake's ``banner()`` (where it listens, how to point codeloop at it)."""
    api, replies = server_cls.api, server_cls.replies
    parser = argparse.ArgumentParser(description=f"Serve a scripted fake {api} API on this machine.")
    parser.add_argument("--script", required=True, help=f"JSON list of replies ({replies} or faults)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    fake = server_cls(load_script(args.script), port=args.port).start()
    print(fake.banner(), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
    return 0
