"""Real-model runs: their report, and their replay from cassettes.

A real run is an ordinary ``codeloop bench`` run with ``--record CASSETTE``.
``collect`` keeps what it measured (the bench's config and metrics, and the
cassette's path) under ``benchmarks/reports/real-models/NAME.json`` and writes
``benchmarks/reports/real-models.md`` with the maker's published figures
beside ours. ``replay`` runs the same benchmark again with the cassette in
place of the model: the model's text is replayed, every execution and score
is live, so the recorded numbers can be reproduced in seconds, offline.

    python -m benchmarks.real_models collect NAME=BENCH_DIR [...]
    python -m benchmarks.real_models replay [NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.models import ReplayModel

from .runner import run_benchmark
from .store import load_scored_runs

REPORTS = Path(__file__).resolve().parent / "reports"
RUNS_DIR = REPORTS / "real-models"
REPORT = REPORTS / "real-models.md"
ROOT = Path(__file__).resolve().parent.parent

# What the models' makers and the self-repair literature publish, to set ours beside.
PUBLISHED = {
    "humaneval": {
        "qwen2.5-coder-0.5b": "61.6% pass@1 (Qwen2.5-Coder technical report, instruct model)",
        "qwen2.5-coder-1.5b": "70.7% pass@1 (Qwen2.5-Coder technical report, instruct model)",
        "self-repair": "+4.9 to +17.1 points with up to 5 repair rounds (arXiv 2604.10508; Self-Debugging, "
        "arXiv 2304.05128)",
    },
}
# The numbers a replay must reproduce exactly.
COMPARED = ("items", "solved", "curve", "ran_code", "ran_code_ok", "loop_solved")


@dataclass
class RealRun:
    name: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    cassette: str  # relative to the repository root
    per_item: list[dict[str, Any]]
    notes: str = ""  # how this run differed from today's defaults, if it did

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config,
            "metrics": self.metrics,
            "cassette": self.cassette,
            "per_item": self.per_item,
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RealRun:
        return cls(
            name=data["name"],
            config=data["config"],
            metrics=data["metrics"],
            cassette=data["cassette"],
            per_item=data.get("per_item", []),
            notes=data.get("notes", ""),
        )

    @property
    def model_key(self) -> str:
        return self.config.get("model", "").removeprefix("local:")


def collect(name: str, bench_dir: Path, cassette: Path) -> RealRun:
    """Keep a finished real-model bench run's numbers under RUNS_DIR."""
    saved = json.loads((bench_dir / "metrics.json").read_text())
    per_item = [
        {
            "id": r.item_id,
            "status": r.run.status.value,
            "correct": r.score.correct,
            "solved_at": r.score.solved_at,
            "executions": len(r.run.attempts),
            "repeats_rejected": r.run.repeats_rejected,
            "tokens": r.run.usage.total_tokens,
            "seconds": round(r.run.wall_time_s, 1),
        }
        for r in load_scored_runs(bench_dir)
    ]
    metrics = {k: v for k, v in saved["metrics"].items() if k != "latencies_s"}
    run = RealRun(
        name=name,
        config=saved["config"],
        metrics=metrics,
        cassette=str(cassette.resolve().relative_to(ROOT)),
        per_item=per_item,
    )
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    (RUNS_DIR / f"{name}.json").write_text(json.dumps(run.to_json(), indent=1) + "\n")
    return run


def load_runs(names: list[str] | None = None) -> list[RealRun]:
    runs = [RealRun.from_json(json.loads(p.read_text())) for p in sorted(RUNS_DIR.glob("*.json"))]
    return [r for r in runs if not names or r.name in names]


async def replay(run: RealRun, bench_dir: Path, executor: str | None = None) -> dict[str, Any]:
    """The run again, with its cassette as the model; returns the new metrics."""
    config = run.config
    data = config.get("data")
    if data and not Path(data).exists():  # recorded on another checkout: the same file in this one
        data = _local_data(data)
    benchmark = config["benchmark"]
    if benchmark.endswith(".jsonl") and not Path(benchmark).exists():
        benchmark = _local_data(benchmark)
    result = await run_benchmark(
        benchmark,
        model=ReplayModel(ROOT / run.cassette),
        bench_dir=bench_dir,
        data=data,
        limit=config.get("limit"),
        executor=executor or config["executor"],
        max_retries=config["max_retries"],
        max_steps=config["max_steps"],
        tools=config.get("tools", "auto"),
        require_code=config.get("require_code", "auto"),
        concurrency=4,
    )
    return result.metrics.to_json()


