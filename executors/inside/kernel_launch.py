"""Start a kernel under resource limits: ``python kernel_launch.py LIMITS_JSON ARGV...``.

It also asks to be killed when its parent dies (``PR_SET_PDEATHSIG``).

Run as a script between the launcher and the kernel, so the limits apply to
the kernel process and everything it starts, then ``exec`` the kernel in
place (same pid, so interrupts and kills reach it). Standard library only.

A kernel lives across many executions, so there is no CPU-time limit here:
the per-execution wall deadline is enforced by the executor instead.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys

# Run as a script from executors/, so the harness sits beside it (standard library only too).
from harness import cap_rlimit


def apply_kernel_limits(limits: dict) -> None:
    cap_rlimit(resource.RLIMIT_AS, limits.get("memory_bytes"))
    cap_rlimit(resource.RLIMIT_FSIZE, limits.get("file_bytes"))
    cap_rlimit(resource.RLIMIT_NOFILE, limits.get("open_files"))
    cap_rlimit(resource.RLIMIT_CORE, 0)
    # No RLIMIT_NPROC: it counts every process and thread of the user, and a
    # kernel's own threads (heartbeat, IOPub, control) would fail to start on a
    # busy machine.


def die_with_parent() -> None:
    """Be killed when the process that started us dies, even by SIGKILL.

    The setting survives ``exec``, so the sandbox wrapper (and through it the
    kernel) inherits it: no kernel outlives a crashed codeloop. Linux only.
    It fires when the launching *thread* ends, which for jupyter_client is the
    thread running the event loop.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the setting took effect
        os._exit(1)


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.exit("usage: kernel_launch.py LIMITS_JSON KERNEL_ARGV...")
    die_with_parent()
    apply_kernel_limits(json.loads(argv[1]))
    os.execv(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv)
