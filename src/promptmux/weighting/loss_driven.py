"""Loss-driven weighting: a task's weight grows with its current loss, through a sigmoid."""

from __future__ import annotations

import torch

from promptmux.weighting.base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("loss_driven")
class LossDrivenWeighting(Weighting):
    """lambda_i = sigmoid(alpha * (L_i - beta)), from the step's loss of each task.

    Tasks whose loss is above `beta` count more (up to 1), tasks that are already fitted count less
    (down to 0); `alpha` sets how sharply. The weights are constants for backpropagation (computed
    from detached losses), so the method rescales gradients rather than adding a loss term. In a
    distributed run `L_i` is the loss averaged over processes, so every process uses the same
    weights. Giving more weight to the tasks that are still hard follows Guo et al. 2018, Dynamic
    Task Prioritization for Multitask Learning (https://doi.org/10.1007/978-3-030-01270-0_17),
    with the loss as the difficulty signal instead of a task KPI.

    Options:
        alpha: slope of the sigmoid (> 0; default 1.0).
        beta: the loss at which a task's weight is 0.5 (default 0.0: every weight lies in (0.5, 1)).
    """

    def __init__(self, tasks: list[str], task_weights: dict[str, float], alpha: float = 1.0, beta: float = 0.0) -> None:
        super().__init__(tasks, task_weights)
        if not float(alpha) > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        self.alpha, self.beta = float(alpha), float(beta)

    def weights(self, losses: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        values = self.global_losses(losses)
        lam = torch.sigmoid(self.alpha * (values - self.beta))
        return dict(zip(self.present(losses), lam.tolist()))
