"""Uniform sampling: every task equally often, whatever its size."""

from __future__ import annotations

import numpy as np

from promptmux.data.samplers.base import SAMPLERS, TaskSampler


@SAMPLERS.register("uniform")
class UniformSampler(TaskSampler):
    """p_i = 1/K. Small tasks are revisited many times per epoch of a large one."""

    def probabilities(self, step: int) -> np.ndarray:
        return np.full(len(self.tasks), 1.0 / len(self.tasks))
