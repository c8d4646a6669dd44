"""The old tasks' data for `promptmux add-task`: dev splits for before/after scores, train splits
for Reptile.

The data is found through the bundle's config.yaml, which records each task's data paths (made
absolute when the bundle was trained), or through `--meta-config`, a config whose `tasks:` point at
the old tasks' data elsewhere. Label ids come from the bundle, so they match the trained heads.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from promptmux.config.add_task import BundleFacts
from promptmux.config.load import config_from_dict, read_yaml
from promptmux.errors import ConfigError, DataError
from promptmux.model.multitask import TaskInfo
from promptmux.train.setup import PreparedData, prepare_data

log = logging.getLogger("promptmux.train")


def load_old_tasks(
    bundle: BundleFacts,
    infos: list[TaskInfo],
    tokenizer,
    max_length: int,
    meta_config: str | Path | None = None,
    train_for: list[str] | tuple[str, ...] = (),
) -> tuple[PreparedData, dict[str, str]]:
    """Encoded dev splits of the old tasks (and train splits of `train_for`); plus skip reasons.

    A task whose data cannot be read is skipped with a reason, except a task in `train_for`
    (Reptile needs it), which is an error naming the task and what to do.
    """
    data = PreparedData(tasks=list(infos), raw={}, encoded={"train": {}, "dev": {}})
    skipped: dict[str, str] = {}
    source, tasks, base_dir, data_root = _source(bundle, infos, meta_config)
    if tasks is None:
        if train_for:
            raise ConfigError(
                f"add_task.init: reptile needs the old tasks' training data, but {bundle.folder} has no "
                f"config.yaml recording it; pass --meta-config CONFIG whose tasks: point at it"
            )
        return data, {t.name: f"{source}; pass --meta-config to score old tasks" for t in infos}
    labels = {t.name: t.labels for t in infos}
    for name, task in tasks.items():
        if isinstance(task, dict) and labels.get(name) is not None:
            task["labels"] = labels[name]
    raw: dict[str, Any] = {"model": {"max_length": max_length}, "tasks": tasks}
    if data_root is not None:
        raw["data_root"] = data_root
    cfg = config_from_dict(raw, (), base_dir=base_dir)
    for info in infos:
        name = info.name
        needed = name in train_for
        if name not in cfg.tasks:
            if needed:
                raise ConfigError(f"add_task.reptile.tasks: {name} has no data in {source}")
            skipped[name] = f"not in {source}"
            continue
        splits = ("train", "dev") if needed else ("dev",)
        try:
            one = prepare_data(
                cfg.model_copy(update={"tasks": {name: cfg.tasks[name]}}), tokenizer, splits=splits
            )
        except DataError as e:
            if needed:
                raise DataError(
                    f"add_task.init: reptile needs old task {name}'s training data, recorded in {source}: {e}. "
                    f"Pass --meta-config CONFIG pointing at it, or leave {name} out with add_task.reptile.tasks"
                ) from None
            skipped[name] = f"data not readable ({e})"
            continue
        data.raw[name] = one.raw[name]
        for split in splits:
            if name in one.encoded.get(split, {}):
                data.encoded[split][name] = one.encoded[split][name]
        if name not in data.encoded["dev"]:
            skipped[name] = "no dev split"
    for name, why in skipped.items():
        log.info("old task %s: no before/after score (%s)", name, why)
    return data, skipped


def _source(
    bundle: BundleFacts, infos: list[TaskInfo], meta_config: str | Path | None
) -> tuple[str, dict[str, Any] | None, Path, Any]:
    """(description, tasks section, base folder for relative paths, data_root) of the old data."""
    known = [t.name for t in infos]
    if meta_config is None:
        if bundle.config is None or not isinstance(bundle.config.get("tasks"), dict):
            return f"{bundle.folder} has no config.yaml", None, bundle.folder, None
        tasks = {
            n: dict(t)
            for n, t in bundle.config["tasks"].items()
            if n in known and isinstance(t, dict)
        }
        return f"{bundle.folder / 'config.yaml'}", tasks, bundle.folder, None
    path = Path(meta_config)
    raw = read_yaml(path, "file", where="--meta-config")
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), dict) or not raw["tasks"]:
        raise ConfigError(
            f"--meta-config {path}: tasks: expected a mapping of the bundle's task names to their data"
        )
    unknown = [n for n in raw["tasks"] if n not in known]
    if unknown:
        raise ConfigError(
            f"--meta-config {path}: tasks.{unknown[0]} is not a task of the bundle (its tasks: {', '.join(known)})"
        )
    tasks = {n: dict(t) for n, t in raw["tasks"].items() if isinstance(t, dict)}
    return str(path), tasks, path.parent, raw.get("data_root")
