"""The loop's semantics, driven by a scripted model and a real executor."""

from __future__ import annotations

import pytest

from executors import InputFile, Limits, Outcome
from executors.testing import FunctionExecutor
from orchestrator import Orchestrator, RunStatus, ScriptedModel, events
from orchestrator.models import ModelError
from orchestrator.types import CodeBlock, ExecutionMessage, ModelTurn, RunResult, UserMessage

FAIL = "```python\nraise ValueError('boom')\n```"


def fail(n: int) -> str:
    """A failing program that differs each time (a repeat is not run again)."""
    return f"```python\nraise ValueError('boom {n}')\n```"


FIX = "```python\nprint(6 * 7)\n```"


def py(code: str) -> str:
    return f"Let me compute that.\n\n```python\n{code}\n```"


async def test_solves_first_time(local_executor):
    model = ScriptedModel([py("print(sum(range(10)))"), "The sum is 45."])
    result = await Orchestrator(model, local_executor).run("sum 0..9")
    assert result.status is RunStatus.SOLVED
    assert [a.result.stdout for a in result.attempts] == ["45\n"]
    assert result.summary == "The sum is 45."
    assert result.retries == 0
    assert model.calls == 2
    assert result.usage.requests == 2


async def test_fails_twice_then_fixes(local_executor):
    model = ScriptedModel([fail(1), fail(2), FIX, "It is 42."])
    result = await Orchestrator(model, local_executor).run("q")
    assert result.status is RunStatus.SOLVED
    assert len(result.attempts) == 3
    assert [a.result.outcome for a in result.attempts] == [Outcome.FAILED, Outcome.FAILED, Outcome.OK]
    assert result.attempts[0].result.error_type == "ValueError"
    assert result.retries == 2
    assert result.attempts[-1].result.stdout == "42\n"


async def test_always_failing_stops_after_six_executions_and_asks_for_failure_summary(local_executor):
    seen_tools: list[bool] = []

    def script(conversation, tools):
        seen_tools.append(bool(tools))
        if not tools:
            return "I could not make it work: every attempt raised ValueError."
        return fail(conversation.count("model"))

    model = ScriptedModel(script)
    result = await Orchestrator(model, local_executor, max_retries=5).run("q")
    assert result.status is RunStatus.FAILED
    assert len(result.attempts) == 6
    assert all(not a.ok for a in result.attempts)
    assert seen_tools == [True] * 6 + [False]
    assert "could not make it work" in result.summary


async def test_failure_summary_request_names_the_failures(local_executor):
    last_messages = []

    def script(conversation, tools):
        last_messages.append(conversation.messages[-1])
        return "Gave up." if not tools else fail(conversation.count("model"))

    await Orchestrator(ScriptedModel(script), local_executor, max_retries=2).run("q")
    final = last_messages[-1]
    assert isinstance(final, UserMessage)
    assert "failed 3 times" in final.text


async def test_max_retries_zero_means_one_execution(local_executor):
    model = ScriptedModel(lambda c, t: "Failed." if not t else FAIL)
    result = await Orchestrator(model, local_executor, max_retries=0).run("q")
    assert len(result.attempts) == 1
    assert result.status is RunStatus.FAILED


async def test_answer_without_code(local_executor):
    result = await Orchestrator(ScriptedModel(["Paris."]), local_executor).run("Capital of France?")
    assert result.status is RunStatus.ANSWERED_WITHOUT_CODE
    assert result.attempts == []
    assert result.summary == "Paris."


async def test_several_successful_steps_are_bounded_by_max_steps(local_executor):
    def script(conversation, tools):
        step = conversation.count("model")
        return "Done after the step limit." if not tools else py(f"print('step {step}')")

    result = await Orchestrator(ScriptedModel(script), local_executor, max_steps=3).run("q")
    assert len(result.attempts) == 3
    assert result.status is RunStatus.SOLVED
    assert result.summary == "Done after the step limit."


async def test_step_bound_on_a_failure_counts_as_no_retries_left(local_executor):
    conversations = []

    def script(conversation, tools):
        conversations.append(conversation)
        return "Out of steps." if not tools else fail(conversation.count("model"))

    orch = Orchestrator(ScriptedModel(script), local_executor, max_retries=5, max_steps=2)
    retries = [e async for e in orch.stream("q") if isinstance(e, events.Retry)]
    assert [e.retries_left for e in retries] == [1]
    executions = [m for m in conversations[-1].messages if isinstance(m, ExecutionMessage)]
    assert len(executions) == 2
    assert "(1 retries left)" in executions[0].feedback
    assert "(0 retries left)" in executions[1].feedback


async def test_multi_step_then_answer(local_executor):
    model = ScriptedModel([py("x = 2\nprint(x)"), py("print(3)"), "Two steps: 2 then 3."])
    result = await Orchestrator(model, local_executor).run("q")
    assert [a.result.stdout for a in result.attempts] == ["2\n", "3\n"]
    assert result.status is RunStatus.SOLVED


async def test_execution_message_carries_trimmed_traceback(local_executor):
    conversations = []

    def script(conversation, tools):
        conversations.append(conversation)
        return FAIL if conversation.count("model") == 0 else "ok"

    await Orchestrator(ScriptedModel(script), local_executor).run("q")
    execution = next(m for m in conversations[-1].messages if isinstance(m, ExecutionMessage))
    assert "ValueError: boom" in execution.feedback
    assert "raise ValueError('boom')" in execution.feedback
    assert "harness" not in execution.feedback  # the executor's own frames are not shown
    assert "retries left" in execution.feedback


