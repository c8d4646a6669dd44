"""The bundle: a self-contained folder with everything needed to predict.

    bundle.json          format version, tasks (type, labels, pooling, metric), model settings
                         (with `prompts`, the soft prompt shape, when the model has soft prompts)
                         (with `added_tasks`, tasks added by `promptmux add-task`, see model/added.py)
    model.safetensors    encoder + heads (+ soft prompts); with LoRA the base encoder under its plain names
    adapters/            with LoRA (`settings.lora` in bundle.json): shared.safetensors, or one
                         <task>.safetensors per task (see promptmux.model.lora_io)
    encoder/config.json  the encoder architecture (no pretrained weights are needed to load)
    tokenizer/           the tokenizer files
    config.yaml          the training config, for reference and `promptmux eval`
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import load_model, save_model

from promptmux.errors import BundleError
from promptmux.model.backbone import backbone_from_config
from promptmux.model.lora import lora_settings
from promptmux.model.lora_io import base_view, read_adapters, write_adapters
from promptmux.model.multitask import MultiTaskModel, TaskInfo, build_model

FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"


def write_bundle(
    folder: Path,
    model: MultiTaskModel,
    tokenizer,
    tasks: list[TaskInfo],
    settings: dict[str, Any],
    config: dict[str, Any] | None = None,
) -> None:
    """Write the bundle files into `folder` (callers make this atomic with `atomic_directory`)."""
    folder.mkdir(parents=True, exist_ok=True)
    with base_view(model):  # LoRA matrices go to adapters/, not into model.safetensors
        save_model(model, str(folder / "model.safetensors"))
    write_adapters(folder, model)
    # `lora` in bundle.json always describes the model written: load_bundle rebuilds its layers.
    settings = {k: v for k, v in settings.items() if k != "lora"}
    if model.lora is not None:
        settings["lora"] = lora_settings(model.lora)
    model.encoder.config.save_pretrained(folder / "encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    meta = {
        "format_version": FORMAT_VERSION,
        "tasks": [t.to_dict() for t in tasks],
        "settings": settings,
    }
    (folder / BUNDLE_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    if config is not None:
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


def resolve_bundle(path: str | Path) -> Path:
    """Accept a bundle folder or a run folder (whose best bundle is `best/`)."""
    path = Path(path)
    for candidate in (path, path / "best", path / "last"):
        if (candidate / BUNDLE_FILE).is_file():
            return candidate
    raise BundleError(f"{path}: no bundle found (expected {BUNDLE_FILE} here or in best/ or last/)")


def read_bundle_meta(folder: Path) -> dict[str, Any]:
    try:
        meta = json.loads((folder / BUNDLE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BundleError(f"{folder / BUNDLE_FILE}: unreadable ({e})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"{folder / BUNDLE_FILE}: format version {meta.get('format_version')} is not supported "
            f"(this promptmux reads version {FORMAT_VERSION})"
        )
    return meta


def load_bundle(path: str | Path) -> tuple[MultiTaskModel, Any, list[TaskInfo], dict[str, Any], Path]:
    """Load (model, tokenizer, tasks, settings, folder) from a bundle or run folder."""
    from transformers import AutoTokenizer

    folder = resolve_bundle(path)
    meta = read_bundle_meta(folder)
    if meta.get("kind") == "t2t":
        raise BundleError(f"{folder}: a text-to-text (decoder) bundle; load it with Predictor.from_pretrained "
                          f"or promptmux.t2t.bundle.load_t2t_bundle")
    tasks = [TaskInfo(**t) for t in meta["tasks"]]
    settings = meta["settings"]
    for needed in ("model.safetensors", "encoder/config.json", "tokenizer"):
        if not (folder / needed).exists():
            raise BundleError(f"{folder}: missing {needed}")
    encoder = backbone_from_config(folder / "encoder")
    # Bundles without soft prompts (or written before they existed) have no "prompts" setting.
    model = build_model(encoder, tasks, head_dropout=settings.get("head_dropout", 0.0), prompts=settings.get("prompts"),
                        added=settings.get("added_tasks"), lora=settings.get("lora"))
    load_weights(model, folder)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    return model, tokenizer, tasks, settings, folder


def load_weights(model: MultiTaskModel, folder: Path) -> None:
    """Load a bundle's model.safetensors and, with LoRA, its adapters/ into `model` (built to match)."""
    with base_view(model):
        missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise BundleError(f"{folder}/model.safetensors does not match bundle.json: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    read_adapters(folder, model)
