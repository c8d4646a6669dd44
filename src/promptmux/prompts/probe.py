"""The cheap proxy that scores a prompt: frozen-encoder embeddings and a linear probe.

A candidate template is applied to a capped sample of training rows and to the rows it is scored
on; the frozen encoder embeds every row (pooled over tokens, as the task's head would pool), a
linear probe is fitted on the training embeddings (logistic regression for classification, one per
label for multilabel, ridge for regression), and the probe's predictions are scored with the task's
metrics plus the information gain IG = H(Y) - H(Y | Ŷ) between gold and predicted labels.

This is a linear probe in the sense of Alain & Bengio (2016), "Understanding intermediate layers
using linear classifier probes" (https://arxiv.org/abs/1610.01644): it measures how linearly
readable the task is from the frozen encoder's view of the prompted text, with no training of the
encoder, so that a dozen candidates cost minutes rather than a dozen fine-tuning runs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from promptmux.data.collate import collate
from promptmux.data.encode import encode_examples
from promptmux.eval.metrics import compute_metrics
from promptmux.model.backbone import pool
from promptmux.precision import autocast
from promptmux.prompts.information import entropy, information_gain, quantile_bins
from promptmux.tasks.spec import Example

# Regression targets are read as this many quantile bins to report an information gain.
REGRESSION_BINS = 5


@dataclass(frozen=True)
class ProbeScore:
    """Scores of the probe's predictions on one split.

    `accuracy` is the subset accuracy for multilabel and None for regression. `gain` is IG in bits
    (multilabel: the mean over labels of each label's yes/no IG; regression: IG between gold and
    predicted values binned by the quantiles of gold). `entropy` is H(Y) on the same terms, the
    most `gain` can be.
    """

    metrics: dict[str, float]
    accuracy: float | None
    gain: float
    entropy: float
    predictions: np.ndarray


@torch.inference_mode()
def embed(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: list[Example],
    task_type: str,
    n_labels: int,
    max_length: int,
    pooling: str,
    precision: str = "auto",
    batch_size: int = 64,
) -> np.ndarray:
    """One pooled float32 vector per example, in input order ([n, hidden]).

    Rows are batched by length (shortest first) so that padding stays small; bf16 autocast is used
    when `precision` is "bf16" (or "auto" on hardware with native bf16: promptmux.precision), which
    rounds the encoder's matmuls but not the pooled output.
    """
    enc = encode_examples(examples, tokenizer, task_type, max_length, n_labels)
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id or 0
    order = np.argsort(enc.lengths, kind="stable")
    out: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate([("probe", enc, idx)], pad_id).to(device)
        extra = {} if batch.token_type_ids is None else {"token_type_ids": batch.token_type_ids}
        with autocast(device, precision):
            hidden = model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, **extra
            ).last_hidden_state
        vectors = pool(hidden.float(), batch.attention_mask, pooling, batch.token_type_ids).cpu().numpy()
        if out is None:
            out = np.zeros((len(examples), vectors.shape[1]), dtype=np.float32)
        out[idx] = vectors
    assert out is not None, "embed() needs at least one example"
    return out


def targets(examples: list[Example], task_type: str, n_labels: int) -> np.ndarray:
    """Gold labels as the probe reads them: ids, floats, or a [n, n_labels] 0/1 matrix."""
    if task_type == "classification":
        return np.asarray([ex.label for ex in examples], dtype=np.int64)
    if task_type == "regression":
        return np.asarray([ex.label for ex in examples], dtype=np.float64)
    y = np.zeros((len(examples), n_labels), dtype=np.int64)
    for i, ex in enumerate(examples):
        y[i, list(ex.label)] = 1  # type: ignore[arg-type]
    return y


def fit_probe(task_type: str, x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """A standardised linear model fitted on (x, y); deterministic for a given seed."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if task_type == "regression":
        model: Any = Ridge(alpha=1.0)
    else:
        model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
        if task_type == "multilabel":
            model = OneVsRestClassifier(model)
    probe = make_pipeline(StandardScaler(), model)
    with warnings.catch_warnings():
        # Non-convergence after 2,000 lbfgs steps and labels absent from a small sample are
        # acceptable for a proxy; the score says how good the fit is.
        warnings.simplefilter("ignore")
        probe.fit(x, y)
    return probe


def predict(probe: Any, x: np.ndarray) -> np.ndarray:
    """The probe's predictions on x: class ids, a [n, n_labels] 0/1 matrix, or floats."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(probe.predict(x))


def score_probe(
    task_type: str, probe: Any, x: np.ndarray, y: np.ndarray, labels: list[str] | None
) -> ProbeScore:
    """The probe's metrics, accuracy and information gain on (x, y)."""
    return score_predictions(task_type, predict(probe, x), y, labels)


def score_predictions(
    task_type: str, pred: np.ndarray, y: np.ndarray, labels: list[str] | None
) -> ProbeScore:
    """Metrics, accuracy and information gain of predictions `pred` against gold `y`.

    Scores a fitted probe's predictions as well as pooled out-of-fold ones (promptmux.prompts.cv).
    """
    if task_type == "classification":
        metrics = compute_metrics(task_type, pred.tolist(), y.tolist(), labels)
        h = entropy(np.bincount(y))
        return ProbeScore(metrics, metrics["accuracy"], information_gain(y, pred), h, pred)
    if task_type == "multilabel":
        as_sets = [np.flatnonzero(row).tolist() for row in np.asarray(pred)]
        gold_sets = [np.flatnonzero(row).tolist() for row in y]
        metrics = compute_metrics(task_type, as_sets, gold_sets, labels)
        gains = [information_gain(y[:, k], np.asarray(pred)[:, k]) for k in range(y.shape[1])]
        hs = [entropy(np.bincount(y[:, k], minlength=2)) for k in range(y.shape[1])]
        gain, h = float(np.mean(gains)), float(np.mean(hs))
        return ProbeScore(metrics, metrics["subset_accuracy"], gain, h, np.asarray(pred))
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    metrics = compute_metrics(task_type, pred.tolist(), y.tolist(), labels)
    gold_bins = quantile_bins(y, y, REGRESSION_BINS)
    pred_bins = quantile_bins(y, pred, REGRESSION_BINS)
    gain = information_gain(gold_bins, pred_bins)
    return ProbeScore(metrics, None, gain, entropy(np.bincount(gold_bins)), pred)
