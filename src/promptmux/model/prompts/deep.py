"""Deep prompts: per-task prompt vectors at the input of every transformer layer (P-tuning v2 style).

Liu et al., "P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning Universally Across Scales
and Tasks" (2022), https://arxiv.org/abs/2110.07602.

P-tuning v2 itself (and peft's prefix tuning) gives every layer's attention free key and value
prefixes; that is the `prefix` kind (prefix.py), at 2·N·L·H parameters per task. This kind ties
the two: forward pre-hooks on each layer (`encoder_layers()`) overwrite the hidden states at the L
prompt positions with that layer's prompt for each row's task, so the layer's own projections make
the keys and values, and a task costs N·L·H parameters (MiniLM, L=20, three tasks: 0.6% of the
encoder). Any Hugging Face encoder works.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from promptmux.model.backbone import encoder_layers
from promptmux.model.prompts.base import PROMPTS
from promptmux.model.prompts.hooks import (
    LayerPrompt,
    activating,
    active,
    ensure_hook,
    run_on_vocab_tokens,
)


@PROMPTS.register("deep")
class DeepPrompt(LayerPrompt):
    """One [N, L, H] prompt per task: the input of each of the N layers at the prompt positions."""

    kind = "deep"

    def __init__(self, tasks: Sequence[str], encoder: nn.Module, length: int, init: str = "vocab") -> None:
        super().__init__(tasks, encoder, length, init)
        self.prompts = nn.ParameterDict({t: nn.Parameter(_start(encoder, length, init)) for t in self.tasks})

    def layer_context(self, encoder: nn.Module, task_ids: torch.Tensor) -> contextlib.AbstractContextManager:
        per_row = self.vectors()[task_ids]  # [B, N, L, H]
        return _overwriting(encoder_layers(encoder), per_row.transpose(0, 1))


_HOOKED = "_promptmux_deep_prompt_hook"


def _overwrite(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook: the first L positions of the layer's input become the layer's prompts."""
    prompts = active(module)
    if prompts is None:
        return None
    hidden = args[0] if args else kwargs["hidden_states"]
    new = torch.cat([prompts.to(hidden.dtype), hidden[:, prompts.size(1) :]], 1)
    if args:
        return (new, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": new}


def _overwriting(layers: nn.ModuleList, prompts: torch.Tensor) -> contextlib.AbstractContextManager:
    """Within the context, layer i's input starts with `prompts[i]` ([N, B, L, H]) in this thread."""
    for layer in layers:
        ensure_hook(layer, _HOOKED, lambda m: m.register_forward_pre_hook(_overwrite, with_kwargs=True))
    return activating({layer: prompts[i] for i, layer in enumerate(layers)})


def _start(encoder: nn.Module, length: int, init: str) -> torch.Tensor:
    start = _layer_inputs(encoder, length)  # [N, L, H]
    if init == "random":
        start = torch.randn_like(start) * start.std(dim=(1, 2), keepdim=True)
    return start


def _layer_inputs(encoder: nn.Module, length: int) -> torch.Tensor:
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
