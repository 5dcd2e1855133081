"""A minimal init: fork the real child, forward signals, reap, exit with the child's status.

In a fresh PID namespace (the ``unshare`` level) the first process is the
namespace's init, and the kernel drops every signal sent to it from inside
the namespace that it has no handler for: ``os.kill(os.getpid(),
signal.SIGSEGV)`` in the user's code would do nothing and the run would be
reported OK. So the code never runs as that first process: it runs in a child
of this init, at every level, where signals behave as in any process.

Used in process (``run(child)``: the harness forks itself) or as a script
(``python init.py PROGRAM ARGS...``: a kernel is exec'd in the child).
Standard library only.
"""

from __future__ import annotations

import os
import signal
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: importing typing would cost every run milliseconds
    from collections.abc import Callable
    from typing import NoReturn

# Signals someone outside may send to stop or poke the run; the child gets them instead.
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
CHILD_LOST = 70  # exit status when the child could not be waited for (it never should)


def run(child: Callable[[], int], *, die_with_parent: bool = False) -> NoReturn:
    """Run ``child()`` in a forked process and end this one as that process ended.

    ``die_with_parent``: the child is killed when this init dies (a fork does not
    inherit the parent-death signal the wrapper set; no PID namespace does it here).
    """
    _undumpable()
    pid = os.fork()
    if pid == 0:
        status = CHILD_LOST
        try:
            if die_with_parent:
                _die_with_parent()
            status = child()
        finally:
            os._exit(status)
    for number in FORWARDED:
        signal.signal(number, lambda received, _frame: _forward(pid, received))
    exit_like(reap_until(pid))


def _undumpable() -> None:
    """The code runs as our user: without this it could ptrace-attach to its init (the
    fork inherits it, as the pool's children inherit their zygote's; an exec resets it)."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE


def _die_with_parent() -> None:
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG (ctypes is loaded)
    if os.getppid() != parent:  # the init died before the setting took effect
        os._exit(CHILD_LOST)


def _forward(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except OSError:
        pass  # it has just exited: the reaping loop learns of it


def reap_until(pid: int) -> int | None:
    """Reap every child (orphans come to an init) until ``pid`` ends; return its wait status."""
    while True:
        try:
            reaped, status = os.waitpid(-1, 0)
        except ChildProcessError:
            return None
        if reaped == pid:
            return status


def exit_like(status: int | None) -> NoReturn:
    """Exit as the child did: the same exit code, or death by the same signal.

    A namespace's init cannot die of its own signal, so there it exits with
    128 + N, as a shell reports it (the executor reads that back as signal N).
    """
    if status is None:
        os._exit(CHILD_LOST)
    if not os.WIFSIGNALED(status):
        os._exit(os.waitstatus_to_exitcode(status))
    number = os.WTERMSIG(status)
    if os.getpid() != 1:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the child's crash, not ours: no core file
        signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
        os.kill(os.getpid(), number)
    os._exit(128 + number)


def main(argv: list[str]) -> NoReturn:
    if len(argv) < 2:
        sys.exit("usage: init.py PROGRAM [ARGS...]")
    run(lambda: os.execv(argv[1], argv[1:]))


if __name__ == "__main__":
    main(sys.argv)
