"""`T2TTask`: what a text-to-text bundle records per task, and how a task's answers read."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from promptmux.config.schema import Config
from promptmux.errors import ConfigError
from promptmux.prompts.templates import render
from promptmux.tasks.spec import Example, TaskData


@dataclass(frozen=True)
class T2TTask:
    """One task of a decoder model.

    Attributes:
        name: the task's name.
        type: `classification` (answers are verbalizer words, scored) or `generation` (free text).
        labels: label names in id order (classification), else None.
        metric: the main metric.
        prompt: the template the decoder reads; the answer follows it after one space.
        pair: whether the task reads `text_b` too.
        verbalizer: label name -> answer words (classification).
        max_new_tokens: most answer tokens (generation; training cuts longer targets there too).
    """

    name: str
    type: str
    labels: list[str] | None
    metric: str
    prompt: str
    pair: bool = False
    verbalizer: dict[str, str] | None = None
    max_new_tokens: int | None = None

    # `Predictor.example` validates inputs for any task object; decoder tasks have one template.
    @property
    def rules(self) -> None:
        return None

    @property
    def pool(self) -> None:
        return None

    @property
    def ensemble(self) -> int:
        return 1

    @property
    def n_labels(self) -> int:
        return len(self.labels or [])

    def prompt_text(self, example: Example) -> str:
        """The text the decoder reads for `example` (its template filled in)."""
        text, _ = render(self.prompt, example.text, example.text_b)
        return text

    def answers(self) -> list[str]:
        """Each label's verbalizer words, in label id order (classification)."""
        if self.labels is None or self.verbalizer is None:
            raise ValueError(f"task {self.name!r} has no verbalizer")
        return [self.verbalizer[label] for label in self.labels]

    def target_text(self, example: Example) -> str:
        """The answer the decoder learns for a labeled example."""
        if self.type == "classification":
            return self.answers()[int(example.label)]  # type: ignore[arg-type]
        return str(example.label)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_tasks(cfg: Config, raw: dict[str, TaskData]) -> list[T2TTask]:
    """One `T2TTask` per config task; every label found in the data must have verbalizer words."""
    out = []
    for name, t in cfg.tasks.items():
        labels = raw[name].labels
        verbalizer = None
        if t.type == "classification":
            given = dict(t.verbalizer or {})
            missing = [label for label in labels or [] if label not in given]
            if missing:
                raise ConfigError(
                    f"tasks.{name}.verbalizer: no entry for label(s) {missing} found in the data "
                    f"(labels: {', '.join(labels or [])}); every label needs its words"
                )
            extra = [label for label in given if label not in (labels or [])]
            if extra:
                raise ConfigError(
                    f"tasks.{name}.verbalizer.{extra[0]}: no such label in the data "
                    f"(labels: {', '.join(labels or [])})"
                )
            verbalizer = {label: given[label] for label in labels or []}
        out.append(
            T2TTask(
                name=name,
                type=t.type,
                labels=labels,
                metric=cfg.main_metric(name),
                prompt=t.prompt.template or "{text}",
                pair=t.fields.text_b is not None,
                verbalizer=verbalizer,
                max_new_tokens=(t.max_new_tokens or cfg.model.max_new_tokens) if t.type == "generation" else None,
            )
        )
    return out
