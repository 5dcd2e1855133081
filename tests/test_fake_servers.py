"""The fake model servers themselves, and the model registry entries that use them."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from orchestrator.models import ModelAuthError, default_model_spec, get_model
from orchestrator.models.gemini import GeminiModel
from orchestrator.testing.fake_gemini import FakeGeminiServer, split_for_stream, text_response
from orchestrator.testing.fake_http import Fault, Malformed, Stream, load_script, reply_from_json
from orchestrator.testing.fake_openai import FakeOpenAIServer, chunks_of, tool_call_completion


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict | str]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_gemini_fake_routes_records_and_reports_exhaustion():
    with FakeGeminiServer([text_response("one")]) as fake:
        status, body = post(
            f"{fake.url}/v1beta/models/m:generateContent", {"contents": []}, {"x-goog-api-key": "secret-key"}
        )
        assert status == 200 and json.loads(body)["candidates"][0]["content"]["parts"] == [{"text": "one"}]
        status, body = post(f"{fake.url}/v1beta/models/m:generateContent", {"contents": []})
        assert status == 500 and "script exhausted after 1 replies" in body["error"]["message"]
        status, body = post(f"{fake.url}/v1beta/files", {})
        assert status == 404 and body["error"]["status"] == "NOT_FOUND"
    first = fake.requests[0]
    assert first.body == {"contents": []} and first.headers["x-goog-api-key"] == "<redacted>"
    assert first.key_fingerprint and "secret-key" not in repr(first)
    assert fake.requests[1].key_fingerprint is None


def test_gemini_fake_answers_from_a_function():
    seen = []

    def script(request):
        seen.append(request.body["contents"][-1]["parts"][0]["text"])
        return text_response(seen[-1].upper()) if len(seen) < 2 else Fault(503, "tired")

    with FakeGeminiServer(script) as fake:
        assert (
            json.loads(
                post(f"{fake.url}/v1beta/models/m:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]})[1]
            )["candidates"][0]["content"]["parts"][0]["text"]
            == "HI"
        )
        status, body = post(f"{fake.url}/v1beta/models/m:generateContent", {"contents": [{"parts": [{"text": "x"}]}]})
        assert (status, body["error"]["status"]) == (503, "UNAVAILABLE")
        with pytest.raises(TypeError, match="no reply queue"):
            fake.add(text_response("x"))


def test_stream_splitting_keeps_every_part_and_puts_usage_last():
    body = text_response("abcdefghi")
    chunks = split_for_stream(body)
    assert ["".join(p["text"] for c in chunks for p in c["candidates"][0]["content"]["parts"])] == ["abcdefghi"]
    assert len(chunks) == 3 and "usageMetadata" in chunks[-1] and "usageMetadata" not in chunks[0]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    openai_chunks = chunks_of(tool_call_completion("print(1)", text="ok"))
    args = "".join(
        c["choices"][0]["delta"].get("tool_calls", [{}])[0].get("function", {}).get("arguments", "")
        for c in openai_chunks
        if c["choices"]
    )
    assert json.loads(args) == {"code": "print(1)"} and openai_chunks[-1]["usage"]["total_tokens"] == 15


def test_openai_fake_rejects_tools_like_ollama():
    with FakeOpenAIServer([], tools_supported=False) as fake:
        status, body = post(
            f"{fake.base_url}/chat/completions",
            {"model": "tiny", "messages": [], "tools": [{}]},
            {"Authorization": "Bearer sk-hidden"},
        )
    assert status == 400 and "tiny does not support tools" in body["error"]["message"]
    assert fake.requests[0].headers["authorization"] == "<redacted>"


def test_json_scripts(tmp_path):
    path = tmp_path / "script.json"
    path.write_text(
        json.dumps(
            [
                text_response("hi"),
                {"fault": 429, "message": "slow"},
                {"malformed": "{oops"},
                {"stream": [{"candidates": []}], "delay_s": 0.1},
            ]
        )
    )
    replies = load_script(str(path))
    assert replies[1] == Fault(429, "slow") and replies[2] == Malformed(b"{oops")
    assert isinstance(replies[3], Stream) and replies[3].delay_s == 0.1
    path.write_text(json.dumps([{"fault": 500}, 7]))
    with pytest.raises(ValueError, match=r"script.json: entry 1: a script entry must be a JSON object"):
        load_script(str(path))
    with pytest.raises(ValueError):
        reply_from_json([])


def test_fake_gemini_runs_as_a_program_for_users(tmp_path):
    script = tmp_path / "replies.json"
    script.write_text(json.dumps([text_response("from the command line")]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.testing.fake_gemini", "--script", str(script)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        url = line.split("GOOGLE_GEMINI_BASE_URL=")[1].split(")")[0]
        status, body = post(f"{url}/v1beta/models/m:generateContent", {"contents": []})
        assert status == 200 and "from the command line" in body
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_registry_builds_gemini_models_from_strings(monkeypatch):
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    assert default_model_spec({}) == "local:qwen2.5-coder-1.5b"  # no key: the local model
    with pytest.raises(ModelAuthError, match="GEMINI_API_KEY"):
        get_model("gemini:gemini-2.5-flash")
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    assert default_model_spec({"GEMINI_API_KEY": "k"}) == "gemini:gemini-2.5-flash"
    client = get_model("gemini:gemini-2.5-pro")
    server = get_model("gemini-server:gemini-2.5-flash")
    assert isinstance(client, GeminiModel) and (client.mode, client.model) == ("client", "gemini-2.5-pro")
    assert isinstance(server, GeminiModel) and server.name == "gemini-server:gemini-2.5-flash"


def test_base_url_from_the_sdk_variable(monkeypatch):
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", "http://127.0.0.1:9")
    assert GeminiModel(api_key="k").base_url == "http://127.0.0.1:9"
