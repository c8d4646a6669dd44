"""Prompt search for a decoder: (template, verbalizer) candidates scored zero-shot by the LM.

With `model.kind: decoder` a classification task answers with words, so a prompt is a template
and a verbalizer. The proxy is the untrained LM itself, predicting as a decoder bundle predicts:
each row's label is the one whose verbalizer words the LM finds likeliest after the filled-in
template (promptmux.t2t.infer.score_labels). Nothing is fitted, so a candidate's score on the
selection rows is already out-of-sample and needs no folds; the chosen candidate is the one with
the best main metric on a seeded sample of TRAIN rows. Its gaps over the runner-up and the median
candidate carry paired standard errors (per-row jackknife values, promptmux.prompts.cv). Dev is
scored for every candidate and never used to choose.

Small LMs are known to be sensitive to exactly these choices (Zhao et al. 2021, "Calibrate Before
Use", https://arxiv.org/abs/2102.09690, show accuracy swinging across templates and label words),
which is what makes the search worth running before training a decoder on a task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from promptmux.config.schema import Config, TaskConfig
from promptmux.errors import ConfigError
from promptmux.prompts.candidates import Candidate, build_decoder_candidates
from promptmux.prompts.cv import paired_gaps, row_values
from promptmux.prompts.probe import ProbeScore, score_predictions, targets
from promptmux.tasks.spec import Example, TaskData

# Prompts per LM pass; one-token verbalizers take one row per prompt (promptmux.t2t.infer).
SCORE_BATCH = 16


def check_decoder_task(name: str, task: TaskConfig) -> None:
    """Raise ConfigError unless a decoder's prompt search can score `task` (classification only)."""
    if task.type != "classification":
        raise ConfigError(
            f"tasks.{name}: prompt search with model.kind: decoder scores classification tasks "
            f"through their verbalizers; a {task.type} task has no answer words to compare"
        )


def load_decoder(cfg: Config, task: str) -> tuple[Any, Any]:
    """(T2TModel with one task, tokenizer) from `model.backbone`, in eval mode."""
    from transformers import AutoTokenizer

    from promptmux.model.backbone import resolve_backbone
    from promptmux.t2t.model import build_model, load_lm

    base = resolve_backbone(cfg.model.backbone)
    tokenizer = AutoTokenizer.from_pretrained(base)
    return build_model(load_lm(str(base)), [task]).eval(), tokenizer


def distinct_answers(candidates: list[Candidate], tokenizer) -> tuple[list[Candidate], list[Candidate]]:
    """(kept, dropped): a candidate is dropped when two of its labels' answer words tokenize to the
    same ids (e.g. both unknown to the tokenizer): the LM could not tell those labels apart."""
    from promptmux.t2t.data import tokenize_answers

    kept, dropped = [], []
    for cand in candidates:
        ids = [tuple(a) for a in tokenize_answers(list(cand.verbalizer or ()), tokenizer)]
        (kept if len(set(ids)) == len(ids) else dropped).append(cand)
    return kept, dropped


def candidate_predictions(
    cfg: Config, task: str, pair: bool, labels: list[str], cand: Candidate, rows: list[Example], backbone: tuple[Any, Any]
) -> np.ndarray:
    """The LM's predicted label ids for `rows` under one (template, verbalizer) candidate."""
    from promptmux.t2t.infer import score_labels
    from promptmux.t2t.tasks import T2TTask

    assert cand.verbalizer is not None
    t2t = T2TTask(task, "classification", labels, cfg.main_metric(task), cand.template, pair,
                  verbalizer=dict(zip(labels, cand.verbalizer, strict=True)))
    model, tokenizer = backbone
    scores = score_labels(model, t2t, rows, tokenizer, cfg.model.max_length, SCORE_BATCH, cfg.train.precision)
    return scores.argmax(-1)


def search_decoder(
    cfg: Config,
    task: str,
    data: TaskData,
    select_rows: list[Example],
    keywords: dict[int, list[Any]],
    max_candidates: int,
    progress: Callable[[str], None] | None = None,
    backbone: tuple[Any, Any] | None = None,
) -> dict[str, Any]:
    """Score every decoder candidate zero-shot on `select_rows` (train) and on dev; choose the best.

    Returns the pieces of a `SearchResult` (see promptmux.prompts.search): results, chosen, gaps.
    """
    from promptmux.prompts.search import CandidateResult, choose
    from promptmux.t2t.data import tokenize_answers

    t = cfg.tasks[task]
    check_decoder_task(task, t)
    labels = list(data.labels or [])
    build_decoder_candidates(task, t, keywords, labels, max_candidates)  # config errors before the LM loads
    if backbone is None:
        backbone = load_decoder(cfg, task)
    tokenizer = backbone[1]
    candidates = build_decoder_candidates(
        task, t, keywords, labels, max_candidates, one_token=lambda word: len(tokenize_answers([word], tokenizer)[0]) == 1
    )
    candidates, dropped = distinct_answers(candidates, backbone[1])
    if progress is not None:
        for cand in dropped:
            progress(f"skipped {cand.describe()!r}: two labels' answer words are the same tokens")
    if not candidates:
        raise ConfigError(
            f"tasks.{task}.verbalizer: every candidate verbalizer gives two labels the same tokens "
            f"({', '.join(repr(c.describe()) for c in dropped[:3])}); use words the tokenizer knows"
        )
    dev = data.split("dev")
    metric = cfg.main_metric(task)
    pair = t.fields.text_b is not None
    y_sel = targets(select_rows, t.type, len(labels))
    y_dev = targets(dev, t.type, len(labels))
    results: list[CandidateResult] = []
    for i, cand in enumerate(candidates):
        t0 = time.perf_counter()
        pred = candidate_predictions(cfg, task, pair, labels, cand, select_rows, backbone)
        sel: ProbeScore = score_predictions(t.type, pred, y_sel, labels)
        dev_score = score_predictions(t.type, candidate_predictions(cfg, task, pair, labels, cand, dev, backbone), y_dev, labels)
        values = row_values(t.type, metric, pred, y_sel, labels)
        results.append(CandidateResult(cand, sel, dev_score, time.perf_counter() - t0, values))
        if progress is not None:
            progress(
                f"[{i + 1}/{len(candidates)}] train {metric} {sel.metrics[metric]:.2f}  dev "
                f"{dev_score.metrics[metric]:.2f}  ({results[-1].seconds:.0f} s)  {cand.describe()!r}"
            )
    scores = [r.cv.metrics[metric] for r in results]
    chosen = choose(scores)
    return {
        "results": results,
        "chosen": chosen,
        "gaps": paired_gaps(scores, [r.row_values for r in results], chosen),
        "dev_gold": y_dev,
    }
