"""``codeloop serve`` driven by the real google-genai SDK (sync, async,
streaming, chat, files), with a scripted backend model and the local executor."""

from __future__ import annotations

import base64
import copy
import re

import pytest
from google import genai
from google.genai import types

from executors import InputFile, Limits, LocalExecutor
from orchestrator import Orchestrator, RunStatus, ScriptedModel
from orchestrator.models.gemini import GeminiModel
from orchestrator.models.openai_compat import OpenAIModel
from orchestrator.serve import Backend, BackgroundServer, ServeSettings, create_app
from orchestrator.testing.fake_openai import FakeOpenAIServer, text_completion
from orchestrator.types import Conversation, ExecutionMessage, ModelTurn, Usage

PRIMES = (
    "What is the sum of the first 50 prime numbers? Generate and run code for the calculation, "
    "and make sure you get all 50."
)
PRIMES_CODE = """primes = []
n = 2
while len(primes) < 50:
    if all(n % p for p in primes):
        primes.append(n)
    n += 1
print(len(primes), sum(primes))
"""
CODE_EXECUTION = types.GenerateContentConfig(tools=[types.Tool(code_execution=types.ToolCodeExecution())])


def fenced(code: str, words: str = "I will compute it.") -> str:
    return f"{words}\n```python\n{code.rstrip()}\n```"


def last_output(conversation: Conversation) -> str:
    """What the latest execution printed, as the loop told the model."""
    return next(m.result.stdout for m in reversed(conversation.messages) if isinstance(m, ExecutionMessage))


def primes_script(conversation: Conversation, tools) -> str:
    """A test double of a model that writes the primes program, then reports
    the number its output holds (so the answer comes from the execution)."""
    last = conversation.messages[-1]
    if isinstance(last, ExecutionMessage):
        count, total = last_output(conversation).split()
        return f"The sum of the first {count} prime numbers is {total}."
    return fenced(PRIMES_CODE)


@pytest.fixture
def executor():
    return LocalExecutor(limits=Limits(timeout_s=10))


def serve(model, executor, settings: ServeSettings | None = None, alias: str = "scripted") -> BackgroundServer:
    return BackgroundServer(create_app([Backend(alias, model, executor)], settings), settings)


def sdk(server: BackgroundServer, key: str = "any-key") -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=server.url, api_version="v1beta"))


def generate(script, executor, contents, config=CODE_EXECUTION) -> types.GenerateContentResponse:
    """One generateContent call (with code execution unless ``config`` says otherwise), through the real SDK,
    to a server of ``script``."""
    with serve(ScriptedModel(script), executor) as server:
        client = sdk(server)  # held: a Client closes its connection once dropped
        return client.models.generate_content(model="scripted", contents=contents, config=config)


def kinds(parts) -> list[str]:
    names = []
    for part in parts:
        for name in ("text", "executable_code", "code_execution_result", "inline_data"):
            if getattr(part, name) is not None:
                names.append(name)
    return names


# -- the seed example -------------------------------------------------------------------


def test_primes_seed_example_comes_back_with_code_result_and_text(executor):
    response = generate(primes_script, executor, PRIMES)

    parts = response.candidates[0].content.parts
    assert kinds(parts) == ["text", "executable_code", "code_execution_result", "text"]
    assert parts[0].text == "I will compute it."  # the words, without the fenced code
    assert parts[1].executable_code.language == types.Language.PYTHON
    assert parts[1].executable_code.code.strip() == PRIMES_CODE.strip()
    assert parts[2].code_execution_result.outcome == types.Outcome.OUTCOME_OK
    assert "5117" in parts[2].code_execution_result.output
    assert parts[3].text == "The sum of the first 50 prime numbers is 5117."
    assert response.executable_code.strip() == PRIMES_CODE.strip()  # the SDK's own accessors work
    assert "5117" in response.code_execution_result
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    usage = response.usage_metadata
    assert usage.prompt_token_count > 0 and usage.candidates_token_count > 0
    assert usage.tool_use_prompt_token_count > 0  # the second request carried the result back
    assert usage.total_token_count == (
        usage.prompt_token_count + usage.candidates_token_count + usage.tool_use_prompt_token_count
    )
    assert response.model_version == "scripted"


async def test_async_client_gets_the_same_parts(executor):
    with serve(ScriptedModel(primes_script), executor) as server:
        client = sdk(server)
        response = await client.aio.models.generate_content(model="scripted", contents=PRIMES, config=CODE_EXECUTION)
    parts = response.candidates[0].content.parts
    assert kinds(parts) == ["text", "executable_code", "code_execution_result", "text"]
    assert "5117" in parts[2].code_execution_result.output


