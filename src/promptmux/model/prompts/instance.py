"""Instance-aware prompt terms (`model.prompts.instance_hidden: r`, kinds late and prefix).

A static prompt gives every row of a task the same vectors. An instance term adds to them a part
made from the row's own text: P(x) = P_t + s · up(gelu(down(pool(h(x)) / s))), where h(x) is the
row's hidden states where the prompt acts (the late prompt's layer; each layer, for prefixes) and
`pool` cuts the row's real tokens into L contiguous stretches, as adaptive average pooling does,
and averages each, so prompt position i reads the i-th stretch of the text; padding never enters.

One bottleneck (2·H·r + H + r parameters) serves every task, and for prefixes every layer: the
task vectors carry which task a row is, the network what this row's text says. `s`, the RMS of
the hidden states the term is added to at the start (one per layer for prefixes), keeps the
network scale-free; `up` starts at zero, so training starts from the static prompt.

Liu et al., "Late Prompt Tuning" (2022), https://arxiv.org/abs/2210.11292, make late prompts
from the text by such a generator; Wu et al., "IDPG: An Instance-Dependent Prompt Generation
Method" (2022), https://arxiv.org/abs/2204.04497, do it at the input.
"""

from __future__ import annotations

import torch

from promptmux.model.prompts.reparam import ScaledBottleneck, start_scale


class InstanceTerm(ScaledBottleneck):
    """A row's own addition to its task's prompt, from its text's hidden states:
    s · up(gelu(down(pool(h) / s))), [B, L, H] (module docstring).

    Args:
        hidden: the hidden size H.
        bottleneck: the network's width r.
        length: the prompt length L (the number of segments pooled).
        start: the hidden states the term is added to, at the start: [L, H] (one scale) or
            [G, L, H] (one scale per group, e.g. per layer); the RMS over L and H is the scale s.
    """

    def __init__(self, hidden: int, bottleneck: int, length: int, start: torch.Tensor) -> None:
        super().__init__(hidden, bottleneck, start_scale(start, (-2, -1)))
        self.length = length

    def forward(self, hidden: torch.Tensor, real: torch.Tensor, group: int | None = None) -> torch.Tensor:
        """The term for `hidden` ([B, n, H]) whose real tokens are `real` ([B, n] bool), at group `group`'s scale."""
        return self.branch(segment_means(hidden, real, self.length), None if group is None else self.scale[group])

    def extra_repr(self) -> str:
        return f"length={self.length}"


def segment_means(hidden: torch.Tensor, real: torch.Tensor, length: int) -> torch.Tensor:
    """[B, L, H]: each row's real tokens (`real`, [B, n] bool) cut into L contiguous segments as
    adaptive average pooling cuts n positions (segment i spans floor(i·n/L) to ceil((i+1)·n/L), so
    segments of a row shorter than L repeat its tokens), each segment averaged."""
    place = real.long().cumsum(1) - 1  # a real token's index among its row's real tokens
    n = real.sum(1, keepdim=True)  # [B, 1]
    i = torch.arange(length, device=hidden.device)
    begin = (i * n) // length  # [B, L]
    end = -((-(i + 1) * n) // length)  # ceil((i + 1)·n / L)
    inside = real[:, None, :] & (place[:, None, :] >= begin[..., None]) & (place[:, None, :] < end[..., None])
    weights = inside.to(hidden.dtype) / inside.sum(-1, keepdim=True).clamp_min(1).to(hidden.dtype)
    return weights @ hidden
