"""Proportional sampling: tasks drawn in proportion to their training-set size."""

from __future__ import annotations

import numpy as np

from promptmux.data.samplers.base import SAMPLERS, TaskSampler


@SAMPLERS.register("proportional")
class ProportionalSampler(TaskSampler):
    """p_i = n_i / sum_j n_j: every training row is equally likely to be seen.

    Large tasks dominate; small tasks may be under-trained (Raffel et al. 2020,
    https://arxiv.org/abs/1910.10683, section 3.5.2).
    """

    def probabilities(self, step: int) -> np.ndarray:
        return self.sizes / self.sizes.sum()
