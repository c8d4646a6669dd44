"""Prompt ensembles: predict each input under k prompts and average what the heads say.

Prompting several ways and averaging is the inference half of "Exploiting Cloze Questions for Few
Shot Text Classification" (PET, Schick & Schütze, 2021, https://arxiv.org/abs/2001.07676), here
over the task's own candidate templates: `TaskInfo.prompt` first, then `TaskInfo.pool` in order,
which after adaptive selection is the ranking on dev, best first (`ensemble: k` takes the first k).
Averaged are class probabilities (softmax for classification, sigmoid per label for multilabel)
and regression values; predictions follow from the averages (argmax, p > 0.5, the mean). Token
tasks take no template, so they have no ensemble (refused in `check_config`). Rules still pick the
template of the examples they match, in every variant: they override the candidate.

The k prompted copies of an input are encoded as rows of one set and go through the model
together (`run_task` batches them by length, so an input's variants mostly share a forward pass);
k = 1 runs exactly what a single prompt runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from promptmux.data.encode import encode_examples
from promptmux.eval.evaluator import pad_token_predictions, run_task
from promptmux.model.multitask import MultiTaskModel, TaskInfo
from promptmux.prompts.rules import apply_prompts
from promptmux.tasks.spec import Example


def variants(info: TaskInfo) -> list[str | None]:
    """The templates inference runs for `info`: its prompt, then the first k-1 of its pool."""
    if info.type == "token":
        return [None]
    k = max(1, int(getattr(info, "ensemble", 1) or 1))
    return ([info.prompt] + list(getattr(info, "pool", None) or []))[:k]


def prompted_rows(info: TaskInfo, examples: Sequence[Example]) -> list[Example]:
    """Each example under each variant, item-major: row `i * k + j` is example i under variant j."""
    rules = getattr(info, "rules", None) or ()
    per_variant = [apply_prompts(list(examples), template, rules) for template in variants(info)]
    return [rows[i] for i in range(len(examples)) for rows in per_variant]


def combine(task_type: str, scores: Sequence[Any]) -> tuple[Any, Any]:
    """The prediction and scores of one input from its k variants' scores (`Head.scores` rows)."""
    if task_type == "regression":
        value = float(np.mean(np.asarray(scores, dtype=np.float64)))
        return value, value
    mean = np.mean(np.asarray(scores, dtype=np.float64), axis=0)
    if task_type == "classification":
        return int(mean.argmax()), mean.tolist()
    if task_type == "multilabel":
        # The multilabel head's rule (`MultiLabelHead.threshold`): a label is on when p > 0.5.
        return tuple(int(i) for i in np.flatnonzero(mean > 0.5)), mean.tolist()
    raise ValueError(f"{task_type} tasks have no prompt ensemble")


def merge(info: TaskInfo, outputs: Sequence[tuple[Any, Any]]) -> tuple[Any, Any]:
    """One input's (prediction, scores) from the (prediction, scores) of its variants."""
    if len(outputs) == 1:
        return outputs[0]  # a single prompt: the head's own answer, untouched
    return combine(info.type, [s for _, s in outputs])


def predict_examples(
    model: MultiTaskModel,
    info: TaskInfo,
    examples: Sequence[Example],
    tokenizer,
    max_length: int,
    pad_id: int,
    batch_size: int = 64,
    precision: str = "fp32",
    cache_dir: Any = None,
) -> tuple[list[Any], list[Any]]:
    """Predictions and scores of unprompted `examples` under the task's prompts (averaged)."""
    if not examples:
        return [], []
    rows = prompted_rows(info, examples)
    enc = encode_examples(rows, tokenizer, info.type, max_length, info.n_labels, cache_dir)
    preds, scores = run_task(model, info.name, enc, pad_id, batch_size, precision, with_scores=True)
    k = len(rows) // len(examples)
    if k == 1:
        return preds, scores
    out = [
        merge(info, list(zip(preds[i * k : (i + 1) * k], scores[i * k : (i + 1) * k])))
        for i in range(len(examples))
    ]
    return [p for p, _ in out], [s for _, s in out]


def evaluate_examples(
    model: MultiTaskModel,
    tasks: Sequence[TaskInfo],
    splits: dict[str, list[Example]],
    tokenizer,
    max_length: int,
    pad_id: int,
    batch_size: int = 128,
    precision: str = "fp32",
    cache_dir: Any = None,
) -> dict[str, dict[str, float]]:
    """Per-task metrics of labeled, unprompted examples, predicted the way `Predictor` predicts."""
    from promptmux.eval.metrics import compute_metrics

    results: dict[str, dict[str, float]] = {}
    for info in tasks:
        examples = splits.get(info.name) or []
        if not examples:
            continue
        preds, _ = predict_examples(
            model, info, examples, tokenizer, max_length, pad_id, batch_size, precision, cache_dir
        )
        if info.type == "token":
            fill = info.labels.index("O") if info.labels and "O" in info.labels else 0
            preds = pad_token_predictions(preds, examples, fill)
        results[info.name] = compute_metrics(
            info.type, preds, [ex.label for ex in examples], info.labels
        )
    return results
