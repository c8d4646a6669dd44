"""The rows of some tasks of a batch, as a batch of their own (adversarial passes, teachers)."""

from __future__ import annotations

from collections.abc import Collection

import torch

from promptmux.data.collate import Batch


def select_tasks(batch: Batch, tasks: Collection[str]) -> tuple[Batch, torch.Tensor | None]:
    """The rows of `tasks` (in batch order) and their indices in `batch`.

    Returns `(batch, None)` when every task of the batch is selected, so the common case copies
    nothing. Rows of one task are contiguous, so each task keeps one slice in the new batch.
    """
    keep = [t for t in batch.rows if t in tasks]
    if len(keep) == len(batch.rows):
        return batch, None
    device = batch.input_ids.device
    index = torch.cat([torch.arange(batch.rows[t].start, batch.rows[t].stop) for t in keep]).to(
        device
    )
    rows: dict[str, slice] = {}
    start = 0
    for t in keep:
        n = batch.rows[t].stop - batch.rows[t].start
        rows[t] = slice(start, start + n)
        start += n
    sub = Batch(
        batch.input_ids[index],
        batch.attention_mask[index],
        rows,
        {t: v for t, v in batch.labels.items() if t in rows},
        {t: v for t, v in batch.extra.items() if t in rows},
        None if batch.token_type_ids is None else batch.token_type_ids[index],
    )
    return sub, index
