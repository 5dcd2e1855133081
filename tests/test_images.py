"""Input images and figures the model can see: settings, caps, downscaling,
and what each provider's fake server receives."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from PIL import Image

from executors import InputFile, Limits, Outcome
from executors.base import Artifact, ExecutionResult
from orchestrator import Orchestrator, RunStatus
from orchestrator.budget import conversation_tokens
from orchestrator.cli import build_parser
from orchestrator.cli._common import image_settings
from orchestrator.images import (
    ImageSettings,
    InputFileTooLarge,
    downscale,
    estimate_image_tokens,
    image_mime,
    input_images,
    pick_figures,
)
from orchestrator.models.anthropic import AnthropicModel
from orchestrator.models.gemini import GeminiModel
from orchestrator.models.openai_compat import OpenAIModel
from orchestrator.models.retry import RetryPolicy
from orchestrator.testing import fake_anthropic as fa
from orchestrator.testing import fake_gemini as fg
from orchestrator.testing import fake_openai as fo
from orchestrator.types import Conversation, ExecutionMessage, UserMessage, message_from_json

FAST = RetryPolicy(attempts=2, initial_delay_s=0.001, max_delay_s=0.002, timeout_s=5.0)


def png(width: int, height: int, color: str = "red") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, format="PNG")
    return out.getvalue()


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "blue").save(out, format="JPEG")
    return out.getvalue()


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


PHOTO = png(40, 30, "green")
FIGURE = png(1600, 1200)  # as large as a matplotlib figure at dpi 200


class FigureExecutor:
    """A test double: every execution succeeds, prints ``ran``, and returns
    the figures it was given as PNG artifacts (as matplotlib's capture does)."""

    name = "figure-double"
    limits = Limits()

    def __init__(self, *figures: bytes) -> None:
        self.figures = figures
        self.calls = 0

    async def execute(self, code, *, files=(), limits=None, session=None) -> ExecutionResult:
        self.calls += 1
        artifacts = [Artifact.of(f"figure-{i + 1}.png", data) for i, data in enumerate(self.figures)]
        return ExecutionResult(outcome=Outcome.OK, stdout="ran\n", artifacts=artifacts, executor=self.name)

    async def aclose(self) -> None:
        pass


# -- settings, caps and downscaling -------------------------------------------------


def test_gemini_input_types_are_recognised_and_settings_round_trip():
    assert image_mime("a.PNG") == "image/png" and image_mime("b.jpeg") == image_mime("c.jpg") == "image/jpeg"
    assert [image_mime(n) for n in ("d.csv", "e.xml", "f.cpp", "g.java", "h.py", "i.js", "j.ts")] == [None] * 7
    settings = ImageSettings(see_figures="on", max_figures=2)
    assert ImageSettings.from_json(json.loads(json.dumps(settings.to_json()))) == settings
    with pytest.raises(ValueError, match="see_figures"):
        ImageSettings(see_figures="sometimes")
    with pytest.raises(ValueError, match="max_side_px"):
        ImageSettings(max_side_px=0)


def test_input_images_are_picked_checked_and_never_cut():
    files = [InputFile("data.csv", b"a,b\n"), InputFile("photo.png", PHOTO)]
    shown = input_images(files, ImageSettings(), takes_images=True)
    assert [(i.name, i.mime_type, i.data) for i in shown] == [("photo.png", "image/png", PHOTO)]
    assert input_images(files, ImageSettings(), takes_images=False) == []
    with pytest.raises(InputFileTooLarge, match=rf"'photo.png' is {len(PHOTO)} bytes, over the cap of 10 "):
        input_images(files, ImageSettings(max_input_image_bytes=10), takes_images=True)


def test_figures_are_downscaled_and_capped_with_the_rest_named():
    small = downscale(FIGURE, 768)
    assert size_of(small) == (768, 576) and downscale(PHOTO, 768) == PHOTO
    result = ExecutionResult(
        outcome=Outcome.OK,
        artifacts=[
            Artifact.of("a.png", FIGURE),
            Artifact.of("data.csv", b"x"),
            Artifact.of("b.png", PHOTO),
            Artifact.of("broken.png", b"not a png"),
            Artifact.of("c.png", PHOTO),
        ],
    )
    shown, left_out = pick_figures(result, ImageSettings(max_figures=2))
    assert [f.name for f in shown] == ["a.png", "b.png"] and left_out == ["broken.png", "c.png"]
    shown, left_out = pick_figures(result, ImageSettings(max_figure_bytes=len(small)))
    assert [f.name for f in shown] == ["a.png"] and left_out == ["b.png", "broken.png", "c.png"]


async def test_an_input_image_over_the_cap_stops_the_run_before_any_request(local_executor):
    with fg.FakeGeminiServer() as fake:
        model = GeminiModel("gemini-2.5-flash", api_key="k-123456", base_url=fake.url, retry=FAST)
        orchestrator = Orchestrator(model, local_executor, images=ImageSettings(max_input_image_bytes=10))
        with pytest.raises(InputFileTooLarge, match=re.escape("photo.png")):
            await orchestrator.run("describe", files=[InputFile("photo.png", PHOTO)])
        assert fake.requests == []


def test_cli_options_reach_the_settings():
    args = build_parser().parse_args(["run", "q", "--see-figures", "off", "--max-image-bytes", "1000"])
    assert image_settings(args) == ImageSettings(see_figures="off", max_input_image_bytes=1000)
    assert image_settings(build_parser().parse_args(["run", "q"])) == ImageSettings()


# -- Gemini --------------------------------------------------------------------------


def inline_images(contents: list[dict]) -> list[tuple[str, bytes]]:
    found = []
    for content in contents:
        for part in content["parts"]:
            blob = part.get("inlineData")
            if blob:
                found.append((blob.get("mimeType") or blob.get("mime_type"), b64(blob["data"])))
    return found


def b64(data: str) -> bytes:
    """Base64 in either alphabet, padded or not (the SDK sends the URL-safe one)."""
    return base64.urlsafe_b64decode(data.replace("+", "-").replace("/", "_") + "=" * (-len(data) % 4))


async def test_gemini_client_mode_sees_the_input_image_and_the_figures():
    executor = FigureExecutor(FIGURE)
    with fg.FakeGeminiServer([fg.function_call_response("plot()"), fg.text_response("A red square.")]) as fake:
        model = GeminiModel("gemini-2.5-flash", api_key="k-123456", base_url=fake.url, retry=FAST)
        result = await Orchestrator(model, executor).run(
            "plot it like the photo", files=[InputFile("photo.png", PHOTO), InputFile("data.csv", b"a\n")]
        )

    assert result.status is RunStatus.SOLVED
    first, second = fake.contents(0), fake.contents(1)
    assert inline_images(first) == [("image/png", PHOTO)]
    assert "data.csv (2 bytes)" in json.dumps(first)
    figure_turn = second[-1]
    assert "functionResponse" in figure_turn["parts"][0]
    ((mime, data),) = inline_images([figure_turn])
    assert mime == "image/png" and size_of(data) == (768, 576)
    assert "figure-1.png" in figure_turn["parts"][0]["functionResponse"]["response"]["output"]
    assert result.attempts[0].result.artifacts[0].data == FIGURE  # the user still gets the full figure


async def test_gemini_server_mode_sends_png_and_jpeg_inline_as_images(local_executor):
    photo_jpeg = jpeg(20, 10)
    reply = fg.server_execution_response("print(1)", "1\n", text="Two images.")
    with fg.FakeGeminiServer([reply]) as fake:
        model = GeminiModel("gemini-2.5-flash", api_key="k-123456", mode="server", base_url=fake.url, retry=FAST)
        files = [
            InputFile("a.png", PHOTO),
            InputFile("b.jpg", photo_jpeg),
            InputFile("Main.java", b"class Main {}"),
            InputFile("app.ts", b"let x = 1;"),
        ]
        result = await Orchestrator(model, local_executor).run("look", files=files)

    assert result.status is RunStatus.SOLVED
    blobs = inline_images(fake.contents(0))
    assert blobs == [
        ("image/png", PHOTO),
        ("image/jpeg", photo_jpeg),
        ("text/plain", b"class Main {}"),
        ("text/plain", b"let x = 1;"),
    ]


# -- OpenAI ---------------------------------------------------------------------------


def image_urls(content) -> list[str]:
    if not isinstance(content, list):
        return []
    return [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]


async def test_openai_gets_image_url_parts_for_input_images_and_figures():
    executor = FigureExecutor(FIGURE, PHOTO)
    with fo.FakeOpenAIServer([fo.tool_call_completion("plot()", call_id="t1"), fo.text_completion("Done.")]) as fake:
        model = OpenAIModel("gpt-4o", fake.base_url, api_key="sk-test-images-0123456789", images=True, retry=FAST)
        result = await Orchestrator(model, executor).run("plot", files=[InputFile("photo.png", PHOTO)])

    assert result.status is RunStatus.SOLVED
    user = fake.messages(0)[1]
    assert user["content"][0]["type"] == "text"
    assert image_urls(user["content"]) == ["data:image/png;base64," + base64.b64encode(PHOTO).decode()]
    messages = fake.messages(1)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "user"]
    assert "figure-1.png, figure-2.png" in messages[3]["content"]
    urls = image_urls(messages[4]["content"])
    assert len(urls) == 2 and all(u.startswith("data:image/png;base64,") for u in urls)
    assert size_of(base64.b64decode(urls[0].split(",", 1)[1])) == (768, 576)


