"""MGDA: the minimum-norm point of the convex hull of the task gradients."""

from __future__ import annotations

import torch

from promptmux.weighting.base import WEIGHTINGS, GradientWeighting


@WEIGHTINGS.register("mgda")
class MGDA(GradientWeighting):
    """Multiple-gradient descent: w* = argmin_{w in simplex} |sum_i w_i g_i|^2, update sum_i w*_i g_i.

    Sener and Koltun 2018, "Multi-Task Learning as Multi-Objective Optimization"
    (https://arxiv.org/abs/1810.04650), solved with Frank-Wolfe on the Gram matrix (their
    Algorithm 2). The direction decreases every task's loss (a common descent direction) when one
    exists and is 0 at a Pareto-stationary point. It is returned as n * d (n tasks in the step),
    the scale of a sum of task gradients, so learning rates stay comparable with equal weighting.

    Options:
        max_iter: Frank-Wolfe iterations (default 250).
    """

    def __init__(self, tasks: list[str], task_weights: dict[str, float], max_iter: int = 250) -> None:
        super().__init__(tasks, task_weights)
        if not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        self.max_iter = max_iter

    def solve(self, gram: torch.Tensor) -> torch.Tensor:
        n = gram.shape[0]
        w = torch.full((n,), 1.0 / n, dtype=torch.float64)
        for _ in range(self.max_iter):
            grad = gram @ w
            t = int(torch.argmin(grad))
            a, b, c = float(w @ grad), float(grad[t]), float(gram[t, t])
            # Exact line search of |(1 - s) v + s g_t|^2 over s in [0, 1].
            denom = a - 2 * b + c
            s = 1.0 if denom <= 0 else min(max((a - b) / denom, 0.0), 1.0)
            if s < 1e-10:
                break
            w = (1 - s) * w
            w[t] += s
        return w

    def coefficients(self, gram: torch.Tensor, losses: torch.Tensor, tasks: list[str], step: int) -> torch.Tensor:
        scale = float(gram.diagonal().mean())
        if scale <= 0:
            return torch.ones(gram.shape[0], dtype=torch.float64)
        return gram.shape[0] * self.solve(gram / scale)
