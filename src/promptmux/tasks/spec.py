"""In-memory task data: examples, label sets and splits, independent of where rows came from."""

from __future__ import annotations

from dataclasses import dataclass, field

Label = int | float | tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Example:
    """One row, already validated and mapped to label ids.

    - classification: `text` (and `text_b` for pairs), `label` is the class id.
    - multilabel: `label` is a sorted tuple of class ids (possibly empty).
    - regression: `label` is a float.
    - token: `text` is a tuple of words and `label` a tuple of tag ids, one per word.
    `label` is None for unlabeled rows (prediction input).
    """

    text: str | tuple[str, ...]
    text_b: str | None = None
    label: Label | None = None


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
