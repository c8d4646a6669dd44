"""Cross-validated probe scores for prompt search, and how far the chosen prompt stands from noise.

A single held-out split of a few hundred rows scores a candidate with a standard error (about 1.8
points of accuracy on 600 rows) as large as the spread between candidates, so the choice it makes
is close to random. k-fold cross-validation scores every one of the N sampled train rows once, out
of fold, at the price of k cheap probe fits (the embeddings are computed once per candidate), which
shrinks that error by about sqrt(N / 600); see Kohavi (1995), "A study of cross-validation and
bootstrap for accuracy estimation and model selection" (IJCAI 1995).

All candidates are scored on the same rows with the same folds, so two candidates' scores can be
compared row by row (paired): what varies between rows is shared and cancels. `paired_gaps` turns
that into a standard error of the chosen candidate's advantage over the runner-up and over the
median candidate, from per-row delete-one jackknife values of the main metric (Efron & Stein,
"The jackknife estimate of variance", Annals of Statistics 1981). For accuracy these values are
exactly 100 x the per-row correctness, and the SE is the textbook sd(differences) / sqrt(N). The
choice itself stays the plain argmax of the CV score: the SE is reported, never used to pick, and
nothing here looks at dev. The SE treats the chosen candidate as fixed; since it won a maximum over
several candidates its gap is biased upward (the winner's curse), one more reason to read a gap
under about 2 SE as noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from promptmux.errors import ConfigError, DataError
from promptmux.eval.metrics import compute_metrics
from promptmux.prompts.probe import fit_probe, predict

# Rows each fold must hold at least, so that a fold's share of the score is not a handful of rows.
MIN_FOLD_ROWS = 10


def check_folds(folds: int) -> None:
    """Raise a ConfigError naming --folds unless it is at least 2."""
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(
            f"--folds must be an integer >= 2, got {folds!r} (k-fold cross-validation needs "
            "folds to fit on and a fold to score)"
        )


def check_cv_rows(
    y: np.ndarray, task_type: str, folds: int, task: str, labels: list[str] | None
) -> None:
    """Raise a DataError naming the task and the counts when the rows cannot be split in `folds`.

    Every fold needs `MIN_FOLD_ROWS` rows; for classification every label that occurs needs at
    least `folds` rows (so that stratified folds each hold one) and two labels must occur.
    """
    n = len(y)
    if n < folds * MIN_FOLD_ROWS:
        raise DataError(
            f"tasks.{task} (train): {n} rows for the cross-validated probe; --folds {folds} needs "
            f"at least {folds * MIN_FOLD_ROWS} ({MIN_FOLD_ROWS} per fold); add train rows, raise "
            f"--train-rows, or lower --folds"
        )
    if task_type != "classification":
        return
    counts = np.bincount(y)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        raise DataError(
            f"tasks.{task} (train): all {n} rows of the probe sample hold one label; "
            f"add rows of another label"
        )
    few = [int(k) for k in present if counts[k] < folds]
    if few:
        names = [labels[k] if labels and k < len(labels) else str(k) for k in few]
        detail = ", ".join(f"{name!r} {counts[k]}" for name, k in zip(names, few))
        raise DataError(
            f"tasks.{task} (train): among the {n} rows of the probe sample, label(s) {detail} "
            f"have fewer rows than --folds {folds}; stratified folds need at least {folds} rows "
            f"per label (lower --folds, raise --train-rows, or add rows of those labels)"
        )


def fold_ids(y: np.ndarray, task_type: str, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of every row: seeded, shuffled, stratified by label for classification.

    Every row falls in exactly one fold, and fold sizes differ by at most one (per label, when
    stratified).
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    check_folds(folds)
    n = len(y)
    out = np.full(n, -1, dtype=np.int64)
    stratify = task_type == "classification"
    splitter = (StratifiedKFold if stratify else KFold)(folds, shuffle=True, random_state=seed)
    parts = splitter.split(np.zeros((n, 1)), y if stratify else None)
    for k, (_, held_out) in enumerate(parts):
        out[held_out] = k
    return out


def cross_val_predict(
    task_type: str, x: np.ndarray, y: np.ndarray, folds: np.ndarray, seed: int
) -> np.ndarray:
    """Out-of-fold probe predictions of every row: each fold is predicted by a probe fitted on the
    other folds.

    Args:
        task_type: classification, multilabel or regression (as `fit_probe` takes it).
        x: embeddings [n, hidden], computed once and shared by every fold.
        y: gold targets as `promptmux.prompts.probe.targets` gives them.
        folds: the fold of every row (`fold_ids`).
        seed: the probe's seed.

    Returns:
        Predictions in row order, shaped as the probe predicts (ids, floats or a 0/1 matrix).
    """
    out: np.ndarray | None = None
    for k in np.unique(folds):
        held_out = folds == k
        probe = fit_probe(task_type, x[~held_out], y[~held_out], seed)
        pred = predict(probe, x[held_out])
        if out is None:
            out = np.zeros((len(y), *pred.shape[1:]), dtype=pred.dtype)
        out[held_out] = pred
    assert out is not None, "cross_val_predict() needs at least one fold"
    return out


def row_values(
    task_type: str, metric: str, pred: np.ndarray, y: np.ndarray, labels: list[str] | None
) -> np.ndarray | None:
    """Per-row delete-one jackknife values of `metric` (classification; None for other types).

    value_i = n * M(all rows) - (n - 1) * M(all rows but i). Their mean is about M, and their
    spread gives M's standard error; for accuracy value_i is exactly 100 x (row i is right). Any
    classification metric here (accuracy, F1, macro F1, MCC) depends only on the confusion matrix,
    so rows in the same (gold, predicted) cell share one value: one metric call per cell, not per
    row.
    """
    if task_type != "classification":
        return None
    n = len(y)
    full = compute_metrics(task_type, pred.tolist(), y.tolist(), labels)[metric]
    width = int(max(pred.max(), y.max())) + 1
    cells = y.astype(np.int64) * width + pred.astype(np.int64)
    out = np.empty(n, dtype=np.float64)
    for cell in np.unique(cells):
        rows = np.flatnonzero(cells == cell)
        keep = np.ones(n, dtype=bool)
        keep[rows[0]] = False
        rest = compute_metrics(task_type, pred[keep].tolist(), y[keep].tolist(), labels)[metric]
        out[rows] = n * full - (n - 1) * rest
    return out


@dataclass(frozen=True)
class PairedGap:
    """The chosen candidate's CV score minus another's (or the median's), with its paired SE.

    `se` is None where no per-row values exist (regression, multilabel) or only one row does;
    `z` is gap / se (None when se is None or 0).
    """

    gap: float
    se: float | None

    @property
    def z(self) -> float | None:
        return None if self.se is None or self.se == 0 else self.gap / self.se


def runner_up(scores: list[float], chosen: int) -> int | None:
    """Index of the best score other than `chosen` (the earliest on a tie); None if alone."""
    others = [i for i in range(len(scores)) if i != chosen]
    return max(others, key=lambda i: (scores[i], -i)) if others else None


def median_members(scores: list[float]) -> list[int]:
    """The candidate(s) at the median score: the middle one, or the two middle ones for an even
    count (their mean is np.median), ranked by score with ties kept in candidate order."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    mid = len(order) // 2
    return [order[mid]] if len(order) % 2 else [order[mid - 1], order[mid]]


def _paired_se(diff: np.ndarray) -> float | None:
    return float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else None


def paired_gaps(
    scores: list[float], values: list[np.ndarray | None], chosen: int
) -> dict[str, PairedGap]:
    """The chosen candidate's CV advantage over the runner-up and over the median candidate.

    Args:
        scores: every candidate's CV main metric.
        values: every candidate's per-row values (`row_values`), on the same rows; None entries
            give gaps without an SE.
        chosen: the chosen candidate's index.

    Returns:
        "runner_up" and "median" gaps (runner_up is absent with a single candidate). The median
        gap is the chosen score minus np.median(scores); its SE pairs the chosen row values with
        the mean of the median candidate(s)' row values.
    """
    out: dict[str, PairedGap] = {}
    have = all(v is not None for v in values)
    second = runner_up(scores, chosen)
    if second is not None:
        se = _paired_se(values[chosen] - values[second]) if have else None  # type: ignore[operator]
        out["runner_up"] = PairedGap(scores[chosen] - scores[second], se)
    middle = median_members(scores)
    se = None
    if have:
        mid = np.mean([values[i] for i in middle], axis=0)
        se = _paired_se(values[chosen] - mid)  # type: ignore[operator]
    out["median"] = PairedGap(scores[chosen] - float(np.median(scores)), se)
    return out
