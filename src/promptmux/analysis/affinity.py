"""Task relationships measured during training: gradient cosine and lookahead task affinity.

Every `every` optimizer steps (main process only) the recorder draws a probe batch per task from
the training split and, with the model in eval mode (no dropout), measures on the *shared*
trainable parameters θ (everything outside the task heads: encoder, soft prompts, adapters):

- gradient cosine: cos(g_i, g_j) of the per-task probe-loss gradients (fp32, flattened);
- lookahead affinity (Fifty et al. 2021, "Efficiently Identifying Task Groupings for Multi-Task
  Learning", https://arxiv.org/abs/2109.04617): Z[i][j] = 1 − L_j(θ − η·g_i) / L_j(θ), how a step
  on task i changes task j's loss; positive means i helps j.

Approximation: the lookahead step is a plain SGD step θ' = θ − η·g_i with η the current learning
rate of each parameter's optimizer group (from the scheduler), not an AdamW step; only the shared
parameters move (the heads stay put, as in the paper). The task gradients are taken under the run's
autocast; the lookahead losses are computed in fp32 by default, because an update of size η·g is
around 1e-4 of a weight, below bf16's resolution (about 4e-3): in bf16 θ' would round back to θ.
A record taken where η is 0 (the last step of a linear schedule) has no lookahead matrix.

The recorder leaves the run as it found it: gradients come from `torch.autograd.grad` (no `.grad`
is touched), θ is copied back exactly after each lookahead, the train/eval mode is restored, probe
rows come from the recorder's own numpy Generator and the torch RNG is forked, so a run with the
recorder trains bit-identically to one without.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from promptmux.data.collate import Batch, collate
from promptmux.errors import ConfigError
from promptmux.model.multitask import MultiTaskModel
from promptmux.precision import autocast
from promptmux.train.trainer import Callback, StepContext


@dataclass
class AffinityRecord:
    """One measurement: K x K lists in task order; `lookahead` is None where η was 0."""

    step: int
    lr: float
    losses: dict[str, float]
    cosine: list[list[float]]
    lookahead: list[list[float]] | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "lr": self.lr,
            "losses": self.losses,
            "cosine": self.cosine,
            "lookahead": self.lookahead,
            "seconds": self.seconds,
        }


@dataclass
class AffinityRecorder(Callback):
    """Records gradient cosine and lookahead affinity between tasks every `every` steps.

    Lookahead affinity after Fifty et al. 2021 (https://arxiv.org/abs/2109.04617); see the module
    docstring for the approximation (an SGD lookahead) and why training is left unchanged.

    Args:
        every: measure after every `every`-th optimizer step.
        probe_size: rows per task in each probe batch (fewer if a task has fewer training rows).
        seed: seeds the recorder's own probe-row generator (the training RNG is not used).
        lookahead_precision: `fp32` (default, see the module docstring) or `run` (the run's
            `train.precision`).
    """

    every: int
    probe_size: int = 32
    seed: int = 0
    lookahead_precision: str = "fp32"
    # Filled during the run (not constructor arguments).
    tasks: list[str] = field(default_factory=list, init=False)
    records: list[AffinityRecord] = field(default_factory=list, init=False)
    total_steps: int | None = field(default=None, init=False)
    main_process: bool = field(default=True, init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.every, int) or self.every < 1:
            raise ConfigError(
                f"--every must be an integer >= 1 (steps between measurements), got {self.every!r}"
            )
        if not isinstance(self.probe_size, int) or self.probe_size < 1:
            raise ConfigError(
                f"--probe-size must be an integer >= 1 (rows per task), got {self.probe_size!r}"
            )
        if self.lookahead_precision not in ("fp32", "run"):
            raise ConfigError(
                f"lookahead_precision must be fp32 or run, got {self.lookahead_precision!r}"
            )
        self._rng = np.random.default_rng(self.seed)

    # ---- callback hooks

    def on_step_end(self, ctx: StepContext) -> None:
        self.total_steps = ctx.total_steps
        self.main_process = ctx.accelerator.is_main_process
        if ctx.step % self.every != 0 or not self.main_process:
            return
        record = self.measure(ctx)
        self.records.append(record)
        named = {"cosine": _nested(self.tasks, record.cosine)}
        if record.lookahead is not None:
            named["lookahead"] = _nested(self.tasks, record.lookahead)
        ctx.logger.event(
            "affinity",
            ctx.step,
            lr=record.lr,
            probe_loss=record.losses,
            seconds=record.seconds,
            **named,
        )

    def on_train_end(self, ctx: StepContext) -> None:
        self.total_steps = ctx.total_steps
        self.main_process = ctx.accelerator.is_main_process

    # ---- measurement

    def measure(self, ctx: StepContext) -> AffinityRecord:
        """Take one measurement at the current weights (see the module docstring)."""
        t0 = time.perf_counter()
        model = ctx.model
        tasks = [t.name for t in ctx.data.tasks]
        if len(tasks) < 2:
            raise ConfigError(
                f"task affinity needs at least two tasks; the config has {len(tasks)} "
                f"({', '.join(tasks)})"
            )
        self.tasks = tasks
        device = ctx.accelerator.device
        params, lrs = shared_parameters(model, ctx.optimizer, ctx.scheduler)
        batches = {t: self._probe(ctx, t).to(device) for t in tasks}
        look_precision = ctx.cfg.train.precision if self.lookahead_precision == "run" else "fp32"
        was_training = model.training
        model.eval()
        try:
            with _fork_rng(device):
                grads = torch.stack(
                    [
                        task_gradient(model, t, batches[t], params, device, ctx.cfg.train.precision)
                        for t in tasks
                    ]
                )
                cosine = cosine_matrix(grads)
                with torch.no_grad():
                    base = {
                        t: probe_loss(model, t, batches[t], device, look_precision) for t in tasks
                    }
                    lookahead = None
                    if any(lr > 0 for lr in lrs):
                        lookahead = lookahead_matrix(
                            model, tasks, batches, params, lrs, grads, base, device, look_precision
                        )
        finally:
            model.train(was_training)
        return AffinityRecord(
            step=ctx.step,
            lr=float(max(lrs)),
            losses=base,
            cosine=cosine.tolist(),
            lookahead=None if lookahead is None else lookahead.tolist(),
            seconds=round(time.perf_counter() - t0, 3),
        )

    def _probe(self, ctx: StepContext, task: str) -> Batch:
        enc = ctx.data.encoded["train"][task]
        rows = self._rng.choice(len(enc), size=min(self.probe_size, len(enc)), replace=False)
        return collate([(task, enc, np.sort(rows))], ctx.pad_id)

    # ---- results

    def summary(self) -> dict[str, Any]:
        """Mean matrices over the run (lookahead: over records where η > 0) and every record."""
        if not self.records:
            raise ConfigError(
                f"no affinity was recorded: the run had {self.total_steps} steps and --every is "
                f"{self.every}; choose --every <= train.max_steps"
            )
        cos = np.mean([r.cosine for r in self.records], axis=0)
        looks = [r.lookahead for r in self.records if r.lookahead is not None]
        return {
            "tasks": list(self.tasks),
            "every": self.every,
            "probe_size": self.probe_size,
            "lookahead_precision": self.lookahead_precision,
            "total_steps": self.total_steps,
            "n_records": len(self.records),
            "n_lookahead_records": len(looks),
            "cosine": cos.tolist(),
            "lookahead": np.mean(looks, axis=0).tolist() if looks else None,
            "records": [r.to_dict() for r in self.records],
        }


def shared_parameters(
    model: MultiTaskModel, optimizer, scheduler
) -> tuple[list[torch.nn.Parameter], list[float]]:
    """Trainable parameters outside the heads, and each one's current learning rate."""
    heads = {id(p) for p in model.heads.parameters()}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in heads]
    if not params:
        raise ConfigError(
            "task affinity needs shared trainable parameters; with model.freeze.strategy: backbone "
            "and no soft prompts every trainable parameter belongs to one task's head"
        )
    lr_of: dict[int, float] = {}
    for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
        for p in group["params"]:
            lr_of[id(p)] = float(lr)
    return params, [lr_of.get(id(p), 0.0) for p in params]


