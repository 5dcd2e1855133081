"""``codeloop mcp`` end to end, driven by the MCP SDK's own client over stdio and HTTP.

Each transport gets one server process for the module (``python -m
orchestrator.cli mcp``), and one client connection shared by the checks
(see ``mcp_clients.ThreadedClient``). Checks that use sessions end them, so
the servers' two-session bound holds for the next check.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import time
import urllib.error
import urllib.request

import psutil
import pytest
from mcp.shared.exceptions import MCPError
from mcp_clients import ThreadedClient, http_client, start_http_server, stdio_params, stop
from mcp_types import EmbeddedResource, ImageContent, TextContent

pytest.importorskip("jupyter_client")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TOKEN = "mcp-test-" + secrets.token_hex(16)
# Small bounds, so the limits can be reached quickly.
SERVER_ARGS = ("--timeout", "10", "--max-timeout", "20", "--max-sessions", "2", "--memory-mb", "1024")
MAX_BODY_KB = 256
MAX_CONCURRENT = 2


@pytest.fixture(scope="module")
def http_server():
    proc, url, stderr_lines = start_http_server(
        *SERVER_ARGS,
        "--max-body-kb",
        str(MAX_BODY_KB),
        "--max-concurrent",
        str(MAX_CONCURRENT),
        env={"CODELOOP_MCP_TOKEN": TOKEN},
    )
    yield url, stderr_lines
    stop(proc)


@pytest.fixture(scope="module", params=["stdio", "http"])
def mcp(request):
    if request.param == "stdio":
        client = ThreadedClient(lambda: _stdio_client())
    else:
        url, _ = request.getfixturevalue("http_server")
        client = ThreadedClient(lambda: http_client(url, TOKEN))
    client.transport = request.param
    yield client
    client.close()


def _stdio_client():
    from mcp import Client

    return Client(stdio_params(*SERVER_ARGS))


def run(mcp, code: str, **arguments):
    result = mcp.call("run_python", {"code": code, **arguments})
    assert not result.is_error, result.content
    return result


def text_of(result) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


@pytest.fixture
def session_names(mcp):
    """Session names for one check, unique per transport; ended afterwards."""
    names = [f"{mcp.transport}-{secrets.token_hex(3)}-{i}" for i in range(3)]
    yield names
    for name in names:
        mcp.call("reset_session", {"session": name})


# -- tools and plain runs -------------------------------------------------------------


def test_lists_the_four_tools_with_their_arguments(mcp):
    tools = {tool.name: tool for tool in mcp.list_tools().tools}
    assert set(tools) == {"run_python", "reset_session", "list_files", "read_file"}
    run_python = tools["run_python"].input_schema
    assert set(run_python["properties"]) == {"code", "files", "session", "timeout_s"}
    assert run_python["required"] == ["code"]
    assert tools["read_file"].input_schema["required"] == ["session", "name"]


def test_stdout_and_outcome(mcp):
    result = run(mcp, "print(6 * 7)")
    data = result.structured_content
    assert data["outcome"] == "OK" and data["stdout"] == "42\n" and data["error"] is None
    assert data["session"] is None and data["isolation"] != "none"
    assert "outcome: OK" in text_of(result) and "42" in text_of(result)


def test_an_exception_is_a_failed_outcome_with_its_error(mcp):
    result = run(mcp, "print('before')\n1 / 0")
    data = result.structured_content
    assert data["outcome"] == "FAILED"
    assert data["error"]["type"] == "ZeroDivisionError" and "division by zero" in data["error"]["message"]
    assert "ZeroDivisionError" in data["error"]["traceback"]
    assert data["stdout"] == "before\n"
    assert "error: ZeroDivisionError" in text_of(result)


def test_deadline_exceeded(mcp):
    started = time.monotonic()
    result = run(mcp, "while True:\n    pass", timeout_s=1)
    assert result.structured_content["outcome"] == "DEADLINE_EXCEEDED"
    assert time.monotonic() - started < 8


def test_a_figure_comes_back_as_an_image(mcp):
    result = run(mcp, "import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nplt.title('squares')\nplt.show()")
    images = [block for block in result.content if isinstance(block, ImageContent)]
    assert len(images) == 1 and images[0].mime_type == "image/png"
    assert base64.b64decode(images[0].data).startswith(PNG_MAGIC)
    assert [f["name"] for f in result.structured_content["files"]] == ["figure_1.png"]


def test_written_files_come_back_as_embedded_resources(mcp):
    code = "open('out.csv', 'w').write('a,b\\n1,2\\n')\nopen('raw.bin', 'wb').write(bytes(range(250, 256)))"
    result = run(mcp, code)
    resources = {
        block.resource.uri.rsplit("/", 1)[1]: block.resource
        for block in result.content
        if isinstance(block, EmbeddedResource)
    }
    assert set(resources) == {"out.csv", "raw.bin"}
    assert resources["out.csv"].text == "a,b\n1,2\n" and resources["out.csv"].mime_type == "text/csv"
    assert base64.b64decode(resources["raw.bin"].blob) == bytes(range(250, 256))
    assert resources["out.csv"].uri.startswith("codeloop://runs/")


def test_a_file_of_megabytes_comes_back_whole(mcp):
    result = run(mcp, "open('big.txt', 'w').write('0123456789' * 150_000)")
    (resource,) = [block.resource for block in result.content if isinstance(block, EmbeddedResource)]
    assert resource.text == "0123456789" * 150_000


def test_input_files_text_and_base64(mcp):
    files = [
        {"name": "data.csv", "content": "x\n1\n2\n3\n"},
        {"name": "blob.bin", "content": base64.b64encode(b"\x00\xffok").decode(), "encoding": "base64"},
    ]
    code = "import pandas as pd\nprint(pd.read_csv('data.csv').x.sum())\nprint(open('blob.bin', 'rb').read())"
    result = run(mcp, code, files=files)
    assert result.structured_content["stdout"] == "6\nb'\\x00\\xffok'\n"
    assert result.structured_content["files"] == []  # inputs are not echoed back as outputs


# -- sessions -----------------------------------------------------------------------------


def test_state_survives_in_a_session_and_not_across_sessions(mcp, session_names):
    first, second, _ = session_names
    run(mcp, "import math\nx = 41", session=first)
    same = run(mcp, "print(x + 1, math.pi > 3)", session=first)
    assert same.structured_content["stdout"] == "42 True\n"
    assert same.structured_content["session"] == first
    other = run(mcp, "print(x)", session=second)
    assert other.structured_content["outcome"] == "FAILED" and other.structured_content["error"]["type"] == "NameError"
    fresh = run(mcp, "print(x)")
    assert fresh.structured_content["error"]["type"] == "NameError"


def test_reset_session_clears_its_state(mcp, session_names):
    name = session_names[0]
    run(mcp, "y = 'kept'", session=name)
    reset = mcp.call("reset_session", {"session": name})
    assert not reset.is_error and reset.structured_content == {"session": name, "reset": True}
    after = run(mcp, "print(y)", session=name)
    assert after.structured_content["error"]["type"] == "NameError"
    assert after.structured_content["notice"] is None  # a reset asked for is no surprise
    again = mcp.call("reset_session", {"session": session_names[2]})
    assert again.structured_content["reset"] is False


def test_list_and_read_a_sessions_files(mcp, session_names):
    name = session_names[0]
    code = (
        "import os, matplotlib.pyplot as plt\n"
        "os.makedirs('out', exist_ok=True)\n"
        "open('out/table.csv', 'w').write('k,v\\n1,2\\n')\n"
        "plt.plot([0, 1]); plt.savefig('plot.png')\n"
        "os.symlink('/etc/passwd', 'passwd-link')\n"
    )
    run(mcp, code, session=name, files=[{"name": "input.txt", "content": "hello"}])
    listing = mcp.call("list_files", {"session": name})
    assert not listing.is_error
    names = {f["name"]: f["size"] for f in listing.structured_content["files"]}
    assert set(names) == {"input.txt", "out/table.csv", "plot.png"}  # the symlink is not offered
    assert names["input.txt"] == 5

    table = mcp.call("read_file", {"session": name, "name": "out/table.csv"})
    assert not table.is_error
    (block,) = table.content
    assert isinstance(block, EmbeddedResource) and block.resource.text == "k,v\n1,2\n"
    plot = mcp.call("read_file", {"session": name, "name": "plot.png"})
    assert isinstance(plot.content[0], ImageContent)
    assert base64.b64decode(plot.content[0].data).startswith(PNG_MAGIC)

    for bad in ("passwd-link", "../../etc/passwd", "/etc/passwd", "missing.txt", "out"):
        refused = mcp.call("read_file", {"session": name, "name": bad})
        assert refused.is_error, bad
        assert "root:x:0:0" not in text_of(refused)


# -- bad arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "tool, arguments, says",
    [
        ("run_python", {}, "code"),
        ("run_python", {"code": 7}, "code"),
        ("run_python", {"code": "   "}, "code is empty"),
        ("run_python", {"code": "1", "timeout_s": 0}, "timeout_s"),
        ("run_python", {"code": "1", "timeout_s": 10_000}, "timeout_s"),
        ("run_python", {"code": "1", "session": "../etc"}, "session"),
        ("run_python", {"code": "1", "files": [{"name": "a/b.txt", "content": "x"}]}, "files[0].name"),
        (
            "run_python",
            {"code": "1", "files": [{"name": "a", "content": "%%", "encoding": "base64"}]},
            "files[0].content",
        ),
        ("run_python", {"code": "1", "files": [{"name": "a", "content": "x", "encoding": "rot13"}]}, "encoding"),
        (
            "run_python",
            {"code": "1", "files": [{"name": "a", "content": "1"}, {"name": "a", "content": "2"}]},
            "given twice",
        ),
        ("list_files", {"session": "never-used"}, "not live"),
        ("read_file", {"session": "never-used"}, "name"),
        ("reset_session", {"session": ""}, "session"),
    ],
)
def test_bad_arguments_are_tool_errors_and_the_server_carries_on(mcp, tool, arguments, says):
    result = mcp.call(tool, arguments)
    assert result.is_error
    assert says in text_of(result)
    assert run(mcp, "print('alive')").structured_content["stdout"] == "alive\n"


def test_an_unknown_tool_is_an_error_not_a_crash(mcp):
    try:
        result = mcp.call("run_rust", {"code": "fn main() {}"})
    except MCPError as exc:
        assert "run_rust" in str(exc)
    else:
        assert result.is_error and "run_rust" in text_of(result)
    assert run(mcp, "print(1)").structured_content["outcome"] == "OK"


# -- HTTP: token, body cap, concurrency, session bound -------------------------------------


def leaves(error: BaseException):
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves(inner)
    else:
        yield error


def _post(url: str, body: bytes, token: str | None) -> tuple[int, dict, bytes]:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


INITIALIZE = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
).encode()


def test_http_requires_the_bearer_token(http_server):
    url, stderr_lines = http_server
    for token in (None, "wrong", TOKEN + "x"):
        status, headers, body = _post(url, INITIALIZE, token)
        assert status == 401, (token, status)
        assert headers.get("www-authenticate", headers.get("WWW-Authenticate")) == "Bearer"
        assert json.loads(body)["error"]["message"] == "missing or wrong bearer token"
    status, _, _ = _post(url, INITIALIZE, TOKEN)
    assert status == 200
    with pytest.raises(BaseExceptionGroup) as refused:  # the SDK's client reports it from its task group
        ThreadedClient(lambda: http_client(url, None), connect_timeout_s=20)
    assert any(isinstance(e, MCPError) and "missing or wrong bearer token" in str(e) for e in leaves(refused.value))
    assert not any(TOKEN in line for line in stderr_lines), "the token was logged"


def test_http_body_over_the_cap_is_413(http_server):
    url, _ = http_server
    big = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "run_python", "arguments": {"code": "#" * (MAX_BODY_KB * 1024)}},
        }
    ).encode()
    status, _, _ = _post(url, big, TOKEN)
    assert status == 413


def test_http_requests_past_the_concurrency_cap_get_429(http_server):
    url, _ = http_server
    client = ThreadedClient(lambda: http_client(url, TOKEN))
    try:
        slow = [
            client.call_async("run_python", {"code": "import time\ntime.sleep(2.5)"}) for _ in range(MAX_CONCURRENT)
        ]
        time.sleep(1.0)  # both calls are in flight now
        status, headers, body = _post(url, INITIALIZE, TOKEN)
        assert status == 429
        assert headers.get("Retry-After", headers.get("retry-after")) == "1"
        assert "too many requests" in json.loads(body)["error"]["message"]
        assert all(f.result(30).structured_content["outcome"] == "OK" for f in slow)
        assert _post(url, INITIALIZE, TOKEN)[0] == 200
    finally:
        client.close()


def test_sessions_are_bounded(http_server):
    url, _ = http_server
    client = ThreadedClient(lambda: http_client(url, TOKEN))
    names = [f"bound-{secrets.token_hex(3)}-{i}" for i in range(3)]
    try:
        for name in names[:2]:
            run(client, "z = 1", session=name)
        refused = client.call("run_python", {"code": "z = 1", "session": names[2]})
        assert refused.is_error and "too many sessions" in text_of(refused)
        assert "reset_session" in text_of(refused)
        client.call("reset_session", {"session": names[0]})
        assert run(client, "print('room')", session=names[2]).structured_content["stdout"] == "room\n"
    finally:
        for name in names:
            client.call("reset_session", {"session": name})
        client.close()


# -- stopping ----------------------------------------------------------------------------------------


def _pool_dirs(pid: int) -> set[str]:
    """The pool directories a server's zygotes were started in (named on their bwrap command lines)."""
    found = set()
    for child in psutil.Process(pid).children(recursive=True):
        try:
            found.update(re.findall(r"(/\S*codeloop-pool-[^/\s]+)/slot-", " ".join(child.cmdline())))
        except psutil.Error:
            continue
    return found


def test_sigterm_stops_the_server_cleanly():
    proc, url, _ = start_http_server("--session-executor", "none")
    try:
        client = ThreadedClient(lambda: http_client(url))
        try:
            run(client, "print(1)")  # the pool is warm now
        finally:
            client.close()
        children = psutil.Process(proc.pid).children(recursive=True)
        dirs = _pool_dirs(proc.pid)
        assert dirs, "found no pool directory to watch"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        _gone, alive = psutil.wait_procs(children, timeout=5)
        assert not alive, f"processes outlived the server: {alive}"
        assert not any(os.path.exists(d) for d in dirs), f"pool directories left behind: {dirs}"
    finally:
        if proc.poll() is None:
            stop(proc)
