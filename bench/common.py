"""What the benchmark scripts share: the GLUE config they start from, the command-line options and
config overrides of their training runs, a quiet timed training run, the environment every report
records (versions, commit, machine, load), and writing reports."""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GLUE5 = REPO / "configs" / "glue5.yaml"
RESULTS = REPO / "bench" / "results"
GLUE5_TASKS = "sst2,cola,mrpc,stsb,rte"


def setup(threads: int | None) -> None:
    """Offline, quiet tokenizers, and (optionally) a fixed torch thread count."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        import torch

        torch.set_num_threads(threads)


# ---- the command line and config overrides that the training benchmarks share -------------------
# Each adder adds its options in a fixed order, so a script that calls them between its own
# options keeps its --help order and the key order of the `settings` its reports record.


def add_tasks_arg(
    p: argparse.ArgumentParser,
    default: str = GLUE5_TASKS,
    text: str = "tasks of configs/glue5.yaml (comma separated)",
) -> None:
    """Add `--tasks`: the configs/glue5.yaml tasks a benchmark trains on.

    Args:
        p: The script's parser.
        default: Default of --tasks (comma separated).
        text: Help of --tasks.
    """
    p.add_argument("--tasks", default=default, help=text)


def add_run_args(
    p: argparse.ArgumentParser,
    *,
    batch_size: int = 32,
    train_cap: int | None = None,
    unit: str = "rows",
    test_cap: bool = False,
    precision: bool = False,
    lr: float | None = 5e-5,
    lr_help: str | None = None,
    sampling: str | None = "temperature",
    sampling_help: str = "sampling.strategy of the multi-task run",
) -> None:
    """Add the options that shape a training run, in this order: --batch-size, --train-cap,
    --dev-cap (--test-cap), --max-length (default 128), (--precision), --lr and --head-lr (default
    1e-3), --sampling. `run_overrides` turns them into config overrides.

    Args:
        p: The script's parser.
        batch_size: Default of --batch-size.
        train_cap: Default of --train-cap. None keeps every row; with a number, 0 keeps every row
            (`run_overrides` skips a cap of 0).
        unit: What the caps count, for their help ("rows", "sentences").
        test_cap: Add --test-cap too, for a benchmark scored on a test split.
        precision: Add --precision here rather than in `add_output_args` (the order in which
            peft_robust.py records its settings).
        lr: Default of --lr; None leaves out --lr and --head-lr.
        lr_help: Help of --lr.
        sampling: Default of --sampling (sampling.strategy); None leaves it out.
        sampling_help: Help of --sampling.
    """
    p.add_argument("--batch-size", type=int, default=batch_size)
    keep_all = "default all" if train_cap is None else "0: all"
    p.add_argument(
        "--train-cap",
        type=int,
        default=train_cap,
        help=f"training {unit} kept per task (seeded sample; {keep_all})",
    )
    # Caps on the evaluation splits make the scores noisy: they are for smoke runs.
    splits = ("dev", "test") if test_cap else ("dev",)
    for split in splits:
        p.add_argument(
            f"--{split}-cap",
            type=int,
            default=None,
            help=f"{split} {unit} kept per task (default all; only for smoke runs)",
        )
    p.add_argument("--max-length", type=int, default=128)
    if precision:
        add_precision_arg(p)
    if lr is not None:
        p.add_argument("--lr", type=float, default=lr, help=lr_help)
        p.add_argument("--head-lr", type=float, default=1e-3)
    if sampling is not None:
        p.add_argument("--sampling", default=sampling, help=sampling_help)


def add_precision_arg(p: argparse.ArgumentParser) -> None:
    """Add --precision: auto (the default: bf16 autocast where the hardware runs bf16 natively,
    else fp32), bf16 or fp32."""
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])


def add_output_args(
    p: argparse.ArgumentParser,
    stem: str,
    *,
    precision: bool = True,
    threads_in: str = "",
    overrides_for: str | None = "every run",
) -> None:
    """Add, in this order: --precision, --threads, --set, --tag and --results-dir.

    Args:
        p: The script's parser.
        stem: Name of the result files (`<stem><-tag>.json/.md`), for the help of --tag.
        precision: Add --precision (auto, the default, bf16 or fp32).
        threads_in: Where --threads applies, for its help (e.g. " in each run").
        overrides_for: Which runs --set overrides, for its help; None leaves --set out.
    """
    if precision:
        add_precision_arg(p)
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help=f"torch threads{threads_in} (default: torch's choice)",
    )
    if overrides_for is not None:
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"extra config override for {overrides_for}",
        )
    p.add_argument("--tag", default="", help=f"suffix for the result files ({stem}<-tag>.json/.md)")
    p.add_argument("--results-dir", default=str(RESULTS))


def run_overrides(
    args: argparse.Namespace,
    tasks: list[str],
    steps: int,
    seed: int,
    out: Path,
    *,
    sampling: dict[str, Any] | None = None,
    eval_every: int | None = None,
) -> dict[str, Any]:
    """The config overrides of one benchmark training run, from the options of `add_run_args`
    and --precision: a budget of `steps` optimizer steps (no epochs, no accumulation), a quiet log
    in `out`, and the parser's caps (--train-cap, --dev-cap, --test-cap) on every task.

    Args:
        args: The parsed options.
        tasks: The tasks the run trains (the caps apply to each).
        steps: Optimizer steps (train.max_steps).
        seed: The run's seed.
        out: The run's output folder.
        sampling: Keys of the config's sampling section (e.g. {"strategy": ..., "mixed": True}).
        eval_every: Steps between evaluations; by default `steps`: one evaluation, after the last
            step, so that no checkpoint is picked on the dev set.

    Returns:
        Dotted config key -> value, as `glue_config` takes them.
    """
    o: dict[str, Any] = {"seed": seed, "model.max_length": args.max_length}
    o.update({f"sampling.{key}": value for key, value in (sampling or {}).items()})
    o.update(
        {
            "train.max_steps": steps,
            "train.epochs": None,
            "train.batch_size": args.batch_size,
            "train.grad_accum": 1,
            "train.lr": args.lr,
            "train.head_lr": args.head_lr,
            "train.eval_every": eval_every or steps,
            "train.log_every": max(1, steps // 20),
            "train.progress": False,
            "train.precision": args.precision,
            "output.dir": str(out),
            "output.tensorboard": False,
        }
    )
    for split in ("train", "dev", "test"):
        cap = getattr(args, f"{split}_cap", None)  # --test-cap only where the parser has it
        if cap:
            o.update({f"tasks.{t}.data.max_examples.{split}": cap for t in tasks})
    return o


def command_line(script: str, argv: list[str] | None) -> str:
    """The command a report quotes: `python bench/<script>` and this run's arguments."""
    args = sys.argv[1:] if argv is None else argv
    return f"python bench/{script} " + " ".join(shlex.quote(a) for a in args)


