"""``codeloop mcp`` latency as an MCP client sees it: ``python -m benchmarks.perf.mcp [--runs N] [--out PATH]``.

For each transport it starts the server as a user would (``codeloop mcp`` over
stdio, spawned by the SDK's client; ``codeloop mcp --transport http`` as a
process), connects with the MCP SDK's ``Client``, and times ``run_python``
calls: ``print(1)`` without a session (a fresh pool process each), the same in
a warm session (a kernel), and a matplotlib figure coming back as an image.
The pool executor called directly in this process gives the baseline the MCP
layer adds to. Prints a table and writes a Markdown report
(default ``benchmarks/reports/mcp.md``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

from executors import Limits
from executors.pool import PoolExecutor

ROOT = Path(__file__).resolve().parents[2]
FIGURE = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()"
CASES = [
    ("print(1), no session", "print(1)", None),
    ("print(1), warm session", "print(1)", "bench"),
    ("figure as image, no session", FIGURE, None),
]


def ms(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[max(0, int(len(ordered) * 0.95) - 1)] * 1000


async def time_calls(client: Client, code: str, session: str | None, runs: int) -> list[float]:
    arguments = {"code": code, **({"session": session} if session else {})}
    for _ in range(3):  # warm: the pool's zygotes, the session's kernel
        result = await client.call_tool("run_python", arguments)
        if result.is_error or result.structured_content["outcome"] != "OK":
            raise RuntimeError(f"run_python failed: {result.content}")
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await client.call_tool("run_python", arguments)
        samples.append(time.perf_counter() - started)
    return samples


async def measure(client_factory, runs: int) -> dict[str, object]:
    started = time.perf_counter()
    async with client_factory() as client:
        connect = time.perf_counter() - started
        rows = {name: ms(await time_calls(client, code, session, runs)) for name, code, session in CASES}
    return {"connect_s": connect, "rows": rows}


async def start_http() -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orchestrator.cli",
        "mcp",
        "--transport",
        "http",
        "--port",
        "0",
        cwd=ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    while line := (await asyncio.wait_for(proc.stderr.readline(), 120)).decode():
        found = re.search(r"serving on (\S+)", line)
        if found:
            return proc, found.group(1)
    raise RuntimeError("codeloop mcp over HTTP exited before serving")


async def direct_pool(runs: int) -> tuple[float, float]:
    pool = PoolExecutor()
    try:
        for _ in range(3):
            await pool.execute("print(1)", limits=Limits())
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            await pool.execute("print(1)", limits=Limits())
            samples.append(time.perf_counter() - started)
        return ms(samples)
    finally:
        await pool.aclose()


async def main_async(runs: int) -> dict[str, Any]:
    stdio = StdioServerParameters(command=sys.executable, args=["-m", "orchestrator.cli", "mcp"], cwd=str(ROOT))
    results: dict[str, Any] = {"stdio": await measure(lambda: Client(stdio), runs)}
    proc, url = await start_http()
    try:
        results["http"] = await measure(lambda: Client(url), runs)
    finally:
        proc.terminate()
        await proc.wait()
    results["direct pool"] = await direct_pool(runs)
    return results


def report(results: dict[str, Any], runs: int) -> str:
    lines = [
        "# `codeloop mcp` latency",
        "",
        (
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()}, Python {platform.python_version()}, "
            f"{runs} timed calls per row after 3 warm-up calls; `python -m benchmarks.perf.mcp`. {os.cpu_count()} cores, "
            f"load average {os.getloadavg()[0]:.1f} when it ended (other work shares the machine)."
        ),
        "",
        "| call | stdio p50 / p95 (ms) | HTTP p50 / p95 (ms) |",
        "| --- | --- | --- |",
    ]
    stdio, http = results["stdio"], results["http"]
    for name, _code, _session in CASES:
        (s50, s95), (h50, h95) = stdio["rows"][name], http["rows"][name]
        lines.append(f"| {name} | {s50:.1f} / {s95:.1f} | {h50:.1f} / {h95:.1f} |")
    p50, p95 = results["direct pool"]
    lines += [
        "",
        f"Baseline: `PoolExecutor.execute('print(1)')` called directly, p50 {p50:.1f} ms, p95 {p95:.1f} ms.",
        (
            f"Connecting (spawn, handshake): stdio {stdio['connect_s']:.2f} s; HTTP {http['connect_s']:.2f} s "
            "to a server already listening."
        ),
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "reports" / "mcp.md"))
    args = parser.parse_args(argv)
    text = report(asyncio.run(main_async(args.runs)), args.runs)
    print(text)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
