"""Evaluation tasks as data: the registry, readers and data sources."""

from .registry import Example, Task, get_task, list_tasks

__all__ = ["Example", "Task", "get_task", "list_tasks"]
