"""Uncertainty weighting: learned per-task homoscedastic noise scales the losses."""

from __future__ import annotations

import torch

from promptmux.weighting.base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("uncertainty")
class UncertaintyWeighting(Weighting):
    """Total = sum_i exp(-s_i) * L_i + s_i / 2, with s_i = log sigma_i^2 learned per task.

    Kendall, Gal and Cipolla 2018, "Multi-Task Learning Using Uncertainty to Weigh Losses for
    Scene Geometry and Semantics" (https://arxiv.org/abs/1705.07115), eq. 10 for a softmax
    likelihood (1/sigma^2 L + log sigma); the same form is used for every task type here, as most
    implementations do. Learning log-variances rather than sigma keeps the weight positive and the
    optimisation stable. The s_i are `nn.Parameter`s: the trainer adds them to the optimizer
    (at the head learning rate), checkpoints them, and in a distributed run averages their
    gradients over processes. The weight of task i is exp(-s_i); at the optimum of s_i it is
    1 / (2 L_i), so a task with a higher loss gets a smaller weight.

    Options:
        init: initial value of every s_i (default 0.0: weight 1).
    """

    def __init__(self, tasks: list[str], task_weights: dict[str, float], init: float = 0.0) -> None:
        super().__init__(tasks, task_weights)
        self.log_vars = torch.nn.Parameter(torch.full((len(self.tasks),), float(init)))

    def forward(self, losses: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        present = self.present(losses)
        values = torch.stack([losses[t].float().reshape(()) for t in present])
        # The log-variances stay on the CPU with the other strategy state; the losses may not.
        s = self.log_vars[self.index(present)].to(values.device)
        total = (torch.exp(-s) * values + 0.5 * s).sum()
        return total, dict(zip(present, torch.exp(-s).tolist()))

    def weights(self, losses: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        present = self.present(losses)
        return dict(zip(present, torch.exp(-self.log_vars.detach()[self.index(present)]).tolist()))
