"""Data-driven prompt search: score candidate templates with a cheap proxy and keep the best.

The search is honest about selection: every candidate is scored by k-fold cross-validation of a
linear probe on a seeded sample of the task's TRAIN rows, and the winner is the candidate with the
best out-of-fold main metric. The task's dev split is never used to choose; every candidate is
also scored on it (a probe fitted on the whole sample), so that the report can say how the chosen
prompt compares with the median candidate on data the choice never saw.

Rows used (all seeded by `cfg.seed`):
    CV rows     `train_rows` train rows (all of train if fewer), split in `folds` folds
                (stratified for classification); every row is predicted once, out of fold;
    keywords    the other train rows (at most 50,000) to mine per-label keywords, or all train
                rows when fewer than `MIN_KEYWORD_ROWS` are left (see `carve_rows`);
    dev         the task's dev split (cap it with `tasks.T.data.max_examples.dev`).

Scoring proxy: promptmux.prompts.probe (frozen encoder, pooled embeddings, linear probe) and
promptmux.prompts.cv (folds, out-of-fold predictions, paired SEs). With `model.kind: decoder` the
proxy is the LM itself, zero-shot, over (template, verbalizer) candidates, and the CV rows are
simply the selection rows (nothing is fitted, so no folds): promptmux.prompts.zero_shot.
Candidates: promptmux.prompts.candidates. Output (table, config copy, report):
promptmux.prompts.search_output.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from promptmux.config.schema import Config, TaskConfig
from promptmux.errors import ConfigError, DataError
from promptmux.precision import resolve_precision
from promptmux.prompts.candidates import Candidate, build_candidates
from promptmux.prompts.cv import (
    PairedGap,
    check_cv_rows,
    check_folds,
    cross_val_predict,
    fold_ids,
    paired_gaps,
    row_values,
)
from promptmux.prompts.keywords import Keyword, mine_keywords
from promptmux.prompts.probe import (
    ProbeScore,
    embed,
    fit_probe,
    score_predictions,
    score_probe,
    targets,
)
from promptmux.prompts.templates import apply_template
from promptmux.tasks.spec import Example, TaskData

KEYWORD_ROWS = 50_000
# Fewer train rows than this left over after the CV sample: mine keywords from all train rows.
MIN_KEYWORD_ROWS = 1000
# Rows per encoder pass. Sorted by length, small batches pad little; measured on 2 shared cores
# (MiniLM, SST-2 rows), 32 was 20-50% faster than 128.
EMBED_BATCH = 32


@dataclass
class CandidateResult:
    """One candidate's cross-validated and dev scores (and how long it took).

    `cv` is the score the choice is made on: pooled out-of-fold predictions of the probe, or for a
    decoder the zero-shot predictions on the selection rows. `row_values` are the per-row jackknife
    values of the main metric on those rows (classification only; see
    promptmux.prompts.cv.row_values), for paired comparisons.
    """

    candidate: Candidate
    cv: ProbeScore
    dev: ProbeScore
    seconds: float
    row_values: np.ndarray | None = None

    @property
    def template(self) -> str:
        return self.candidate.template


@dataclass
class SearchResult:
    """Every candidate's scores, the chosen one, and what the search was run on.

    `gaps` holds the chosen candidate's CV advantage over the runner-up ("runner_up") and over the
    median candidate ("median"), each with its paired standard error.
    """

    task: str
    task_type: str
    metric: str
    results: list[CandidateResult]
    chosen: int
    keywords: dict[str, list[Keyword]]
    sizes: dict[str, int]
    settings: dict[str, Any] = field(default_factory=dict)
    dev_gold: np.ndarray | None = None
    seconds: float = 0.0
    folds: int = 5
    gaps: dict[str, PairedGap] = field(default_factory=dict)
    labels: list[str] | None = None  # the task's label names, in label id order

    @property
    def zero_shot(self) -> bool:
        """Scored by a decoder LM zero-shot (no folds) rather than by a cross-validated probe."""
        return self.folds == 0

    @property
    def best(self) -> CandidateResult:
        return self.results[self.chosen]

    def cv_scores(self) -> list[float]:
        return [r.cv.metrics[self.metric] for r in self.results]

    def dev_scores(self) -> list[float]:
        return [r.dev.metrics[self.metric] for r in self.results]

    def median_dev(self) -> float:
        """The median over candidates of the dev main metric."""
        return float(np.median(self.dev_scores()))

    def ranked(self) -> list[CandidateResult]:
        """Candidates by CV score, best first (ties: candidate order)."""
        scores = self.cv_scores()
        order = sorted(range(len(self.results)), key=lambda i: (-scores[i], i))
        return [self.results[i] for i in order]


def choose(cv_scores: list[float]) -> int:
    """Index of the best cross-validated score; the earliest candidate wins a tie."""
    if not cv_scores:
        raise ValueError("no candidates to choose from")
    return int(np.argmax(np.asarray(cv_scores, dtype=np.float64)))


def check_task(cfg: Config, task: str) -> TaskConfig:
    """The task's config, or a ConfigError saying why prompt search cannot run on it."""
    if task not in cfg.tasks:
        raise ConfigError(f"--task: no task {task!r} in the config; known: {', '.join(cfg.tasks)}")
    t = cfg.tasks[task]
    if cfg.model.kind == "decoder":
        from promptmux.prompts.zero_shot import check_decoder_task

        check_decoder_task(task, t)
    if t.type == "token":
        raise ConfigError(
            f"tasks.{task}: prompt search needs a text template, and token tasks tag the input "
            "words one by one and take none (a template would shift the words the tags belong to)"
        )
    return t


