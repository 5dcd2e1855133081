"""The parts of ``codeloop mcp`` one at a time: settings, argument checks, the working
directory reader, result conversion, the HTTP guards, and sessions ending when idle."""

from __future__ import annotations

import asyncio
import base64
import json
import os

import httpx2
import pytest
from mcp_types import EmbeddedResource, ImageContent, TextContent
from starlette.responses import PlainTextResponse

from executors import Artifact, ExecutionResult, Limits, Outcome
from orchestrator.mcp_server import HttpSettings, SessionSettings, ToolSettings
from orchestrator.mcp_server.http import BearerTokenMiddleware, ConcurrencyLimitMiddleware
from orchestrator.mcp_server.inputs import FileArg, ToolArgumentError, check_session, check_timeout, decode_files
from orchestrator.mcp_server.results import execution_to_tool_result
from orchestrator.mcp_server.workdir import WorkdirError, list_workdir, read_workdir_file

# -- settings -------------------------------------------------------------------------------


def test_settings_round_trip_through_json():
    tools = ToolSettings(limits=Limits(timeout_s=5), max_timeout_s=9, sessions=SessionSettings(max_sessions=3))
    assert ToolSettings.from_json(json.loads(json.dumps(tools.to_json()))) == tools
    http = HttpSettings(port=0, max_body_bytes=10)
    assert HttpSettings.from_json(json.loads(json.dumps(http.to_json()))) == http


@pytest.mark.parametrize(
    "build, says",
    [
        (lambda: SessionSettings(max_sessions=0), "max_sessions"),
        (lambda: SessionSettings(idle_timeout_s=0), "idle_timeout_s"),
        (lambda: ToolSettings(limits=Limits(timeout_s=50), max_timeout_s=10), "exceeds max_timeout_s"),
        (lambda: HttpSettings(path="mcp"), "path"),
        (lambda: HttpSettings(max_concurrent_requests=0), "max_concurrent_requests"),
    ],
)
def test_bad_settings_name_the_field(build, says):
    with pytest.raises(ValueError, match=says):
        build()


# -- arguments -------------------------------------------------------------------------------


def test_input_files_are_decoded_and_capped():
    settings = ToolSettings(max_input_bytes=10)
    files = [FileArg(name="a.txt", content="héllo"), FileArg(name="b", content="AA\nE=", encoding="base64")]
    decoded = decode_files(files, settings)
    assert [(f.name, f.data) for f in decoded] == [("a.txt", "héllo".encode()), ("b", b"\x00\x01")]
    with pytest.raises(ToolArgumentError, match=r"exceed 10 bytes together \(at files\[1\] 'big'\)"):
        decode_files([FileArg(name="a", content="12345"), FileArg(name="big", content="123456")], settings)
    for bad in ("", ".", "..", "x/y", "x\\y"):
        with pytest.raises(ToolArgumentError, match=r"files\[0\]\.name"):
            decode_files([FileArg(name=bad, content="")], settings)


def test_session_names_and_timeouts():
    assert check_session("notebook-1.a_b") == "notebook-1.a_b"
    for bad in ("", "-lead", "a/b", "x" * 65, "sp ace"):
        with pytest.raises(ToolArgumentError, match="not a valid session name"):
            check_session(bad)
    settings = ToolSettings(limits=Limits(timeout_s=7), max_timeout_s=20)
    assert check_timeout(None, settings) == 7 and check_timeout(20, settings) == 20
    for bad in (0, -1, 20.5):
        with pytest.raises(ToolArgumentError, match=r"timeout_s must be in \(0, 20\]"):
            check_timeout(bad, settings)


# -- the working directory, as the code in the sandbox may have left it --------------------------


@pytest.fixture
def workdir(tmp_path):
    root = tmp_path / "work"
    (root / "sub").mkdir(parents=True)
    (root / "ok.txt").write_text("fine")
    (root / "sub" / "deep.csv").write_text("a,b")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    (root / "file-link").symlink_to(outside / "secret")
    (root / "dir-link").symlink_to(outside)
    os.link(outside / "secret", root / "hard")
    os.mkfifo(root / "fifo")
    return root


def test_listing_offers_only_regular_files_with_one_link(workdir):
    assert [(e.name, e.size) for e in list_workdir(workdir)] == [("ok.txt", 4), ("sub/deep.csv", 3)]


def test_reading_follows_no_link_and_stays_inside(workdir):
    assert read_workdir_file(workdir, "sub/deep.csv", 100) == b"a,b"
    refusals = {
        "file-link": "cannot be read",
        "dir-link/secret": "cannot be read",
        "hard": "not a regular file the code wrote",
        "fifo": "not a regular file the code wrote",
        "sub": "not a regular file the code wrote",
        "../outside/secret": "must be a relative path",
        "/etc/passwd": "must be a relative path",
        "sub//deep.csv": "must be a relative path",
        "nope.txt": "no file 'nope.txt'",
    }
    for name, says in refusals.items():
        with pytest.raises(WorkdirError, match=says):
            read_workdir_file(workdir, name, 100)
    with pytest.raises(WorkdirError, match="more than the 2 bytes"):
        read_workdir_file(workdir, "ok.txt", 2)


