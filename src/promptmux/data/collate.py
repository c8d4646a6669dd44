"""Dynamic padding: rows from one or several tasks into one padded batch."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from promptmux.data.encode import Encoded


@dataclass
class Batch:
    """A padded batch. Rows of each task are contiguous: `rows[task]` is their slice."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: dict[str, slice]
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    token_type_ids: torch.Tensor | None = None

    @property
    def n_tokens(self) -> int:
        """Non-padding tokens (the honest throughput unit)."""
        return int(self.attention_mask.sum())

    def __len__(self) -> int:
        return self.input_ids.size(0)

    def to(self, device: torch.device | str) -> Batch:
        def move(t):
            return t.to(device, non_blocking=True)

        return Batch(
            move(self.input_ids),
            move(self.attention_mask),
            self.rows,
            {k: move(v) for k, v in self.labels.items()},
            {k: {n: move(t) for n, t in d.items()} for k, d in self.extra.items()},
            None if self.token_type_ids is None else move(self.token_type_ids),
        )

    def model_inputs(self) -> dict:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
            "rows": self.rows,
            "extra": self.extra,
        }


def collate(parts: list[tuple[str, Encoded, np.ndarray]], pad_id: int, pad_to_multiple: int = 1) -> Batch:
    """Build one batch from `(task, encoded split, row indices)` parts, in the given order."""
    spans = [(enc.offsets[idx], enc.offsets[idx + 1]) for _, enc, idx in parts]
    width = max(int((e - s).max()) for s, e in spans)
    if pad_to_multiple > 1:
        width = -(-width // pad_to_multiple) * pad_to_multiple
    total = sum(len(idx) for _, _, idx in parts)
    ids = np.full((total, width), pad_id, dtype=np.int64)
    mask = np.zeros((total, width), dtype=np.int64)
    need_types = any(enc.type_ids is not None for _, enc, _ in parts)
    types = np.zeros((total, width), dtype=np.int64) if need_types else None
    rows: dict[str, slice] = {}
    labels: dict[str, torch.Tensor] = {}
    extra: dict[str, dict[str, torch.Tensor]] = {}
    r = 0
    for (task, enc, idx), (starts, ends) in zip(parts, spans):
        for j, (s, e) in enumerate(zip(starts, ends)):
            n = e - s
            ids[r + j, :n] = enc.ids[s:e]
            mask[r + j, :n] = 1
            if types is not None and enc.type_ids is not None:
                types[r + j, :n] = enc.type_ids[s:e]
        rows[task] = slice(r, r + len(idx))
        if enc.task_type == "token":
            starts_t, tags_t = _pad_words(enc, idx)
            extra[task] = {"word_starts": starts_t}
            if tags_t is not None:
                labels[task] = tags_t
        elif enc.labels is not None:
            labels[task] = torch.from_numpy(enc.labels[idx])
        r += len(idx)
    return Batch(
        torch.from_numpy(ids),
        torch.from_numpy(mask),
        rows,
        labels,
        extra,
        None if types is None else torch.from_numpy(types),
    )


def _pad_words(enc: Encoded, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
    wo = enc.word_offsets
    n_words = max(1, int((wo[idx + 1] - wo[idx]).max()))
    starts = np.full((len(idx), n_words), -1, dtype=np.int64)
    tags = np.full((len(idx), n_words), -100, dtype=np.int64) if enc.labels is not None else None
    for j, i in enumerate(idx):
        s, e = wo[i], wo[i + 1]
        starts[j, : e - s] = enc.word_starts[s:e]
        if tags is not None:
            tags[j, : e - s] = enc.labels[s:e]
    return torch.from_numpy(starts), None if tags is None else torch.from_numpy(tags)
