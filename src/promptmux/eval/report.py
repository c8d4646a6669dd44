"""`promptmux eval`: score a saved bundle on a split of its tasks' data and write a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from promptmux.config.load import config_from_dict
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
    from promptmux.eval.metrics import aggregate_score, format_markdown_table, format_table
    from promptmux.prompts.ensemble import evaluate_examples
    from promptmux.t2t.bundle import is_t2t_bundle
    from promptmux.train.setup import prepare_data

    if is_t2t_bundle(path):  # a decoder bundle: verbalizer scoring and generation (promptmux.t2t)
        from promptmux.t2t.predictor import evaluate_t2t_bundle

        return evaluate_t2t_bundle(path, split, overrides, report_dir)

    predictor = Predictor.from_pretrained(path)
    config_file = predictor.folder / "config.yaml"
    if not config_file.is_file():
        raise BundleError(f"{predictor.folder}: no config.yaml, so the evaluation data is unknown")
    raw = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    for name, info in predictor.tasks.items():
        if info.labels is not None and name in raw.get("tasks", {}):
            raw["tasks"][name]["labels"] = info.labels
    cfg = config_from_dict(raw, overrides)
    # Raw rows only: each task is prompted as its bundle records (the template adaptive selection
    # chose, rules, ensemble), exactly as `Predictor` predicts, whatever config.yaml's template says.
    data = prepare_data(cfg, predictor.tokenizer, splits=())
    infos = [info for name, info in predictor.tasks.items() if name in data.raw]
    rows = {t: data.raw[t].split(split) for t in data.raw}
    metrics = evaluate_examples(
        predictor.model, infos, rows, predictor.tokenizer, predictor.max_length, predictor.pad_id,
        cfg.train.eval_batch_size, predictor.precision, default_cache_dir(),
    )
    if not metrics:
        raise BundleError(f"no task of {predictor.folder} has a {split!r} split")
    main = {t: cfg.main_metric(t) for t in metrics}
    score = aggregate_score({t: m[main[t]] for t, m in metrics.items()})
    result = {"bundle": str(predictor.folder), "split": split, "aggregate": score, "main_metric": main,
              "metrics": metrics, "sizes": {t: len(data.raw[t].split(split)) for t in metrics}}
    out = Path(report_dir) if report_dir else predictor.folder.parent if predictor.folder.name in ("best", "last") else predictor.folder
    atomic_write_text(out / f"eval_{split}.json", json.dumps(result, indent=2))
    rows = "\n".join(f"| {t} | {result['sizes'][t]} | {main[t]} | {metrics[t][main[t]]:.2f} |" for t in metrics)
    report = (
        f"# Evaluation of `{predictor.folder}` on `{split}`\n\n"
        f"Aggregate score (unweighted mean of main metrics): **{score:.2f}**\n\n"
        f"| task | rows | main metric | score |\n|---|---:|---|---:|\n{rows}\n\n"
        f"## All metrics\n\n{format_markdown_table(metrics, main)}\n"
    )
    atomic_write_text(out / f"report_{split}.md", report)
    result["table"] = format_table(metrics, main)
    result["report"] = str(out / f"report_{split}.md")
    return result
