"""What ``codeloop serve`` costs over running the loop directly: ``python -m benchmarks.perf.serve``.

The same prompt (the seed's primes question), the same scripted model (a test
double answering at once: the primes program, then the sum its output shows)
and the same executor run two ways, at 1, 8 and 32 requests at once:

- direct: ``Orchestrator.run`` called in this process;
- served: the google-genai SDK's async client, in this process, sending
  ``generateContent`` with the codeExecution tool to a ``codeloop serve`` app
  on a thread (uvicorn, its own event loop), which runs the same loop.

Per level: requests per second (requests / wall time of the level) and the
median and p95 latency of one request; "added" is served minus direct, the
price of HTTP, JSON, the wire conversion and the SDK. Arms alternate level by
level so load on the (shared) machine hits both alike. Every answer is
checked: the code's output holds 5117.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from google import genai
from google.genai import types

from executors import Limits, get_executor
from orchestrator import Orchestrator, RunStatus, ScriptedModel
from orchestrator.serve import Backend, BackgroundServer, ServeSettings, create_app
from orchestrator.types import Conversation, ExecutionMessage

PRIMES = (
    "What is the sum of the first 50 prime numbers? Generate and run code for the calculation, "
    "and make sure you get all 50."
)
PROGRAM = """```python
primes = []
n = 2
while len(primes) < 50:
    if all(n % p for p in primes):
        primes.append(n)
    n += 1
print(sum(primes))
```"""
REPORT = Path(__file__).resolve().parent.parent / "reports" / "serve.md"


def primes_model(conversation: Conversation, tools) -> str:
    """The scripted model: the program first, then the number it printed."""
    last = conversation.messages[-1]
    if isinstance(last, ExecutionMessage):
        return f"The sum of the first 50 primes is {last.result.stdout.strip()}."
    return f"I will compute it.\n{PROGRAM}"


@dataclass
class Level:
    arm: str
    concurrency: int
    requests: int
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000


async def timed_level(arm: str, concurrency: int, requests: int, one) -> Level:
    """``requests`` calls of ``one()``, ``concurrency`` at a time."""
    level = Level(arm, concurrency, requests)
    gate = asyncio.Semaphore(concurrency)

    async def call() -> None:
        async with gate:
            t0 = time.perf_counter()
            await one()
            level.latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(call() for _ in range(requests)))
    level.wall_s = time.perf_counter() - t0
    return level


def direct_call(orchestrator: Orchestrator):
    async def one() -> None:
        result = await orchestrator.run(PRIMES)
        if result.status is not RunStatus.SOLVED or "5117" not in result.attempts[-1].result.stdout:
            raise RuntimeError(f"direct run went wrong: {result.status.value} {result.error}")

    return one


def served_call(client: genai.Client):
    config = types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution())])

    async def one() -> None:
        response = await client.aio.models.generate_content(model="primes", contents=PRIMES, config=config)
        if "5117" not in (response.code_execution_result or ""):
            raise RuntimeError(f"served run went wrong: {response.model_dump_json(exclude_none=True)[-600:]}")

    return one


async def measure(executor_name: str, levels: list[int], per_level: int) -> tuple[list[Level], dict]:
    """Each arm has its own executor of the same kind: an executor belongs to
    the event loop that started it, and the server runs its own loop."""
    direct_executor = get_executor(executor_name, limits=Limits(timeout_s=30))
    served_executor = get_executor(executor_name, limits=Limits(timeout_s=30))
    orchestrator = Orchestrator(ScriptedModel(primes_model), direct_executor)
    settings = ServeSettings(port=0, max_concurrent_runs=max(levels))
    app = create_app(
        [Backend("primes", ScriptedModel(primes_model), served_executor)], settings, close_on_exit=True
    )  # the served executor is closed on the server's loop
    results: list[Level] = []
    try:
        await direct_call(orchestrator)()  # warm-up: the executor starts its workers
        with BackgroundServer(app, settings) as server:
            client = genai.Client(api_key="benchmark", http_options=types.HttpOptions(base_url=server.url))
            await served_call(client)()  # warm-up: the server's executor, the connection pool
            for concurrency in levels:
                requests = max(per_level, 2 * concurrency)
                print(f"-- {requests} requests, {concurrency} at once ...", file=sys.stderr, flush=True)
                results.append(await timed_level("direct", concurrency, requests, direct_call(orchestrator)))
                results.append(await timed_level("served", concurrency, requests, served_call(client)))
            await client.aio.aclose()
    finally:
        await direct_executor.aclose()
    return results, {"executor": executor_name}


def table(results: list[Level]) -> tuple[list[str], list[list[str]]]:
    header = [
        "at once",
        "requests",
        "direct req/s",
        "served req/s",
        "direct p50 / p95 ms",
        "served p50 / p95 ms",
        "added p50 ms",
    ]
    rows = []
    for direct, served in zip(results[::2], results[1::2], strict=True):
        rows.append(
            [
                str(direct.concurrency),
                str(direct.requests),
                f"{direct.rps:.1f}",
                f"{served.rps:.1f}",
                f"{direct.p50_ms:.1f} / {direct.p95_ms:.1f}",
                f"{served.p50_ms:.1f} / {served.p95_ms:.1f}",
                f"{served.p50_ms - direct.p50_ms:+.1f}",
            ]
        )
    return header, rows


def render_text(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def render_markdown(header: list[str], rows: list[list[str]], info: dict) -> str:
    load_before, load_after = info["load_before"], info["load_after"]
    lines = [
        "# codeloop serve: throughput and added latency",
        "",
        f"Generated by `python -m benchmarks.perf.serve` on {info['started']:%Y-%m-%d %H:%M} UTC in {info['elapsed']:.0f} s.",
        "",
        f"Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}; "
        f"load average (1/5/15 min) {' / '.join(f'{x:.2f}' for x in load_before)} before, "
        f"{' / '.join(f'{x:.2f}' for x in load_after)} after. The machine is shared with other work; "
        "the arms alternate level by level so that load hits both alike.",
        "",
        f"Each request is the seed's primes prompt through the whole loop: a scripted model (a test double "
        f"that answers at once, so the numbers are codeloop's own cost), two model calls, one execution on "
        f"the `{info['executor']}` executor, and the answer checked (the output holds 5117). *Direct* calls "
        "`Orchestrator.run` in this process; *served* sends `generateContent` with the codeExecution tool "
        "through the google-genai SDK's async client (in this process, so client and server share its "
        "CPU time) to `codeloop serve` on a uvicorn thread. Requests/s is requests over the wall time of "
        "the level; latency is one request's, end to end.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" for _ in header) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"- One request at a time, serving adds **{rows[0][-1]} ms** (p50) to a run of {rows[0][4].split()[0]} ms: "
        "the HTTP round trip, JSON both ways, the wire conversion and the SDK's own parsing.",
        "- At higher levels client and server share one process (and its GIL) on a shared 2-core machine, so "
        "the served column pays for both sides' CPU; the added latency there is mostly waiting for that CPU, "
        "not fixed overhead. A client on another machine would leave the server all of it.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.perf.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--executor", default="pool", help="where the code runs (default pool, the fastest)")
    parser.add_argument("--levels", default="1,8,32", help="concurrency levels (default 1,8,32)")
    parser.add_argument(
        "--requests", type=int, default=24, help="requests per level and arm (default 24; at least twice the level)"
    )
    parser.add_argument("--out", default=str(REPORT), help="where to write the Markdown report")
    args = parser.parse_args(argv)
    try:
        args.levels = [int(x) for x in args.levels.split(",")]
    except ValueError:
        parser.error(f"--levels must be numbers separated by commas, got {args.levels!r}")
    if any(level < 1 for level in args.levels) or args.requests < 1:
        parser.error("--levels and --requests must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    info = {"started": datetime.now(UTC), "load_before": os.getloadavg()}
    t0 = time.perf_counter()
    results, more = asyncio.run(measure(args.executor, args.levels, args.requests))
    info.update(more, elapsed=time.perf_counter() - t0, load_after=os.getloadavg())
    header, rows = table(results)
    print(render_text(header, rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(header, rows, info), encoding="utf-8")
    print(f"\nreport written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
