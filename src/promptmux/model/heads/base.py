"""The `Head` interface: task-specific layers on top of the shared encoder."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from promptmux.model.backbone import pool, pooled_size
from promptmux.registry import Registry


class Head(nn.Module):
    """Maps encoder states to task outputs, and outputs to a loss and to predictions.

    Sequence heads pool the token states (cls, mean or pair: see `backbone.pool`) and apply
    dropout + a linear layer. Batches reach a head as the rows of its task only; `extra` carries
    per-task tensors such as the word start positions of token tasks, and the token type ids of
    text pairs for pair pooling (`head_extra`).

    Args:
        hidden: encoder hidden size.
        n_labels: number of labels (1 for regression).
        pooling: "cls", "mean" or "pair" (ignored by token heads).
        dropout: dropout on the pooled vector.
    """

    task_type: ClassVar[str]

    def __init__(self, hidden: int, n_labels: int, pooling: str = "mean", dropout: float = 0.1) -> None:
        super().__init__()
        self.pooling = pooling
        self.n_labels = n_labels
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(pooled_size(hidden, pooling), n_labels)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, extra: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.out(self.dropout(pool(hidden, mask, self.pooling, extra.get("token_type_ids"))))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, logits: torch.Tensor, extra: dict[str, torch.Tensor]) -> list[Any]:
        """Predictions in the label format of `Example.label` (ids, tuples of ids, floats)."""
        raise NotImplementedError

    def scores(self, logits: torch.Tensor, extra: dict[str, torch.Tensor]) -> list[Any]:
        """Per-row scores for users: class probabilities, values, per-word tag probabilities."""
        raise NotImplementedError


HEADS: Registry[type[Head]] = Registry("task type")


def head_extra(
    head: Head, extra: dict[str, torch.Tensor], token_type_ids: torch.Tensor | None, rows: slice
) -> dict[str, torch.Tensor]:
    """The `extra` a head reads for its `rows` of a batch: the collated per-task tensors, plus the
    rows' token type ids when the head pools a text pair."""
    if head.pooling != "pair":
        return extra
    if token_type_ids is None:
        raise ValueError("pair pooling needs token type ids: the batch has none (a tokenizer without them?)")
    return {**extra, "token_type_ids": token_type_ids[rows]}
