"""``codeloop serve`` refusing what it must: each error status in Gemini's
JSON shape, through raw HTTP and through the google-genai SDK, and the server
still answering afterwards."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import threading
import time

import pytest
import structlog
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from executors import Limits, LocalExecutor
from orchestrator import ScriptedModel
from orchestrator.models.base import ModelError
from orchestrator.serve import Backend, BackgroundServer, ServeSettings, create_app
from orchestrator.types import Conversation, ExecutionMessage

KEY = "serve-test-key-5f1c2b"
CODE_EXECUTION = types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution())])
HELLO = {"contents": [{"role": "user", "parts": [{"text": "hello"}]}]}


@pytest.fixture
def executor():
    return LocalExecutor(limits=Limits(timeout_s=10))


def serve(model, executor, **settings) -> BackgroundServer:
    chosen = ServeSettings(port=0, **settings)
    return BackgroundServer(create_app([Backend("m", model, executor)], chosen), chosen)


def request(
    server: BackgroundServer,
    path: str,
    body: bytes | dict | None = None,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], dict]:
    """One raw HTTP request; the status, headers and JSON body of the answer."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    try:
        connection.request(method, path, body=data, headers=all_headers)
        response = connection.getresponse()
        text = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(text or b"{}")
    finally:
        connection.close()


def generate(server: BackgroundServer, body: bytes | dict, **kwargs):
    return request(server, "/v1beta/models/m:generateContent", body, **kwargs)


def assert_error(answer, code: int, status: str, *words: str) -> dict:
    got_code, _, body = answer
    assert got_code == code, body
    error = body["error"]
    assert error["code"] == code and error["status"] == status, error
    for word in words:
        assert word in error["message"], error["message"]
    return error


def sdk(server: BackgroundServer, key: str = "any") -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=server.url))


def sdk_client_error(
    server: BackgroundServer, model: str = "m", config: types.GenerateContentConfig | None = None
) -> genai_errors.ClientError:
    """The error the real SDK raises for a generateContent call of "x" that the server refuses."""
    client = sdk(server)
    with pytest.raises(genai_errors.ClientError) as caught:
        client.models.generate_content(model=model, contents="x", config=config)
    return caught.value


# -- 400 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "JSON object"),
        ({}, "contents"),
        ({"contents": []}, "contents"),
        ({"contents": [{"role": "robot", "parts": [{"text": "x"}]}]}, "contents[0].role"),
        ({"contents": [{"parts": "hi"}]}, "contents[0].parts"),
        ({"contents": [{"parts": [{"text": 5}]}]}, "contents[0].parts[0].text"),
        ({"contents": [{"parts": [{"text": "a", "inlineData": {}}]}]}, "contents[0].parts[0]"),
        (
            {"contents": [{"parts": [{"inlineData": {"mimeType": "text/csv", "data": "@@@"}}]}]},
            "contents[0].parts[0].inlineData.data",
        ),
        ({"contents": [{"parts": [{"inlineData": {"data": "aGk="}}]}]}, "contents[0].parts[0].inlineData.mimeType"),
        ({"contents": [{"parts": [{"fileData": {"fileUri": "gs://x"}}]}]}, "contents[0].parts[0].fileData"),
        ({"contents": [{"parts": [{"text": "x"}]}, {"role": "model", "parts": [{"text": "y"}]}]}, "contents[1].role"),
        (
            {
                "contents": [
                    {"parts": [{"text": "x"}]},
                    {"role": "model", "parts": [{"codeExecutionResult": {"outcome": "OUTCOME_OK"}}]},
                    {"parts": [{"text": "y"}]},
                ]
            },
            "contents[1].parts[0].codeExecutionResult",
        ),
        (
            {
                "contents": [
                    {"parts": [{"text": "x"}]},
                    {"role": "model", "parts": [{"executableCode": {"language": "JAVA", "code": "x"}}]},
                    {"parts": [{"text": "y"}]},
                ]
            },
            "contents[1].parts[0].executableCode.language",
        ),
        ({**HELLO, "tools": [{"functionDeclarations": []}]}, "tools[0].functionDeclarations"),
        ({**HELLO, "tools": {"codeExecution": {}}}, "tools"),
        ({**HELLO, "generationConfig": {"temperature": 3}}, "generationConfig.temperature"),
        ({**HELLO, "generationConfig": {"maxOutputTokens": 0}}, "generationConfig.maxOutputTokens"),
        ({**HELLO, "generationConfig": {"candidateCount": 2}}, "generationConfig.candidateCount"),
        ({**HELLO, "systemInstruction": {"parts": [{"inlineData": {}}]}}, "systemInstruction.parts[0].text"),
        ({**HELLO, "cachedContent": "cachedContents/1"}, "cachedContent"),
    ],
)
def test_bad_requests_get_400_naming_the_field(executor, body, field):
    model = ScriptedModel(["never used"])
    with serve(model, executor) as server:
        assert_error(generate(server, body), 400, "INVALID_ARGUMENT", field)
    assert model.calls == 0


