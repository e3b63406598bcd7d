"""Where a command's result goes: stdout (``results``), so that ``laserkit targets M | grep fc_in``
and ``laserkit status RUN > status.txt`` capture it; progress, status lines and errors go to
stderr (``common.console``)."""

from __future__ import annotations

from rich.console import Console

results = Console()
