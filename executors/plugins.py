"""Named factories from entry-point groups: codeloop's own and third parties'.

codeloop registers its built-in executors, models and CLI commands in its
``pyproject.toml`` under the same groups a plugin package uses
(``codeloop.executors``, ``codeloop.models``, ``codeloop.commands``), so there
is one list of built-ins and one way to load anything.

Installed metadata is read through :mod:`importlib.metadata`. When codeloop
runs from a source checkout (an editable install, or tests run in a clone),
the checkout's ``pyproject.toml`` is read as well and gives codeloop's own
entries: the installed metadata is only as new as the last ``pip install -e``,
and an entry point added since would otherwise be missing. Both come from the
same list, the pyproject's.

A :class:`PluginTable` can also be built from an explicit list of entry
points, so tests and embedding applications need no installed metadata.
"""

from __future__ import annotations

import functools
import importlib.metadata
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

DISTRIBUTION = "codeloop"
# The checkout's root, when these packages are run from one (executors/ sits in it).
CHECKOUT_PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


class UnknownPluginError(KeyError):
    """No entry point of that name in the group."""


@dataclass(frozen=True)
class PluginTable:
    """One entry-point group by name; targets are imported only when loaded,
    so a missing optional extra matters only when its entry is asked for."""

    group: str
    entries: Mapping[str, EntryPoint]

    @classmethod
    def of(cls, group: str, entry_points: Iterable[EntryPoint]) -> PluginTable:
        """A table of exactly these entry points (those of other groups are left out)."""
        return cls(group, {ep.name: ep for ep in entry_points if ep.group == group})

    @classmethod
    def discover(cls, group: str) -> PluginTable:
        """The installed entry points of ``group``, with codeloop's own taken
        from the source checkout when there is one."""
        return cls.of(group, merge(installed(group), checkout_entry_points(CHECKOUT_PYPROJECT, group)))

    def names(self) -> list[str]:
        return sorted(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def load(self, name: str) -> Any:
        try:
            entry = self.entries[name]
        except KeyError:
            raise UnknownPluginError(name) from None
        return entry.load()


def installed(group: str) -> list[EntryPoint]:
    return list(importlib.metadata.entry_points(group=group))


def merge(installed_entries: Iterable[EntryPoint], checkout_entries: Iterable[EntryPoint] | None) -> list[EntryPoint]:
    """Installed entry points, except that with a checkout its list replaces
    codeloop's installed (possibly stale) one; a checkout entry also wins over
    a plugin's entry of the same name."""
    if checkout_entries is None:
        return list(installed_entries)
    ours = list(checkout_entries)
    taken = {ep.name for ep in ours}
    others = [ep for ep in installed_entries if _distribution(ep) != DISTRIBUTION and ep.name not in taken]
    return ours + others


def checkout_entry_points(pyproject: Path, group: str) -> list[EntryPoint] | None:
    """``group``'s entry points in codeloop's pyproject.toml, or None when
    ``pyproject`` is not codeloop's (an installed wheel has none beside it)."""
    table = _entry_point_table(pyproject)
    if table is None:
        return None
    return [EntryPoint(name, value, group) for name, value in table.get(group, {}).items()]


@functools.cache
def _entry_point_table(pyproject: Path) -> dict[str, dict[str, str]] | None:
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return None
    if project.get("name") != DISTRIBUTION:
        return None
    return project.get("entry-points", {})


def _distribution(entry: EntryPoint) -> str | None:
    dist = getattr(entry, "dist", None)
    return dist.name if dist is not None else None
