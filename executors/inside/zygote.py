"""The pool's fork server, run inside the sandbox: preload once, fork per execution.

Started as a script (``python zygote.py CONFIG_JSON``) inside the same
isolation wrapper as the ``sandbox`` executor, so the zygote and every child it
forks live in the sandbox's namespaces. It imports the heavy libraries once,
freezes the garbage collector's view of them (so forks share those pages), and
then serves one execution at a time over a SOCK_SEQPACKET control socket:

- after start-up and after every execution the zygote forks the next child
  (a "spare") and sends the orchestrator ``{"op": "spare"}`` with a socket to
  that child attached (SCM_RIGHTS). The spare has its own session, dies with
  the zygote, and blocks until the orchestrator sends it the request together
  with the write ends of the execution's stdout, stderr and report pipes, whose
  read ends stay with the orchestrator. So a request waits neither for a fork
  nor for the zygote to relay it, output never passes through the zygote, and
  each execution has its own streams. The child points fd 1/2 at the pipes,
  chdirs into the execution's directory and calls ``harness.run_in_child``
  (limits, reseed, figure capture, report).
- the orchestrator also sends the zygote ``{"op": "run", "id", "timeout_s"}``;
  the zygote waits on the child's pidfd with that deadline, honours
  ``{"op": "kill"}`` (output floods), then kills every remaining descendant (it
  is a child subreaper, or the namespace's PID 1, so escapees come back to it),
  reaps them, and answers ``{"op": "done", ...}`` with the child's ``wait4``
  status and rusage and the RSS the fork inherited.
- the answer always waits for the child's exit: the status must be the
  kernel's. A message from the child saying its run is over could be written
  by the code itself (it runs in that process), so it cannot be trusted.

Every message is a 4-byte big-endian length followed by that many bytes of
JSON. Only the standard library is needed before the preload step.
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import importlib.util
import io
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
HEADER = struct.Struct(">I")
MAX_MESSAGE = 1024 * 1024
CHILD_INTERNAL_ERROR = 70  # exit status when the child failed before running the code

# Python objects through glibc malloc, with transparent huge pages where the
# kernel allows them (madvise mode): the preloaded heap then needs far fewer page
# table entries, which roughly halves the cost of each fork and each child's exit.
FAST_FORK_ENV = {"PYTHONMALLOC": "malloc", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}

_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}) failed: {os.strerror(err)}")


def encode(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return HEADER.pack(len(body)) + body


def decode(frame: bytes) -> dict:
    if len(frame) < HEADER.size:
        raise ValueError("short frame")
    (length,) = HEADER.unpack_from(frame)
    body = frame[HEADER.size :]
    if length != len(body):
        raise ValueError(f"frame length {length} does not match {len(body)} bytes received")
    return json.loads(body)


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def anon_rss_bytes() -> int:
    """Anonymous resident memory: what a fork inherits into its RSS at once.

    File-backed pages (library code) are not copied into the child's page
    tables at fork; they only count once the child touches them.
    """
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return rss_bytes()


def vm_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def load_module(name: str, path: str):
    """Import one of codeloop's child-side files by path, without its package."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {name} from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Loaded by path, like the harness: the zygote runs as a script, without its package.
_HERE = os.path.dirname(os.path.abspath(__file__))
WARM = load_module("codeloop_warm", os.path.join(_HERE, "warm.py"))
CLEANUP = load_module("codeloop_cleanup", os.path.join(_HERE, "cleanup.py"))


def take_streams(out_fd: int, err_fd: int) -> None:
    """Make the request's pipes this child's stdout and stderr (stdin: /dev/null)."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    for fd in (devnull, out_fd, err_fd):
        os.close(fd)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False), encoding="utf-8", errors="backslashreplace", write_through=True
    )
    sys.stderr = io.TextIOWrapper(
        io.FileIO(2, "w", closefd=False), encoding="utf-8", errors="backslashreplace", write_through=True
    )
    # typeshed marks them Final; the child's originals must be these.
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr  # type: ignore[misc]


def enter_workdir(workdir: str) -> None:
    """Run as a fresh ``python main.py`` in the execution's work dir would."""
    os.chdir(workdir)
    os.environ["HOME"] = workdir
    os.environ["TMPDIR"] = workdir
    sys.path.insert(0, workdir)
    sys.argv = ["main.py"]


