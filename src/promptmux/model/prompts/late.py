"""Late prompts: per-task prompt vectors that enter at one middle layer instead of the input.

Liu et al., "Late Prompt Tuning: A Late Prompt Could Be Better Than Many Prompts" (2022),
https://arxiv.org/abs/2210.11292.

A task costs L·H parameters, as shallow prompt tuning does, but the prompt is inserted as the input
of layer k (`model.prompts.layer`, default the middle layer N // 2): the layers below run on the
text alone, and the prompt then steers only the upper layers. On small frozen encoders the input
prompt's signal is washed out by the many layers it must pass; entering late, it is both nearer the
heads and shorter to backpropagate through.

Mechanics: the text alone runs through layers 0..k-1, exactly as without a prompt (the model's
own position ids, no extra positions); the prompt joins the sequence at layer k. A pre-hook on
layer k puts each row's task prompt in front of its hidden states, and pre-hooks on layers k..N-1
widen the attention mask by the L prompt keys (and, for masks with a row per query, the L prompt
queries, which read what the row's first token reads). The output thus has the L + n positions of
every kind (see base.py) and the heads strip the first L as usual. The lower layers never compute
at the prompt positions, which saves L / (L + n) of their work next to shallow or deep prompts.

Instance-aware late prompts (`model.prompts.instance_hidden: r`, the paper's prompt generator):
each row's prompt is its task's vectors plus a term made from the row's own text at layer k,
P(x) = P_t + s · up(gelu(down(pool(h_k(x)) / s))), one small network for every task (instance.py).

Measured (frozen MiniLM, SST-2 + MRPC + RTE in mixed batches, seed 42; mean normalized gain against
full fine-tuning): 20 vectors with a term of width 16 (`network_lr` 1e-3) score 0.68 at 2,000 steps
and 0.83 at 5,000, against 0.56 and 0.65 for the 20 vectors alone and 0.66 and 0.85 for 32 vectors,
which cost about as much (bench/results/prompt_tuning-s*-late-inst*.md). At the vectors' own rate
(1e-2) the network overshoots: 0.48 at 2,000 steps.

Masks: the hooks edit the mask a Hugging Face layer receives, which is a boolean (sdpa, True where
attention is allowed) or an additive float mask (eager), or None when nothing is masked (then it
stays None: every token reads every other and the prompt). Other attention implementations
(flash, flex) are refused when the prompt is built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from promptmux.errors import ConfigError
from promptmux.model.backbone import encoder_layers
from promptmux.model.prompts.base import PROMPTS
from promptmux.model.prompts.hooks import LayerPrompt, activating, active, ensure_hook, layer_start
from promptmux.model.prompts.instance import InstanceTerm

MASKABLE = ("sdpa", "eager")  # attention implementations whose masks the hooks can widen


@PROMPTS.register("late")
class LatePrompt(LayerPrompt):
    """One [L, H] prompt per task, put in front of the text's hidden states at the input of layer `layer`."""

    kind = "late"

    def __init__(
        self,
        tasks: Sequence[str],
        encoder: nn.Module,
        length: int,
        init: str = "vocab",
        layer: int | None = None,
        instance_hidden: int | None = None,
    ) -> None:
        super().__init__(tasks, encoder, length, init)
        n = len(encoder_layers(encoder))
        self.layer = n // 2 if layer is None else layer
        if not 0 <= self.layer < n:
            raise ConfigError(f"model.prompts.layer: {layer} is not a layer of this encoder (it has layers 0..{n - 1})")
        self.attention = getattr(encoder.config, "_attn_implementation", None) or "eager"
        if self.attention not in MASKABLE:
            raise ConfigError(
                f"model.prompts.kind: late prompts join the sequence at their layer by widening the attention "
                f"mask, which works with attention {' or '.join(MASKABLE)}, not {self.attention}"
            )
        start = layer_start(encoder, length, init)[self.layer]
        self.prompts = nn.ParameterDict({t: nn.Parameter(start.clone()) for t in self.tasks})
        self.instance = None if instance_hidden is None else InstanceTerm(self.hidden, instance_hidden, length, start)

    @classmethod
    def from_config(cls, cfg, tasks: Sequence[str], encoder: nn.Module) -> LatePrompt:
        return cls(tasks, encoder, cfg.length, cfg.init, cfg.layer, cfg.instance_hidden)

    def encoder_inputs(
        self,
        encoder: nn.Module,
        task_ids: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> dict[str, Any]:
        """The text alone: the prompt joins at layer k (the hooks of `layer_context`)."""
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        return kwargs

    def layer_context(
        self, encoder: nn.Module, task_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> contextlib.AbstractContextManager:
        layers = encoder_layers(encoder)
        upper = layers[self.layer :]
        for layer in upper:
            ensure_hook(layer, _ENTERS, lambda m: m.register_forward_pre_hook(_enter, with_kwargs=True))
        real = None if self.instance is None else attention_mask.bool()
        entry = _Entry(self.vectors()[task_ids], upper[0], self.instance, real)  # one per pass, shared by the upper layers
        return activating({(_ENTERS, layer): entry for layer in upper})

    def networks(self) -> list[nn.Module]:
        return super().networks() + ([] if self.instance is None else [self.instance])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, layer={self.layer}"


_ENTERS = "_promptmux_late_enter_hook"


class _Entry:
    """One pass's prompt: its rows' vectors ([B, L, H]), the layer they enter at, the instance term
    with the text's real tokens ([B, n] bool) if any, and the widened mask, built at that layer and
    reused by the ones above, which receive the same mask."""

    def __init__(
        self, prompts: torch.Tensor, first: nn.Module, instance: InstanceTerm | None = None, real: torch.Tensor | None = None
    ) -> None:
        self.prompts, self.first, self.instance, self.real = prompts, first, instance, real
        self._given: torch.Tensor | None = None
        self._built: torch.Tensor | None = None

    def entering(self, hidden: torch.Tensor) -> torch.Tensor:
        """The rows' prompts as they enter before the text's hidden states `hidden` ([B, n, H])."""
        if self.instance is None:
            return self.prompts
        return self.prompts + self.instance(hidden, self.real)

    def mask(self, given: torch.Tensor | None) -> torch.Tensor | None:
        if given is None:
            return None
        if self._built is None or given is not self._given:
            self._given, self._built = given, entering_mask(given, self.prompts.size(1))
        return self._built


def _enter(module: nn.Module, args: tuple, kwargs: dict):
    """Pre-hook of layers k..N-1: layer k puts the prompt in front of the text; all of them read
    the mask widened by the prompt positions."""
    entry = active((_ENTERS, module))
    if entry is None:
        return None
    hidden = args[0] if args else kwargs["hidden_states"]
    given = args[1] if len(args) > 1 else kwargs.get("attention_mask")
    if module is entry.first:
        hidden = torch.cat([entry.entering(hidden).to(hidden.dtype), hidden], 1)
    if len(args) > 1:  # the mask given positionally
        return (hidden, entry.mask(given), *args[2:]), kwargs
    kwargs = dict(kwargs)
    if "attention_mask" in kwargs:
        kwargs["attention_mask"] = entry.mask(given)
    if args:
        return (hidden,), kwargs
    kwargs["hidden_states"] = hidden
    return args, kwargs


def entering_mask(mask: torch.Tensor, length: int) -> torch.Tensor:
    """`mask` ([B, 1, Q, K] as the layer receives it, Q = 1 or K) widened by `length` prompt positions
    in front: every query may read the prompt keys, and the prompt's own queries (if the mask has a
    row per query) read what the first query reads; boolean (True = allowed) or additive float."""
    if mask.size(-2) > 1:
        mask = torch.cat([mask[..., :1, :].expand(*mask.shape[:-2], length, mask.size(-1)), mask], -2)
    allowed = torch.ones if mask.dtype == torch.bool else torch.zeros
    keys = allowed(*mask.shape[:-1], length, dtype=mask.dtype, device=mask.device)
    return torch.cat([keys, mask], -1)
