"""Progress bars on stderr fed by the engines' ``(done, total)`` callbacks (search, worker,
compare): one bar per name, added when its work starts; none off a terminal (no bar litter in
logs)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from types import TracebackType

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from .common import console


class Bars:
    """``with Bars() as bars: engine(progress=bars.start(label))``; ``pad`` widens the names'
    column so that several bars line up."""

    def __init__(self, pad: int | None = None) -> None:
        label = f"{{task.description:<{pad}}}" if pad else "{task.description}"
        self.progress = Progress(
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not console.is_terminal,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> Bars:
        self.progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.__exit__(exc_type, exc, tb)

    def start(self, name: str) -> Callable[[int, int], None]:
        """Add the bar ``name``; returns its ``(done, total)`` callback."""
        self.tasks[name] = self.progress.add_task(name, total=None)
        return partial(self, name)

    def __call__(self, name: str, done: int, total: int) -> None:
        self.progress.update(self.tasks[name], completed=done, total=max(total, done) or None)
