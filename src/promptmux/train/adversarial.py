"""Adversarial training on the encoder's embedding output: FGM and PGD.

FGM: Miyato, Dai and Goodfellow, "Adversarial Training Methods for Semi-Supervised Text
Classification" (ICLR 2017), https://arxiv.org/abs/1605.07725. PGD: Madry et al., "Towards Deep
Learning Models Resistant to Adversarial Attacks" (ICLR 2018), https://arxiv.org/abs/1706.06083,
in the embedding-space form used for language models (as in FreeLB, Zhu et al. 2020,
https://arxiv.org/abs/1909.11764, which keeps only the last step's gradient here).

What is perturbed: the output of the encoder's embeddings module (word + position + type
embeddings after their LayerNorm), i.e. the input of the first transformer layer. Each selected
row gets one perturbation of L2 norm at most `epsilon` over all its real tokens together; padding
and soft-prompt positions are never perturbed (prompts are learned task switches, not input).

One micro-batch with adversarial training (see `Adversary.step`, called by the trainer):

1. clean pass: forward inside `watch()` (a hook keeps the embedding output e), task losses, the
   weighting's loss, backward. The gradient g = dL/de comes for free with the parameters' ones.
2. perturbation r per row: FGM r = epsilon * g / ||g||. PGD starts at 0 and takes `steps`
   ascent steps delta <- Proj_epsilon(delta + alpha * g_k / ||g_k||); the first step reuses the
   clean g, each further step costs a forward and a backward to e only (no parameter gradients).
3. adversarial pass on the selected rows: forward with e + r, adversarial task losses L_t^adv,
   backward of `weight * sum_t w_t * L_t^adv`, with w_t the weighting's coefficient of task t
   in this step (a constant). The step's gradient is that of L_clean + weight * L_adv.

Cost: FGM is about two forward and two backward passes per micro-batch; PGD adds
(steps - 1) forward + partial backward passes. `report` gives the measured step-time ratio.

Distributed (DDP): the clean backward runs inside `no_sync` on every micro-batch; the adversarial
backward syncs on the last one, so gradients are all-reduced once per step, after both passes.
PGD's ascent passes run on the unwrapped model: they touch no parameter gradient.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from promptmux.config.schema import AdversarialConfig
from promptmux.data.collate import Batch
from promptmux.errors import ConfigError
from promptmux.model.backbone import embeddings_module
from promptmux.model.multitask import MultiTaskModel
from promptmux.precision import autocast
from promptmux.train.batch_rows import select_tasks


def real_token_mask(attention_mask: torch.Tensor, prompt_length: int = 0) -> torch.Tensor:
    """[B, L + n] float mask of the positions that may be perturbed: real tokens, not prompts."""
    mask = attention_mask.float()
    if prompt_length:
        mask = torch.cat([mask.new_zeros(mask.size(0), prompt_length), mask], 1)
    return mask


def row_norms(x: torch.Tensor) -> torch.Tensor:
    """L2 norm of each row over all its positions and features: [B, W, H] -> [B]."""
    return x.float().flatten(1).norm(dim=1)


def unit_rows(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`grad` on the masked positions, scaled to norm 1 per row (rows with no gradient stay 0)."""
    g = grad.float() * mask.unsqueeze(-1)
    norms = row_norms(g)
    scale = torch.where(norms > 0, 1.0 / norms.clamp_min(1e-30), torch.zeros_like(norms))
    return g * scale[:, None, None]


def fgm_perturbation(grad: torch.Tensor, mask: torch.Tensor, epsilon: float) -> torch.Tensor:
    """FGM: epsilon * g / ||g|| per row, on the masked positions (fp32, shaped like `grad`)."""
    return epsilon * unit_rows(grad, mask)