def result_stem(name: str, tag: str) -> str:
    """`name`, or `name-tag`: the result files' name without the suffix."""
    return name + (f"-{tag}" if tag else "")


def save_report(
    args: argparse.Namespace, name: str, report: dict[str, Any], markdown: str
) -> None:
    """`write_report` into --results-dir as `<name><-tag>.json/.md` (see `add_output_args`)."""
    write_report(Path(args.results_dir), result_stem(name, args.tag), report, markdown)


def settings_of(args: argparse.Namespace, *skip: str) -> dict[str, Any]:
    """The parsed options a report records: all but where its files go (--tag, --results-dir) and
    the attributes named in `skip`."""
    return {k: v for k, v in vars(args).items() if k not in ("tag", "results_dir", *skip)}


def seed_stats(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value) and count of a result over seeds."""
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def loop_step_seconds(events: list[dict[str, Any]], wall: float, steps: int) -> float:
    """Seconds per optimizer step between the first and the last `train` event of metrics.jsonl:
    the loop alone, evaluation excluded. With fewer than two such events: wall time / steps."""
    train_events = [e for e in events if e["event"] == "train"]
    if len(train_events) < 2:
        return wall / max(steps, 1)
    first, last = train_events[0], train_events[-1]
    return (last["time"] - first["time"]) / (last["step"] - first["step"])


def glue_config(tasks: str, overrides: dict[str, Any], extra: list[str], raw_update: dict[str, Any] | None = None):
    """configs/glue5.yaml restricted to `tasks` (comma separated), with `overrides` then `extra` applied."""
    import yaml

    from promptmux.config import config_from_dict

    raw = yaml.safe_load(GLUE5.read_text(encoding="utf-8"))
    names = tasks.split(",")
    unknown = sorted(set(names) - set(raw["tasks"]))
    if unknown:
        raise SystemExit(f"--tasks: {unknown} not in {GLUE5.name} ({', '.join(raw['tasks'])})")
    raw["tasks"] = {t: raw["tasks"][t] for t in names}
    raw.update(raw_update or {})
    items = [f"{k}={json.dumps(v)}" for k, v in overrides.items()] + list(extra)
    return config_from_dict(raw, items, base_dir=GLUE5.parent)


def timed_train(cfg, callbacks: list[Any] | None = None) -> tuple[Any, float, list[dict[str, Any]], str]:
    """Train with stdout captured: (result, wall seconds, metrics.jsonl events, captured log)."""
    from promptmux.train.trainer import train

    log = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(log):
        result = train(cfg, callbacks=callbacks or ())
    wall = time.perf_counter() - t0
    if result.stopped == "sigterm":
        # The trainer stops cleanly on SIGTERM (checkpoint kept) and returns; a benchmark must not
        # score that shortened run as if it were complete, so the signal ends the benchmark too.
        raise SystemExit(f"stopped by SIGTERM after {result.steps} steps; this run is not recorded")
    events = [json.loads(line) for line in (Path(cfg.output.dir) / "metrics.jsonl").read_text().splitlines()]
    return result, wall, events, log.getvalue()


def write_report(folder: Path, stem: str, report: dict[str, Any], markdown: str) -> None:
    """`<stem>.json` and `<stem>.md` in `folder`; the markdown is printed too."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (folder / f"{stem}.md").write_text(markdown, encoding="utf-8")
    print(markdown)


