"""What prompt search hands back: the table, the config copy with the chosen prompt, a report."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from promptmux.config.load import apply_override, config_from_dict
from promptmux.config.schema import Config
from promptmux.errors import ConfigError
from promptmux.prompts.cv import PairedGap
from promptmux.prompts.search import SearchResult


def _num(value: float | None, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def md_code(text: str) -> str:
    """Inline-code-safe text: newlines shown as \\n."""
    return text.replace("\n", "\\n")


def _gap_text(gap: PairedGap | None) -> str:
    """The text "+1.23 ± 0.80" (the ± part only where a paired SE exists); "" without a gap."""
    if gap is None:
        return ""
    return f"{gap.gap:+.2f}" + ("" if gap.se is None else f" ± {gap.se:.2f}")


def _gap_dict(gap: PairedGap | None) -> dict[str, float | None] | None:
    return None if gap is None else {"gap": gap.gap, "se": gap.se, "z": gap.z}


def cv_label(result: SearchResult) -> str:
    """How the choosing scores were made, e.g. "5-fold, 4000 rows" or "zero-shot, 500 rows"."""
    how = "zero-shot" if result.zero_shot else f"{result.folds}-fold"
    return f"{how}, {result.sizes['cv']} rows"


def score_name(result: SearchResult) -> str:
    """What the choosing score is called in tables: "CV" (probe) or "train" (decoder, zero-shot)."""
    return "train" if result.zero_shot else "CV"


def chose_by(result: SearchResult) -> str:
    """One sentence: how the candidate was chosen, and that dev was not used."""
    n = result.sizes["cv"]
    if result.zero_shot:
        return (
            f"Chosen by the untrained decoder's zero-shot {result.metric} on {n} train rows (each "
            "row's label: the one whose verbalizer words the LM finds likeliest after the "
            "template), never on dev; nothing is fitted, so no folds."
        )
    return (
        f"Chosen by {result.folds}-fold cross-validation of the probe on the {n} CV rows of train "
        f"(best pooled out-of-fold {result.metric}), never on dev; the dev probe is fitted on the "
        "same CV rows."
    )


def rows(result: SearchResult) -> list[dict[str, Any]]:
    """One plain dict per candidate, in candidate order."""
    out = []
    for i, r in enumerate(result.results):
        out.append(
            {
                "index": i,
                "chosen": i == result.chosen,
                "source": r.candidate.source,
                "template": r.template,
                "verbalizer": None if r.candidate.verbalizer is None else list(r.candidate.verbalizer),
                "cv": {
                    "metric": r.cv.metrics[result.metric],
                    "accuracy": r.cv.accuracy,
                    "ig_bits": r.cv.gain,
                    "h_y_bits": r.cv.entropy,
                    "metrics": r.cv.metrics,
                },
                "dev": {
                    "metric": r.dev.metrics[result.metric],
                    "accuracy": r.dev.accuracy,
                    "ig_bits": r.dev.gain,
                    "h_y_bits": r.dev.entropy,
                    "metrics": r.dev.metrics,
                },
                "seconds": round(r.seconds, 2),
            }
        )
    return out


def summary(result: SearchResult) -> dict[str, Any]:
    """Chosen prompt vs the runner-up and median on CV (with paired SEs), and vs the median on dev
    (the split the choice never saw)."""
    dev = result.dev_scores()
    chosen = dev[result.chosen]
    median = result.median_dev()
    plain = next((d for d, r in zip(dev, result.results) if r.candidate.source == "plain"), None)
    return {
        "metric": result.metric,
        "chosen_template": result.best.template,
        "chosen_verbalizer": None if result.best.candidate.verbalizer is None else list(result.best.candidate.verbalizer),
        "chosen_candidate": result.best.candidate.describe(),
        "chosen_source": result.best.candidate.source,
        "proxy": "zero-shot" if result.zero_shot else "probe",
        "chosen_cv": result.best.cv.metrics[result.metric],
        "folds": result.folds,
        "cv_rows": result.sizes["cv"],
        # CV score gaps with paired standard errors: is the choice distinguishable from noise?
        "cv_vs_runner_up": _gap_dict(result.gaps.get("runner_up")),
        "cv_vs_median": _gap_dict(result.gaps.get("median")),
        "chosen_dev": chosen,
        "median_dev": median,
        "chosen_minus_median_dev": chosen - median,
        "plain_dev": plain,
        "best_dev": max(dev),
        "worst_dev": min(dev),
        # 1 = the chosen prompt is also the best on dev.
        "chosen_dev_rank": 1 + sum(d > chosen for d in dev),
        "n_candidates": len(dev),
    }


def format_table(result: SearchResult, markdown: bool = False) -> str:
    """The per-candidate table: CV (or zero-shot train) metric, accuracy and IG, the chosen row's gap
    over the median candidate (± paired SE), then the dev metric, accuracy and IG."""
    m, by = result.metric, score_name(result)
    # Accuracy gets its own column unless it is the main metric already (or undefined: regression).
    acc = result.task_type != "regression" and m not in ("accuracy", "subset_accuracy")
    head = [
        "",
        "source",
        "candidate",
        f"{by} {m}",
        *([f"{by} acc"] if acc else []),
        f"{by} IG (bits)",
        f"{by} vs median ± paired SE",
        f"dev {m}",
        *(["dev acc"] if acc else []),
        "dev IG (bits)",
    ]
    body = []
    for r, res in zip(rows(result), result.results):
        cv, dev, label = r["cv"], r["dev"], res.candidate.describe()
        body.append(
            [
                "*" if r["chosen"] else "",
                r["source"],
                repr(label) if not markdown else f"`{md_code(label)}`",
                _num(cv["metric"]),
                *([_num(cv["accuracy"])] if acc else []),
                _num(cv["ig_bits"], 3),
                _gap_text(result.gaps.get("median")) if r["chosen"] else "",
                _num(dev["metric"]),
                *([_num(dev["accuracy"])] if acc else []),
                _num(dev["ig_bits"], 3),
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        return "\n".join(
            lines + ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in body]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:<{w}}}" if j < 3 else f"{{:>{w}}}" for j, w in enumerate(widths))
    return "\n".join(fmt.format(*line) for line in [head, *body])


def cv_gaps_text(result: SearchResult) -> str:
    """E.g. "+0.90 ± 0.70 over the runner-up, +2.10 ± 1.00 over the median candidate"."""
    parts = [
        f"{_gap_text(result.gaps[key])} over {what}"
        for key, what in (("runner_up", "the runner-up"), ("median", "the median candidate"))
        if key in result.gaps
    ]
    return ", ".join(parts)


def summary_line(result: SearchResult) -> str:
    """The chosen prompt: its CV score and gaps (± paired SE), then dev vs the median candidate."""
    s = summary(result)
    return (
        f"chosen {s['chosen_candidate']!r} ({s['chosen_source']}): {score_name(result)} {s['metric']} "
        f"{s['chosen_cv']:.2f} ({cv_label(result)}), {cv_gaps_text(result)} (± paired SE); "
        f"dev {s['metric']} {s['chosen_dev']:.2f} vs median candidate {s['median_dev']:.2f} "
        f"({s['chosen_minus_median_dev']:+.2f}); rank {s['chosen_dev_rank']}/{s['n_candidates']} "
        "on dev"
    )


def to_dict(result: SearchResult) -> dict[str, Any]:
    """The whole result as JSON-ready data."""
    return {
        "task": result.task,
        "task_type": result.task_type,
        "metric": result.metric,
        "sizes": result.sizes,
        "settings": result.settings,
        "keywords": {
            label: [{"word": k.word, "ig_bits": round(k.gain, 5), "count": k.count} for k in ws]
            for label, ws in result.keywords.items()
        },
        "candidates": rows(result),
        "summary": summary(result),
        "seconds": round(result.seconds, 1),
    }


def markdown_report(result: SearchResult, command: str | None = None) -> str:
    """A markdown page: what was run, the table, keywords and the chosen-vs-median summary."""
    s = summary(result)
    sizes = ", ".join(f"{k} {v}" for k, v in result.sizes.items())
    words = "; ".join(
        f"{label}: {', '.join(k.word for k in ws) or '-'}" for label, ws in result.keywords.items()
    )
    lines = [
        f"## Prompt search: {result.task} ({result.task_type}, main metric {result.metric})",
        "",
    ]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"Rows: {sizes}. {chose_by(result)}",
        f"Keywords by information gain: {words}.",
        "",
        format_table(result, markdown=True),
        "",
        (
            f"**{score_name(result)}** ({cv_label(result)}): the chosen prompt's {result.metric} is "
            f"{cv_gaps_text(result)} (± paired standard error over the same rows"
            + ("" if result.task_type == "classification" else "; none for this task type")
            + "). A gap within about 2 SE is not distinguishable from noise."
        ),
        "",
        f"**Chosen** `{md_code(s['chosen_candidate'])}`: dev {result.metric} {s['chosen_dev']:.2f} vs median "
        f"candidate {s['median_dev']:.2f} (**{s['chosen_minus_median_dev']:+.2f}**), rank "
        f"{s['chosen_dev_rank']}/{s['n_candidates']} on dev "
        f"(best {s['best_dev']:.2f}, worst {s['worst_dev']:.2f}"
        + (f", plain input {s['plain_dev']:.2f})." if s["plain_dev"] is not None else ")."),
        "",
    ]
    return "\n".join(lines)


def write_report(folder: Path, result: SearchResult, command: str | None = None) -> list[Path]:
    """`prompt_search_<task>.json` and `.md` in `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    js = folder / f"prompt_search_{result.task}.json"
    md = folder / f"prompt_search_{result.task}.md"
    js.write_text(json.dumps({"command": command, **to_dict(result)}, indent=2), encoding="utf-8")
    md.write_text(markdown_report(result, command), encoding="utf-8")
    return [js, md]


def default_out(config: Path, task: str) -> Path:
    """Where the config copy goes without --out: next to the input, `<stem>.<task>-prompt.yaml`."""
    return config.with_name(f"{config.stem}.{task}-prompt.yaml")


def check_out(config: Path, out: Path, overwrite: bool) -> None:
    """Refuse to write over the input config, or over an existing file without `overwrite`.

    Checked before the search runs, so that minutes of scoring are not lost to a bad path.
    """
    if out.resolve() == config.resolve():
        raise ConfigError(f"--out: {out} is the input config; prompt search never overwrites it")
    if out.exists() and not overwrite:
        raise ConfigError(f"--out: {out} exists; pass --overwrite to replace it")
    if out.exists() and out.is_dir():
        raise ConfigError(f"--out: {out} is a folder; give a file name such as chosen.yaml")


def write_search_config(
    config: Path, overrides: Iterable[str], cfg: Config, result: SearchResult, out: Path
) -> Config:
    """Write a copy of `config` (overrides applied) whose task uses the chosen template.

    `tasks.<task>.prompt.template` becomes the chosen template and `prompt.pool` the other
    candidates, best cross-validated score first. A decoder's task gets the chosen template and
    verbalizer, and no pool (a decoder reads one template per task); the runners-up are listed in
    the header comment instead. A copy in the input's folder keeps relative
    paths and `${VAR}` references as written; elsewhere the data paths and a relative backbone are
    written as the absolute paths they resolved to. The copy is validated before it is written
    (atomically).

    Returns:
        The written config, as `load_config` reads it.
    """
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    for item in overrides:
        apply_override(raw, item)
    raw["tasks"] = {name: spec for name, spec in raw["tasks"].items() if spec is not None}
    if out.parent.resolve() != config.parent.resolve():
        raw.pop("data_root", None)
        for name, spec in raw["tasks"].items():
            data = spec.setdefault("data", {})
            for key in ("train", "dev", "test", "path"):
                value = getattr(cfg.tasks[name].data, key)
                if value is not None:
                    data[key] = value
        raw.setdefault("model", {})["backbone"] = cfg.model.backbone
    spec = raw["tasks"][result.task]
    prompt = spec.setdefault("prompt", {}) or {}
    prompt["template"] = result.best.template
    words = result.best.candidate.verbalizer
    if words is None:
        prompt["pool"] = [r.template for r in result.ranked() if r.template != result.best.template]
        how = f"{result.folds}-fold cross-validation on train) and the other candidates in prompt.pool."
    else:
        spec["verbalizer"] = dict(zip(result.labels or [], words, strict=True))
        runners = [r.candidate.describe() for r in result.ranked()[1:4]]
        how = "zero-shot on train rows) and its verbalizer. Runners-up:\n" + "".join(
            f"#   {json.dumps(text)}\n" for text in runners
        ).rstrip("\n")
    spec["prompt"] = prompt
    written = config_from_dict(raw, base_dir=out.parent)
    header = (
        f"# Written by `promptmux prompts search` from {config.name} for task {result.task}: "
        f"the chosen template\n# (best {result.metric} by {how}\n"
    )
    text = header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp.yaml")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, out)
    return written
