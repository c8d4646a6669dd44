"""The training loop. Reads top to bottom: setup, loop, evaluate, checkpoint."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptmux.config.load import config_to_dict
from promptmux.config.schema import Config
from promptmux.data.collate import Batch, collate
from promptmux.data.samplers import build_sampler
from promptmux.data.streams import TaskStream
from promptmux.errors import ConfigError, TrainingError
from promptmux.eval.evaluator import evaluate
from promptmux.fsutil import recover_directory
from promptmux.model.backbone import count_parameters, load_backbone
from promptmux.model.lora import freeze_encoder, lora_share
from promptmux.model.multitask import MultiTaskModel, build_model
from promptmux.model.prompts import prompt_settings
from promptmux.precision import autocast, resolve_precision
from promptmux.prompts.adaptive import PromptSelector
from promptmux.serve.bundle import write_bundle
from promptmux.train import checkpoint as ckpt
from promptmux.train.adversarial import build_adversary
from promptmux.train.bookkeeping import Outcome, after_step, record_evaluation, write_results
from promptmux.train.distill import build_distiller
from promptmux.train.logger import RunLogger
from promptmux.train.setup import (
    PreparedData,
    build_optimizer,
    build_scheduler,
    prepare_data,
    total_steps,
)
from promptmux.train.task_grads import TaskGradients
from promptmux.weighting import build_weighting

log = logging.getLogger("promptmux.train")


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    best_step: int | None
    best_score: float | None
    best_metrics: dict[str, dict[str, float]]
    last_metrics: dict[str, dict[str, float]]
    stopped: str  # "completed", "early_stopping" or "sigterm"
    model: MultiTaskModel = field(repr=False)


@dataclass
class StepContext:
    """What a callback sees after each optimizer step (read it; change nothing it does not own).

    `model` is the unwrapped model in train mode with zeroed gradients; a callback that runs its
    own forward passes (analysis probes) must leave parameters, gradients and the training RNG as
    it found them, so that a run with callbacks trains exactly like one without.
    """

    step: int
    total_steps: int
    cfg: Config
    model: MultiTaskModel
    data: PreparedData
    pad_id: int
    accelerator: Any
    optimizer: Any
    scheduler: Any
    logger: RunLogger


class Callback:
    """Hooks into the training loop; override what you need (every method is optional)."""

    def on_step_end(self, ctx: StepContext) -> None:
        """After the optimizer step (and logging), before evaluation and checkpoints."""

    def on_train_end(self, ctx: StepContext) -> None:
        """Once, after the last step, on every process."""


class _Stop:
    """SIGTERM sets a flag; the loop saves a checkpoint after the current step and exits."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = None

    def __enter__(self) -> _Stop:
        with contextlib.suppress(ValueError):  # signal handlers only install on the main thread
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def train(cfg: Config, resume: bool = False, callbacks: tuple[Callback, ...] | list[Callback] = ()) -> TrainResult:
    """Train the multi-task model described by `cfg`; returns the result and the trained model.

    `callbacks` observe the run after every optimizer step (see `Callback`), e.g. task-affinity
    analysis; they are not part of the config and not saved in checkpoints.
    """
    if cfg.model.kind == "decoder":  # text-to-text tasks on a causal LM: their own loop
        if callbacks:
            raise ConfigError("model.kind: decoder runs take no training callbacks (e.g. promptmux analyze)")
        from promptmux.t2t.trainer import train_t2t

        return train_t2t(cfg, resume)
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    # Under a plain `torchrun` on a machine without an accelerator, accelerate sets up no process
    # group (each process would train alone into the same folder) unless told to use the CPU, as
    # `accelerate launch --cpu` does.
    cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()
    # Single-task batches leave the other heads unused in a step; DDP must be told.
    acc = Accelerator(cpu=cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    world, rank = acc.num_processes, acc.process_index
    precision = resolve_precision(cfg.train.precision, acc.device, warn=acc.is_main_process)
    if acc.device.type == "cpu" and world > 1 and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // acc.num_processes))
    out = Path(cfg.output.dir)
    _check_output_dir(cfg, out, resume, acc.is_main_process)
    acc.wait_for_everyone()
    set_seed(cfg.seed + rank)

    # ---- setup: data, model, optimizer, schedule, sampling, weighting
    encoder, tokenizer = load_backbone(cfg.model.backbone, cfg.model.num_layers)
    data = prepare_data(cfg, tokenizer)
    train_sets = data.encoded["train"]
    model = build_model(encoder, data.tasks, cfg.model.head_dropout, cfg.model.prompts, lora=cfg.model.lora)
    for info in data.tasks:
        if info.type == "regression":
            model.heads[info.name].set_target_stats([ex.label for ex in data.raw[info.name].split("train")])
    freeze_encoder(model, cfg.model.freeze.strategy, cfg.model.freeze.k)  # with LoRA: model/lora.py
    trainable, total = count_parameters(model)
    names = [t.name for t in data.tasks]
    weighting = build_weighting(cfg.weighting.strategy, names, {n: cfg.tasks[n].weight for n in names}, cfg.weighting.options)
    steps = total_steps(cfg, {t: len(e) for t, e in train_sets.items()}, world)
    rows_per_batch = cfg.train.batch_size * world
    streams = {
        t: TaskStream(enc.lengths, rows_per_batch, seed=cfg.seed * 1000 + i, buckets=cfg.train.length_buckets, bucket_size=cfg.train.bucket_size)
        for i, (t, enc) in enumerate(train_sets.items())
    }
    sizes = {t: len(e) for t, e in train_sets.items()}
    sampler = build_sampler(cfg.sampling.strategy, sizes, cfg.seed, cfg.sampling.temperature, cfg.sampling.options)
    sampler.set_total_steps(steps)
    state: dict[str, Any] = {"step": 0, "best_score": None, "best_step": None, "evals_since_best": 0, "tokens": 0}
    folder = None
    if resume:
        folder = ckpt.find_checkpoint(out / "last")
        ckpt.check_resume_config(folder, config_to_dict(cfg))
        from promptmux.serve.bundle import load_weights

        load_weights(model, folder)
        ckpt.restore_loop_state(folder, world, state, sampler, streams, weighting)
    optimizer = build_optimizer(cfg, model, weighting)
    scheduler = build_scheduler(cfg, optimizer, steps)
    model, optimizer = acc.prepare(model, optimizer)
    raw_model: MultiTaskModel = acc.unwrap_model(model)
    # Gradient-combining weightings (PCGrad, ...) see per-task gradients; see train/task_grads.py.
    task_grads = None
    if weighting.needs_task_grads:
        if acc.distributed_type.name in ("FSDP", "DEEPSPEED", "MEGATRON_LM"):
            raise ConfigError(f"weighting.strategy: {cfg.weighting.strategy} needs whole per-task gradients; "
                              f"use DDP, not {acc.distributed_type.name}")
        task_grads = TaskGradients(weighting, raw_model, world)
    # FGM/PGD on the embedding output (train/adversarial.py); teachers for distillation (train/distill.py).
    adversary = build_adversary(cfg.train.adversarial, raw_model, names, acc, precision, cfg.train.grad_accum)
    distiller = build_distiller(cfg, raw_model, data.tasks, tokenizer, acc.device)
    if folder is not None:
        ckpt.restore_optimizer(folder, optimizer, scheduler, rank)

    logger = RunLogger(out, steps, state["step"], acc.is_main_process, cfg.output.tensorboard, cfg.train.progress)
    logger.message(
        f"tasks: {', '.join(f'{t}({len(e)})' for t, e in train_sets.items())} | steps: {steps} | "
        f"processes: {world} | precision: {precision} | trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"
        + _prompt_share(raw_model, total) + lora_share(raw_model, total)
    )
    settings = {"max_length": cfg.model.max_length, "head_dropout": cfg.model.head_dropout, "precision": precision}
    if raw_model.prompt is not None:  # load_bundle rebuilds the same prompt module from these
        settings["prompts"] = prompt_settings(cfg.model.prompts)
    config_dict = config_to_dict(cfg)
    pad_id = tokenizer.pad_token_id or 0
    # Tasks with prompt.adaptive get their template re-chosen on dev before some evaluations; the
    # choices live in state["prompts"], so a resumed run re-encodes with them (prompts/adaptive.py).
    selector = PromptSelector.create(cfg, data, tokenizer, state, acc)

    def write_files(folder: Path) -> None:
        write_bundle(folder, raw_model, tokenizer, data.tasks, settings, config_dict)

    def save_last() -> None:
        ckpt.save_checkpoint(
            acc, out / "last", write_files, optimizer, scheduler, weighting,
            ckpt.loop_state(state, sampler, streams),
        )

    def evaluate() -> tuple[dict[str, dict[str, float]], bool]:
        if selector is not None:  # before the evaluation, which then judges the chosen prompt
            selector.maybe_select(raw_model, state["step"], logger)
        return _evaluate(cfg, acc, raw_model, data, pad_id, state, logger, precision)

    def next_batch() -> Batch:
        if cfg.sampling.mixed:
            counts = sampler.counts(cfg.train.batch_size, state["step"])
        else:
            counts = {sampler.sample(state["step"]): cfg.train.batch_size}
        parts = []
        for t, c in counts.items():
            rows = streams[t].take(c * world)[rank * c : (rank + 1) * c]
            parts.append((t, train_sets[t], rows))
        return collate(parts, pad_id)

    # ---- loop
    model.train()
    outcome = Outcome()
    running: dict[str, float] = {}
    window: dict[str, list[float]] = {}
    t0, tokens0 = time.perf_counter(), state["tokens"]
    trainable_params = [p for p in model.parameters() if p.requires_grad] + list(weighting.parameters())
    with _Stop() as stop, contextlib.closing(logger):  # closed on errors too (NaN, disk full)
        while state["step"] < steps:
            step = state["step"]
            step_weights: dict[str, float] = {}  # every task of the step (micro-batches may differ)
            for micro in range(cfg.train.grad_accum):
                batch = next_batch().to(acc.device)
                last_micro = micro == cfg.train.grad_accum - 1 and task_grads is None
                # An adversarial pass adds a second backward; that one, not the clean one, syncs.
                attack = adversary is not None and adversary.applies(batch)
                sync = contextlib.nullcontext() if last_micro and not attack else acc.no_sync(model)
                watch = adversary.watch() if attack else contextlib.nullcontext()  # keeps the embedding output
                with sync:
                    with autocast(acc.device, precision), watch:
                        logits = model(**batch.model_inputs())
                    losses = {t: raw_model.heads[t].loss(logits[t], batch.labels[t]) for t in logits}
                    if distiller is not None:
                        losses = distiller.mix(losses, batch, logits)
                    _check_finite(acc, losses, step + 1, stop)
                    if task_grads is not None:
                        task_grads.accumulate(losses, 1.0 / cfg.train.grad_accum)
                    else:
                        loss, weights = weighting(losses, step)
                        step_weights.update(weights)
                        acc.backward(loss / cfg.train.grad_accum)
                if attack:
                    check = functools.partial(_check_finite, acc, step=step + 1, stop=stop)
                    adversary.step(model, batch, weights, sync=last_micro, check=check)
                state["tokens"] += batch.n_tokens * world
                for t, v in losses.items():
                    value = v.item()
                    running[t] = value if t not in running else 0.9 * running[t] + 0.1 * value
                    window.setdefault(t, []).append(value)
            if task_grads is not None:
                weights = step_weights = task_grads.apply(step)
            _average_weighting_grads(acc, weighting)
            if not weighting.constant:
                logger.event("weights", step + 1, weights=step_weights)
            if cfg.train.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trainable_params, cfg.train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] = step = step + 1
            logger.progress(step, running, cfg.train.log_every)
            if callbacks:
                ctx = StepContext(step, steps, cfg, raw_model, data, pad_id, acc, optimizer, scheduler, logger)
                for cb in callbacks:
                    cb.on_step_end(ctx)

            if step % cfg.train.log_every == 0 or step == steps:
                elapsed = time.perf_counter() - t0
                logger.event(
                    "train", step,
                    loss={t: float(np.mean(v)) for t, v in window.items()},
                    weights=weights, lr=scheduler.get_last_lr()[0],
                    tokens_per_s=(state["tokens"] - tokens0) / max(elapsed, 1e-9),
                    **({"adversarial": adversary.report()} if adversary is not None else {}),
                    **({"distill": distiller.report()} if distiller is not None else {}),
                )
                window.clear()
                t0, tokens0 = time.perf_counter(), state["tokens"]

            if after_step(cfg, acc, out, state, steps, stop.requested, evaluate, sampler, write_files, save_last, logger, outcome):
                break
    if callbacks:
        ctx = StepContext(state["step"], steps, cfg, raw_model, data, pad_id, acc, optimizer, scheduler, logger)
        for cb in callbacks:
            cb.on_train_end(ctx)
    write_results(acc, out, state, outcome)
    return TrainResult(out, state["step"], state["best_step"], state["best_score"], outcome.best, outcome.last, outcome.stopped, raw_model)


