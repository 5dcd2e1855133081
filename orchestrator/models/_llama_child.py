"""The process that hosts one llama.cpp server (xllamacpp) for codeloop.

Started by :class:`orchestrator.models.llama_server.LlamaServer` as
``python -P this_file.py --parent-pid PID --model PATH --port N ...``: it is run
by path, not with ``-m``, so it imports only the standard library and
xllamacpp (not all of codeloop) and starts quickly.

It must never outlive codeloop, however codeloop ends:
- ``PR_SET_PDEATHSIG`` makes the kernel SIGKILL it when its parent dies
  (``kill -9`` included), set before anything slow happens;
- the parent may have died before that call, so the parent pid is checked after;
- stdin is a pipe from the parent: EOF means the parent is gone or closed us;
- SIGINT is ignored: Ctrl-C in a terminal reaches the whole process group, and
  the parent, not the terminal, decides when the server stops (SIGTERM).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1
EXIT_PARENT_GONE = 3
EXIT_SERVER_FAILED = 4


def die_with_parent(parent_pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        sys.stderr.write(f"codeloop llama child: prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}\n")
        sys.exit(EXIT_SERVER_FAILED)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        sys.exit(EXIT_PARENT_GONE)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="_llama_child")
    p.add_argument("--parent-pid", type=int, required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--alias", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ctx-size", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--parallel", type=int, required=True)
    p.add_argument("--no-cache-prompt", action="store_true")
    return p.parse_args(argv)


def serve(args: argparse.Namespace):
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx_size
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.use_jinja = True  # the model's own chat template, with tool calls
    params.cache_prompt = not args.no_cache_prompt
    return xllamacpp.Server(params)  # returns once the model is loaded and the port bound


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    die_with_parent(args.parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        server = serve(args)  # noqa: F841 (held until os._exit below)
    except RuntimeError as exc:  # llama.cpp has logged why (e.g. "couldn't bind") on stderr
        sys.stderr.write(f"codeloop llama child: {exc}\n")
        return EXIT_SERVER_FAILED
    print(f"ready {args.host}:{args.port} pid {os.getpid()}", flush=True)
    while sys.stdin.buffer.read(4096):  # the server runs in its own threads; wait for EOF
        pass
    # Exit while ``server`` is still referenced: its destructor and the
    # interpreter's teardown would wait on the server's threads.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
