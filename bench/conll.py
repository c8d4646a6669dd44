"""CoNLL-2003 NER alone vs NER + POS + chunk tags as one multi-task model, same budget.

Both models train the packaged MiniLM with configs/conll.yaml's recipe (batch 32, lr 5e-5, heads
1e-3, linear schedule with 6% warmup, bf16) and are scored on CoNLL's test split (testb) with
seqeval's entity-level F1, after the last step, through the saved `last` bundle exactly as
`promptmux eval <run>/last --split test` scores it. No checkpoint is picked on any split.

Same budget (`--budget`):
    compute   (default) both runs take `--steps` optimizer steps of 32 sentences: the multi-task
              run spends part of its steps on POS and chunk batches, so its NER head sees about a
              third of the NER batches the single-task run sees (the tasks share sentences and
              sizes, so every sampler draws them about evenly). The question answered: given the
              same training time, do the auxiliary tasks pay for themselves?
    examples  NER sees the same number of batches in both runs (in expectation): the multi-task
              run takes steps / p_ner steps (about 3x). The question answered: do the auxiliary
              tasks add to what NER alone learns from the same NER data?

Usage (from the repository root; data under ../shared/data or $PROMPTMUX_DATA):

    .venv/bin/python bench/conll.py                   # 3 seeds, 1500 steps, compute budget
    .venv/bin/python bench/conll.py --budget examples --seeds 1
    .venv/bin/python bench/conll.py --steps 10 --seeds 1 --train-cap 200 --dev-cap 50 \
        --test-cap 50 \
        --tag smoke --results-dir /tmp/bench-smoke
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import yaml
from glue5 import run_last, sampler_shares, seeds_text, train_sizes

CONLL = common.REPO / "configs" / "conll.yaml"
AUX = ("pos", "chunk")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--aux", default=",".join(AUX), help="tasks trained with NER in the multi-task model"
    )
    p.add_argument("--budget", default="compute", choices=["compute", "examples"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps of the NER-alone run")
    common.add_run_args(p, unit="sentences", test_cap=True)
    common.add_output_args(p, "conll")
    return p.parse_args(argv)


def conll_config(tasks: list[str], overrides: dict[str, Any], extra: list[str]):
    """configs/conll.yaml restricted to `tasks`, with `overrides` then `extra` applied."""
    from promptmux.config import config_from_dict

    raw = yaml.safe_load(CONLL.read_text(encoding="utf-8"))
    unknown = sorted(set(tasks) - set(raw["tasks"]))
    if unknown:
        raise SystemExit(f"--aux: {unknown} not in {CONLL.name} ({', '.join(raw['tasks'])})")
    raw["tasks"] = {t: raw["tasks"][t] for t in tasks}
    items = [f"{k}={json.dumps(v)}" for k, v in overrides.items()] + list(extra)
    return config_from_dict(raw, items, base_dir=CONLL.parent)


def overrides(
    args: argparse.Namespace, tasks: list[str], steps: int, seed: int, out: Path
) -> dict[str, Any]:
    """The shared run overrides with --sampling: one evaluation (dev = valid.txt), after the last
    step."""
    return common.run_overrides(args, tasks, steps, seed, out, sampling={"strategy": args.sampling})


def test_scores(run_dir: str) -> dict[str, dict[str, float]]:
    """The `last` bundle (the model after the final step) on the test split, as `promptmux eval`
    scores it."""
    from promptmux.eval.report import evaluate_bundle

    return evaluate_bundle(Path(run_dir) / "last", split="test", report_dir=Path(run_dir))[
        "metrics"
    ]


def markdown(report: dict[str, Any]) -> str:
    st, s = report["settings"], report["summary"]

    def cell(v: dict[str, float] | None) -> str:
        return f"{v['mean']:.1f} ± {v['std']:.1f}" if v else "—"

    lines = [
        "# CoNLL-2003: NER alone vs NER + "
        + " + ".join(a.upper() for a in report["aux"])
        + " (one MiniLM)",
        "",
        f"Command: `{report['command']}`",
        "",
        (
            f"Budget: **{st['budget']}**. NER alone: {report['steps']['single']} steps; "
            "multi-task: "
            f"{report['steps']['multi']} steps ({st['sampling']} sampling, expected NER share "
            f"{100 * report['ner_share']:.0f}%, so about {report['ner_batches']['multi']:.0f} NER "
            f"batches vs {report['ner_batches']['single']}). Batch {st['batch_size']}, "
            f"lr {st['lr']} "
            f"(heads {st['head_lr']}), {st['precision']}, {seeds_text(st)}; train sentences per "
            f"task: {st['train_cap'] or 'all'}; test sentences: {st['test_cap'] or 'all'}. Scored "
            "after the last step; mean ± std over seeds. Entity F1: seqeval, exact entity match "
            "(the CoNLL convention)."
        ),
        "",
        (
            "| model | NER entity F1 (test) | NER entity F1 (dev) | POS acc (test) "
            "| chunk F1 (test) | wall time (min) |"
        ),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for mode, label in (("single", "NER alone"), ("multi", "NER + " + " + ".join(report["aux"]))):
        m = s[mode]
        cells = [
            m["test"].get("ner"),
            m["dev"].get("ner"),
            m["test"].get("pos"),
            m["test"].get("chunk"),
        ]
        lines.append(
            f"| {label} | " + " | ".join(cell(c) for c in cells) + f" | {cell(m['wall_min'])} |"
        )
    d = s["multi"]["test"]["ner"]["mean"] - s["single"]["test"]["ner"]["mean"]
    margin = 2 * max(s["multi"]["test"]["ner"]["std"], s["single"]["test"]["ner"]["std"])
    if s["single"]["test"]["ner"]["n"] < 2:
        verdict = "one seed: no spread to judge the difference against"
    elif abs(d) > margin:
        verdict = "more than 2 x the larger std over seeds: a difference the seeds support"
    else:
        verdict = "within 2 x the larger std over seeds: no difference the seeds support"
    lines += [
        "",
        f"NER test F1, multi − single: {d:+.2f} ({verdict}).",
        "",
        common.describe(report["environment"]),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    common.setup(args.threads)
    aux = [a for a in args.aux.split(",") if a]
    tasks = ["ner", *aux]
    command = common.command_line("conll.py", argv)
    env = common.environment()
    runs: dict[str, list[dict[str, Any]]] = {"single": [], "multi": []}
    with tempfile.TemporaryDirectory(prefix="conll-bench-") as tmp:
        probe = conll_config(
            tasks, overrides(args, tasks, args.steps, 0, Path(tmp) / "probe"), args.set
        )
        metric_of = {t: probe.main_metric(t) for t in probe.tasks}
        share = sampler_shares(probe, train_sizes(probe), args.steps)["ner"]
        multi_steps = args.steps if args.budget == "compute" else round(args.steps / share)
        steps = {"single": args.steps, "multi": multi_steps}
        print(
            f"budget ({args.budget}): NER alone {args.steps} steps, multi-task {multi_steps} steps "
            f"(NER share {share:.2f})",
            flush=True,
        )
        for seed in range(
            args.seeds
        ):  # seeds outermost: both runs of a seed share the machine's conditions
            for mode, names in (("single", ["ner"]), ("multi", tasks)):
                print(
                    f"[{time.strftime('%H:%M:%S')}] seed {seed} {mode} ({steps[mode]} steps) ...",
                    flush=True,
                )
                out = Path(tmp) / f"{mode}-{seed}"
                r = run_last(
                    conll_config(
                        names, overrides(args, names, steps[mode], 1000 + seed, out), args.set
                    )
                )
                r["test"] = test_scores(r["out_dir"])
                shutil.rmtree(out, ignore_errors=True)
                runs[mode].append(r)
                print(
                    "  test: "
                    + ", ".join(f"{t} {m[metric_of[t]]:.2f}" for t, m in r["test"].items())
                    + f" | {r['step_s']:.3f} s/step | {r['wall_s'] / 60:.1f} min",
                    flush=True,
                )
            # Write after every seed: a run cut short still leaves the seeds it finished.
            report = build_report(args, command, env, aux, metric_of, steps, share, runs, seed + 1)
            common.save_report(args, "conll", report, markdown(report))
    return report


def build_report(
    args: argparse.Namespace,
    command: str,
    env: dict[str, Any],
    aux: list[str],
    metric_of: dict[str, str],
    steps: dict[str, int],
    share: float,
    runs: dict[str, list[dict[str, Any]]],
    seeds_done: int,
) -> dict[str, Any]:
    summary = {
        mode: {
            "test": {t: common.seed_stats([r["test"][t][metric_of[t]] for r in rs]) for t in rs[0]["test"]},
            "dev": {
                t: common.seed_stats([r["metrics"][t][metric_of[t]] for r in rs]) for t in rs[0]["metrics"]
            },
            "wall_min": common.seed_stats([r["wall_s"] / 60 for r in rs]),
        }
        for mode, rs in runs.items()
    }
    settings = common.settings_of(args)
    settings["seeds"], settings["seeds_planned"] = seeds_done, args.seeds
    report = {
        "command": command,
        "settings": settings,
        "aux": aux,
        "metric_of": metric_of,
        "steps": steps,
        "ner_share": share,
        "ner_batches": {"single": steps["single"], "multi": share * steps["multi"]},
        "summary": summary,
        "runs": runs,
        "environment": env,
    }
    return report


if __name__ == "__main__":
    main()