class Spare:
    """A child forked ahead of time, blocked until the orchestrator hands it a request."""

    def __init__(self, pid: int, baseline_rss: int) -> None:
        self.pid = pid
        self.baseline_rss = baseline_rss  # the RSS the fork inherited, subtracted from its peak


class Zygote:
    def __init__(self, config: dict) -> None:
        self.config = config
        self.control = socket.socket(fileno=int(config["control_fd"]))
        self.control.setblocking(True)
        self.harness: Any = None  # modules loaded by path: their attributes are not known statically
        self.policy: Any = None
        self.is_init = os.getpid() == 1  # PID 1 of a fresh PID namespace

    # -- start-up ---------------------------------------------------------
    def start(self) -> None:
        try:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except OSError:
            pass
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        # Children run as our user: non-dumpable, we cannot be ptrace-attached or have
        # /proc/<pid>/mem read by them (forks inherit this, so neither can each other).
        prctl(PR_SET_DUMPABLE, 0)
        os.environ.update(self.config.get("env", {}))
        self.harness = load_module("codeloop_harness", self.config["harness_path"])
        failures = WARM.preload(self.config.get("preload", []))
        if self.config.get("policy_path"):
            self.policy = load_module("codeloop_restricted_policy", self.config["policy_path"])
            self.policy.warm_up()
        # The user's code must not find codeloop's own files on its import path.
        own_dir = os.path.dirname(os.path.abspath(__file__))
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != own_dir]
        gc.collect()
        gc.freeze()  # keep the preloaded objects out of the collector: fewer copied pages per fork
        self.send(
            {
                "op": "ready",
                "pid": os.getpid(),
                "init": self.is_init,
                "rss": rss_bytes(),
                "preload_failures": failures,
            }
        )

    def send(self, message: dict) -> None:
        self.control.sendall(encode(message))

    # -- serving ----------------------------------------------------------
    def serve(self) -> None:
        spare = self.fork_spare()
        while True:
            try:
                frame = self.control.recv(MAX_MESSAGE)
            except InterruptedError:
                continue
            if not frame:
                return  # the orchestrator closed the pool
            message = decode(frame)
            if message.get("op") == "kill":
                continue  # a flood noticed just as the run ended: nothing left to stop
            if message.get("op") != "run":
                self.send({"op": "error", "id": message.get("id"), "error": f"unexpected {message.get('op')!r}"})
                continue
            verdict = self.run(spare, message)
            self.send(verdict)
            # Before the next child exists: nothing one execution leaves in the
            # sandbox's private /tmp may reach the next.
            for directory in self.config.get("scratch_dirs", ()):
                CLEANUP.empty_directory(directory)
            spare = self.fork_spare()

    def fork_spare(self) -> Spare:
        """Fork the next child ahead of time and hand the orchestrator a socket to it.

        The orchestrator sends the request straight to the child, so a request
        neither waits for a fork nor for the zygote to be scheduled and relay it.
        """
        baseline, address_space = anon_rss_bytes(), vm_bytes()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            self.child(theirs, address_space)  # never returns
        theirs.close()
        try:
            socket.send_fds(self.control, [encode({"op": "spare", "pid": pid})], [ours.fileno()])
        finally:
            ours.close()
        return Spare(pid, baseline)

    def run(self, spare: Spare, request: dict) -> dict:
        start = time.monotonic()
        status, usage, timed_out, killed = self.supervise(spare.pid, start + float(request["timeout_s"]), request["id"])
        return {
            "op": "done",
            "id": request["id"],
            "status": status,
            "maxrss_kb": usage.ru_maxrss if usage else None,
            "cpu_time_s": (usage.ru_utime + usage.ru_stime) if usage else None,
            "timed_out": timed_out,
            "killed_on_request": killed,
            "duration_s": time.monotonic() - start,
            "baseline_rss": spare.baseline_rss,
        }

    def supervise(self, pid: int, deadline: float, request_id: str):
        """Wait for the child, the deadline or a kill order; then clear the tree."""
        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        poller.register(self.control.fileno(), select.POLLIN)
        timed_out = killed = False
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                events = poller.poll(max(1, int(remaining * 1000)))
                if any(fd == pidfd for fd, _ in events):
                    break
                if any(fd == self.control.fileno() for fd, _ in events):
                    frame = self.control.recv(MAX_MESSAGE)
                    if not frame:
                        os._exit(0)  # the orchestrator is gone: the namespace dies with us
                    message = decode(frame)
                    if message.get("op") == "kill" and message.get("id") == request_id:
                        killed = True
                        break
        finally:
            poller.unregister(pidfd)
            os.close(pidfd)
        status, usage = self.clear_tree(pid)
        return status, usage, timed_out, killed

    def clear_tree(self, pid: int):
        """SIGKILL the child's group and every descendant left; reap them all."""
        status = usage = None
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        for _ in range(200):
            victims = CLEANUP.descendants(os.getpid())
            if not victims:
                break
            if self.is_init:
                try:
                    os.kill(-1, signal.SIGKILL)  # everything in our PID namespace but us
                except OSError:
                    pass
            for victim in victims:
                try:
                    os.kill(victim, signal.SIGKILL)
                except OSError:
                    pass
            while True:
                try:
                    reaped, raw, rusage = os.wait4(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if reaped == 0:
                    time.sleep(0.0005)
                    break
                if reaped == pid:
                    status, usage = raw, rusage
        if status is None:
            try:
                _, status, usage = os.wait4(pid, 0)
            except ChildProcessError:
                pass
        return status, usage

    # -- the forked child -------------------------------------------------
    def child(self, sock: socket.socket, address_space: int) -> None:
        status = CHILD_INTERNAL_ERROR
        try:
            os.setsid()
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            self.control.close()
            if self.config.get("rehearse"):
                waiting = select.poll()
                waiting.register(sock, select.POLLIN)
                WARM.rehearse(
                    WARM.rehearsal_steps(self.harness, bool(self.config.get("preload"))), lambda: bool(waiting.poll(0))
                )
            frame, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, 3)
            sock.close()
            if not frame or len(fds) != 3:
                os._exit(0)  # the zygote is shutting down or recycling
            request = decode(frame)
            out_fd, err_fd, report_fd = fds
            limits = dict(request.get("limits") or {})
            if limits.get("memory_bytes"):
                # The child inherits the zygote's address space: the budget is on top of it.
                limits["memory_bytes"] = address_space + int(limits["memory_bytes"])
            take_streams(out_fd, err_fd)
            enter_workdir(request["workdir"])
            code = request.get("code")
            if code is None:
                with open(request["code_path"], encoding="utf-8") as fh:
                    code = fh.read()
            compile_fn = namespace = None
            if request.get("mode") == "restricted":
                if self.policy is None:
                    raise RuntimeError("this pool was started without the restricted policy")
                compile_fn, namespace = self.policy.compile_restricted_exec, self.policy.build_namespace()
            config = {"limits": limits, "reseed": True}
            status = self.harness.run_in_child(config, code, report_fd, compile_fn=compile_fn, namespace=namespace)
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:
                pass
        except BaseException as exc:  # the harness never raises; this is codeloop's own failure
            try:
                os.write(2, f"codeloop pool child failed before running the code: {exc!r}\n".encode())
            except OSError:
                pass
        finally:
            os._exit(status)


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    if config.get("fast_fork") and any(os.environ.get(k) != v for k, v in FAST_FORK_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **FAST_FORK_ENV})
    zygote = Zygote(config)
    zygote.start()
    zygote.serve()
    return 0


if __name__ == "__main__":
    os._exit(main(sys.argv))
