"""Keep a request inside the model's context window.

Before a request would exceed the budget, older execution outputs are
shortened first, then older attempts' code is dropped, oldest first. The
system text, the user's messages and the latest model turn are always sent
whole; the latest feedback is shortened last, keeping its head and tail. The conversation itself is not changed: the request
gets a shortened copy, and a conversation that fits is sent as it is (so the
server's prompt cache keeps its prefix).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial

from .images import estimate_image_tokens
from .types import Conversation, ExecutionMessage, Message, ModelMessage, UserMessage

# Code and tracebacks run at about 3 characters a token with the BPE
# tokenizers of current models; erring high keeps the request under the limit.
CHARS_PER_TOKEN = 3.0
MESSAGE_OVERHEAD_TOKENS = 8  # role markers of the chat template
SHORT_OUTPUT_CHARS = 150
LATEST_OUTPUT_CHARS = 1000  # the newest output is cut last, and less


def estimate_tokens(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN) + 1


def conversation_tokens(conversation: Conversation, estimate: Callable[[str], int] = estimate_tokens) -> int:
    total = estimate(conversation.system) + MESSAGE_OVERHEAD_TOKENS
    for message in conversation.messages:
        total += message_tokens(message, estimate) + MESSAGE_OVERHEAD_TOKENS
    return total


def message_tokens(message: Message, estimate: Callable[[str], int] = estimate_tokens) -> int:
    """A message's text, images and native tool calls' code (sent outside the text)."""
    match message:
        case UserMessage(text=text, images=images) | ExecutionMessage(feedback=text, images=images):
            return estimate(text) + sum(estimate_image_tokens(image.data) for image in images)
        case ModelMessage(turn=turn):
            return estimate(turn.text) + sum(estimate(b.code) for b in turn.code_blocks if b.source == "tool_call")


def fit(conversation: Conversation, max_tokens: int, estimate: Callable[[str], int] = estimate_tokens) -> Conversation:
    """``conversation`` itself when it fits in ``max_tokens``, else a copy with
    older outputs shortened and then older code dropped until it fits (or
    nothing more can be shortened)."""
    if conversation_tokens(conversation, estimate) <= max_tokens:
        return conversation
    messages = list(conversation.messages)
    older = _older(messages)
    latest_outputs = [i for i in range(len(messages)) if i not in older and isinstance(messages[i], ExecutionMessage)]
    passes = (
        (_shorten_output, older),
        (_drop_code, older),
        (partial(_shorten_output, keep=LATEST_OUTPUT_CHARS), latest_outputs),
    )
    for shorten, indexes in passes:
        for index in indexes:
            smaller = shorten(messages[index])
            if smaller is None:
                continue
            messages[index] = smaller
            candidate = Conversation(system=conversation.system, messages=messages)
            if conversation_tokens(candidate, estimate) <= max_tokens:
                return candidate
    return Conversation(system=conversation.system, messages=messages)


def _older(messages: list[Message]) -> list[int]:
    """Indexes of model and execution messages before the latest model turn."""
    last_model = max((i for i, m in enumerate(messages) if isinstance(m, ModelMessage)), default=-1)
    return [i for i, m in enumerate(messages[:last_model]) if isinstance(m, ModelMessage | ExecutionMessage)]


def _shorten_output(message: Message, keep: int = SHORT_OUTPUT_CHARS) -> Message | None:
    if not isinstance(message, ExecutionMessage) or len(message.feedback) <= keep * 2 + 100:
        return None
    text = message.feedback
    head, tail = text[:keep], text[-keep:]
    note = f"\n[... {len(text) - 2 * keep} characters of this output omitted to fit the context ...]\n"
    return replace(message, feedback=head + note + tail)


OMITTED = "(an earlier attempt, omitted to fit the context)"


def _drop_code(message: Message) -> Message | None:
    if not isinstance(message, ModelMessage):
        return None
    turn = message.turn
    # Native tool calls keep their ids (each still needs its answer); fenced
    # code and calls written as text live in the text, which is replaced.
    blocks = [replace(b, code=f"# {OMITTED}") for b in turn.code_blocks]
    text = turn.text if turn.code_blocks else OMITTED
    # The provider's raw message holds the full code; without it the turn is rebuilt from the blocks.
    short_turn = replace(turn, text=text, code_blocks=blocks, raw=None)
    return None if short_turn == turn else ModelMessage(turn=short_turn)  # equal: dropped already