def _evaluate(cfg: Config, acc, model: MultiTaskModel, data: PreparedData, pad_id: int, state: dict, logger: RunLogger, precision: str):
    """Evaluate on the main process; share the score and keep the best-model bookkeeping."""
    from promptmux.eval.metrics import aggregate_score

    metrics: dict[str, dict[str, float]] = {}
    score = None
    if acc.is_main_process:
        dev = data.split("dev")
        if dev:
            metrics = evaluate(model, data.tasks, dev, pad_id, cfg.train.eval_batch_size, precision)
            score = aggregate_score({t: m[cfg.main_metric(t)] for t, m in metrics.items()})
    return record_evaluation(cfg, acc, state, logger, metrics, score)


def _prompt_share(model: MultiTaskModel, total: int) -> str:
    if model.prompt is None:
        return ""
    n = sum(p.numel() for p in model.prompt.parameters() if p.requires_grad)
    return f" | soft prompts ({model.prompt.kind}): {n:,} ({100 * n / total:.3f}%)"


def _average_weighting_grads(acc, weighting: torch.nn.Module) -> None:
    """Learnable weighting parameters live outside the DDP model: average their gradients as DDP would."""
    if acc.num_processes == 1:
        return
    import torch.distributed as dist

    for p in weighting.parameters():
        if p.grad is not None:
            g = p.grad.to(acc.device)
            dist.all_reduce(g, op=dist.ReduceOp.SUM)
            p.grad.copy_(g / acc.num_processes)