def carve_rows(
    train: list[Example], train_rows: int, seed: int
) -> tuple[list[Example], list[Example]]:
    """(CV rows, keyword rows) from a task's train split, seeded.

    The CV sample takes `train_rows` rows (all of train if fewer). Keywords are mined from the
    other rows (capped at `KEYWORD_ROWS`) when at least `MIN_KEYWORD_ROWS` are left, else from all
    train rows. Mining from the CV rows would not leak labels into the CV score: a template is the
    same text for every row, so it cannot tell the probe which label one row has. Disjoint rows are
    still cleaner (the CV score then judges keywords found elsewhere, as dev does), hence the
    preference when train is large enough.

    Raises:
        ConfigError: a non-positive `train_rows`.
    """
    if train_rows < 1:
        raise ConfigError(f"--train-rows must be >= 1, got {train_rows}")
    order = list(range(len(train)))
    random.Random(f"{seed}:prompt-search").shuffle(order)
    cv_rows = [train[i] for i in sorted(order[:train_rows])]
    rest = order[train_rows:]
    pool = rest if len(rest) >= MIN_KEYWORD_ROWS else order
    keyword_rows = [train[i] for i in sorted(pool[:KEYWORD_ROWS])]
    return cv_rows, keyword_rows


def task_keywords(
    rows: list[Example], task_type: str, labels: list[str] | None, top_k: int = 5
) -> dict[int, list[Keyword]]:
    """Per-label keywords for any task type (class ids; regression: 0 = low, 1 = high half)."""
    texts = [ex.text if ex.text_b is None else f"{ex.text} {ex.text_b}" for ex in rows]
    if task_type == "classification":
        assert labels is not None
        ids = [int(ex.label) for ex in rows]  # type: ignore[arg-type]
        return mine_keywords(texts, ids, len(labels), top_k)
    if task_type == "regression":
        values = np.asarray([ex.label for ex in rows], dtype=np.float64)
        high = (values > np.median(values)).astype(int).tolist()
        return mine_keywords(texts, high, 2, top_k)
    assert labels is not None
    out: dict[int, list[Keyword]] = {}
    for k in range(len(labels)):
        # Each label against the rest; its words are those pointing to "label present".
        has = [int(k in ex.label) for ex in rows]  # type: ignore[operator]
        out[k] = [kw for kw in mine_keywords(texts, has, 2, top_k)[1]]
    return out


