"""Which zygote kind an execution needs: one with the libraries preloaded, or a light one."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable

# ``from pkg.mod import ...`` (absolute only) or ``import a.b as c, d`` at a line start or after ``;``.
IMPORT_STATEMENT = re.compile(
    r"(?:^|;)[ \t]*(?:from[ \t]+([A-Za-z_][\w.]*)[ \t]+import\b|import[ \t]+([\w. \t,]+?)(?:[ \t]*(?:;|#|$)))",
    re.MULTILINE,
)


def preload_roots(preload: Iterable[str]) -> frozenset[str]:
    """The top-level packages of the preloaded modules."""
    return frozenset(name.split(".")[0] for name in preload)


def needs_preload(code: str, roots: frozenset[str]) -> bool:
    """Whether the code imports a preloaded library, or anything outside the standard
    library (which may import one). A text scan, as the syntax tree costs a millisecond
    a run: a miss (an import built at run time, ``__import__("numpy")``) only means a
    light zygote imports the library itself, slower with the same result; a false hit
    (an import inside a string) only means the preloaded zygote runs plain code."""
    for match in IMPORT_STATEMENT.finditer(code):
        if match.group(1) is not None:
            names = [match.group(1)]
        else:
            names = [part.split()[0] for part in match.group(2).split(",") if part.strip()]
        for name in names:
            root = name.split(".")[0]
            if root and (root in roots or root not in sys.stdlib_module_names):
                return True
    return False