def _local_data(path: str) -> str:
    """A data path recorded elsewhere, found under this checkout by its tail."""
    parts = Path(path).parts
    for i in range(len(parts)):
        candidate = ROOT.joinpath(*parts[i:])
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError(f"{path} (recorded by the run) is not in this checkout")


def differences(recorded: dict[str, Any], replayed: dict[str, Any]) -> list[str]:
    return [
        f"{key}: recorded {recorded.get(key)!r}, replayed {replayed.get(key)!r}"
        for key in COMPARED
        if recorded.get(key) != replayed.get(key)
    ]


def render(runs: list[RealRun]) -> str:
    lines = [
        "# Real models through the loop",
        "",
        "Measured on this repository's machine (2 cores, no GPU), llama.cpp server from xllamacpp, "
        "temperature 0, seed 0, one item at a time, executor `sandbox`. Every run's model turns are in "
        "the cassette named below; `python -m benchmarks.real_models replay` reproduces the numbers "
        "(live execution and scoring, replayed model text), and so does the test suite.",
        "",
        "| run | model | items | k=0 | k=1 | k=2 | k=3 | k=4 | k=5 | solved | ran code | tokens/item | s/item |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        m = run.metrics
        n = m["items"] or 1
        curve = [f"{100 * c / n:.1f}%" for c in m["curve"][:6]] + [""] * (6 - len(m["curve"][:6]))
        seconds = (m["model_time_s"] + m["execution_time_s"]) / n
        lines.append(
            f"| {run.name} | {run.model_key} | {m['items']} | "
            + " | ".join(curve)
            + f" | {100 * m['solved'] / n:.1f}% | {100 * m['ran_code'] / n:.1f}% | "
            f"{(m['input_tokens'] + m['output_tokens']) / n:.0f} | {seconds:.1f} |"
        )
    lines += [
        "",
        "k = pass rate counting items solved within k refinements (a refinement counts only when it "
        "ran a different program). 'ran code': share of runs with at least one execution.",
        "",
        "## Published figures",
        "",
    ]
    for benchmark, figures in PUBLISHED.items():
        for who, figure in figures.items():
            lines.append(f"- {benchmark}, {who}: {figure}")
    lines += ["", "## Runs", ""]
    for run in runs:
        c = run.config
        lines.append(
            f"- **{run.name}**: `{c['benchmark']}`"
            f"{' (first ' + str(c['limit']) + ')' if c.get('limit') else ''}, model `{c['model']}`, "
            f"cassette `{run.cassette}`" + (f". {run.notes}" if run.notes else "")
        )
    for run in runs:
        lines += [
            "",
            f"### {run.name}: each item",
            "",
            "| item | status | correct | passed at k | executions | repeats rejected | tokens | s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for item in run.per_item:
            k = "" if item["solved_at"] is None else str(item["solved_at"])
            lines.append(
                f"| {item['id']} | {item['status']} | {'yes' if item['correct'] else 'no'} | {k} | "
                f"{item['executions']} | {item['repeats_rejected']} | {item['tokens']} | {item['seconds']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.real_models", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="keep finished bench runs' numbers and rewrite the report")
    c.add_argument("runs", nargs="+", metavar="NAME=BENCH_DIR=CASSETTE")
    r = sub.add_parser("replay", help="replay the kept runs from their cassettes and compare")
    r.add_argument("names", nargs="*")
    r.add_argument("--executor", help="where the replayed code runs (default: as recorded)")
    args = parser.parse_args(argv)
    if args.command == "collect":
        for spec in args.runs:
            name, bench_dir, cassette = spec.split("=", 2)
            collect(name, Path(bench_dir), Path(cassette))
        REPORT.write_text(render(load_runs()))
        print(REPORT.read_text())
        return 0
    failed = 0
    for run in load_runs(args.names or None):
        with tempfile.TemporaryDirectory() as tmp:
            replayed = asyncio.run(replay(run, Path(tmp) / "bench", args.executor))
        diff = differences(run.metrics, replayed)
        failed += bool(diff)
        print(f"{run.name}: " + ("reproduced" if not diff else "DIFFERS\n  " + "\n  ".join(diff)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
