"""A tiny Adam for strategy state that is not trained by the model's optimizer (FAMO, GradNorm).

Those methods update their task logits with their own step size, independent of the model's
learning rate and schedule, as their papers do. The moments live in buffers so that checkpoints
carry them and a resumed run continues exactly.
"""

from __future__ import annotations

import torch


class Adam(torch.nn.Module):
    """Adam (Kingma and Ba 2015, https://arxiv.org/abs/1412.6980) for one 1-D tensor.

    `weight_decay` is added to the gradient (L2, as `torch.optim.Adam` does).
    """

    def __init__(self, size: int, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__()
        if not float(lr) > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        self.lr, self.weight_decay, self.betas, self.eps = float(lr), float(weight_decay), betas, eps
        self.register_buffer("m", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("v", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("t", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def step(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        """Update `param` (float64 buffer) in place from `grad`."""
        grad = grad.to(torch.float64) + self.weight_decay * param
        b1, b2 = self.betas
        self.t += 1
        t = int(self.t)
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        m_hat = self.m / (1 - b1**t)
        v_hat = self.v / (1 - b2**t)
        param.sub_(self.lr * m_hat / (v_hat.sqrt() + self.eps))
