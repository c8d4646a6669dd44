"""The `Weighting` interface: per-task losses in, one scalar to backpropagate out."""

from __future__ import annotations

from typing import Any

import torch

from promptmux.registry import Registry


class Weighting(torch.nn.Module):
    """Combines the task losses of one step into the loss to backpropagate.

    A weighting is an `nn.Module` so that strategies with learnable weights (e.g. uncertainty
    weighting) carry their parameters and state through the optimizer and checkpoints like the
    model does. Strategies with plain Python state override `state_dict`/`load_state_dict`.

    Args:
        tasks: all task names, in config order.
        task_weights: the per-task `weight` values from the config.
        **options: strategy options from `weighting.options`.
    """

    def __init__(self, tasks: list[str], task_weights: dict[str, float], **options: Any) -> None:
        super().__init__()
        if options:
            raise TypeError(f"unexpected options {sorted(options)}")
        self.tasks = list(tasks)
        self.task_weights = dict(task_weights)

    def weights(self, losses: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor | float]:
        """Weights for the tasks present in `losses`."""
        raise NotImplementedError

    def forward(self, losses: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the combined loss and the weights used (as floats, for logging)."""
        weights = self.weights(losses, step)
        total = sum(weights[t] * loss for t, loss in losses.items())
        return total, {t: float(w) for t, w in weights.items()}


WEIGHTINGS: Registry[type[Weighting]] = Registry("weighting strategy")
