"""Evaluation tasks as data: the schema (spec), readers (formats), data sources, answer
matching, the registry of built-in and user tasks, and the task kinds (kinds/*.py, one class
each: what a kind reports, checks, asks of a model (requests.py) and records; docs/tasks.md)."""

from .registry import get_task, list_tasks
from .spec import Example, Task

__all__ = ["Example", "Task", "get_task", "list_tasks"]
