"""Hostile code against every sandboxing executor: contained, outcome right, host unharmed.

Every case runs on every target from ``conftest.py`` whose isolation promises
what the case needs (``requires``); a target that does not promise it is
skipped with the reason, so the report shows exactly what each level does not
guarantee. After each case: the outcome is one we expect, the orchestrator's
secret appears nowhere in the result, no process carrying the case's token is
alive, no host path the case aimed at exists, and no listener on the host was
reached. The last test per target checks the suite left nothing behind and
that the executor still works.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

import executors
from executors import ExecutionResult, Limits, Outcome
from executors.isolation import HOST_FILES, HOST_SECRETS, NO_NETWORK, PRIVATE_TMP, PROCESS_LIMIT, PROCESS_TREE

pytestmark = pytest.mark.asyncio(loop_scope="module")

HOST_PROCESSES = "host_processes"  # the code cannot see or signal the host's processes
PROJECT_DIR = Path(executors.__file__).resolve().parent.parent

OK, FAILED, DEADLINE, MEMORY, OUTPUT, KILLED = (
    Outcome.OK,
    Outcome.FAILED,
    Outcome.DEADLINE_EXCEEDED,
    Outcome.MEMORY_EXCEEDED,
    Outcome.OUTPUT_LIMIT,
    Outcome.KILLED,
)

LIMITS = Limits(
    timeout_s=3.0,
    memory_bytes=1024**3,
    file_bytes=16 * 1024**2,
    output_hard_bytes=4 * 1024**2,
    artifact_bytes=1024**2,
)
SHORT = 1.0  # deadline for the cases that are meant to hit it
# Writes 10 GiB to {path} in 1 MiB chunks: the file-size limit must stop it.
WRITE_10_GB = """
chunk = b"x" * 2**20
with open({path!r}, "wb") as f:
    for _ in range(10 * 1024):
        f.write(chunk)
"""


@dataclass
class Host:
    """What a case may aim at on the host, and how to tell whether it was reached."""

    token: str
    secret: str
    tcp: socket.socket
    udp: socket.socket
    unix: socket.socket
    abstract: socket.socket
    unix_path: str
    decoy: subprocess.Popen
    paths: dict[str, Path] = field(default_factory=dict)

    def fill(self, code: str) -> str:
        values = {
            "TOKEN": self.token,
            "TCP_PORT": str(self.tcp.getsockname()[1]),
            "UDP_PORT": str(self.udp.getsockname()[1]),
            "UNIX_PATH": self.unix_path,
            "ABSTRACT_NAME": self.abstract.getsockname()[1:].decode(),
            "DECOY_PID": str(self.decoy.pid),
        }
        values.update({f"PATH_{k.upper()}": str(v) for k, v in self.paths.items()})
        values["PATH_PROJECT_FILE"] = str(PROJECT_DIR / "pyproject.toml")
        for key in sorted(values, key=len, reverse=True):
            code = code.replace(key, values[key])
        return code

    def reached(self) -> list[str]:
        """Listeners that received anything."""
        hits = []
        for name, sock in (("tcp", self.tcp), ("unix", self.unix), ("abstract unix", self.abstract)):
            try:
                conn, _ = sock.accept()
                conn.close()
                hits.append(name)
            except BlockingIOError:
                pass
        try:
            self.udp.recvfrom(64)
            hits.append("udp")
        except BlockingIOError:
            pass
        return hits


@dataclass(frozen=True)
class Case:
    id: str
    code: str
    expect: frozenset[Outcome]
    requires: frozenset[str] = frozenset()
    # Under RestrictedPython a case either behaves as in Python or is refused by policy (FAILED).
    restricted_expect: frozenset[Outcome] = frozenset({FAILED})
    timeout_s: float | None = None
    check: Callable[[ExecutionResult, Host], None] | None = None
    memory_bytes: int | None = None


def case(id, code, expect, *, requires=(), restricted=None, timeout_s=None, check=None, memory_bytes=None) -> Case:
    expect = frozenset(expect if isinstance(expect, (set, tuple, list, frozenset)) else {expect})
    return Case(
        id=id,
        code=code.strip() + "\n",
        expect=expect,
        requires=frozenset(requires),
        restricted_expect=frozenset(restricted) if restricted else expect | {FAILED},
        timeout_s=timeout_s,
        check=check,
        memory_bytes=memory_bytes,
    )


def stdout_has(text: str) -> Callable[[ExecutionResult, Host], None]:
    def check(result: ExecutionResult, host: Host) -> None:
        assert text in result.stdout, f"expected {text!r} in stdout, got {result.stdout[-500:]!r}"

    return check


def no_passwd_leak(result: ExecutionResult, host: Host) -> None:
    for artifact in result.artifacts:
        assert b"root:x:0:0" not in artifact.data, f"artifact {artifact.name} carries /etc/passwd"
    assert "root:x:0:0" not in result.stdout


def no_shadow_leak(result: ExecutionResult, host: Host) -> None:
    assert "root:" not in result.stdout and "$y$" not in result.stdout and "$6$" not in result.stdout


def exit_status(code: int) -> Callable[[ExecutionResult, Host], None]:
    def check(result: ExecutionResult, host: Host) -> None:
        assert result.exit_code == code, f"exit code {result.exit_code}, expected {code}"

    return check


CASES = [
    # -- time ---------------------------------------------------------------
    case("infinite_loop", "while True:\n    pass", DEADLINE, restricted=(DEADLINE,), timeout_s=SHORT),
    case("sleep_forever", "import time\ntime.sleep(1e6)", DEADLINE, timeout_s=SHORT),
    case(
        "sigterm_ignored",
        """
