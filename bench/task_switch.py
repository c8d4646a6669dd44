"""What switching tasks costs at inference: one mixed-task batch vs a single-task batch of the same rows.

One bundle answers all of its tasks. A batch whose rows belong to five different tasks runs the
shared encoder once and each task's head on its slice of rows (with soft prompts, each row also
gets its own task's prompt vectors). This script measures, on the same real rows (GLUE dev
sentences, so that every condition encodes exactly the same tokens):

* `single`: all N rows answered as one task (one head, one prompt);
* `mixed`: the same N rows split over the five GLUE tasks (five heads, five prompts) in ONE pass;
* `per-task passes`: the same five groups run as five separate single-task passes, which is what a
  server without mixed batches (or one model per task) has to do.

The switch cost is `mixed / single` (1.00 means free); the gain of mixing is
`per-task passes / mixed`. Conditions are interleaved repetition by repetition, so machine load
drifts hit all of them alike; medians are reported with the interquartile range.

Usage (from the repository root; data under ../shared/data or $PROMPTMUX_DATA):

    .venv/bin/python bench/task_switch.py                       # batch sizes 10, 40, 160; no prompts and shallow prompts
    .venv/bin/python bench/task_switch.py --sizes 10 --reps 5 --tag smoke --results-dir /tmp/r
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import RESULTS, describe, environment, setup, write_report

# Task name -> (type, number of labels) of the five GLUE tasks; the heads are untrained (latency
# does not depend on their values).
GLUE = {"sst2": ("classification", 2), "cola": ("classification", 2), "mrpc": ("classification", 2),
        "stsb": ("regression", 1), "rte": ("classification", 2)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10,40,160", help="batch sizes (rows per batch, multiples of 5)")
    p.add_argument("--prompts", default="none,shallow", help="soft prompt kinds to measure (none, shallow, deep, ...)")
    p.add_argument("--reps", type=int, default=30, help="timed repetitions per condition")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--tag", default="")
    p.add_argument("--results-dir", default=str(RESULTS))
    return p.parse_args(argv)


def dev_sentences(n: int) -> list[str]:
    """The first `n` SST-2 dev sentences (real text, typical GLUE lengths)."""
    import csv
    import os

    root = Path(os.environ.get("PROMPTMUX_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    path = root / "glue" / "SST-2" / "dev.tsv"
    if not path.exists():
        raise SystemExit(f"{path} not found: set PROMPTMUX_DATA to the folder holding glue/")
    with open(path, encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if len(rows) < n:
        raise SystemExit(f"{path}: {len(rows)} rows, need {n}")
    return [r["sentence"] for r in rows[:n]]


def build(kind: str):
    from promptmux.model.backbone import load_backbone
    from promptmux.model.multitask import TaskInfo, build_model

    encoder, tokenizer = load_backbone("minilm")
    infos = [TaskInfo(t, typ, None if typ == "regression" else [str(i) for i in range(k)], "mean", "accuracy")
             for t, (typ, k) in GLUE.items()]
    prompts = None if kind == "none" else {"kind": kind, "length": 20}
    model = build_model(encoder, infos, 0.1, prompts).eval()
    return model, tokenizer


def measure(model, tokenizer, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from promptmux.data.collate import collate
    from promptmux.data.encode import encode_examples
    from promptmux.precision import autocast
    from promptmux.tasks.spec import Example

    n, tasks = len(texts), list(GLUE)
    enc = encode_examples([Example(t) for t in texts], tokenizer, "classification", 128, 2)
    idx = np.arange(n)
    groups = np.array_split(idx, len(tasks))
    single = collate([("sst2", enc, idx)], tokenizer.pad_token_id)
    mixed = collate([(t, enc, g) for t, g in zip(tasks, groups)], tokenizer.pad_token_id)
    # Each per-task pass pads to its own longest row, as a single-task server would.
    per_task = [collate([(t, enc, g)], tokenizer.pad_token_id) for t, g in zip(tasks, groups)]
    device = torch.device("cpu")

    def run(batches) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode(), autocast(device, args.precision):
            for b in batches:
                model(**b.model_inputs())
        return time.perf_counter() - t0

    conditions = {"single": [single], "mixed": [mixed], "per_task_passes": per_task}
    times: dict[str, list[float]] = {c: [] for c in conditions}
    for rep in range(args.warmup + args.reps):
        for c, batches in conditions.items():
            t = run(batches)
            if rep >= args.warmup:
                times[c].append(t)

    def stats(v: list[float]) -> dict[str, float]:
        q = statistics.quantiles(v, n=4)
        return {"median_ms": 1e3 * statistics.median(v), "q1_ms": 1e3 * q[0], "q3_ms": 1e3 * q[2]}

    # Ratios per repetition (same moment of machine load), then their median.
    switch = statistics.median(m / s for m, s in zip(times["mixed"], times["single"]))
    gain = statistics.median(p / m for p, m in zip(times["per_task_passes"], times["mixed"]))
    return {
        "rows": n, "tokens": int(single.n_tokens), "padded_tokens": int(single.input_ids.numel()),
        "conditions": {c: stats(v) for c, v in times.items()},
        "switch_cost_ratio": switch, "per_task_over_mixed": gain,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Task switching at inference: mixed-task batch vs single-task batch (MiniLM, 5 GLUE heads)",
        "",
        f"Command: `{report['command']}`",
        "",
        "Same rows (SST-2 dev sentences) in every condition: `single` = all rows as one task; `mixed` = the rows "
        "split over 5 tasks in one pass (5 heads, and with soft prompts 5 prompts); `per-task passes` = the "
        "5 groups as 5 separate passes. Latency of one batch, median [q1, q3] over interleaved repetitions; "
        "ratios are medians of per-repetition ratios.",
        "",
        "| soft prompts | rows | single ms | mixed ms | per-task passes ms | switch cost (mixed / single) | mixing gain (per-task / mixed) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        c = r["conditions"]

        def cell(name: str) -> str:
            s = c[name]
            return f"{s['median_ms']:.1f} [{s['q1_ms']:.1f}, {s['q3_ms']:.1f}]"

        lines.append(f"| {r['prompts']} | {r['rows']} | {cell('single')} | {cell('mixed')} | {cell('per_task_passes')} | "
                     f"{r['switch_cost_ratio']:.3f} | {r['per_task_over_mixed']:.2f} |")
    lines += ["", describe(report["environment"]), "",
              "Settings: " + ", ".join(f"{k}={v}" for k, v in report["settings"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    setup(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    if any(s % len(GLUE) or s <= 0 for s in sizes):
        raise SystemExit(f"--sizes: each size must be a positive multiple of {len(GLUE)} (one slice per task)")
    command = "python bench/task_switch.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    env = environment()
    texts = dev_sentences(max(sizes))
    results = []
    for kind in args.prompts.split(","):
        model, tokenizer = build(kind)
        for n in sizes:
            print(f"[{time.strftime('%H:%M:%S')}] prompts={kind} rows={n} ...", flush=True)
            r = measure(model, tokenizer, texts[:n], args)
            r["prompts"] = kind
            results.append(r)
            print(f"  switch cost x{r['switch_cost_ratio']:.3f}, mixing gain x{r['per_task_over_mixed']:.2f}", flush=True)
    report = {"command": command, "settings": {k: v for k, v in vars(args).items() if k not in ("tag", "results_dir")},
              "results": results, "environment": env}
    write_report(Path(args.results_dir), "task_switch" + (f"-{args.tag}" if args.tag else ""), report, markdown(report))
    return report


if __name__ == "__main__":
    main()
