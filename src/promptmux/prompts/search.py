"""Data-driven prompt search: score candidate templates with a cheap proxy and keep the best.

The search is honest about selection: a seeded selection split is carved out of the task's TRAIN
rows, and the winner is the candidate with the best main metric there. The task's dev split is
never used to choose; every candidate is also scored on it, so that the report can say how the
chosen prompt compares with the median candidate on data the choice never saw.

Rows used (all seeded by `cfg.seed`):
    selection   `select_rows` train rows (at most a third of train), to choose on;
    probe train `train_rows` of the other train rows, to fit each candidate's linear probe;
    keywords    all non-selection train rows (at most 50,000), to mine per-label keywords;
    dev         the task's dev split (cap it with `tasks.T.data.max_examples.dev`).

Scoring proxy: promptmux.prompts.probe (frozen encoder, pooled embeddings, linear probe).
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
from promptmux.prompts.candidates import Candidate, build_candidates
from promptmux.prompts.keywords import Keyword, mine_keywords
from promptmux.prompts.probe import ProbeScore, embed, fit_probe, score_probe, targets
from promptmux.prompts.templates import apply_template
from promptmux.tasks.spec import Example, TaskData

MIN_PROBE_ROWS = 20
MIN_SELECT_ROWS = 10
KEYWORD_ROWS = 50_000
# Rows per encoder pass. Sorted by length, small batches pad little; measured on 2 shared cores
# (MiniLM, SST-2 rows), 32 was 20-50% faster than 128.
EMBED_BATCH = 32


@dataclass
class CandidateResult:
    """One candidate's scores on the selection split and on dev (and how long it took)."""

    candidate: Candidate
    select: ProbeScore
    dev: ProbeScore
    seconds: float

    @property
    def template(self) -> str:
        return self.candidate.template


@dataclass
class SearchResult:
    """Every candidate's scores, the chosen one, and what the search was run on."""

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

    @property
    def best(self) -> CandidateResult:
        return self.results[self.chosen]

    def dev_scores(self) -> list[float]:
        return [r.dev.metrics[self.metric] for r in self.results]

    def median_dev(self) -> float:
        """The median over candidates of the dev main metric."""
        return float(np.median(self.dev_scores()))

    def ranked(self) -> list[CandidateResult]:
        """Candidates by selection score, best first (ties: candidate order)."""
        order = sorted(range(len(self.results)), key=lambda i: (-self._sel(i), i))
        return [self.results[i] for i in order]

    def _sel(self, i: int) -> float:
        return self.results[i].select.metrics[self.metric]


def choose(select_scores: list[float]) -> int:
    """Index of the best selection score; the earliest candidate wins a tie."""
    if not select_scores:
        raise ValueError("no candidates to choose from")
    return int(np.argmax(np.asarray(select_scores, dtype=np.float64)))


def check_task(cfg: Config, task: str) -> TaskConfig:
    """The task's config, or a ConfigError saying why prompt search cannot run on it."""
    if task not in cfg.tasks:
        raise ConfigError(f"--task: no task {task!r} in the config; known: {', '.join(cfg.tasks)}")
    t = cfg.tasks[task]
    if t.type == "token":
        raise ConfigError(
            f"tasks.{task}: prompt search needs a text template, and token tasks tag the input "
            "words one by one and take none (a template would shift the words the tags belong to)"
        )
    return t


