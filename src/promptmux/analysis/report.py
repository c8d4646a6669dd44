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


BASES = {
    "lookahead_clear": "lookahead affinity, entries within two standard errors of 0 set to 0",
    "lookahead": "mean lookahead affinity (Fifty et al.)",
    "cosine": "mean gradient cosine",
}


def suggest(summary: dict[str, Any]) -> dict[str, Any]:
    """Best partitions per group count from each matrix, and the recommendation.

    Groupings are found for the mean lookahead affinity (what Fifty et al. group by), for the
    same matrix with every entry that lies within two standard errors of 0 set to 0
    (`lookahead_clear`: only relationships the records agree on count), and for the gradient
    cosine. The recommendation comes from the first of these that exists: `lookahead_clear` needs
    at least two records and one clear off-diagonal entry; the cosine is used only when no
    lookahead was recorded (every record had η = 0).
    """
    tasks = summary["tasks"]
    matrices: dict[str, Any] = {}
    if summary.get("lookahead") is not None:
        mean = np.asarray(summary["lookahead"], dtype=np.float64)
        sem = standard_errors(summary.get("records", []), "lookahead")
        if sem is not None and clear_entries(mean, sem)[0] > 0:
            keep = np.abs(mean) > 2 * np.asarray(sem)
            np.fill_diagonal(keep, True)  # the diagonal is never scored; keep it for display
            matrices["lookahead_clear"] = np.where(keep, mean, 0.0)
        matrices["lookahead"] = mean
    matrices["cosine"] = summary["cosine"]
    out: dict[str, Any] = {}
    for name, matrix in matrices.items():
        found = best_groupings(matrix, tasks)
        out[name] = {
            "by_count": [g.to_dict() for g in found],
            "recommended": recommend(found).to_dict(),
        }
    out["basis"] = next(iter(matrices))
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
    groups = suggest(summary)
    records = summary.get("records", [])
    summary = {
        **summary,
        "cosine_sem": standard_errors(records, "cosine"),
        "lookahead_sem": standard_errors(records, "lookahead"),
    }
    write_heatmaps(out, summary)
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


def standard_errors(records: list[dict[str, Any]], key: str) -> list[list[float]] | None:
    """Standard error of the mean matrix over the records holding `key` (None with fewer than 2).

    Each record draws new probe rows, so the spread between records is the measurement's noise.
    """
    values = [r[key] for r in records if r.get(key) is not None]
    if len(values) < 2:
        return None
    m = np.asarray(values, dtype=np.float64)
    return (m.std(axis=0, ddof=1) / np.sqrt(len(m))).tolist()


def clear_entries(mean: list[list[float]], sem: list[list[float]] | None) -> tuple[int, int]:
    """How many off-diagonal entries lie more than two standard errors from 0, and of how many."""
    m = np.asarray(mean, dtype=np.float64)
    off = ~np.eye(len(m), dtype=bool)
    if sem is None:
        return 0, int(off.sum())
    return int((np.abs(m) > 2 * np.asarray(sem))[off].sum()), int(off.sum())


def write_heatmaps(out: Path, summary: dict[str, Any]) -> None:
    """The lookahead (when recorded) and gradient-cosine heatmaps of a summary, into `out`."""
    tasks = summary["tasks"]
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


_SEM_TEXT = (
    "± is the standard error of the mean over the records (each record draws new probe rows)."
)
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
        lines += _matrix(p["lookahead"], tasks, "step on ↓ / loss of →", sem=p.get("lookahead_sem"))
        lines += ["", f"![lookahead]({LOOKAHEAD_PNG})", ""]
    lines += ["## Gradient cosine", ""]
    lines += [
        "cos(g_i, g_j) of the task gradients on the shared parameters (1 on the diagonal).",
        "",
    ]
    lines += _matrix(p["cosine"], tasks, "task", scaled=False, sem=p.get("cosine_sem"))
    lines += ["", f"![cosine]({COSINE_PNG})", ""]
    g = p["groups"]
    rec = g["recommended"]
    chosen = f"**{_groups(rec['groups'])}** (score {rec['score']:.4g})"
    lines += ["## Suggested groups", ""]
    lines += [f"Recommended: {chosen}, from the {BASES[g['basis']]}.", ""]
    if p.get("lookahead") is not None:
        clear, total = clear_entries(p["lookahead"], p.get("lookahead_sem"))
        caution = (
            " No grouping is supported beyond noise: the recommendation rests on the raw means "
            "(more records or a larger --probe-size narrow the errors)."
            if clear == 0
            else ""
        )
        counted = f"{clear} of {total} off-diagonal lookahead entries lie more than two"
        lines += [f"{counted} standard errors from 0.{caution}", ""]
    lines += [_SCORE_TEXT, ""]
    for basis in BASES:
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
    matrix: list[list[float]],
    tasks: list[str],
    corner: str,
    scaled: bool = True,
    sem: list[list[float]] | None = None,
) -> list[str]:
    m = np.asarray(matrix)
    exp = value_scale(m) if scaled else 0
    scale = f" (×10^{exp})" if exp else ""
    rows = [f"| {corner}{scale} | " + " | ".join(tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for i, t in enumerate(tasks):
        cells = [f"{v / 10.0**exp:.3f}" for v in m[i]]
        if sem is not None:
            cells = [f"{c} ± {e / 10.0**exp:.3f}" for c, e in zip(cells, sem[i])]
        rows.append(f"| **{t}** | " + " | ".join(cells) + " |")
    rows += ["", _SEM_TEXT] if sem is not None else []
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
