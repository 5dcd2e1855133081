"""Where the tests find the real 0.5B model file, and the rule for its absence:
a skip with the reason on a developer's machine, a failure under CI=true
(where .ci/run pulls it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REAL_MODEL = "qwen2.5-coder-0.5b"


def real_model_file() -> Path:
    """Where the model store keeps the 0.5B file (as orchestrator.models.files resolves it)."""
    from orchestrator.models.catalogue import lookup
    from orchestrator.models.files import default_models_dir

    return default_models_dir(os.environ) / lookup(REAL_MODEL).filename


def require_real_model() -> Path:
    path = real_model_file()
    missing = []
    if not path.is_file():
        missing.append(f"{path} is absent (codeloop models pull {REAL_MODEL})")
    try:
        import xllamacpp  # noqa: F401
    except ImportError:
        missing.append("xllamacpp is not installed")
    if missing:
        if IN_CI:
            pytest.fail("CI must have the real model: " + "; ".join(missing))
        pytest.skip("; ".join(missing))
    return path