def probe_loss(
    model: MultiTaskModel, task: str, batch: Batch, device: torch.device, precision: str
) -> float:
    """The task's loss on its probe batch (call under no_grad)."""
    with autocast(
        device, precision
    ):  # a fresh context: autocast's weight-cast cache must not outlive θ
        logits = model(**batch.model_inputs())[task]
    return float(model.heads[task].loss(logits, batch.labels[task]))


def task_gradient(
    model: MultiTaskModel,
    task: str,
    batch: Batch,
    params: list[torch.nn.Parameter],
    device: torch.device,
    precision: str,
) -> torch.Tensor:
    """The flat fp32 gradient of the task's probe loss on `params` (zeros where unreached)."""
    with autocast(device, precision):
        logits = model(**batch.model_inputs())[task]
    loss = model.heads[task].loss(logits, batch.labels[task])
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return torch.cat(
        [
            torch.zeros(p.numel(), dtype=torch.float32, device=p.device)
            if g is None
            else g.reshape(-1).float()
            for p, g in zip(params, grads)
        ]
    )


def cosine_matrix(grads: torch.Tensor) -> np.ndarray:
    """Pairwise cosine of the rows of `grads` (K x P); a zero gradient has cosine 0 with all."""
    g = grads.double()
    norms = g.norm(dim=1)
    unit = g / norms.clamp_min(1e-30).unsqueeze(1)
    return (unit @ unit.T).clamp(-1.0, 1.0).cpu().numpy()


