"""LoRA adapters on disk, and folding them into the base weights (merged export).

A bundle with LoRA keeps two kinds of files:

- `model.safetensors`: the base encoder, heads and soft prompts under their plain names (the names
  a model without LoRA has), written and read through `base_view`, which puts each LoRA layer's
  base Linear back in its place for the moment. So a merged or LoRA-free bundle has the same
  layout, and the base weights are not stored twice.
- `adapters/shared.safetensors` (`shared`) or `adapters/<task>.safetensors` (`per_task`, one small
  file per task): `<layer name>.lora_A.weight` [r, in] and `<layer name>.lora_B.weight` [out, r]
  for every targeted layer, fp32, with the LoRA settings in the file's metadata.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from promptmux.errors import BundleError
from promptmux.model.lora import (
    TaskLoraLinear,
    adapter_pairs,
    lora_modules,
    lora_settings,
    replace_module,
)

if TYPE_CHECKING:
    from promptmux.model.multitask import MultiTaskModel

ADAPTER_DIR = "adapters"
SHARED = "shared"


def adapter_states(model: MultiTaskModel) -> dict[str, dict[str, torch.Tensor]]:
    """Adapter file stem (`shared`, or a task name) -> {`<layer>.lora_A.weight`: A,
    `<layer>.lora_B.weight`: B}, the model's own parameters (detached)."""
    states: dict[str, dict[str, torch.Tensor]] = {}
    if model.lora is None:
        return states
    for layer_name, layer in lora_modules(model.encoder):
        for adapter, (a, b) in adapter_pairs(layer).items():
            state = states.setdefault(SHARED if model.lora.kind == "shared" else adapter, {})
            state[f"{layer_name}.lora_A.weight"] = a.detach()
            state[f"{layer_name}.lora_B.weight"] = b.detach()
    return states


def write_adapters(folder: Path, model: MultiTaskModel) -> list[Path]:
    """Write one adapter file per `adapter_names` entry into `folder/adapters`; returns the paths."""
    from safetensors.torch import save_file

    if model.lora is None:
        return []
    (folder / ADAPTER_DIR).mkdir(parents=True, exist_ok=True)
    meta = {k: json.dumps(v) for k, v in lora_settings(model.lora).items()}
    paths = []
    for stem, tensors in adapter_states(model).items():
        path = folder / ADAPTER_DIR / f"{stem}.safetensors"
        save_file({k: t.float().contiguous().cpu() for k, t in tensors.items()}, str(path), metadata={**meta, "adapter": stem})
        paths.append(path)
    return paths


@torch.no_grad()
def read_adapters(folder: Path, model: MultiTaskModel) -> None:
    """Load every adapter file the model expects from `folder/adapters`; BundleError names the
    missing file or the tensors that do not match."""
    from safetensors.torch import load_file

    expected = adapter_states(model)
    for stem, targets in expected.items():
        path = folder / ADAPTER_DIR / f"{stem}.safetensors"
        if not path.is_file():
            raise BundleError(f"{folder}: bundle.json records LoRA ({model.lora.kind}) but {ADAPTER_DIR}/{stem}.safetensors is missing")
        saved = load_file(str(path))
        missing, unexpected = sorted(targets.keys() - saved.keys()), sorted(saved.keys() - targets.keys())
        if missing or unexpected:
            raise BundleError(f"{path} does not match bundle.json: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for key, param in targets.items():
            if saved[key].shape != param.shape:
                raise BundleError(f"{path}: {key} has shape {tuple(saved[key].shape)}, the model needs {tuple(param.shape)}")
            param.copy_(saved[key])


@contextlib.contextmanager
def base_view(model: MultiTaskModel) -> Iterator[None]:
    """While open, the encoder holds its plain base Linear layers where LoRA layers sit, so that its
    state dict has the names (and only the tensors) of a model without LoRA."""
    layers = lora_modules(model.encoder) if model.lora is not None else []
    for name, layer in layers:
        replace_module(model.encoder, name, layer.base_layer)
    try:
        yield
    finally:
        for name, layer in layers:
            replace_module(model.encoder, name, layer)


@torch.no_grad()
def merge_lora(model: MultiTaskModel, task: str | None = None) -> MultiTaskModel:
    """Fold LoRA into the base Linear weights in place and drop the LoRA layers.

    `shared` folds the one adapter (with peft's `merge`); `per_task` needs `task`, whose adapter is
    folded: the merged weights then serve that task alone, since other tasks need other weights.
    """
    if model.lora is None:
        raise BundleError("this model has no LoRA to merge")
    if model.lora.kind == "per_task" and task not in adapter_states(model):
        known = ", ".join(adapter_states(model))
        raise BundleError(f"per-task LoRA: merging needs one task's adapter; choose --task from {known}" + (f" (got {task!r})" if task else ""))
    for name, layer in lora_modules(model.encoder):
        base: nn.Linear = layer.base_layer
        if isinstance(layer, TaskLoraLinear):
            base.weight += layer.delta_weight(task).to(base.weight.dtype)
        else:
            layer.merge()
            base = layer.get_base_layer()
        replace_module(model.encoder, name, base)
    if hasattr(model.encoder, "peft_config"):  # set by peft's inject_adapter_in_model
        del model.encoder.peft_config
    model.lora = None
    return model
