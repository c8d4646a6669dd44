"""The text-to-text training loop (`model.kind: decoder`; `promptmux.train.trainer.train` hands
such configs here). Reads top to bottom: setup, loop, evaluate, checkpoint.

A compact loop of its own rather than a branch inside `train/trainer.py`: most of what the encoder
loop threads through each step (heads, per-task gradients for PCGrad and friends, adversarial
embeddings, distillation, adaptive prompt selection) has no decoder counterpart, and a second
model kind woven through all of it would make both paths harder to read. What the two share is
reused as it is: accelerate (devices, DDP), bf16 autocast, task samplers and length-bucketed
streams, loss weightings, the learning-rate schedule, atomic checkpoints and `--resume`, run logs,
SIGTERM handling and the non-finite-loss guard.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptmux.config.load import config_to_dict
from promptmux.config.schema import Config
from promptmux.data.samplers import build_sampler
from promptmux.data.streams import TaskStream
from promptmux.errors import DataError
from promptmux.precision import autocast, resolve_precision
from promptmux.t2t import data as t2t_data
from promptmux.t2t.bundle import lm_source, read_trained_parts, write_t2t_bundle
from promptmux.t2t.infer import evaluate
from promptmux.t2t.model import T2TModel, build_model, build_optimizer, load_lm
from promptmux.t2t.tasks import T2TTask, build_tasks
from promptmux.tasks.spec import TaskData
from promptmux.train import checkpoint as ckpt
from promptmux.train.bookkeeping import Outcome, after_step, record_evaluation, write_results
from promptmux.train.logger import RunLogger
from promptmux.train.setup import build_scheduler, total_steps

# The encoder loop's run-level helpers, shared so both loops stop, guard and clean up alike.
from promptmux.train.trainer import (
    TrainResult,
    _average_weighting_grads,
    _check_finite,
    _check_output_dir,
    _Stop,
)
from promptmux.weighting import build_weighting


@dataclass
class T2TData:
    """Tasks, their raw examples, and the encoded training rows (prompt + answer)."""

    tasks: list[T2TTask]
    raw: dict[str, TaskData]
    train: dict[str, t2t_data.T2TEncoded]

    def split(self, name: str) -> dict[str, list]:
        return {t.name: self.raw[t.name].split(name) for t in self.tasks}


def prepare_t2t_data(cfg: Config, tokenizer) -> T2TData:
    """Read every task and tokenize its training rows."""
    from promptmux.tasks.build import load_task

    raw = {name: load_task(name, t) for name, t in cfg.tasks.items()}
    tasks = build_tasks(cfg, raw)
    train = {}
    for task in tasks:
        rows = raw[task.name].split("train")
        if not rows:
            raise DataError(f"tasks.{task.name}: the train split is empty")
        train[task.name] = t2t_data.encode_training(task, rows, tokenizer, cfg.model.max_length)
    return T2TData(tasks, raw, train)


def train_t2t(cfg: Config, resume: bool = False) -> TrainResult:
    """Train the decoder model described by `cfg` on all its tasks; returns the result and model."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from transformers import AutoTokenizer

    from promptmux.model.backbone import PACKAGED_MODELS, resolve_backbone

    cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()
    # A batch without some task leaves that task's soft prompt unused in the step; DDP must be told.
    acc = Accelerator(cpu=cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    world, rank = acc.num_processes, acc.process_index
    precision = resolve_precision(cfg.train.precision, acc.device, warn=acc.is_main_process)
    out = Path(cfg.output.dir)
    _check_output_dir(cfg, out, resume, acc.is_main_process)
    acc.wait_for_everyone()
    set_seed(cfg.seed + rank)

    # ---- setup: data, model, optimizer, schedule, sampling, weighting
    base = resolve_backbone(cfg.model.backbone)
    tokenizer = AutoTokenizer.from_pretrained(base)
    data = prepare_t2t_data(cfg, tokenizer)
    names = [t.name for t in data.tasks]
    # A bundle without lm/ (LoRA, frozen-LM prompts) loads its base from here: the packaged alias as
    # written (it resolves anywhere), otherwise the folder as an absolute path.
    alias = cfg.model.backbone in PACKAGED_MODELS
    settings = {"max_length": cfg.model.max_length, "precision": precision,
                "base": cfg.model.backbone if alias else str(base.resolve())}
    folder = ckpt.find_checkpoint(out / "last") if resume else None
    if folder is not None:
        ckpt.check_resume_config(folder, config_to_dict(cfg))
    # A resumed run whose LM trains reads the LM from its checkpoint; otherwise from the base.
    lm = load_lm(str(lm_source(folder, settings) if folder is not None else base))
    model = build_model(lm, names, cfg.model.prompts, cfg.model.lora, cfg.model.freeze.strategy)
    if folder is not None:
        read_trained_parts(model, folder)
    weighting = build_weighting(cfg.weighting.strategy, names, {n: cfg.tasks[n].weight for n in names}, cfg.weighting.options)
    steps = total_steps(cfg, {t: len(e) for t, e in data.train.items()}, world)
    streams = {
        t: TaskStream(enc.lengths, cfg.train.batch_size * world, seed=cfg.seed * 1000 + i,
                      buckets=cfg.train.length_buckets, bucket_size=cfg.train.bucket_size)
        for i, (t, enc) in enumerate(data.train.items())
    }
    sampler = build_sampler(cfg.sampling.strategy, {t: len(e) for t, e in data.train.items()}, cfg.seed,
                            cfg.sampling.temperature, cfg.sampling.options)
    sampler.set_total_steps(steps)
    state: dict[str, Any] = {"step": 0, "best_score": None, "best_step": None, "evals_since_best": 0, "tokens": 0}
    if folder is not None:
        ckpt.restore_loop_state(folder, world, state, sampler, streams, weighting)
    optimizer = build_optimizer(cfg, model, weighting)
    scheduler = build_scheduler(cfg, optimizer, steps)
    model, optimizer = acc.prepare(model, optimizer)
    raw_model: T2TModel = acc.unwrap_model(model)
    if folder is not None:
        ckpt.restore_optimizer(folder, optimizer, scheduler, rank)

    total = sum(p.numel() for p in raw_model.parameters())
    trainable = sum(p.numel() for p in raw_model.parameters() if p.requires_grad)
    logger = RunLogger(out, steps, state["step"], acc.is_main_process, cfg.output.tensorboard, cfg.train.progress)
    logger.message(
        f"tasks: {', '.join(f'{t}({len(e)})' for t, e in data.train.items())} | steps: {steps} | processes: {world} | "
        f"decoder: {type(raw_model.lm).__name__} | trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"
    )
    config_dict = config_to_dict(cfg)
    pad_id = t2t_data.pad_id_of(tokenizer)

    def write_files(target: Path) -> None:
        write_t2t_bundle(target, raw_model, tokenizer, data.tasks, settings, config_dict)

    def save_last() -> None:
        ckpt.save_checkpoint(
            acc, out / "last", write_files, optimizer, scheduler, weighting,
            ckpt.loop_state(state, sampler, streams),
        )

    def evaluate() -> tuple[dict[str, dict[str, float]], bool]:
        return _evaluate(cfg, acc, raw_model, data, tokenizer, state, logger, precision)

    def next_batch() -> t2t_data.T2TBatch:
        if cfg.sampling.mixed:
            counts = sampler.counts(cfg.train.batch_size, state["step"])
        else:
            counts = {sampler.sample(state["step"]): cfg.train.batch_size}
        parts = [(t, data.train[t], streams[t].take(c * world)[rank * c : (rank + 1) * c]) for t, c in counts.items()]
        return t2t_data.collate(parts, pad_id)

    # ---- loop
    model.train()
    outcome = Outcome()
    running: dict[str, float] = {}
    window: dict[str, list[float]] = {}
    weights: dict[str, float] = {}
    t0, tokens0 = time.perf_counter(), state["tokens"]
    trainable_params = [p for p in model.parameters() if p.requires_grad] + list(weighting.parameters())
    with _Stop() as stop, contextlib.closing(logger):
        while state["step"] < steps:
            step = state["step"]
            for micro in range(cfg.train.grad_accum):
                batch = next_batch().to(acc.device)
                last_micro = micro == cfg.train.grad_accum - 1
                with contextlib.nullcontext() if last_micro else acc.no_sync(model):
                    with autocast(acc.device, precision):
                        losses = model(**batch.model_inputs())
                    _check_finite(acc, losses, step + 1, stop)
                    loss, weights = weighting(losses, step)
                    acc.backward(loss / cfg.train.grad_accum)
                state["tokens"] += batch.n_tokens * world
                for t, v in losses.items():
                    value = v.item()
                    running[t] = value if t not in running else 0.9 * running[t] + 0.1 * value
                    window.setdefault(t, []).append(value)
            _average_weighting_grads(acc, weighting)
            if cfg.train.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(trainable_params, cfg.train.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] = step = step + 1
            logger.progress(step, running, cfg.train.log_every)

            if step % cfg.train.log_every == 0 or step == steps:
                elapsed = time.perf_counter() - t0
                logger.event("train", step, loss={t: float(np.mean(v)) for t, v in window.items()}, weights=weights,
                             lr=scheduler.get_last_lr()[0], tokens_per_s=(state["tokens"] - tokens0) / max(elapsed, 1e-9))
                window.clear()
                t0, tokens0 = time.perf_counter(), state["tokens"]

            if after_step(cfg, acc, out, state, steps, stop.requested, evaluate, sampler, write_files, save_last, logger, outcome):
                break
    write_results(acc, out, state, outcome)
    return TrainResult(out, state["step"], state["best_step"], state["best_score"], outcome.best, outcome.last, outcome.stopped, raw_model)


def _evaluate(cfg: Config, acc, model: T2TModel, data: T2TData, tokenizer, state: dict, logger: RunLogger, precision: str):
    """Dev metrics on the main process, shared with the others; best-model bookkeeping."""
    from promptmux.eval.metrics import aggregate_score

    metrics: dict[str, dict[str, float]] = {}
    score = None
    if acc.is_main_process:
        dev = {t: rows for t, rows in data.split("dev").items() if rows}
        if dev:
            metrics = evaluate(model, data.tasks, dev, tokenizer, cfg.model.max_length, cfg.train.eval_batch_size, precision)
            score = aggregate_score({t: m[cfg.main_metric(t)] for t, m in metrics.items()})
    return record_evaluation(cfg, acc, state, logger, metrics, score)
