"""Test double of ``orchestrator/models/_llama_child.py``: the same command line
and the same protections (the real ``die_with_parent``, SIGINT ignored, exit on
stdin EOF), but a tiny HTTP server instead of llama.cpp, so the lifecycle can be
tested without a model.

Its "model file" is JSON saying how to behave: ``load_s`` (seconds before it
serves), ``crash`` (exit while loading), ``claims_model_path`` (what /props
reports). ``POST /v1/chat/completions`` answers with the request body it got,
as JSON in the message text.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REAL_CHILD = Path(__file__).resolve().parent.parent / "orchestrator" / "models" / "_llama_child.py"


def load_real_child():
    spec = importlib.util.spec_from_file_location("_llama_child", REAL_CHILD)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def handler_for(model_path: str, behaviour: dict):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def reply(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self.reply({"status": "ok"})
            elif self.path == "/props":
                self.reply({"model_path": behaviour.get("claims_model_path", model_path)})
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            request = json.loads(self.rfile.read(int(self.headers["content-length"])))
            self.reply(
                {
                    "id": "fake",
                    "object": "chat.completion",
                    "created": 0,
                    "model": request["model"],
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": json.dumps(request)},
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                }
            )

    return Handler


def main(argv: list[str]) -> int:
    child = load_real_child()
    args = child.parse_args(argv)
    child.die_with_parent(args.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    behaviour = json.loads(Path(args.model).read_text())
    time.sleep(behaviour.get("load_s", 0))
    if behaviour.get("crash"):
        sys.stderr.write("fake llama child: failed to load the model\n")
        return child.EXIT_SERVER_FAILED
    try:
        server = ThreadingHTTPServer((args.host, args.port), handler_for(args.model, behaviour))
    except OSError as exc:
        sys.stderr.write(f"fake llama child: couldn't bind HTTP server socket: {exc}\n")
        return child.EXIT_SERVER_FAILED
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"ready {args.host}:{args.port} pid {os.getpid()}", flush=True)
    while sys.stdin.buffer.read(4096):
        pass
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
