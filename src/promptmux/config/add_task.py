"""The new-task file of `promptmux add-task BUNDLE NEW_TASK_YAML`: schema, loading, checks.

A new-task file is a config with exactly one task under `tasks:` (the usual task schema), plus
optional `train:` settings for learning it, `seed`, `data_root` and an `add_task:` section:

    tasks:
      mrpc: {type: classification, fields: {text: sentence1, text_b: sentence2}, data: {...}}
    train: {max_steps: 300, lr: 3e-3, batch_size: 16}
    add_task:
      prompt: shallow        # the new task's own soft prompt: shallow, deep, prefix, late or none
      prompt_length: 20      # default: the bundle's soft prompt length, else 20
      few_shot: 16           # learn from k examples per label (sampled with `seed`)
      init: reptile          # plain (the prompt kind's own start) or reptile (meta-learned)
      reptile: {inner_steps: 5, inner_lr: 1e-2, meta_steps: 50, meta_lr: 0.5}

The encoder, `model.*` settings and the old tasks come from the bundle: a `model:` section may
only restate the bundle's values. Only the new head and the new prompt learn, so the `train:`
defaults differ from full training's: `train.lr` 3e-3 (used by the head, and by the prompt or adapter
unless `add_task.lr`), `train.max_steps` 200 when neither max_steps nor epochs is given, and
`train.eval_every` 50.
"""

from __future__ import annotations

import os
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from promptmux.config.load import (
    _expand_env,
    _format_validation_error,
    apply_override,
    config_from_dict,
    read_yaml,
)
from promptmux.config.schema import Config, Strict
from promptmux.errors import ConfigError

ALLOWED_KEYS = ("tasks", "train", "add_task", "seed", "data_root", "model")
TRAIN_DEFAULTS = {"lr": 3e-3, "eval_every": 50}
DEFAULT_MAX_STEPS = 200
DEFAULT_PROMPT_LENGTH = 20


class ReptileConfig(Strict):
    """Reptile meta-learning of the new prompt's starting point across the bundle's old tasks.

    Nichol, Achiam and Schulman, "On First-Order Meta-Learning Algorithms" (2018),
    https://arxiv.org/abs/1803.02999.
    """

    inner_steps: int = Field(5, ge=1)  # Adam steps on one old task per meta step
    inner_lr: float = Field(1e-2, gt=0)
    meta_steps: int = Field(50, ge=1)
    meta_lr: float = Field(0.5, gt=0, le=1)  # θ ← θ + meta_lr·(θ_task − θ)
    batch_size: int | None = Field(None, ge=1)  # inner-loop rows per step; default train.batch_size
    tasks: list[str] | None = None  # old tasks to meta-learn across; default: every old task


class AddTaskConfig(Strict):
    """How the new task is learned on the frozen bundle (the `add_task:` section)."""

    # What learns besides the new head: `prompt` (a soft prompt of kind `prompt`), `lora` (a new
    # adapter in the bundle's per-task LoRA layers), or `auto` (lora when the bundle uses per-task
    # LoRA and no soft prompts, else prompt).
    method: Literal["auto", "prompt", "lora"] = "auto"
    prompt: Literal["shallow", "deep", "prefix", "late", "none"] | None = None  # default: shallow (none with lora)
    prompt_length: int | None = Field(None, ge=1, le=512)
    prompt_init: Literal["vocab", "random"] = "vocab"
    lr: float | None = Field(None, gt=0)  # the new prompt's or adapter's rate; default head_lr
    few_shot: int | None = Field(None, ge=1)  # k training examples per label
    init: Literal["plain", "reptile"] = "plain"
    reptile: ReptileConfig = Field(default_factory=ReptileConfig)
    # Which weights the new bundle keeps: the best dev score's, or the last step's (for few-shot
    # comparisons where choosing on a large dev set would flatter the result).
    keep: Literal["best", "last"] = "best"