# -- results ------------------------------------------------------------------------------------------


def test_an_execution_becomes_text_images_resources_and_data():
    result = ExecutionResult(
        outcome=Outcome.FAILED,
        stdout="partial\n",
        error_type="ValueError",
        error_message="bad value",
        traceback="Traceback ...\nValueError: bad value",
        exit_code=1,
        artifacts=[
            Artifact.of("figure_1.png", b"\x89PNG\r\n\x1a\nfake"),
            Artifact.of("notes.md", b"# hi"),
            Artifact.of("data.parquet", b"\xff\x00"),
            Artifact(name="huge.csv", data=b"", mime_type="text/csv", truncated=True),
        ],
        executor="pool",
        isolation="bwrap",
    )
    tool_result = execution_to_tool_result(result, session=None, scope="runs/abc")
    assert tool_result.is_error is False
    text, image, notes, blob = tool_result.content
    assert isinstance(text, TextContent)
    assert "outcome: FAILED" in text.text and "error: ValueError: bad value" in text.text
    assert "file: huge.csv (text/csv, too large to return)" in text.text
    assert isinstance(image, ImageContent) and image.meta == {"name": "figure_1.png"}
    assert isinstance(notes, EmbeddedResource) and notes.resource.text == "# hi"
    assert notes.resource.uri == "codeloop://runs/abc/notes.md"
    assert isinstance(blob, EmbeddedResource) and base64.b64decode(blob.resource.blob) == b"\xff\x00"
    data = tool_result.structured_content
    assert data["outcome"] == "FAILED" and data["exit_code"] == 1
    assert data["files"][3] == {"name": "huge.csv", "mime_type": "text/csv", "size": 0, "truncated": True}
    assert json.loads(json.dumps(data)) == data


def test_a_broken_sandbox_is_a_tool_error():
    broken = ExecutionResult(outcome=Outcome.SANDBOX_ERROR, error_type="ZygoteError", error_message="gone")
    assert execution_to_tool_result(broken, session="s", scope="sessions/s").is_error is True


# -- HTTP guards ----------------------------------------------------------------------------------------


async def _hello(scope, receive, send):
    await PlainTextResponse("hello")(scope, receive, send)


async def test_bearer_token_middleware():
    app = BearerTokenMiddleware(_hello, "s3cret")
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/", headers={"Authorization": "Bearer s3cret"})).text == "hello"
        assert (await client.get("/", headers={"Authorization": "bearer s3cret"})).status_code == 200
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": "Basic s3cret"},
            {"Authorization": "s3cret"},
        ):
            response = await client.get("/", headers=headers)
            assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
            assert "s3cret" not in response.text
    with pytest.raises(ValueError, match="empty"):
        BearerTokenMiddleware(_hello, "")


async def test_concurrency_limit_middleware():
    release = asyncio.Event()

    async def slow(scope, receive, send):
        await release.wait()
        await _hello(scope, receive, send)

    app = ConcurrencyLimitMiddleware(slow, limit=1)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://t") as client:
        first = asyncio.create_task(client.post("/", content=b"{}"))
        while app.in_flight == 0:
            await asyncio.sleep(0.01)
        refused = await client.post("/", content=b"{}")
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        release.set()
        assert (await first).status_code == 200
        assert app.in_flight == 0
        assert (await client.post("/", content=b"{}")).status_code == 200


# -- the command line refuses unsafe or meaningless combinations before starting anything -----------


@pytest.mark.parametrize(
    "argv, says",
    [
        (["mcp", "--transport", "http", "--host", "0.0.0.0"], "set a token"),
        (["mcp", "--token", "abc"], "--token applies to --transport http only"),
        (["mcp", "--max-sessions", "0"], "max_sessions"),
        (["mcp", "--timeout", "200"], "exceeds max_timeout_s"),
        (["mcp", "--transport", "http", "--path", "mcp"], "path"),
        (["mcp", "--session-executor", "local"], "--session-executor must be jupyter or none"),
        (["mcp", "--executor", "nope"], "unknown executor 'nope'"),
    ],
)
def test_cli_usage_errors(argv, says, capsys, monkeypatch):
    from orchestrator.cli import EXIT_USAGE, main

    monkeypatch.delenv("CODELOOP_MCP_TOKEN", raising=False)
    assert main(argv) == EXIT_USAGE
    assert says in capsys.readouterr().err
