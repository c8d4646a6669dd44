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
from promptmux.model.prompts.hooks import LayerPrompt, activating, layer_start, overwrite_inputs


@PROMPTS.register("deep")
class DeepPrompt(LayerPrompt):
    """One [N, L, H] prompt per task: the input of each of the N layers at the prompt positions."""

    kind = "deep"

    def __init__(self, tasks: Sequence[str], encoder: nn.Module, length: int, init: str = "vocab") -> None:
        super().__init__(tasks, encoder, length, init)
        self.prompts = nn.ParameterDict({t: nn.Parameter(layer_start(encoder, length, init)) for t in self.tasks})

    def layer_context(
        self, encoder: nn.Module, task_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> contextlib.AbstractContextManager:
        layers = encoder_layers(encoder)
        per_layer = self.vectors()[task_ids].transpose(0, 1)  # [N, B, L, H]
        for layer in layers:
            overwrite_inputs(layer)
        return activating({layer: per_layer[i] for i, layer in enumerate(layers)})

