"""The `Weighting` interface: per-task losses in, one scalar to backpropagate out.

Two kinds of strategy share it:

* loss-based strategies (`Weighting`): `weights(losses, step)` gives one coefficient per task and
  `forward` returns the weighted sum, which the trainer backpropagates as usual;
* gradient-based strategies (`GradientWeighting`, `needs_task_grads = True`): the trainer computes
  each task's gradient on the trainable parameters, averages it over processes, and calls
  `aggregate(task_grads, losses, step)`, which returns the update direction for the shared
  (encoder) parameters and the per-task coefficients used for the task-specific parameters.
  Every method here (PCGrad, CAGrad, MGDA, GradNorm) returns a direction that is a linear
  combination `sum_i c_i g_i` of the task gradients, with `c` a function of the Gram matrix
  `G G^T` only; subclasses implement `coefficients(gram, losses, step)`.

Distributed runs: every process sees the same tasks in a step (the sampler draws with the same
seed everywhere) but different rows. Strategies whose weights depend on loss values use
`global_losses`, the task losses averaged over processes, so that all processes compute the same
weights and keep the same state.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from promptmux.registry import Registry


def mean_across_processes(values: torch.Tensor) -> torch.Tensor:
    """`values` averaged over the processes of a distributed run (itself in a single process)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    values = values.clone()
    dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values / dist.get_world_size()


class Weighting(torch.nn.Module):
    """Combines the task losses of one step into the loss to backpropagate.

    A weighting is an `nn.Module` so that strategies with learnable weights (e.g. uncertainty
    weighting) carry their parameters and state through the optimizer and checkpoints like the
    model does. State that is not learned by the optimizer (loss histories, ...) lives in buffers,
    so `state_dict()` carries it too.

    Args:
        tasks: all task names, in config order.
        task_weights: the per-task `weight` values from the config.
        **options: strategy options from `weighting.options`.
    """

    # Whether the trainer must hand per-task gradients to `aggregate` instead of calling `forward`.
    needs_task_grads: ClassVar[bool] = False
    # Constant strategies (equal, static) are not logged step by step.
    constant: ClassVar[bool] = False

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

    def present(self, losses: dict[str, Any]) -> list[str]:
        """The tasks of `losses` in config order (the same order on every process)."""
        return [t for t in self.tasks if t in losses]

    def index(self, tasks: list[str]) -> torch.Tensor:
        return torch.tensor([self.tasks.index(t) for t in tasks], dtype=torch.long)

    def global_losses(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Detached fp32 losses of `present(losses)`, averaged over processes."""
        values = torch.stack([losses[t].detach().float().reshape(()) for t in self.present(losses)])
        return mean_across_processes(values).cpu()

    def check_task_names(self, names, key: str) -> None:
        unknown = sorted(set(names) - set(self.tasks))
        if unknown:
            raise ValueError(f"{key}: unknown task(s) {unknown}; tasks are {self.tasks}")


class GradientWeighting(Weighting):
    """A strategy that combines per-task gradients of the shared parameters.

    The trainer computes `g_i`, the gradient of task i's loss on the shared parameters (summed over
    the step's micro-batches, averaged over processes, in fp32) and calls `aggregate`. Subclasses
    implement `coefficients`: from the Gram matrix `gram[i, j] = g_i . g_j` (float64) and the
    task losses, the coefficients `c` of the update `sum_i c_i g_i`. Coefficient 1 for every task
    is plain equal weighting (the sum of task gradients); task-specific parameters (heads) get
    the gradient of `sum_i c_i L_i`.
    """

    needs_task_grads: ClassVar[bool] = True

    def weights(self, losses: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        raise TypeError(
            f"{type(self).__name__} combines per-task gradients: the trainer calls aggregate(), not forward()"
        )

    def coefficients(self, gram: torch.Tensor, losses: torch.Tensor, tasks: list[str], step: int) -> torch.Tensor:
        """Coefficients (float64, one per task of `tasks`) of the combined update."""
        raise NotImplementedError

    def aggregate(
        self, task_grads: dict[str, torch.Tensor], losses: dict[str, torch.Tensor], step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Combine flat per-task gradients into one flat fp32 update.

        Args:
            task_grads: task -> flat gradient on the shared parameters (same length for all).
            losses: task -> the task's loss in this step (already averaged over processes).
            step: the optimizer step (0-based).

        Returns:
            The combined flat gradient and the per-task coefficients (for heads and logging).
        """
        tasks = self.present(task_grads)
        grads = [task_grads[t].float() for t in tasks]
        k = len(grads)
        gram = torch.empty(k, k, dtype=torch.float64)
        for i in range(k):
            for j in range(i, k):
                gram[i, j] = gram[j, i] = float(torch.dot(grads[i], grads[j]))
        loss_values = torch.stack([losses[t].detach().double().reshape(()).cpu() for t in tasks])
        c = self.coefficients(gram, loss_values, tasks, step)
        combined = torch.zeros_like(grads[0])
        for ci, g in zip(c.tolist(), grads):
            combined.add_(g, alpha=ci)
        return combined, dict(zip(tasks, c.tolist()))


WEIGHTINGS: Registry[type[Weighting]] = Registry("weighting strategy")
