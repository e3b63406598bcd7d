"""laserkit: layer-selective rank reduction for Hugging Face transformer models.

The folders follow the flow, each importing only from the ones before it (tests/test_layout.py):
``core`` (errors, files, registry) → ``io`` (read and write a model) → ``model`` (architectures,
targets) → ``spectral`` (MP statistics, scan, Spectrum) → ``interventions`` (W → Ŵ) → ``edit``
(apply and restore in memory, or write edited files) → ``tasks`` → ``eval`` (scores and their
uncertainty) → ``search`` (which edit helps, save the chosen model) → ``cli``.
"""

import sys
import types

from . import _deprecated
from ._version import __version__
from .core.lazy import lazy_attributes

# Names are imported on first use (PEP 562): `laserkit --help` or a usage error must not pay for
# importing torch and transformers, and a Ctrl-C while starting must find nothing half-done.
_LAZY = {
    "Editor": "edit.editor",
    "FactorCache": "edit.editor",
    "LaserkitError": "core.errors",
    "EvalResult": "eval.evaluate",
    "evaluate": "eval.evaluate",
    "Intervention": "interventions",
    "Loaded": "io.load",
    "load": "io.load",
    "save": "io.save",
    "Target": "model.targets",
    "model_layout": "model.targets",
    "parse_layers": "model.targets",
    "resolve": "model.targets",
    "get_task": "tasks",
    "list_tasks": "tasks",
}

__getattr__ = lazy_attributes(__name__, _LAZY, globals())


class _Package(types.ModuleType):
    """Public names do not depend on import order: importing a submodule of the same name (the
    0.1 path ``laserkit.evaluate``) must not replace the function ``laserkit.evaluate``."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
_deprecated.install()

__all__ = [
    "Editor",
    "EvalResult",
    "FactorCache",
    "Intervention",
    "LaserkitError",
    "Loaded",
    "Target",
    "__version__",
    "evaluate",
    "get_task",
    "list_tasks",
    "load",
    "model_layout",
    "parse_layers",
    "resolve",
    "save",
]
