"""Temperature sampling: proportional sampling flattened by a temperature."""

from __future__ import annotations

import numpy as np

from promptmux.data.samplers.base import SAMPLERS, TaskSampler


@SAMPLERS.register("temperature")
class TemperatureSampler(TaskSampler):
    """p_i ∝ n_i^(1/T). T=1 is proportional, T→∞ uniform; T=2..5 is common.

    Arivazhagan et al. 2019, https://arxiv.org/abs/1907.05019.
    """

    def __init__(self, sizes: dict[str, int], seed: int, temperature: float = 2.0) -> None:
        super().__init__(sizes, seed)
        if temperature <= 0:
            raise ValueError("temperature must be > 0")
        self.temperature = temperature

    def probabilities(self, step: int) -> np.ndarray:
        w = self.sizes ** (1.0 / self.temperature)
        return w / w.sum()
