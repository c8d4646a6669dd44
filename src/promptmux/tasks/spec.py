"""In-memory task data: examples, label sets and splits, independent of where rows came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Label = int | float | tuple[int, ...] | str


@dataclass(frozen=True, slots=True)
class Example:
    """One row, already validated and mapped to label ids.

    - classification: `text` (and `text_b` for pairs), `label` is the class id.
    - multilabel: `label` is a sorted tuple of class ids (possibly empty).
    - regression: `label` is a float.
    - token: `text` is a tuple of words and `label` a tuple of tag ids, one per word.
    - generation: `label` is the target text (model.kind: decoder, see promptmux.t2t).
    `label` is None for unlabeled rows (prediction input). `meta` holds the row's metadata fields
    that prompt rules read (`promptmux.prompts.rules`), and only those; None when no rule reads any.
    """

    text: str | tuple[str, ...]
    text_b: str | None = None
    label: Label | None = None
    meta: dict[str, Any] | None = field(default=None, hash=False)


@dataclass
class TaskData:
    """A task's examples per split and its label set (None for regression)."""

    name: str
    type: str
    labels: list[str] | None
    splits: dict[str, list[Example]]
    skipped: dict[str, int] = field(default_factory=dict)  # split -> rows skipped under on_bad_row=skip

    def split(self, name: str) -> list[Example]:
        return self.splits.get(name, [])
