"""Residual reparameterization of soft prompts (`model.prompts.reparam: residual`).

Razdaibiedina et al., "Residual Prompt Tuning: Improving Prompt Tuning with Residual
Reparameterization" (ACL Findings 2023), https://arxiv.org/abs/2305.03937.

Free prompt vectors get gradients only through the frozen encoder, one position at a time, and are
slow and fragile to train on small models. Passing every prompt vector through a small shared
bottleneck network with a skip connection, P' = P + MLP(P), couples the positions (a gradient at
one position moves the network that shapes all of them) and lets the optimizer find a
low-dimensional direction that many vectors share. The paper applies it to prompts at the input;
here it also serves per-layer prompts (`deep`, `prefix`) and prompts entering at a middle layer (`late`).

How ours differs, and why:
- One network for every task, layer and key/value slot (the paper trains one per prompt). Per-layer
  vectors differ in scale (deeper hidden states and some key projections are several times larger
  than word embeddings), so each group of vectors (a layer's keys, say) is divided by its own RMS
  at the start before the network reads it, and the network's output is multiplied by it again:
  P' = P + s_g · up(gelu(down(P / s_g))). The network stays scale-free and small (2·H·r + H + r
  parameters), and the trainable share stays within the prompt kind's budget.
- `up` starts at zero, so P' = P at the start: the prompt begins exactly where the kind's own
  initialization puts it (e.g. random vocabulary tokens), not perturbed by a random network.
- No LayerNorm on the network's output (the paper has one): at a zero start its input is zero and
  its gradient degenerate.

The network trains with the prompts, at `model.prompts.network_lr` (default: the prompts' `lr`),
and is kept in the bundle; computing P' for every task costs one tiny matmul per forward pass.

Measured (frozen MiniLM, SST-2 + MRPC + RTE in mixed batches, r = 16, 5,000 steps; mean normalized
gain against full fine-tuning over three seeds): prefixes 0.85 ± 0.13 plain (two seeds), 0.94 ±
0.06 with the network at the prefix rate 3e-3, and 1.03 ± 0.13 with it at network_lr 1e-3 (late
prompts with the network, seed 42: 0.84 at 1e-3, 0.38 at their rate 1e-2). A rate good for free
vectors overshoots the network: give it 1e-3. See bench/results/prompt_tuning-s5000-n1e-3.md and
prompt_tuning-s5000-all.md.
"""

from __future__ import annotations

import torch
from torch import nn


class ScaledBottleneck(nn.Module):
    """s · up(gelu(down(x / s))) over the last dim: a scale-free bottleneck of width r whose `up`
    starts at zero, so its output starts at zero. The residual network here and the instance term
    (instance.py) are this network on different inputs.

    Args:
        hidden: the vectors' size H.
        bottleneck: the network's width r.
        scale: s, broadcast against the input; a persistent buffer, so a bundle rebuilds it as trained.
    """

    def __init__(self, hidden: int, bottleneck: int, scale: torch.Tensor) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self.register_buffer("scale", scale)

    def branch(self, x: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """The network's output for `x`, at `scale` (default: the buffer)."""
        scale = (self.scale if scale is None else scale).to(x.dtype)
        return scale * self.up(nn.functional.gelu(self.down(x / scale)))


class ResidualReparam(ScaledBottleneck):
    """P' = P + s · up(gelu(down(P / s))) over the last dim, with one scale s per group of vectors.

    Args:
        hidden: the vectors' size H.
        bottleneck: the network's width r.
        start: the stacked starting prompts [T, *G, L, H]; the scale of group g (one index into the
            G dims, e.g. a layer) is the RMS of start[:, g] over tasks, positions and features.
    """

    def __init__(self, hidden: int, bottleneck: int, start: torch.Tensor) -> None:
        super().__init__(hidden, bottleneck, start_scale(start, (0, -2, -1), keepdim=True)[0])  # [*G, 1, 1]

    def forward(self, prompts: torch.Tensor) -> torch.Tensor:
        return prompts + self.branch(prompts)

    def extra_repr(self) -> str:
        return f"groups={self.scale.numel()}"


def start_scale(start: torch.Tensor, dims: tuple[int, ...], keepdim: bool = False) -> torch.Tensor:
    """The RMS of starting vectors over `dims` (kept away from zero): the scale s of a ScaledBottleneck."""
    return start.detach().float().pow(2).mean(dim=dims, keepdim=keepdim).sqrt().clamp_min(1e-6)
