"""The `TaskSampler` interface: which task(s) the next batch draws rows from."""

from __future__ import annotations

from typing import Any

import numpy as np

from promptmux.registry import Registry


class TaskSampler:
    """Draws tasks with probabilities given by `probabilities(step)`.

    The random generator's state is the sampler's state, so a resumed run draws the same task
    sequence as an uninterrupted one. All processes of a distributed run use the same seed and
    so agree on every draw.

    Args:
        sizes: training rows per task.
        seed: seed of the draw sequence.
        **options: strategy options (e.g. temperature).
    """

    def __init__(self, sizes: dict[str, int], seed: int, **options: Any) -> None:
        if options:
            raise TypeError(f"unexpected sampler options {sorted(options)}")
        self.tasks = list(sizes)
        self.sizes = np.asarray([sizes[t] for t in self.tasks], dtype=np.float64)
        self.rng = np.random.default_rng(seed)
        self.total_steps: int | None = None

    def probabilities(self, step: int) -> np.ndarray:
        raise NotImplementedError

    def set_total_steps(self, steps: int) -> None:
        """The trainer tells every sampler how many optimizer steps the run has (before step 0)."""
        self.total_steps = int(steps)

    def observe(self, scores: dict[str, float]) -> None:
        """The trainer reports each evaluation's main dev metric per task (same on every process).

        Samplers that adapt to dev performance override this; their state must then be part of
        `state_dict` (JSON-serialisable: it is saved in trainer_state.json).
        """

    def sample(self, step: int) -> str:
        """One task for a single-task batch."""
        return self.tasks[int(self.rng.choice(len(self.tasks), p=self.probabilities(step)))]

    def counts(self, n: int, step: int) -> dict[str, int]:
        """Rows per task for a mixed batch of `n` rows (tasks with zero rows are left out)."""
        drawn = self.rng.multinomial(n, self.probabilities(step))
        return {t: int(c) for t, c in zip(self.tasks, drawn) if c > 0}

    def state_dict(self) -> dict:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]


SAMPLERS: Registry[type[TaskSampler]] = Registry("sampling strategy")
