"""Write the task-relationship report: affinity.json, affinity.md and two heatmap PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from promptmux.analysis.groups import best_groupings, recommend
from promptmux.analysis.plots import heatmap, value_scale
from promptmux.fsutil import atomic_write_text

LOOKAHEAD_PNG = "lookahead_affinity.png"
COSINE_PNG = "gradient_cosine.png"


def suggest(summary: dict[str, Any]) -> dict[str, Any]:
    """Best partitions per group count from each matrix, and the recommendation.

    The recommendation comes from the lookahead affinity (the quantity Fifty et al. group by);
    from the gradient cosine only when no lookahead was recorded (every record had η = 0).
    """
    tasks = summary["tasks"]
    out: dict[str, Any] = {}
    for name in ("lookahead", "cosine"):
        if summary.get(name) is not None:
            found = best_groupings(summary[name], tasks)
            out[name] = {
                "by_count": [g.to_dict() for g in found],
                "recommended": recommend(found).to_dict(),
            }
    out["basis"] = "lookahead" if "lookahead" in out else "cosine"
    out["recommended"] = out[out["basis"]]["recommended"]
    return out


def write_report(
    out: Path,
    summary: dict[str, Any],
    baselines: dict[str, dict[str, Any]] | None = None,
    command: str | None = None,
    config: str | None = None,
) -> dict[str, Any]:
    """Write the report files into `out` and return what affinity.json holds."""
    out.mkdir(parents=True, exist_ok=True)
    tasks = summary["tasks"]
    groups = suggest(summary)
    if summary.get("lookahead") is not None:
        heatmap(
            summary["lookahead"],
            tasks,
            out / LOOKAHEAD_PNG,
            "Lookahead task affinity Z[i→j]",
            "step on task i",
            "loss of task j",
        )
    heatmap(
        summary["cosine"],
        tasks,
        out / COSINE_PNG,
        "Gradient cosine on shared parameters",
        "task i",
        "task j",
        scale_values=False,
    )
    payload = {
        "config": config,
        "command": command,
        **summary,
        "groups": groups,
        "baselines": baselines,
    }
    atomic_write_text(out / "affinity.json", json.dumps(payload, indent=2))
    atomic_write_text(out / "affinity.md", markdown(payload))
    return payload


_LOOKAHEAD_TEXT = (
    "Z[i→j] = 1 − L_j(θ − η·g_i) / L_j(θ) (Fifty et al. 2021; an SGD lookahead at the current "
    "learning rate). Rows: a step on task i; columns: the loss of task j. Positive: i helps j."
)
_SCORE_TEXT = (
    "A task's score is the mean affinity it receives from the other members of its group "
    "(0 when alone); a partition scores the mean over tasks. Best partition per number of groups:"
)
_BASELINE_TEXT = (
    "Each task trained alone with the same config, step budget and batch size. Both columns are "
    "the task's main metric at the best evaluation (results.json `best_metrics`; for the "
    "multi-task run, the step with the best aggregate)."
)


def markdown(p: dict[str, Any]) -> str:
    """The human-readable report (what `write_report` saves as affinity.md)."""
    tasks = p["tasks"]
    lines = ["# Task relationships" + (f": `{p['config']}`" if p.get("config") else ""), ""]
    if p.get("command"):
        lines += ["```bash", p["command"], "```", ""]
    lines += [
        (
            f"Measured every {p['every']} steps of a {p['total_steps']}-step run on probe batches "
            f"of {p['probe_size']} training rows per task (model in eval mode, shared parameters "
            f"only): {p['n_records']} records, {p['n_lookahead_records']} with a lookahead "
            "(η > 0). Matrices are means over the records."
        ),
        "",
    ]
    if p.get("stopped") not in (None, "completed"):
        lines += [f"**The run stopped early ({p['stopped']}) after {p['steps']} steps.**", ""]
    if p.get("lookahead") is not None:
        lines += ["## Lookahead task affinity", "", _LOOKAHEAD_TEXT, ""]
        lines += _matrix(p["lookahead"], tasks, "step on ↓ / loss of →")
        lines += ["", f"![lookahead]({LOOKAHEAD_PNG})", ""]
    lines += ["## Gradient cosine", ""]
    lines += [
        "cos(g_i, g_j) of the task gradients on the shared parameters (1 on the diagonal).",
        "",
    ]
    lines += _matrix(p["cosine"], tasks, "task", scaled=False)
    lines += ["", f"![cosine]({COSINE_PNG})", ""]
    g = p["groups"]
    rec = g["recommended"]
    chosen = f"**{_groups(rec['groups'])}** (score {rec['score']:.4g})"
    lines += ["## Suggested groups", ""]
    lines += [f"Recommended (from the {g['basis']} matrix): {chosen}.", "", _SCORE_TEXT, ""]
    for basis in ("lookahead", "cosine"):
        if basis in g:
            lines += [f"| groups | best partition ({basis}) | score |", "|---:|---|---:|"]
            lines += [
                f"| {len(x['groups'])} | {_groups(x['groups'])} | {x['score']:.4g} |"
                for x in g[basis]["by_count"]
            ]
            lines.append("")
    if p.get("baselines"):
        lines += ["## Multi-task vs single-task", "", _BASELINE_TEXT, ""]
        lines += ["| task | metric | single | multi | multi − single |", "|---|---|---:|---:|---:|"]
        for t, b in p["baselines"].items():
            values = f"{_num(b['single'])} | {_num(b['multi'])} | {_num(b['delta'], sign=True)}"
            lines.append(f"| {t} | {b['metric']} | {values} |")
        lines.append("")
    lines += ["## Records", "", "Mean off-diagonal value of each matrix per record.", ""]
    lines += ["| step | lr | cosine | lookahead | seconds |", "|---:|---:|---:|---:|---:|"]
    for r in p["records"]:
        look = "—" if r["lookahead"] is None else f"{_off_diagonal_mean(r['lookahead']):.3g}"
        cos = f"{_off_diagonal_mean(r['cosine']):.3f}"
        lines.append(f"| {r['step']} | {r['lr']:.3g} | {cos} | {look} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def _matrix(
    matrix: list[list[float]], tasks: list[str], corner: str, scaled: bool = True
) -> list[str]:
    m = np.asarray(matrix)
    exp = value_scale(m) if scaled else 0
    scale = f" (×10^{exp})" if exp else ""
    rows = [f"| {corner}{scale} | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for i, t in enumerate(tasks):
        rows.append(f"| **{t}** | " + " | ".join(f"{v / 10.0**exp:.3f}" for v in m[i]) + " |")
    return rows


def _groups(groups: list[list[str]] | tuple[tuple[str, ...], ...]) -> str:
    return " ".join("{" + ", ".join(g) + "}" for g in groups)


def _num(v: float | None, sign: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{v:+.2f}" if sign else f"{v:.2f}"


def _off_diagonal_mean(matrix: list[list[float]]) -> float:
    m = np.asarray(matrix)
    k = len(m)
    return float((m.sum() - np.trace(m)) / max(k * (k - 1), 1))
