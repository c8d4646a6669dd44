"""Per-label keywords mined from training data by information gain (pure functions).

A word is scored by how much knowing whether it occurs in a text tells about the text's label:
IG(w) = H(Y) - H(Y | w present / absent), in bits. Each word is attributed to the label it is most
associated with (the label whose texts contain it most often, relative to that label's size, i.e.
the largest P(w | y)), and each label keeps its highest-gain words. Prompt search turns those words
into templates such as "{text} (great or awful?)".

This is the classic feature-selection score of text categorisation (Yang & Pedersen, 1997,
"A comparative study on feature selection in text categorization"); here it only picks words.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Function words carry no label on their own and would crowd the lists of short texts.
_STOPWORDS = """
    a about above after again against all am an and any are aren't as at be because been before
    being below between both but by can cannot could couldn't did didn't do does doesn't doing
    don't down during each few for from further had hadn't has hasn't have haven't having he he'd
    he'll he's her here here's hers herself him himself his how how's i i'd i'll i'm i've if in
    into is isn't it it's its itself let's me more most mustn't my myself no nor not of off on once
    only or other ought our ours ourselves out over own same shan't she she'd she'll she's should
    shouldn't so some such than that that's the their theirs them themselves then there there's
    these they they'd they'll they're they've this those through to too under until up very was
    wasn't we we'd we'll we're we've were weren't what what's when when's where where's which while
    who who's whom why why's with won't would wouldn't you you'd you'll you're you've your yours
    yourself yourselves also just one two its said says say will may might must shall us lrb rrb
"""
STOPWORDS: frozenset[str] = frozenset(_STOPWORDS.split())

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")
_KEEP = re.compile(r"^[a-z]{3,}$")  # plain words only: they must read well inside a prompt


@dataclass(frozen=True, slots=True)
class Keyword:
    """A mined word: the label it points to, its information gain (bits) and document frequency."""

    word: str
    label: int
    gain: float
    count: int


def words(text: str) -> set[str]:
    """The distinct lowercase content words of `text` (3+ letters, stopwords dropped)."""
    return {w for w in _WORD.findall(text.lower()) if _KEEP.match(w) and w not in STOPWORDS}


def _entropy_rows(counts: np.ndarray) -> np.ndarray:
    """Entropy in bits of each row of a non-negative count matrix (0 for empty rows)."""
    totals = counts.sum(axis=1, keepdims=True)
    p = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    logs = np.log2(p, out=np.zeros_like(p), where=p > 0)
    return -(p * logs).sum(axis=1)


def mine_keywords(
    texts: Sequence[str],
    labels: Sequence[int],
    n_labels: int,
    top_k: int = 5,
    min_count: int = 5,
) -> dict[int, list[Keyword]]:
    """The `top_k` highest-gain words of each label.

    Args:
        texts: training texts (for text pairs, both texts joined).
        labels: one class id per text, in [0, n_labels).
        n_labels: number of classes.
        top_k: words kept per label.
        min_count: rare words (in fewer than this many texts) are dropped: their gain is noise.

    Returns:
        label id -> its words, highest gain first (ties: alphabetical). A label may get fewer than
        `top_k` words, or none, when few words point to it.

    Raises:
        ValueError: texts and labels of different lengths, or a label id outside [0, n_labels).
    """
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels; they must pair up")
    y = np.asarray(labels, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= n_labels):
        raise ValueError(
            f"label ids must lie in [0, {n_labels}), got {int(y.min())}..{int(y.max())}"
        )
    per_label = [Counter() for _ in range(n_labels)]
    for text, label in zip(texts, y):
        per_label[label].update(words(text))
    df: Counter[str] = Counter()
    for c in per_label:
        df.update(c)
    vocab = sorted(w for w, n in df.items() if n >= min_count)
    out: dict[int, list[Keyword]] = {k: [] for k in range(n_labels)}
    if not vocab:
        return out
    present = np.array([[c.get(w, 0) for c in per_label] for w in vocab], dtype=np.float64)
    sizes = np.bincount(y, minlength=n_labels).astype(np.float64)
    absent = sizes[None, :] - present
    n = float(y.size)
    p_present = present.sum(axis=1) / n
    h_y = _entropy_rows(sizes[None, :])[0]
    conditional = p_present * _entropy_rows(present) + (1 - p_present) * _entropy_rows(absent)
    gain = np.maximum(0.0, h_y - conditional)
    # Attribution by P(w | y): a word belongs to the label whose texts use it most often.
    rate = np.divide(present, sizes[None, :], out=np.zeros_like(present), where=sizes[None, :] > 0)
    owner = rate.argmax(axis=1)
    order = sorted(range(len(vocab)), key=lambda i: (-gain[i], vocab[i]))
    for i in order:
        label = int(owner[i])
        if len(out[label]) < top_k and gain[i] > 0:
            out[label].append(Keyword(vocab[i], label, float(gain[i]), int(present[i].sum())))
    return out