def search_prompts(
    cfg: Config,
    task: str,
    train_rows: int = 4000,
    folds: int = 5,
    max_candidates: int = 12,
    progress: Callable[[str], None] | None = None,
    backbone: tuple[Any, Any] | None = None,
    data: TaskData | None = None,
) -> SearchResult:
    """Score every candidate prompt of `task` on train rows and choose the best.

    An encoder's candidates (templates) are scored by k-fold CV of a linear probe; a decoder's
    (`model.kind: decoder`: template + verbalizer) by the LM zero-shot, with no folds.

    Args:
        cfg: a validated config; `model.kind`, `model.backbone`, `model.max_length`, pooling,
            `train.precision` and `seed` are used.
        task: the task to search prompts for.
        train_rows: train rows to choose on (all if fewer): the probe's CV rows, whose fit also
            scores dev, or the rows a decoder is scored on.
        folds: number of cross-validation folds (>= 2; unused by a decoder).
        max_candidates: most candidates to score (see promptmux.prompts.candidates for the order).
        progress: called with one line per scored candidate.
        backbone: an already loaded (encoder, tokenizer), or for a decoder (T2TModel, tokenizer);
            loaded from the config when None.
        data: the task's loaded data; read from the config when None.

    Returns:
        The scores of every candidate, the index of the chosen one and its paired CV gaps.
    """
    start = time.perf_counter()
    check_folds(folds)
    t = check_task(cfg, task)
    if data is None:
        from promptmux.tasks.build import load_task

        data = load_task(task, t)
    dev = data.split("dev")
    if not dev:
        raise DataError(
            f"tasks.{task} (dev): no dev rows to report on; give tasks.{task}.data.dev or set "
            f"tasks.{task}.data.split.dev_fraction > 0"
        )
    cv_rows, keyword_rows = carve_rows(data.split("train"), train_rows, cfg.seed)
    keywords = task_keywords(keyword_rows, t.type, data.labels)
    sizes = {
        "cv": len(cv_rows),
        "dev": len(dev),
        "keyword_rows": len(keyword_rows),
        "train": len(data.split("train")),
    }
    settings = {
        "train_rows": train_rows,
        "max_candidates": max_candidates,
        "seed": cfg.seed,
        "backbone": cfg.model.backbone,
        "max_length": cfg.model.max_length,
        "precision": resolve_precision(cfg.train.precision, "cpu", warn=False),  # it runs on the CPU
        "keywords_disjoint_from_cv": len(data.split("train")) - len(cv_rows) >= MIN_KEYWORD_ROWS,
    }
    names = data.labels if t.type != "regression" else ["low", "high"]
    named_keywords = {names[k]: ws for k, ws in keywords.items()}  # type: ignore[index]
    if cfg.model.kind == "decoder":
        from promptmux.prompts.zero_shot import search_decoder

        found = search_decoder(cfg, task, data, cv_rows, keywords, max_candidates, progress, backbone)
        return SearchResult(
            task=task,
            task_type=t.type,
            metric=cfg.main_metric(task),
            keywords=named_keywords,
            sizes=sizes,
            settings={**settings, "proxy": "zero-shot"},
            seconds=time.perf_counter() - start,
            folds=0,
            labels=data.labels,
            **found,
        )
    n_labels = len(data.labels) if data.labels else 0
    y_cv = targets(cv_rows, t.type, n_labels)
    check_cv_rows(y_cv, t.type, folds, task, data.labels)
    fold_of = fold_ids(y_cv, t.type, folds, cfg.seed)
    candidates = build_candidates(task, t, keywords, data.labels, max_candidates)
    if backbone is None:
        from promptmux.model.backbone import load_backbone

        backbone = load_backbone(cfg.model.backbone)
    model, tokenizer = backbone
    model.eval()
    pooling = t.pooling or cfg.model.pooling
    y_dev = targets(dev, t.type, n_labels)
    metric = cfg.main_metric(task)

    def vectors(template: str, rows: list[Example]) -> np.ndarray:
        return embed(
            model,
            tokenizer,
            apply_template(template, rows),
            t.type,
            n_labels,
            cfg.model.max_length,
            pooling,
            cfg.train.precision,
            EMBED_BATCH,
        )

    results: list[CandidateResult] = []
    for i, cand in enumerate(candidates):
        t0 = time.perf_counter()
        # Embedded once; the k fold probes and the dev probe all reuse these vectors.
        x_cv = vectors(cand.template, cv_rows)
        oof = cross_val_predict(t.type, x_cv, y_cv, fold_of, cfg.seed)
        cv = score_predictions(t.type, oof, y_cv, data.labels)
        probe = fit_probe(t.type, x_cv, y_cv, cfg.seed)
        dev_score = score_probe(t.type, probe, vectors(cand.template, dev), y_dev, data.labels)
        values = row_values(t.type, metric, oof, y_cv, data.labels)
        results.append(CandidateResult(cand, cv, dev_score, time.perf_counter() - t0, values))
        if progress is not None:
            progress(
                f"[{i + 1}/{len(candidates)}] CV {metric} {cv.metrics[metric]:.2f}  dev "
                f"{dev_score.metrics[metric]:.2f}  ({results[-1].seconds:.0f} s)  {cand.template!r}"
            )
    scores = [r.cv.metrics[metric] for r in results]
    chosen = choose(scores)
    return SearchResult(
        task=task,
        task_type=t.type,
        metric=metric,
        results=results,
        chosen=chosen,
        keywords=named_keywords,
        sizes=sizes,
        settings={**settings, "proxy": "probe", "folds": folds, "pooling": pooling},
        dev_gold=y_dev,
        seconds=time.perf_counter() - start,
        folds=folds,
        gaps=paired_gaps(scores, [r.row_values for r in results], chosen),
        labels=data.labels,
    )
