"""``restricted``: RestrictedPython's policy, run inside a sandboxed pool child.

The code is compiled with ``compile_restricted`` and run with guarded
attribute access, item access, iteration, writes and an import allow list
(see ``restricted_policy.py``), but never in the orchestrator's process: it
runs in a child forked by the pool's zygote, inside the same isolation as the
``sandbox`` executor. RestrictedPython is a policy layer, not a boundary: once
numpy or pandas are importable, the boundary is the process sandbox around it.

Policy violations found at compile time (``_`` names, ``try/except*``, frame
attributes) come back as FAILED with ``error_type`` ``SyntaxError`` and
RestrictedPython's own message; refused imports as ``ImportError``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import BaseExecutor, ExecutionResult, InputFile, Isolation, Limits
from .inside.restricted_policy import ALLOWED_MODULES
from .pool import PoolExecutor, PoolSettings


class RestrictedExecutor(BaseExecutor):
    """RestrictedPython in a pool child. Pass ``pool=`` to share zygotes with a ``pool`` executor."""

    name = "restricted"
    allowed_modules = tuple(sorted(ALLOWED_MODULES))

    def __init__(
        self,
        *,
        pool: PoolExecutor | None = None,
        limits: Limits | None = None,
        settings: PoolSettings | None = None,
        **setting_overrides,
    ) -> None:
        if pool is not None and (settings is not None or setting_overrides):
            raise ValueError("pass either pool= or pool settings, not both")
        self._owns_pool = pool is None
        self.pool = pool or PoolExecutor(limits=limits, settings=settings, mode="restricted", **setting_overrides)
        if not self.pool.settings.restricted_policy:
            raise ValueError("the shared pool was started with restricted_policy=False")
        super().__init__(limits or self.pool.limits)

    @property
    def isolation(self) -> Isolation:
        return Isolation.RESTRICTED

    @property
    def isolator(self):
        """The :class:`~executors.isolation.Isolator` of the pool the code runs in."""
        return self.pool.isolator

    async def start(self) -> None:
        await self.pool.start()

    async def _run(
        self, code: str, *, files: Sequence[InputFile], limits: Limits, session: str | None
    ) -> ExecutionResult:
        return await self.pool.run_in_mode(code, files=files, limits=limits, mode="restricted")

    async def aclose(self) -> None:
        if self._owns_pool:
            await self.pool.aclose()
