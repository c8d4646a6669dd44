"""Evaluation: pure metric functions and result tables (no torch import here)."""

from promptmux.eval.metrics import (
    aggregate_score,
    compute_metrics,
    confusion,
    format_markdown_table,
    format_table,
)

__all__ = [
    "aggregate_score",
    "compute_metrics",
    "confusion",
    "format_markdown_table",
    "format_table",
]
