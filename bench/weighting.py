"""Loss weighting strategies on the five GLUE tasks: dev scores (mean ± std over seeds) and step time.

Every strategy trains the same multi-task MiniLM with the same budget (steps, batch, rows, learning
rates, mixed-task batches so that gradient methods see several tasks per step), once per seed, and
is scored on the GLUE dev sets (test labels are not public) after its last step (no picking of the
best evaluation on the dev set). Reported per strategy: mean ± std over seeds of each task's main
metric and of the aggregate (the unweighted mean, the GLUE score); the step-time ratio to equal
weighting (seconds per optimizer step from the training log, evaluation excluded), measured in the
same run; and, per task, whether the strategy beats equal weighting by more than two standard
deviations (mean difference > 2 x the larger of the two strategies' std over seeds). Only those
cells may be called better than equal weighting.

Usage (from the repository root; data under ../shared/data or $PROMPTMUX_DATA):

    .venv/bin/python bench/weighting.py                                  # 6 strategies x 3 seeds
    .venv/bin/python bench/weighting.py --methods equal,pcgrad --seeds 1 --steps 20 --tag try
    .venv/bin/python bench/weighting.py --set train.lr=3e-5               # extra override for all runs

Seeds can run as parallel processes (one thread each; on a shared 2-core machine two 1-thread
processes get far more done than one 2-thread process) and be merged into one report:

    for k in 0 1 2; do .venv/bin/python bench/weighting.py --seeds 1 --seed-offset $k --threads 1 --tag part$k & done; wait
    .venv/bin/python bench/weighting.py --merge bench/results/weighting-part0.json,bench/results/weighting-part1.json,...

Strategy options can be given per method as `name:key=value;key=value`, e.g.
`--methods equal,cagrad:c=0.2,dwa:window=50`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import yaml

DEFAULT_METHODS = "equal,uncertainty,dwa,famo,pcgrad,cagrad"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_tasks_arg(p)
    p.add_argument("--methods", default=DEFAULT_METHODS, help="weighting strategies, optionally name:key=value;...")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed-offset", type=int, default=0, help="first seed index (seeds are 1000 + index)")
    p.add_argument("--merge", default=None, help="comma-separated weighting-*.json reports to merge (no training)")
    p.add_argument("--overhead-rounds", type=int, default=0,
                   help="instead of scoring: time every method for --overhead-steps steps, in this many interleaved rounds")
    p.add_argument("--overhead-steps", type=int, default=20)
    p.add_argument("--overhead", default=None,
                   help="with --merge: a weighting-overhead*.json whose interleaved step-time ratios replace the runs' own")
    p.add_argument("--no-reference", action="store_true",
                   help="allow runs without plain `equal` (only to --merge with reports that have it)")
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps per run")
    common.add_run_args(p, sampling_help="sampling.strategy (batches are always mixed-task)")
    common.add_output_args(p, "weighting")
    return p.parse_args(argv)


def parse_method(spec: str) -> tuple[str, str, dict[str, Any]]:
    """`cagrad:c=0.2;rescale=1` -> (label, strategy, options)."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(";")):
        key, _, value = item.partition("=")
        options[key] = yaml.safe_load(value)
    return spec, name, options


def build_config(args: argparse.Namespace, strategy: str, options: dict[str, Any], seed: int, out: Path):
    tasks = args.tasks.split(",")
    sampling = {"mixed": True, "strategy": args.sampling}
    overrides = common.run_overrides(args, tasks, args.steps, seed, out, sampling=sampling)
    weighting = {"weighting": {"strategy": strategy, "options": options}}
    return common.glue_config(args.tasks, overrides, args.set, weighting)


def run_one(args: argparse.Namespace, strategy: str, options: dict[str, Any], seed: int, out: Path) -> dict[str, Any]:
    from promptmux.eval.metrics import aggregate_score

    cfg = build_config(args, strategy, options, seed, out)
    result, wall, events, _ = common.timed_train(cfg)
    train_events = [e for e in events if e["event"] == "train"]
    weights = [e["weights"] for e in events if e["event"] == "weights"]
    step_s = common.loop_step_seconds(events, wall, result.steps)
    scores = {t: m[cfg.main_metric(t)] for t, m in result.last_metrics.items()}
    return {
        "scores": scores,
        "aggregate": aggregate_score(scores),
        "step_s": step_s,
        "wall_s": wall,
        "loss_last": train_events[-1]["loss"] if train_events else None,
        "weights_first": weights[0] if weights else None,
        "weights_last": weights[-1] if weights else None,
        "weights_mean": {t: statistics.fmean(w[t] for w in weights if t in w) for t in scores} if weights else None,
    }


def summarize(runs: list[dict[str, Any]], tasks: list[str]) -> dict[str, Any]:
    return {
        "tasks": {t: common.seed_stats([r["scores"][t] for r in runs]) for t in tasks},
        "aggregate": common.seed_stats([r["aggregate"] for r in runs]),
        "step_s": statistics.median(r["step_s"] for r in runs),
    }


