"""The loop's answers to what real small models did wrong (issue: the loop
works with the models people run), driven by scripted test doubles and a
real executor."""

from __future__ import annotations

import json
import re

from executors import ExecutionResult, InputFile, Outcome
from orchestrator import Orchestrator, RunStatus, ScriptedModel
from orchestrator.budget import conversation_tokens, fit
from orchestrator.prompts import VERIFY_REQUEST, Prompts
from orchestrator.types import Conversation, ExecutionMessage, ModelMessage, ModelTurn, UserMessage

CALL_AS_TEXT = "```json\n" + json.dumps({"name": "run_python", "arguments": {"code": "print(6 * 7)"}}) + "\n```"
MISNAMED = "```json\n" + json.dumps({"name": "sum_of_primes", "arguments": {"code": "print(5117)"}}) + "\n```"


def last_said(conversation: Conversation) -> str:
    """What the model read last: a user message's text or an execution's feedback."""
    match conversation.messages[-1]:
        case UserMessage(text=text) | ExecutionMessage(feedback=text):
            return text
    raise AssertionError("the last message is the model's own")


async def test_a_call_written_as_text_runs_and_switches_the_run_to_fenced_code(local_executor):
    seen = []

    def script(conversation, tools):
        seen.append((bool(tools), conversation.system))
        return CALL_AS_TEXT if conversation.count("model") == 0 else "It is 42."

    result = await Orchestrator(ScriptedModel(script), local_executor).run("compute 6*7")
    assert result.status is RunStatus.SOLVED and result.attempts[0].result.stdout == "42\n"
    (tools_first, system_first), (tools_then, system_then) = seen
    assert tools_first and "run_python" in system_first
    assert not tools_then and "run_python" not in system_then and "```python" in system_then


async def test_tools_off_never_names_a_tool(local_executor):
    systems = []

    def script(conversation, tools):
        systems.append(conversation.system)
        assert not tools
        return "```python\nprint(1)\n```" if conversation.count("model") == 0 else "1"

    await Orchestrator(ScriptedModel(script), local_executor, tools="off").run("compute 1")
    assert "run_python" not in systems[0] and not re.search(r"\btools?\b", systems[0], re.IGNORECASE)


async def test_a_call_to_a_tool_never_offered_runs_nothing_and_costs_a_retry(local_executor):
    replies = iter([MISNAMED, "```python\nprint(2 + 3)\n```", "5"])
    notes = []

    def script(conversation, tools):
        notes.append(last_said(conversation))
        return next(replies)

    result = await Orchestrator(ScriptedModel(script), local_executor).run("compute 2+3")
    assert [a.code for a in result.attempts] == ["print(2 + 3)"]  # print(5117) never ran
    assert "no tool named 'sum_of_primes'" in notes[1]
    assert result.status is RunStatus.SOLVED and result.retries == 0


async def test_an_identical_failing_program_is_not_run_again(local_executor):
    fail = "```python\nraise ValueError('same')\n```"
    notes = []

    def script(conversation, tools):
        notes.append(last_said(conversation))
        if not tools:
            return "It failed."
        return fail if conversation.count("model") < 2 else "```python\nprint('fixed')\n```"

    result = await Orchestrator(ScriptedModel(script), local_executor).run("q")
    assert len(result.attempts) == 2 and result.repeats_rejected == 1
    assert "same as attempt 1" in notes[2] and "not run again" in notes[2]
    assert result.status is RunStatus.SOLVED and result.retries == 2  # one failure, one rejected repeat


async def test_a_task_with_files_answered_without_code_is_asked_once_then_unverified(local_executor):
    asked = []

    def script(conversation, tools):
        asked.append(last_said(conversation))
        return "The mean is 21.5."  # made up, never computed

    data = InputFile(name="weather.csv", data=b"day,temp\n1,20\n2,23\n")
    result = await Orchestrator(ScriptedModel(script), local_executor).run("What is the mean temp?", files=[data])
    assert result.status is RunStatus.UNVERIFIED and result.code_requested and not result.ok
    assert len(asked) == 2 and "needs its result computed" in asked[1] and "weather.csv" in asked[1]


async def test_a_question_that_needs_no_code_is_answered_without_code(local_executor):
    model = ScriptedModel(["A list is mutable; a tuple is not."])
    result = await Orchestrator(model, local_executor).run("In one sentence: list versus tuple?")
    assert result.status is RunStatus.ANSWERED_WITHOUT_CODE and result.ok and model.calls == 1