def carve_rows(
    train: list[Example], select_rows: int, train_rows: int, seed: int, task: str
) -> tuple[list[Example], list[Example], list[Example]]:
    """(probe train, selection, keyword rows) from a task's train split, seeded and disjoint.

    The selection split takes `select_rows` rows but never more than a third of train; the probe
    sample takes up to `train_rows` of the rest; keywords are mined from the rest (capped).

    Raises:
        ConfigError: non-positive row counts.
        DataError: too few train rows for both a probe and a selection split.
    """
    if select_rows < 1 or train_rows < 1:
        raise ConfigError(
            f"--select-rows and --train-rows must be >= 1, got {select_rows}, {train_rows}"
        )
    n_select = min(select_rows, len(train) // 3)
    if n_select < MIN_SELECT_ROWS or min(train_rows, len(train) - n_select) < MIN_PROBE_ROWS:
        raise DataError(
            f"tasks.{task} (train): {len(train)} rows, --train-rows {train_rows}, --select-rows "
            f"{select_rows}; prompt search needs at least {MIN_PROBE_ROWS} rows to fit the probe "
            f"and {MIN_SELECT_ROWS} to select on (the selection takes at most a third of train, so "
            f"at least {3 * MIN_SELECT_ROWS} train rows)"
        )
    order = list(range(len(train)))
    random.Random(f"{seed}:prompt-search").shuffle(order)
    select = [train[i] for i in sorted(order[:n_select])]
    rest = order[n_select:]
    probe = [train[i] for i in sorted(rest[:train_rows])]
    keyword_rows = [train[i] for i in sorted(rest[:KEYWORD_ROWS])]
    return probe, select, keyword_rows


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
    train_rows: int = 2000,
    select_rows: int = 1000,
    max_candidates: int = 12,
    progress: Callable[[str], None] | None = None,
    backbone: tuple[Any, Any] | None = None,
    data: TaskData | None = None,
) -> SearchResult:
    """Score every candidate template of `task` and choose the best on the selection split.

    Args:
        cfg: a validated config; `model.backbone`, `model.max_length`, pooling, `train.precision`
            and `seed` are used.
        task: the task to search prompts for.
        train_rows: rows to fit each candidate's probe on.
        select_rows: rows of the selection split (carved from train).
        max_candidates: most candidates to score (see promptmux.prompts.candidates for the order).
        progress: called with one line per scored candidate.
        backbone: an already loaded (encoder, tokenizer); loaded from the config when None.
        data: the task's loaded data; read from the config when None.

    Returns:
        The scores of every candidate and the index of the chosen one.
    """
    start = time.perf_counter()
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
    probe_rows, select, keyword_rows = carve_rows(
        data.split("train"), select_rows, train_rows, cfg.seed, task
    )
    n_labels = len(data.labels) if data.labels else 0
    y_train = targets(probe_rows, t.type, n_labels)
    if t.type == "classification" and len(np.unique(y_train)) < 2:
        raise DataError(
            f"tasks.{task} (train): the probe sample holds a single label; "
            f"add rows of another label"
        )
    keywords = task_keywords(keyword_rows, t.type, data.labels)
    candidates = build_candidates(task, t, keywords, data.labels, max_candidates)
    if backbone is None:
        from promptmux.model.backbone import load_backbone

        backbone = load_backbone(cfg.model.backbone)
    model, tokenizer = backbone
    model.eval()
    pooling = t.pooling or cfg.model.pooling
    y_select, y_dev = targets(select, t.type, n_labels), targets(dev, t.type, n_labels)
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
        probe = fit_probe(t.type, vectors(cand.template, probe_rows), y_train, cfg.seed)
        sel = score_probe(t.type, probe, vectors(cand.template, select), y_select, data.labels)
        dev_score = score_probe(t.type, probe, vectors(cand.template, dev), y_dev, data.labels)
        results.append(CandidateResult(cand, sel, dev_score, time.perf_counter() - t0))
        if progress is not None:
            progress(
                f"[{i + 1}/{len(candidates)}] select {metric} {sel.metrics[metric]:.2f}  dev "
                f"{dev_score.metrics[metric]:.2f}  ({results[-1].seconds:.0f} s)  {cand.template!r}"
            )
    chosen = choose([r.select.metrics[metric] for r in results])
    names = data.labels if t.type != "regression" else ["low", "high"]
    return SearchResult(
        task=task,
        task_type=t.type,
        metric=metric,
        results=results,
        chosen=chosen,
        keywords={names[k]: ws for k, ws in keywords.items()},  # type: ignore[index]
        sizes={
            "probe_train": len(probe_rows),
            "select": len(select),
            "dev": len(dev),
            "keyword_rows": len(keyword_rows),
            "train": len(data.split("train")),
        },
        settings={
            "train_rows": train_rows,
            "select_rows": select_rows,
            "max_candidates": max_candidates,
            "seed": cfg.seed,
            "backbone": cfg.model.backbone,
            "pooling": pooling,
            "max_length": cfg.model.max_length,
            "precision": cfg.train.precision,
        },
        dev_gold=y_dev,
        seconds=time.perf_counter() - start,
    )
