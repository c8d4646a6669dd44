"""Few-shot training sets: k examples per label, drawn with a seed (pure function)."""

from __future__ import annotations

import random

from promptmux.errors import DataError
from promptmux.tasks.spec import Example


def few_shot_sample(
    examples: list[Example], labels: list[str], k: int, seed: int, task: str = "task"
) -> list[Example]:
    """Exactly `k` examples of each label of a classification task, in their original order.

    Each label's examples are drawn by their own seeded draw, so the rows of one label do not
    depend on how many rows the other labels have.

    Args:
        examples: the task's training examples (`label` is the class id).
        labels: the task's label set; id i names `labels[i]`.
        k: examples per label.
        seed: the draw's seed (the run's `seed`).
        task: the task's name, for error messages.

    Raises:
        DataError: a label has fewer than k examples.
    """
    by_label: dict[int, list[int]] = {i: [] for i in range(len(labels))}
    for i, ex in enumerate(examples):
        if not isinstance(ex.label, int) or ex.label not in by_label:
            raise DataError(
                f"tasks.{task} (train): row {i} has no class label; few-shot sampling needs one"
            )
        by_label[ex.label].append(i)
    chosen: list[int] = []
    for label_id, rows in by_label.items():
        if len(rows) < k:
            raise DataError(
                f"tasks.{task} (train): add_task.few_shot={k} needs {k} examples of each label; "
                f"label {labels[label_id]!r} has {len(rows)}"
            )
        chosen.extend(random.Random(f"{seed}:{label_id}").sample(rows, k))
    return [examples[i] for i in sorted(chosen)]
