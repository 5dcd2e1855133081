"""codeloop's benchmark harness: HumanEval, GSM8K and custom JSONL, run
through the batch runner, scored, and reported with refinement curves.

``benchmarks.run("humaneval", model=..., bench_dir=...)`` runs one benchmark
and returns a :class:`BenchResult`; see docs/benchmarks.md.
"""

from .datasets import BenchItem, DatasetError, load_dataset
from .metrics import Metrics, Prices, ScoredRun, compute_metrics
from .runner import BenchResult, build_report, load_bench, run, run_benchmark
from .scoring import Score, ScoringError, extract_answer, numbers_match, parse_number
from .store import BenchStoreError, load_scored_runs

__all__ = [
    "BenchItem",
    "BenchResult",
    "BenchStoreError",
    "DatasetError",
    "Metrics",
    "Prices",
    "Score",
    "ScoredRun",
    "ScoringError",
    "build_report",
    "compute_metrics",
    "extract_answer",
    "load_bench",
    "load_dataset",
    "load_scored_runs",
    "numbers_match",
    "parse_number",
    "run",
    "run_benchmark",
]
