"""Tasks: reading records from files or callables, and building validated examples per split."""

from promptmux.tasks.build import load_task
from promptmux.tasks.readers import read_records
from promptmux.tasks.spec import Example, TaskData

__all__ = ["Example", "TaskData", "load_task", "read_records"]
