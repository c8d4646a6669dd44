"""What prompts that enter through hooks on the encoder's layers share (kinds deep, late, prefix).

Per-layer prompts reach the encoder through hooks on its modules: a layer's input (`deep`, `late`)
or its attention's key and value projections (`prefix`). The server may run passes of one model in
several threads at once, so the tensors of the pass running in a thread are thread-local, and the
hooks stay installed (a no-op outside a pass with prompts) rather than added and removed per pass.
Not compatible with gradient checkpointing, whose recomputation runs outside the pass.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from promptmux.model.backbone import encoder_layers
from promptmux.model.prompts.base import SoftPrompt, vocab_token_ids

_ACTIVE = threading.local()


class LayerPrompt(SoftPrompt):
    """A prompt whose per-layer vectors enter through hooks (`layer_context`), not at the input."""

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:
        # The hooks replace whatever is computed at the prompt positions; zeros keep the input cheap.
        return torch.zeros(task_ids.numel(), self.length, self.hidden, device=task_ids.device)


def layer_start(encoder: nn.Module, length: int, init: str) -> torch.Tensor:
    """[N, L, H] starting prompts at the input of each of the N layers: what each layer sees at L
    random vocabulary tokens (`vocab`), or noise at each layer's scale (`random`)."""
    start = layer_inputs(encoder, length)
    if init == "random":
        start = torch.randn_like(start) * start.std(dim=(1, 2), keepdim=True)
    return start


def layer_inputs(encoder: nn.Module, length: int) -> torch.Tensor:
    """Each layer's input at L random vocabulary tokens ([N, L, H]); deeper layers' states are
    larger than word embeddings."""
    seen: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_pre_hook(
            lambda m, args, kwargs: seen.append((args[0] if args else kwargs["hidden_states"])[0].float()),
            with_kwargs=True,
        )
        for layer in encoder_layers(encoder)
    ]
    run_on_vocab_tokens(encoder, length, hooks)
    return torch.stack(seen).cpu()


@torch.no_grad()
def run_on_vocab_tokens(encoder: nn.Module, length: int, hooks: list[RemovableHandle]) -> None:
    """Run the encoder (in eval mode) over L random vocabulary tokens at the prompt positions 1..L
    (see base.py), for `hooks` to record what the layers see; removes the hooks afterwards.

    Kinds start from what their hooks record there, so that the untrained prompt acts like a hard
    prompt of random words, at the scale each layer expects.
    """
    device = encoder.get_input_embeddings().weight.device
    ids = vocab_token_ids(encoder.config.vocab_size, length).unsqueeze(0).to(device)
    positions = torch.arange(1, length + 1, device=device).unsqueeze(0)
    was_training = encoder.training
    encoder.eval()
    try:
        encoder(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=positions)
    finally:
        encoder.train(was_training)
        for h in hooks:
            h.remove()


def active(key: Hashable) -> Any:
    """What the pass running in this thread set for `key` (a module, mostly), or None."""
    return (getattr(_ACTIVE, "by_module", None) or {}).get(key)


def ensure_hook(module: nn.Module, name: str, install: Callable[[nn.Module], object]) -> None:
    """Install a hook once per module: `install(module)` runs unless the `name` marker is set."""
    if not getattr(module, name, False):
        install(module)
        setattr(module, name, True)


@contextlib.contextmanager
def activating(by_module: dict[Hashable, Any]) -> Iterator[None]:
    """Within the context, `active(k)` returns `by_module[k]` in this thread (nesting restores)."""
    previous = getattr(_ACTIVE, "by_module", None)
    _ACTIVE.by_module = by_module
    try:
        yield
    finally:
        _ACTIVE.by_module = previous


_OVERWRITES = "_promptmux_overwrite_hook"


def overwrite_inputs(layer: nn.Module) -> None:
    """Install (once) the pre-hook by which `active(layer)`, a [B, L, H] tensor, replaces the first L
    positions of the layer's input."""
    ensure_hook(layer, _OVERWRITES, lambda m: m.register_forward_pre_hook(_overwrite, with_kwargs=True))


def _overwrite(module: nn.Module, args: tuple, kwargs: dict):
    prompts = active(module)
    if prompts is None:
        return None
    hidden = args[0] if args else kwargs["hidden_states"]
    new = torch.cat([prompts.to(hidden.dtype), hidden[:, prompts.size(1) :]], 1)
    if args:
        return (new, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": new}
