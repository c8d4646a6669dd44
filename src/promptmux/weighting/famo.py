"""FAMO: fast adaptive multitask optimization, balancing the rate at which task losses fall."""

from __future__ import annotations

import torch

from promptmux.weighting._adam import Adam
from promptmux.weighting.base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("famo")
class FAMOWeighting(Weighting):
    """Weights w_i = n * (z_i / L_i) / sum_j (z_j / L_j), with z = softmax(xi) learned online.

    Liu, Liu, Stone and Liu 2023, "FAMO: Fast Adaptive Multitask Optimization"
    (https://arxiv.org/abs/2306.03792), Algorithm 1. The update `sum_i w_i grad L_i` is the
    gradient of `sum_i z_i log L_i` rescaled, which decreases every task's log-loss at a rate set
    by z; the logits xi are then moved so that tasks whose log-loss fell least gain weight:
    xi <- xi - lr * Adam(J_softmax(xi)^T delta) (with L2 `gamma`), where
    delta_i = log L_i(before) - log L_i(after). FAMO needs no per-task gradients: one backward pass
    per step, like equal weighting. Weights are scaled to sum to n (the number of tasks in the
    step) so that their scale matches equal weighting's sum of losses.

    Differences from the paper: the "after" loss of a step is the next step's loss (on the next
    batch) instead of a second forward pass on the same batch, so the update of xi lags one step
    and is noisier; with single-task batches delta spans the steps since the task last appeared.
    Losses are averaged over processes, so every process keeps the same xi. Minimum losses are
    taken as 0 (true for cross-entropy and squared error).

    Options:
        lr: step size of xi (default 0.025, the official code's `w_lr`).
        gamma: L2 regularisation of xi (default 0.01).
    """

    EPS = 1e-8

    def __init__(self, tasks: list[str], task_weights: dict[str, float], lr: float = 0.025, gamma: float = 0.01) -> None:
        super().__init__(tasks, task_weights)
        k = len(self.tasks)
        self.adam = Adam(k, lr, weight_decay=gamma)
        self.register_buffer("xi", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("last_mean", torch.full((k,), float("nan"), dtype=torch.float64))
        self.register_buffer("step_sum", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("step_count", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("step_seen", torch.full((), -1, dtype=torch.long))

    def _finish_step(self) -> None:
        """Fold the losses of the previous step into xi (Algorithm 1, lines 6-7)."""
        seen = self.step_count > 0
        mean = self.step_sum / self.step_count.clamp(min=1)
        both = seen & ~torch.isnan(self.last_mean)
        if both.any():
            delta = torch.zeros_like(self.xi)
            delta[both] = torch.log(self.last_mean[both] + self.EPS) - torch.log(mean[both] + self.EPS)
            z = torch.softmax(self.xi, dim=0)
            self.adam.step(self.xi, z * (delta - (z * delta).sum()))  # J_softmax(xi)^T delta
        self.last_mean[seen] = mean[seen]
        self.step_sum.zero_()
        self.step_count.zero_()

    @torch.no_grad()
    def weights(self, losses: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        if step != int(self.step_seen):
            if int(self.step_seen) >= 0:
                self._finish_step()
            self.step_seen.fill_(step)
        present = self.present(losses)
        idx = self.index(present)
        values = self.global_losses(losses).double()
        z = torch.softmax(self.xi, dim=0)[idx]
        ratio = z / (values + self.EPS)
        w = len(present) * ratio / ratio.sum()
        self.step_sum[idx] += values
        self.step_count[idx] += 1
        return dict(zip(present, w.tolist()))
