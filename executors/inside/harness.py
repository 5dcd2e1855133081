"""The child side of every process executor: run one piece of code and report.

This file is run as a script (``python harness.py CONFIG_JSON``) inside the
child process, so it imports nothing from codeloop and only the standard
library at start-up; run so, it forks under ``init.py`` first. It can also be imported by a pre-warmed zygote, which
calls :func:`run_in_child` after forking.

What it does, in order: apply resource limits, reseed random state, make
matplotlib headless and capturing, run the code as ``__main__`` with a
traceback that shows only the user's frames, save open figures as PNG files
in the working directory, and write a JSON report to the result descriptor.
Stdout and stderr are left to the parent, which captures and caps them.
"""

from __future__ import annotations

import json
import linecache
import os
import struct
import sys
import traceback
import warnings

CODE_FILENAME = "<code>"
MAX_TRACEBACK_CHARS = 8000


def cap_rlimit(which: int, value: int | None) -> None:
    """Lower one rlimit (soft and hard) to ``value``; never raise it."""
    import resource

    if value is None:
        return
    _soft, hard = resource.getrlimit(which)
    new_hard = value if hard == resource.RLIM_INFINITY else min(value, hard)
    try:
        resource.setrlimit(which, (min(value, new_hard), new_hard))
    except (ValueError, OSError):
        pass  # a lower limit is already in force


def apply_limits(limits: dict) -> None:
    """Set rlimits on this process (inherited by anything it starts)."""
    import resource

    timeout = limits.get("timeout_s") or 30
    cpu = limits.get("cpu_s") or timeout + 2
    cap_rlimit(resource.RLIMIT_CPU, int(cpu) + 1)
    cap_rlimit(resource.RLIMIT_AS, limits.get("memory_bytes"))
    cap_rlimit(resource.RLIMIT_FSIZE, limits.get("file_bytes"))
    cap_rlimit(resource.RLIMIT_NOFILE, limits.get("open_files"))
    cap_rlimit(resource.RLIMIT_CORE, 0)
    if os.geteuid() != 0:  # RLIMIT_NPROC is not enforced for root
        cap_rlimit(resource.RLIMIT_NPROC, limits.get("max_processes"))


def reseed() -> None:
    """A forked child shares its parent's random state: give it its own."""
    import random

    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(int.from_bytes(os.urandom(4), "little"))


def _figure_saver():
    """Return a function that saves every open matplotlib figure as PNG."""
    counter = {"n": 0}

    def save_open_figures() -> None:
        plt = sys.modules.get("matplotlib.pyplot")
        if plt is None:
            return
        for num in list(plt.get_fignums()):
            fig = plt.figure(num)
            if getattr(fig, "_codeloop_saved", False):
                plt.close(fig)  # the code saved it where it wanted; no second copy
                continue
            counter["n"] += 1
            name = f"figure_{counter['n']}.png"
            while os.path.exists(name):
                counter["n"] += 1
                name = f"figure_{counter['n']}.png"
            try:
                fig.savefig(name, format="png")
            except Exception as exc:  # a broken figure must not hide the run's result
                print(f"codeloop: could not save figure {num}: {exc}", file=sys.stderr)
            plt.close(fig)

    return save_open_figures


def _patch_pyplot(plt, save_open_figures) -> None:
    """``plt.show()`` saves figures instead of blocking; figures the code saved
    itself are not captured a second time."""
    Figure = sys.modules["matplotlib.figure"].Figure  # imported by pyplot; the harness itself imports no library

    plt.show = lambda *args, **kwargs: save_open_figures()
    original = Figure.savefig
    if getattr(original, "_codeloop", False):
        return

    def savefig(self, *args, **kwargs):
        self._codeloop_saved = True
        return original(self, *args, **kwargs)

    savefig._codeloop = True  # type: ignore[attr-defined]  # marks the patch so it is applied once
    Figure.savefig = savefig


class _PyplotHook:
    """Patches matplotlib.pyplot the moment the code imports it (cold children)."""

    def __init__(self, save_open_figures) -> None:
        self.save_open_figures = save_open_figures

    def find_spec(self, name, path=None, target=None):
        if name != "matplotlib.pyplot":
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            _patch_pyplot(module, self.save_open_figures)

        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]  # this one spec's loader, wrapped
        return spec


