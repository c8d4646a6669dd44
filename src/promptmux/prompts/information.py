"""Entropy and information gain in bits (pure functions over label ids).

Prompt search reports, for each candidate prompt, how much its predictions tell about the gold
labels: IG = H(Y) - H(Y | Ŷ), the mutual information between gold labels Y and predicted labels Ŷ
under their empirical joint distribution. It is 0 for predictions independent of the labels
(a constant prediction included) and H(Y) for predictions that determine the label. Keyword mining
uses the same quantity with Ŷ replaced by "the word occurs in the text".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def entropy(counts: Sequence[float] | np.ndarray) -> float:
    """Shannon entropy in bits of the distribution proportional to `counts` (0 for no mass)."""
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    total = c.sum()
    if total <= 0:
        return 0.0
    p = c[c > 0] / total
    return float(-(p * np.log2(p)).sum())


def contingency(gold: Sequence[int], pred: Sequence[int]) -> np.ndarray:
    """Counts of (gold, predicted) pairs: a [gold ids, predicted ids] matrix over the ids seen."""
    g = np.asarray(gold, dtype=np.int64).reshape(-1)
    p = np.asarray(pred, dtype=np.int64).reshape(-1)
    if g.shape != p.shape:
        raise ValueError(f"{g.size} gold labels but {p.size} predictions; they must pair up")
    if g.size == 0:
        raise ValueError("information gain needs at least one (gold, predicted) pair")
    if (g < 0).any() or (p < 0).any():
        raise ValueError("label ids must be non-negative")
    table = np.zeros((int(g.max()) + 1, int(p.max()) + 1), dtype=np.float64)
    np.add.at(table, (g, p), 1.0)
    return table


def information_gain(gold: Sequence[int], pred: Sequence[int]) -> float:
    """IG = H(Y) - H(Y | Ŷ) in bits between gold ids and predicted ids.

    H(Y | Ŷ) = sum over predicted values v of P(Ŷ=v) H(Y | Ŷ=v). Both are estimated from the
    empirical joint counts (no smoothing), so the value is exact for the sample at hand.
    """
    table = contingency(gold, pred)
    return gain_from_table(table)


def gain_from_table(table: np.ndarray) -> float:
    """IG in bits from a [gold value, conditioning value] count table."""
    total = table.sum()
    h_y = entropy(table.sum(axis=1))
    h_y_given = sum(col.sum() / total * entropy(col) for col in table.T if col.sum() > 0)
    # Rounding can leave -1e-16 for independent variables; information is never negative.
    return max(0.0, h_y - h_y_given)


def quantile_bins(
    reference: Sequence[float], values: Sequence[float], n_bins: int = 5
) -> np.ndarray:
    """Bin ids of `values` by the quantiles of `reference` (used to read regression as classes)."""
    ref = np.asarray(reference, dtype=np.float64)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, n_bins + 1)[1:-1]))
    return np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="right")
