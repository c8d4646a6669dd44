"""LoRA on the shared encoder: one adapter for every task, or one adapter per task routed per row.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (2021),
https://arxiv.org/abs/2106.09685. A targeted Linear layer computes `W x + (alpha / r) B A x` with
W frozen, A [r, in] and B [out, r] trained; B starts at zero, so training starts from the
pretrained model exactly.

Kinds (`model.lora.kind`):

- `shared`: one adapter for all tasks, injected with peft (`inject_adapter_in_model`).
- `per_task`: one adapter per task, each row of a mixed-task batch through its own task's
  adapter. peft can mix adapters in one batch (`adapter_names=`, `_mixed_batch_forward`), but
  refuses it in training mode ("Cannot pass `adapter_names` when the model is in training
  mode"), and it gathers rows by per-row index lists in every layer. Our batches keep each task's
  rows contiguous (`MultiTaskModel.forward` gets them as slices), so `TaskLoraLinear` adds each
  task's update to its slice: the same maths, gradients in training, no gather.

What trains (see `freeze_encoder`): the base encoder is frozen and only the LoRA matrices train
in it; heads and soft prompts train as without LoRA. Freeze strategies keep a meaning where they
have one: `top_k` also trains the top k layers in full (shared by every task), `bottom_k` freezes
the LoRA matrices of the bottom k layers too (only upper layers adapt); `none` and `embeddings`
add nothing to the frozen base; `backbone` would freeze LoRA as well and is refused at config load.

Files (`promptmux.model.lora_io`): a bundle keeps the base encoder, heads and prompts in
`model.safetensors` under their plain names and each adapter in `adapters/<name>.safetensors`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from promptmux.config.schema import LoraConfig
from promptmux.errors import ConfigError

if TYPE_CHECKING:
    from promptmux.model.multitask import MultiTaskModel

# Settings that decide the adapters' shape and maths; bundle.json records them (not `lr`).
SETTING_KEYS = ("kind", "r", "alpha", "dropout", "target_modules")

# The task row slices of the pass running in this thread (or asyncio task). A context variable,
# not a module attribute: the server runs passes of one model in several threads at once.
_ROWS: ContextVar[dict[str, slice] | None] = ContextVar("promptmux_lora_rows", default=None)


class TaskLoraLinear(nn.Module):
    """A frozen Linear layer plus one low-rank update per task, applied to that task's rows.

    Args:
        base_layer: the pretrained Linear layer (kept as is; frozen by `attach_lora`).
        tasks: task names; each gets A [r, in] (Kaiming-uniform, as peft) and B [out, r] (zeros).
        r: rank; alpha: the update is scaled by alpha / r; dropout: on the update's input.
    """

    def __init__(self, base_layer: nn.Linear, tasks: Sequence[str], r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.r = r
        self.scaling = alpha / r
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        for task in tasks:
            self.add_adapter(task)

    def add_adapter(self, task: str) -> None:
        """A fresh adapter for `task`: A Kaiming-uniform (as peft), B zeros (the update starts at 0)."""
        w = self.base_layer.weight
        a = torch.empty(self.r, self.base_layer.in_features, device=w.device, dtype=w.dtype)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.lora_A[task] = nn.Parameter(a)
        self.lora_B[task] = nn.Parameter(torch.zeros(self.base_layer.out_features, self.r, device=w.device, dtype=w.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        rows = _ROWS.get()
        if rows is None:
            raise RuntimeError(
                "per-task LoRA: this pass has no task rows; run the encoder through "
                "MultiTaskModel.forward (or inside promptmux.model.lora.route_rows(rows))"
            )
        # Each task's update on its own contiguous rows, joined in row order (rows no task claims
        # get none). Out of place: an in-place add into slices of a frozen layer's output fails
        # under autograd when one slice spans the whole batch.
        pieces: list[torch.Tensor] = []
        at = 0
        for task, sl in sorted(rows.items(), key=lambda item: item[1].start):
            if task not in self.lora_A:
                raise ValueError(f"per-task LoRA: no adapter for task {task!r} (adapters: {', '.join(self.lora_A)})")
            if sl.start > at:
                pieces.append(out.new_zeros((sl.start - at, *out.shape[1:])))
            update = F.linear(F.linear(self.lora_dropout(x[sl]), self.lora_A[task]), self.lora_B[task])
            pieces.append((update * self.scaling).to(out.dtype))
            at = sl.stop
        if not pieces:
            return out
        if at < out.shape[0]:
            pieces.append(out.new_zeros((out.shape[0] - at, *out.shape[1:])))
        return out + torch.cat(pieces)

    def delta_weight(self, task: str) -> torch.Tensor:
        """The task's update as a weight matrix, (alpha / r) B A, shaped like the base weight."""
        return self.scaling * (self.lora_B[task].float() @ self.lora_A[task].float())

    def extra_repr(self) -> str:
        return f"tasks={len(self.lora_A)}, r={self.r}, scaling={self.scaling:g}"


@contextlib.contextmanager
def route_rows(rows: dict[str, slice]) -> Iterator[None]:
    """Tell per-task LoRA layers which batch rows belong to which task during one pass."""
    token = _ROWS.set(rows)
    try:
        yield
    finally:
        _ROWS.reset(token)


def as_lora_config(cfg: Any) -> LoraConfig | None:
    """A validated `LoraConfig` from a LoraConfig or a dict (as bundle.json records it); None if off."""
    if cfg is None:
        return None
    if not isinstance(cfg, LoraConfig):
        cfg = LoraConfig.model_validate({k: v for k, v in dict(cfg).items() if k in SETTING_KEYS})
    return None if cfg.kind == "none" else cfg


