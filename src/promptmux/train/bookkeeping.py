"""What every training loop does around an evaluation: share the main process's dev metrics,
keep the best-model bookkeeping, write `best/` and `last/`, decide early stopping, and write
results.json at the end. The encoder loop (train/trainer.py) and the text-to-text loop
(t2t/trainer.py) differ in how they train and evaluate, not in this."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promptmux.config.schema import Config
from promptmux.fsutil import atomic_directory, atomic_write_text
from promptmux.train.logger import RunLogger

Metrics = dict[str, dict[str, float]]


def record_evaluation(cfg: Config, acc, state: dict[str, Any], logger: RunLogger, metrics: Metrics, score: float | None) -> tuple[Metrics, bool]:
    """Share the main process's `metrics`/`score` with every process, update `state`'s best score,
    step and patience counter, and log the evaluation; returns (metrics, improved)."""
    if acc.num_processes > 1:
        import torch.distributed as dist

        box = [metrics, score]
        dist.broadcast_object_list(box, src=0)
        metrics, score = box
    # No dev data anywhere: the latest model is the best we know.
    improved = score is None or state["best_score"] is None or score > state["best_score"]
    if improved:
        state["best_score"], state["best_step"], state["evals_since_best"] = score, state["step"], 0
    else:
        state["evals_since_best"] += 1
    if acc.is_main_process and metrics:
        from promptmux.eval.metrics import format_table

        logger.event("eval", state["step"], metrics=metrics, aggregate=score)
        logger.message(f"eval @ step {state['step']}: aggregate {score:.2f}{'  (best)' if improved else ''}\n"
                       + format_table(metrics, {t: cfg.main_metric(t) for t in metrics}))
    return metrics, improved


def checkpoint_after_evaluation(
    cfg: Config, acc, out: Path, state: dict[str, Any], improved: bool,
    write_files: Callable[[Path], None], save_last: Callable[[], None], logger: RunLogger,
) -> bool:
    """Write `best/` when the model improved and `last/` always; True when early stopping says stop."""
    if improved:
        if acc.is_main_process:
            with atomic_directory(out / "best") as tmp:
                write_files(tmp)
        acc.wait_for_everyone()
    save_last()
    patience = cfg.train.early_stopping_patience
    if patience is not None and state["evals_since_best"] >= patience:
        logger.message(f"early stopping at step {state['step']}: no improvement in {patience} evaluations")
        return True
    return False


@dataclass
class Outcome:
    """What a loop reports at its end: the best and latest dev metrics, and why it stopped
    ("completed", "early_stopping" or "sigterm")."""

    best: Metrics = field(default_factory=dict)
    last: Metrics = field(default_factory=dict)
    stopped: str = "completed"


def after_step(
    cfg: Config, acc, out: Path, state: dict[str, Any], steps: int, stop_requested: bool,
    evaluate: Callable[[], tuple[Metrics, bool]], sampler: Any,
    write_files: Callable[[Path], None], save_last: Callable[[], None], logger: RunLogger, outcome: Outcome,
) -> bool:
    """The end of an optimizer step (state["step"] already counts it): evaluate when due (then feed
    the sampler, keep the best metrics, write best/ and last/, maybe stop early); on SIGTERM save
    last/ without evaluating. True when the loop must stop; `outcome` says why."""
    step = state["step"]
    if step % cfg.train.eval_every == 0 or step == steps:
        outcome.last, improved = evaluate()
        sampler.observe({t: m[cfg.main_metric(t)] for t, m in outcome.last.items()})
        if improved:
            outcome.best = outcome.last
        if checkpoint_after_evaluation(cfg, acc, out, state, improved, write_files, save_last, logger):
            outcome.stopped = "early_stopping"
            return True
    elif stop_requested:
        save_last()  # a preempted job has seconds to exit: save the state, skip the evaluation
    if stop_requested:
        outcome.stopped = "sigterm"
        logger.message(f"SIGTERM: checkpoint saved at step {step}; continue with --resume")
        return True
    return False


def write_results(acc, out: Path, state: dict[str, Any], outcome: Outcome) -> None:
    """results.json (main process), then wait for every process."""
    if acc.is_main_process:
        summary = {
            "steps": state["step"], "best_step": state["best_step"], "best_score": state["best_score"],
            "best_metrics": outcome.best, "last_metrics": outcome.last, "stopped": outcome.stopped,
        }
        atomic_write_text(out / "results.json", json.dumps(summary, indent=2))
    acc.wait_for_everyone()
