"""`Predictor`: load a bundle once, predict for any of its tasks from Python."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from promptmux.errors import DataError
from promptmux.model.multitask import MultiTaskModel, TaskInfo
from promptmux.precision import resolve_precision, serving_precision
from promptmux.prompts.ensemble import predict_examples
from promptmux.prompts.rules import meta_fields
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
        device = next(model.parameters()).device
        # Named: as asked (auto resolved). Not named: the bundle's training precision, but fp32
        # where this hardware would emulate bf16 (promptmux.precision).
        self.precision = (
            resolve_precision(precision, device) if precision else serving_precision(settings.get("precision", "fp32"), device)
        )
        self.pad_id = tokenizer.pad_token_id or 0

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", precision: str | None = None) -> Predictor:
        """Load a bundle folder, or a run folder (its best bundle)."""
        from promptmux.t2t.bundle import is_t2t_bundle

        if is_t2t_bundle(path):  # a decoder bundle (model.kind: decoder) answers in text
            from promptmux.t2t.predictor import T2TPredictor

            return T2TPredictor.from_pretrained(path, device, precision)
        model, tokenizer, tasks, settings, folder = load_bundle(path)
        return cls(model.to(device), tokenizer, tasks, settings, folder, precision)

    def task(self, name: str) -> TaskInfo:
        if name not in self.tasks:
            raise DataError(f"unknown task {name!r}; this bundle has: {', '.join(self.tasks)}")
        return self.tasks[name]

    def examples(self, task: str, inputs: Sequence[TextInput], meta: Sequence[dict[str, Any] | None] | None = None) -> list[Example]:
        """Validate raw inputs (and their metadata, one per input) into unlabeled examples."""
        self.task(task)
        if isinstance(meta, dict):
            raise DataError("meta: give a list with one metadata object (or None) per input")
        if meta is not None and len(meta) != len(inputs):
            raise DataError(f"meta: {len(meta)} entries for {len(inputs)} inputs; give one per input (or None)")
        out = []
        for i, item in enumerate(inputs):
            try:
                out.append(self.example(task, item, None if meta is None else meta[i]))
            except DataError as e:
                raise DataError(f"input {i}: {e}") from None
        return out

    def example(self, task: str, item: TextInput, meta: dict[str, Any] | None = None) -> Example:
        """Validate one raw input; the DataError says what is wrong with it (callers add where).

        The example is returned unprompted, with the metadata fields the task's prompt rules read
        (others are dropped): prompts are applied when it is encoded (`prompts.ensemble`), where
        rules and ensembles see the input as given.
        """
        info = self.task(task)
        if meta is not None and not isinstance(meta, dict):
            raise DataError(f"meta: expected an object of metadata fields, got {type(meta).__name__}")
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
        if info.pair and b is None and (info.prompt or info.rules or info.pool):
            raise DataError(f"task {task!r} reads text pairs: give (text_a, text_b)")
        fields = meta_fields(info.rules or ())
        kept = {f: meta[f] for f in fields if f in meta} if meta and fields else None
        return Example(a.strip(), None if b is None else b.strip(), meta=kept)

    def predict(self, task: str, inputs: TextInput | Sequence[TextInput], batch_size: int = 64, meta: dict[str, Any] | Sequence[dict[str, Any] | None] | None = None) -> list[dict[str, Any]]:
        """Predict `task` for each input; returns one dict per input (see `format_output`).

        `meta`: metadata fields for the task's prompt rules, one dict per input (or one dict for a
        single input). With `ensemble: k` in the bundle, each input is predicted under k prompts
        and the probabilities (values) are averaged (`promptmux.prompts.ensemble`).
        """
        if isinstance(inputs, str) or (isinstance(inputs, tuple) and len(inputs) == 2 and all(isinstance(x, str) for x in inputs) and self.task(task).type != "token"):
            inputs = [inputs]
            meta = [meta] if isinstance(meta, dict) else meta
        examples = self.examples(task, inputs, meta)
        if not examples:
            return []
        info = self.tasks[task]
        preds, scores = predict_examples(self.model, info, examples, self.tokenizer, self.max_length, self.pad_id, batch_size, self.precision)
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
