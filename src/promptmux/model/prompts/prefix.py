"""Prefix prompts: per-task key and value prefixes in every layer's attention (P-tuning v2).

Liu et al., "P-Tuning v2: Prompt Tuning Can Be Comparable to Fine-tuning Universally Across Scales
and Tasks" (2022), https://arxiv.org/abs/2110.07602; Li and Liang, "Prefix-Tuning" (2021).

Every layer's attention gets L extra keys and values of the row's task, free parameters, which
every real token attends to. A task costs 2·N·L·H parameters (MiniLM, L=15, three tasks: 0.9% of
the encoder); the `deep` kind ties keys and values through one hidden vector per layer and
position, at half the cost.

peft feeds prefixes as `past_key_values`, which keeps one prefix per forward pass (not one per row
of a mixed-task batch) and leans on the cache API, which has changed shape across transformers
releases. Here the L prompt positions sit in the sequence as for every kind (see base.py), and
forward hooks on each layer's key and value projections replace their outputs at those positions
with the row's task prefix. What the layers compute at the prompt positions is thus never read:
only the prefixes reach the real tokens.

Instance-aware prefixes (`model.prompts.instance_hidden: r`, instance.py): layer i's keys and
values for a row are its task's plus W_k·δ_i and W_v·δ_i, where δ_i is the instance term of the
row's real tokens at the layer's input and W_k, W_v are the layer's own frozen projections (without
bias, which the task's prefix holds). δ_i thus acts as a change of the hidden states at the prompt
positions would, so one bottleneck serves every layer (with each layer's own scale) and costs
2·H·r + H + r parameters in all. Measured (frozen MiniLM, SST-2 + MRPC + RTE, 5,000 steps, seed 42,
with the residual network, 14 vectors, network_lr 1e-3, inside 1%): mean gain 0.92 against the
three-seed full reference, where the 15 prefixes with the residual network alone score 1.17 for
that seed (bench/results/prompt_tuning-s5000-n1e-3.md): so far the term does not pay.

Rates: free keys and values are far less forgiving than input prompts. On a frozen MiniLM (three
GLUE tasks, mixed batches, 2,000 steps) a rate of 1e-1 (what shallow prompts like) collapsed
within 400 steps (every row got the same prediction, losses at chance), while 3e-3 trained
(bench/results/prompt_tuning-s2000*.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn

from promptmux.errors import ConfigError
from promptmux.model.backbone import encoder_layers
from promptmux.model.prompts.base import PROMPTS
from promptmux.model.prompts.hooks import (
    LayerPrompt,
    activating,
    active,
    ensure_hook,
    layer_inputs,
    run_on_vocab_tokens,
)
from promptmux.model.prompts.instance import InstanceTerm

# Names of the key and value projections in Hugging Face encoders (BERT family, MPNet / DeBERTa /
# DistilBERT), matched on the last part of a module name inside a layer.
KEY_NAMES = ("key", "k_proj", "k_lin", "key_proj")
VALUE_NAMES = ("value", "v_proj", "v_lin", "value_proj")
_HOOKED = "_promptmux_prefix_hook"


@PROMPTS.register("prefix")
class PrefixPrompt(LayerPrompt):
    """One [N, 2, L, H] prefix per task: layer i's L keys ([i, 0]) and values ([i, 1])."""

    kind = "prefix"

    def __init__(
        self, tasks: Sequence[str], encoder: nn.Module, length: int, init: str = "vocab", instance_hidden: int | None = None
    ) -> None:
        super().__init__(tasks, encoder, length, init)
        self.prompts = nn.ParameterDict({t: nn.Parameter(_start(encoder, length, init)) for t in self.tasks})
        self.instance = None
        if instance_hidden is not None:
            for i, (key, value) in enumerate(key_value_modules(encoder)):
                for module in (key, value):
                    _projection_weight(module, i)  # refuse projections it cannot read before training
            # one scale per layer: the RMS of the layer's input (what the projections read)
            self.instance = InstanceTerm(self.hidden, instance_hidden, length, layer_inputs(encoder, length))

    @classmethod
    def from_config(cls, cfg, tasks: Sequence[str], encoder: nn.Module) -> PrefixPrompt:
        return cls(tasks, encoder, cfg.length, cfg.init, cfg.instance_hidden)

    def layer_context(
        self, encoder: nn.Module, task_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> contextlib.AbstractContextManager:
        per_row = self.vectors()[task_ids]  # [B, N, 2, L, H]
        real = None if self.instance is None else attention_mask.bool()
        by_module: dict[nn.Module, torch.Tensor | _RowPrefix] = {}
        for i, (key, value) in enumerate(key_value_modules(encoder)):
            term = None if real is None else _LayerTerm(self.instance, i, real)
            for slot, module in enumerate((key, value)):
                ensure_hook(module, _HOOKED, lambda m: m.register_forward_hook(_replace))
                static = per_row[:, i, slot]
                by_module[module] = static if term is None else _RowPrefix(static, term, _projection_weight(module, i))
        return activating(by_module)

    def networks(self) -> list[nn.Module]:
        return super().networks() + ([] if self.instance is None else [self.instance])


class _LayerTerm:
    """Layer i's instance term in one pass, δ = term(pool(h_i)) ([B, L, H], in the layer's input
    space), computed once from the hidden states that the layer's key and value projections share."""

    def __init__(self, instance: InstanceTerm, layer: int, real: torch.Tensor) -> None:
        self.instance, self.layer, self.real = instance, layer, real
        self._seen: torch.Tensor | None = None
        self._delta: torch.Tensor | None = None

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        if self._delta is None or hidden is not self._seen:
            text = hidden[:, hidden.size(1) - self.real.size(1) :]  # the real tokens' positions, behind the prompt's
            self._seen, self._delta = hidden, self.instance(text, self.real, self.layer)
        return self._delta


class _RowPrefix:
    """An instance-aware prefix: the task's keys (or values) plus the projection of the layer's term,
    P_t + W·δ (no bias: P_t holds it), so δ moves the prefix as a change of the prompt positions'
    hidden states would."""

    def __init__(self, static: torch.Tensor, term: _LayerTerm, weight: torch.Tensor) -> None:
        self.static, self.term, self.weight = static, term, weight

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        delta = self.term(hidden)
        return self.static.to(delta.dtype) + nn.functional.linear(delta, self.weight.to(delta.dtype))


def _projection_weight(module: nn.Module, layer: int) -> torch.Tensor:
    """The [H, H] weight of a key or value projection: a Linear's, or the base layer's where an
    adapter wraps it (instance terms then reach the prefix through the base weight alone)."""
    base = getattr(module, "base_layer", module)
    weight = getattr(base, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ConfigError(
            f"model.prompts.instance_hidden: layer {layer}'s {type(module).__name__} projection has no 2-d weight "
            f"to carry the instance term into its keys and values"
        )
    return weight


def _replace(module: nn.Module, args: tuple, output: torch.Tensor):
    """Forward hook on a key or value projection: its first L output positions become the prefix
    (an instance-aware one is made from the projection's input, the layer's hidden states)."""
    prefix = active(module)
    if prefix is None:
        return None
    if isinstance(prefix, _RowPrefix):
        prefix = prefix(args[0])
    return torch.cat([prefix.to(output.dtype), output[:, prefix.size(1) :]], 1)


def key_value_modules(encoder: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """Each layer's (key, value) projection modules, in layer order.

    Found by name inside each layer; where LoRA wraps a projection, the wrapper is found (its
    output includes the adapter), not the base Linear inside it.
    """
    found = []
    for i, layer in enumerate(encoder_layers(encoder)):
        pair = []
        for names, what in ((KEY_NAMES, "key"), (VALUE_NAMES, "value")):
            hits = [m for n, m in layer.named_modules() if n and n.rsplit(".", 1)[-1] in names]
            if len(hits) != 1:
                raise ConfigError(
                    f"model.prompts.kind prefix: layer {i} of {type(encoder).__name__} has {len(hits)} modules "
                    f"named like a {what} projection ({', '.join(names)}), not one; use kind deep for this encoder"
                )
            pair.append(hits[0])
        found.append((pair[0], pair[1]))
    return found


def _start(encoder: nn.Module, length: int, init: str) -> torch.Tensor:
    start = _keys_and_values(encoder, length)  # [N, 2, L, H]
    if init == "random":
        start = torch.randn_like(start) * start.std(dim=(2, 3), keepdim=True)
    return start


def _keys_and_values(encoder: nn.Module, length: int) -> torch.Tensor:
    """Each layer's keys and values at L random vocabulary tokens ([N, 2, L, H])."""
    modules = key_value_modules(encoder)
    seen: dict[nn.Module, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, args, out: seen.__setitem__(m, out[0].float())) for pair in modules for m in pair]
    run_on_vocab_tokens(encoder, length, hooks)
    return torch.stack([torch.stack([seen[k], seen[v]]) for k, v in modules]).cpu()