async def test_require_code_never_and_always(local_executor):
    never = await Orchestrator(ScriptedModel(["42"]), local_executor, require_code="never").run("compute 6*7")
    assert never.status is RunStatus.ANSWERED_WITHOUT_CODE
    always = await Orchestrator(ScriptedModel(["hi", "hello"]), local_executor, require_code="always").run("say hi")
    assert always.status is RunStatus.UNVERIFIED and always.code_requested


async def test_the_system_text_shows_the_first_lines_of_text_files():
    prompts = Prompts()
    from executors import Limits

    text = prompts.system(
        Limits(),
        [
            InputFile(name="w.csv", data=b"day,temperature_c\n1,14.7\n"),
            InputFile(name="p.png", data=b"\x89PNG\r\n\x1a\n\xff\xfe"),
        ],
    )
    assert "day,temperature_c" in text and "p.png" in text and "PNG" not in text.split("p.png")[1][:20]


async def test_the_failure_summary_request_says_the_task_failed(local_executor):
    last = []

    def script(conversation, tools):
        last.append(last_said(conversation))
        return "Sorry." if not tools else f"```python\nraise KeyError('k{conversation.count('model')}')\n```"

    result = await Orchestrator(ScriptedModel(script), local_executor, max_retries=1).run("compute it")
    assert result.status is RunStatus.FAILED
    assert "the task failed" in last[-1] and "no result was verified" in last[-1]


async def test_the_verify_step_is_asked_once_when_switched_on(local_executor):
    replies = iter(["```python\nprint(328)\n```", "328", "```python\nprint(len([1]))\n```", "1 item, 328"])
    asked = []

    def script(conversation, tools):
        asked.append(last_said(conversation))
        return next(replies)

    orch = Orchestrator(ScriptedModel(script), local_executor, prompts=Prompts(verify_request=VERIFY_REQUEST))
    result = await orch.run("sum the first 50 primes")
    assert sum("test your result" in a for a in asked) == 1
    assert len(result.attempts) == 2 and result.summary == "1 item, 328"


def test_a_five_retry_run_fits_in_4096_tokens():
    conversation = Conversation(system="s" * 2400)
    conversation.add(UserMessage(text="task " * 100))
    for n in range(6):
        code = f"print({n})\n" + "x = 1\n" * 200
        conversation.add(ModelMessage(turn=ModelTurn(text=f"```python\n{code}```")))
        conversation.add(
            ExecutionMessage(result=ExecutionResult(outcome=Outcome.FAILED), feedback="Traceback\n" + "frame\n" * 600)
        )
    assert conversation_tokens(conversation) > 4096 - 1024
    fitted = fit(conversation, 4096 - 1024)
    assert conversation_tokens(fitted) <= 4096 - 1024
    assert fitted.messages[-1].feedback.startswith("Traceback")  # the latest feedback: cut last, head kept
    assert fitted.messages[-2].turn == conversation.messages[-2].turn  # and the latest code
    assert conversation_tokens(conversation) > 4096  # the run's own history is not changed
    assert fit(Conversation(system="short"), 100).system == "short"


async def test_the_loop_keeps_requests_inside_the_models_context(local_executor):
    peaks = []

    def script(conversation, tools):
        peaks.append(conversation_tokens(conversation))
        if not tools:
            return "It failed."
        n = conversation.count("model")
        return f"```python\nprint('y' * 3000)\nraise ValueError('{n}')\n```"

    model = ScriptedModel(script)
    model.context_length = 4096
    result = await Orchestrator(model, local_executor).run("compute")
    assert len(result.attempts) == 6
    assert max(peaks) <= 4096 - 1024 and result.peak_request_tokens <= 4096 - 1024


async def test_a_reply_cut_off_at_the_output_limit_is_not_run_and_costs_a_retry(local_executor):
    cut = ModelTurn(text="```python\ndef f(s):\n    '''(()) (()) (()) (()) (()) (())", finish_reason="length")
    asked = []

    def script(conversation, tools):
        asked.append(last_said(conversation))
        return [cut, "```python\nprint(1)\n```", "1"][conversation.count("model")]

    result = await Orchestrator(ScriptedModel(script), local_executor).run("compute 1")
    assert [a.code for a in result.attempts] == ["print(1)"] and result.retries == 0
    assert "cut off at the output limit" in asked[1] and "5 retries left" in asked[1]