import signal, time
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
    signal.signal(s, signal.SIG_IGN)
time.sleep(1e6)
""",
        DEADLINE,
        timeout_s=SHORT,
    ),
    # -- processes ----------------------------------------------------------
    case(
        "fork_bomb",
        """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
""",
        DEADLINE,
        requires=[PROCESS_LIMIT],
        timeout_s=SHORT,
    ),
    case(
        "thread_bomb",
        """
import threading, time
while True:
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
""",
        FAILED,
    ),
    case(
        "setsid_double_fork_escapee",
        """
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(60)  # outlive the run; the after-check looks for this process
        os._exit(0)
    os._exit(0)
time.sleep(0.2)
print("parent done")
""",
        OK,
        requires=[PROCESS_TREE],
        check=stdout_has("parent done"),
    ),
    case(
        "orphan_in_same_group",
        """
import os, time
if os.fork() == 0:
    time.sleep(60)
    os._exit(0)
print("parent done")
""",
        OK,
        check=stdout_has("parent done"),
    ),
    case(
        "kill_parent",
        "import os, time\nos.kill(os.getppid(), 9)\ntime.sleep(0.3)\nprint('still here')",
        {OK, KILLED, FAILED},
        requires=[HOST_PROCESSES],
    ),
    case(
        "kill_everything",
        "import os\nos.kill(-1, 9)\nprint('still here')",
        {OK, KILLED, FAILED},
        requires=[HOST_PROCESSES],
    ),
    case(
        "kill_decoy_on_host",
        "import os\nos.kill(DECOY_PID, 9)",
        {FAILED, OK},
        requires=[HOST_PROCESSES],
    ),
    # -- exits and signals ----------------------------------------------------
    case("sys_exit_3", "import sys\nsys.exit(3)", FAILED, check=exit_status(3)),
    case("os_exit_7", "import os\nprint('bye', flush=True)\nos._exit(7)", FAILED, check=exit_status(7)),
    case("os_exit_0_skips_report", "import os\nos._exit(0)", OK),
    case("segfault_via_ctypes", "import ctypes\nctypes.string_at(0)", KILLED),
    case("abort", "import os\nos.abort()", KILLED),
    # -- memory and files -----------------------------------------------------
    case(
        "memory_bomb",
        "x = []\nwhile True:\n    x.append(' ' * (16 * 2**20))",
        MEMORY,
        restricted=(MEMORY,),
        memory_bytes=256 * 2**20,  # small, so filling it is quick even on a busy machine
        timeout_s=8.0,  # and a deadline it cannot hit first under load
    ),
    case("numpy_huge_array", "import numpy\nnumpy.zeros(10**11)", MEMORY),
    case(
        "write_10_gb",
        WRITE_10_GB.format(path="big.bin"),
        FAILED,
        check=lambda r, h: assert_truncated_artifact(r, "big.bin"),
    ),
    case("write_10_gb_to_tmp", WRITE_10_GB.format(path="/tmp/big.bin"), FAILED),
    case(
        "stdout_flood_1_gb",
        "import sys\nchunk = 'x' * 2**20\nfor _ in range(1024):\n    sys.stdout.write(chunk)",
        OUTPUT,
        check=lambda r, h: assert_stdout_truncated(r),
    ),
    case(
        "print_flood",
        "line = 'y' * 4096\nwhile True:\n    print(line)",
        OUTPUT,
        restricted=(OUTPUT,),
    ),
    case("exhaust_file_descriptors", "fs = [open('/dev/null') for _ in range(10**6)]", FAILED),
    # -- secrets and host files ----------------------------------------------
    case("read_etc_shadow", "print(open('/etc/shadow').read())", FAILED, requires=[HOST_SECRETS], check=no_shadow_leak),
    case(
        "read_project_source",
        "print(open('PATH_PROJECT_FILE').read())",
        FAILED,
        requires=[HOST_FILES],
        check=lambda r, h: assert_not_in_stdout(r, "[project]"),
    ),
    case(
        "read_shadow_via_proc_1_root",
        "print(open('/proc/1/root/etc/shadow').read())",
        FAILED,
        requires=[HOST_SECRETS, HOST_PROCESSES],
        check=no_shadow_leak,
    ),
    case("dump_environment", "import os\nprint(dict(os.environ))", OK),
    case(
        "scan_proc_environ",
        """
