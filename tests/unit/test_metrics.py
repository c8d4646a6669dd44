"""Tests for promptmux.eval.metrics: expected values are worked out by hand in the comments."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import pytest

from promptmux.config.schema import TASK_METRICS
from promptmux.eval import (
    aggregate_score,
    compute_metrics,
    confusion,
    format_markdown_table,
    format_table,
)

BIO = ["O", "B-PER", "I-PER", "B-LOC"]

# One small valid input per task type: (predictions, references, labels).
EXAMPLES: dict[str, tuple[list, list, list[str] | None]] = {
    "classification": ([0, 1, 1, 1, 0], [0, 0, 1, 1, 1], ["neg", "pos"]),
    "multilabel": ([(0,), (2,), (1,), (0,)], [(0, 1), (2,), (), (0,)], ["a", "b", "c"]),
    "regression": ([1.0, 3.0, 2.0, 10.0], [1.0, 2.0, 3.0, 4.0], None),
    "token": ([[1, 2, 0, 0], [0, 3]], [[1, 2, 0, 3], [0, 3]], BIO),
    "generation": (["the cat sat", "a dog"], ["the cat sat down", "dogs bark"], None),
}


def approx(value: float) -> object:
    return pytest.approx(value, abs=1e-9)


def test_every_task_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(TASK_METRICS)


@pytest.mark.parametrize("task_type", sorted(TASK_METRICS))
def test_returns_every_schema_metric_as_finite_float(task_type: str) -> None:
    scores = compute_metrics(task_type, *EXAMPLES[task_type])
    assert list(scores) == list(TASK_METRICS[task_type])
    for name, value in scores.items():
        assert type(value) is float, name
        assert math.isfinite(value), name


def test_classification_binary() -> None:
    # refs [0,0,1,1,1] vs preds [0,1,1,1,0]: positive class TP=2 FP=1 FN=1 TN=1.
    scores = compute_metrics("classification", *EXAMPLES["classification"])
    assert scores["accuracy"] == approx(100 * 3 / 5)
    assert scores["f1"] == approx(100 * 4 / 6)  # 2TP / (2TP + FP + FN)
    # class 0: TP=1 FP=1 FN=1 -> 0.5; class 1: 2/3.
    assert scores["macro_f1"] == approx(100 * (0.5 + 2 / 3) / 2)
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = 1 / sqrt(3*3*2*2)
    assert scores["mcc"] == approx(100 / 6)


def test_classification_multiclass_f1_is_macro() -> None:
    # refs [0,1,2,2] vs preds [0,2,2,1]: per-class F1 1.0, 0.0, 0.5.
    scores = compute_metrics("classification", [0, 2, 2, 1], [0, 1, 2, 2], ["a", "b", "c"])
    assert scores["accuracy"] == approx(50.0)
    assert scores["macro_f1"] == approx(50.0)
    assert scores["f1"] == scores["macro_f1"]
    # Multi-class MCC: (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2))
    # with c=2 correct, s=4, p=t=[1,1,2]: (8 - 6) / sqrt(10 * 10) = 0.2.
    assert scores["mcc"] == approx(20.0)


def test_classification_single_class_mcc_is_zero_without_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = compute_metrics("classification", [1, 1, 1], [1, 1, 1], ["neg", "pos"])
    assert scores["accuracy"] == approx(100.0)
    assert scores["mcc"] == approx(0.0)


def test_classification_rejects_out_of_range_ids() -> None:
    with pytest.raises(ValueError, match="out of range"):
        compute_metrics("classification", [0, 2], [0, 1], ["neg", "pos"])


def test_multilabel() -> None:
    # Indicator rows, refs: 110 001 000 100; preds: 100 001 010 100.
    # micro: TP=3 FP=1 FN=1 -> 6/8. Per label F1: a 1.0, b 0.0, c 1.0. Exact rows: 2 of 4.
    scores = compute_metrics("multilabel", *EXAMPLES["multilabel"])
    assert scores["micro_f1"] == approx(75.0)
    assert scores["macro_f1"] == approx(100 * 2 / 3)
    assert scores["subset_accuracy"] == approx(50.0)


def test_multilabel_macro_counts_unseen_labels_as_zero() -> None:
    preds, refs, _ = EXAMPLES["multilabel"]
    scores = compute_metrics("multilabel", preds, refs, ["a", "b", "c", "d"])
    assert scores["macro_f1"] == approx(100 * (1 + 0 + 1 + 0) / 4)
    assert scores["micro_f1"] == approx(75.0)


def test_regression() -> None:
    # refs [1,2,3,4] (mean 2.5, deviations -1.5 -.5 .5 1.5, sum of squares 5);
    # preds [1,3,2,10] (mean 4, deviations -3 -1 -2 6, sum of squares 50); cross sum 13.
    scores = compute_metrics("regression", *EXAMPLES["regression"])
    assert scores["pearson"] == approx(100 * 13 / math.sqrt(5 * 50))
    # ranks of preds [1,3,2,4] vs [1,2,3,4]: 1 - 6*sum(d^2)/(n(n^2-1)) = 1 - 12/60.
    assert scores["spearman"] == approx(80.0)
    assert scores["neg_mse"] == approx(-(0 + 1 + 1 + 36) / 4)


def test_regression_constant_predictions_give_zero_correlation() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scores = compute_metrics("regression", [2.0, 2.0, 2.0], [1.0, 2.0, 4.0], None)
    assert scores["pearson"] == 0.0
    assert scores["spearman"] == 0.0
    assert scores["neg_mse"] == approx(-(1 + 0 + 4) / 3)


def test_regression_rejects_non_finite() -> None:
    with pytest.raises(ValueError, match=r"predictions\[1\]"):
        compute_metrics("regression", [1.0, float("nan")], [1.0, 2.0], None)


def test_token_bio() -> None:
    # Sentence 0: gold PER(0-1) LOC(3), predicted PER(0-1). Sentence 1: LOC found.
    # TP=2, predicted 2, gold 3: P=1, R=2/3, F1=0.8. Words: 5 of 6 right.
    scores = compute_metrics("token", *EXAMPLES["token"])
    assert scores["entity_f1"] == approx(80.0)
    assert scores["accuracy"] == approx(100 * 5 / 6)


def test_token_bio_wrong_span_is_a_miss() -> None:
    # Predicted PER covers word 0 only; gold PER covers words 0-1: only LOC matches -> 1/2, 1/2.
    scores = compute_metrics("token", [[1, 0, 0, 3]], [[1, 2, 0, 3]], BIO)
    assert scores["entity_f1"] == approx(50.0)
    assert scores["accuracy"] == approx(75.0)


def test_token_non_bio_tags_report_accuracy_as_entity_f1() -> None:
    pos = ["NOUN", "VERB", "DET"]
    scores = compute_metrics("token", [[2, 0, 0]], [[2, 0, 1]], pos)
    assert scores["accuracy"] == approx(100 * 2 / 3)
    assert scores["entity_f1"] == scores["accuracy"]


def test_token_iobes_counts_as_entity_scheme() -> None:
    tags = ["O", "S-LOC", "B-PER", "E-PER"]
    # Gold: PER(0-1) LOC(2). Predicted: PER(0-1) only -> P=1, R=1/2, F1=2/3; words 2 of 3.
    scores = compute_metrics("token", [[2, 3, 0]], [[2, 3, 1]], tags)
    assert scores["entity_f1"] == approx(100 * 2 / 3)
    assert scores["accuracy"] == approx(100 * 2 / 3)


def test_token_length_mismatch_names_the_sentence() -> None:
    with pytest.raises(ValueError, match="sentence 1"):
        compute_metrics("token", [[0], [0, 1]], [[0], [0, 1, 0]], BIO)


def test_token_needs_labels() -> None:
    with pytest.raises(ValueError, match="labels"):
        compute_metrics("token", [[0]], [[0]], None)


@pytest.mark.parametrize("task_type", sorted(TASK_METRICS))
def test_empty_inputs_raise(task_type: str) -> None:
    with pytest.raises(ValueError, match="empty"):
        compute_metrics(task_type, [], [], ["O", "B-X"])


@pytest.mark.parametrize("task_type", sorted(TASK_METRICS))
def test_length_mismatch_raises(task_type: str) -> None:
    preds, refs, labels = EXAMPLES[task_type]
    with pytest.raises(ValueError, match="references"):
        compute_metrics(task_type, preds[:-1], refs, labels)


def test_unknown_task_type_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown task type") as info:
        compute_metrics("translation", [1], [1], None)
    for name in TASK_METRICS:
        assert name in str(info.value)


def test_aggregate_score_is_unweighted_mean() -> None:
    assert aggregate_score({"sst2": 90.0, "cola": 40.0, "stsb": 80.0}) == approx(70.0)
    with pytest.raises(ValueError):
        aggregate_score({})


def test_confusion_rows_are_references() -> None:
    # (true, pred) pairs: (0,0) (0,1) (1,1) (2,1); class 2 never predicted still gets a column.
    assert confusion([0, 1, 1, 1], [0, 0, 1, 2], 3) == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    assert all(type(c) is int for row in confusion([0], [0], 2) for c in row)
    with pytest.raises(ValueError):
        confusion([3], [0], 2)


def _table_rows() -> dict[str, dict[str, float]]:
    return {task: compute_metrics(task, *example) for task, example in EXAMPLES.items()}


@pytest.mark.parametrize("formatter", [format_table, format_markdown_table])
def test_tables_hold_every_task_and_metric(formatter) -> None:
    rows = _table_rows()
    text = formatter(rows, {"classification": "f1"})
    for task, scores in rows.items():
        assert task in text
        for metric in scores:
            assert metric in text
    assert "*" in text
    assert "66.7*" in text.replace("\\*", "*")  # classification f1 chosen as main
    assert "60.0*" not in text.replace("\\*", "*")  # so accuracy is not marked
    assert "-9.5" in text  # neg_mse with significant digits


def test_plain_table_is_fixed_width_and_marks_default_main() -> None:
    text = format_table(_table_rows())
    lines = text.splitlines()
    body = lines[2:-1]
    assert len(body) == len(EXAMPLES)
    # Every row ends at the same column (the last metric column is right-aligned).
    assert len({len(line) for line in [lines[0], *body]}) == 1
    # Default main metric is the first metric of each row.
    assert "82.2*" in text  # regression pearson
    assert "75.0*" in text  # multilabel micro_f1


def test_markdown_table_shape() -> None:
    text = format_markdown_table({"a": {"accuracy": 91.54}, "b|c": {"neg_mse": -0.123456}})
    lines = text.splitlines()
    assert lines[0] == "| task | accuracy | neg_mse |"
    assert lines[1] == "|---|---:|---:|"
    assert lines[2] == "| a | 91.5\\* | - |"
    assert lines[3] == "| b\\|c | - | -0.1235\\* |"


def test_table_rejects_unknown_main_metric() -> None:
    with pytest.raises(ValueError, match="main metric"):
        format_table({"a": {"accuracy": 1.0}}, {"a": "f1"})


def test_eval_package_does_not_import_torch() -> None:
    code = "import sys, promptmux.eval; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
