"""Task kinds, one class per file, registered by name (base.py; docs/tasks.md)."""

from .base import KINDS, Ask, Records, TaskKind, declarable, kind_of, mean

__all__ = ["KINDS", "Ask", "Records", "TaskKind", "declarable", "kind_of", "mean"]