import os
for pid in os.listdir('/proc'):
    if pid.isdigit():
        try:
            print(open(f'/proc/{pid}/environ', 'rb').read())
        except OSError:
            pass
""",
        OK,
        requires=[HOST_PROCESSES],
    ),
    case("read_proc_1_environ", "print(open('/proc/1/environ', 'rb').read())", {OK, FAILED}, requires=[HOST_PROCESSES]),
    case(
        "symlink_to_passwd_as_artifact",
        """
import os
os.symlink('/etc/passwd', 'leak.txt')
try:
    os.link('/etc/passwd', 'hard.txt')
except OSError as exc:
    print('no hard link:', exc.errno)
""",
        OK,
        check=no_passwd_leak,
    ),
    case("write_host_tmp", "open('PATH_TMP', 'w').write('x')", {OK, FAILED}, requires=[PRIVATE_TMP]),
    case("write_host_var_tmp", "open('PATH_VAR_TMP', 'w').write('x')", {OK, FAILED}, requires=[PRIVATE_TMP]),
    case("write_host_dev_shm", "open('PATH_SHM', 'w').write('x')", {OK, FAILED}, requires=[PRIVATE_TMP]),
    case("write_home_dir", "open('PATH_HOME', 'w').write('x')", FAILED, requires=[HOST_SECRETS]),
    case("write_project_dir", "open('PATH_PROJECT', 'w').write('x')", FAILED, requires=[HOST_SECRETS]),
    # -- network ----------------------------------------------------------------
    case(
        "tcp_to_localhost",
        "import socket\nsocket.create_connection(('127.0.0.1', TCP_PORT), timeout=0.5).sendall(b'hi')",
        FAILED,
        requires=[NO_NETWORK],
    ),
    case(
        "udp_to_localhost",
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range(3):\n    s.sendto(b'hi', ('127.0.0.1', UDP_PORT))",
        {OK, FAILED},
        requires=[NO_NETWORK],
    ),
    case(
        "unix_socket_file_on_host",
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('UNIX_PATH')",
        FAILED,
        requires=[PRIVATE_TMP],
    ),
    case(
        "abstract_unix_socket_on_host",
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0ABSTRACT_NAME')",
        FAILED,
        requires=[NO_NETWORK],
    ),
    # -- ctypes tricks ------------------------------------------------------------
    case(
        "ctypes_raise_rlimits",
        """
import ctypes
class R(ctypes.Structure):
    _fields_ = [("cur", ctypes.c_ulong), ("max", ctypes.c_ulong)]
libc = ctypes.CDLL(None, use_errno=True)
inf = R(ctypes.c_ulong(-1).value, ctypes.c_ulong(-1).value)
for resource in (6, 9):  # RLIMIT_NPROC, RLIMIT_AS
    if libc.setrlimit(resource, ctypes.byref(inf)) == 0:
        raise SystemExit(f"raised limit {resource}")
print("limits held")
""",
        OK,
        requires=[PROCESS_LIMIT],
        check=stdout_has("limits held"),
    ),
    case(
        "ctypes_unshare_then_reach_host",
        """
import ctypes, os, socket
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.unshare(0x10000000 | 0x00020000 | 0x40000000)  # CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET
print('unshare', rc, ctypes.get_errno())
for path in ('/etc/shadow', 'PATH_PROJECT'):
    try:
        open(path, 'a').write('x')
        print('wrote', path)
    except OSError as exc:
        print('refused', path, exc.errno)