def compare(summary: dict[str, Any], reference: str) -> None:
    """Adds the step-time ratio and the 2-std verdicts against the reference (equal weighting)."""
    ref = summary[reference]
    for s in summary.values():
        s["step_time_ratio"] = s["step_s"] / ref["step_s"]
        s["better_than_equal"] = {}
        for key in [*s["tasks"], "aggregate"]:
            a = s["tasks"][key] if key != "aggregate" else s["aggregate"]
            b = ref["tasks"][key] if key != "aggregate" else ref["aggregate"]
            margin = 2 * max(a["std"], b["std"])
            s["better_than_equal"][key] = bool(a["mean"] - b["mean"] > margin) if margin > 0 else None


def markdown(report: dict[str, Any]) -> str:
    tasks = list(report["metric_of"])
    metric_of = report["metric_of"]
    st = report["settings"]
    lines = [
        "# Loss weighting strategies on GLUE (MiniLM)",
        "",
        f"Command: `{report['command']}`",
        "",
        (
            f"Tasks: {', '.join(f'{t} ({metric_of[t]})' for t in tasks)}; {st['seeds']} seeds; {st['steps']} steps of "
            f"{st['batch_size']} rows in mixed-task batches ({st['sampling']} sampling); train rows per task: "
            f"{st['train_cap'] or 'all'}; dev rows per task: {st['dev_cap'] or 'all'}; {st['precision']}; scored after "
            f"the last step. Cells: mean ± std over seeds. **Bold**: better than equal weighting by more than "
            f"2 x the larger std (the only wins the table supports)."
        ),
        "",
        "| strategy | " + " | ".join(f"{t} {metric_of[t]}" for t in tasks) + " | aggregate | step time (x equal) |",
        "|---" * (len(tasks) + 3) + "|",
    ]
    def cell(s: dict[str, Any], key: str, value: dict[str, float]) -> str:
        text = f"{value['mean']:.1f} ± {value['std']:.1f}"
        return f"**{text}**" if s.get("better_than_equal", {}).get(key) else text

    for label, s in report["summary"].items():
        lines.append(
            f"| {label} | " + " | ".join(cell(s, t, s["tasks"][t]) for t in tasks) + f" | {cell(s, 'aggregate', s['aggregate'])} | "
            f"{s['step_time_ratio']:.2f} ({s['step_s']:.3f} s) |"
        )
    env = report["environment"]
    lines += [
        "",
        common.describe(env),
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in st.items()),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    common.setup(args.threads)
    from promptmux.weighting import WEIGHTINGS

    if args.merge:
        return merge(args)
    methods = [parse_method(m) for m in args.methods.split(",")]
    unknown = sorted({name for _, name, _ in methods} - set(WEIGHTINGS.names()))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(WEIGHTINGS.names())}")
    if not args.no_reference and not any(name == "equal" and not opts for _, name, opts in methods):
        raise SystemExit("--methods: include plain `equal`, the reference of every comparison")
    command = common.command_line("weighting.py", argv)
    env = common.environment()
    if args.overhead_rounds:
        return overhead(args, methods, command, env)
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in methods}
    with tempfile.TemporaryDirectory(prefix="weighting-bench-") as tmp:
        probe = build_config(args, "equal", {}, 0, Path(tmp) / "probe")
        metric_of = {t: probe.main_metric(t) for t in probe.tasks}
        # Seeds outermost, strategies inner: machine load drifts, and each seed's strategies then
        # share the same conditions for the step-time ratio.
        for seed in range(args.seed_offset, args.seed_offset + args.seeds):
            for label, name, options in methods:
                print(f"[{time.strftime('%H:%M:%S')}] seed {seed} {label} ...", flush=True)
                r = run_one(args, name, options, 1000 + seed, Path(tmp) / f"{label}-{seed}".replace(":", "_").replace(";", "_"))
                runs[label].append(r)
                print(f"  aggregate {r['aggregate']:.2f} | " + ", ".join(f"{t} {v:.1f}" for t, v in r["scores"].items())
                      + f" | {r['step_s']:.3f} s/step | {r['wall_s'] / 60:.1f} min", flush=True)
    settings = common.settings_of(args, "merge")
    return finish(args, command, settings, metric_of, runs, env)


