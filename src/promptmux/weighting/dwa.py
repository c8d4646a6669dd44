"""Dynamic Weight Average: weights follow how fast each task's loss is falling."""

from __future__ import annotations

import torch

from promptmux.weighting.base import WEIGHTINGS, Weighting


@WEIGHTINGS.register("dwa")
class DynamicWeightAverage(Weighting):
    """w_k = K * exp(r_k / T) / sum_i exp(r_i / T), with r_k = Lbar_k(n-1) / Lbar_k(n-2).

    Liu, Johns and Davison 2019, "End-to-End Multi-Task Learning with Attention", eq. 7
    (https://arxiv.org/abs/1803.10704). `Lbar_k(n)` is task k's mean loss over window n (the paper
    uses epochs; here a window is `window` optimizer steps, set it to the steps per epoch for the
    paper's setting). A task whose loss fell least in the last window gets the largest weight.
    Weights are 1 until two windows are complete. A task with no rows in a window keeps its
    previous mean (ratio 1). Losses are averaged over processes, so all processes agree.

    The window means and running sums are buffers: a checkpoint carries them and `--resume`
    continues with the same weights.

    Options:
        temperature: T (> 0; default 2.0, as in the paper). Larger T, flatter weights.
        window: optimizer steps per averaging window (>= 1; default 100).
    """

    def __init__(self, tasks: list[str], task_weights: dict[str, float], temperature: float = 2.0, window: int = 100) -> None:
        super().__init__(tasks, task_weights)
        if not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        self.temperature, self.window = float(temperature), window
        k = len(self.tasks)
        self.register_buffer("sums", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(k, dtype=torch.float64))
        self.register_buffer("means", torch.zeros(2, k, dtype=torch.float64))  # windows n-2, n-1
        self.register_buffer("closed", torch.zeros((), dtype=torch.long))  # complete windows
        self.register_buffer("current", torch.zeros((), dtype=torch.long))  # window being summed

    def _close_window(self) -> None:
        seen = self.counts > 0
        mean = torch.where(seen, self.sums / self.counts.clamp(min=1), self.means[1])
        self.means.copy_(torch.stack([self.means[1], mean]))
        self.closed += 1
        self.sums.zero_()
        self.counts.zero_()

    def all_weights(self) -> torch.Tensor:
        """The weight of every task (config order) from the completed windows."""
        k = len(self.tasks)
        if int(self.closed) < 2:
            return torch.ones(k, dtype=torch.float64)
        prev, last = self.means[0], self.means[1]
        ratio = torch.where((prev > 0) & (last > 0), last / prev.clamp(min=1e-12), torch.ones_like(last))
        return k * torch.softmax(ratio / self.temperature, dim=0)

    @torch.no_grad()
    def weights(self, losses: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        if step // self.window > int(self.current):
            self._close_window()
            self.current.fill_(step // self.window)
        present = self.present(losses)
        idx = self.index(present)
        w = self.all_weights()[idx]
        self.sums[idx] += self.global_losses(losses).double()
        self.counts[idx] += 1
        return dict(zip(present, w.tolist()))
