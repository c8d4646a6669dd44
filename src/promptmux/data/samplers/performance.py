"""Performance-driven sampling: tasks that lag on the dev set are sampled more."""

from __future__ import annotations

import math

import numpy as np

from promptmux.data.samplers.base import SAMPLERS, TaskSampler


@SAMPLERS.register("performance")
class PerformanceSampler(TaskSampler):
    """p_i = (1 - floor) * softmax(m / tau)_i + floor / K, with m_i = (target_i - s_i) / |target_i|.

    Sharma et al. 2018, "Learning to Multi-Task by Active Sampling", A5C
    (https://arxiv.org/abs/1702.06053): sample tasks by a softmax of how far each is from its
    target score; Gottumukkala et al. 2020 sample by performance relative to single-task scores
    for reading comprehension (https://doi.org/10.18653/v1/2020.acl-main.86). s_i is task i's main dev
    metric from the latest evaluation (the trainer calls `observe`); targets default to 100, the
    best value of promptmux's 0-100 metrics (accuracy, F1, MCC and correlations x 100), so m_i is
    the task's remaining error. Give `targets` (e.g. single-task scores) for other scales,
    such as neg_mse. Until the first evaluation, sampling is uniform. The latest scores are part
    of `state_dict`, so a resumed run samples as the original would.

    Options:
        tau: softmax temperature (> 0; default 0.1). Smaller: more of the worst task.
        floor: total probability spread evenly over all tasks, so none starves (0..1; default 0.1).
        targets: {task: target score} (default 100 for every task).
    """

    def __init__(
        self, sizes: dict[str, int], seed: int, tau: float = 0.1, floor: float = 0.1, targets: dict[str, float] | None = None
    ) -> None:
        super().__init__(sizes, seed)
        if not float(tau) > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        if not 0.0 <= float(floor) <= 1.0:
            raise ValueError(f"floor must lie in [0, 1], got {floor}")
        targets = dict(targets or {})
        unknown = sorted(set(targets) - set(self.tasks))
        if unknown:
            raise ValueError(f"targets: unknown task(s) {unknown}; tasks are {self.tasks}")
        if any(not isinstance(v, (int, float)) or v == 0 for v in targets.values()):
            raise ValueError("targets: non-zero numbers")
        self.tau, self.floor = float(tau), float(floor)
        self.targets = np.asarray([float(targets.get(t, 100.0)) for t in self.tasks])
        self.scores: list[float | None] = [None] * len(self.tasks)

    def observe(self, scores: dict[str, float]) -> None:
        for i, t in enumerate(self.tasks):
            if t in scores and scores[t] is not None and math.isfinite(scores[t]):
                self.scores[i] = float(scores[t])

    def probabilities(self, step: int) -> np.ndarray:
        k = len(self.tasks)
        if all(s is None for s in self.scores):
            return np.full(k, 1.0 / k)
        lag = np.asarray([(tg - s) / abs(tg) if s is not None else 0.0 for tg, s in zip(self.targets, self.scores)])
        # A task not evaluated yet counts as lagging as much as the worst one that was.
        seen = np.asarray([s is not None for s in self.scores])
        lag[~seen] = lag[seen].max()
        z = np.exp((lag - lag.max()) / self.tau)
        return (1.0 - self.floor) * z / z.sum() + self.floor / k

    def state_dict(self) -> dict:
        return {**super().state_dict(), "scores": list(self.scores)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.scores = list(state.get("scores", [None] * len(self.tasks)))