def _check_finite(acc, losses: dict[str, torch.Tensor], step: int, stop: _Stop) -> None:
    """Stop before a non-finite loss reaches the weights; all processes agree on it (and on SIGTERM)."""
    bad = [t for t, v in losses.items() if not torch.isfinite(v.detach())]
    if acc.num_processes > 1:
        import torch.distributed as dist

        flags = torch.tensor([float(bool(bad)), float(stop.requested)], device=acc.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        stop.requested = bool(flags[1])
        if flags[0] and not bad:
            raise TrainingError(f"non-finite loss on another process at step {step}; training stopped, last checkpoint kept")
    if bad:
        values = ", ".join(f"{t}={losses[t].item()}" for t in bad)
        raise TrainingError(
            f"non-finite loss for task {', '.join(bad)} at step {step} ({values}); training stopped and "
            f"the last good checkpoint was kept. Lower train.lr, check the task's labels, or use precision fp32."
        )


def _check_output_dir(cfg: Config, out: Path, resume: bool, main: bool) -> None:
    exists = (out / "last").exists() or (out / "best").exists() or (out / ".last.old").exists()
    if resume:
        if main:  # before any other process looks: put back folders a crash left mid-swap
            recover_directory(out / "last")
            recover_directory(out / "best")
        return
    if not exists:
        return
    if not cfg.output.overwrite:
        raise ConfigError(
            f"output.dir: {out} already holds a run; pass --resume to continue it, choose another "
            f"output.dir, or set output.overwrite=true to replace it"
        )
    if main:
        for name in ("last", "best", "tensorboard", ".last.old", ".best.old", ".last.tmp"):
            if (out / name).exists():
                shutil.rmtree(out / name)
        for name in ("metrics.jsonl", "results.json"):
            (out / name).unlink(missing_ok=True)