def finish(args, command: str, settings: dict[str, Any], metric_of: dict[str, str], runs: dict[str, list], env: dict[str, Any],
           overhead_file: str | None = None) -> dict[str, Any]:
    summary = {label: summarize(rs, list(metric_of)) for label, rs in runs.items()}
    if "equal" in summary:
        compare(summary, "equal")
    else:  # a --no-reference part: compared once merged with a report that has `equal`
        for s in summary.values():
            s["step_time_ratio"], s["better_than_equal"] = float("nan"), {}
    if overhead_file:
        import json

        measured = json.loads(Path(overhead_file).read_text(encoding="utf-8"))
        for label, s in summary.items():
            ratio = measured["ratio_to_equal"].get(label)
            s["step_time_ratio"] = ratio if ratio is not None else float("nan")
            s["step_s"] = statistics.median(measured["step_s"][label]) if label in measured["step_s"] else float("nan")
        settings = dict(settings, step_time_source=f"interleaved rounds ({Path(overhead_file).name})")
    report = {
        "command": command,
        "settings": settings,
        "metric_of": metric_of,
        "summary": summary,
        "runs": runs,
        "environment": env,
    }
    common.save_report(args, "weighting", report, markdown(report))
    return report


def overhead(args: argparse.Namespace, methods, command: str, env: dict[str, Any]) -> dict[str, Any]:
    """Step time of every method relative to equal weighting, measured in interleaved rounds.

    A scoring run's own step times are taken minutes apart, so machine-load drift between the
    strategies' runs ends up in their ratio. Here every round runs each method for a few steps
    back to back, each ratio is taken within its round, and the median over rounds is reported.
    """
    import copy

    short = copy.copy(args)
    short.steps, short.dev_cap = args.overhead_steps, 8  # the one final evaluation is not timed anyway
    per_round: dict[str, list[float]] = {label: [] for label, _, _ in methods}
    with tempfile.TemporaryDirectory(prefix="weighting-overhead-") as tmp:
        for r in range(args.overhead_rounds):
            for label, name, options in methods:
                out = Path(tmp) / f"{label}-{r}".replace(":", "_").replace(";", "_")
                per_round[label].append(run_one(short, name, options, 1000 + r, out)["step_s"])
            print(f"[{time.strftime('%H:%M:%S')}] round {r}: "
                  + ", ".join(f"{lb} {v[-1]:.3f}s" for lb, v in per_round.items()), flush=True)
    ratios = {label: statistics.median(v / e for v, e in zip(vals, per_round["equal"])) for label, vals in per_round.items()}
    report = {"command": command, "environment": env, "step_s": per_round, "ratio_to_equal": ratios,
              "settings": {"steps_per_round": args.overhead_steps, "rounds": args.overhead_rounds,
                           "batch_size": args.batch_size, "threads": args.threads, "precision": args.precision}}
    lines = ["# Weighting strategies: step time relative to equal weighting (interleaved rounds)", "",
             f"Command: `{command}`", "",
             (f"{args.overhead_rounds} rounds; each round trains every method for {args.overhead_steps} steps of "
              f"{args.batch_size} rows (mixed-task batches of the GLUE tasks) back to back; ratio = median over rounds "
              "of (method s/step) / (equal s/step) in the same round."), "",
             "| strategy | s/step per round | ratio to equal |", "|---|---|---:|"]
    lines += [f"| {lb} | {', '.join(f'{v:.3f}' for v in per_round[lb])} | {ratios[lb]:.2f} |" for lb in per_round]
    lines += ["", common.describe(env)]
    common.save_report(args, "weighting-overhead", report, "\n".join(lines) + "\n")
    return report


def merge(args: argparse.Namespace) -> dict[str, Any]:
    """One report from the per-seed reports of parallel processes (same settings but the seeds)."""
    import json

    parts = [json.loads(Path(f).read_text(encoding="utf-8")) for f in args.merge.split(",")]
    first = parts[0]

    def keep(settings: dict[str, Any]) -> dict[str, Any]:
        ignored = ("seeds", "seed_offset", "methods", "no_reference", "overhead_rounds", "overhead_steps", "overhead")
        return {k: v for k, v in settings.items() if k not in ignored}

    for f, part in zip(args.merge.split(","), parts):
        if keep(part["settings"]) != keep(first["settings"]):
            raise SystemExit(f"--merge: {f} was run with other settings than {args.merge.split(',')[0]}")
    # Runs of one method may come from several parts (seeds in parallel processes, or a method
    # added later); every method keeps all of its seeds.
    runs: dict[str, list[dict[str, Any]]] = {}
    for part in parts:
        for label, rs in part["runs"].items():
            runs.setdefault(label, []).extend(rs)
    if "equal" not in runs:
        raise SystemExit("--merge: no report has runs of plain `equal`, the reference of every comparison")
    seeds = {label: len(rs) for label, rs in runs.items()}
    settings = dict(first["settings"], seeds=max(seeds.values()), seed_offset=0, methods=",".join(runs), seeds_per_method=seeds)
    command = " ; ".join(p["command"] for p in parts) + " ; python bench/weighting.py --merge ..."
    env = dict(first["environment"], parallel_processes=len(parts))
    report = finish(args, command, settings, first["metric_of"], runs, env, overhead_file=args.overhead)
    return report


if __name__ == "__main__":
    main()