def lookahead_matrix(
    model: MultiTaskModel,
    tasks: list[str],
    batches: dict[str, Batch],
    params: list[torch.nn.Parameter],
    lrs: list[float],
    grads: torch.Tensor,
    base: dict[str, float],
    device: torch.device,
    precision: str,
) -> np.ndarray:
    """Z[i][j] = 1 − L_j(θ − η·g_i) / L_j(θ); θ is restored exactly after each row.

    Call under no_grad. `lrs` holds each parameter's η; `base` the losses L_j(θ).
    """
    saved = [p.detach().clone() for p in params]
    sizes = [p.numel() for p in params]
    z = np.zeros((len(tasks), len(tasks)))
    try:
        for i in range(len(tasks)):
            for p, lr, g in zip(params, lrs, torch.split(grads[i], sizes)):
                if lr > 0:
                    p.sub_(g.view_as(p).to(p.dtype), alpha=lr)
            for j, tj in enumerate(tasks):
                # A zero base loss cannot get better: report no effect rather than divide by zero.
                z[i, j] = (
                    0.0
                    if base[tj] <= 1e-12
                    else 1.0 - probe_loss(model, tj, batches[tj], device, precision) / base[tj]
                )
            for p, s in zip(params, saved):
                p.copy_(s)
    finally:  # also after an error: never leave the run training from the lookahead weights
        for p, s in zip(params, saved):
            p.copy_(s)
    return z


def _fork_rng(device: torch.device) -> contextlib.AbstractContextManager:
    """Fork the CPU RNG, and the device's own RNG when there is one."""
    if device.type == "cpu":
        return torch.random.fork_rng(devices=[])
    index = (
        device.index if device.index is not None else getattr(torch, device.type).current_device()
    )
    return torch.random.fork_rng(devices=[index], device_type=device.type)


def _nested(tasks: list[str], matrix: list[list[float]]) -> dict[str, dict[str, float]]:
    return {ti: {tj: matrix[i][j] for j, tj in enumerate(tasks)} for i, ti in enumerate(tasks)}
