"""`promptmux export --merge-lora`: bundles with LoRA folded into the encoder's Linear weights.

A LoRA bundle computes the low-rank products in every targeted layer at every pass (per task: once
per task in the batch); a merged bundle is a plain model with the update in W itself, as fast as a
model without LoRA, and loads without peft.

- `shared`: one merged bundle holding every task (or only `--task`).
- `per_task`: tasks need different weights, so a merged bundle serves one task: `--task T` writes
  it to OUT; without `--task`, OUT/<task>/ gets one bundle per task.

A merged bundle records where it came from in bundle.json (`settings.merged_lora`), and its
config.yaml lists only its tasks, with `model.lora.kind: none`, so `promptmux eval` scores it.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import yaml

from promptmux.errors import BundleError
from promptmux.fsutil import atomic_directory
from promptmux.model.lora_io import adapter_states, merge_lora
from promptmux.model.multitask import MultiTaskModel, TaskInfo
from promptmux.model.prompts import SoftPrompt, build_prompt
from promptmux.serve.bundle import load_bundle, write_bundle


def export_merged(bundle: str | Path, out: str | Path, task: str | None = None) -> list[Path]:
    """Write merged bundle(s) of the bundle (or run folder) `bundle` to `out`; returns their folders."""
    model, tokenizer, tasks, settings, folder = load_bundle(bundle)
    out = Path(out)
    if model.lora is None:
        raise BundleError(f"{folder}: this bundle has no LoRA to merge (bundle.json has no settings.lora)")
    names = [t.name for t in tasks]
    if task is not None and task not in names:
        raise BundleError(f"--task: {folder} has no task {task!r}; its tasks: {', '.join(names)}")
    if model.lora.kind == "per_task":
        adapters = list(adapter_states(model))
        if task is not None and task not in adapters:
            raise BundleError(f"--task: {task!r} has no LoRA adapter to merge (tasks with one: {', '.join(adapters)})")
        chosen = [task] if task is not None else adapters
        targets = {t: out if task is not None else out / t for t in chosen}
    else:
        targets = {task: out}
    for dest in targets.values():
        if dest.exists() and any(dest.iterdir()):
            raise BundleError(f"{dest}: already exists and is not empty; choose another output folder")
    config = _read_config(folder)
    lora = model.lora
    written = []
    for name, dest in targets.items():
        merged = merge_lora(copy.deepcopy(model), name if lora.kind == "per_task" else None)
        kept = tasks
        if name is not None:
            merged, kept = single_task(merged, tasks, name, settings.get("prompts"))
        record = {**{k: v for k, v in settings.items() if k != "lora"}, "merged_lora": {**settings["lora"], "task": name}}
        with atomic_directory(dest) as tmp:
            write_bundle(tmp, merged, tokenizer, kept, record, _merged_config(config, [t.name for t in kept]))
        written.append(dest)
    return written


def single_task(model: MultiTaskModel, tasks: list[TaskInfo], task: str, prompts: Any) -> tuple[MultiTaskModel, list[TaskInfo]]:
    """The model cut down to one task: its head, and its soft prompt (rebuilt for one task)."""
    if getattr(model, "added", None) is not None:
        raise BundleError("a one-task export of a bundle with added tasks (promptmux add-task) is not supported")
    prompt = None
    if model.prompt is not None:
        prompt = build_prompt(prompts, [task], model.encoder)
        copy_task_prompt(model.prompt, prompt, task)
    single = MultiTaskModel(model.encoder, {task: model.heads[task]}, prompt)
    return single.eval(), [t for t in tasks if t.name == task]


@torch.no_grad()
def copy_task_prompt(source: SoftPrompt, target: SoftPrompt, task: str) -> None:
    """Copy `task`'s prompt values into a module of the same kind built for that task alone.

    Tensors of the same shape (shared parts, and per-task ParameterDict entries, which keep the
    task's name) are copied; a tensor stacked over tasks ([T, ...], e.g. the `shared` kind's task
    factors) gives its row for `task`.
    """
    old = source.state_dict()
    index = source.tasks.index(task)
    for key, value in target.state_dict().items():
        have = old.get(key)
        if have is not None and have.shape == value.shape:
            value.copy_(have)
        elif have is not None and have.shape[0] == len(source.tasks) and have.shape[1:] == value.shape[1:] and value.shape[0] == 1:
            value.copy_(have[index : index + 1])
        else:
            raise BundleError(f"soft prompts ({source.kind}): cannot cut {key} down to task {task!r}")


def _read_config(folder: Path) -> dict[str, Any] | None:
    path = folder / "config.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def _merged_config(config: dict[str, Any] | None, names: list[str]) -> dict[str, Any] | None:
    """The training config for a merged bundle: its tasks only, and no LoRA left to build."""
    if config is None:
        return None
    config = copy.deepcopy(config)
    config["tasks"] = {k: v for k, v in (config.get("tasks") or {}).items() if k in names}
    config.setdefault("model", {})["lora"] = {"kind": "none"}
    return config