def test_a_plain_chat_cannot_take_a_binary_file(executor):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n\xff\xfe").decode()
    body = {"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": png}}, {"text": "what?"}]}]}
    with serve(ScriptedModel(["never"]), executor) as server:
        assert_error(generate(server, body), 400, "INVALID_ARGUMENT", "input_1.png", "codeExecution")


def test_the_sdk_raises_client_error_400_with_the_field(executor):
    with serve(ScriptedModel(["never"]), executor) as server:
        error = sdk_client_error(
            server,
            config=types.GenerateContentConfig(
                tools=[types.Tool(function_declarations=[types.FunctionDeclaration(name="f")])]
            ),
        )
    assert error.code == 400 and "tools[0].functionDeclarations" in error.message


def test_count_tokens_checks_its_body_too(executor):
    with serve(ScriptedModel(["x"]), executor) as server:
        assert_error(
            request(server, "/v1beta/models/m:countTokens", {"contents": "x", "extra": 1}),
            400,
            "INVALID_ARGUMENT",
            "extra",
        )
        status, _, body = request(
            server, "/v1beta/models/m:countTokens", {"generateContentRequest": {"model": "models/m", **HELLO}}
        )
    assert status == 200 and body["totalTokens"] > 0


# -- 401 / 403 -----------------------------------------------------------------------------


def test_a_server_with_a_key_wants_it_and_never_logs_it(executor):
    with (
        structlog.testing.capture_logs() as logs,
        serve(ScriptedModel(lambda c, t: "fine"), executor, api_key=KEY) as server,
    ):
        missing = generate(server, HELLO)
        wrong = generate(server, HELLO, headers={"x-goog-api-key": "not-the-key"})
        wrong_query = request(server, "/v1beta/models/m:generateContent?key=not-the-key", HELLO)
        listing = request(server, "/v1beta/models", method="GET")
        by_header = generate(server, HELLO, headers={"x-goog-api-key": KEY})
        by_query = request(server, f"/v1beta/models/m:generateContent?key={KEY}", HELLO)
        client = sdk(server, key=KEY)
        by_sdk = client.models.generate_content(model="m", contents="hi").text
        wrong_client = sdk(server, key="wrong")
        with pytest.raises(genai_errors.ClientError) as caught:
            wrong_client.models.generate_content(model="m", contents="hi")

    assert_error(missing, 401, "UNAUTHENTICATED", "x-goog-api-key")
    assert_error(wrong, 403, "PERMISSION_DENIED")
    assert_error(wrong_query, 403, "PERMISSION_DENIED")
    assert_error(listing, 401, "UNAUTHENTICATED")
    assert by_header[0] == 200 and by_query[0] == 200 and by_sdk == "fine"
    assert caught.value.code == 403
    requests = [e for e in logs if e["event"] == "serve.request"]
    assert len(requests) >= 8 and {e["status"] for e in requests} >= {200, 401, 403}
    assert KEY not in repr(logs) and "not-the-key" not in repr(logs)
    assert all("?" not in e["path"] for e in requests)  # the query (and its key) is not logged


# -- 404 / 405 -----------------------------------------------------------------------------


def test_unknown_models_methods_and_routes_are_404(executor):
    with serve(ScriptedModel(["x"]), executor) as server:
        assert_error(
            request(server, "/v1beta/models/other:generateContent", HELLO), 404, "NOT_FOUND", "models/other", "models/m"
        )
        assert_error(request(server, "/v1beta/models/m:embedContent", HELLO), 404, "NOT_FOUND", "embedContent")
        assert_error(request(server, "/v1beta/models/other", method="GET"), 404, "NOT_FOUND")
        assert_error(request(server, "/v2/models", method="GET"), 404, "NOT_FOUND", "v2")
        assert_error(request(server, "/v1beta/files", method="GET"), 404, "NOT_FOUND")
        assert_error(request(server, "/v1beta/models", method="DELETE"), 405, "METHOD_NOT_ALLOWED")
        error = sdk_client_error(server, model="gemini-2.5-flash")
    assert error.code == 404


# -- 413 -----------------------------------------------------------------------------------