def environment() -> dict[str, Any]:
    """Versions, git revision (and whether the tree was dirty), CPU/GPU, threads and load average."""
    import torch

    info: dict[str, Any] = {"python": platform.python_version()}
    for module in ("torch", "transformers", "accelerate", "peft"):
        with contextlib.suppress(ImportError):
            info[module] = importlib.import_module(module).__version__
    try:
        git = ["git", "-C", str(REPO)]
        run = functools.partial(subprocess.run, capture_output=True, text=True, check=False)
        info["git"] = run([*git, "rev-parse", "--short", "HEAD"]).stdout.strip()
        info["git_dirty"] = bool(run([*git, "status", "--porcelain"]).stdout.strip())
    except OSError:
        info["git"], info["git_dirty"] = "unknown", None
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    from promptmux.precision import native_bf16

    device = "cuda" if torch.cuda.is_available() else "cpu"
    info.update(
        cpu=cpu,
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        native_bf16=native_bf16(device),  # what precision auto resolves to: bf16 if True, else fp32
        cores=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        load_average_at_start=os.getloadavg(),
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
    return info


def describe(env: dict[str, Any]) -> str:
    """One markdown line naming the machine, its load, the versions and the commit."""
    load = ", ".join(f"{x:.1f}" for x in env["load_average_at_start"])
    versions = ", ".join(f"{m} {env[m]}" for m in ("transformers", "accelerate", "peft") if m in env)
    dirty = " (uncommitted changes)" if env.get("git_dirty") else ""
    native = env.get("native_bf16")  # absent from reports written before it was recorded
    bf16 = "" if native is None else f", {'native' if native else 'no native'} bf16"
    return (
        f"Machine: {env['gpu'] or env['cpu']}, {env['cores']} cores (load average at start {load}){bf16}, "
        f"torch {env['torch']} ({env['torch_threads']} threads), {versions}, git {env['git']}{dirty}, {env['date']}."
    )