def test_stream_sends_each_part_as_it_happens(executor):
    with serve(ScriptedModel(primes_script), executor) as server:
        client = sdk(server)
        chunks = list(client.models.generate_content_stream(model="scripted", contents=PRIMES, config=CODE_EXECUTION))
    per_chunk = [kinds(c.candidates[0].content.parts if c.candidates[0].content else []) for c in chunks]
    assert per_chunk[:4] == [["text"], ["executable_code"], ["code_execution_result"], ["text"]]
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert chunks[-1].usage_metadata.total_token_count > 0
    assert all(c.usage_metadata is None for c in chunks[:-1])  # usage once, on the last chunk


async def test_async_stream(executor):
    with serve(ScriptedModel(primes_script), executor) as server:
        client = sdk(server)
        stream = await client.aio.models.generate_content_stream(
            model="scripted", contents=PRIMES, config=CODE_EXECUTION
        )
        outputs = [
            p.code_execution_result.output
            async for c in stream
            for p in (c.candidates[0].content.parts if c.candidates[0].content else [])
            if p.code_execution_result
        ]
    assert len(outputs) == 1 and "5117" in outputs[0]


def test_a_failing_program_is_fixed_and_both_attempts_come_back(executor):
    def fixer(conversation: Conversation, tools) -> str:
        last = conversation.messages[-1]
        if isinstance(last, ExecutionMessage) and not last.result.ok:
            return fenced("print(sum([1, 2, 3]))", "The name was wrong; fixed.")
        if isinstance(last, ExecutionMessage):
            return f"The total is {last_output(conversation).strip()}."
        return fenced("print(totl([1, 2, 3]))")

    response = generate(fixer, executor, "Add 1, 2 and 3 with code.")
    parts = response.candidates[0].content.parts
    assert kinds(parts) == [
        "text",
        "executable_code",
        "code_execution_result",
        "text",
        "executable_code",
        "code_execution_result",
        "text",
    ]
    failed, fixed = parts[2].code_execution_result, parts[5].code_execution_result
    assert failed.outcome == types.Outcome.OUTCOME_FAILED and "NameError" in failed.output
    assert fixed.outcome == types.Outcome.OUTCOME_OK and fixed.output.strip() == "6"
    assert parts[-1].text == "The total is 6."


def test_a_program_past_its_time_is_deadline_exceeded(executor):
    executor = LocalExecutor(limits=Limits(timeout_s=1))

    def sleeper(conversation: Conversation, tools) -> str:
        if isinstance(conversation.messages[-1], ExecutionMessage):
            return "It ran out of time."
        return fenced("import time\ntime.sleep(30)\n")

    response = generate(sleeper, executor, "Sleep with code.")
    results = [p.code_execution_result for p in response.candidates[0].content.parts if p.code_execution_result]
    assert results[0].outcome == types.Outcome.OUTCOME_DEADLINE_EXCEEDED


def test_figures_come_back_as_png_after_their_result(executor):
    plot = "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nprint('plotted')\n"

    def plotter(conversation: Conversation, tools) -> str:
        if isinstance(conversation.messages[-1], ExecutionMessage):
            return "Here is the plot."
        return fenced(plot)

    response = generate(plotter, executor, "Plot the squares.")
    parts = response.candidates[0].content.parts
    assert kinds(parts) == ["text", "executable_code", "code_execution_result", "inline_data", "text"]
    image = parts[3].inline_data
    assert image.mime_type == "image/png" and image.data.startswith(b"\x89PNG")


# -- files ---------------------------------------------------------------------------


def test_csv_sent_inline_is_a_file_the_code_reads(executor):
    csv = b"city,rain_mm\nOslo,12\nBergen,40\nTromso,7\n"

    def analyst(conversation: Conversation, tools) -> str:
        last = conversation.messages[-1]
        if isinstance(last, ExecutionMessage):
            return f"Total rain: {last_output(conversation).strip()} mm."
        name = last.files[0].name
        assert name.endswith(".csv") and name in conversation.system  # the model is told its name
        return fenced(f"import pandas as pd\nprint(pd.read_csv({name!r})['rain_mm'].sum())\n")

    response = generate(
        analyst, executor, [types.Part.from_bytes(data=csv, mime_type="text/csv"), "What is the total rain?"]
    )
    result = response.code_execution_result
    assert result is not None and result.strip() == "59"
    assert response.text.endswith("Total rain: 59 mm.")


