"""What llama.cpp's prompt cache saves on a retry: ``python -m benchmarks.perf.prompt_cache``.

One local server (the 0.5B model, started with the cache enabled) and a
realistic first attempt: codeloop's system prompt, a data-analysis prompt, the
model's own code (generated here at temperature 0), and the feedback codeloop
gives when that code fails (it is really run, by the local executor, and fails:
the CSV file it reads is not there). Then the retry request, which repeats all
of that plus the feedback, is timed with ``cache_prompt`` true (llama.cpp
reuses the prefix it still holds) and false (it evaluates every token again).
Arms alternate so that load on the machine hits both alike. The numbers come
from the server's own ``timings``: prompt tokens evaluated, tokens reused from
the cache, and milliseconds; plus the request's wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from executors import Limits, LocalExecutor
from orchestrator.extract import extract_code, join_blocks
from orchestrator.models.llama_server import LlamaServer, LlamaServerSettings
from orchestrator.prompts import Prompts

MODEL_NAME = "qwen2.5-coder-0.5b"
REPORT = Path(__file__).resolve().parent.parent / "reports" / "prompt-cache.md"

USER_PROMPT = """\
The file sales.csv in the working directory has one row per order, with these columns:
order_id (int), date (YYYY-MM-DD), region (one of North, South, East, West),
product (str), units (int), unit_price (float), discount (float between 0 and 0.3).

A few rows:
order_id,date,region,product,units,unit_price,discount
1001,2024-01-03,North,Widget,12,3.50,0.05
1002,2024-01-03,South,Gadget,3,12.00,0.00
1003,2024-01-04,East,Widget,7,3.50,0.10
1004,2024-01-05,West,Gizmo,1,45.00,0.20

Compute the revenue of every order (units * unit_price * (1 - discount)), then print
the total revenue per region, sorted from highest to lowest, and the month with the
highest total revenue. Use pandas."""


@dataclass
class Retry:
    cache: bool
    wall_s: float
    prompt_tokens: int  # the retry request's whole prompt
    evaluated: int  # prompt tokens the server computed
    cached: int  # prompt tokens it reused
    prompt_ms: float
    generated: int
    generation_ms: float


def timings(response) -> dict:
    return (response.model_extra or {}).get("timings") or {}


def first_attempt(client: OpenAI, system: str, max_tokens: int, cache: bool) -> str:
    """The model's first answer to the prompt: text with a code block."""
    response = client.chat.completions.create(
        model="bench",
        temperature=0,
        max_tokens=max_tokens,
        extra_body={"cache_prompt": cache, "seed": 0},
        messages=[{"role": "system", "content": system}, {"role": "user", "content": USER_PROMPT}],
    )
    return response.choices[0].message.content or ""


async def feedback_for(reply: str) -> str:
    """What codeloop tells the model after running its code (which fails here: no sales.csv)."""
    code = join_blocks(extract_code(reply))
    if not code:
        raise SystemExit(f"the model wrote no code block; its reply was:\n{reply}")
    executor = LocalExecutor(limits=Limits(timeout_s=30))
    try:
        result = await executor.execute(code)
    finally:
        await executor.aclose()
    if result.ok:
        raise SystemExit("the model's code did not fail, so there is no retry to measure")
    return Prompts().feedback(result, retries_left=4)


def retry(client: OpenAI, messages: list[dict], max_tokens: int, cache: bool) -> Retry:
    started = time.perf_counter()
    response = client.chat.completions.create(
        model="bench",
        temperature=0,
        max_tokens=max_tokens,
        messages=cast("list[ChatCompletionMessageParam]", messages),
        extra_body={"cache_prompt": cache, "seed": 0},
    )
    wall = time.perf_counter() - started
    t = timings(response)
    if response.usage is None:
        raise SystemExit("the server reported no token usage")
    return Retry(
        cache=cache,
        wall_s=wall,
        prompt_tokens=response.usage.prompt_tokens,
        evaluated=t["prompt_n"],
        cached=t.get("cache_n", 0),
        prompt_ms=t["prompt_ms"],
        generated=t["predicted_n"],
        generation_ms=t["predicted_ms"],
    )


def prime(client: OpenAI, messages: list[dict]) -> None:
    """Leave the server's slot as the loop does after a first attempt: holding
    the prompt and the model's reply (sent as an assistant prefix, 1 token out)."""
    client.chat.completions.create(
        model="bench",
        temperature=0,
        max_tokens=1,
        messages=cast("list[ChatCompletionMessageParam]", messages),
        extra_body={"cache_prompt": True, "seed": 0},
    )


def run(client: OpenAI, runs: int, first_tokens: int, retry_tokens: int) -> tuple[list[Retry], list[dict]]:
    system = Prompts().system(Limits())
    reply = first_attempt(client, system, first_tokens, cache=True)  # temperature 0: the same every time
    feedback = asyncio.run(feedback_for(reply))
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": USER_PROMPT},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": feedback},
    ]
    results: list[Retry] = []
    for index in range(2 * runs):
        cache = index % 2 == 0
        if cache:  # without the cache nothing is reused, whatever the slot holds
            prime(client, messages[:3])
        results.append(retry(client, messages, retry_tokens, cache))
        row = results[-1]
        print(
            f"run {index // 2 + 1} cache={'on ' if cache else 'off'} wall {row.wall_s:6.2f}s  "
            f"evaluated {row.evaluated:4d}  cached {row.cached:4d}  prompt {row.prompt_ms / 1000:6.2f}s",
            flush=True,
        )
    return results, messages


