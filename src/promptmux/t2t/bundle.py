"""Text-to-text bundles: save and load a decoder model with its tasks.

    bundle.json                  format version, "kind": "t2t", tasks (template, labels,
                                 verbalizer, max_new_tokens, metric), settings (max_length,
                                 precision, base, lora, prompts)
    lm/                          the whole LM (Hugging Face folder), when its weights were trained
    adapters/shared.safetensors  LoRA matrices (model.lora.kind: shared)
    prompts.safetensors          per-task soft prompts (model.prompts.kind: shallow)
    tokenizer/                   the tokenizer files
    config.yaml                  the training config

When the LM itself stayed frozen (LoRA, or soft prompts on `freeze.strategy: backbone`), the bundle
keeps only what was trained and names the base LM in `settings.base` (`model.backbone`: a
packaged alias such as `gemma3-270m`, or a folder); loading needs that base.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_file, save_file

from promptmux.errors import BundleError, ConfigError
from promptmux.serve.bundle import BUNDLE_FILE, FORMAT_VERSION, read_bundle_meta, resolve_bundle
from promptmux.t2t.model import T2TModel, build_model, lm_is_trained, load_lm, lora_state
from promptmux.t2t.tasks import T2TTask

KIND = "t2t"
ADAPTERS = "adapters/shared.safetensors"
PROMPTS = "prompts.safetensors"


def is_t2t_bundle(path: str | Path) -> bool:
    """Whether `path` (a bundle or run folder) holds a text-to-text bundle."""
    try:
        folder = resolve_bundle(path)
        return json.loads((folder / BUNDLE_FILE).read_text(encoding="utf-8")).get("kind") == KIND
    except (BundleError, OSError, ValueError):
        return False


def write_t2t_bundle(
    folder: Path, model: T2TModel, tokenizer, tasks: list[T2TTask], settings: dict[str, Any], config: dict[str, Any] | None = None
) -> None:
    """Write the bundle files into `folder` (callers make this atomic)."""
    from promptmux.model.lora import lora_settings
    from promptmux.model.prompts import prompt_settings

    folder.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in settings.items() if k not in ("lora", "prompts")}
    if lm_is_trained(model):
        model.lm.save_pretrained(folder / "lm")
    if model.lora is not None:
        (folder / "adapters").mkdir(exist_ok=True)
        save_file({k: v.contiguous() for k, v in lora_state(model).items()}, str(folder / ADAPTERS))
        settings["lora"] = lora_settings(model.lora)
    if model.prompt is not None:
        save_file({k: v.detach().contiguous() for k, v in model.prompt.state_dict().items()}, str(folder / PROMPTS))
        settings["prompts"] = prompt_settings({"kind": model.prompt.kind, "length": model.prompt.length, "init": model.prompt.init})
    tokenizer.save_pretrained(folder / "tokenizer")
    meta = {"format_version": FORMAT_VERSION, "kind": KIND, "tasks": [t.to_dict() for t in tasks], "settings": settings}
    (folder / BUNDLE_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    if config is not None:
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def lm_source(folder: Path, settings: dict[str, Any]) -> Path:
    """Where the bundle's LM loads from: its own `lm/`, else the base named in settings."""
    from promptmux.model.backbone import resolve_backbone

    if (folder / "lm" / "config.json").is_file():
        return folder / "lm"
    base = settings.get("base")
    if not base:
        raise BundleError(f"{folder}: no lm/ folder and no base LM in {BUNDLE_FILE}")
    try:
        return resolve_backbone(str(base))
    except ConfigError as e:
        raise BundleError(f"{folder}: the bundle keeps only its trained parts (LoRA / soft prompts) and "
                          f"needs its base LM {base!r}, which cannot be loaded: {e}") from None


def read_trained_parts(model: T2TModel, folder: Path) -> None:
    """Load the bundle's LoRA matrices and soft prompts into `model` (built with the same settings)."""
    if model.lora is not None:
        state = load_file(str(folder / ADAPTERS)) if (folder / ADAPTERS).is_file() else None
        ours = set(lora_state(model))
        if state is None or set(state) != ours:
            got = "nothing" if state is None else f"{len(set(state) & ours)} of {len(ours)} matching matrices"
            raise BundleError(f"{folder}/{ADAPTERS} does not match bundle.json's LoRA settings ({got})")
        model.lm.load_state_dict(state, strict=False)
    if model.prompt is not None:
        if not (folder / PROMPTS).is_file():
            raise BundleError(f"{folder}: missing {PROMPTS}")
        try:
            model.prompt.load_state_dict(load_file(str(folder / PROMPTS)))
        except RuntimeError as e:
            raise BundleError(f"{folder}/{PROMPTS} does not match bundle.json: {e}") from None


def load_t2t_bundle(path: str | Path) -> tuple[T2TModel, Any, list[T2TTask], dict[str, Any], Path]:
    """Load (model, tokenizer, tasks, settings, folder) from a text-to-text bundle or run folder."""
    from transformers import AutoTokenizer

    folder = resolve_bundle(path)
    meta = read_bundle_meta(folder)
    if meta.get("kind") != KIND:
        raise BundleError(f"{folder}: not a text-to-text bundle (model.kind: decoder)")
    if not (folder / "tokenizer").is_dir():
        raise BundleError(f"{folder}: missing tokenizer/")
    tasks = [T2TTask(**t) for t in meta["tasks"]]
    settings = meta["settings"]
    lm = load_lm(str(lm_source(folder, settings)))
    model = build_model(lm, [t.name for t in tasks], settings.get("prompts"), settings.get("lora"))
    read_trained_parts(model, folder)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    return model, tokenizer, tasks, settings, folder
