"""Late prompts: per-task prompt vectors that enter at one middle layer instead of the input.

Liu et al., "Late Prompt Tuning: A Late Prompt Could Be Better Than Many Prompts" (2022),
https://arxiv.org/abs/2210.11292.

A task costs L·H parameters, as shallow prompt tuning does, but the prompt is inserted as the input
of layer k (`model.prompts.layer`, default the middle layer N // 2): the layers below run on the
text alone, and the prompt then steers only the upper layers. On small frozen encoders the input
prompt's signal is washed out by the many layers it must pass; entering late, it is both nearer the
heads and shorter to backpropagate through.

Mechanics (the L prompt positions sit in the sequence as for every kind, see base.py):
- layers 0..k-1 get a pre-hook that hides the prompt positions as keys (their attention mask is
  edited for the pass), so the real tokens see exactly what they see without a prompt;
- layer k gets the overwrite pre-hook deep prompts use (hooks.overwrite_inputs), which replaces the
  prompt positions of its input with the row's task prompt; from there on every token attends to it.
The lower layers still compute at the prompt positions, which nothing reads; the cost is L extra
positions in those layers, as for the other kinds.

Masks: the hook edits the mask a Hugging Face layer receives, which is a boolean (sdpa, True where
attention is allowed) or an additive float mask (eager), or None when nothing is masked. Other
attention implementations (flash, flex) are refused when the prompt is built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from promptmux.errors import ConfigError
from promptmux.model.backbone import encoder_layers
from promptmux.model.prompts.base import PROMPTS
from promptmux.model.prompts.hooks import LayerPrompt, activating, active, ensure_hook, layer_start, overwrite_inputs

MASKABLE = ("sdpa", "eager")  # attention implementations whose masks the hiding hook can edit


@PROMPTS.register("late")
class LatePrompt(LayerPrompt):
    """One [L, H] prompt per task, the input of layer `layer` at the prompt positions."""

    kind = "late"

    def __init__(
        self, tasks: Sequence[str], encoder: nn.Module, length: int, init: str = "vocab", layer: int | None = None
    ) -> None:
        super().__init__(tasks, encoder, length, init)
        n = len(encoder_layers(encoder))
        self.layer = n // 2 if layer is None else layer
        if not 0 <= self.layer < n:
            raise ConfigError(f"model.prompts.layer: {layer} is not a layer of this encoder (it has layers 0..{n - 1})")
        self.attention = getattr(encoder.config, "_attn_implementation", None) or "eager"
        if self.attention not in MASKABLE:
            raise ConfigError(
                f"model.prompts.kind: late prompts hide themselves from the lower layers through the attention "
                f"mask, which works with attention {' or '.join(MASKABLE)}, not {self.attention}"
            )
        self.prompts = nn.ParameterDict(
            {t: nn.Parameter(layer_start(encoder, length, init)[self.layer].clone()) for t in self.tasks}
        )

    @classmethod
    def from_config(cls, cfg, tasks: Sequence[str], encoder: nn.Module) -> LatePrompt:
        return cls(tasks, encoder, cfg.length, cfg.init, cfg.layer)

    def layer_context(self, encoder: nn.Module, task_ids: torch.Tensor) -> contextlib.AbstractContextManager:
        layers = encoder_layers(encoder)
        below = layers[: self.layer]
        for layer in below:
            ensure_hook(layer, _HIDES, lambda m: m.register_forward_pre_hook(_hide, with_kwargs=True))
        overwrite_inputs(layers[self.layer])
        hiding = _Hiding(self.length, self.attention)  # one per pass: the lower layers share its mask
        hidden = {(_HIDES, layer): hiding for layer in below}
        return activating({**hidden, layers[self.layer]: self.vectors()[task_ids]})

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, layer={self.layer}"


_HIDES = "_promptmux_late_hide_hook"


class _Hiding:
    """The hiding mask of one pass, built at the first lower layer and reused by the others, which
    receive the same mask from the encoder."""

    def __init__(self, length: int, attention: str) -> None:
        self.length, self.attention = length, attention
        self._given: torch.Tensor | None = None
        self._built: torch.Tensor | None = None

    def mask(self, given: torch.Tensor | None, hidden: torch.Tensor) -> torch.Tensor:
        if self._built is None or given is not self._given:
            self._given, self._built = given, hiding_mask(given, self.length, hidden, self.attention)
        return self._built


def _hide(module: nn.Module, args: tuple, kwargs: dict):
    """Pre-hook of the layers below the prompt's: the first L positions are no one's keys."""
    hiding = active((_HIDES, module))
    if hiding is None:
        return None
    hidden = args[0] if args else kwargs["hidden_states"]
    positional = len(args) > 1
    mask = hiding.mask(args[1] if positional else kwargs.get("attention_mask"), hidden)
    if positional:
        return (args[0], mask, *args[2:]), kwargs
    return args, {**kwargs, "attention_mask": mask}


def hiding_mask(mask: torch.Tensor | None, length: int, hidden: torch.Tensor, attention: str) -> torch.Tensor:
    """`mask` (as the layer receives it, [B, 1, Q, K] or None) with keys 0..length-1 masked out."""
    cols = torch.arange(hidden.size(1), device=hidden.device) < length  # [K]
    if mask is None:  # nothing masked: start from a mask that allows everything, in the layer's format
        if attention == "sdpa":
            mask = torch.ones(1, 1, 1, hidden.size(1), dtype=torch.bool, device=hidden.device)
        else:
            mask = torch.zeros(1, 1, 1, hidden.size(1), dtype=hidden.dtype, device=hidden.device)
    if mask.dtype == torch.bool:
        return mask & ~cols
    return mask.masked_fill(cols, torch.finfo(mask.dtype).min)
