"""Names a package imports on first use (PEP 562): `laserkit --help`, a usage error or the CLI's
option building must not pay for importing torch and transformers."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(
    package: str, table: dict[str, str], namespace: dict[str, Any]
) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``name`` comes from its submodule
    ``table[name]`` when first asked for, and is then kept in ``namespace`` (the package's
    globals), so the lookup runs once per name."""

    def __getattr__(name: str) -> object:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{table[name]}", package), name)
        namespace[name] = value
        return value

    return __getattr__