async def test_code_restated_in_the_answer_is_not_run_again(local_executor):
    code = "print(5117)"
    model = ScriptedModel([py(code), f"The answer is 5117, computed with:\n```python\n{code}\n```"])
    result = await Orchestrator(model, local_executor).run("q")
    assert len(result.attempts) == 1
    assert "5117" in result.summary


async def test_tool_call_code_blocks_are_used_directly(local_executor):
    turn = ModelTurn(text="", code_blocks=[CodeBlock(code="print('tool')", source="tool_call", call_id="c1")])
    result = await Orchestrator(ScriptedModel([turn, "Done."]), local_executor).run("q")
    assert result.attempts[0].result.stdout == "tool\n"


async def test_several_blocks_in_one_turn_run_together_in_order(local_executor):
    text = "First:\n```python\na = 20\n```\nthen:\n```python\nprint(a + 1)\n```"
    result = await Orchestrator(ScriptedModel([text, "21"]), local_executor).run("q")
    assert len(result.attempts) == 1
    assert result.attempts[0].result.stdout == "21\n"


async def test_shell_blocks_are_never_executed(local_executor, tmp_path):
    marker = tmp_path / "ran"
    text = f"```bash\ntouch {marker}\n```\nand\n```python\nprint('py')\n```"
    result = await Orchestrator(ScriptedModel([text, "ok"]), local_executor).run("q")
    assert result.attempts[0].result.stdout == "py\n"
    assert not marker.exists()


async def test_input_files_reach_the_code(local_executor):
    model = ScriptedModel([py("print(open('data.csv').read().strip())"), "ok"])
    result = await Orchestrator(model, local_executor).run("q", files=[InputFile("data.csv", b"a,b\n1,2\n")])
    assert result.attempts[0].result.stdout == "a,b\n1,2\n"


async def test_model_error_ends_the_run_as_failed_with_the_error_recorded(local_executor):
    def script(conversation, tools):
        raise ModelError("server said 500", status_code=500)

    result = await Orchestrator(ScriptedModel(script), local_executor).run("q")
    assert result.status is RunStatus.FAILED
    assert "server said 500" in result.error


async def test_executor_exception_becomes_sandbox_error():
    def broken(code, files, limits):
        raise RuntimeError("no room at the inn")

    model = ScriptedModel(lambda c, t: "gave up" if not t else FIX)
    result = await Orchestrator(model, FunctionExecutor(broken, name="broken"), max_retries=1).run("q")
    # The executor broke, not the code: no retry is spent on it, and the run
    # ends failed with the error recorded so a batch can re-run it.
    assert [a.result.outcome for a in result.attempts] == [Outcome.SANDBOX_ERROR]
    assert "no room at the inn" in result.attempts[0].result.error_message
    assert result.status is RunStatus.FAILED
    assert result.error == "executor failed: RuntimeError: no room at the inn"
    assert model.calls == 1


async def test_timeout_is_a_failed_attempt(local_executor):
    model = ScriptedModel([py("while True: pass"), FIX, "42"])
    result = await Orchestrator(model, local_executor, limits=Limits(timeout_s=0.5)).run("q")
    assert result.attempts[0].result.outcome is Outcome.DEADLINE_EXCEEDED
    assert result.status is RunStatus.SOLVED


async def test_event_stream_order(local_executor):
    model = ScriptedModel([FAIL, FIX, "42"])
    kinds = [e.type async for e in Orchestrator(model, local_executor).stream("q")]
    assert kinds == [
        "model_request",
        "model_response",
        "code_extracted",
        "execution_started",
        "execution_finished",
        "retry",
        "model_request",
        "model_response",
        "code_extracted",
        "execution_started",
        "execution_finished",
        "model_request",
        "model_response",
        "summary",
        "done",
    ]


def test_each_event_type_on_the_wire_is_its_class_name_in_snake_case():
    # Clients (MCP, serve, UIs) match on these strings: renaming a class must not change one silently.
    assert {cls.__name__: cls.type for cls in events.Event.__subclasses__()} == {
        "ModelRequest": "model_request",
        "TextDelta": "text_delta",
        "ModelResponse": "model_response",
        "CodeExtracted": "code_extracted",
        "ExecutionStarted": "execution_started",
        "ExecutionFinished": "execution_finished",
        "Retry": "retry",
        "Summary": "summary",
        "Done": "done",
    }


async def test_run_result_json_round_trip(local_executor):
    model = ScriptedModel([py("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nprint('x')"), "A plot."])
    result = await Orchestrator(model, local_executor).run("plot")
    assert result.artifacts and result.artifacts[0].mime_type == "image/png"
    again = RunResult.from_json(result.to_json())
    assert again.to_json() == result.to_json()
    assert again.artifacts[0].data == result.artifacts[0].data


async def test_streaming_model_deltas_reach_the_event_stream(local_executor):
    class StreamingScript(ScriptedModel):
        async def generate_stream(self, conversation, tools=()):
            turn = await self.generate(conversation, tools)
            for i in range(0, len(turn.text), 5):
                yield turn.text[i : i + 5]
            yield turn

    model = StreamingScript(["The answer is forty-two."])
    deltas = [
        e.text
        async for e in Orchestrator(model, local_executor, stream_text=True).stream("q")
        if isinstance(e, events.TextDelta)
    ]
    assert "".join(deltas) == "The answer is forty-two."


def test_settings_are_validated():
    with pytest.raises(ValueError, match="max_retries"):
        Orchestrator(ScriptedModel([]), object(), max_retries=-1)
    with pytest.raises(ValueError, match="max_steps"):
        Orchestrator(ScriptedModel([]), object(), max_steps=0)
