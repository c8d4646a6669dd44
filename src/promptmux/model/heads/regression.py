"""Regression on one real-valued target."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from promptmux.model.heads.base import HEADS, Head


@HEADS.register("regression")
class RegressionHead(Head):
    """Predicts a standardized target with MSE; outputs are mapped back to the data's scale.

    Targets are standardized with the training mean and std (kept as buffers, so they are saved in
    the bundle): the head then starts at the right scale whatever the target range (STS-B's 0-5,
    VADER's -4..4), which keeps early losses small and comparable to classification losses.
    """

    task_type = "regression"

    def __init__(self, hidden: int, n_labels: int = 1, pooling: str = "mean", dropout: float = 0.1) -> None:
        super().__init__(hidden, 1, pooling, dropout)
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    def set_target_stats(self, values: list[float]) -> None:
        t = torch.tensor(values, dtype=torch.float64)
        self.target_mean.fill_(float(t.mean()))
        self.target_std.fill_(float(t.std()) if len(values) > 1 and float(t.std()) > 0 else 1.0)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        target = (labels.float() - self.target_mean) / self.target_std
        return F.mse_loss(logits.float().squeeze(-1), target)

    def values(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.float().squeeze(-1) * self.target_std + self.target_mean

    def predict(self, logits: torch.Tensor, extra: dict[str, torch.Tensor]) -> list[float]:
        return self.values(logits).tolist()

    def scores(self, logits: torch.Tensor, extra: dict[str, torch.Tensor]) -> list[float]:
        return self.predict(logits, extra)
