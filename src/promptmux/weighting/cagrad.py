"""CAGrad: the update that maximises the worst task's improvement near the average gradient."""

from __future__ import annotations

import numpy as np
import torch

from promptmux.weighting.base import WEIGHTINGS, GradientWeighting


@WEIGHTINGS.register("cagrad")
class CAGrad(GradientWeighting):
    """Conflict-averse gradient descent.

    Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning"
    (https://arxiv.org/abs/2110.14048), eq. 5 and the official implementation:
    with g0 the mean task gradient and c in [0, 1),

        w* = argmin_{w in simplex}  g_w . g0 + c |g0| |g_w|,   g_w = sum_i w_i g_i
        d  = (g0 + (c |g0| / |g_w*|) g_w*) / (1 + c^2)

    The update is returned as n * d (n tasks in the step), so that c = 0 gives the sum of task
    gradients (equal weighting) and the coefficient of task i is n (1/n + lambda w_i) / (1 + c^2).
    The small problem on the simplex is solved on the (rescaled) Gram matrix with SLSQP, as the
    authors do.

    Options:
        c: the conflict-aversion radius (0 <= c < 1; default 0.5, as in the paper's experiments).
    """

    def __init__(self, tasks: list[str], task_weights: dict[str, float], c: float = 0.5) -> None:
        super().__init__(tasks, task_weights)
        if not 0 <= float(c) < 1:
            raise ValueError(f"c must lie in [0, 1), got {c}")
        self.c = float(c)

    @staticmethod
    def solve(gram: np.ndarray, c: float) -> np.ndarray:
        """w* of the CAGrad subproblem for Gram matrix `gram`."""
        from scipy.optimize import minimize

        n = gram.shape[0]
        b = np.full(n, 1.0 / n)
        radius = c * np.sqrt(b @ gram @ b + 1e-8)

        def objective(w: np.ndarray) -> float:
            return float(w @ gram @ b + radius * np.sqrt(w @ gram @ w + 1e-8))

        res = minimize(objective, b, bounds=[(0.0, 1.0)] * n, method="SLSQP",
                       constraints={"type": "eq", "fun": lambda w: 1.0 - w.sum()})
        w = np.clip(res.x, 0.0, None)
        return w / w.sum()

    def coefficients(self, gram: torch.Tensor, losses: torch.Tensor, tasks: list[str], step: int) -> torch.Tensor:
        n = gram.shape[0]
        scale = float(gram.diagonal().mean())
        if scale <= 0 or self.c == 0:  # no gradient at all, or no conflict aversion: the plain sum
            return torch.ones(n, dtype=torch.float64)
        g = gram.numpy() / scale  # the minimiser does not depend on the scale; SLSQP prefers O(1)
        w = self.solve(g, self.c)
        b = np.full(n, 1.0 / n)
        radius = self.c * np.sqrt(b @ g @ b + 1e-8)
        lam = radius / (np.sqrt(w @ g @ w) + 1e-8)
        return torch.from_numpy(n * (b + lam * w) / (1 + self.c**2))
