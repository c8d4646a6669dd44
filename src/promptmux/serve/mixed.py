"""Mixed-task prediction: items of several tasks through the shared encoder together.

`collate` lays the rows of each task out as one contiguous slice and `MultiTaskModel.forward`
runs each head on its slice, so one encoder pass serves every task in a batch. On a CPU the
encoder is compute-bound and a padded batch costs about (rows x longest row) tokens, so mixing a
3-word query with a 60-token sentence pair can waste more than it saves. `plan_passes` therefore
splits a batch by length when the padding saved is worth more than the extra pass costs; batches
of similar lengths (the common case) stay one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from promptmux.data.collate import collate
from promptmux.data.encode import Encoded, encode_examples
from promptmux.precision import autocast
from promptmux.prompts.ensemble import merge, prompted_rows
from promptmux.serve.predictor import Predictor, format_output
from promptmux.tasks.spec import Example

# What one extra forward pass costs, in padded tokens. Measured for MiniLM on 2 CPU cores: a pass
# has ~3-5 ms of fixed cost (Python, dispatch, heads), about the compute of 16-32 tokens.
PASS_OVERHEAD_TOKENS = 32


@dataclass
class PassStats:
    """What a call of `predict_mixed` ran: forward passes, real and padded tokens."""

    passes: int = 0
    tokens: int = 0
    padded_tokens: int = 0


def plan_passes(lengths: Sequence[int], overhead: int = PASS_OVERHEAD_TOKENS) -> list[list[int]]:
    """Split row indices into passes minimising sum(overhead + rows x longest row).

    Rows sorted by length are cut into contiguous runs by dynamic programming (O(n^2) for the
    few dozen rows of a micro-batch); with `overhead` large, everything stays one pass.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sizes = [lengths[i] for i in order]
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            cost = best[i] + overhead + (j - i) * sizes[j - 1]
            if cost < best[j]:
                best[j], cut[j] = cost, i
    passes: list[list[int]] = []
    j = n
    while j > 0:
        passes.append(order[cut[j] : j])
        j = cut[j]
    return passes[::-1]


def encode_by_task(predictor: Predictor, items: Sequence[tuple[str, Example]]) -> tuple[dict[str, Encoded], dict[str, list[int]]]:
    """Each task's rows encoded together; `positions[task][r]` is the item index of row r.

    Items are prompted here (rules, template); under a prompt ensemble an item has k rows, one per
    prompt, whose outputs `predict_mixed` averages.
    """
    by_task: dict[str, list[int]] = {}
    for i, (task, _) in enumerate(items):
        by_task.setdefault(task, []).append(i)
    encoded: dict[str, Encoded] = {}
    positions: dict[str, list[int]] = {}
    for task, where in by_task.items():
        info = predictor.task(task)
        rows = prompted_rows(info, [items[i][1] for i in where])
        owner = [where[r // (len(rows) // len(where))] for r in range(len(rows))]
        # A pair and a single text tokenize differently ([SEP] text_b), so encode each kind apart;
        # a pass needs one contiguous slice per task, so the two are then joined.
        singles = [r for r, ex in enumerate(rows) if ex.text_b is None]
        pairs = [r for r, ex in enumerate(rows) if ex.text_b is not None]
        parts = [
            encode_examples([rows[r] for r in group], predictor.tokenizer, info.type, predictor.max_length, info.n_labels)
            for group in (singles, pairs)
            if group
        ]
        encoded[task] = parts[0] if len(parts) == 1 else concat_encoded(parts)
        positions[task] = [owner[r] for r in singles + pairs]
    return encoded, positions


def predict_mixed(predictor: Predictor, items: Sequence[tuple[str, Example]], stats: PassStats | None = None, overhead: int = PASS_OVERHEAD_TOKENS) -> list[dict[str, Any]]:
    """Predict validated `(task, example)` items of any tasks; `format_output` dicts in item order.

    Every pass mixes tasks; there is more than one pass only when `plan_passes` finds that
    splitting by length saves more padding than the extra passes cost.
    """
    if not items:
        return []
    encoded, positions = encode_by_task(predictor, items)
    rows = [(task, r) for task, enc in encoded.items() for r in range(len(enc))]
    lengths = [int(encoded[task].lengths[r]) for task, r in rows]
    device = next(predictor.model.parameters()).device
    outputs: list[list[tuple[Any, Any]]] = [[] for _ in items]  # (prediction, scores) per prompt
    for group in plan_passes(lengths, overhead):
        chosen: dict[str, list[int]] = {}
        for k in group:
            task, r = rows[k]
            chosen.setdefault(task, []).append(r)
        parts = [(task, encoded[task], np.asarray(sorted(rs))) for task, rs in chosen.items()]
        batch = collate(parts, predictor.pad_id).to(device)
        with torch.inference_mode(), autocast(device, predictor.precision):
            logits = predictor.model(**batch.model_inputs())
        for task, _, idx in parts:
            head = predictor.model.heads[task]
            extra = batch.extra.get(task, {})
            for r, p, s in zip(idx, head.predict(logits[task], extra), head.scores(logits[task], extra)):
                outputs[positions[task][r]].append((p, s))
        if stats is not None:
            stats.passes += 1
            stats.tokens += batch.n_tokens
            stats.padded_tokens += int(batch.input_ids.numel())
    out = []
    for (task, example), got in zip(items, outputs):
        info = predictor.tasks[task]
        out.append(format_output(info, example, *merge(info, got)))
    return out


def concat_encoded(parts: list[Encoded]) -> Encoded:
    """Rows of several encodings of one (non-token) task, in order, as one `Encoded`."""
    if any(p.task_type == "token" for p in parts):
        raise ValueError("token tasks have no text pairs, so their rows never need joining")
    shifts = np.cumsum([0] + [p.n_tokens() for p in parts[:-1]])
    offsets = np.concatenate([parts[0].offsets[:1]] + [p.offsets[1:] + s for p, s in zip(parts, shifts)])
    type_ids = None
    if any(p.type_ids is not None for p in parts):
        type_ids = np.concatenate([p.type_ids if p.type_ids is not None else np.zeros(len(p.ids), np.int8) for p in parts])
    return Encoded(parts[0].task_type, np.concatenate([p.ids for p in parts]), offsets, type_ids=type_ids)
