"""Running the app with uvicorn: in the foreground (the CLI) or on a thread
(tests, benchmarks, notebooks).

uvicorn's access log is off: it prints each request's query string, where a
client may have put its key. The app logs its own line per request, without it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette

from .settings import ServeSettings


def uvicorn_config(app: Starlette, settings: ServeSettings, *, log_level: str = "warning") -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


def run_server(
    app: Starlette,
    settings: ServeSettings,
    *,
    log_level: str = "warning",
    announce: Callable[[str], None] | None = None,
) -> None:
    """Serve until interrupted (Ctrl-C stops it cleanly). ``announce`` gets the
    URL once the socket is bound, so ``port=0`` reports the port it got."""
    _AnnouncingServer(uvicorn_config(app, settings, log_level=log_level), announce).run()


class _AnnouncingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, announce: Callable[[str], None] | None) -> None:
        super().__init__(config)
        self._announce = announce

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self._announce is not None and self.started:
            host, port = next(s for server in self.servers for s in server.sockets).getsockname()[:2]
            self._announce(f"http://{host}:{port}")


class BackgroundServer:
    """The app served from a thread with its own event loop::

        with BackgroundServer(create_app(backends), ServeSettings(port=0)) as server:
            client = genai.Client(api_key="x", http_options={"base_url": server.url})

    ``port=0`` picks a free port; :attr:`url` says which. The app's backends
    are used from the server's thread and event loop: give it executors that
    nothing else uses (a pool belongs to the loop that started it), and
    ``create_app(..., close_on_exit=True)`` to close them there.
    """

    def __init__(
        self, app: Starlette, settings: ServeSettings | None = None, *, startup_timeout_s: float = 10.0
    ) -> None:
        self.settings = settings or ServeSettings(port=0)
        self._server = uvicorn.Server(uvicorn_config(app, self.settings))
        self._thread = threading.Thread(target=self._run, name="codeloop-serve", daemon=True)
        self._startup_timeout_s = startup_timeout_s
        self._error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve())
        except BaseException as exc:  # reported by start()
            self._error = exc

    @property
    def port(self) -> int:
        sockets = [s for server in self._server.servers for s in server.sockets]
        return sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"the server did not start: {self._error!r}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start within {self._startup_timeout_s} s")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
