"""One way to extend laserkit: a ``Registry`` maps a name to an entry: a class or function, or
the text ``"module:attr"`` that is imported the first time the name is used (so listing names
for ``--help`` imports nothing heavy). Interventions, search strategies, task kinds, data
readers, compare methods, SVD methods and noise estimators each have one
(docs/extending.md).

Third-party packages add entries without touching laserkit, through the Python entry-point
group ``laserkit.<group>`` (for example ``laserkit.interventions``), as pytest plugins do::

    [project.entry-points."laserkit.interventions"]
    my_kind = "my_package.kinds:MyKind"

Entry points are read the first time a name is missing or the names are listed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar, overload

from .errors import LaserkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → entries of one kind, in registration order (shipped entries first, then those
    of installed packages), with one-line errors that list what is accepted."""

    def __init__(self, what: str, group: str | None = None) -> None:
        self.what = what  # "intervention kind", as named in errors
        self.group = group  # entry-point group suffix: laserkit.<group>
        self._entries: dict[str, T | str] = {}
        self._plugins_read = group is None

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, entry: T | str) -> T | str: ...

    def register(self, name: str, entry: Any = None) -> Any:
        """Add ``entry`` under ``name`` (a decorator when ``entry`` is omitted). A name that is
        already taken is an error: two kinds answering to one name would make runs ambiguous."""

        def add(obj: Any) -> Any:
            if name in self._entries:
                raise LaserkitError(f"{self.what} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add if entry is None else add(entry)

    def unregister(self, name: str) -> None:
        """Remove ``name`` if present (tests register throwaway entries and take them back)."""
        self._entries.pop(name, None)

    def _read_plugins(self) -> None:
        if self._plugins_read:
            return
        self._plugins_read = True
        for ep in entry_points(group=f"laserkit.{self.group}"):
            if ep.name not in self._entries:
                self._entries[ep.name] = ep.value

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self._read_plugins()
        return name in self._entries

    def names(self) -> list[str]:
        """Every name, in registration order (for --help, docs and error messages)."""
        self._read_plugins()
        return list(self._entries)

    def get(self, name: str) -> T:
        """The entry for ``name``, imported on first use; an unknown name is one line that
        lists the accepted ones."""
        if name not in self:
            raise LaserkitError(
                f"unknown {self.what} {name!r}: use one of {', '.join(self.names())}"
            )
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = self._entries[name] = _resolve(entry, f"{self.what} {name!r}")
        return entry

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, entry) pairs, every entry imported."""
        for name in self.names():
            yield name, self.get(name)


def _resolve(ref: str, what: str) -> Any:
    """``"package.module:attr"`` → the attribute, or one line naming what could not be found."""
    module, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise LaserkitError(f"{what}: cannot import {ref!r} ({e})") from None
    return obj
