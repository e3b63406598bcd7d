"""Evaluation tasks as data: the schema (spec), readers (formats), data sources, answer
matching and the registry of built-in and user tasks (docs/tasks.md)."""

from .registry import get_task, list_tasks
from .spec import Example, Task

__all__ = ["Example", "Task", "get_task", "list_tasks"]
