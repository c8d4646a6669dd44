"""`Predictor`: load a bundle once, predict for any of its tasks from Python."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from promptmux.data.encode import encode_examples
from promptmux.errors import DataError
from promptmux.eval.evaluator import run_task
from promptmux.model.multitask import MultiTaskModel, TaskInfo
from promptmux.prompts.templates import apply_template
from promptmux.serve.bundle import load_bundle
from promptmux.tasks.spec import Example

TextInput = str | tuple[str, str] | Sequence[str]


class Predictor:
    """Predictions from a saved bundle.

    Example:
        >>> p = Predictor.from_pretrained("runs/demo")
        >>> p.predict("topic", ["Shares rose after the bank's results"])
        [{'label': 'business', 'score': 0.97, 'probabilities': {...}}]

    Inputs per task type: a string (or a `(text_a, text_b)` pair for pair tasks); token tasks take
    a string split on whitespace, or a list of words.
    """

    def __init__(self, model: MultiTaskModel, tokenizer, tasks: list[TaskInfo], settings: dict[str, Any], folder: Path | None = None, precision: str | None = None) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tasks = {t.name: t for t in tasks}
        self.settings = settings
        self.folder = folder
        self.max_length = int(settings.get("max_length", 128))
        self.precision = precision or settings.get("precision", "fp32")
        self.pad_id = tokenizer.pad_token_id or 0

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", precision: str | None = None) -> Predictor:
        """Load a bundle folder, or a run folder (its best bundle)."""
        model, tokenizer, tasks, settings, folder = load_bundle(path)
        return cls(model.to(device), tokenizer, tasks, settings, folder, precision)

    def task(self, name: str) -> TaskInfo:
        if name not in self.tasks:
            raise DataError(f"unknown task {name!r}; this bundle has: {', '.join(self.tasks)}")
        return self.tasks[name]

    def examples(self, task: str, inputs: Sequence[TextInput]) -> list[Example]:
        """Validate raw inputs and turn them into unlabeled examples."""
        self.task(task)
        out = []
        for i, item in enumerate(inputs):
            try:
                out.append(self.example(task, item))
            except DataError as e:
                raise DataError(f"input {i}: {e}") from None
        return out

    def example(self, task: str, item: TextInput) -> Example:
        """Validate one raw input; the DataError says what is wrong with it (callers add where)."""
        info = self.task(task)
        if info.type == "token":
            words = item.split() if isinstance(item, str) else list(item) if isinstance(item, (list, tuple)) else None
            if not words or not all(isinstance(w, str) and w.strip() for w in words):
                raise DataError("a token task needs a non-empty text or list of words")
            return Example(tuple(words))
        if isinstance(item, str):
            a, b = item, None
        elif isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(x, str) for x in item):
            a, b = item
        else:
            raise DataError(f"expected a text or a (text_a, text_b) pair, got {type(item).__name__}")
        if not a.strip() or (b is not None and not b.strip()):
            raise DataError("empty text")
        if info.prompt and info.pair and b is None:
            raise DataError(f"task {task!r} reads text pairs: give (text_a, text_b)")
        example = Example(a.strip(), None if b is None else b.strip())
        # The model was trained on prompted inputs, so every consumer gets the prompted example.
        return apply_template(info.prompt, [example])[0]

    def predict(self, task: str, inputs: TextInput | Sequence[TextInput], batch_size: int = 64) -> list[dict[str, Any]]:
        """Predict `task` for each input; returns one dict per input (see `format_output`)."""
        if isinstance(inputs, str) or (isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(x, str) for x in inputs) and self.task(task).type != "token"):
            inputs = [inputs]
        examples = self.examples(task, inputs)
        if not examples:
            return []
        info = self.tasks[task]
        enc = encode_examples(examples, self.tokenizer, info.type, self.max_length, info.n_labels)
        preds, scores = run_task(self.model, task, enc, self.pad_id, batch_size, self.precision, with_scores=True)
        return [format_output(info, ex, p, s) for ex, p, s in zip(examples, preds, scores)]


def format_output(info: TaskInfo, example: Example, pred: Any, score: Any) -> dict[str, Any]:
    """A JSON-ready prediction:

    - classification: `label`, `score`, `probabilities` (label -> p)
    - multilabel: `labels`, `probabilities`
    - regression: `value`
    - token: `tokens` (word, tag, score), `entities` (type, text, start, end word index) for BIO tags
    """
    labels = info.labels or []
    if info.type == "classification":
        return {"label": labels[pred], "score": round(score[pred], 6), "probabilities": {l: round(p, 6) for l, p in zip(labels, score)}}
    if info.type == "multilabel":
        return {"labels": [labels[i] for i in pred], "probabilities": {l: round(p, 6) for l, p in zip(labels, score)}}
    if info.type == "regression":
        return {"value": float(pred)}
    words = list(example.text)
    fill = labels.index("O") if "O" in labels else 0
    tags = [labels[t] for t in pred] + [labels[fill]] * (len(words) - len(pred))
    probs = [max(row) for row in score] + [None] * (len(words) - len(pred))
    tokens = [{"word": w, "tag": t, "score": None if p is None else round(p, 6)} for w, t, p in zip(words, tags, probs)]
    return {"tokens": tokens, "entities": bio_entities(words, tags)}


def bio_entities(words: list[str], tags: list[str]) -> list[dict[str, Any]]:
    """Entity spans from BIO tags (an I- tag that does not continue its type starts a new span)."""
    spans: list[dict[str, Any]] = []
    for i, tag in enumerate(tags):
        if tag == "O" or "-" not in tag:
            continue
        prefix, kind = tag.split("-", 1)
        if prefix == "I" and spans and spans[-1]["type"] == kind and spans[-1]["end"] == i:
            spans[-1]["end"] = i + 1
        else:
            spans.append({"type": kind, "start": i, "end": i + 1})
    for s in spans:
        s["text"] = " ".join(words[s["start"] : s["end"]])
    return spans