def lora_settings(cfg: Any) -> dict[str, Any]:
    """The settings bundle.json records for a LoraConfig (or a dict of its fields)."""
    data = cfg.model_dump() if hasattr(cfg, "model_dump") else dict(cfg)
    return {k: data[k] for k in SETTING_KEYS if k in data}


def matches(name: str, target: str) -> bool:
    """peft's rule for a list of target names: the full module name, or a dotted suffix of it."""
    return name == target or name.endswith("." + target)


def find_targets(encoder: nn.Module, targets: Sequence[str]) -> list[str]:
    """Full names of the encoder's Linear layers that `targets` select; ConfigError if one selects
    nothing, or selects something that is not a Linear layer."""
    linear = [n for n, m in encoder.named_modules() if isinstance(m, nn.Linear)]
    short = sorted({n.rsplit(".", 1)[-1] for n in linear})
    chosen: list[str] = []
    for target in targets:
        hits = [n for n, m in encoder.named_modules() if n and matches(n, target)]
        bad = [n for n in hits if n not in linear]
        if not hits or bad:
            what = "matches no module" if not hits else f"matches {bad[0]!r}, which is not a Linear layer"
            raise ConfigError(
                f"model.lora.target_modules: {target!r} {what} of the encoder "
                f"({type(encoder).__name__}); its Linear layers are named {', '.join(short)} "
                f"(a dotted suffix of the full name such as attention.self.query also works)"
            )
        chosen.extend(n for n in hits if n not in chosen)
    return [n for n in linear if n in chosen]  # in module order


def attach_lora(model: MultiTaskModel, cfg: Any) -> None:
    """Add LoRA (a LoraConfig or a dict of its settings; None or kind `none`: nothing) to the
    model's encoder in place, freeze the base encoder, and record the settings on `model.lora`."""
    cfg = as_lora_config(cfg)
    if cfg is None:
        return
    if model.lora is not None:
        raise ValueError("this model has LoRA already")
    encoder = model.encoder
    targets = find_targets(encoder, cfg.target_modules)
    if cfg.kind == "shared":
        from peft import LoraConfig as PeftLoraConfig
        from peft import inject_adapter_in_model

        # Full names select exactly the layers `find_targets` checked (peft would also match
        # non-Linear modules by suffix). peft freezes the rest of the encoder.
        peft_cfg = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets)
        inject_adapter_in_model(peft_cfg, encoder)
    else:
        encoder.requires_grad_(False)
        # Tasks added later to a frozen model (model/added.py) read the base encoder, no adapter.
        added = model.added.tasks if getattr(model, "added", None) is not None else []
        tasks = [t for t in model.heads if t not in added]
        for name in targets:
            replace_module(encoder, name, TaskLoraLinear(encoder.get_submodule(name), tasks, cfg.r, cfg.alpha, cfg.dropout))
    model.lora = cfg


def replace_module(root: nn.Module, name: str, module: nn.Module) -> None:
    """Put `module` at the dotted `name` inside `root`."""
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def lora_modules(encoder: nn.Module) -> list[tuple[str, nn.Module]]:
    """(full name, layer) of every LoRA layer: peft's for `shared`, `TaskLoraLinear` for `per_task`."""
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in encoder.named_modules() if isinstance(m, (LoraLayer, TaskLoraLinear))]


def adapter_pairs(layer: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """adapter name -> (A [r, in], B [out, r]) parameters of one LoRA layer (peft's or ours)."""
    if isinstance(layer, TaskLoraLinear):
        return {t: (layer.lora_A[t], layer.lora_B[t]) for t in layer.lora_A}
    return {name: (layer.lora_A[name].weight, layer.lora_B[name].weight) for name in layer.lora_A}


def lora_parameters(model: MultiTaskModel) -> list[nn.Parameter]:
    """Every LoRA matrix of the model (trainable or not)."""
    if model.lora is None:  # (spares models without LoRA the import of peft)
        return []
    return [p for _, layer in lora_modules(model.encoder) for pair in adapter_pairs(layer).values() for p in pair]


def freeze_encoder(model: MultiTaskModel, strategy: str, k: int = 0) -> None:
    """`model.freeze` for the encoder; with LoRA, as the module docstring says."""
    from promptmux.model.backbone import apply_freeze, encoder_layers

    if model.lora is None:
        apply_freeze(model.encoder, strategy, k)
        return
    if strategy == "backbone":
        raise ConfigError("model.freeze.strategy: backbone would freeze the LoRA matrices too; use none or top_k")
    encoder = model.encoder
    encoder.requires_grad_(False)
    bottom: set[int] = set()
    if strategy in ("top_k", "bottom_k"):
        layers = encoder_layers(encoder)
        if k > len(layers):
            raise ConfigError(f"model.freeze.k: {k} exceeds the encoder's {len(layers)} layers")
        if strategy == "top_k":
            for layer in layers[len(layers) - k :]:
                layer.requires_grad_(True)
        else:
            bottom = {id(m) for layer in layers[:k] for m in layer.modules()}
    for _, layer in lora_modules(encoder):
        for a, b in adapter_pairs(layer).values():
            a.requires_grad_(id(layer) not in bottom)
            b.requires_grad_(id(layer) not in bottom)


def lora_share(model: MultiTaskModel, total: int) -> str:
    """` | LoRA (kind): N (x%)` for the training log; empty without LoRA."""
    if model.lora is None:
        return ""
    n = sum(p.numel() for p in lora_parameters(model) if p.requires_grad)
    return f" | LoRA ({model.lora.kind}): {n:,} ({100 * n / max(total, 1):.3f}%)"
