"""`promptmux eval`: score a saved bundle on a split of its tasks' data and write a report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from promptmux.config.load import config_from_dict
from promptmux.config.schema import Config
from promptmux.data.encode import default_cache_dir
from promptmux.errors import BundleError
from promptmux.fsutil import atomic_write_text
from promptmux.serve.predictor import Predictor


def evaluate_bundle(path: str | Path, split: str = "dev", overrides: list[str] | tuple[str, ...] = (), report_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate the bundle at `path` on `split`; write `eval_<split>.json` and `report_<split>.md`.

    The tasks' data is read through the training config saved in the bundle. That config holds
    absolute data paths, so `data_root=` has no effect here: point a task at moved files with
    overrides such as `tasks.sst2.data.dev=/elsewhere/dev.tsv`. Label ids come from the bundle, so
    they match the trained heads.
    """
    from promptmux.prompts.ensemble import evaluate_examples
    from promptmux.t2t.bundle import is_t2t_bundle
    from promptmux.train.setup import prepare_data

    if is_t2t_bundle(path):  # a decoder bundle: verbalizer scoring and generation (promptmux.t2t)
        from promptmux.t2t.predictor import evaluate_t2t_bundle

        return evaluate_t2t_bundle(path, split, overrides, report_dir)

    predictor = Predictor.from_pretrained(path)
    cfg = bundle_config(predictor.folder, predictor.tasks, overrides)
    # Raw rows only: each task is prompted as its bundle records (the template adaptive selection
    # chose, rules, ensemble), exactly as `Predictor` predicts, whatever config.yaml's template says.
    data = prepare_data(cfg, predictor.tokenizer, splits=())
    infos = [info for name, info in predictor.tasks.items() if name in data.raw]
    rows = {t: data.raw[t].split(split) for t in data.raw}
    metrics = evaluate_examples(
        predictor.model, infos, rows, predictor.tokenizer, predictor.max_length, predictor.pad_id,
        cfg.train.eval_batch_size, predictor.precision, default_cache_dir(),
    )
    return write_evaluation(predictor.folder, split, cfg, metrics, {t: len(rows[t]) for t in metrics}, report_dir)


def bundle_config(folder: Path, tasks: dict[str, Any], overrides: Sequence[str]) -> Config:
    """The training config saved in a bundle, with `overrides` applied and each task's label ids as
    the bundle's heads have them (`tasks`: name -> info with `.labels`)."""
    config_file = folder / "config.yaml"
    if not config_file.is_file():
        raise BundleError(f"{folder}: no config.yaml, so the evaluation data is unknown")
    raw = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    for name, info in tasks.items():
        if info.labels is not None and name in raw.get("tasks", {}):
            raw["tasks"][name]["labels"] = info.labels
    return config_from_dict(raw, overrides)


def write_evaluation(
    folder: Path, split: str, cfg: Config, metrics: dict[str, dict[str, float]], sizes: dict[str, int],
    report_dir: str | Path | None,
) -> dict[str, Any]:
    """eval_<split>.json and report_<split>.md for a bundle's metrics (next to best/ and last/ for a
    run's bundle, else in the bundle; or in `report_dir`); returns the JSON's content plus the table
    and the report's path."""
    from promptmux.eval.metrics import aggregate_score, format_markdown_table, format_table

    if not metrics:
        raise BundleError(f"no task of {folder} has a {split!r} split")
    main = {t: cfg.main_metric(t) for t in metrics}
    score = aggregate_score({t: m[main[t]] for t, m in metrics.items()})
    result: dict[str, Any] = {"bundle": str(folder), "split": split, "aggregate": score, "main_metric": main,
                              "metrics": metrics, "sizes": sizes}
    out = Path(report_dir) if report_dir else folder.parent if folder.name in ("best", "last") else folder
    atomic_write_text(out / f"eval_{split}.json", json.dumps(result, indent=2))
    rows = "\n".join(f"| {t} | {sizes[t]} | {main[t]} | {metrics[t][main[t]]:.2f} |" for t in metrics)
    report = (
        f"# Evaluation of `{folder}` on `{split}`\n\n"
        f"Aggregate score (unweighted mean of main metrics): **{score:.2f}**\n\n"
        f"| task | rows | main metric | score |\n|---|---:|---|---:|\n{rows}\n\n"
        f"## All metrics\n\n{format_markdown_table(metrics, main)}\n"
    )
    atomic_write_text(out / f"report_{split}.md", report)
    result["table"] = format_table(metrics, main)
    result["report"] = str(out / f"report_{split}.md")
    return result
