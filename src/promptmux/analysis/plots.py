"""Annotated heatmaps of task-relationship matrices (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def off_diagonal(matrix: np.ndarray) -> np.ndarray:
    """The values off the diagonal (all values for a 1 x 1 matrix)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        return m.reshape(-1)
    return m[~np.eye(len(m), dtype=bool)]


def value_scale(matrix: np.ndarray) -> int:
    """Power of ten to divide values by so that the off-diagonal ones read as a few digits.

    Lookahead affinities are around η·|g|², often 1e-4..1e-2; printed as 0.00 they would vanish.
    The diagonal (a task's effect on itself) is usually far larger and is left out of the choice.
    """
    values = off_diagonal(matrix)
    top = float(np.nanmax(np.abs(values))) if values.size else 0.0
    if top == 0.0 or top >= 0.1:
        return 0
    return math.floor(math.log10(top))


def heatmap(
    matrix: Sequence[Sequence[float]] | np.ndarray,
    tasks: Sequence[str],
    path: Path,
    title: str,
    row_label: str,
    col_label: str,
    scale_values: bool = True,
) -> Path:
    """Write an annotated heatmap PNG of a K x K matrix, colours centred on 0 (red: +, blue: −).

    Colours show the off-diagonal cells (the relationships between tasks) and their range is set
    by them; the diagonal, a task with itself, is grey (its value is still written in the cell)
    so that its usually far larger values do not wash every other cell out.

    Args:
        matrix: values, rows and columns in `tasks` order.
        tasks: task names for both axes.
        path: the PNG to write (its folder is created).
        title: figure title; a value scale (×10^k) is appended when the values are scaled.
        row_label, col_label: axis captions (what rows and columns mean).
        scale_values: annotate values divided by a power of ten (see `value_scale`).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display here; an interactive backend already set stays
    import matplotlib.pyplot as plt

    m = np.asarray(matrix, dtype=np.float64)
    k = len(tasks)
    if m.shape != (k, k):
        raise ValueError(f"heatmap: matrix must be {k}x{k} for tasks {list(tasks)}, got {m.shape}")
    exp = value_scale(m) if scale_values else 0
    shown = m / 10.0**exp
    limit = float(np.nanmax(np.abs(off_diagonal(m)))) or float(np.nanmax(np.abs(m))) or 1.0
    size = 1.2 + 0.9 * k
    fig, ax = plt.subplots(figsize=(size + 1.4, size))
    try:
        cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#dddddd")
        # Colours in the annotated units, so the colour bar needs no offset label of its own.
        masked = np.ma.masked_array(shown, mask=np.eye(k, dtype=bool) if k > 1 else None)
        bound = limit / 10.0**exp
        image = ax.imshow(masked, cmap=cmap, vmin=-bound, vmax=bound)
        ax.set_xticks(range(k), labels=list(tasks), rotation=45, ha="right")
        ax.set_yticks(range(k), labels=list(tasks))
        ax.set_xlabel(col_label)
        ax.set_ylabel(row_label)
        suffix = rf"  (values $\times 10^{{{exp}}}$)" if exp else ""
        ax.set_title(title + suffix, fontsize=10)
        for i in range(k):
            for j in range(k):
                # Dark cells get white text so every annotation stays readable.
                dark = i != j and abs(m[i, j]) > 0.6 * limit
                colour = "white" if dark else "black"
                text = f"{shown[i, j]:.3g}" if scale_values else f"{shown[i, j]:.3f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color=colour)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path
