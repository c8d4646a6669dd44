"""Per-task gradients for weightings that combine gradients (PCGrad, CAGrad, MGDA, GradNorm).

A step with such a weighting runs like this (the trainer calls `accumulate` for every micro-batch
inside `accelerator.no_sync(model)`, then `apply` once before the optimizer step):

1. `accumulate`: for each task of the micro-batch, `torch.autograd.grad` of its loss with respect
   to every trainable parameter (the graph is kept until the last task), flattened to fp32 (also
   under bf16 autocast) and summed over micro-batches with the same 1/grad_accum scale as the
   plain backward: one flat vector g_i per task.
2. `apply`: every g_i is all-reduced (averaged) over processes. This replaces DDP's reduction,
   which `no_sync` switches off for the whole step, so nothing is reduced twice; and it happens
   before the weighting's nonlinear aggregation, so the aggregate is the one of the global batch,
   not an average of per-process aggregates. The task losses are averaged the same way.
3. The weighting aggregates the shared part of the g_i (every parameter outside the task heads:
   encoder, soft prompts, adapters) into one update and returns per-task coefficients c_i; the
   heads get sum_i c_i g_i on their part, i.e. the gradient of sum_i c_i L_i. Every process
   computes the same numbers from the same averaged inputs, so the models stay identical as
   under DDP. Parameters no task reached keep `.grad = None`, as after a plain backward.

Cost: one backward pass per task in the micro-batch (plus K x (trainable parameters) fp32 of
memory), against one for loss-based weightings. Works under DDP (and single-device) runs; FSDP
and DeepSpeed shard parameters and are refused by the trainer for these strategies.
"""

from __future__ import annotations

import torch

from promptmux.weighting.base import GradientWeighting


class TaskGradients:
    """Collects per-task gradients over one optimizer step and writes the combined `.grad`s."""

    def __init__(self, weighting: GradientWeighting, model: torch.nn.Module, world_size: int) -> None:
        self.weighting = weighting
        self.world_size = world_size
        heads = {id(p) for p in model.heads.parameters()}
        trainable = [p for p in model.parameters() if p.requires_grad]
        shared = [p for p in trainable if id(p) not in heads]
        self.params = shared + [p for p in trainable if id(p) in heads]
        self.n_shared = sum(p.numel() for p in shared)
        self._reset()

    def _reset(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}
        self.loss_sums: dict[str, float] = {}
        self.loss_counts: dict[str, int] = {}
        self.reached = torch.zeros(len(self.params), dtype=torch.bool)

    def accumulate(self, losses: dict[str, torch.Tensor], scale: float) -> None:
        """Add the micro-batch's per-task gradients (times `scale`) to the step's sums."""
        tasks = self.weighting.present(losses)
        for i, task in enumerate(tasks):
            grads = torch.autograd.grad(losses[task], self.params, retain_graph=i < len(tasks) - 1, allow_unused=True)
            parts = []
            for k, (p, g) in enumerate(zip(self.params, grads)):
                if g is None:
                    parts.append(torch.zeros(p.numel(), dtype=torch.float32, device=p.device))
                else:
                    self.reached[k] = True
                    parts.append(g.reshape(-1).float())
            flat = torch.cat(parts).mul_(scale)
            if task in self.grads:
                self.grads[task].add_(flat)
            else:
                self.grads[task] = flat
            self.loss_sums[task] = self.loss_sums.get(task, 0.0) + float(losses[task].detach())
            self.loss_counts[task] = self.loss_counts.get(task, 0) + 1

    def apply(self, step: int) -> dict[str, float]:
        """Average over processes, aggregate, write `.grad`; returns the per-task coefficients."""
        tasks = self.weighting.present(self.grads)
        device = self.grads[tasks[0]].device
        small = torch.tensor(
            [self.loss_sums[t] / self.loss_counts[t] for t in tasks] + self.reached.float().tolist(),
            dtype=torch.float64 if device.type == "cpu" else torch.float32, device=device,
        )
        if self.world_size > 1:
            import torch.distributed as dist

            for t in tasks:  # one collective per task: no K x P copy for a stacked tensor
                dist.all_reduce(self.grads[t], op=dist.ReduceOp.SUM)
                self.grads[t].div_(self.world_size)
            dist.all_reduce(small, op=dist.ReduceOp.SUM)
            small = small / self.world_size
        losses = {t: small[i].detach().cpu() for i, t in enumerate(tasks)}
        reached = (small[len(tasks):] > 0).tolist()
        shared, coefs = self.weighting.aggregate({t: self.grads[t][: self.n_shared] for t in tasks}, losses, step)
        specific = torch.zeros_like(self.grads[tasks[0]][self.n_shared :])
        for t in tasks:
            specific.add_(self.grads[t][self.n_shared :], alpha=coefs[t])
        offset = 0
        for p, hit in zip(self.params, reached):
            n = p.numel()
            source = shared[offset : offset + n] if offset < self.n_shared else specific[offset - self.n_shared : offset - self.n_shared + n]
            if hit:
                g = source.view_as(p).to(p.dtype)
                p.grad = g.clone() if p.grad is None else p.grad + g
            offset += n
        self._reset()
        return coefs
