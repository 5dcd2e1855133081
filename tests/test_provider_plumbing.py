"""The pieces every provider shares: keys, error kinds, the conversation walk."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from executors import ExecutionResult, InputFile, Outcome
from orchestrator.models import ModelAuthError, RateLimitError
from orchestrator.models._conversation import NOT_RUN, answer_text, walk
from orchestrator.models._errors import retry_after_seconds, status_error
from orchestrator.models._keys import ApiKey, find_key, require_key
from orchestrator.models.base import OTHER_CALL_NOTE
from orchestrator.types import CodeBlock, Conversation, ExecutionMessage, ModelMessage, ModelTurn, UserMessage

KEY = ApiKey("secret-value-123", "TEST_KEY")


def test_keys_follow_the_order_given_and_never_show_in_a_repr():
    env = {"B": "from-b", "A": "from-a"}
    assert find_key(None, env, ("A", "B")) == ApiKey("from-a", "A")
    assert find_key("given", env, ("A",)).source == "the api_key argument"
    assert find_key(None, {"A": ""}, ("A",)) is None
    with pytest.raises(ModelAuthError, match="set A"):
        require_key(None, {}, ("A",), missing="no key: set A")
    assert "secret-value-123" not in repr(KEY) and KEY.redact("x secret-value-123 y") == "x *** y"


@pytest.mark.parametrize(
    ("code", "kind", "retryable"),
    [
        (401, ModelAuthError, False),
        (403, ModelAuthError, False),
        (429, RateLimitError, True),
        (400, None, False),
        (404, None, False),
        (408, None, True),
        (500, None, True),
        (503, None, True),
        (529, None, True),
    ],
)
def test_http_statuses_map_to_error_kinds(code, kind, retryable):
    error = status_error("Prov", code, "it said secret-value-123", key=KEY, key_help="check TEST_KEY")
    assert error.status_code == code and error.retryable is retryable
    if kind is not None:
        assert isinstance(error, kind)
    assert "secret-value-123" not in str(error) and f"HTTP {code}" in str(error)
    if kind is ModelAuthError:
        assert "from TEST_KEY" in str(error) and "check TEST_KEY" in str(error)


def test_a_key_rejection_with_another_status_is_an_auth_error():
    error = status_error("Gemini", 400, "API key not valid", key=KEY, key_help="h", auth=True)
    assert isinstance(error, ModelAuthError) and error.status_code == 400


def test_retry_after_in_seconds_or_as_an_http_date():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds({"retry-after": "2.5"}) == 2.5
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 2026 12:00:30 GMT"}, now=now) == 30.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None and retry_after_seconds(None) is None


class RecordingWriter:
    """A test double for a provider's writer: records what the walk tells it."""

    def __init__(self) -> None:
        self.log: list[tuple] = []

    def model_turn(self, message):
        calls = [b.call_id for b in message.turn.code_blocks]
        self.log.append(("model", tuple(calls)))
        return calls

    def answer_calls(self, calls, execution):
        self.log.append(("answer", tuple(answer_text(i, execution) for i in range(len(calls)))))

    def execution_text(self, execution):
        self.log.append(("feedback", execution.feedback))

    def user(self, message, new_files):
        self.log.append(("user", message.text, tuple(f.name for f in new_files)))


def test_the_walk_answers_calls_once_and_sends_each_file_once():
    two_calls = ModelTurn(
        code_blocks=[CodeBlock("a", source="tool_call", call_id="1"), CodeBlock("b", source="tool_call", call_id="2")]
    )
    one_call = ModelTurn(code_blocks=[CodeBlock("c", source="tool_call", call_id="3")])
    data = InputFile("d.csv", b"1")
    conversation = Conversation(
        messages=[
            UserMessage(text="q", files=[data]),
            ModelMessage(turn=two_calls),
            ExecutionMessage(result=ExecutionResult(outcome=Outcome.OK), feedback="out"),
            ModelMessage(turn=one_call),
            UserMessage(text="again", files=[data, InputFile("e.csv", b"2")]),
            ModelMessage(turn=ModelTurn(text="fenced")),
            ExecutionMessage(result=ExecutionResult(outcome=Outcome.OK), feedback="fenced out"),
        ]
    )
    writer = RecordingWriter()
    walk(conversation, writer)
    assert writer.log == [
        ("user", "q", ("d.csv",)),
        ("model", ("1", "2")),
        ("answer", ("out", OTHER_CALL_NOTE)),
        ("model", ("3",)),
        ("answer", (NOT_RUN,)),  # the user spoke before the call was answered
        ("user", "again", ("e.csv",)),
        ("model", ()),
        ("feedback", "fenced out"),
    ]


def test_the_walk_rejects_what_is_not_a_message():
    with pytest.raises(ValueError, match="message 0 is a dict, not a message"):
        walk(Conversation(messages=[{"role": "system", "text": "x"}]), RecordingWriter())  # type: ignore[list-item]
