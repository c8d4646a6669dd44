"""What the server tells clients about tasks, and the shape of each task type's answer."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from promptmux.model.multitask import TaskInfo
from promptmux.serve.bundle import BUNDLE_FILE
from promptmux.serve.predictor import Predictor

log = logging.getLogger("promptmux.serve")


def describe_tasks(predictor: Predictor) -> list[dict[str, Any]]:
    """One entry per task: name, type, labels, pair, prompt, metric, pooling (bundle order)."""
    meta = _bundle_tasks(predictor.folder)
    config = _config_tasks(predictor.folder)
    out = []
    for name, info in predictor.tasks.items():
        out.append(
            {
                "name": name,
                "type": info.type,
                "labels": info.labels,
                "pair": takes_pairs(info, config.get(name)),
                "prompt": describe_prompt(info, meta.get(name, {}), predictor.settings),
                "metric": info.metric,
                "pooling": info.pooling,
            }
        )
    return out


def describe_prompt(info: TaskInfo, meta: dict[str, Any], settings: dict[str, Any]) -> Any:
    """The task's hard prompt template (with its rules and ensemble prompts, as an object, when it
    has them); else the bundle's soft-prompt settings; else None."""
    hard = getattr(info, "prompt", None) or meta.get("prompt")
    rules, k = getattr(info, "rules", None), getattr(info, "ensemble", 1)
    if rules or k > 1:
        from promptmux.prompts.ensemble import variants

        return {"template": hard, "rules": rules or [], "ensemble": k, "templates": variants(info)}
    if hard:
        return hard
    soft = settings.get("prompts")
    added = settings.get("added_tasks") or {}
    if info.name in (added.get("tasks") or []):  # added by `promptmux add-task`: its own prompt, or none
        spec = added.get("prompt") or {}
        soft = {key: v for key, v in spec.items() if key != "tasks"} if info.name in spec.get("tasks", []) else None
    if isinstance(soft, dict) and soft.get("kind", "none") != "none":
        return {"soft": soft}
    return None


def takes_pairs(info: TaskInfo, task_config: dict[str, Any] | None) -> bool | None:
    """Whether a task reads (text_a, text_b): recorded in the bundle since `TaskInfo.pair`; for
    older bundles read from the training config they carry; None when neither says."""
    if info.type == "token":
        return False
    recorded = getattr(info, "pair", None)
    if recorded is not None:
        return bool(recorded)
    if isinstance(task_config, dict):
        fields = task_config.get("fields") or {}
        return isinstance(fields, dict) and fields.get("text_b") is not None
    return None


def _bundle_tasks(folder: Path | None) -> dict[str, dict[str, Any]]:
    # Read raw so that keys TaskInfo does not carry (such as a task's prompt) still reach clients.
    if folder is None:
        return {}
    try:
        meta = json.loads((Path(folder) / BUNDLE_FILE).read_text(encoding="utf-8"))
        return {t["name"]: t for t in meta.get("tasks", [])}
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("%s: cannot read task details (%s)", Path(folder) / BUNDLE_FILE, e)
        return {}


def _config_tasks(folder: Path | None) -> dict[str, Any]:
    if folder is None or not (Path(folder) / "config.yaml").is_file():
        return {}
    try:
        tasks = (yaml.safe_load((Path(folder) / "config.yaml").read_text(encoding="utf-8")) or {}).get("tasks")
    except (OSError, yaml.YAMLError, AttributeError) as e:
        log.warning("%s: unreadable (%s); pair tasks accept either input form", Path(folder) / "config.yaml", e)
        return {}
    return tasks if isinstance(tasks, dict) else {}


def shape_result(info: TaskInfo, out: dict[str, Any], top_k: int | None, return_probabilities: bool) -> dict[str, Any]:
    """The API answer for one item, from a `format_output` dict.

    The full label distribution is left out unless asked for (`return_probabilities`): for a
    bundle with many labels it would dominate the response size.
    """
    if info.type == "classification":
        result: dict[str, Any] = {"label": out["label"], "score": out["score"]}
    elif info.type == "multilabel":
        result = {"labels": out["labels"], "scores": {label: out["probabilities"][label] for label in out["labels"]}}
    elif info.type == "regression":
        result = {"value": out["value"]}
    else:
        result = {"tokens": out["tokens"], "entities": out["entities"]}
    probabilities = out.get("probabilities")
    if top_k is not None and probabilities:
        ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])[:top_k]  # stable: ties keep label order
        result["top"] = [{"label": label, "score": p} for label, p in ranked]
    if return_probabilities and probabilities is not None:
        result["probabilities"] = probabilities
    return result
