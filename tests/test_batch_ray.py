"""``engine="ray"`` on a local Ray instance gives the same results as the local engine.

Marked slow: starting Ray takes 15-40 s on two shared cores and each batch
starts its own actors (a few seconds more), so one Ray session serves the
whole module and only two batches run on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.batch import BatchStore, run_batch_sync
from orchestrator.models.scripted import ScriptedModel

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

# The code depends on the prompt (read from an input file), so results differ per item
# and a mix-up between items would show.
CODE = (
    "```python\nimport pathlib\nn = int(pathlib.Path('n.txt').read_text())\n"
    "if n % 5 == 0:\n    raise ValueError(f'{n} is a multiple of five')\nprint(n * n)\n```"
)


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def make_batch(tmp_path: Path, count: int) -> tuple[Path, Path]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps([CODE, CODE, "the code kept failing"]))
    lines = []
    for n in range(1, count + 1):
        folder = tmp_path / "inputs" / str(n)
        folder.mkdir(parents=True)
        (folder / "n.txt").write_text(str(n))
        lines.append(json.dumps({"id": f"n{n}", "prompt": f"square {n}", "files": [f"inputs/{n}/n.txt"]}))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    return script, prompts


def comparable(run_dir: Path) -> dict[str, tuple]:
    with BatchStore(run_dir) as store:
        out = {}
        for record in store.records():
            result = store.result(record.id)
            out[record.id] = (
                record.status,
                result.status,
                result.summary,
                result.error,
                [(a.code, a.result.outcome, a.result.stdout, a.result.error_type) for a in result.attempts],
                result.usage.requests,
                result.usage.input_tokens,
                result.usage.output_tokens,
            )
        return out


def test_ray_engine_matches_the_local_engine(ray_session, tmp_path: Path) -> None:
    script, prompts = make_batch(tmp_path, 12)
    options = dict(
        model=f"scripted:{script}",
        executor="local",
        executor_options={"max_concurrency": 2},
        concurrency=4,
        execution_concurrency=2,
        max_retries=1,
    )
    local = run_batch_sync(prompts, run_dir=tmp_path / "local", **options)
    remote = run_batch_sync(prompts, run_dir=tmp_path / "ray", engine="ray", ray_workers=2, **options)
    assert sorted(i for i, _ in local) == sorted(i for i, _ in remote) == sorted(f"n{n}" for n in range(1, 13))
    local_rows, ray_rows = comparable(tmp_path / "local"), comparable(tmp_path / "ray")
    assert ray_rows == local_rows
    assert ray_rows["n4"][4][0][2] == "16\n" and ray_rows["n5"][1].value == "failed"
    with BatchStore(tmp_path / "ray") as store:
        assert store.settings()["engine"] == "ray"
        assert {r.starts for r in store.records()} == {1}


class StormModelDouble:
    """Test double: its first ``storm`` calls (per copy: each Ray actor gets its own) answer 429.
    Shipped to the workers as an object, not a model string."""

    name = "storm-double"

    def __init__(self, storm: int) -> None:
        self.inner = ScriptedModel(["```python\nprint(2 + 2)\n```", "4"])
        self.storm = storm
        self.calls = 0

    async def generate(self, conversation, tools=()):
        from orchestrator.models.base import RateLimitError

        self.calls += 1
        if self.calls <= self.storm:
            raise RateLimitError("429 Too Many Requests")
        return await self.inner.generate(conversation, tools)


def test_ray_workers_get_a_model_object_and_back_off_429s(ray_session, tmp_path: Path) -> None:
    import sys

    from ray import cloudpickle

    from orchestrator.batch import BackoffPolicy

    # Ship this module's double by value: Ray workers cannot import test modules.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        pairs = dict(
            run_batch_sync(
                [f"p{k}" for k in range(10)],
                model=StormModelDouble(storm=3),
                executor="local",
                run_dir=tmp_path,
                engine="ray",
                ray_workers=2,
                concurrency=4,
                backoff=BackoffPolicy(base_delay_s=0.05, max_delay_s=0.5),
            )
        )
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert len(pairs) == 10 and {r.status.value for r in pairs.values()} == {"solved"}
    with BatchStore(tmp_path) as store:
        assert sum(r.rate_limited for r in store.records()) == 6  # three per actor, each waited out and retried