def median(rows: list[Retry], key: str) -> float:
    return statistics.median(getattr(r, key) for r in rows)


def report(results: list[Retry], messages: list[dict], model: Path, threads: int, load_s: float) -> str:
    on = [r for r in results if r.cache]
    off = [r for r in results if not r.cache]
    lines = [
        "# Prompt cache: what a retry costs",
        "",
        f"`python -m benchmarks.perf.prompt_cache` on CPython {platform.python_version()}, "
        f"{os.cpu_count()} CPUs shared with other work (load average {os.getloadavg()[0]:.1f} at the end), "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Model {model.name}, one llama.cpp server "
        f"(xllamacpp), {threads} thread(s), 1 slot, prompt cache enabled on the server (loaded in {load_s:.1f} s).",
        "",
        "The retry request is a real first attempt: codeloop's system prompt, a data-analysis prompt, the "
        "model's own code (temperature 0) and the feedback codeloop gave after running it (it failed: the CSV "
        f"is not there). {messages[-1]['content'].count(chr(10)) + 1} lines of feedback; the retry prompt is "
        f"{on[0].prompt_tokens} tokens. Each run sends the retry with llama.cpp's per-request `cache_prompt` "
        "true or false (arms alternate); before a cached retry the server's slot is left as the loop leaves it "
        "after the first attempt (holding the prompt and the reply). Evaluated and cached tokens and the prompt "
        "time are the server's `timings`; wall is the whole retry request, including "
        f"{on[0].generated} generated tokens.",
        "",
        "| run | cache_prompt | wall (s) | prompt tokens | evaluated | cached | prompt eval (s) | generation (s) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for index, row in enumerate(results):
        lines.append(
            f"| {index // 2 + 1} | {'true' if row.cache else 'false'} | {row.wall_s:.2f} | "
            f"{row.prompt_tokens} | {row.evaluated} | {row.cached} | {row.prompt_ms / 1000:.2f} | "
            f"{row.generation_ms / 1000:.2f} |"
        )
    saved = 1 - median(on, "wall_s") / median(off, "wall_s")
    lines += [
        "",
        "Medians over the runs:",
        "",
        "| cache_prompt | wall (s) | evaluated | cached | prompt eval (s) | generation (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, rows in (("true", on), ("false", off)):
        lines.append(
            f"| {label} | {median(rows, 'wall_s'):.2f} | {median(rows, 'evaluated'):.0f} | "
            f"{median(rows, 'cached'):.0f} | {median(rows, 'prompt_ms') / 1000:.2f} | "
            f"{median(rows, 'generation_ms') / 1000:.2f} |"
        )
    lines += [
        "",
        f"- With the cache a retry evaluates only its new tokens (the feedback and the chat template's "
        f"markers around it): median wall time **{median(on, 'wall_s'):.2f} s** instead of "
        f"**{median(off, 'wall_s'):.2f} s** ({100 * saved:.0f}% less); the generation part is the same.",
        "",
    ]
    return "\n".join(lines)


def model_file(spec: str) -> Path:
    """A path as is; a catalogue name through the model store (which fetches it if needed)."""
    if "/" in spec or spec.endswith(".gguf"):
        return Path(spec).expanduser()
    from orchestrator.models.files import ModelStore

    return ModelStore.from_env(os.environ).resolve(spec, notify=lambda message: print(message, file=sys.stderr))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL_NAME, help=f"a catalogue name or a .gguf path (default {MODEL_NAME})")
    parser.add_argument("--runs", type=int, default=5, help="retries timed per arm (default 5)")
    parser.add_argument("--first-tokens", type=int, default=600, help="max tokens of the first attempt")
    parser.add_argument("--retry-tokens", type=int, default=32, help="max tokens of the timed retry")
    parser.add_argument("--threads", type=int, default=None, help="server threads (default: codeloop's)")
    parser.add_argument("--no-report", action="store_true", help=f"do not write {REPORT}")
    args = parser.parse_args(argv)
    model = model_file(args.model)
    settings = LlamaServerSettings(
        model_path=str(model.absolute()),
        alias="bench",
        n_ctx=4096,
        **({"threads": args.threads} if args.threads else {}),
    )
    server = LlamaServer(settings)
    started = time.perf_counter()
    asyncio.run(server.start())
    load_s = time.perf_counter() - started
    try:
        client = OpenAI(base_url=server.base_url, api_key="no-key", max_retries=0, timeout=900)
        results, messages = run(client, args.runs, args.first_tokens, args.retry_tokens)
    finally:
        server.close()
    text = report(results, messages, model, settings.threads, load_s)
    print(text)
    if not args.no_report:
        REPORT.write_text(text, encoding="utf-8")
        print(f"report: {REPORT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
