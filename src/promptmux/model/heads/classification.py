"""Single-label classification (one text or a text pair)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from promptmux.model.heads.base import HEADS, Head


@HEADS.register("classification")
class ClassificationHead(Head):
    """Softmax over the labels, cross-entropy loss."""

    task_type = "classification"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)

    def predict(self, logits: torch.Tensor, extra: dict[str, torch.Tensor]) -> list[int]:
        return logits.argmax(-1).tolist()

    def scores(self, logits: torch.Tensor, extra: dict[str, torch.Tensor]) -> list[list[float]]:
        return logits.float().softmax(-1).tolist()
