"""Capped proportional sampling: examples-proportional mixing with an artificial size limit."""

from __future__ import annotations

import numpy as np

from promptmux.data.samplers.base import SAMPLERS, TaskSampler


@SAMPLERS.register("capped")
class CappedSampler(TaskSampler):
    """p_i = min(n_i, K) / sum_j min(n_j, K).

    Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
    Transformer" (T5), section 3.5.2, examples-proportional mixing
    (https://arxiv.org/abs/1910.10683): proportional sampling, except that no task counts as
    larger than K rows, so one huge task cannot crowd out the rest. Tasks of at most K rows keep
    their proportional share relative to each other.

    Options:
        cap: K, in training rows (>= 1; default 2**16 = 65,536, the smallest T5 tried).
    """

    def __init__(self, sizes: dict[str, int], seed: int, cap: int = 2**16) -> None:
        super().__init__(sizes, seed)
        if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
            raise ValueError(f"cap must be an integer >= 1, got {cap!r}")
        self.cap = cap

    def probabilities(self, step: int) -> np.ndarray:
        w = np.minimum(self.sizes, self.cap)
        return w / w.sum()
