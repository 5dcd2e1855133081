"""Start a kernel under resource limits: ``python kernel_launch.py LIMITS_JSON ARGV...``.

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
import sys


def apply_kernel_limits(limits: dict) -> None:
    def cap(which: int, value: int | None) -> None:
        if value is None:
            return
        soft, hard = resource.getrlimit(which)
        new_hard = value if hard == resource.RLIM_INFINITY else min(value, hard)
        try:
            resource.setrlimit(which, (min(value, new_hard), new_hard))
        except (ValueError, OSError):
            pass  # a lower limit is already in force

    cap(resource.RLIMIT_AS, limits.get("memory_bytes"))
    cap(resource.RLIMIT_FSIZE, limits.get("file_bytes"))
    cap(resource.RLIMIT_NOFILE, limits.get("open_files"))
    cap(resource.RLIMIT_CORE, 0)
    # No RLIMIT_NPROC: it counts every process and thread of the user, and a
    # kernel's own threads (heartbeat, IOPub, control) would fail to start on a
    # busy machine.


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.exit("usage: kernel_launch.py LIMITS_JSON KERNEL_ARGV...")
    apply_kernel_limits(json.loads(argv[1]))
    os.execv(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv)
