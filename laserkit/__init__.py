"""laserkit: layer-selective rank reduction for Hugging Face transformer models.

The flow, one module each: load a model (loading) → resolve targets (targets) → apply an
intervention reversibly (edit, interventions) → evaluate a task (tasks, evaluate) → search
(search) → save / report (saving, report).
"""

from .lazy import lazy_attributes

__version__ = "0.1.0"

# Names are imported on first use (PEP 562): `laserkit --help` or a usage error must not pay for
# importing torch and transformers, and a Ctrl-C while starting must find nothing half-done.
_LAZY = {
    "Editor": "edit", "FactorCache": "edit", "LaserkitError": "errors", "EvalResult": "evaluate",
    "evaluate": "evaluate", "Intervention": "interventions", "Loaded": "loading",
    "load": "loading", "save": "saving", "Target": "targets", "model_layout": "targets",
    "parse_layers": "targets", "resolve": "targets", "get_task": "tasks", "list_tasks": "tasks",
}

__getattr__ = lazy_attributes(__name__, _LAZY, globals())


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
