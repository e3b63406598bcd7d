"""`laserkit cache`: what laserkit keeps converted (GGUF files), and how to clear it."""

from __future__ import annotations

import typer

from . import app
from .common import console


@app.command()
def cache(
    clear: bool = typer.Option(False, "--clear", help="remove every cached conversion"),
) -> None:
    """List the cached GGUF conversions (cap: $LASERKIT_CACHE_MAX_GB, default 50), or clear them."""
    from ..io.cache import cache_root, entries, max_bytes
    from ..io.cache import clear as clear_all
    from .output import results

    if clear:
        count, size = clear_all()
        console.print(
            f"removed {count} cached conversion(s), {size / 2**30:.2f} GiB, from {cache_root()}"
        )
        return
    items = entries()
    total = sum(n for _, n, _ in items)
    for d, n, _ in reversed(items):
        results.print(f"{d.name}  {n / 2**30:7.2f} GiB")
    results.print(
        f"{len(items)} conversion(s), {total / 2**30:.2f} of {max_bytes() / 2**30:.0f} "
        f"GiB in {cache_root()}"
    )
