"""Summaries and the markdown report of bench/peft_robust.py (see its docstring for the method)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from common import describe, seed_stats

LABELS = {
    "full": "full fine-tuning",
    "lora_shared": "LoRA shared",
    "lora_per_task": "LoRA per task",
    "fgm": "full + FGM",
    "student": "student, labels only",
    "student_distill": "student, distilled",
}


def aggregate(scores: dict[str, float]) -> float:
    from promptmux.eval.metrics import aggregate_score

    return aggregate_score(scores)


def same_metrics(a: dict[str, float], b: dict[str, float]) -> bool:
    """Metric dicts equal, NaN included (a constant prediction has no Pearson r)."""
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a
    )


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def median_of(rs: list[dict[str, Any]], key: str) -> float | None:
    """Median of `key` over runs, None when a run lacks it."""
    values = [r.get(key) for r in rs]
    return statistics.median(values) if all(v is not None for v in values) else None


def summarize_training(rs: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [
        r["adversarial_step_time_ratio"]
        for r in rs
        if r.get("adversarial_step_time_ratio") is not None
    ]
    return {
        "seeds": len(rs),
        "tasks": {t: seed_stats([r["scores"][t] for r in rs]) for t in rs[0]["scores"]},
        "mean": seed_stats([aggregate(r["scores"]) for r in rs]),
        "step_s": statistics.median(r["step_s"] for r in rs),
        "wall_s": statistics.median(r["wall_s"] for r in rs),
        "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in rs),
        "gpu_peak_mib": statistics.median(r["gpu_peak_mib"] for r in rs)
        if "gpu_peak_mib" in rs[0]
        else None,
        # Training steps alone (bench/peft_robust.py TrainingMemory); absent in older reports.
        "train_peak_rss_mib": median_of(rs, "train_peak_rss_mib"),
        "state_mib": median_of(rs, "state_mib"),
        "trainable": rs[0]["trainable"],
        "total": rs[0]["total"],
        "lora_trainable": rs[0]["lora_trainable"],
        "adapter_bytes": rs[0]["adapter_bytes"],
        "model_bytes": rs[0]["model_bytes"],
        "adversarial_step_time_ratio": statistics.fmean(ratios) if ratios else None,
    }


def summarize_added(rs: list[dict[str, Any]]) -> dict[str, Any]:
    task = rs[0]["task"]
    main = rs[0]["main_metric"]
    old = list(rs[0]["old_before"])
    return {
        "seeds": len(rs),
        "task": task,
        "metric": main[task],
        "method": rs[0]["method"],
        "score": seed_stats([r["new_dev"].get(main[task], math.nan) for r in rs]),
        "old_before": {t: seed_stats([r["old_before"][t][main[t]] for r in rs]) for t in old},
        "old_after": {
            t: seed_stats([r["old_after"].get(t, {}).get(main[t], math.nan) for r in rs]) for t in old
        },
        "unchanged": {
            t: all(same_metrics(r["old_after"].get(t, {}), r["old_before"][t]) for r in rs)
            for t in old
        },
        "old_skipped": rs[0]["old_skipped"],
        "trainable": rs[0]["trainable"],
        "total": rs[0]["total"],
        "trainable_parts": rs[0]["trainable_parts"],
        "steps": rs[0]["steps"],
        "train_rows": rs[0]["train_rows"],
        "wall_s": statistics.median(r["wall_s"] for r in rs),
        "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in rs),
    }


def summarize(runs: dict[str, list[dict[str, Any]]], metric_of: dict[str, str]) -> dict[str, Any]:
    """Per run: scores (mean ± std over seeds) and costs; differences to full fine-tuning."""
    out: dict[str, Any] = {}
    for name, rs in runs.items():
        if rs:
            out[name] = summarize_added(rs) if name == "added" else summarize_training(rs)
    full = out.get("full")
    if full is not None:
        for name, s in out.items():
            if name not in ("added", "base"):  # same task set as full: comparable means
                s["mean_vs_full"] = s["mean"]["mean"] - full["mean"]["mean"]
                s["step_time_vs_full"] = s["step_s"] / full["step_s"]
                s["peak_vs_full"] = s["peak_rss_mib"] / full["peak_rss_mib"]
    return out


# ---- markdown -----------------------------------------------------------------------------------


def row(cells: list[Any]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def header(cells: list[str]) -> list[str]:
    return [row(cells), "|---" * len(cells) + "|"]


def cell(value: dict[str, float], seeds: int) -> str:
    return f"{value['mean']:.1f} ± {value['std']:.1f}" if seeds > 1 else f"{value['mean']:.1f}"


def size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} KB"


def sign(x: float) -> str:
    return f"{x:+.1f}"


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def stored(s: dict[str, Any]) -> str:
    """What the bundle stores of the run's task-specific encoder weights."""
    files = s["adapter_bytes"]
    if not files:
        return f"- (one model.safetensors, {size(s['model_bytes'])})"
    if list(files) == ["shared"]:
        return f"adapters/shared: {size(files['shared'])} for all tasks"
    return f"adapters/&lt;task&gt;: {size(max(files.values()))} each ({len(files)} files)"