@dataclass(frozen=True)
class AddTaskSpec:
    """A validated new-task file."""

    name: str
    config: Config  # the new task alone, with the bundle's model settings
    add: AddTaskConfig
    method: Literal["prompt", "lora"]
    prompt: Literal["shallow", "deep", "prefix", "late", "none"]
    prompt_length: int
    path: Path


@dataclass(frozen=True)
class BundleFacts:
    """What the checks need to know about the bundle (read from bundle.json and config.yaml)."""

    folder: Path
    tasks: list[str]
    settings: dict[str, Any]
    config: dict[str, Any] | None  # the bundle's config.yaml, if it has one


def load_add_task(
    path: str | os.PathLike, bundle: BundleFacts, overrides: list[str] | tuple[str, ...] = ()
) -> AddTaskSpec:
    """Read, override and validate a new-task file against the bundle it extends."""
    path = Path(path)
    raw = read_yaml(path, "new-task file")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (tasks, train, add_task)")
    data = _expand_env(deepcopy(raw), "")
    for item in overrides:
        apply_override(data, item)
    for key in data:
        if key not in ALLOWED_KEYS:
            raise ConfigError(
                f"{key}: not used by add-task; a new-task file holds {', '.join(ALLOWED_KEYS[:-1])} and, "
                f"restating the bundle's values only, model ({path})"
            )
    section = data.pop("add_task", None) or {}
    if not isinstance(section, dict):
        raise ConfigError(
            f"add_task: expected a mapping of settings (prompt, few_shot, init, ...), got {section!r}"
        )
    try:
        add = AddTaskConfig.model_validate(section)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e).replace("\n  ", "\n  add_task.")) from None
    tasks = data.get("tasks")
    if not isinstance(tasks, dict) or len(tasks) != 1:
        got = ", ".join(tasks) if isinstance(tasks, dict) and tasks else "none"
        raise ConfigError(f"tasks: a new-task file holds exactly one new task; got {got} ({path})")
    (name,) = tasks
    if name in bundle.tasks:
        raise ConfigError(
            f"tasks.{name}: the bundle {bundle.folder} already has a task named {name!r} (its tasks: "
            f"{', '.join(bundle.tasks)}); give the new task another name"
        )
    model = _bundle_model(bundle)
    _check_model_section(data.get("model"), model, path.parent)
    data["model"] = model
    train = data.get("train") or {}
    if not isinstance(train, dict):
        raise ConfigError(f"train: expected a mapping of settings, got {train!r}")
    train = dict(train)
    for key, value in TRAIN_DEFAULTS.items():
        train.setdefault(key, value)
    if train.get("max_steps") is None and train.get("epochs") is None:
        train["max_steps"] = DEFAULT_MAX_STEPS
    data["train"] = train
    cfg = config_from_dict(data, (), base_dir=path.parent)
    method = _method(add, bundle)
    prompt = add.prompt or ("none" if method == "lora" else "shallow")
    length = _check_add_task(add, cfg, name, bundle, method, prompt)
    return AddTaskSpec(name, cfg, add, method, prompt, length, path)


def _bundle_model(bundle: BundleFacts) -> dict[str, Any]:
    """The bundle's `model:` section (the new task shares it), from config.yaml or bundle.json."""
    if bundle.config is not None and isinstance(bundle.config.get("model"), dict):
        return deepcopy(bundle.config["model"])
    s = bundle.settings
    model: dict[str, Any] = {
        "max_length": s.get("max_length", 128),
        "head_dropout": s.get("head_dropout", 0.0),
    }
    if s.get("prompts"):
        model["prompts"] = dict(s["prompts"])
    return model


