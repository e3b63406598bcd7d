"""The module paths of laserkit 0.1 (``laserkit.loading``, ``laserkit.outofcore``, …), importable
for one more release with a DeprecationWarning that names the new path (CHANGELOG.md).

An old path is an alias: importing it imports the new module and binds the *same* module object
under the old name, so ``monkeypatch.setattr("laserkit.loading.x", …)`` or ``from
laserkit.evaluate import EvalResult`` still reach the code that runs. Nothing else in laserkit
imports through these names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import cast

MOVED = {
    "errors": "core.errors",
    "fileio": "core.fileio",
    "lazy": "core.lazy",
    "hub": "core.hub",
    "loading": "io.load",
    "gguf_cache": "io.cache",
    "checkpoint": "io.checkpoint",
    "modelfiles": "io.modelfiles",
    "saving": "io.save",
    "architectures": "model.architectures",
    "targets": "model.targets",
    "scan": "spectral.scan",
    "scan_plots": "spectral.plots",
    "spectrum": "spectral.spectrum",
    "outofcore": "edit.ondisk",
    "gguf_out": "edit.gguf",
    "evaluate": "eval.evaluate",
    "eval_stream": "eval.stream",
    "scoring": "eval.scoring",
    "masked": "eval.masked",
    "stats": "eval.stats",
    "intervals": "eval.intervals",
    "harness": "eval.harness",
    "final_eval": "search.final_eval",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``laserkit.<old>`` and loads it as the module now at ``laserkit.<new>``."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.rpartition(".")
        if package != __package__ or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = f"{__package__}.{MOVED[spec.name.rpartition('.')[2]]}"
        warnings.warn(
            f"{spec.name} is deprecated: import {new} (laserkit 0.2 moved it; the old "
            "path goes in 0.3)",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the alias's spec on the real module: give it back its own
        module.__spec__ = cast(importlib.machinery.ModuleSpec, module.__spec__).loader_state


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
