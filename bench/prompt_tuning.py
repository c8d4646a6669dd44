"""Soft prompts with a frozen MiniLM vs full fine-tuning, on real GLUE data (issue 3).

Every method trains one multi-task model on the same capped GLUE training rows, in mixed-task
batches, and is scored on the full GLUE dev sets (GLUE test labels are not public) after its last
step (no best-of-evaluations picking on the dev set):

    full       everything trains (configs/glue5.yaml's recipe)
    shallow    frozen backbone; per-task prompt tuning (L vectors at the input) + heads
    deep       frozen backbone; per-task, per-layer prompts (hidden states at each layer's input) + heads
    prefix     frozen backbone; per-task key and value prefixes in every layer (P-tuning v2) + heads
    late       frozen backbone; per-task prompt vectors entering at the middle layer (late prompt tuning) + heads
    generated  frozen backbone; prompts generated from task embeddings + heads
    shared     frozen backbone; shared prompt x per-task low-rank factor + heads (optional)
    head       frozen backbone, no prompt: the heads alone (optional; what the prompts add is the rest)
    shallow-res, deep-res, prefix-res, late-res
               the same kinds with `reparam: residual` (one small shared network with a skip
               connection shapes every prompt vector; --reparam-hidden wide)
    late-inst, prefix-inst, prefix-res-inst
               late prompts or prefixes plus each row's own term made from its text where the prompt
               acts (`instance_hidden`; --instance-hidden wide)

Text-pair tasks (MRPC, RTE) use `--pair-pooling` in every method: `pair` by default, i.e. the head
reads [u, v, |u-v|, u*v] of the two texts' token means, which a frozen sentence encoder serves far
better than the mean over both texts (1,500 steps, shallow prompts: MRPC F1 80.2 -> 82.7, RTE
52.3 -> 55.2; bench/results/prompt_tuning-long.md vs prompt_tuning-pair.md).

Deep prompts take 3e-3 by default (2,000 steps: mean gain 0.54 vs 0.05 at 3e-2;
bench/results/prompt_tuning-s2000-deep-3e-3-merged.md vs prompt_tuning-s2000.md). Late prompts take 1e-2: the best of three
500-step pilots (mean normalized gain 0.44 at 1e-2, 0.27 at 3e-3, 0.23 at 3e-2;
bench/results/prompt_tuning-pilot-late-*.md). They enter at the middle layer (3 of MiniLM's 6) unless
--late-layer says otherwise: at 2,000 steps layers 1, 2 and 3 scored 0.57, 0.53 and 0.56
(bench/results/prompt_tuning-s2000-late-layer*.md, prompt_tuning-s2000-late.md). They take 32 vectors,
the most inside the 0.2% budget with the heads (0.194%): at 5,000 steps 0.79 ± 0.11 against 0.69 ± 0.05
with 20 (bench/results/prompt_tuning-s5000-L32.md, prompt_tuning-s5000-all.md). Training them longer does not
help: 32 vectors at 10,000 steps score 0.72 against 0.85 at 5,000 (seed 42, against the seed-42 reference;
prompt_tuning-s10000-late-L32-seed42.md).

late-inst (20 vectors by default and an instance term of width 16, 0.189%) wants a smaller rate for its network
than for the vectors: at 2,000 steps 0.68 with --network-lr 1e-3 against 0.48 at the vectors' 1e-2
(and 0.56 for 20 static vectors, 0.66 for 32; prompt_tuning-s2000-late-inst-L20-r16*.md). At 5,000
steps, seed 42: 0.83 against the seed-42 reference, where 20 static vectors score 0.65 and 32 score
0.85 (prompt_tuning-s5000-late-inst-seed42.md): the term is worth 12 vectors, not more, so far. At 2,000
steps 24 vectors with a term of width 12 (0.195%) score 0.75, the best of the budget there, and a
network rate of 3e-4 scores 0.63 (prompt_tuning-s2000-late-inst-L24-r12-n1e-3.md, -L20-r16-n3e-4.md).

The networks of the *-res and *-inst methods train at --network-lr, 1e-3 by default, below the
vectors' rates: at 5,000 steps prefixes under the residual network score a mean gain of 1.03 ± 0.13
over three seeds (0.996% of the parameters; per seed 1.17, 1.02, 0.90) against 0.94 ± 0.06 with
the network at the prefix rate 3e-3, and late prompts under it 0.84 (seed 42) against 0.38 at the
late rate 1e-2, both against the three-seed full reference (prompt_tuning-s5000-n1e-3.md,
prompt_tuning-s5000-all.md). Instance-aware prefixes with the residual network (14 vectors inside
1%) score 0.92 there (seed 42): the term does not add to the prefixes. Inside 0.2%, prefixes of 2
vectors under a residual network of width 12 at 1e-3 (`--length 2 --reparam-hidden 12`, 0.195%)
score 0.87 ± 0.04 over three seeds, against 0.79 ± 0.11 for late prompts of 32 vectors
(prompt_tuning-s5000-shallow-n1e-3.md); at 2,000 steps with the network at 3e-3 they scored 0.55.

Normalized gain per task: (score - majority-class score) / (full fine-tuning - majority-class).

Usage (from the repository root; data under ../shared/data or $PROMPTMUX_DATA):

    .venv/bin/python bench/prompt_tuning.py                     # the default budget
    .venv/bin/python bench/prompt_tuning.py --methods shallow --steps 200 --tag try1
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from common import RESULTS, add_precision_arg, describe, environment, glue_config, setup, timed_train, write_report


FROZEN = {"model.freeze.strategy": "backbone"}
PAIR_TASKS = ("mrpc", "stsb", "rte")  # the configs/glue5.yaml tasks with a text_b
METHODS: dict[str, dict[str, Any]] = {
    "full": {"model.prompts.kind": "none"},
    "shallow": {**FROZEN, "model.prompts.kind": "shallow"},
    "deep": {**FROZEN, "model.prompts.kind": "deep"},
    "prefix": {**FROZEN, "model.prompts.kind": "prefix"},
    "late": {**FROZEN, "model.prompts.kind": "late"},
    "generated": {**FROZEN, "model.prompts.kind": "generated"},
    "shared": {**FROZEN, "model.prompts.kind": "shared", "model.prompts.rank": 4},
    "head": {**FROZEN, "model.prompts.kind": "none"},  # reference: what the heads alone make of frozen features
}
PROMPTLESS = ("full", "head")  # methods without soft prompts (no prompt rate or length)
RESIDUAL = "-res"  # suffix of the methods whose prompts take `reparam: residual`
METHODS.update({f"{k}{RESIDUAL}": {**METHODS[k], "model.prompts.reparam": "residual"} for k in ("shallow", "deep", "prefix", "late")})
# Instance-aware prompts (the width from --instance-hidden; 16 marks the setting)
METHODS.update({f"{k}-inst": {**METHODS[k], "model.prompts.instance_hidden": 16} for k in ("late", "prefix", "prefix-res")})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default="sst2,mrpc,rte", help="tasks of configs/glue5.yaml (comma separated)")
    p.add_argument("--methods", default="full,shallow,deep,generated")
    p.add_argument("--steps", type=int, default=360, help="optimizer steps per method")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--train-cap", type=int, default=4000, help="training rows kept per task (seeded sample)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument(
        "--length", default="20,prefix=15,prefix-res-inst=14,late=32,late-res=20,late-inst=20",
        help="prompt length L: one, or per method as --prompt-lr (the defaults: the most inside 0.2% or 1% of MiniLM)",
    )
    p.add_argument("--init", default="vocab", choices=["vocab", "random"])
    p.add_argument("--full-lr", type=float, default=1e-4, help="encoder rate for full fine-tuning")
    p.add_argument(
        "--prompt-lr", default="shallow=1e-1,deep=3e-3,prefix=3e-3,late=1e-2,generated=3e-3,shared=1e-1",
        help="model.prompts.lr for the prompt methods: one rate, or per method (shallow=3e-2,deep=1e-2); "
        "a *-res method not named takes its kind's rate",
    )
    p.add_argument("--head-lr", default="1e-2,full=1e-3", help="train.head_lr: one rate, or per method as --prompt-lr")
    p.add_argument("--reparam-hidden", type=int, default=16, help="bottleneck width of the residual network (*-res methods)")
    p.add_argument(
        "--network-lr", type=float, default=1e-3,
        help="model.prompts.network_lr of the *-res and *-inst methods (reports before it trained the networks at the prompt rate)",
    )
    p.add_argument("--instance-hidden", type=int, default=16, help="bottleneck width of the instance term (*-inst methods)")
    p.add_argument("--late-layer", type=int, default=None, help="model.prompts.layer of the late methods (default: the middle layer)")
    p.add_argument("--warmup", type=float, default=0.06)
    p.add_argument(
        "--pair-pooling", default="pair", choices=["pair", "mean", "cls"],
        help="pooling of the text-pair tasks (mrpc, rte, stsb) in every method; pair: [u, v, |u-v|, u*v]",
    )
    add_precision_arg(p)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1, help="torch threads (one: fastest when other jobs share the cores)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override for every method")
    p.add_argument(
        "--positions", default="keep", choices=["keep", "shift"],
        help="ablation: real tokens keep positions 0..n-1 (promptmux), or shift behind the prompt as peft does",
    )
    p.add_argument("--tag", default="", help="suffix for the result files (prompt_tuning<-tag>.json/.md)")
    p.add_argument(
        "--merge", default=None, metavar="A.json,B.json=m1+m2",
        help="no training: one report from reports of the same settings whose methods ran in parallel processes "
        "(FILE=m1+m2 takes only those methods of FILE)",
    )
    p.add_argument(
        "--full-from", default=None, metavar="REPORT.json",
        help="score gains against the `full` run of an earlier report (same settings but --steps and --methods), "
        "e.g. prompts trained longer than full fine-tuning on the same rows",
    )
    p.add_argument("--results-dir", default=str(RESULTS), help="folder for the .json and .md results")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace, method: str, out: Path):
    overrides = {
        "seed": args.seed,
        "model.max_length": args.max_length,
        "sampling.mixed": True,
        "sampling.strategy": "uniform",
        "train.max_steps": args.steps,
        "train.epochs": None,
        "train.batch_size": args.batch_size,
        "train.lr": args.full_lr,
        "train.head_lr": per_method(args.head_lr, method),
        "train.warmup_ratio": args.warmup,
        "train.eval_every": args.steps,  # one evaluation, after the last step
        "train.log_every": max(1, args.steps // 10),
        "train.progress": False,
        "train.precision": args.precision,
        "output.dir": str(out),
        "output.tensorboard": False,
        **{f"tasks.{t}.data.max_examples.train": args.train_cap for t in args.tasks.split(",")},
        **{f"tasks.{t}.pooling": args.pair_pooling for t in args.tasks.split(",") if t in PAIR_TASKS},
        **METHODS[method],
    }
    if method not in PROMPTLESS:  # (the per-method rates and lengths name only prompt methods)
        overrides.update({
            "model.prompts.length": int(per_method(str(args.length), method)),
            "model.prompts.init": args.init,
            "model.prompts.lr": per_method(args.prompt_lr, method),
            "model.prompts.reparam_hidden": args.reparam_hidden,
        })
    if args.late_layer is not None and PROMPT_ONLY["late_layer"](method):
        overrides["model.prompts.layer"] = args.late_layer
    if PROMPT_ONLY["instance_hidden"](method):
        overrides["model.prompts.instance_hidden"] = args.instance_hidden
    if args.network_lr is not None and PROMPT_ONLY["network_lr"](method):
        overrides["model.prompts.network_lr"] = args.network_lr
    return glue_config(args.tasks, overrides, args.set)


def per_method(spec: str, method: str, recorded: bool = False) -> float:
    """`3e-2` for every method, or `1e-2,full=1e-3`, or `20,prefix=15`.

    A method not named takes its kind's value (`prefix-res` takes `prefix`'s, `late-inst` `late`'s), else the item
    without a name; with neither it is an error. Runs recorded before that rule (`recorded`, when
    reading a report's settings) gave such a method the last value named.
    """
    items = [item.strip() for item in spec.split(",")]
    named = {k.strip(): float(v) for k, v in (item.split("=") for item in items if "=" in item)}
    plain = [float(item) for item in items if "=" not in item]
    for name in (method, method.split("-")[0]):
        if name in named:
            return named[name]
    if plain:
        return plain[-1]
    if recorded:
        return list(named.values())[-1]
    raise SystemExit(f"{spec!r} names no value for method {method} and has no value without a name (e.g. 1e-2,{spec})")


def shift_positions() -> None:
    """Ablation: [CLS] at 0, prompts at 1..L, real tokens from L+1 on (peft's layout)."""
    import torch

    from promptmux.model.prompts.base import SoftPrompt

    def position_ids(self, n, device):
        L = self.length
        real = torch.arange(n, device=device)
        real = torch.where(real > 0, real + L, real)
        return torch.cat([torch.arange(1, L + 1, device=device), real]).unsqueeze(0)

    SoftPrompt.position_ids = position_ids


def majority_scores(cfg) -> dict[str, dict[str, float]]:
    """Each task's dev metrics when every row gets the most frequent training label."""
    from promptmux.eval.metrics import compute_metrics
    from promptmux.tasks.build import load_task

    scores = {}
    for name, task in cfg.tasks.items():
        data = load_task(name, task)
        top = Counter(ex.label for ex in data.split("train")).most_common(1)[0][0]
        dev = data.split("dev")
        scores[name] = compute_metrics(task.type, [top] * len(dev), [ex.label for ex in dev], data.labels)
    return scores


def run_method(args: argparse.Namespace, method: str, root: Path) -> dict[str, Any]:
    from promptmux.model.backbone import count_parameters

    result, wall, events, log = timed_train(build_config(args, method, root / method))
    trainable, total = count_parameters(result.model)
    prompt = result.model.prompt
    train_events = [e for e in events if e["event"] == "train"]
    return {
        "metrics": result.last_metrics,
        "trainable": trainable,
        "total": total,
        "trainable_share_pct": 100 * trainable / total,
        "prompt_parameters": 0 if prompt is None else sum(p.numel() for p in prompt.parameters()),
        "wall_s": wall,
        "threads": args.threads,
        "tokens_per_s": float(sum(e["tokens_per_s"] for e in train_events) / max(1, len(train_events))),
        "loss_first": train_events[0]["loss"] if train_events else None,
        "loss_last": train_events[-1]["loss"] if train_events else None,
        "log": log.strip().splitlines()[:1],
    }


def gains(results: dict[str, Any], majority: dict[str, dict[str, float]], metric_of: dict[str, str]) -> None:
    """Adds normalized gains to every method (needs the `full` method)."""
    if "full" not in results:
        return
    for method, r in results.items():
        per_task = {}
        for t, metric in metric_of.items():
            full = results["full"]["metrics"][t][metric]
            base = majority[t][metric]
            score = r["metrics"][t][metric]
            per_task[t] = None if abs(full - base) < 1e-9 else (score - base) / (full - base)
        r["gain"] = per_task
        valid = [g for g in per_task.values() if g is not None]
        r["gain_mean"] = sum(valid) / len(valid) if valid else None


def precision_text(report: dict[str, Any]) -> str:
    """How the runs computed: `--precision` as given, and what `auto` resolved to on this machine."""
    asked = report["settings"].get("precision", "bf16")  # reports before --precision ran bf16
    native = report["environment"].get("native_bf16")
    if asked == "auto" and native is not None:
        return "bf16 autocast (native bf16, precision auto)" if native else "fp32 (no native bf16, precision auto)"
    return "bf16 autocast" if asked == "bf16" else "fp32"


def markdown(report: dict[str, Any]) -> str:
    tasks = list(report["metric_of"])
    metric_of = report["metric_of"]
    lines = [
        "# Soft prompts (frozen MiniLM) vs full fine-tuning on GLUE",
        "",
        f"Command: `{report['command']}`",
        "",
        f"Tasks: {', '.join(f'{t} ({metric_of[t]})' for t in tasks)}; dev sets in full; "
        f"{report['settings']['train_cap']} training rows per task at most; {report['settings']['steps']} steps of "
        f"{report['settings']['batch_size']} rows in mixed-task batches; {precision_text(report)}; scored after the last step.",
        "",
        "| method | " + " | ".join(f"{t} {metric_of[t]}" for t in tasks) + " | " + " | ".join(f"{t} gain" for t in tasks)
        + " | mean gain | trainable | share | wall |",
        "|---" * (2 * len(tasks) + 5) + "|",
    ]
    maj = report["majority"]
    lines.append(
        "| majority class | " + " | ".join(f"{maj[t][metric_of[t]]:.1f}" for t in tasks) + " | "
        + " | ".join("0.00" for _ in tasks) + " | 0.00 | 0 | 0% | - |"
    )
    for method, r in report["results"].items():
        g = r.get("gain", {})

        def fmt(x):
            return "n/a" if x is None else f"{x:.2f}"

        sd = r.get("metrics_sd")
        name = f"{method} ({len(r['seeds'])} seeds)" if sd else method
        scores = [f"{r['metrics'][t][metric_of[t]]:.1f}" + (f" ±{sd[t][metric_of[t]]:.1f}" if sd else "") for t in tasks]
        mean_gain = fmt(r.get("gain_mean")) + (f" ±{r['gain_mean_sd']:.2f}" if "gain_mean_sd" in r else "")
        threads = r.get("threads_per_seed", ())
        if len(set(threads)) > 1:  # a mean over thread counts is no one run's time: each seed's instead
            wall = " / ".join(f"{w / 60:.1f}" for w in r["wall_s_per_seed"]) + f" min ({' / '.join(map(str, threads))} threads)"
        else:
            wall = f"{r['wall_s'] / 60:.1f} min"
        lines.append(
            f"| {name} | " + " | ".join(scores) + " | "
            + " | ".join(fmt(g.get(t)) for t in tasks) + f" | {mean_gain} | {r['trainable']:,} | "
            f"{r['trainable_share_pct']:.3f}% | {wall} |"
        )
    pooled_seeds = [f"{m}: seeds {', '.join(map(str, r['seeds']))}" for m, r in report["results"].items() if r.get("metrics_sd")]
    if pooled_seeds:
        text = f"Methods over several seeds show the mean ± the standard deviation over seeds ({'; '.join(pooled_seeds)})"
        reference = "; the reference, full fine-tuning, is its mean over seeds" if report["results"].get("full", {}).get("metrics_sd") else ""
        lines += ["", text + "; gains are of the mean scores" + reference + "."]
    machines = report.get("machines", ())
    if len(machines) > 1:  # a merged report: each part ran on its own, maybe with other threads or commits
        lines += ["", "Machines, per part:", *(f"- {m['file']}: {describe(m['environment'])}" for m in machines)]
    else:
        lines += ["", describe(report["environment"])]
    lines += [
        "",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in report["settings"].items()),
    ]
    if report.get("notes"):
        lines += ["", *report["notes"]]
    return "\n".join(lines) + "\n"


PER_METHOD = ("prompt_lr", "head_lr", "length")  # settings given per method (see per_method)
RUN_ONLY = ("methods", "threads", "merge", "full_from")  # settings of the process, not of what a method computes
# Settings added after reports were recorded, with the value that matches how those reports ran.
# (no method had a residual network, late prompts or an instance term then)
LATER_SETTINGS = {"reparam_hidden": 16, "late_layer": None, "instance_hidden": 16, "network_lr": None}
# Settings only some prompt methods read, with the methods they reach: a full reference may differ
# in them, and merged parts may too (the merged report records each reached method's own value).
PROMPT_ONLY = {
    "late_layer": lambda m: METHODS[m].get("model.prompts.kind") == "late",
    "reparam_hidden": lambda m: "model.prompts.reparam" in METHODS[m],
    "instance_hidden": lambda m: "model.prompts.instance_hidden" in METHODS[m],
    "network_lr": lambda m: "model.prompts.reparam" in METHODS[m] or "model.prompts.instance_hidden" in METHODS[m],
}


def prompt_only_value(recorded: Any, method: str) -> Any:
    """A PROMPT_ONLY setting's value for one method: as recorded, or its item of a merged `m=v,...`."""
    if not (isinstance(recorded, str) and "=" in recorded):
        return recorded
    items = dict(item.split("=") for item in recorded.split(","))
    value = items.get(method, "None")
    if value == "None":
        return None
    return int(value) if value.isdigit() else float(value)


def recorded_settings(report: dict[str, Any]) -> dict[str, Any]:
    """A report's settings, with settings that are newer than the report at their defaults."""
    return {**LATER_SETTINGS, **report["settings"]}


def merge(args: argparse.Namespace) -> dict[str, Any]:
    """One report from parts that ran different methods, or other seeds, with otherwise equal settings.

    A part is `FILE` (all its methods) or `FILE=m1+m2` (only those). Settings given per method
    (PER_METHOD) may differ between parts: the report records each method's own value. A method
    that comes from several parts with different seeds is pooled: its scores are the means over the
    seeds, with their standard deviations (see `pooled`). Full fine-tuning over several seeds makes
    its mean the reference of every gain, so one seed's luck on a small dev set does not set the scale.
    """
    entries = [entry.partition("=") for entry in args.merge.split(",")]
    files = [f for f, _, _ in entries]
    parts = [json.loads(Path(f).read_text(encoding="utf-8")) for f in files]

    def same(settings: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in settings.items() if k not in (*RUN_ONLY, "seed", *PER_METHOD, *PROMPT_ONLY)}

    runs: dict[str, dict[int, dict[str, Any]]] = {}  # method -> seed -> result
    own: dict[str, dict[str, float]] = {key: {} for key in PER_METHOD}
    read: dict[str, dict[str, Any]] = {}  # PROMPT_ONLY setting -> the value each method it reaches ran with
    first = same(recorded_settings(parts[0]))
    for (f, _, wanted), part in zip(entries, parts):
        recorded = recorded_settings(part)
        if same(recorded) != first:
            raise SystemExit(f"--merge: {f} was run with other settings than {files[0]}")
        taken = wanted.split("+") if wanted else list(part["results"])
        missing = sorted(set(taken) - set(part["results"]))
        if missing:
            raise SystemExit(f"--merge: {f} has no method {', '.join(missing)}")
        seed = part["settings"]["seed"]
        twice = sorted(m for m in taken if seed in runs.get(m, {}))
        if twice:
            raise SystemExit(f"--merge: {f} repeats methods of an earlier part: {', '.join(twice)} (seed {seed})")
        for m in taken:
            # (results from before `threads` was recorded per method ran at their report's setting)
            runs.setdefault(m, {})[seed] = {"threads": part["settings"]["threads"], **part["results"][m]}
            for key in ("head_lr",) if m in PROMPTLESS else PER_METHOD:
                if key in part["settings"]:
                    value = per_method(str(part["settings"][key]), m, recorded=True)
                    if own[key].setdefault(m, value) != value:
                        raise SystemExit(f"--merge: {f} ran {m} with {key} {value:g}, an earlier part with {own[key][m]:g}")
            for key, reaches in PROMPT_ONLY.items():
                if reaches(m):
                    value = prompt_only_value(recorded[key], m)
                    if read.setdefault(key, {}).setdefault(m, value) != value:
                        raise SystemExit(f"--merge: {f} ran {m} with {key} {value}, an earlier part with {read[key][m]}")
    order = [m for m in METHODS if m in runs]  # the table's usual order, full first
    results = {m: pooled(runs[m]) for m in order}
    metric_of = parts[0]["metric_of"]
    gains(results, parts[0]["majority"], metric_of)
    for r in results.values():
        if len(r.get("seeds", ())) > 1 and "full" in results:
            each = {seed: {"metrics": metrics} for seed, metrics in zip(r["seeds"], r["per_seed"])}
            gains({"full": results["full"], **each}, parts[0]["majority"], metric_of)
            r["gain_mean_per_seed"] = [each[seed]["gain_mean"] for seed in r["seeds"]]
            r["gain_mean_sd"] = statistics.stdev(r["gain_mean_per_seed"])
    seeds = sorted({seed for by_seed in runs.values() for seed in by_seed})
    settings = {**parts[0]["settings"], "methods": ",".join(order), "seed": ",".join(map(str, seeds)) if len(seeds) > 1 else seeds[0]}
    for key, values in own.items():
        if values:
            settings[key] = ",".join(f"{m}={values[m]:g}" for m in order if m in values)
    for key, values in read.items():
        distinct = set(values.values())
        settings[key] = distinct.pop() if len(distinct) == 1 else ",".join(f"{m}={values[m]}" for m in order if m in values)
    report = {
        **parts[0],
        "command": " ; ".join(p["command"] for p in parts) + f" ; python bench/prompt_tuning.py --merge {args.merge}",
        "settings": settings,
        "results": results,
        "environment": {**parts[0]["environment"], "parallel_processes": len(parts)},
        "machines": [m for f, part in zip(files, parts) for m in machines_of(f, part)],
    }
    stem = "prompt_tuning" + (f"-{args.tag}" if args.tag else "")
    write_report(Path(args.results_dir), stem, report, markdown(report))
    return report


def machines_of(file: str, part: dict[str, Any]) -> list[dict[str, Any]]:
    """The machine of each run behind a report: its own, or a merged report's list of its parts'."""
    return part.get("machines") or [{"file": Path(file).name, "environment": part["environment"]}]


def pooled(by_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One method's result over seeds: every metric's mean (`metrics`) and standard deviation
    (`metrics_sd`), the seeds' own metrics (`per_seed`), the mean wall time (and each seed's, with
    its thread count, which may differ between seeds). One seed: as it was."""
    if len(by_seed) == 1:
        return next(iter(by_seed.values()))
    seeds = list(by_seed)
    first = by_seed[seeds[0]]
    per_seed = [by_seed[s]["metrics"] for s in seeds]
    metrics = {t: {k: statistics.fmean(m[t][k] for m in per_seed) for k in first["metrics"][t]} for t in first["metrics"]}
    sd = {t: {k: statistics.stdev(m[t][k] for m in per_seed) for k in first["metrics"][t]} for t in first["metrics"]}
    return {
        **{k: first[k] for k in ("trainable", "total", "trainable_share_pct") if k in first},
        "metrics": metrics,
        "metrics_sd": sd,
        "seeds": seeds,
        "per_seed": per_seed,
        "wall_s": statistics.fmean(by_seed[s]["wall_s"] for s in seeds),
        "wall_s_per_seed": [by_seed[s]["wall_s"] for s in seeds],
        "threads_per_seed": [by_seed[s].get("threads") for s in seeds],
    }


def full_reference(args: argparse.Namespace, methods: list[str]) -> tuple[dict[str, Any], list[str]]:
    """`--full-from`: the `full` result of an earlier report whose settings match but for the budget."""
    if not args.full_from:
        return {}, []
    if "full" in methods:
        raise SystemExit("--full-from: the full method comes from the report; leave it out of --methods")
    report = json.loads(Path(args.full_from).read_text(encoding="utf-8"))
    if "full" not in report.get("results", {}):
        raise SystemExit(f"--full-from: {args.full_from} has no full method")
    ignored = (*RUN_ONLY, "steps", *PER_METHOD, *PROMPT_ONLY)  # the rows, their rates and budget
    mine = {k: v for k, v in vars(args).items() if k not in ("tag", "results_dir", *ignored)}
    theirs = {k: v for k, v in recorded_settings(report).items() if k not in ignored}
    differ = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
    if differ:
        raise SystemExit(f"--full-from: {args.full_from} was run with other settings: {', '.join(differ)}")
    steps = report["settings"]["steps"]
    note = (
        f"- full: from {Path(args.full_from).name} ({steps} steps; the other methods here ran {args.steps} steps "
        "over the same capped training rows)"
    )
    return {"full": report["results"]["full"]}, [note]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.merge:
        return merge(args)
    setup(args.threads)
    if args.positions == "shift":
        shift_positions()
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    reference, notes = full_reference(args, methods)
    command = " ".join(["python bench/prompt_tuning.py", *(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))])
    env = environment()
    results: dict[str, Any] = dict(reference)
    report: dict[str, Any] = {}
    stem = "prompt_tuning" + (f"-{args.tag}" if args.tag else "")
    with tempfile.TemporaryDirectory(prefix="prompt-bench-") as tmp:
        first = build_config(args, methods[0], Path(tmp) / "probe")
        metric_of = {t: first.main_metric(t) for t in first.tasks}
        majority = majority_scores(first)
        for method in methods:
            print(f"[{time.strftime('%H:%M:%S')}] {method} ...", flush=True)
            results[method] = run_method(args, method, Path(tmp))
            r = results[method]
            scores = ", ".join(f"{t} {r['metrics'][t][metric_of[t]]:.1f}" for t in metric_of)
            print(f"  {scores} | trainable {r['trainable_share_pct']:.3f}% | {r['wall_s'] / 60:.1f} min", flush=True)
            gains(results, majority, metric_of)
            report = {
                "command": command,
                "settings": {k: v for k, v in vars(args).items() if k not in ("tag", "results_dir", "merge")},
                "metric_of": metric_of,
                "majority": majority,
                "results": results,
                "environment": env,
                "notes": notes,
            }
            # Written after every method, so that a long run that stops keeps what it measured.
            write_report(Path(args.results_dir), stem, report, markdown(report))
    return report


if __name__ == "__main__":
    main()