def _check_model_section(given: Any, bundle_model: dict[str, Any], base_dir: Path) -> None:
    if given is None:
        return
    if not isinstance(given, dict):
        raise ConfigError("model: expected a mapping (and only the bundle's own values)")
    for key, value in _flatten(given, "model").items():
        have = _lookup(bundle_model, key.split(".")[1:])
        if have is _MISSING:
            raise ConfigError(
                f"{key}: the bundle records no such model setting; remove it from the new-task file"
            )
        same = value == have
        if (
            not same
            and key == "model.backbone"
            and isinstance(value, str)
            and isinstance(have, str)
        ):
            same = (base_dir / value).expanduser().resolve() == Path(have).expanduser().resolve()
        if not same:
            raise ConfigError(
                f"{key}: the new task shares the bundle's encoder and model settings ({key} = {have!r}); "
                f"got {value!r}. Remove {key} from the new-task file"
            )


_MISSING = object()


def _lookup(node: Any, parts: list[str]) -> Any:
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def _flatten(node: dict[str, Any], prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        dotted = f"{prefix}.{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, dotted))
        else:
            out[dotted] = value
    return out


def _lora_kind(bundle: BundleFacts) -> str:
    return str((bundle.settings.get("lora") or {}).get("kind", "none"))


def _prompt_kind(bundle: BundleFacts) -> str:
    return str((bundle.settings.get("prompts") or {}).get("kind", "none"))


def _method(add: AddTaskConfig, bundle: BundleFacts) -> Literal["prompt", "lora"]:
    if add.method != "auto":
        return add.method
    return (
        "lora" if _lora_kind(bundle) == "per_task" and _prompt_kind(bundle) == "none" else "prompt"
    )


def _check_add_task(
    add: AddTaskConfig, cfg: Config, name: str, bundle: BundleFacts, method: str, prompt: str
) -> int:
    """Cross-field checks of `add_task`; returns the new prompt's length."""
    task = cfg.tasks[name]
    if add.few_shot is not None and task.type != "classification":
        raise ConfigError(
            f"add_task.few_shot: k examples per label needs a classification task; tasks.{name} is {task.type}"
        )
    if method == "lora":
        if _lora_kind(bundle) != "per_task":
            raise ConfigError(
                f"add_task.method: lora adds an adapter to the bundle's per-task LoRA layers, but this bundle "
                f"has LoRA kind {_lora_kind(bundle)!r}; use add_task.method=prompt"
            )
        if _prompt_kind(bundle) != "none":
            raise ConfigError(
                f"add_task.method: lora on a bundle that also has soft prompts ({_prompt_kind(bundle)}) would need "
                f"a prompt for the new task in the old prompt module; use add_task.method=prompt"
            )
        if prompt != "none":
            raise ConfigError(
                "add_task.prompt: a task added with LoRA reads no soft prompt; leave it out or set none"
            )
    if add.init == "reptile" and (method != "prompt" or prompt == "none"):
        raise ConfigError(
            "add_task.init: reptile meta-learns the starting point of the new task's soft prompt; "
            "set add_task.prompt to shallow, deep or prefix (and add_task.method to prompt or auto)"
        )
    old = list(bundle.tasks)
    unknown = [t for t in (add.reptile.tasks or []) if t not in old]
    if unknown:
        raise ConfigError(
            f"add_task.reptile.tasks: {', '.join(unknown)} not in the bundle (its tasks: {', '.join(old)})"
        )
    if add.reptile.tasks is not None and not add.reptile.tasks:
        raise ConfigError(
            "add_task.reptile.tasks: name at least one old task (or leave it out for all)"
        )
    length = add.prompt_length
    if length is None:
        length = int((bundle.settings.get("prompts") or {}).get("length", DEFAULT_PROMPT_LENGTH))
    existing = ((bundle.settings.get("added_tasks") or {}).get("prompt")) or None
    if method == "prompt" and prompt != "none" and existing is not None:
        if existing["kind"] != prompt:
            raise ConfigError(
                f"add_task.prompt: tasks added to this bundle before use {existing['kind']} prompts; "
                f"use {existing['kind']} (or none) for this one too"
            )
        if add.prompt_length is None:
            length = int(existing["length"])
        elif int(existing["length"]) != length:
            raise ConfigError(
                f"add_task.prompt_length: tasks added to this bundle before use length {existing['length']}; "
                f"use the same (or leave it out)"
            )
    return length
