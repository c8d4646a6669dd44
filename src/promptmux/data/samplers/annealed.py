"""Annealed sampling: proportional at the start of training, uniform at the end."""

from __future__ import annotations

import numpy as np

from promptmux.data.samplers.base import SAMPLERS, TaskSampler


@SAMPLERS.register("annealed")
class AnnealedSampler(TaskSampler):
    """p_i ∝ n_i^a(t), with a(t) going linearly from 1 (proportional) to `end_alpha` over training.

    Stickland and Murray 2019, "BERT and PALs", section 4 (https://arxiv.org/abs/1902.02671):
    large tasks dominate early, when the shared model learns most, and small tasks catch up late
    (they anneal per epoch from 1 to 0.2; here a(t) = 1 - (1 - end_alpha) * t / (T - 1) per step,
    and the default end is 0, i.e. uniform). T is the run's total step count, which the trainer
    passes with `set_total_steps` (or give `total_steps`).

    Options:
        end_alpha: exponent at the last step (0 <= end_alpha <= 1; default 0.0: uniform).
        total_steps: the step count T, when the sampler is used outside the trainer.
    """

    def __init__(self, sizes: dict[str, int], seed: int, end_alpha: float = 0.0, total_steps: int | None = None) -> None:
        super().__init__(sizes, seed)
        if not 0.0 <= float(end_alpha) <= 1.0:
            raise ValueError(f"end_alpha must lie in [0, 1], got {end_alpha}")
        if total_steps is not None and (not isinstance(total_steps, int) or total_steps < 1):
            raise ValueError(f"total_steps must be an integer >= 1, got {total_steps!r}")
        self.end_alpha = float(end_alpha)
        self.total_steps = total_steps

    def exponent(self, step: int) -> float:
        if step <= 0:
            return 1.0
        if self.total_steps is None:
            raise RuntimeError("the annealed sampler needs the run's step count (set_total_steps)")
        frac = min(step / max(self.total_steps - 1, 1), 1.0)
        return 1.0 - (1.0 - self.end_alpha) * frac

    def probabilities(self, step: int) -> np.ndarray:
        w = self.sizes ** self.exponent(step)
        return w / w.sum()
