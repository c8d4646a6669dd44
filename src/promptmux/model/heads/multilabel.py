"""Multi-label classification: any subset of the labels per row."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from promptmux.model.heads.base import HEADS, Head


@HEADS.register("multilabel")
class MultiLabelHead(Head):
    """One sigmoid per label, binary cross-entropy; a label is predicted when its probability > 0.5."""

    task_type = "multilabel"
    threshold = 0.5

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())

    def predict(self, logits: torch.Tensor, extra: dict[str, torch.Tensor]) -> list[tuple[int, ...]]:
        on = logits.float().sigmoid() > self.threshold
        return [tuple(torch.nonzero(row).flatten().tolist()) for row in on]

    def scores(self, logits: torch.Tensor, extra: dict[str, torch.Tensor]) -> list[list[float]]:
        return logits.float().sigmoid().tolist()
