"""Static weighting: fixed per-task weights from the config (`tasks.<name>.weight`)."""

from __future__ import annotations

import torch

from promptmux.weighting.base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("static")
class StaticWeighting(Weighting):
    """Each task loss times its configured `weight`; weights stay fixed through training."""

    constant = True

    def weights(self, losses: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        return {t: self.task_weights[t] for t in losses}