def prepare_matplotlib(save_open_figures) -> None:
    """Headless backend, ``plt.show()`` captures, open figures saved at the end."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    warnings.filterwarnings("ignore", message=".*non-interactive.*")
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:  # preloaded by a zygote
        plt.close("all")
        _patch_pyplot(plt, save_open_figures)
    else:
        sys.meta_path.insert(0, _PyplotHook(save_open_figures))


def _user_traceback(exc: BaseException) -> str:
    """Format the traceback keeping only frames from the user's code."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != CODE_FILENAME:
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    if len(text) > MAX_TRACEBACK_CHARS:
        text = text[: MAX_TRACEBACK_CHARS // 2] + "\n[... traceback trimmed ...]\n" + text[-MAX_TRACEBACK_CHARS // 2 :]
    return text


def execute(code: str, compile_fn=None, namespace: dict | None = None) -> dict:
    """Run ``code`` as ``__main__``; return the report (never raises)."""
    report: dict = {"error_type": None, "error_message": None, "traceback": None, "exit_code": 0}
    linecache.cache[CODE_FILENAME] = (len(code), None, code.splitlines(True), CODE_FILENAME)
    ns = namespace if namespace is not None else {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        compiled = (compile_fn or compile)(code, CODE_FILENAME, "exec")
        exec(compiled, ns)
    except SystemExit as exc:
        code_ = exc.code
        if code_ is None or code_ == 0:
            report["exit_code"] = 0
        else:
            report["exit_code"] = code_ if isinstance(code_, int) else 1
            report["error_type"] = "SystemExit"
            report["error_message"] = str(code_)
            if not isinstance(code_, int):
                print(code_, file=sys.stderr)
    except BaseException as exc:  # report everything, including KeyboardInterrupt
        text = _user_traceback(exc)
        sys.stderr.write(text)
        report.update(
            error_type=type(exc).__name__,
            error_message=str(exc)[:2000],
            traceback=text,
            exit_code=1,
            # numpy raises a private MemoryError subclass: say what it is, not just its name.
            memory_error=isinstance(exc, MemoryError),
        )
    return report


def _usage() -> dict:
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "cpu_time_s": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
        # bwrap's PID-1 reaper hides the child from the parent's wait4, so say it here too.
        "peak_memory_bytes": max(me.ru_maxrss, kids.ru_maxrss) * 1024,
    }


# The report is framed by a length prefix: a report cut short (the code closed
# or scribbled on the descriptor, the child died mid-write) is detected as such.
REPORT_HEADER = struct.Struct(">I")


def encode_report(report: dict) -> bytes:
    data = json.dumps(report).encode()
    return REPORT_HEADER.pack(len(data)) + data


def decode_report(raw: bytes) -> dict | None:
    """The report, or None when it is missing, cut short, padded or not ours."""
    if len(raw) < REPORT_HEADER.size:
        return None
    (length,) = REPORT_HEADER.unpack_from(raw)
    if len(raw) != REPORT_HEADER.size + length:
        return None
    try:
        report = json.loads(raw[REPORT_HEADER.size :])
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def write_report(fd: int, report: dict) -> None:
    view = memoryview(encode_report(report))
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.close(fd)


def run_in_child(config: dict, code: str, result_fd: int, compile_fn=None, namespace=None) -> int:
    """Everything the child does; returns the exit status to use."""
    if config.get("limits"):
        apply_limits(config["limits"])
    if config.get("reseed"):
        reseed()
    save_open_figures = _figure_saver()
    prepare_matplotlib(save_open_figures)
    report = execute(code, compile_fn=compile_fn, namespace=namespace)
    try:
        save_open_figures()
    except Exception as exc:
        print(f"codeloop: figure capture failed: {exc}", file=sys.stderr)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    report.update(_usage())
    try:
        write_report(result_fd, report)
    except OSError:
        pass  # the parent went away or the code closed our descriptor
    return int(report["exit_code"]) if isinstance(report["exit_code"], int) else 1


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    with open(config["code_path"], encoding="utf-8") as fh:
        code = fh.read()
    if config.get("workdir"):
        os.chdir(config["workdir"])
    sys.path.insert(0, os.getcwd())
    sys.argv = ["main.py"]
    return run_in_child(config, code, int(config["result_fd"]))


def load_sibling(name: str, alias: str):
    """Run one of the files beside this one as module ``alias`` (not on the code's import path).

    By hand rather than through importlib, whose import costs every run milliseconds.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    module = type(sys)(alias)
    module.__file__ = path
    sys.modules[alias] = module
    with open(path, encoding="utf-8") as fh:
        exec(compile(fh.read(), path, "exec"), module.__dict__)
    return module


def main_and_flush(argv: list[str]) -> int:
    status = main(argv)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)


if __name__ == "__main__":
    # Drop the harness's own directory from the import path: the user's code
    # must not import codeloop's modules by accident.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    # The code runs in a child of a minimal init, never as a PID namespace's first process.
    load_sibling("init.py", "codeloop_init").run(
        lambda: main_and_flush(sys.argv), die_with_parent=bool(json.loads(sys.argv[1]).get("die_with_parent"))
    )
