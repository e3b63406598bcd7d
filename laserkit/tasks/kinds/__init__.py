"""Task kinds, one class per file, registered by name (base.py; docs/tasks.md)."""

from .base import KINDS, TaskKind, declarable, kind_of

__all__ = ["KINDS", "TaskKind", "declarable", "kind_of"]
