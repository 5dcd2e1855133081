"""The zygote's warm-up: work a kernel does once and a forked child would
repeat (imports, lazily built state, the first draw), done before forking;
and the rehearsal a spare runs while it waits for its request.

Runs inside the sandbox, loaded by the zygote by path: standard library only
(the libraries it warms are already imported, and are found in sys.modules).
"""

from __future__ import annotations

import importlib
import io
import sys


def preload(names: list[str]) -> list[str]:
    """Import the libraries children will want; return what failed, with why."""
    failures = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional library must not stop the pool
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    warm_up_libraries()
    return failures


def warm_up_libraries() -> None:
    """Do once, in the zygote, the lazy first-use work every child would repeat.

    Each line is something a forked child measurably paid for on first use
    (times from a child of a warm zygote, before this warm-up): numpy's lazily
    imported fft (30 ms), pandas' CSV parser (16 ms), datetime parsing (28 ms)
    and plotting bridge (136 ms), pyplot's first bar and histogram (50 ms),
    sympy's solver and integrator (70 and 220 ms). Also font loading and PNG
    rendering, BLAS start-up and the groupby machinery.
    """
    for step in _warm_up_steps():
        try:
            step()
        except Exception as exc:  # warm-up is an optimisation; never fatal
            print(f"codeloop zygote: warm-up step failed: {exc!r}", file=sys.stderr)


def _warm_up_steps() -> list:
    np, pd, plt, sp = (sys.modules.get(name) for name in ("numpy", "pandas", "matplotlib.pyplot", "sympy"))
    steps = []
    if np is not None:
        steps += [
            lambda: np.ones((8, 8)) @ np.ones((8, 8)),
            lambda: (np.random.rand(4), np.random.default_rng(0).random(4)),
            lambda: (np.fft.fft(np.ones(8)), np.linalg.solve(np.eye(3), np.ones(3))),
        ]
    if pd is not None:
        steps += [
            lambda: pd.DataFrame({"k": [1, 2, 1], "v": [1.0, 2.0, 3.0]}).groupby("k")["v"].agg(["mean", "sum"]),
            lambda: pd.read_csv(io.StringIO("a,b,when\n1,x,2024-01-02\n2,y,2024-02-03"), parse_dates=["when"]),
            lambda: (pd.to_datetime(["2024-01-01", "2024-02-01"]), pd.DataFrame({"a": [1.0, 2.0]}).describe()),
        ]
    if plt is not None:
        steps.append(_warm_up_pyplot(plt, pd))
    if sp is not None:
        x = sp.Symbol("x")
        steps += [
            lambda: sp.simplify(x**2 - x**2),
            lambda: (sp.solve(x**2 - 4, x), sp.integrate(x**2, x), sp.factor(x**2 - 1)),
        ]
    return steps


def _warm_up_pyplot(plt, pd):
    """The first figure of each common kind, drawn and saved as PNG."""

    def draw() -> None:
        fig, axes = plt.subplots(1, 3)
        axes[0].plot([0, 1], [0, 1], label="warm")
        axes[0].set_title("warm-up")
        axes[0].legend()
        axes[1].bar(["a", "b"], [1, 2])
        axes[2].hist([1, 2, 2, 3])
        axes[2].scatter([1, 2], [3, 4])
        if pd is not None:
            pd.DataFrame({"a": [1, 2]}).plot(ax=axes[0])
        fig.savefig(io.BytesIO(), format="png")
        plt.close(fig)

    return draw


def rehearsal_steps(harness, libraries: bool) -> list:
    """A tiny version of what a request will do: the harness's own path and
    (with ``libraries``) small numpy and pandas workloads."""
    steps = [lambda: harness.prepare_matplotlib(lambda: None), harness.reseed, lambda: harness.execute("pass")]
    np, pd = sys.modules.get("numpy"), sys.modules.get("pandas")
    if libraries and np is not None:
        steps.append(lambda: np.random.rand(8, 8) @ np.random.rand(8, 8))
        if pd is not None:
            frame = {"k": [0, 1, 2] * 10, "v": [float(i) for i in range(30)]}
            steps.append(lambda: pd.DataFrame(frame).groupby("k")["v"].agg(["mean", "sum"]))
    return steps


def rehearse(steps: list, request_waiting) -> None:
    """Run ``steps`` in a fresh spare before its request arrives, stopping as soon as it does.

    A fork shares the zygote's pages copy-on-write, so the first run in a child
    takes thousands of page faults on the objects, allocator arenas and caches it
    touches: a forked pandas run was three times slower than the same run in a
    warm kernel. Taking those faults while the spare waits moves them off the
    request's path. Nothing here writes a file or leaves state a request sees:
    the request's own harness run reseeds, closes figures and re-patches pyplot.
    (A first draw is left out: at tens of milliseconds it would delay a request
    arriving meanwhile by more than it saves.)
    """
    for step in steps:
        if request_waiting():
            return
        try:
            step()
        except Exception:  # an optimisation only: the request runs the same either way
            return
