"""Batched inference over encoded splits, and per-task evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from promptmux.data.collate import collate
from promptmux.data.encode import Encoded
from promptmux.model.multitask import MultiTaskModel, TaskInfo
from promptmux.precision import autocast
from promptmux.tasks.spec import Example


def length_sorted_batches(enc: Encoded, batch_size: int, max_tokens: int | None = None) -> Iterator[np.ndarray]:
    """Row indices in batches of similar length (shortest first), so padding is minimal."""
    order = np.argsort(enc.lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


@torch.no_grad()
def run_task(
    model: MultiTaskModel,
    task: str,
    enc: Encoded,
    pad_id: int,
    batch_size: int = 128,
    precision: str = "fp32",
    with_scores: bool = False,
) -> tuple[list[Any], list[Any] | None]:
    """Predictions (and optionally user-facing scores) for every row of `enc`, in row order."""
    device = next(model.parameters()).device
    head = model.heads[task]
    preds: list[Any] = [None] * len(enc)
    scores: list[Any] | None = [None] * len(enc) if with_scores else None
    was_training = model.training
    model.eval()
    try:
        for idx in length_sorted_batches(enc, batch_size):
            batch = collate([(task, enc, idx)], pad_id).to(device)
            with autocast(device, precision):
                logits = model(**batch.model_inputs())[task]
            extra = batch.extra.get(task, {})
            for i, p in zip(idx, head.predict(logits, extra)):
                preds[i] = p
            if scores is not None:
                for i, s in zip(idx, head.scores(logits, extra)):
                    scores[i] = s
    finally:
        model.train(was_training)
    return preds, scores


def pad_token_predictions(preds: list[tuple[int, ...]], examples: list[Example], fill: int) -> list[tuple[int, ...]]:
    """Words cut off by max_length got no prediction; score them as `fill` (the "O" tag)."""
    return [p + (fill,) * (len(ex.text) - len(p)) for p, ex in zip(preds, examples)]


def evaluate(
    model: MultiTaskModel,
    tasks: list[TaskInfo],
    splits: dict[str, tuple[Encoded, list[Example]]],
    pad_id: int,
    batch_size: int = 128,
    precision: str = "fp32",
) -> dict[str, dict[str, float]]:
    """Per-task metrics on the given encoded splits (tasks without a split are skipped)."""
    from promptmux.eval.metrics import compute_metrics

    results: dict[str, dict[str, float]] = {}
    for info in tasks:
        if info.name not in splits:
            continue
        enc, examples = splits[info.name]
        if len(enc) == 0:
            continue
        preds, _ = run_task(model, info.name, enc, pad_id, batch_size, precision)
        refs = [ex.label for ex in examples]
        if info.type == "token":
            fill = info.labels.index("O") if info.labels and "O" in info.labels else 0
            preds = pad_token_predictions(preds, examples, fill)
        results[info.name] = compute_metrics(info.type, preds, refs, info.labels)
    return results