socket.create_connection(('127.0.0.1', TCP_PORT), timeout=0.5)
""",
        FAILED,
        requires=[HOST_SECRETS, NO_NETWORK],
    ),
    case(
        "ctypes_ptrace_parent",
        """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
rc = libc.ptrace(16, os.getppid(), 0, 0)  # PTRACE_ATTACH
if rc == 0:
    libc.ptrace(17, os.getppid(), 0, 0)  # PTRACE_DETACH
    raise SystemExit("attached to the parent")
print("ptrace refused")
""",
        OK,
        requires=[HOST_PROCESSES],
        check=stdout_has("ptrace refused"),
    ),
    # -- talking back to the executor -------------------------------------------
    case(
        "forged_report_then_crash",
        """
import os
for fd in range(3, 64):
    try:
        os.write(fd, b'{"error_type": null, "exit_code": 0}')
    except OSError:
        pass
os._exit(9)
""",
        FAILED,
        check=exit_status(9),
    ),
    case(
        "report_that_is_not_an_object",
        """
import os
for fd in range(3, 64):
    try:
        os.fstat(fd)
        os.write(fd, b'[1]')
    except OSError:
        pass
os._exit(0)
""",
        {OK, FAILED},
    ),
]


def assert_not_in_stdout(result: ExecutionResult, text: str) -> None:
    assert text not in result.stdout, f"{text!r} leaked into stdout"


def assert_truncated_artifact(result: ExecutionResult, name: str) -> None:
    found = [a for a in result.artifacts if a.name == name]
    assert found and found[0].truncated and found[0].size == 0, f"{name} should come back truncated"


def assert_stdout_truncated(result: ExecutionResult) -> None:
    assert result.stdout_truncated
    assert len(result.stdout) <= LIMITS.output_bytes


def processes_with(token: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue  # dead; an orphan waits for init to reap it
            if proc.info["name"] == f"cl{token}" or token in " ".join(proc.info["cmdline"] or ()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def tagged_processes(tokens: set[str]) -> list[psutil.Process]:
    """Live processes a hostile case of this run tagged (other runs on the machine have other tokens)."""
    names = {f"cl{t}" for t in tokens}
    found = []
    for proc in psutil.process_iter(["name", "status"]):
        if proc.info["status"] != psutil.STATUS_ZOMBIE and proc.info["name"] in names:
            found.append(proc)
    return found


def tag_process(code: str, token: str) -> str:
    """Name the process (and everything it forks) after the token, so strays can be found."""
    return f"import ctypes as _c\n_c.CDLL(None).prctl(15, b'cl{token}', 0, 0, 0)\ndel _c\n{code}"


@pytest.fixture(scope="session")
def used_tokens() -> set[str]:
    """Every token handed to a case in this run, for the final stray-process check."""
    return set()


@pytest.fixture
def host(tmp_path, monkeypatch, used_tokens):
    token = secrets.token_hex(4)
    used_tokens.add(token)
    secret = f"sk-codeloop-test-{secrets.token_hex(8)}"
    monkeypatch.setenv("CODELOOP_TEST_SECRET", secret)
    tcp = socket.create_server(("127.0.0.1", 0))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix_path = str(tmp_path / "host.sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(unix_path)
    unix.listen()
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(f"\0codeloop-hostile-{token}")
    abstract.listen()
    for s in (tcp, udp, unix, abstract):
        s.setblocking(False)
    # A host process holding the secret in its environment, for /proc scans and kill attempts.
    decoy = subprocess.Popen(["sleep", "60"], env={"PATH": "/usr/bin:/bin", "CODELOOP_TEST_SECRET": secret})
    h = Host(token, secret, tcp, udp, unix, abstract, unix_path, decoy)
    name = f"codeloop-hostile-{token}"
    h.paths = {
        "tmp": Path(tempfile.gettempdir()) / name,
        "var_tmp": Path("/var/tmp") / name,
        "shm": Path("/dev/shm") / name,
        "home": Path.home() / name,
        "project": PROJECT_DIR / name,
    }
    yield h
    decoy.kill()
    decoy.wait()
    for s in (tcp, udp, unix, abstract):
        s.close()
    for path in h.paths.values():
        path.unlink(missing_ok=True)


def wait_for_strays(token: str, grace_s: float = 1.0) -> list[psutil.Process]:
    deadline = time.monotonic() + grace_s
    while True:
        strays = processes_with(token)
        if not strays or time.monotonic() > deadline:
            return strays
        time.sleep(0.05)


@pytest.mark.parametrize("hostile", CASES, ids=[c.id for c in CASES])
async def test_hostile(target, hostile: Case, host: Host):
    missing = set(hostile.requires - target.guarantees)
    if HOST_PROCESSES in missing and PROCESS_TREE in target.guarantees:
        missing.discard(HOST_PROCESSES)  # an own PID namespace hides and shields the host's processes
    if missing:
        pytest.skip(f"{target.label} does not guarantee {', '.join(sorted(missing))}")
    code = host.fill(hostile.code)
    if not target.restricted:
        code = tag_process(code, host.token)
    limits = LIMITS.replace(
        timeout_s=hostile.timeout_s or LIMITS.timeout_s, memory_bytes=hostile.memory_bytes or LIMITS.memory_bytes
    )
    started = time.monotonic()
    result = await asyncio.wait_for(target.executor.execute(code, limits=limits), limits.timeout_s + 15)
    elapsed = time.monotonic() - started

    expected = hostile.restricted_expect if target.restricted else hostile.expect
    assert result.outcome in expected, (
        f"{hostile.id} on {target.label}: {result.outcome.value} ({result.error_type}: {result.error_message}); "
        f"stderr tail {result.stderr[-400:]!r}"
    )
    assert elapsed < limits.timeout_s + 5, f"took {elapsed:.1f} s against a {limits.timeout_s} s deadline"
    if hostile.check and not target.restricted:
        hostile.check(result, host)

    # The host is unharmed: no secret out, no process left, no file written, no listener reached.
    blob = repr(result.to_json())
    assert host.secret not in blob, "the orchestrator's secret reached the result"
    strays = wait_for_strays(host.token)
    for proc in strays:
        try:
            proc.kill()
        except psutil.Error:
            pass
    assert not strays, f"processes survived the run: {[p.pid for p in strays]}"
    leaked = [str(p) for p in host.paths.values() if os.path.lexists(p)]
    assert not leaked, f"host paths were written: {leaked}"
    assert not host.reached(), f"host listeners were reached: {host.reached()}"
    assert host.decoy.poll() is None, "a host process was killed"


async def test_nothing_left_behind_and_next_execution_works(target, used_tokens):
    result = await target.executor.execute("print(6 * 7)", limits=LIMITS)
    assert result.outcome is OK, (result.error_type, result.error_message, result.stderr[-400:])
    assert result.stdout.strip() == "42"
    if target.work_root is not None:
        await target.executor.drain()
        left = list(target.work_root.iterdir())
        assert not left, f"workspaces left behind: {left}"
    assert not list(PROJECT_DIR.glob("codeloop-hostile-*")), "files were left in the project directory"
    assert not list(Path.home().glob("codeloop-hostile-*")), "files were left in the home directory"
    strays = tagged_processes(used_tokens)
    assert not strays, f"stray processes from hostile cases: {strays}"


# RestrictedPython's published escapes: the policy must refuse each, and nothing of
# Python's object graph may be printed. Only the restricted executor has a policy to escape.
POLICY_ESCAPES = {
    "generator_frame_globals": "g = (x for x in [1])\nprint(g.gi_frame.f_back.f_back.f_globals)",
    "getattr_generator_frame": "g = (x for x in [1])\nprint(getattr(g, 'gi_frame'))",
    "str_format_attribute_walk": "print('{0.__class__.__mro__}'.format(1))",
    "str_format_map_attribute_walk": "print('{x.__class__.__mro__}'.format_map({'x': 1}))",
    "string_formatter": "import string\nprint(string.Formatter().format('{0.__class__.__mro__}', 1))",
    "except_star_type_confusion": (
        "try:\n    raise ExceptionGroup('g', [ValueError(1)])\n"
        "except* ValueError as eg:\n    print(eg.exceptions[0].__class__.__mro__)"
    ),
    "subclasses_walk": "print(().__class__.__bases__[0].__subclasses__())",
    "fstring_dunder": "x = 1\nprint(f'{x.__class__.__mro__}')",
}


@pytest.mark.parametrize("escape", sorted(POLICY_ESCAPES))
async def test_restricted_policy_escapes(target, escape: str, host: Host):
    if not target.restricted:
        pytest.skip("a RestrictedPython policy escape: only the restricted executor has a policy")
    result = await target.executor.execute(POLICY_ESCAPES[escape], limits=LIMITS)
    assert result.outcome is FAILED, (result.outcome, result.stdout[-300:])
    assert "<class" not in result.stdout and "f_globals" not in result.stdout, result.stdout[-300:]
    assert host.secret not in repr(result.to_json())
