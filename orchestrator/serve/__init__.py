"""``codeloop serve``: Gemini's API, with code execution done by codeloop's loop.

    from orchestrator.serve import Backend, ServeSettings, create_app, run_server
    app = create_app([Backend("qwen", model, executor)], ServeSettings(port=8080))
    run_server(app, ServeSettings(port=8080))

Any google-genai client pointed at the server (``http_options={"base_url":
...}``) gets Gemini's code-execution parts from any backend model.
"""

from .app import create_app
from .errors import ApiError
from .server import BackgroundServer, run_server
from .settings import Backend, ServeSettings

__all__ = ["ApiError", "Backend", "BackgroundServer", "ServeSettings", "create_app", "run_server"]
