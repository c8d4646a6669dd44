"""Data-driven prompt search on real data: does the chosen prompt beat the median candidate on dev?

For each task, `promptmux.prompts.search.search_prompts` scores every candidate template (plain
input, keyword-built prompts mined from train by information gain, label-name prompts, generic
prompts) with a frozen MiniLM and a linear probe, and chooses the best by k-fold cross-validation
of the probe on a seeded sample of TRAIN rows. For the chosen prompt, the CV gaps over the
runner-up and over the median candidate come with paired standard errors (same rows, same folds).
The task's dev split is never used to choose; it is where the chosen prompt is compared with the
median candidate. A paired bootstrap over dev rows (the same resample for every candidate) gives a
95% interval for "chosen minus median candidate".

Tasks: GLUE SST-2, MRPC and RTE from configs/glue5.yaml, and AG News (its 10,429-row train prefix;
the official test set, capped, as dev) from shared/data.

`--decoder`: the same search for a decoder LM (the packaged Gemma 3 270M, extra `promptmux[gemma]`),
where a candidate is a template and a verbalizer and the proxy is the untrained LM's zero-shot
prediction on the train rows (promptmux.prompts.zero_shot); tasks SST-2 and AG News.

Usage (from the repository root; data under ../shared/data or $PROMPTMUX_DATA):

    .venv/bin/python bench/prompt_search.py                       # sst2,mrpc,rte,ag_news
    .venv/bin/python bench/prompt_search.py --tasks sst2 --tag try
    .venv/bin/python bench/prompt_search.py --tasks mrpc --train-rows 300 --results-dir /tmp/ps
    .venv/bin/python bench/prompt_search.py --decoder --tasks sst2,ag_news --tag decoder
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import GLUE5, RESULTS, describe, environment, glue_config, setup, write_report

AG_NEWS = {
    "type": "classification",
    "data": {
        "train": "ag_news/train_subset_first10429.csv",
        "dev": "ag_news/test.csv",
        "header": False,
        "columns": ["label", "title", "description"],
        "max_examples": {"dev": 800},
    },
    "fields": {"text": "description", "label": "label"},
}
GEMMA = GLUE5.parent / "t2t_gemma.yaml"
# The decoder's own prompts (the "current" candidates); AG News labels 1-4 are World, Sports,
# Business, Sci/Tech.
DECODER_PROMPTS = {
    "sst2": {"prompt": {"template": "Review: {text}\nSentiment:"}, "verbalizer": {"0": "negative", "1": "positive"}},
    "ag_news": {
        "prompt": {"template": "Article: {text}\nTopic:"},
        "verbalizer": {"1": "world", "2": "sports", "3": "business", "4": "technology"},
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--tasks", default="sst2,mrpc,rte,ag_news", help="glue5 task names and/or ag_news"
    )
    p.add_argument(
        "--train-rows",
        type=int,
        default=None,
        help="train rows (all if fewer) to choose on: the probe's CV rows (default 4000), or the "
        "rows the decoder scores zero-shot (default 500)",
    )
    p.add_argument(
        "--decoder",
        action="store_true",
        help="search template x verbalizer for the packaged Gemma 3 270M, scored zero-shot",
    )
    p.add_argument("--dev-rows", type=int, default=None, help="cap on dev rows per task (seeded)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (>= 2)")
    p.add_argument("--max-candidates", type=int, default=10)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--bootstrap", type=int, default=1000, help="paired bootstrap resamples of dev")
    p.add_argument("--threads", type=int, default=1, help="1: no spin-waiting on shared cores")
    p.add_argument("--tag", default="", help="suffix of the result files (prompt_search<-tag>.md)")
    p.add_argument(
        "--results-dir", type=Path, default=RESULTS, help="folder for the .md and .json results"
    )
    args = p.parse_args(argv)
    if args.folds < 2:
        p.error(f"--folds must be >= 2, got {args.folds}")
    if args.train_rows is None:
        args.train_rows = 500 if args.decoder else 4000
    return args


def task_config(name: str, max_length: int, decoder: bool = False, dev_rows: int | None = None):
    """The one-task config: a glue5.yaml task, or AG News read from the same data root; with
    `decoder`, the task on t2t_gemma.yaml's model with its decoder prompt and verbalizer."""
    overrides: dict[str, Any] = {"model.max_length": max_length}
    if dev_rows:
        overrides[f"tasks.{name}.data.max_examples.dev"] = dev_rows
    if name != "ag_news" and not decoder:
        return glue_config(name, overrides, [])
    import yaml

    from promptmux.config import config_from_dict

    raw = yaml.safe_load((GEMMA if decoder else GLUE5).read_text(encoding="utf-8"))
    if name == "ag_news":
        task = dict(AG_NEWS)
    else:
        task = yaml.safe_load(GLUE5.read_text(encoding="utf-8"))["tasks"][name]
        task.pop("prompt", None)
    if decoder:
        if name not in DECODER_PROMPTS:
            raise SystemExit(f"--decoder: tasks {', '.join(DECODER_PROMPTS)} only, not {name}")
        task.update(DECODER_PROMPTS[name])
    raw["tasks"] = {name: task}
    items = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    return config_from_dict(raw, items, base_dir=GLUE5.parent)


def bootstrap_gap(result, n: int, seed: int = 0) -> dict[str, float]:
    """95% interval of (chosen - median candidate) dev score, resampling dev rows (paired)."""
    from promptmux.eval.metrics import compute_metrics

    gold = result.dev_gold
    preds = [r.dev.predictions for r in result.results]
    rng = np.random.default_rng(seed)
    gaps = []
    for _ in range(n):
        idx = rng.integers(0, len(gold), len(gold))
        scores = [
            compute_metrics(result.task_type, p[idx].tolist(), gold[idx].tolist())[result.metric]
            for p in preds
        ]
        gaps.append(scores[result.chosen] - float(np.median(scores)))
    lo, hi = np.percentile(gaps, [2.5, 97.5])
    return {
        "low": float(lo),
        "high": float(hi),
        "share_above_zero": float(np.mean(np.asarray(gaps) > 0)),
    }


