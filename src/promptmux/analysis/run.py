"""`promptmux analyze`: train with the affinity recorder, report, run single-task baselines."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from promptmux.analysis.affinity import AffinityRecorder
from promptmux.analysis.report import write_report
from promptmux.config import load_config
from promptmux.config.schema import Config
from promptmux.errors import ConfigError


def analyze_command(
    config: Path, overrides: list[str], every: int, probe_size: int, out: Path, baselines: bool
) -> str:
    """The command line that reproduces a run (written at the top of affinity.md)."""
    args = [
        "promptmux",
        "analyze",
        str(config),
        *overrides,
        "--every",
        str(every),
        "--probe-size",
        str(probe_size),
        "--out",
        str(out),
    ]
    return shlex.join(args + (["--single-task-baselines"] if baselines else []))


def run_analysis(
    config: Path,
    overrides: list[str],
    every: int,
    probe_size: int,
    out: Path,
    single_task_baselines: bool = False,
) -> dict[str, Any]:
    """Train CONFIG with an `AffinityRecorder`, write the report into `out`, and with
    `single_task_baselines` train each task alone (same config, step budget and batch size, into
    `out/single/<task>`) and add the multi − single delta of each task's main metric.

    Everything is checked before any model loads. The affinity report is written as soon as the
    multi-task run ends, and rewritten with the baselines, so a failing baseline loses nothing.
    Returns what affinity.json holds (empty on non-main processes of a distributed run).
    """
    from promptmux.train.trainer import train

    cfg = load_config(config, overrides)
    # The recorder checks --every and --probe-size; its probe rows follow the config's seed.
    recorder = AffinityRecorder(every=every, probe_size=probe_size, seed=cfg.seed)
    _check(cfg, config, every)
    singles = _single_configs(config, overrides, cfg, out) if single_task_baselines else {}
    command = analyze_command(config, overrides, every, probe_size, out, single_task_baselines)

    result = train(cfg, callbacks=[recorder])
    payload: dict[str, Any] = {}
    if recorder.main_process:
        summary = {**recorder.summary(), "steps": result.steps, "stopped": result.stopped}
        payload = write_report(out, summary, None, command, str(config))
    if not singles or result.stopped == "sigterm":  # a stop request also skips the baselines
        return payload
    # Same step budget: with train.epochs the multi-task run's step count covers all tasks' rows,
    # so each single-task run is given that count explicitly.
    steps = recorder.total_steps
    baselines: dict[str, dict[str, Any]] = {}
    for task, extra in singles.items():
        single_cfg = load_config(config, [*extra, f"train.max_steps={steps}", "train.epochs=null"])
        single = train(single_cfg)
        metric = cfg.main_metric(task)
        multi_value = result.best_metrics.get(task, {}).get(metric)
        single_value = single.best_metrics.get(task, {}).get(metric)
        delta = None if multi_value is None or single_value is None else multi_value - single_value
        baselines[task] = {
            "metric": metric,
            "multi": multi_value,
            "single": single_value,
            "delta": delta,
            "steps": single.steps,
            "run_dir": str(single.out_dir),
        }
    if recorder.main_process:
        payload = write_report(out, summary, baselines, command, str(config))
    return payload


def _check(cfg: Config, config: Path, every: int) -> None:
    if len(cfg.tasks) < 2:
        names = ", ".join(cfg.tasks)
        raise ConfigError(
            f"promptmux analyze needs at least two tasks; {config} has {len(cfg.tasks)} ({names}) "
            "after overrides"
        )
    if cfg.train.max_steps is not None and every > cfg.train.max_steps:
        raise ConfigError(
            f"--every {every} is more than train.max_steps ({cfg.train.max_steps}): nothing would "
            "be recorded"
        )


def _single_configs(
    config: Path, overrides: list[str], cfg: Config, out: Path
) -> dict[str, list[str]]:
    """Per task, the overrides that keep only that task and send its run to out/single/<task>.

    Each is validated now (e.g. a weighting option naming another task fails here, not after the
    multi-task run), and an existing run folder is refused unless output.overwrite is set.
    """
    singles: dict[str, list[str]] = {}
    for task in cfg.tasks:
        folder = out / "single" / task
        extra = [
            *overrides,
            *(f"tasks.{other}=null" for other in cfg.tasks if other != task),
            f"output.dir={folder}",
        ]
        try:
            load_config(config, extra)
        except ConfigError as e:
            raise ConfigError(
                f"--single-task-baselines: the config restricted to task {task!r} is invalid: {e}"
            ) from None
        if not cfg.output.overwrite and ((folder / "last").exists() or (folder / "best").exists()):
            raise ConfigError(
                f"--single-task-baselines: {folder} already holds a run; choose another --out or "
                "set output.overwrite=true"
            )
        singles[task] = extra
    return singles