def test_a_png_in_the_request_is_a_file_too(executor):
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8

    def reader(conversation: Conversation, tools) -> str:
        last = conversation.messages[-1]
        if isinstance(last, ExecutionMessage):
            return "Read it."
        return fenced(f"print(open({last.files[0].name!r}, 'rb').read()[:4])\n")

    response = generate(
        reader, executor, [types.Part.from_bytes(data=png, mime_type="image/png"), "What are its first bytes?"]
    )
    assert "PNG" in response.code_execution_result


# -- multi-turn ---------------------------------------------------------------------------


def test_chat_sends_its_history_back_and_the_loop_continues_it(executor):
    seen: list[Conversation] = []

    def chatty(conversation: Conversation, tools) -> str:
        seen.append(copy.deepcopy(conversation))  # the loop goes on extending it
        last = conversation.messages[-1]
        if isinstance(last, ExecutionMessage):
            count, total = last_output(conversation).split()
            return f"The first {count} primes add up to {total}."
        if "100" in last.text:
            return fenced(PRIMES_CODE.replace("50", "100"), "Same program, 100 primes.")
        return fenced(PRIMES_CODE)

    with serve(ScriptedModel(chatty), executor) as server:
        client = sdk(server)
        chat = client.chats.create(model="scripted", config=CODE_EXECUTION)
        first = chat.send_message(PRIMES)
        second = chat.send_message("Now do the first 100.")
        history = chat.get_history()

    assert "5117" in first.code_execution_result
    assert "24133" in second.code_execution_result and second.text.endswith("add up to 24133.")
    follow_up = seen[-2]  # the follow-up's first request to the model
    roles = [m.kind for m in follow_up.messages]
    assert roles == ["user", "model", "execution", "model", "user"]
    assert PRIMES_CODE.strip() in follow_up.messages[1].turn.text  # the earlier code, fenced
    assert "50 5117" in follow_up.messages[2].result.stdout  # and what it printed
    assert follow_up.messages[3].turn.text == "The first 50 primes add up to 5117."
    assert [c.role for c in history] == ["user", "model", "user", "model"]


async def test_async_chat_streams(executor):
    with serve(ScriptedModel(primes_script), executor) as server:
        client = sdk(server)
        chat = client.aio.chats.create(model="scripted", config=CODE_EXECUTION)
        texts = [c.text async for c in await chat.send_message_stream(PRIMES) if c.text]
        again = await chat.send_message("And again?")
    assert texts[-1] == "The sum of the first 50 prime numbers is 5117."
    assert "5117" in again.code_execution_result


def test_history_in_raw_rest_form_with_snake_case_and_a_file_from_an_earlier_turn(executor):
    """A file sent in an earlier turn stays available to the code of later ones."""

    def reuse(conversation: Conversation, tools) -> str:
        if isinstance(conversation.messages[-1], ExecutionMessage):
            return "Done."
        return fenced("print(open('notes.txt').read().upper())\n")

    contents = [
        {
            "role": "user",
            "parts": [
                {"text": "File notes.txt:"},
                {"inline_data": {"mime_type": "text/plain", "data": base64.b64encode(b"hello").decode()}},
                {"text": "Keep this."},
            ],
        },
        {"role": "model", "parts": [{"text": "Kept."}]},
        {"role": "user", "parts": [{"text": "Print it in capitals."}]},
    ]
    response = generate(reuse, executor, contents)
    assert response.code_execution_result.strip() == "HELLO"


# -- plain chat, settings ------------------------------------------------------------------


def test_without_code_execution_it_is_a_plain_chat(executor):
    seen = []

    def plain(conversation: Conversation, tools) -> str:
        seen.append((conversation, tools))
        return "Paris."

    response = generate(
        plain,
        executor,
        "Capital of France?",
        config=types.GenerateContentConfig(system_instruction="Answer in one word."),
    )
    assert response.text == "Paris."
    conversation, tools = seen[0]
    assert tools == () and conversation.system == "Answer in one word."
    assert response.usage_metadata.prompt_token_count > 0


def test_system_instruction_reaches_the_loop_after_its_own_text(executor):
    seen = []

    def model(conversation: Conversation, tools) -> str:
        seen.append(conversation.system)
        return primes_script(conversation, tools)

    with serve(ScriptedModel(model), executor) as server:
        client = sdk(server)
        client.models.generate_content(
            model="scripted",
            contents=PRIMES,
            config=types.GenerateContentConfig(
                system_instruction="Always answer in French {politely}.",
                tools=[types.Tool(code_execution=types.ToolCodeExecution())],
            ),
        )
    assert seen[0].endswith("Always answer in French {politely}.")
    assert "Python" in seen[0]  # the loop's own instructions come first


