"""laserkit: layer-selective rank reduction for Hugging Face transformer models.

The flow, one module each: load a model (loading) → resolve targets (targets) → apply an
intervention reversibly (edit, interventions) → evaluate a task (tasks, evaluate) → search
(search) → save / report (saving, report).
"""

__version__ = "0.1.0"

from .edit import Editor, FactorCache  # noqa: E402
from .errors import LaserkitError  # noqa: E402
from .evaluate import EvalResult, evaluate  # noqa: E402
from .interventions import Intervention  # noqa: E402
from .loading import Loaded, load  # noqa: E402
from .saving import save  # noqa: E402
from .targets import Target, model_layout, parse_layers, resolve  # noqa: E402
from .tasks import get_task, list_tasks  # noqa: E402

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