async def test_a_text_only_server_gets_no_images_unless_figures_are_forced_on():
    def script(request):
        answered = request.body["messages"][-1]["role"] in ("tool", "user") and len(request.body["messages"]) > 2
        return fo.text_completion("ok") if answered else fo.tool_call_completion("plot()", call_id="t1")

    with fo.FakeOpenAIServer(script) as fake:
        model = OpenAIModel("qwen", fake.base_url, api_key="sk-test-images-0123456789", retry=FAST)
        assert model.takes_images is False  # not OpenAI itself: most local servers read text only
        await Orchestrator(model, FigureExecutor(FIGURE)).run("plot", files=[InputFile("photo.png", PHOTO)])
        sent = json.dumps([r.body for r in fake.requests])
        assert "image_url" not in sent and "photo.png (" in sent
        await Orchestrator(model, FigureExecutor(FIGURE), images=ImageSettings(see_figures="on")).run("plot")
        assert [m["role"] for m in fake.messages(-1)][-2:] == ["tool", "user"]
        assert image_urls(fake.messages(-1)[-1]["content"])  # forced on: the figure goes along


# -- Anthropic ------------------------------------------------------------------------


async def test_anthropic_gets_image_blocks_for_input_images_and_figures_inside_the_tool_result():
    executor = FigureExecutor(FIGURE)
    replies = [fa.tool_use_message("plot()", call_id="toolu_f"), fa.text_message("Looks right.")]
    with fa.FakeAnthropicServer(replies) as fake:
        model = AnthropicModel(
            "claude-sonnet-4-5", api_key="sk-ant-test-0123456789", base_url=fake.url, retry=FAST, env={}
        )
        result = await Orchestrator(model, executor).run("plot", files=[InputFile("photo.png", PHOTO)])

    assert result.status is RunStatus.SOLVED
    user = fake.messages(0)[0]["content"]
    assert user[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PHOTO).decode()},
    }
    tool_result = fake.messages(1)[2]["content"][0]
    assert tool_result["type"] == "tool_result" and tool_result["tool_use_id"] == "toolu_f"
    text, image = tool_result["content"]
    assert "figure-1.png" in text["text"] and image["type"] == "image"
    assert size_of(base64.b64decode(image["source"]["data"])) == (768, 576)


