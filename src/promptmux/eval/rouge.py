"""ROUGE-1/2/L and exact match for generated text (pure functions).

Lin, "ROUGE: A Package for Automatic Evaluation of Summaries" (2004),
https://aclanthology.org/W04-1013/. ROUGE-N counts the n-grams a prediction shares with its
reference (each shared n-gram at most as often as it occurs in both: clipped counts); ROUGE-L
takes the longest common subsequence of the two token sequences. Each gives a precision (shared /
prediction), a recall (shared / reference) and their harmonic mean, the F-measure, which is what
we report, averaged over examples, on the 0-100 scale of the other metrics.

Tokens: lowercased runs of letters and digits (Unicode-aware, so accented and non-Latin words
count as words; punctuation separates tokens and is dropped). No stemming: "runs" and "run" differ.
This is close to the `rouge-score` package with `use_stemmer=False` on English text; that package
drops non-ASCII characters, we keep them.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import NamedTuple

_WORD = re.compile(r"[^\W_]+")


class Score(NamedTuple):
    """Precision, recall and F-measure of one prediction, each in 0..1."""

    precision: float
    recall: float
    fmeasure: float


def tokenize(text: str) -> list[str]:
    """Lowercased words: runs of letters and digits; everything else separates them."""
    return _WORD.findall(text.lower())


def _score(overlap: int, n_pred: int, n_ref: int) -> Score:
    # Nothing to compare on one side (an empty prediction, or a text shorter than n): no credit,
    # as rouge-score does, rather than a division by zero.
    if overlap == 0 or n_pred == 0 or n_ref == 0:
        return Score(0.0, 0.0, 0.0)
    p, r = overlap / n_pred, overlap / n_ref
    return Score(p, r, 2 * p * r / (p + r))


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def rouge_n(prediction: str, reference: str, n: int) -> Score:
    """ROUGE-N of one prediction against one reference (clipped n-gram counts).

    Args:
        prediction: the generated text.
        reference: the gold text.
        n: n-gram length (1 for ROUGE-1, 2 for ROUGE-2).
    """
    if n < 1:
        raise ValueError(f"ROUGE-N needs n >= 1, got {n}")
    pred, ref = _ngrams(tokenize(prediction), n), _ngrams(tokenize(reference), n)
    overlap = sum((pred & ref).values())
    return _score(overlap, sum(pred.values()), sum(ref.values()))


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences (O(len(a)·len(b)) time)."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> Score:
    """ROUGE-L of one prediction against one reference (sentence-level LCS, F with beta = 1)."""
    pred, ref = tokenize(prediction), tokenize(reference)
    return _score(lcs_length(pred, ref), len(pred), len(ref))


def exact_match(prediction: str, reference: str) -> bool:
    """Whether both texts have the same tokens (case, spacing and punctuation ignored)."""
    return tokenize(prediction) == tokenize(reference)


def rouge_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-L, ROUGE-1, ROUGE-2 F-measures and exact match over examples, 0-100.

    Args:
        predictions: generated texts, one per example.
        references: gold texts, paired one to one with `predictions`.

    Raises:
        ValueError: empty inputs, lengths that differ, or a non-string item.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("ROUGE needs at least one prediction")
    for what, items in (("prediction", predictions), ("reference", references)):
        bad = next((i for i, t in enumerate(items) if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"{what} {bad} is a {type(items[bad]).__name__}; generation metrics compare texts")
    n = len(predictions)
    pairs = list(zip(predictions, references))
    return {
        "rougeL": 100.0 * sum(rouge_l(p, r).fmeasure for p, r in pairs) / n,
        "rouge1": 100.0 * sum(rouge_n(p, r, 1).fmeasure for p, r in pairs) / n,
        "rouge2": 100.0 * sum(rouge_n(p, r, 2).fmeasure for p, r in pairs) / n,
        "exact_match": 100.0 * sum(exact_match(p, r) for p, r in pairs) / n,
    }
