"""PCGrad: project each task gradient off the gradients it conflicts with."""

from __future__ import annotations

import numpy as np
import torch

from promptmux.weighting.base import WEIGHTINGS, GradientWeighting


@WEIGHTINGS.register("pcgrad")
class PCGrad(GradientWeighting):
    """Gradient surgery: for each task i, in a random order of the other tasks j, if g_i . g_j < 0
    then g_i <- g_i - (g_i . g_j / |g_j|^2) g_j; the update is the sum of the projected g_i.

    Yu et al. 2020, "Gradient Surgery for Multi-Task Learning" (https://arxiv.org/abs/2001.06782),
    Algorithm 1 (projections onto the original g_j, j running over all tasks in a fresh random
    order for each i, as the official code does). Without
    conflicts the update is the plain sum (equal weighting). Every projected g_i is a linear
    combination of the original gradients, so the method is computed on the Gram matrix and
    returns the coefficients of that combination (the weights logged each step). The random
    order is seeded by (`seed`, step), so every process and a resumed run draw the same order.

    Options:
        seed: seed of the projection orders (default 0).
    """

    def __init__(self, tasks: list[str], task_weights: dict[str, float], seed: int = 0) -> None:
        super().__init__(tasks, task_weights)
        self.seed = int(seed)

    def coefficients(self, gram: torch.Tensor, losses: torch.Tensor, tasks: list[str], step: int) -> torch.Tensor:
        n = gram.shape[0]
        rng = np.random.default_rng([self.seed, step])
        coef = torch.eye(n, dtype=torch.float64)  # row i: projected g_i in terms of the originals
        for i in range(n):
            for j in rng.permutation(n):
                dot = coef[i] @ gram[:, j]
                if dot < 0 and gram[j, j] > 0:
                    coef[i, j] -= dot / gram[j, j]
        return coef.sum(dim=0)
