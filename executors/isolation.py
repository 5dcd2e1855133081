"""Wrap a child's command line in the strongest isolation this machine offers.

Three levels, strongest first (see :class:`executors.base.Isolation`):

``bwrap``
    bubblewrap: new mount, PID, network, IPC and UTS namespaces; the host's
    system directories and the interpreter are mounted read-only, the working
    directory is the only writable host path, ``/tmp`` is a private size-capped
    tmpfs, and the sandbox dies with its parent.
``unshare``
    util-linux ``unshare``: network, PID and mount namespaces with a private
    ``/tmp``, but the host filesystem stays visible (protected only by file
    permissions of the sandbox user).
``rlimits``
    resource limits only (set by the child harness): no boundary at all.

Root needs care: the kernel never enforces ``RLIMIT_NPROC`` for user id 0,
not even when that id is reached through a user namespace. So when we are
root the sandbox runs in no user namespace and the child drops to an
unprivileged user (65534) with ``setpriv`` before the interpreter starts; a
fork bomb then meets its process limit. As an ordinary user, bwrap and
unshare use a user namespace and the child keeps our uid.

The level is detected once per :class:`Isolator` by really running the
interpreter under each candidate, strongest first.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ._paths import closed_ancestors, mkdirs_args, outermost, under_any
from .base import Isolation

SANDBOX_ROOT = "/sandbox"
SANDBOX_WORK = "/sandbox/work"
SANDBOX_UID = 65534  # "nobody" on Debian and most distributions; uid and gid

# What each level promises. Tests and documentation read these; nothing else
# should guess from the level's name.
NO_NETWORK = "no_network"  # no interface but a private loopback
PROCESS_TREE = "process_tree"  # own PID namespace: nothing outlives the run
PRIVATE_TMP = "private_tmp"  # /tmp, /var/tmp, /dev/shm are private
HOST_FILES = "host_files"  # nothing of the host is visible but read-only system dirs and the mounts
HOST_SECRETS = "host_secrets"  # host files the sandbox user may not read or write stay so (it is not you)
PROCESS_LIMIT = "process_limit"  # RLIMIT_NPROC is enforced (the child is not uid 0)

# The scratch directories a PRIVATE_TMP level replaces with its own empty tmpfs.
PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")

# System paths the interpreter and common libraries need, mounted read-only.
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Only the pieces of /etc that loaders and libraries read; never passwd/shadow.
ETC_PATHS = (
    "/etc/alternatives",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/fonts",
    "/etc/mime.types",
    "/etc/ssl/certs",
)

# The probe checks the interpreter found its own standard library: one that
# cannot read its prefix silently falls back to another Python's.
PROBE_CODE = "import sys, json; sys.stdout.write(json.dumps([sys.prefix, sys.base_prefix, json.__file__]))"
PROBE_TIMEOUT_S = 20.0


class IsolationUnavailable(RuntimeError):
    """The requested isolation cannot be had on this machine."""


@dataclass(frozen=True)
class Mount:
    """A host path made visible inside the sandbox (read-only unless ``writable``)."""

    source: str
    target: str
    writable: bool = False


@dataclass(frozen=True)
class SandboxView:
    """How host paths appear to the child: its working directory and its mounts."""

    work_dir: str
    mounts: tuple[Mount, ...] = ()

    def inside(self, host_path: str | Path) -> str:
        """Where ``host_path`` (a mount source or a path below one) appears in the child."""
        host = os.path.abspath(host_path)
        for m in sorted(self.mounts, key=lambda m: len(m.source), reverse=True):
            if host == m.source or host.startswith(m.source.rstrip("/") + "/"):
                return m.target + host[len(m.source) :]
        return host


@dataclass(frozen=True)
class SandboxCommand:
    """Everything needed to start the wrapped child: hand it to ``run_process``."""

    argv: list[str]
    env: dict[str, str]
    cwd: str  # host directory to start the wrapper in
    view: SandboxView

    @property
    def work_dir(self) -> str:
        """The working directory as the child sees it."""
        return self.view.work_dir

    def inside(self, host_path: str | Path) -> str:
        return self.view.inside(host_path)


@dataclass
class Isolator:
    """Builds wrapped command lines at one isolation level, detected once.

    ``level_request`` forces a level (an :class:`Isolation` or its value);
    ``None`` picks the strongest that works. ``strict`` refuses to run without a real
    boundary (bwrap or unshare). ``tmp_bytes`` caps the private ``/tmp``.
    """

    level_request: Isolation | str | None = None
    strict: bool = False
    python: str = field(default_factory=lambda: sys.executable)
    tmp_bytes: int = 256 * 1024**2
    bwrap_path: str | None = field(default_factory=lambda: shutil.which("bwrap"))
    unshare_path: str | None = field(default_factory=lambda: shutil.which("unshare"))
    setpriv_path: str | None = field(default_factory=lambda: shutil.which("setpriv"))
    _level: Isolation | None = field(default=None, init=False, repr=False)
    _failures: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    _drop_user: bool = field(default=False, init=False, repr=False)
    _expected_prefixes: bytes | None = field(default=None, init=False, repr=False)
    _interpreter_dirs: list[str] | None = field(default=None, init=False, repr=False)
    _detect_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.level_request is not None:
            req = Isolation(self.level_request)
            if req not in (Isolation.BWRAP, Isolation.UNSHARE, Isolation.RLIMITS):
                raise ValueError(f"isolation level must be bwrap, unshare or rlimits, not {req.value!r}")
            if self.strict and req is Isolation.RLIMITS:
                raise ValueError("strict mode needs a real boundary: isolation level 'rlimits' is not one")
            self.level_request = req

    # -- detection -------------------------------------------------------

    @property
    def detected(self) -> Isolation | None:
        """The level in use once :meth:`detect` ran, else None. Never probes."""
        return self._level

    def detect(self) -> Isolation:
        """The level in use, probed once (blocking, ~0.1 s per candidate; run it off the event loop).

        Raises :class:`IsolationUnavailable` (every time) when no acceptable level works.
        """
        if self._level is None:
            with self._detect_lock:
                if self._level is None:
                    self._level = self._detect()
        return self._level

    def _detect(self) -> Isolation:
        requested = Isolation(self.level_request) if self.level_request else None  # __post_init__ made it one
        candidates = [requested] if requested else [Isolation.BWRAP, Isolation.UNSHARE, Isolation.RLIMITS]
        for candidate in candidates:
            reason = self._probe(candidate)
            if reason is None:
                if self.strict and candidate is Isolation.RLIMITS:
                    break
                return candidate
            self._failures[candidate.value] = reason
        tried = "; ".join(f"{k}: {v}" for k, v in self._failures.items())
        if requested:
            raise IsolationUnavailable(f"isolation level {requested.value!r} is not available ({tried})")
        raise IsolationUnavailable(
            "strict mode refuses to run without a real boundary (bwrap or unshare); "
            f"install bubblewrap (apt-get install bubblewrap). Tried: {tried}"
        )

    def _probe(self, level: Isolation) -> str | None:
        """Run the interpreter once at ``level``; return why it failed, or None."""
        if level is Isolation.BWRAP and not self.bwrap_path:
            return "bwrap is not installed"
        if level is Isolation.UNSHARE and not self.unshare_path:
            return "unshare is not installed"
        if os.geteuid() == 0 and level is not Isolation.RLIMITS and not self.setpriv_path:
            return "setpriv (util-linux) is needed to drop root inside the sandbox"
        drop_options = [True, False] if (level is Isolation.RLIMITS and os.geteuid() == 0) else [os.geteuid() == 0]
        last = "probe failed"
        for drop in drop_options:
            try:
                cmd = self._build(
                    level,
                    drop,
                    [self.python, "-c", PROBE_CODE],
                    work_dir="/",
                    mounts=(),
                    env={"PATH": "/usr/bin:/bin"},
                    chdir=False,
                )
                done = subprocess.run(
                    cmd.argv,
                    env=cmd.env,
                    cwd=cmd.cwd,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=PROBE_TIMEOUT_S,
                    start_new_session=True,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if done.returncode == 0:
                problem = self._probe_mismatch(done.stdout)
                if problem is None:
                    self._drop_user = drop
                    return None
                last = problem
                continue
            err = done.stderr.decode(errors="replace").strip().splitlines()
            last = f"exit {done.returncode}: {err[-1] if err else 'no output'}"
        return last

    def _probe_mismatch(self, output: bytes) -> str | None:
        expected = self._expected_prefixes
        if expected is None:
            found = subprocess.run(
                [self.python, "-c", PROBE_CODE],
                capture_output=True,
                timeout=PROBE_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
                env={"PATH": "/usr/bin:/bin"},
                cwd="/",
            )
            expected = self._expected_prefixes = found.stdout
        if output == expected:
            return None
        return f"the interpreter cannot reach its own prefix from inside (got {output[:200]!r}, expected {expected[:200]!r})"

    @property
    def failures(self) -> dict[str, str]:
        """Why stronger levels were not used (level -> reason), after detection."""
        return dict(self._failures)

    @property
    def runs_as_root(self) -> bool:
        """True when the child keeps user id 0 (only possible at the rlimits level)."""
        self.detect()
        return os.geteuid() == 0 and not self._drop_user

    @property
    def guarantees(self) -> frozenset[str]:
        """What this level promises (the constants above); detected on first access."""
        level = self.detect()
        # Dropped from root to uid 65534, host files are guarded by their permissions;
        # as an ordinary user the child is you (or "root" mapped to you) and can use your files.
        secrets = {HOST_SECRETS} if os.geteuid() == 0 and self._drop_user else set()
        if level is Isolation.BWRAP:
            return frozenset({NO_NETWORK, PROCESS_TREE, PRIVATE_TMP, HOST_FILES, HOST_SECRETS, PROCESS_LIMIT})
        if level is Isolation.UNSHARE:
            return frozenset({NO_NETWORK, PROCESS_TREE, PRIVATE_TMP, PROCESS_LIMIT} | secrets)
        return frozenset(({PROCESS_LIMIT} if not self.runs_as_root else set()) | secrets)

    # -- building commands ---------------------------------------------

    def prepare(self, directory: str | Path, uid: int | None = None) -> None:
        """Let the sandbox user (``uid``, default 65534) write ``directory``; a no-op unless we drop root."""
        if os.geteuid() == 0 and self._drop_user_effective():
            uid = SANDBOX_UID if uid is None else uid
            os.chown(directory, uid, uid)

    def _drop_user_effective(self) -> bool:
        self.detect()
        return self._drop_user

    def view(self, work_dir: str | Path, mounts: Sequence[Mount] = ()) -> SandboxView:
        """Where the work dir and each mount will appear in the child, before wrapping."""
        return self._view(self.detect(), str(work_dir), tuple(mounts))

    def _view(self, level: Isolation, work_dir: str, mounts: tuple[Mount, ...], chdir: bool = True) -> SandboxView:
        if level is Isolation.BWRAP:
            work = (Mount(os.path.abspath(work_dir), SANDBOX_WORK, writable=True),) if chdir else ()
            return SandboxView(
                SANDBOX_WORK if chdir else "/",
                work + tuple(Mount(os.path.abspath(m.source), m.target, m.writable) for m in mounts),
            )
        # Outside bwrap paths are the host's own: a mount only changes writability.
        return SandboxView(
            work_dir, tuple(Mount(os.path.abspath(m.source), os.path.abspath(m.source), m.writable) for m in mounts)
        )

    def wrap(
        self,
        argv: Sequence[str],
        *,
        work_dir: str | Path,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str],
        as_pid_1: bool = False,
        uid: int | None = None,
    ) -> SandboxCommand:
        """Wrap ``argv`` so it runs at this isolator's level with ``work_dir`` writable.

        Under bwrap, ``work_dir`` appears at ``/sandbox/work`` and each mount at
        its target; at the other levels paths are the host's own. No rlimits
        are set here: the harness sets them in the process that runs the code.
        ``as_pid_1`` makes ``argv`` itself the PID namespace's init (which its
        own descendants cannot kill); otherwise bwrap's reaper is init. Under
        ``unshare`` the program is always PID 1. ``uid`` is the user (and group)
        the child drops to when we are root (default 65534): give concurrent
        children different ones and each gets its own ``RLIMIT_NPROC`` count.
        """
        level = self.detect()
        return self._build(
            level,
            self._drop_user,
            list(argv),
            work_dir=str(work_dir),
            mounts=tuple(mounts),
            env=dict(env),
            as_pid_1=as_pid_1,
            uid=uid,
        )

    def _build(
        self,
        level: Isolation,
        drop: bool,
        argv: list[str],
        *,
        work_dir: str,
        mounts: tuple[Mount, ...],
        env: dict[str, str],
        chdir: bool = True,
        as_pid_1: bool = False,
        uid: int | None = None,
    ) -> SandboxCommand:
        drop_argv = self._setpriv_argv(SANDBOX_UID if uid is None else uid) if drop else []
        view = self._view(level, work_dir, mounts, chdir)
        if level is Isolation.BWRAP:
            return self._bwrap(drop, drop_argv + argv, view=view, cwd=work_dir, env=env, as_pid_1=as_pid_1)
        if level is Isolation.UNSHARE:
            return self._unshare(drop, drop_argv + argv, view=view, env=env)
        # rlimits: the child is the interpreter itself; it must still die with its parent.
        die = [self.setpriv_path, "--pdeathsig=KILL", "--"] if self.setpriv_path and not drop else []
        return SandboxCommand(argv=die + drop_argv + argv, env=env, cwd=work_dir, view=view)

    def _setpriv_argv(self, uid: int) -> list[str]:
        return [
            self.setpriv_path or "setpriv",
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            # Changing uid clears the parent-death signal that bwrap/unshare set: set it again.
            "--pdeathsig=KILL",
            "--",
        ]

    def _interpreter_paths(self) -> list[str]:
        """Directories the interpreter needs: its prefixes, the venv, the real binary's home.

        Found once: every wrapped command needs them, and the realpath calls cost
        about as much as the rest of building the command line.
        """
        if self._interpreter_dirs is None:
            real = os.path.realpath(self.python)
            candidates = {
                sys.prefix,
                sys.base_prefix,
                sys.exec_prefix,
                sys.base_exec_prefix,
                str(Path(real).parent.parent),
            }
            if real != os.path.realpath(sys.executable):
                candidates.add(str(Path(self.python).absolute().parent.parent))
            self._interpreter_dirs = outermost(p for p in candidates if not under_any(p, SYSTEM_PATHS))
        return list(self._interpreter_dirs)

    def _bwrap(
        self, drop: bool, argv: list[str], *, view: SandboxView, cwd: str, env: dict[str, str], as_pid_1: bool = False
    ) -> SandboxCommand:
        assert self.bwrap_path
        args = [self.bwrap_path]
        if os.geteuid() == 0:
            # No user namespace: inside one, uid 0 outside would make every
            # child uid 0 to the kernel, and RLIMIT_NPROC would not apply.
            args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
        else:
            args += ["--unshare-all", "--unshare-user", "--disable-userns"]
        args += ["--die-with-parent", "--new-session", "--clearenv"]
        if as_pid_1:
            args.append("--as-pid-1")
        for key, value in env.items():
            args += ["--setenv", key, value]
        for path in SYSTEM_PATHS:
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                args += ["--ro-bind", path, path]
        for path in ETC_PATHS:
            args += ["--ro-bind-try", path, path]
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--size", str(self.tmp_bytes), "--perms", "1777", "--tmpfs", "/tmp"]
        # Bound after the private /tmp, so an interpreter or venv that lives
        # under /tmp (a CI checkout, say) is laid over it rather than hidden.
        made: set[str] = {"/tmp"}
        for path in self._interpreter_paths():
            args += [*mkdirs_args(path, made), "--ro-bind", path, path]
        args += ["--perms", "0755", "--dir", SANDBOX_ROOT]
        made.add(SANDBOX_ROOT)
        for m in view.mounts:
            args += [*mkdirs_args(m.target, made), "--bind" if m.writable else "--ro-bind", m.source, m.target]
        args += ["--chdir", view.work_dir]
        if drop:
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        args += ["--", *argv]
        return SandboxCommand(argv=args, env={"PATH": "/usr/bin:/bin"}, cwd=cwd, view=view)

    def _unshare(self, drop: bool, argv: list[str], *, view: SandboxView, env: dict[str, str]) -> SandboxCommand:
        assert self.unshare_path
        # unshare has no --die-with-parent: a parent-death signal on it does that job.
        args = [self.setpriv_path, "--pdeathsig=KILL", "--"] if self.setpriv_path else []
        args += [self.unshare_path]
        if os.geteuid() != 0:
            args += ["--user", "--map-root-user"]
        args += ["--net", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--propagation", "private"]
        # bash, not sh: dash cannot name descriptors above 9.
        args += [
            "--",
            shutil.which("bash") or "/bin/bash",
            "-c",
            self._unshare_script(drop, view.work_dir, view.mounts),
            "codeloop-sandbox",
            *argv,
        ]
        return SandboxCommand(argv=args, env=env, cwd=view.work_dir, view=view)

    def _unshare_script(self, drop: bool, work_dir: str, mounts: tuple[Mount, ...]) -> str:
        """Shell run in the new namespaces before the child: private /tmp, hidden root home.

        Paths that the new mounts would cover (the work dir under /tmp, an
        interpreter under /root) are opened first and bound back by descriptor.
        """
        q = shlex.quote
        private = [d for d in PRIVATE_TMP_DIRS if os.path.isdir(d)]
        hidden = list(private)
        if drop:  # the sandbox user could not pass through e.g. /root: cover it, re-expose what we need
            hidden += closed_ancestors(self._interpreter_paths())
        keep = (
            [(work_dir, True)]
            + [(m.source, m.writable) for m in mounts]
            + [(p, False) for p in self._interpreter_paths()]
        )
        keep = [(p, w) for p, w in keep if under_any(p, hidden)]
        lines = ["set -e"]
        for i, (path, _) in enumerate(keep):
            lines.append(f"exec {10 + i}<{q(path)}")
        for d in private:
            lines.append(f"mount -t tmpfs -o size={self.tmp_bytes},mode=1777 tmpfs {q(d)}")
        for d in hidden[len(private) :]:
            lines.append(f"mount -t tmpfs -o size=1m,mode=0755 tmpfs {q(d)}")
        for i, (path, writable) in enumerate(keep):
            make = (
                f"mkdir -p {q(path)}"
                if os.path.isdir(path)
                else f"mkdir -p {q(os.path.dirname(path))} && {{ [ -e {q(path)} ] || : > {q(path)}; }}"
            )
            lines.append(f"{make} && mount --no-canonicalize --bind /proc/self/fd/{10 + i} {q(path)}")
            if not writable:
                lines.append(f"mount -o remount,bind,ro {q(path)}")
            lines.append(f"exec {10 + i}<&-")
        lines.append(f"cd {q(work_dir)}")
        lines.append('exec "$@"')
        return "\n".join(lines)
