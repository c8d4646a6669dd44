"""Task metrics, the aggregate score, confusion matrices and result tables.

Everything here is a pure function of plain Python/numpy inputs (no torch), so the evaluator, the
CLI, the bench scripts and the tests can call it on whatever they hold. scikit-learn, scipy and
seqeval are imported inside the functions that use them: together they take over a second to
import, which `promptmux --help` and table formatting should not pay.

Conventions:
    * Every metric is higher-is-better, which is why regression reports ``neg_mse`` (minus the mean
      squared error) rather than the MSE.
    * Accuracy, F1, MCC and correlations are scaled to 0-100 (-100..100 for MCC and correlations),
      as GLUE reports them ("SST-2 91.5", "CoLA MCC 47.5"); ``neg_mse`` keeps the target's units.
    * The metric names per task type, and the default main metric (the first), come from
      ``promptmux.config.schema.TASK_METRICS``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from promptmux.config.schema import TASK_METRICS

# Metrics reported on the 0-100 scale; anything else (neg_mse, losses, ...) is printed with
# significant digits because its range is unknown.
PERCENT_METRICS: frozenset[str] = frozenset(
    name for names in TASK_METRICS.values() for name in names if name != "neg_mse"
)

# Prefixes of tagging schemes that seqeval's default (conlleval-like) mode understands.
_ENTITY_PREFIXES: tuple[str, ...] = ("B-", "I-", "E-", "S-")


def compute_metrics(
    task_type: str,
    predictions: Sequence,
    references: Sequence,
    labels: list[str] | None = None,
) -> dict[str, float]:
    """Computes every metric that ``TASK_METRICS[task_type]`` lists.

    Args:
        task_type: One of the keys of ``TASK_METRICS``.
        predictions: Model outputs, one per example. Classification: int class ids. Multilabel:
            sequences of label ids per example. Regression: floats. Token: one sequence of tag ids
            per sentence (word level).
        references: Gold values, in the same shape as ``predictions``.
        labels: Label (or tag) names indexed by id. Required for token tasks (seqeval reads the
            tag strings); for classification and multilabel it fixes the number of labels, which
            is otherwise inferred from the largest id seen.

    Returns:
        Metric name to plain Python float, in ``TASK_METRICS`` order (the first is the default
        main metric).

    Raises:
        ValueError: Unknown task type, empty inputs, predictions and references of different
            lengths, label ids out of range, or sentences of different lengths.
    """
    if task_type not in _COMPUTERS:
        raise ValueError(f"unknown task type {task_type!r}; known: {', '.join(sorted(_COMPUTERS))}")
    if len(references) == 0 or len(predictions) == 0:
        raise ValueError(
            f"cannot compute {task_type} metrics on empty inputs "
            f"({len(predictions)} predictions, {len(references)} references)"
        )
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references; "
            "they must pair up one to one"
        )
    scores = _COMPUTERS[task_type](predictions, references, labels)
    return {name: float(scores[name]) for name in TASK_METRICS[task_type]}


def _n_labels(ids: Sequence[int], labels: list[str] | None, what: str) -> int:
    """Number of labels: ``len(labels)`` when given, else the largest id seen plus one."""
    bad = [i for i in ids if isinstance(i, (bool, np.bool_)) or int(i) != i or i < 0]
    if bad:
        raise ValueError(f"{what} ids must be non-negative integers, got {bad[0]!r}")
    if labels is None:
        return max(ids) + 1
    out_of_range = [i for i in ids if i >= len(labels)]
    if out_of_range:
        raise ValueError(
            f"{what} id {out_of_range[0]} is out of range for {len(labels)} labels {labels}"
        )
    return len(labels)


def _classification(
    predictions: Sequence[int], references: Sequence[int], labels: list[str] | None
) -> dict[str, float]:
    """Accuracy, macro F1, F1 and Matthews correlation for single-label classification.

    ``macro_f1`` averages over the classes present in references or predictions (scikit-learn's
    default): a class absent from both says nothing about the model. ``f1`` is the F1 of class 1
    when the task has exactly two labels (GLUE's MRPC/QQP convention: 0 = negative, 1 = positive)
    and equals ``macro_f1`` otherwise. Without ``labels``, a task whose ids are all 0 or 1 counts
    as binary.
    """
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    y_pred = [int(p) for p in predictions]
    y_true = [int(r) for r in references]
    n = max(2, _n_labels(y_pred + y_true, labels, "classification label"))
    macro = f1_score(y_true, y_pred, average="macro", zero_division=0)
    f1 = f1_score(y_true, y_pred, average="binary", pos_label=1, zero_division=0) if n == 2 else macro
    with warnings.catch_warnings():
        # A single class in both vectors makes MCC undefined; scikit-learn warns and returns 0.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        mcc = matthews_corrcoef(y_true, y_pred)
    return {
        "accuracy": 100.0 * accuracy_score(y_true, y_pred),
        "macro_f1": 100.0 * macro,
        "f1": 100.0 * f1,
        "mcc": 100.0 * _finite_or_zero(mcc),
    }


def _multilabel(
    predictions: Sequence[Sequence[int]],
    references: Sequence[Sequence[int]],
    labels: list[str] | None,
) -> dict[str, float]:
    """Micro F1, macro F1 and subset (exact-match) accuracy for multi-label classification.

    ``macro_f1`` averages over all labels; a label absent from both references and predictions
    counts as 0 (``zero_division=0``), as scikit-learn does for indicator matrices.
    """
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    pred_sets = [tuple(int(i) for i in p) for p in predictions]
    true_sets = [tuple(int(i) for i in r) for r in references]
    all_ids = [i for s in pred_sets + true_sets for i in s]
    if labels is None and not all_ids:
        raise ValueError("multilabel metrics need `labels` when no example has any label")
    n = _n_labels(all_ids, labels, "multilabel label") if all_ids else len(labels or [])
    binarizer = MultiLabelBinarizer(classes=list(range(n)))
    y_true = binarizer.fit_transform(true_sets)
    y_pred = binarizer.transform(pred_sets)
    return {
        "micro_f1": 100.0 * f1_score(y_true, y_pred, average="micro", zero_division=0),
        "macro_f1": 100.0 * f1_score(y_true, y_pred, average="macro", zero_division=0),
        "subset_accuracy": 100.0 * accuracy_score(y_true, y_pred),
    }


def _regression(
    predictions: Sequence[float], references: Sequence[float], labels: list[str] | None
) -> dict[str, float]:
    """Pearson and Spearman correlations and the negated mean squared error.

    A constant prediction (or reference) vector has no defined correlation; it is reported as 0.0
    rather than NaN so that model selection and averages keep working.
    """
    from scipy import stats

    y_pred = np.asarray(predictions, dtype=np.float64).reshape(-1)
    y_true = np.asarray(references, dtype=np.float64).reshape(-1)
    for name, values in (("predictions", y_pred), ("references", y_true)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ValueError(f"regression {name}[{bad[0]}] is {values[bad[0]]}, not a finite number")
    constant = np.ptp(y_pred) == 0.0 or np.ptp(y_true) == 0.0
    pearson = 0.0 if constant else _finite_or_zero(stats.pearsonr(y_pred, y_true)[0])
    spearman = 0.0 if constant else _finite_or_zero(stats.spearmanr(y_pred, y_true)[0])
    return {
        "pearson": 100.0 * pearson,
        "spearman": 100.0 * spearman,
        "neg_mse": -float(np.mean((y_pred - y_true) ** 2)),
    }


def is_entity_tagset(tags: Sequence[str]) -> bool:
    """Whether every tag is "O" or carries a B-/I-/E-/S- prefix (BIO, IOB2, IOBES schemes)."""
    return all(tag == "O" or tag.startswith(_ENTITY_PREFIXES) for tag in tags)


def _token(
    predictions: Sequence[Sequence[int]],
    references: Sequence[Sequence[int]],
    labels: list[str] | None,
) -> dict[str, float]:
    """Entity-level F1 (seqeval) and word-level accuracy for token classification.

    ``entity_f1`` is seqeval's micro F1 in its default (conlleval-like) mode. For a tag set that
    is not an entity scheme (POS tags, say), seqeval would read each tag as an entity type and
    return a number that means nothing; there every word is its own unit, so ``entity_f1`` is
    reported as the word-level accuracy instead.
    """
    from seqeval.metrics import f1_score as seqeval_f1

    if labels is None:
        raise ValueError("token metrics need `labels` (the tag names indexed by id)")
    pred_tags: list[list[str]] = []
    true_tags: list[list[str]] = []
    for index, (pred, true) in enumerate(zip(predictions, references, strict=True)):
        if len(pred) != len(true):
            raise ValueError(
                f"sentence {index}: {len(pred)} predicted tags but {len(true)} reference tags"
            )
        _n_labels([*pred, *true], labels, f"sentence {index}: tag")
        pred_tags.append([labels[int(i)] for i in pred])
        true_tags.append([labels[int(i)] for i in true])
    n_words = sum(len(s) for s in true_tags)
    if n_words == 0:
        raise ValueError("cannot compute token metrics: every sentence is empty")
    correct = sum(p == t for ps, ts in zip(pred_tags, true_tags) for p, t in zip(ps, ts))
    accuracy = 100.0 * correct / n_words
    if is_entity_tagset(labels):
        entity_f1 = 100.0 * seqeval_f1(true_tags, pred_tags, zero_division=0)
    else:
        entity_f1 = accuracy
    return {"entity_f1": entity_f1, "accuracy": accuracy}


def _generation(predictions: Sequence[str], references: Sequence[str], labels: list[str] | None) -> dict[str, float]:
    """ROUGE-L/1/2 F-measures and exact match of generated texts (``promptmux.eval.rouge``)."""
    from promptmux.eval.rouge import rouge_scores

    return rouge_scores(predictions, references)


def _finite_or_zero(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else 0.0


_COMPUTERS: dict[str, Callable[[Sequence, Sequence, list[str] | None], dict[str, float]]] = {
    "classification": _classification,
    "multilabel": _multilabel,
    "regression": _regression,
    "token": _token,
    "generation": _generation,
}


def aggregate_score(main_scores: Mapping[str, float]) -> float:
    """The unweighted mean of the per-task main metric values (the GLUE score).

    Each task counts once whatever its size or its weight in training, as the GLUE leaderboard
    averages its tasks.

    Args:
        main_scores: Task name to the value of its main metric.

    Returns:
        The plain mean, as a Python float.

    Raises:
        ValueError: No task scores are given.
    """
    if not main_scores:
        raise ValueError("aggregate_score needs at least one task score")
    return float(sum(float(v) for v in main_scores.values()) / len(main_scores))


def confusion(
    predictions: Sequence[int], references: Sequence[int], n_labels: int
) -> list[list[int]]:
    """The confusion matrix of a classification task.

    Args:
        predictions: Predicted class ids.
        references: Gold class ids.
        n_labels: Number of classes; every class gets a row and a column, seen or not.

    Returns:
        ``matrix[true_id][predicted_id]`` = number of examples, as nested lists of ints.

    Raises:
        ValueError: Lengths differ, or an id is outside ``range(n_labels)``.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    from sklearn.metrics import confusion_matrix

    names = [str(i) for i in range(n_labels)]
    y_pred = [int(p) for p in predictions]
    y_true = [int(r) for r in references]
    _n_labels(y_pred + y_true, names, "classification label")
    if not y_true:
        return [[0] * n_labels for _ in range(n_labels)]
    matrix = confusion_matrix(y_true, y_pred, labels=list(range(n_labels)))
    return [[int(c) for c in row] for row in matrix]


def format_value(metric: str, value: float) -> str:
    """1 decimal for 0-100 metrics (accuracy, F1, ...), 4 significant digits for anything else."""
    return f"{value:.1f}" if metric in PERCENT_METRICS else f"{value:.4g}"


def _table_cells(
    rows: Mapping[str, Mapping[str, float]], main: Mapping[str, str] | None
) -> tuple[list[str], list[list[str]]]:
    """Header and body cells shared by both table formats; the main metric's cell ends in ``*``."""
    metrics: list[str] = []
    for scores in rows.values():
        metrics.extend(m for m in scores if m not in metrics)
    body = []
    for task, scores in rows.items():
        main_metric = (main or {}).get(task) or next(iter(scores), None)
        if scores and main_metric not in scores:
            raise ValueError(
                f"task {task!r}: main metric {main_metric!r} is not among its metrics {list(scores)}"
            )
        cells = [task]
        for m in metrics:
            if m not in scores:
                cells.append("-")
            else:
                cells.append(format_value(m, scores[m]) + ("*" if m == main_metric else ""))
        body.append(cells)
    return ["task", *metrics], body


def format_table(
    rows: Mapping[str, Mapping[str, float]], main: Mapping[str, str] | None = None
) -> str:
    """A fixed-width plain-text table: one row per task, one column per metric.

    Args:
        rows: Task name to its metrics (as ``compute_metrics`` returns them). Tasks of different
            types share one table; a metric a task lacks shows as ``-``.
        main: Task name to its main metric, marked with ``*``. A task not named here gets the
            first metric of its row, which is the default main metric for ``compute_metrics``
            output.

    Returns:
        The table, with a final line explaining the ``*``.
    """
    header, body = _table_cells(rows, main)
    # Cells without a `*` get a trailing space, so numbers stay aligned on their last digit.
    grid = [[r[0], *(c if c.endswith("*") else c + " " for c in r[1:])] for r in [header, *body]]
    widths = [max(len(r[c]) for r in grid) for c in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([line(grid[0]), rule, *(line(r) for r in grid[1:]), "* main metric"])


def format_markdown_table(
    rows: Mapping[str, Mapping[str, float]], main: Mapping[str, str] | None = None
) -> str:
    """The same table as ``format_table``, in GitHub-flavoured markdown.

    Args:
        rows: Task name to its metrics.
        main: Task name to its main metric, marked with ``*`` (escaped for markdown).

    Returns:
        The markdown table, followed by a line explaining the ``*``.
    """
    header, body = _table_cells(rows, main)

    def line(cells: list[str]) -> str:
        escaped = [c.replace("|", r"\|").replace("*", r"\*") for c in cells]
        return "| " + " | ".join(escaped) + " |"

    align = "|---|" + "---:|" * (len(header) - 1)
    return "\n".join([line(header), align, *(line(r) for r in body), "", r"\* main metric"])