def scores(s: dict[str, Any], tasks: list[str]) -> list[str]:
    """The tasks' cells and the mean's."""
    return [cell(s["tasks"][t], s["seeds"]) for t in tasks] + [cell(s["mean"], s["seeds"])]


def lora_section(rep: dict[str, Any], tasks: list[str]) -> list[str]:
    summ, metric_of, st = rep["summary"], rep["metric_of"], rep["settings"]
    names = [n for n in ("full", "lora_shared", "lora_per_task") if n in summ]
    lines = [
        "## Full fine-tuning vs LoRA",
        "",
        (
            f"LoRA r={st['lora_r']}, alpha {st['lora_alpha']:g}, on query and value, LoRA lr "
            f"{st['lora_lr']:g} (full fine-tuning: encoder lr {st['lr']:g}); heads lr "
            f"{st['head_lr']:g} in both. Stored per task: the files that hold the task's encoder "
            "weights (a fully fine-tuned task needs its own model.safetensors)."
        ),
        "",
        *header(
            ["run", *(f"{t} {metric_of[t]}" for t in tasks), "mean", "Δ mean vs full"]
            + ["trainable (share)", "LoRA params", "stored per task", "peak RSS MiB"]
            + ["training-steps peak RSS MiB", "params + grads + optimizer MiB", "s/step"]
            + ["wall min"]
        ),
    ]
    for n in names:
        s = summ[n]
        share = f"{s['trainable']:,} ({100 * s['trainable'] / s['total']:.2f}%)"
        peak = f"{s['peak_rss_mib']:.0f}"
        if s.get("gpu_peak_mib") is not None:
            peak += f" (GPU {s['gpu_peak_mib']:.0f})"
        lines.append(
            row(
                [LABELS[n], *scores(s, tasks), sign(s["mean_vs_full"]), share]
                + [f"{s['lora_trainable']:,}", stored(s), peak, mib(s.get("train_peak_rss_mib"))]
                + [mib(s.get("state_mib")), f"{s['step_s']:.3f}", minutes(s["wall_s"])]
            )
        )
    full = summ["full"]
    lines += ["", "Aims of issue 7:", ""]
    for n in names[1:]:
        s = summ[n]
        near = "met" if s["mean_vs_full"] >= -1.0 else "not met"
        # The training steps' own peak when measured (the process peak is mostly what every run
        # does alike: loading, encoding, evaluation, saving); else the process peak.
        measured = s.get("train_peak_rss_mib") and full.get("train_peak_rss_mib")
        key = "train_peak_rss_mib" if measured else "peak_rss_mib"
        lower = "met" if s[key] < full[key] else "not met"
        big = max(s["adapter_bytes"].values()) if s["adapter_bytes"] else 0
        small = "met" if 0 < big < 1e6 else "not met"
        lines.append(
            f"- {LABELS[n]}: mean within 1 point of full fine-tuning: {near} "
            f"({sign(s['mean_vs_full'])}); adapter file under 1 MB: {small} ({size(big)}); lower "
            f"peak memory ({'training steps' if key == 'train_peak_rss_mib' else 'process'}): "
            f"{lower} ({s[key]:.0f} vs {full[key]:.0f} MiB, x{s[key] / full[key]:.2f})."
        )
    return lines