def gap_cell(gap: dict[str, float | None] | None) -> str:
    """The cell "+1.23 ± 0.80" from a summary's CV gap ("" without one, no ± without an SE)."""
    if gap is None:
        return ""
    return f"{gap['gap']:+.2f}" + ("" if gap["se"] is None else f" ± {gap['se']:.2f}")


DECODER_METHOD = (
    "Each candidate is a template and a verbalizer (one answer word per label) for the packaged "
    "Gemma 3 270M decoder, **untrained**: a row's prediction is the label whose verbalizer word "
    "the LM finds likeliest after the filled-in template, exactly how a decoder bundle predicts. "
    "The candidate with the best main metric on a seeded sample of **train rows** is chosen "
    "(nothing is fitted, so no folds); its gaps over the runner-up and the median candidate carry "
    "a paired standard error (per-row values on the same rows). Dev is never used to choose: it is "
    "where the chosen candidate is compared with the median candidate. IG = H(Y) − H(Y | Ŷ) in "
    "bits between gold and predicted labels."
)


def render(report: dict[str, Any], sections: list[str]) -> str:
    """The markdown page: method, command, machine, the summary table, then each task's table."""
    from promptmux.prompts.search_output import md_code

    decoder = report["args"].get("decoder")
    by = "train" if decoder else "CV"
    lines = [
        "# Prompt search on real data" + (": decoder, zero-shot" if decoder else ""),
        "",
        DECODER_METHOD if decoder else (
            "Each candidate template is scored by a linear probe (logistic regression) on frozen, "
            "mean-pooled MiniLM embeddings of the prompted text; the prompt with the best main "
            "metric by **k-fold cross-validation on a sample of train rows** (pooled out-of-fold "
            "predictions) is chosen. CV gaps of the chosen prompt over the runner-up and over the "
            "median candidate carry a paired standard error (per-row jackknife values on the same "
            "rows and folds; a gap within about 2 SE is noise). Dev is never used to choose: it is "
            "where the chosen prompt is compared with the median candidate (the dev probe is "
            "fitted on the CV rows). IG = H(Y) − H(Y | Ŷ) in bits between gold and "
            "probe-predicted labels."
        ),
        "",
        f"Command: `{report['command']}`",
        "",
        describe(report["environment"]),
        "",
        (
            f"| task | metric | candidates | chosen prompt | {by} rows | {by} chosen "
            f"| {by} vs runner-up ± paired SE | {by} vs median ± paired SE | chosen dev "
            "| median candidate dev | chosen − median | 95% bootstrap | plain input dev "
            "| best dev |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, data in report["tasks"].items():
        s = data["summary"]
        b = s["bootstrap_95"]
        plain = "" if s["plain_dev"] is None else f"{s['plain_dev']:.2f}"
        lines.append(
            f"| {name} | {s['metric']} | {s['n_candidates']} | `{md_code(s['chosen_candidate'])}` "
            f"| {'zero-shot' if decoder else str(s['folds']) + '-fold'}, {s['cv_rows']} | {s['chosen_cv']:.2f} "
            f"| {gap_cell(s['cv_vs_runner_up'])} | {gap_cell(s['cv_vs_median'])} "
            f"| {s['chosen_dev']:.2f} | {s['median_dev']:.2f} "
            f"| **{s['chosen_minus_median_dev']:+.2f}** | [{b['low']:+.2f}, {b['high']:+.2f}] "
            f"| {plain} | {s['best_dev']:.2f} |"
        )
    return "\n".join(lines) + "\n\n" + "\n".join(sections)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup(args.threads)
    from promptmux.model.backbone import load_backbone
    from promptmux.prompts import search_output as so
    from promptmux.prompts.search import search_prompts
    from promptmux.prompts.zero_shot import load_decoder

    env = environment()
    command = "python bench/prompt_search.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {
        "command": command,
        "environment": env,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "tasks": {},
    }
    stem = "prompt_search" + (f"-{args.tag}" if args.tag else "")
    backbone = None
    sections: list[str] = []
    for name in args.tasks.split(","):
        cfg = task_config(name, args.max_length, args.decoder, args.dev_rows)
        if backbone is None:
            backbone = load_decoder(cfg, name) if args.decoder else load_backbone(cfg.model.backbone)
        print(f"--- {name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        result = search_prompts(
            cfg,
            name,
            train_rows=args.train_rows,
            folds=args.folds,
            max_candidates=args.max_candidates,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
            backbone=backbone,
        )
        gap = bootstrap_gap(result, args.bootstrap)
        data = so.to_dict(result)
        data["summary"]["bootstrap_95"] = gap
        data["wall_seconds"] = round(time.perf_counter() - t0, 1)
        report["tasks"][name] = data
        sections.append(
            so.markdown_report(result)
            + f"Paired bootstrap over dev rows ({args.bootstrap} resamples): chosen − median "
            f"candidate, 95% interval [{gap['low']:+.2f}, {gap['high']:+.2f}]; above zero in "
            f"{100 * gap['share_above_zero']:.0f}% of resamples. "
            f"Search time {data['wall_seconds']:.0f} s.\n"
        )
        print(so.summary_line(result), file=sys.stderr, flush=True)
        # Written after every task, so that a long run that stops keeps what it measured.
        write_report(args.results_dir, stem, report, render(report, sections))


if __name__ == "__main__":
    main()
