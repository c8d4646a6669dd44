"""Equal weighting: every task loss counts once."""

from __future__ import annotations

import torch

from promptmux.weighting.base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("equal")
class EqualWeighting(Weighting):
    """Sum of task losses with weight 1.

    Tuned equal weighting is a strong baseline (Xin et al. 2022, https://arxiv.org/abs/2209.11379).
    """

    constant = True

    def weights(self, losses: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        return {t: 1.0 for t in losses}
