"""The pool's slots: one zygote each, its own directory, user id and place in the recycling order.

A slot outlives its zygotes. A zygote is recycled after a number of runs
(staggered across a kind's slots in the first generation, so they never all
recycle at once): its successor warms up while it keeps serving, and takes
over on the slot's next execution.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ._shared import uid_block
from .isolation import Isolator, Mount, SandboxView
from .pool_workspace import SlotWorkspace
from .pool_zygote import ZygoteProcess


@dataclass
class Slot:
    index: int
    workspace: SlotWorkspace
    light: bool = False  # preloads nothing (see PoolSettings.light_size)
    paths: SandboxView | None = None  # how the slot's directory appears inside its zygote's sandbox
    uid: int | None = None  # the user its zygote and children run as, when we drop root
    position: int = 0  # index among the slots of its kind
    kind_count: int = 1
    zygote: ZygoteProcess | None = None
    replacement: asyncio.Task | None = None  # the successor being warmed up while this zygote serves
    generation: int = 0  # zygotes this slot has had

    def recycle_after(self, max_executions: int) -> int:
        """Executions before the zygote is recycled; the first generation is staggered."""
        if self.generation <= 1 and self.kind_count > 1:
            return max(1, max_executions * (self.position + 1) // self.kind_count)
        return max_executions

    async def swap_in_replacement(self) -> None:
        """If the successor zygote is warm, retire the old one and use it."""
        task = self.replacement
        if task is None or not task.done():
            return
        self.replacement = None
        if task.cancelled() or task.exception() is not None:
            return  # the old zygote keeps serving; the next recycle point tries again
        old, self.zygote = self.zygote, task.result()
        self.generation += 1
        if old is not None:
            await old.kill()

    async def close(self) -> None:
        """Kill the zygote and any successor being warmed up."""
        task, self.replacement = self.replacement, None
        if task is not None:
            task.cancel()
            try:
                successor = await task
            except (asyncio.CancelledError, Exception):
                successor = None
            if successor is not None:
                await successor.kill()
        if self.zygote is not None:
            await self.zygote.kill()
            self.zygote = None


def lay_out_slots(
    root: Path, size: int, light_size: int, isolator: Isolator, mounts: Sequence[Mount], private_tmp: bool
) -> list[Slot]:
    """Make the slots' directories under ``root``: ``size`` preloaded ones, then the light ones."""
    kinds = [(False, i, size) for i in range(size)] + [(True, i, light_size) for i in range(light_size)]
    slots = [
        Slot(n, SlotWorkspace(root / f"slot-{n}"), light=is_light, position=i, kind_count=count)
        for n, (is_light, i, count) in enumerate(kinds)
    ]
    # One user id per slot (when we drop root): zygotes cannot signal each other, and
    # a fork bomb exhausts only its own slot's RLIMIT_NPROC count.
    for slot, uid in zip(slots, uid_block(len(slots)), strict=False):
        slot.uid = uid
        # A zygote sees only its own slot's directory, never another execution's files.
        slot.paths = isolator.view(slot.workspace.root, mounts)
        if not private_tmp:  # no private /tmp: matplotlib's cache lives in the slot
            (slot.workspace.root / "mpl").mkdir(exist_ok=True)
            isolator.prepare(slot.workspace.root / "mpl", slot.uid)
    return slots
