"""Chat sessions (Python) and `codeloop chat`, against the fake Gemini server."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from executors import ExecutionResult, InputFile, Limits, LocalExecutor, Outcome
from executors.testing import FunctionExecutor
from orchestrator import RunStatus, ScriptedModel
from orchestrator.cli import main
from orchestrator.cli.chat import chat
from orchestrator.models.gemini import GeminiModel
from orchestrator.models.openai_compat import to_messages
from orchestrator.models.retry import RetryPolicy
from orchestrator.session import Session, SessionFileError, SyncSession
from orchestrator.testing.fake_gemini import FakeGeminiServer, function_call_response, text_response
from orchestrator.types import CodeBlock, UserMessage

FAST = RetryPolicy(attempts=2, initial_delay_s=0.001, max_delay_s=0.001, timeout_s=5.0)


def gemini(fake) -> GeminiModel:
    return GeminiModel("gemini-2.5-flash", api_key="chat-key", base_url=fake.url, retry=FAST)


async def test_two_turns_carry_the_whole_history(local_executor):
    with FakeGeminiServer(
        [
            function_call_response("print(sum(range(10)))", call_id="a"),
            text_response("The sum is 45."),
            function_call_response("print(45 * 2)", call_id="b"),
            text_response("Doubled, 90."),
        ]
    ) as fake:
        session = Session(gemini(fake), local_executor)
        first = await session.send("Sum 0..9")
        second = await session.send("Double it")

    assert first.summary == "The sum is 45." and second.summary == "Doubled, 90."
    assert second.attempts[0].result.stdout == "90\n" and len(second.attempts) == 1  # per-message results
    assert session.results == [first, second]
    third_request = fake.contents(2)
    texts = [(c["role"], next(iter(c["parts"][0]))) for c in third_request]
    assert texts == [
        ("user", "text"),
        ("model", "functionCall"),
        ("user", "functionResponse"),
        ("model", "text"),
        ("user", "text"),
    ]
    assert third_request[-1]["parts"][0]["text"] == "Double it"
    assert third_request[3]["parts"][0]["text"] == "The sum is 45."
    system = {json.dumps(r.body["systemInstruction"]) for r in fake.requests}
    assert len(system) == 1  # one system instruction for the whole chat


async def test_files_stay_available_and_are_described_once(local_executor):
    with FakeGeminiServer(
        [
            function_call_response("print(open('n.txt').read())"),
            text_response("It says hello."),
            function_call_response("print(open('n.txt').read().upper())"),
            text_response("HELLO"),
        ]
    ) as fake:
        session = Session(gemini(fake), local_executor)
        await session.send("Read n.txt", files=[InputFile("n.txt", b"hello")])
        second = await session.send("Shout it")

    assert second.status is RunStatus.SOLVED and second.attempts[0].result.stdout == "HELLO\n"
    listings = [p["text"] for c in fake.contents(3) for p in c["parts"] if "Input files" in p.get("text", "")]
    assert listings == ["Input files in the working directory: n.txt (5 bytes)."]
    assert [len(m.files) for m in session.conversation.messages if isinstance(m, UserMessage)] == [1, 0]
    assert list(session.files) == ["n.txt"]


async def test_reset_save_and_load(tmp_path, local_executor):
    model = ScriptedModel(["```python\nprint(1)\n```", "one", "two"])
    session = Session(model, local_executor, session_id="s1")
    await session.send("first", files=[InputFile("a.txt", b"A")])
    path = session.save(tmp_path / "chat.json")

    restored = Session(model, local_executor)
    await restored.load(path)
    assert restored.id == "s1" and restored.conversation.to_json() == session.conversation.to_json()
    assert restored.results[0].to_json() == session.results[0].to_json()
    assert restored.files == {"a.txt": InputFile("a.txt", b"A")}
    again = await restored.send("second")
    assert again.summary == "two" and restored.conversation.count("user") == 2

    await restored.reset()
    assert restored.conversation.messages == [] and restored.files == {} and restored.results == []

    bad = tmp_path / "bad.json"
    bad.write_text("{\n  nope")
    with pytest.raises(SessionFileError, match=r"bad.json: line 2: not JSON"):
        await restored.load(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(SessionFileError, match="not a codeloop session file"):
        await restored.load(bad)


async def test_a_chat_saved_before_messages_were_typed_loads_and_continues(tmp_path):
    # Saved by codeloop before the tagged messages: one shape with a role and
    # optional text, turn, result, code_blocks, files and images.
    old = Path(__file__).parent / "data" / "session_v1.json"
    seen: list[int] = []  # messages in each request

    def script(conversation, tools):
        seen.append(len(conversation.messages))
        return "```python\nprint(4)\n```" if isinstance(conversation.messages[-1], UserMessage) else "It is 4."

    executor = FunctionExecutor(lambda code, files, limits: ExecutionResult(outcome=Outcome.OK, stdout="4\n"))
    session = Session(ScriptedModel(script), executor)
    await session.load(old)

    messages = session.conversation.messages
    assert [m.kind for m in messages] == [
        "user",
        "model",
        "execution",
        "model",
        "execution",
        "model",
        "user",
        "model",
        "execution",
        "model",
    ]
    first, calling, failed, _, _, answer, _, fenced, drawn, _ = messages
    assert first.text == "Add one and two, reading a.csv" and [f.name for f in first.files] == ["a.csv"]
    assert calling.turn.code_blocks == [CodeBlock("print(1/0)", source="tool_call", call_id="call_a")]
    assert failed.result.error_type == "ZeroDivisionError" and failed.feedback.startswith("The code failed")
    assert answer.turn.text == "The answer is 3." and "```python" in fenced.turn.text
    assert [i.name for i in drawn.images] == ["fig.png"] and "Figures attached" in drawn.feedback
    sent = to_messages(session.conversation)  # the failed call is answered with its feedback
    assert [m["role"] for m in sent[:5]] == ["system", "user", "assistant", "tool", "assistant"]
    assert sent[3] == {"role": "tool", "tool_call_id": "call_a", "content": failed.feedback}

    result = await session.send("And plus one?")
    assert result.summary == "It is 4." and seen == [11, 13]  # the whole saved history, then the feedback
    saved = json.loads(session.save(tmp_path / "again.json").read_text())
    assert [m["kind"] for m in saved["conversation"]["messages"][-4:]] == ["user", "model", "execution", "model"]
    restored = Session(ScriptedModel(script), executor)
    await restored.load(tmp_path / "again.json")
    assert restored.conversation == session.conversation


async def test_every_message_names_the_same_executor_session(local_executor):
    async def run_locally(code, files, limits):
        return await local_executor.execute(code, files=files, limits=limits)

    executor = FunctionExecutor(run_locally, name="session-recording", stateful=True)
    model = ScriptedModel(["```python\nx = 1\n```", "set", "```python\nprint(x)\n```", "printed"])
    session = Session(model, executor, session_id="chat-7")
    await session.send("set x")
    await session.send("print x")
    await session.reset()
    assert executor.sessions == ["chat-7", "chat-7"] and executor.resets == ["chat-7"]


def test_sync_session(tmp_path):
    model = ScriptedModel(["```python\nprint(6 * 7)\n```", "42", "```python\nprint(7)\n```", "7"])
    with SyncSession(model, LocalExecutor(limits=Limits(timeout_s=10))) as session:
        assert session.send("6*7").summary == "42"
        assert session.send("7").attempts[0].result.stdout == "7\n"
        assert session.conversation.count("user") == 2
        session.save(tmp_path / "s.json")
        session.reset()
        assert session.conversation.messages == []
        session.load(tmp_path / "s.json")
        assert session.conversation.count("user") == 2


async def test_chat_repl_from_stdin(tmp_path, local_executor):
    data = tmp_path / "data.csv"
    data.write_text("x\n1\n2\n")
    saved = tmp_path / "saved.json"
    with FakeGeminiServer(
        [
            function_call_response("import pandas as pd\nprint(pd.read_csv('data.csv').x.sum())"),
            text_response("The total is 3."),
            text_response("You asked about the total."),
            text_response("Fresh start."),
        ]
    ) as fake:
        session = Session(gemini(fake), local_executor)
        stdin = io.StringIO(
            f"/file {data}\nWhat is the total of x?\n/save {saved}\nWhat did I ask?\n/bogus\n/reset\nhello\n/quit\n"
            "never sent\n"
        )
        out = io.StringIO()
        assert await chat(session, stdin, out) == 0

    text = out.getvalue()
    assert "The total is 3." in text and "You asked about the total." in text and "Fresh start." in text
    assert "  3" in text  # the live output of the code
    assert f"saved 4 messages to {saved}" in text and "unknown command /bogus" in text
    assert "conversation cleared" in text
    assert len(fake.requests) == 4
    assert len(fake.contents(2)) == 5 and len(fake.contents(3)) == 1  # history, then none after /reset
    assert json.loads(saved.read_text())["conversation"]["messages"][0]["files"][0]["name"] == "data.csv"


def test_chat_command_with_the_model_from_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEMINI_API_KEY", "env-key")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with FakeGeminiServer([text_response("Hi there.")], expected_key="env-key") as fake:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake.url)
        monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
        assert main(["chat", "--executor", "local"]) == 0
    out = capsys.readouterr().out
    assert "codeloop chat with gemini:gemini-2.5-flash" in out and "Hi there." in out


def test_chat_without_a_model_or_key_uses_the_local_model_and_says_why(monkeypatch, capsys, tmp_path):
    from orchestrator.models import registry

    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    weights = tmp_path / "default.gguf"  # never loaded: nothing is asked, so no server starts
    weights.write_bytes(b"GGUF")
    monkeypatch.setattr(registry, "DEFAULT_LOCAL_MODEL", str(weights))
    monkeypatch.setattr("sys.stdin", io.StringIO("/quit\n"))
    assert main(["chat", "--executor", "local"]) == 0
    captured = capsys.readouterr()
    assert f"codeloop: using local:{weights} (no --model given" in captured.err
    assert f"codeloop chat with local:{weights}" in captured.out