async def test_see_figures_off_sends_no_figure(local_executor):
    replies = [fa.tool_use_message("plot()"), fa.text_message("ok")]
    with fa.FakeAnthropicServer(replies) as fake:
        model = AnthropicModel(
            "claude-sonnet-4-5", api_key="sk-ant-test-0123456789", base_url=fake.url, retry=FAST, env={}
        )
        await Orchestrator(model, FigureExecutor(FIGURE), images=ImageSettings(see_figures="off")).run("plot")
    assert '"image"' not in json.dumps(fake.messages(1))


async def test_a_real_matplotlib_figure_reaches_the_model(local_executor):
    code = "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"
    replies = [fa.tool_use_message(code), fa.text_message("A line.")]
    with fa.FakeAnthropicServer(replies) as fake:
        model = AnthropicModel(
            "claude-sonnet-4-5", api_key="sk-ant-test-0123456789", base_url=fake.url, retry=FAST, env={}
        )
        result = await Orchestrator(model, local_executor).run("plot")
    assert result.status is RunStatus.SOLVED and result.artifacts
    blocks = fake.messages(1)[2]["content"][0]["content"]
    assert [b["type"] for b in blocks] == ["text", "image"]
    assert max(size_of(base64.b64decode(blocks[1]["source"]["data"]))) <= 768


def test_images_count_in_the_request_estimate():
    text_only = Conversation(messages=[UserMessage(text="look")])
    with_image = Conversation(messages=[UserMessage(text="look", images=[Artifact.of("f.png", FIGURE)])])
    assert estimate_image_tokens(FIGURE) == 1600 * 1200 // 750 + 1
    assert conversation_tokens(with_image) - conversation_tokens(text_only) == estimate_image_tokens(FIGURE)


def test_messages_with_images_survive_a_json_round_trip():
    message = ExecutionMessage(
        result=ExecutionResult(outcome=Outcome.OK), feedback="t", images=[Artifact.of("f.png", PHOTO)]
    )
    assert message_from_json(json.loads(json.dumps(message.to_json()))).images == message.images


async def test_a_chat_refuses_an_image_over_the_cap_and_goes_on_without_it(local_executor, tmp_path):
    from orchestrator.cli.chat import chat
    from orchestrator.session import Session

    (tmp_path / "photo.png").write_bytes(PHOTO)
    stdin = io.StringIO(f"/file {tmp_path / 'photo.png'}\ndescribe it\nsay hello\n")
    out = io.StringIO()
    with fg.FakeGeminiServer([fg.text_response("Hello.")]) as fake:
        model = GeminiModel("gemini-2.5-flash", api_key="k-123456", base_url=fake.url, retry=FAST)
        session = Session(model, local_executor, images=ImageSettings(max_input_image_bytes=10))
        assert await chat(session, stdin, out) == 0
        # The refused message sent nothing and left nothing behind; the next one ran.
        assert len(fake.requests) == 1 and "photo.png" not in json.dumps(fake.requests[0].body)
    assert "error: " in out.getvalue() and "photo.png" in out.getvalue() and "Hello." in out.getvalue()
    assert session.files == {} and [m.kind for m in session.conversation.messages] == ["user", "model"]