def fgm_section(rep: dict[str, Any], tasks: list[str]) -> list[str]:
    summ, metric_of, st = rep["summary"], rep["metric_of"], rep["settings"]
    lines = [
        "## FGM on vs off",
        "",
        (
            f"FGM (train.adversarial.method=fgm; epsilon {st['fgm_epsilon']:g}: the L2 norm of "
            "each row's perturbation over its real tokens' embedding outputs; adversarial loss "
            "weight 1) vs the same full fine-tuning without it. Step time x off: s/step of the "
            "run / s/step of FGM off (the loop alone, from the train events' clocks). The "
            "trainer's ratio: (clean + adversarial time) / clean time of the perturbed "
            "micro-batches, mean over log intervals."
        ),
        "",
        *header(
            ["run", *(f"{t} {metric_of[t]}" for t in tasks), "mean", "Δ mean vs off", "s/step"]
            + ["step time x off", "trainer's adversarial.step_time_ratio", "wall min"]
        ),
    ]
    for n, label in (("full", "FGM off"), ("fgm", "FGM on")):
        s = summ[n]
        ratio = s.get("adversarial_step_time_ratio")
        lines.append(
            row(
                [label, *scores(s, tasks), sign(s["mean_vs_full"]), f"{s['step_s']:.3f}"]
                + [f"{s['step_time_vs_full']:.2f}", f"{ratio:.2f}" if ratio else "-"]
                + [minutes(s["wall_s"])]
            )
        )
    return lines


def distill_section(rep: dict[str, Any], tasks: list[str]) -> list[str]:
    summ, metric_of, st = rep["summary"], rep["metric_of"], rep["settings"]
    layers = st["student_layers"]
    lines = [
        f"## Distilled {layers}-layer student vs the same student trained directly",
        "",
        (
            f"Student: the first {layers} layers of the same MiniLM checkpoint, full fine-tuning "
            "at the teacher's rates and budget; distilled: distill.teacher = the full fine-tuning "
            "bundle of the same seed (6 layers, after its last step), temperature "
            f"{st['distill_temperature']:g}, alpha {st['distill_alpha']:g}."
        ),
        "",
        *header(
            ["run", "layers", *(f"{t} {metric_of[t]}" for t in tasks), "mean"]
            + ["Δ mean vs student", "parameters", "s/step", "wall min"]
        ),
    ]
    direct = summ.get("student")
    plan = (("full", 6), ("student", layers), ("student_distill", layers))
    for n, depth in plan:
        if n not in summ:
            continue
        s = summ[n]
        delta = sign(s["mean"]["mean"] - direct["mean"]["mean"]) if direct else "-"
        label = "teacher (full fine-tuning)" if n == "full" else LABELS[n]
        lines.append(
            row(
                [label, depth, *scores(s, tasks), delta, f"{s['total']:,}", f"{s['step_s']:.3f}"]
                + [minutes(s["wall_s"])]
            )
        )
    return lines


