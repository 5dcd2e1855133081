"""An execution as MCP content: text for the model, images, files, structured data.

* one text block: outcome, stdout, stderr, the error and traceback, as a
  person or a model reads them;
* each image the code drew or wrote: ``ImageContent``;
* each other file it wrote: an ``EmbeddedResource`` (text when it decodes as
  UTF-8, a base64 blob otherwise);
* ``structuredContent``: the same facts as data (outcome in Gemini's terms,
  exit code, truncation flags, and every file's name, type, size and whether
  it was too large to bring back).
"""

from __future__ import annotations

import base64
from urllib.parse import quote

from mcp_types import (
    BlobResourceContents,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    TextContent,
    TextResourceContents,
)

from executors import Artifact, ExecutionResult, Outcome

TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "application/x-python")


def file_uri(scope: str, name: str) -> str:
    """``codeloop://sessions/<name>/<file>`` or ``codeloop://runs/<id>/<file>``: names, not fetchable resources."""
    return f"codeloop://{scope}/{quote(name)}"


def artifact_content(artifact: Artifact, scope: str) -> ImageContent | EmbeddedResource | None:
    """None for a file too large to bring back: it is listed in the structured content only."""
    if artifact.truncated:
        return None
    if artifact.mime_type.startswith("image/"):
        return ImageContent(
            type="image",
            data=base64.b64encode(artifact.data).decode("ascii"),
            mime_type=artifact.mime_type,
            _meta={"name": artifact.name},
        )
    uri = file_uri(scope, artifact.name)
    text = _as_text(artifact)
    if text is not None:
        contents: TextResourceContents | BlobResourceContents = TextResourceContents(
            uri=uri, mime_type=artifact.mime_type, text=text
        )
    else:
        contents = BlobResourceContents(
            uri=uri, mime_type=artifact.mime_type, blob=base64.b64encode(artifact.data).decode("ascii")
        )
    return EmbeddedResource(type="resource", resource=contents)


def _as_text(artifact: Artifact) -> str | None:
    textual = artifact.mime_type.startswith(TEXT_TYPES) or artifact.mime_type == "application/octet-stream"
    if not textual:
        return None
    try:
        return artifact.data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def file_facts(artifact: Artifact) -> dict:
    return {
        "name": artifact.name,
        "mime_type": artifact.mime_type,
        "size": artifact.size,
        "truncated": artifact.truncated,
    }


def structured(result: ExecutionResult, *, session: str | None, notice: str) -> dict:
    error = None
    if result.error_type or result.error_message:
        error = {"type": result.error_type, "message": result.error_message, "traceback": result.traceback}
    return {
        "outcome": result.outcome.value,
        "stdout": result.stdout,
        "stderr": result.stderr,
        "error": error,
        "results": list(result.results),
        "exit_code": result.exit_code,
        "stdout_truncated": result.stdout_truncated,
        "stderr_truncated": result.stderr_truncated,
        "duration_s": round(result.duration_s, 4),
        "files": [file_facts(a) for a in result.artifacts],
        "session": session,
        "notice": notice or None,
        "executor": result.executor,
        "isolation": result.isolation,
    }


def summary_text(result: ExecutionResult, *, notice: str) -> str:
    lines = [f"outcome: {result.outcome.value}"]
    if notice:
        lines.append(f"notice: {notice}")
    if result.stdout:
        lines += ["stdout:", result.stdout.rstrip("\n") + (" [truncated]" if result.stdout_truncated else "")]
    if result.results:
        lines += ["result:", *result.results]
    if result.stderr:
        lines += ["stderr:", result.stderr.rstrip("\n") + (" [truncated]" if result.stderr_truncated else "")]
    if result.error_type or result.error_message:
        lines.append(f"error: {result.error_type or 'Error'}: {result.error_message or ''}".rstrip(": "))
        if result.traceback:
            lines += ["traceback:", result.traceback.rstrip("\n")]
    for artifact in result.artifacts:
        state = "too large to return" if artifact.truncated else f"{artifact.size} bytes"
        lines.append(f"file: {artifact.name} ({artifact.mime_type}, {state})")
    return "\n".join(lines)


def execution_to_tool_result(
    result: ExecutionResult, *, session: str | None, scope: str, notice: str = ""
) -> CallToolResult:
    content: list = [TextContent(type="text", text=summary_text(result, notice=notice))]
    for artifact in result.artifacts:
        block = artifact_content(artifact, scope)
        if block is not None:
            content.append(block)
    return CallToolResult(
        content=content,
        structured_content=structured(result, session=session, notice=notice),
        # The code failing is a result; only a broken sandbox is a failed tool call.
        is_error=result.outcome is Outcome.SANDBOX_ERROR,
    )
