"""Message → result mapping for the Jupyter executors, without a kernel."""

from __future__ import annotations

import base64
import itertools

from executors import Limits, Outcome
from executors.kernel_messages import CellCollector, is_kernel_gone_status, strip_ansi

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def collector(**limits) -> CellCollector:
    counter = itertools.count(1)
    return CellCollector(Limits(**limits), lambda: next(counter))


def test_strip_ansi_removes_colour_codes():
    assert strip_ansi("\x1b[0;31mZeroDivisionError\x1b[0m: x\x1b[1;32m") == "ZeroDivisionError: x"


def test_streams_results_images_and_errors_are_mapped():
    c = collector()
    c.feed("stream", {"name": "stdout", "text": "a\n"})
    c.feed("stream", {"name": "stderr", "text": "warn\n"})
    c.feed("execute_result", {"data": {"text/plain": "42"}})
    c.feed("display_data", {"data": {"text/plain": "<Figure>", "image/png": base64.b64encode(PNG).decode()}})
    c.feed("display_data", {"data": {"text/plain": "shown table"}})
    c.feed("error", {"ename": "ValueError", "evalue": "bad", "traceback": ["\x1b[31mValueError\x1b[0m", "bad"]})
    c.feed("status", {"execution_state": "idle"})
    r = c.result(Outcome.FAILED, duration_s=0.1, executor="jupyter", isolation="kernel")
    assert (r.stdout, r.stderr) == ("a\n", "warn\n")
    assert r.results == ["42", "shown table"]
    assert [(a.name, a.mime_type, a.data) for a in r.artifacts] == [("figure_1.png", "image/png", PNG)]
    assert (r.error_type, r.error_message, r.traceback) == ("ValueError", "bad", "ValueError\nbad")
    assert c.idle


def test_output_is_capped_and_a_flood_is_flagged():
    c = collector(output_bytes=10, output_hard_bytes=100)
    c.feed("stream", {"name": "stdout", "text": "x" * 50})
    r = c.result(Outcome.OK, duration_s=0, executor="jupyter", isolation="kernel")
    assert r.stdout == "x" * 10 and r.stdout_truncated and not c.flooded
    c.feed("stream", {"name": "stdout", "text": "y" * 60})
    assert c.flooded


def test_oversized_image_is_kept_as_a_truncated_artifact():
    c = collector(artifact_bytes=8)
    c.feed("display_data", {"data": {"image/png": base64.b64encode(PNG).decode()}})
    (art,) = c.artifacts
    assert art.truncated and art.data == b"" and art.mime_type == "image/png"


def test_server_status_for_a_lost_kernel_is_recognised():
    def status(state):
        return {"header": {"msg_type": "status"}, "parent_header": {}, "content": {"execution_state": state}}

    assert is_kernel_gone_status(status("restarting"))
    assert is_kernel_gone_status(status("dead"))
    assert not is_kernel_gone_status(status("idle"))