def add_task_section(rep: dict[str, Any]) -> list[str]:
    summ, st, holdout = rep["summary"], rep["settings"], rep["holdout"]
    reference = "full" if st["add_method"] == "prompt" else "lora_per_task"
    added, joint = summ["added"], summ.get(reference)
    how = (
        "a shallow soft prompt (20 vectors) + a new head"
        if st["add_method"] == "prompt"
        else "a new per-task LoRA adapter + a new head"
    )
    lines = [
        f"## Adding {holdout} to a frozen bundle vs training it jointly from the start",
        "",
        (
            f"Base: {LABELS[reference]} on the other tasks ({st['steps']} steps). add-task then "
            f"learns {holdout} with {how} on the frozen base, for {st['add_steps']} steps of "
            f"{st['batch_size']} {holdout} rows (its own rows only; the last step's weights). "
            f"Joint: {LABELS[reference]} with {holdout} among the tasks from the start (its share "
            f"of each mixed batch, {st['steps']} steps)."
        ),
        "",
        *header(
            [f"{holdout} learned", f"{holdout} {rep['metric_of'][holdout]}"]
            + ["trainable for it", "steps", "wall min"]
        ),
    ]
    if joint is not None:
        lines.append(
            row(
                [f"jointly from the start ({LABELS[reference]})"]
                + [cell(joint["tasks"][holdout], joint["seeds"])]
                + [f"{joint['trainable']:,} (all tasks)", st["steps"], minutes(joint["wall_s"])]
            )
        )
    parts = " + ".join(f"{k} {v:,}" for k, v in added["trainable_parts"].items())
    lines.append(
        row(
            [f"added later (add-task, {added['method']})", cell(added["score"], added["seeds"])]
            + [f"{added['trainable']:,} ({parts})", added["steps"], minutes(added["wall_s"])]
        )
    )
    lines += [
        "",
        (
            "Old tasks' dev scores on the base bundle before and after the addition "
            "(add_task.json), and in the joint model:"
        ),
        "",
        *header(
            ["task", "metric", "before add-task", "after add-task", "unchanged"]
            + [f"joint model (with {holdout})"]
        ),
    ]
    for t, before in added["old_before"].items():
        j = "-"
        if joint is not None and t in joint["tasks"]:
            j = cell(joint["tasks"][t], joint["seeds"])
        lines.append(
            row(
                [t, rep["metric_of"][t], cell(before, added["seeds"])]
                + [cell(added["old_after"][t], added["seeds"])]
                + ["yes" if added["unchanged"][t] else "**no**", j]
            )
        )
    for t, why in added["old_skipped"].items():
        lines.append(row([t, "-", f"skipped: {why}", "", "", ""]))
    return lines


def markdown(rep: dict[str, Any]) -> str:
    """The report; sections whose runs are missing (a partial report) are left out."""
    metric_of, st, summ = rep["metric_of"], rep["settings"], rep["summary"]
    tasks = list(metric_of)
    lines = ["# PEFT and robustness on GLUE (MiniLM): LoRA, FGM, distillation, add-task", ""]
    lines += [f"Command: `{rep['command']}`", ""]
    if not rep["complete"]:
        done = sum(len(rs) for rs in rep["runs"].values())
        lines += [f"**Partial report**: {done} of {len(rep['runs']) * st['seeds']} runs done.", ""]
    noise = (
        " Cells: mean ± std over seeds."
        if st["seeds"] > 1
        else " One seed: differences of a point or two are within seed noise on MRPC and RTE "
        "(one RTE dev example is 0.36 points)."
    )
    lines += [
        f"Tasks: {', '.join(f'{t} ({metric_of[t]})' for t in tasks)}; {st['seeds']} seed(s); "
        f"{st['steps']} steps of {st['batch_size']} rows in mixed-task batches (temperature "
        f"sampling); train rows per task: {st['train_cap'] or 'all'}; dev rows per task: "
        f"{st['dev_cap'] or 'all'} (GLUE dev sets); {st['precision']}; scored once, after the "
        "last step. Mean: the unweighted mean of the tasks' main metrics." + noise,
        "Peak RSS: the run's own, fresh process (loading, encoding, training, evaluation, saving).",
        "",
    ]
    sections = rep["sections"]
    if "lora" in sections and "full" in summ:
        lines += lora_section(rep, tasks) + [""]
    if "fgm" in sections and "fgm" in summ and "full" in summ:
        lines += fgm_section(rep, tasks) + [""]
    if "distill" in sections and "student" in summ:
        lines += distill_section(rep, tasks) + [""]
    if "add_task" in sections and "added" in summ:
        lines += add_task_section(rep) + [""]
    lines += [describe(rep["environment"]), ""]
    lines.append("Settings: " + ", ".join(f"{k}={v}" for k, v in st.items()))
    return "\n".join(lines) + "\n"