def test_generation_config_reaches_an_openai_compatible_backend(executor):
    with FakeOpenAIServer([text_completion("Hi."), text_completion("Hi again.")]) as fake:
        backend = OpenAIModel("fake", base_url=fake.base_url, api_key="k", temperature=0.0, max_tokens=50)
        with serve(backend, executor, alias="fake") as server:
            client = sdk(server)
            client.models.generate_content(
                model="fake",
                contents="hello",
                config=types.GenerateContentConfig(temperature=0.7, max_output_tokens=33),
            )
            client.models.generate_content(model="fake", contents="hello")
    first, second = fake.requests[0].body, fake.requests[1].body
    assert (first["temperature"], first["max_tokens"]) == (0.7, 33)
    assert (second["temperature"], second["max_tokens"]) == (0.0, 50)  # the backend's own settings stay
    assert backend.temperature == 0.0


def test_models_list_get_and_count_tokens(executor):
    backends = [
        Backend("one", ScriptedModel(["x"], name="scripted-one"), executor),
        Backend("two", ScriptedModel(["y"], name="scripted-two"), executor),
    ]
    with BackgroundServer(create_app(backends)) as server:
        client = sdk(server)
        names = [m.name for m in client.models.list()]
        one = client.models.get(model="one")
        short = client.models.count_tokens(model="one", contents="hi").total_tokens
        long = client.models.count_tokens(model="two", contents="hi " * 300).total_tokens
        second = client.models.generate_content(model="two", contents="hello")
    assert names == ["models/one", "models/two"]
    assert one.name == "models/one" and "generateContent" in one.supported_actions
    assert 0 < short < long
    assert second.text == "y"  # the URL's alias picked the backend


# -- codeloop's own Gemini client against the server ------------------------------------------


async def test_codeloops_gemini_model_in_server_mode_works_against_serve(executor):
    def analyst(conversation: Conversation, tools) -> str:
        last = conversation.messages[-1]
        if isinstance(last, ExecutionMessage):
            return f"The column sums to {last_output(conversation).strip()}."
        assert [f.name for f in last.files] == ["data.csv"]  # the caption named the file
        return fenced("import pandas as pd\nprint(pd.read_csv('data.csv')['x'].sum())\n")

    client_executor = LocalExecutor(limits=Limits(timeout_s=10))
    with serve(ScriptedModel(analyst), executor) as server:
        gemini = GeminiModel("scripted", api_key="k", mode="server", base_url=server.url)
        try:
            result = await Orchestrator(gemini, client_executor).run(
                "Sum column x.", files=[InputFile("data.csv", b"x\n1\n2\n39\n")]
            )
        finally:
            await gemini.aclose()
    assert result.status is RunStatus.SOLVED, (result.error, result.summary)
    assert [a.remote for a in result.attempts] == [True]
    assert result.attempts[0].result.stdout.strip() == "42"
    # GeminiModel joins the turn's text parts: the words before the code, then the answer.
    assert result.summary.endswith("The column sums to 42.")
    assert result.usage.input_tokens > 0 and result.usage.tool_tokens > 0


async def test_codeloops_gemini_model_streams_from_serve(executor):
    with serve(ScriptedModel(primes_script), executor) as server:
        gemini = GeminiModel("scripted", api_key="k", mode="server", base_url=server.url)
        try:
            orchestrator = Orchestrator(gemini, LocalExecutor(), stream_text=True)
            result = await orchestrator.run(PRIMES)
        finally:
            await gemini.aclose()
    assert result.status is RunStatus.SOLVED
    assert "5117" in result.attempts[0].result.stdout and "5117" in result.summary


def test_a_scripted_turn_with_usage_keeps_its_counts(executor):
    turns = [
        ModelTurn(text=fenced("print(1)"), usage=Usage(input_tokens=100, output_tokens=10, requests=1)),
        ModelTurn(text="One.", usage=Usage(input_tokens=130, output_tokens=2, requests=1)),
    ]
    response = generate(turns, executor, "Print 1 with code.")
    usage = response.usage_metadata
    assert (
        usage.prompt_token_count,
        usage.tool_use_prompt_token_count,
        usage.candidates_token_count,
        usage.total_token_count,
    ) == (100, 130, 12, 242)
    assert re.fullmatch(r"[0-9a-f]{12}", response.response_id)