def project(delta: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Each row of `delta` scaled back onto the L2 ball of radius `epsilon` when outside it."""
    norms = row_norms(delta)
    factor = (epsilon / norms.clamp_min(1e-30)).clamp(max=1.0)
    return delta * factor[:, None, None]


class Adversary:
    """FGM or PGD adversarial training for the trainer (one instance per run).

    Args:
        cfg: `train.adversarial`.
        model: the unwrapped multi-task model (its embeddings module gets temporary hooks).
        task_names: every task of the run (`cfg.tasks` null means all of them).
        accelerator: the run's accelerator (backward, and `no_sync` for DDP).
        precision: `train.precision` (the adversarial passes run under the same autocast).
        grad_accum: micro-batches per step (the adversarial loss is scaled like the clean one).
    """

    def __init__(
        self,
        cfg: AdversarialConfig,
        model: MultiTaskModel,
        task_names: list[str],
        accelerator: Any,
        precision: str = "fp32",
        grad_accum: int = 1,
    ) -> None:
        self.cfg = cfg
        self.model = model
        self.tasks = set(cfg.tasks or task_names)
        self.acc = accelerator
        self.precision = precision
        self.grad_accum = grad_accum
        self.embeddings = embeddings_module(model.encoder)
        # The last perturbation, shaped like the whole batch's embedding output (for tests).
        self.last_delta: torch.Tensor | None = None
        self._embedded: torch.Tensor | None = None
        self._started = 0.0
        self._clean_s = 0.0
        self._adv_s = 0.0
        self._losses: dict[str, list[float]] = {}

    # --- what the trainer calls ------------------------------------------------------------------

    def applies(self, batch: Batch) -> bool:
        """Whether the batch holds rows of a perturbed task (the same on every process)."""
        return any(t in self.tasks for t in batch.rows)

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        """Around the clean forward: keep the embedding output for the clean backward to fill."""
        self._sync()
        self._started = time.perf_counter()
        handle = self.embeddings.register_forward_hook(self._keep)
        try:
            yield
        finally:
            handle.remove()

    def step(
        self,
        model: torch.nn.Module,
        batch: Batch,
        weights: dict[str, float],
        sync: bool,
        check: Callable[[dict[str, torch.Tensor]], None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """After the clean backward: perturb, run the adversarial pass and backpropagate it.

        Args:
            model: the model as prepared by accelerate (the DDP wrapper in distributed runs).
            batch: the micro-batch of the clean pass.
            weights: the weighting's per-task coefficients of this step (constants here).
            sync: whether this backward all-reduces gradients (the step's last micro-batch).
            check: called with the adversarial losses before the backward (non-finite guard).

        Returns:
            The adversarial loss of each perturbed task (detached).
        """
        self._sync()
        middle = time.perf_counter()
        sub, index = select_tasks(batch, self.tasks)
        grad = self._take_gradient()
        mask = real_token_mask(sub.attention_mask, self._prompt_length())
        picked = grad if index is None else grad[index]
        if self.cfg.method == "fgm":
            delta = fgm_perturbation(picked, mask, self.cfg.epsilon)
        else:
            delta = self._pgd(sub, picked, mask)
        self.last_delta = delta.detach()
        if index is not None:  # in batch rows: zero on the rows of tasks that are not perturbed
            self.last_delta = torch.zeros_like(grad, dtype=delta.dtype).index_copy_(
                0, index, self.last_delta
            )
        context = contextlib.nullcontext() if sync else self.acc.no_sync(model)
        with context:
            losses = self.adversarial_losses(model, sub, delta)
            if check is not None:
                check({f"{t} (adversarial)": v for t, v in losses.items()})
            total = sum(float(weights.get(t, 1.0)) * v for t, v in losses.items())
            self.acc.backward(self.cfg.weight * total / self.grad_accum)
        self._sync()
        self._clean_s += middle - self._started
        self._adv_s += time.perf_counter() - middle
        for t, v in losses.items():
            self._losses.setdefault(t, []).append(float(v.detach()))
        return {t: v.detach() for t, v in losses.items()}

    def report(self) -> dict[str, Any]:
        """Mean adversarial loss per task and the step-time ratio since the last report.

        `step_time_ratio` = (clean + adversarial time) / clean time of the perturbed micro-batches
        (clean: forward, losses, backward; adversarial: perturbation, extra passes, backward).
        """
        out: dict[str, Any] = {"loss": {t: sum(v) / len(v) for t, v in self._losses.items()}}
        if self._clean_s > 0:
            out["step_time_ratio"] = (self._clean_s + self._adv_s) / self._clean_s
        self._losses.clear()
        self._clean_s = self._adv_s = 0.0
        return out

    # --- passes ---------------------------------------------------------------------------------

    def adversarial_losses(
        self, model: torch.nn.Module, batch: Batch, delta: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Task losses of the perturbed tasks with `delta` added to the embedding output."""
        with autocast(batch.input_ids.device, self.precision), self._adding(delta):
            logits = model(**batch.model_inputs())
        return {
            t: self.model.heads[t].loss(logits[t], batch.labels[t])
            for t in logits
            if t in self.tasks
        }

    def _pgd(self, batch: Batch, grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`steps` normalized ascent steps from 0, each projected onto the epsilon-ball."""
        alpha, epsilon = self.cfg.alpha, self.cfg.epsilon
        delta = project(alpha * unit_rows(grad, mask), epsilon)  # step 1: the clean gradient
        for _ in range(self.cfg.steps - 1):
            point = delta.detach().requires_grad_()
            # The unwrapped model: no DDP bookkeeping, and only the gradient at `point` is computed.
            losses = self.adversarial_losses(self.model, batch, point)
            (g,) = torch.autograd.grad(sum(losses.values()), point)
            delta = project(delta + alpha * unit_rows(g, mask), epsilon)
        return delta

    # --- hooks ----------------------------------------------------------------------------------

    def _keep(self, module: torch.nn.Module, args: tuple, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise ConfigError(
                f"train.adversarial.method: the embeddings module {type(module).__name__} does not "
                f"return one tensor; adversarial training supports BERT-style encoders"
            )
        if not output.requires_grad:  # frozen embeddings: the gradient still reaches this point
            output = output.detach().requires_grad_()
        elif not output.is_leaf:
            output.retain_grad()
        self._embedded = output
        return output

    @contextlib.contextmanager
    def _adding(self, delta: torch.Tensor) -> Iterator[None]:
        def add(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            if output.shape != delta.shape:
                raise RuntimeError(
                    f"adversarial perturbation {tuple(delta.shape)} does not fit the "
                    f"embedding output {tuple(output.shape)}"
                )
            return output + delta.to(output.dtype)

        handle = self.embeddings.register_forward_hook(add)
        try:
            yield
        finally:
            handle.remove()

    def _take_gradient(self) -> torch.Tensor:
        embedded, self._embedded = self._embedded, None
        if embedded is None:
            raise RuntimeError(
                "Adversary.step: no clean pass was watched (run the forward inside watch())"
            )
        if embedded.grad is None:  # the loss did not reach the embeddings: no direction to push
            return torch.zeros_like(embedded, dtype=torch.float32)
        return embedded.grad

    def _prompt_length(self) -> int:
        return self.model.prompt.length if self.model.prompt is not None else 0

    def _sync(self) -> None:
        # GPU work is asynchronous: wait for it so that the timings measure the passes themselves.
        device = next(self.model.parameters()).device
        if device.type != "cpu":
            torch.accelerator.synchronize(device)


def build_adversary(
    cfg: AdversarialConfig,
    model: MultiTaskModel,
    task_names: list[str],
    accelerator: Any,
    precision: str,
    grad_accum: int,
) -> Adversary | None:
    """The run's `Adversary`, or None for `method: none`."""
    if cfg.method == "none":
        return None
    kind = accelerator.distributed_type.name
    if kind in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
        raise ConfigError(
            f"train.adversarial.method: {cfg.method} runs on one device or under DDP, not {kind}"
        )
    return Adversary(cfg, model, task_names, accelerator, precision, grad_accum)
