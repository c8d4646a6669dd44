"""Reptile: meta-learn where a new task's soft prompt starts, across the bundle's old tasks.

Nichol, Achiam and Schulman, "On First-Order Meta-Learning Algorithms" (2018),
https://arxiv.org/abs/1803.02999.

θ is the new task's prompt (only its own parameters; the encoder and every old part stay frozen).
Each meta step picks an old task τ, copies θ to φ, and takes `inner_steps` Adam steps on τ's
training batches, training φ together with a copy of τ's own head (the head copy is thrown away:
old heads never change). Then θ ← θ + meta_lr·(φ − θ). A θ that a few steps adapt well to every
old task is a better start for a new one than a random one, which is what few-shot learning needs.

Only the prompt is meta-learned, not the new head: old tasks' heads have other label counts and
label meanings, so there is no common head shape to average; the new head starts plain.
"""

from __future__ import annotations

import copy
import logging
import random
from dataclasses import dataclass, field

import torch

from promptmux.config.add_task import ReptileConfig
from promptmux.data.collate import Batch, collate
from promptmux.data.encode import Encoded
from promptmux.data.streams import TaskStream
from promptmux.model.multitask import MultiTaskModel
from promptmux.model.prompts import SoftPrompt
from promptmux.precision import autocast

log = logging.getLogger("promptmux.train")


def reptile_update(
    theta: dict[str, torch.Tensor], adapted: dict[str, torch.Tensor], meta_lr: float
) -> dict[str, torch.Tensor]:
    """The Reptile meta update θ + meta_lr·(φ − θ), tensor by tensor (a pure function)."""
    return {name: value + meta_lr * (adapted[name] - value) for name, value in theta.items()}


@dataclass
class MetaStep:
    """What one meta step did: the old task, θ before, the adapted φ, θ after, inner losses."""

    task: str
    theta: dict[str, torch.Tensor]
    adapted: dict[str, torch.Tensor]
    updated: dict[str, torch.Tensor]
    losses: list[float] = field(default_factory=list)


class Reptile:
    """Meta-learns the values of `prompt`'s trainable parameters (the new task's prompt).

    Args:
        model: the frozen model; its encoder runs the inner steps, its old heads are copied.
        prompt: the prompt module holding the new task's prompt (its only trainable parameters).
        task: the new task's name in `prompt`.
        train_sets: old task name -> its encoded training split.
        cfg: the `add_task.reptile` settings.
        batch_size: inner-loop rows per step.
        pad_id: the tokenizer's padding id.
        seed: seeds the task choice and each task's batch order.
        precision: "fp32" or "bf16" autocast.
    """

    def __init__(
        self,
        model: MultiTaskModel,
        prompt: SoftPrompt,
        task: str,
        train_sets: dict[str, Encoded],
        cfg: ReptileConfig,
        batch_size: int,
        pad_id: int,
        seed: int,
        precision: str = "fp32",
    ) -> None:
        if not train_sets:
            raise ValueError("Reptile needs the training data of at least one old task")
        self.model = model
        self.prompt = prompt
        self.task = task
        self.train_sets = train_sets
        self.cfg = cfg
        self.pad_id = pad_id
        self.precision = precision
        self.rng = random.Random(seed)
        self.streams = {
            t: TaskStream(enc.lengths, min(batch_size, len(enc)), seed=seed * 1000 + 7 + i)
            for i, (t, enc) in enumerate(sorted(train_sets.items()))
        }
        self.sizes = {t: min(batch_size, len(enc)) for t, enc in train_sets.items()}

    def theta(self) -> dict[str, torch.Tensor]:
        """A copy of the current meta-parameters (the prompt's trainable tensors)."""
        return {n: p.detach().clone() for n, p in self.prompt.named_parameters() if p.requires_grad}

    def set_theta(self, values: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, p in self.prompt.named_parameters():
                if n in values:
                    p.copy_(values[n])

    def adapt(
        self, old_task: str, theta: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], list[float]]:
        """The inner loop: φ after `inner_steps` Adam steps on `old_task` from θ (and its losses)."""
        scratch = copy.deepcopy(self.prompt)
        with torch.no_grad():
            for n, p in scratch.named_parameters():
                if n in theta:
                    p.copy_(theta[n])
        head = copy.deepcopy(self.model.heads[old_task]).requires_grad_(True).train()
        params = [p for p in scratch.parameters() if p.requires_grad] + list(head.parameters())
        # A fresh optimizer per inner loop: Adam's moments belong to one task's problem.
        optimizer = torch.optim.Adam(params, lr=self.cfg.inner_lr)
        encoder = self.model.encoder
        was_training = encoder.training
        encoder.train()
        losses: list[float] = []
        try:
            for _ in range(self.cfg.inner_steps):
                batch = self._batch(old_task)
                with autocast(batch.input_ids.device, self.precision):
                    rows = {self.task: slice(0, len(batch))}
                    hidden = scratch.encode(
                        encoder, rows, batch.input_ids, batch.attention_mask, batch.token_type_ids
                    )
                    logits = head(
                        hidden[:, scratch.length :],
                        batch.attention_mask,
                        batch.extra.get(old_task, {}),
                    )
                loss = head.loss(logits, batch.labels[old_task])
                if not torch.isfinite(loss.detach()):
                    from promptmux.errors import TrainingError

                    raise TrainingError(
                        f"add_task.reptile: non-finite inner loss on old task {old_task!r}; lower add_task.reptile.inner_lr"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
        finally:
            encoder.train(was_training)
        adapted = {n: p.detach().clone() for n, p in scratch.named_parameters() if n in theta}
        return adapted, losses

    def step(self) -> MetaStep:
        """One meta step: pick an old task, adapt θ to it, move θ toward the adapted φ."""
        old_task = self.rng.choice(sorted(self.train_sets))
        theta = self.theta()
        adapted, losses = self.adapt(old_task, theta)
        updated = reptile_update(theta, adapted, self.cfg.meta_lr)
        self.set_theta(updated)
        return MetaStep(old_task, theta, adapted, updated, losses)

    def run(self) -> dict:
        """All `meta_steps`; leaves the meta-learned θ in the prompt and returns a summary."""
        start = self.theta()
        counts: dict[str, int] = {}
        first, last = [], []
        for i in range(self.cfg.meta_steps):
            s = self.step()
            counts[s.task] = counts.get(s.task, 0) + 1
            first.append(s.losses[0])
            last.append(s.losses[-1])
            if (i + 1) % max(1, self.cfg.meta_steps // 5) == 0:
                log.info(
                    "reptile meta step %d/%d: inner loss %.4f -> %.4f (%s)",
                    i + 1,
                    self.cfg.meta_steps,
                    s.losses[0],
                    s.losses[-1],
                    s.task,
                )
        end = self.theta()
        moved = sum(float((end[n] - start[n]).float().norm() ** 2) for n in start) ** 0.5
        return {
            "meta_steps": self.cfg.meta_steps,
            "tasks": counts,
            "inner_loss_first": sum(first) / len(first),
            "inner_loss_last": sum(last) / len(last),
            "theta_moved": moved,
        }

    def _batch(self, task: str) -> Batch:
        rows = self.streams[task].take(self.sizes[task])
        device = next(self.prompt.parameters()).device
        return collate([(task, self.train_sets[task], rows)], self.pad_id).to(device)
