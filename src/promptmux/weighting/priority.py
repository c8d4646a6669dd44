"""Priority schedules: task emphasis that switches (or ramps) at given steps."""

from __future__ import annotations

import bisect
from typing import Any

import torch

from promptmux.weighting.base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("priority")
class PriorityWeighting(Weighting):
    """Piecewise-constant (or piecewise-linear) task weights over training steps.

    Curriculum-style emphasis: train mostly on one group of tasks first, then shift the weight to
    the others (e.g. 0.8/0.2, swapped at step 500). Bengio et al. 2009, Curriculum Learning
    (https://doi.org/10.1145/1553374.1553380); Guo et al. 2018 argue for the opposite order, hard
    tasks first (https://doi.org/10.1007/978-3-030-01270-0_17). The schedule is the user's.

    Options:
        phases: a list of `{until_step: N, weights: {task: w}}`. Phase k applies to steps
            `until_step[k-1] <= step < until_step[k]` (0-based optimizer steps); the last phase may
            omit `until_step` and then holds to the end (with it, the last phase's weights hold
            after its end as well). Tasks missing from a phase keep their `tasks.<name>.weight`.
        ramp: false (default) switches weights exactly at each `until_step`; true interpolates
            linearly from phase k's weights at its start to phase k+1's weights at its
            `until_step`, so `[{until_step: 1000, weights: A}, {weights: B}]` ramps from A at
            step 0 to B at step 1000.

    Example::

        weighting:
          strategy: priority
          options:
            phases:
              - {until_step: 500, weights: {sst2: 0.8, rte: 0.2}}
              - {weights: {sst2: 0.2, rte: 0.8}}
    """

    def __init__(
        self, tasks: list[str], task_weights: dict[str, float], phases: list[dict[str, Any]] | None = None, ramp: bool = False
    ) -> None:
        super().__init__(tasks, task_weights)
        if not phases or not isinstance(phases, list):
            raise ValueError("priority needs phases: a list of {until_step: N, weights: {task: w}}")
        self.ramp = bool(ramp)
        self.ends: list[int] = []
        self.table: list[dict[str, float]] = []
        for k, phase in enumerate(phases):
            key = f"phases[{k}]"
            if not isinstance(phase, dict) or set(phase) - {"until_step", "weights"}:
                raise ValueError(f"{key}: expected {{until_step: N, weights: {{task: w}}}}, got {phase!r}")
            weights = phase.get("weights") or {}
            self.check_task_names(weights, f"{key}.weights")
            if any(not isinstance(w, (int, float)) or w < 0 for w in weights.values()):
                raise ValueError(f"{key}.weights: weights are numbers >= 0")
            self.table.append({t: float(weights.get(t, task_weights.get(t, 1.0))) for t in self.tasks})
            end = phase.get("until_step")
            if end is None and k != len(phases) - 1:
                raise ValueError(f"{key}.until_step: only the last phase may leave it out")
            if end is not None:
                if not isinstance(end, int) or end < 1 or (self.ends and end <= self.ends[-1]):
                    raise ValueError(f"{key}.until_step: expected increasing integers >= 1, got {end!r}")
                self.ends.append(end)

    def weights_at(self, step: int) -> dict[str, float]:
        """The weight of every task at optimizer step `step`."""
        k = bisect.bisect_right(self.ends, step)  # the phase `step` falls in
        if k >= len(self.table):
            return dict(self.table[-1])
        if not self.ramp or k + 1 >= len(self.table):
            return dict(self.table[k])
        start = self.ends[k - 1] if k > 0 else 0
        frac = (step - start) / (self.ends[k] - start)
        a, b = self.table[k], self.table[k + 1]
        return {t: a[t] + frac * (b[t] - a[t]) for t in self.tasks}

    def weights(self, losses: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        now = self.weights_at(step)
        return {t: now[t] for t in losses}
