"""A throwaway Jupyter Kernel Gateway on 127.0.0.1 for benchmarks and demos.

``with LocalGateway() as gw:`` starts ``python -m kernel_gateway`` on a free
port with a random token, waits until it answers, and stops it (and the
kernels it started) on exit. ``gw.url`` and ``gw.token`` are what
``JupyterRemoteExecutor`` needs.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path


class LocalGateway:
    def __init__(self, startup_timeout_s: float = 60.0) -> None:
        self.token = secrets.token_hex(16)
        self.startup_timeout_s = startup_timeout_s
        self.url = ""
        self._proc: subprocess.Popen | None = None
        self._dir: tempfile.TemporaryDirectory | None = None

    def __enter__(self) -> LocalGateway:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self._dir = tempfile.TemporaryDirectory(prefix="codeloop-gateway-")
        log_path = Path(self._dir.name) / "gateway.log"
        with open(log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kernel_gateway",
                    "--KernelGatewayApp.ip=127.0.0.1",
                    f"--KernelGatewayApp.port={port}",
                    "--KernelGatewayApp.port_retries=0",
                    f"--KernelGatewayApp.auth_token={self.token}",
                    # codeloop caps output itself; the server's rate limit would drop it silently.
                    "--ZMQChannelsWebsocketConnection.limit_rate=False",
                ],
                cwd=self._dir.name,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + self.startup_timeout_s
        while not self._answers():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                self.__exit__(None, None, None)
                raise RuntimeError(f"the kernel gateway did not start; its log ends with:\n{tail}")
            time.sleep(0.1)
        return self

    def _answers(self) -> bool:
        req = urllib.request.Request(f"{self.url}/api/kernelspecs", headers={"Authorization": f"token {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def __exit__(self, *exc) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()  # the gateway shuts its kernels down on SIGTERM
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            proc.wait()
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
