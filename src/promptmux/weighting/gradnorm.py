"""GradNorm: learn task weights so that weighted gradient norms train tasks at similar rates."""

from __future__ import annotations

import torch

from promptmux.weighting._adam import Adam
from promptmux.weighting.base import WEIGHTINGS, GradientWeighting


@WEIGHTINGS.register("gradnorm")
class GradNorm(GradientWeighting):
    """Gradient normalisation of task weights w_i.

    Chen et al. 2018, "GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep
    Multitask Networks" (https://arxiv.org/abs/1711.02257), eqs. 1-2:

        G_i = |w_i g_i|,  r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0)),
        L_grad = sum_i |G_i - mean_j(G_j) * r_i^alpha|   (the target is a constant),

    and w takes a gradient step on L_grad while the model takes one on sum_i w_i L_i.
    Choices: g_i is the gradient on all shared (encoder) parameters, which the trainer computes
    anyway for gradient methods (the paper uses the last shared layer to save time); weights are
    parametrised as w = K softmax(theta) (as LibMTL does), which keeps sum_i w_i = K instead of
    renormalising after every step; theta takes its own Adam step of size `lr`; L_i(0) is the
    first loss seen for task i. The losses and g_i are averaged over processes first, so theta is
    the same everywhere.

    Options:
        alpha: asymmetry (default 1.5; higher pulls lagging tasks harder).
        lr: step size of theta (default 0.025).
    """

    def __init__(self, tasks: list[str], task_weights: dict[str, float], alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__(tasks, task_weights)
        if not float(alpha) >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        k = len(self.tasks)
        self.adam = Adam(k, lr)
        self.register_buffer("theta", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("initial", torch.full((k,), float("nan"), dtype=torch.float64))

    def all_weights(self) -> torch.Tensor:
        return len(self.tasks) * torch.softmax(self.theta, dim=0)

    def coefficients(self, gram: torch.Tensor, losses: torch.Tensor, tasks: list[str], step: int) -> torch.Tensor:
        idx = self.index(tasks)
        unset = torch.isnan(self.initial[idx])
        self.initial[idx[unset]] = losses[unset]
        theta = self.theta.clone().requires_grad_(True)
        with torch.enable_grad():
            w = (len(self.tasks) * torch.softmax(theta, dim=0))[idx]
            norms = w * gram.diagonal().clamp(min=0).sqrt()
            ratio = losses / self.initial[idx].clamp(min=1e-12)
            target = (norms.mean() * (ratio / ratio.mean()) ** self.alpha).detach()
            (grad,) = torch.autograd.grad((norms - target).abs().sum(), theta)
        self.adam.step(self.theta, grad)
        return w.detach()