def test_bodies_over_the_cap_get_413_declared_or_not(executor):
    big = {"contents": [{"parts": [{"text": "x" * 5000}]}]}
    model = ScriptedModel(lambda c, t: "fine")
    with serve(model, executor, max_body_bytes=4096) as server:
        assert_error(generate(server, big), 413, "INVALID_ARGUMENT", "4096 bytes")
        # Chunked, without Content-Length: counted while read.
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request(
            "POST",
            "/v1beta/models/m:generateContent",
            body=iter([b"{" + b" " * 3000] * 3),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        response = connection.getresponse()
        assert response.status == 413 and json.loads(response.read())["error"]["code"] == 413
        connection.close()
        assert generate(server, HELLO)[0] == 200  # a body under the cap still runs
    assert model.calls == 1


# -- 429 -----------------------------------------------------------------------------------


def test_past_the_concurrency_limit_requests_get_429_with_retry_after(executor):
    model = ScriptedModel(lambda c, t: "slow answer", latency_s=1.0)
    with serve(model, executor, max_concurrent_runs=1, retry_after_s=7) as server:
        first: list = []
        worker = threading.Thread(target=lambda: first.append(generate(server, HELLO)))
        worker.start()
        deadline = time.monotonic() + 5
        while model.calls == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, headers, body = generate(server, HELLO)
        error = sdk_client_error(
            server,
            config=types.GenerateContentConfig(
                http_options=types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1))
            ),
        )
        worker.join()
        after = generate(server, HELLO)
    assert_error((status, headers, body), 429, "RESOURCE_EXHAUSTED", "1 requests")
    assert headers["retry-after"] == "7"
    assert error.code == 429
    assert first[0][0] == 200 and after[0] == 200  # the slot came back


# -- 502 / 504 -----------------------------------------------------------------------------


def failing_model(conversation: Conversation, tools):
    raise ModelError("the backend is down (HTTP 503)", status_code=503)


@pytest.mark.parametrize("code_execution", [True, False])
def test_a_backend_failure_is_502_plain_and_streamed(executor, code_execution):
    config = CODE_EXECUTION if code_execution else None
    with serve(ScriptedModel(failing_model), executor) as server:
        client = sdk(server)
        with pytest.raises(genai_errors.ServerError) as plain:
            client.models.generate_content(model="m", contents="x", config=config)
        with pytest.raises(genai_errors.ServerError) as streamed:
            list(client.models.generate_content_stream(model="m", contents="x", config=config))
    for caught in (plain, streamed):
        assert caught.value.code == 502 and "backend is down" in caught.value.message


def test_a_backend_failure_mid_stream_ends_the_stream_with_the_error(executor):
    def fails_second(conversation: Conversation, tools):
        if isinstance(conversation.messages[-1], ExecutionMessage):
            raise ModelError("lost the backend after the code ran")
        return "Computing.\n```python\nprint(6 * 7)\n```"

    with serve(ScriptedModel(fails_second), executor) as server:
        client = sdk(server)
        seen = []
        with pytest.raises(genai_errors.APIError) as caught:
            for chunk in client.models.generate_content_stream(model="m", contents="x", config=CODE_EXECUTION):
                seen += [p for p in chunk.candidates[0].content.parts]
    assert caught.value.code == 502 and "lost the backend" in caught.value.message
    assert any(p.code_execution_result and "42" in p.code_execution_result.output for p in seen)


def test_a_run_past_the_servers_time_is_504_and_the_server_goes_on(executor):
    async def slow(conversation: Conversation, tools):
        await asyncio.sleep(5)
        return "too late"

    with serve(ScriptedModel(slow), executor, run_timeout_s=0.5) as server:
        started = time.monotonic()
        assert_error(generate(server, HELLO), 504, "DEADLINE_EXCEEDED", "0.5 s")
        assert time.monotonic() - started < 3
        status, _, body = request(server, "/v1beta/models/m:countTokens", HELLO)
    assert status == 200 and body["totalTokens"] > 0


def test_the_server_survives_a_stream_of_bad_input(executor):
    with serve(ScriptedModel(lambda c, t: "still here"), executor) as server:
        for body in (
            b"\xff\xfe",
            b"{",
            b'{"contents": [{"parts": [{"text": "x"}]}]' + b"}" * 3,
            b"null",
            json.dumps({"contents": [{"parts": [{}]}]}).encode(),
        ):
            assert generate(server, body)[0] == 400
        status, _, answer = generate(server, HELLO)
    assert status == 200 and answer["candidates"][0]["content"]["parts"] == [{"text": "still here"}]


def test_stream_without_alt_sse_is_a_json_array(executor):
    with serve(ScriptedModel(lambda c, t: "an answer"), executor) as server:
        status, headers, body = request(server, "/v1beta/models/m:streamGenerateContent", HELLO)
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert isinstance(body, list) and body[0]["candidates"][0]["content"]["parts"] == [{"text": "an answer"}]
    assert body[-1]["candidates"][0]["finishReason"] == "STOP" and "usageMetadata" in body[-1]


class BrokenExecutorDouble:
    """A test double of an executor whose sandbox is broken."""

    name = "broken"
    stateful = False

    async def execute(self, code, *, files=(), limits=None, session=None):
        raise OSError("the sandbox cannot start")

    async def reset(self, session=None):
        pass

    async def aclose(self):
        pass


def test_a_broken_executor_is_500_not_a_failed_program():
    with serve(ScriptedModel(lambda c, t: "```python\nprint(1)\n```"), BrokenExecutorDouble()) as server:
        body = {**HELLO, "tools": [{"codeExecution": {}}]}
        assert_error(generate(server, body), 500, "INTERNAL", "executor failed", "the sandbox cannot start")
