"""What prompts that enter through hooks on the encoder's layers share (kinds deep and prefix).

Per-layer prompts reach the encoder through hooks on its modules: a layer's input (`deep`) or its
attention's key and value projections (`prefix`). The server may run passes of one model in
several threads at once, so the tensors of the pass running in a thread are thread-local, and the
hooks stay installed (a no-op outside a pass with prompts) rather than added and removed per pass.
Not compatible with gradient checkpointing, whose recomputation runs outside the pass.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from promptmux.model.prompts.base import SoftPrompt, vocab_token_ids

_ACTIVE = threading.local()


class LayerPrompt(SoftPrompt):
    """A prompt whose per-layer vectors enter through hooks (`layer_context`), not at the input."""

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:
        # The hooks replace whatever is computed at the prompt positions; zeros keep the input cheap.
        return torch.zeros(task_ids.numel(), self.length, self.hidden, device=task_ids.device)


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


def active(module: nn.Module) -> torch.Tensor | None:
    """The tensor set for `module` by the pass running in this thread, or None."""
    return (getattr(_ACTIVE, "by_module", None) or {}).get(module)


def ensure_hook(module: nn.Module, name: str, install: Callable[[nn.Module], object]) -> None:
    """Install a hook once per module: `install(module)` runs unless the `name` marker is set."""
    if not getattr(module, name, False):
        install(module)
        setattr(module, name, True)


@contextlib.contextmanager
def activating(by_module: dict[nn.Module, torch.Tensor]) -> Iterator[None]:
    """Within the context, `active(m)` returns `by_module[m]` in this thread (nesting restores)."""
    previous = getattr(_ACTIVE, "by_module", None)
    _ACTIVE.by_module = by_module
    try:
        yield
    finally:
        _ACTIVE.by_module = previous
