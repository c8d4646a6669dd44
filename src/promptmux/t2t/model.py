"""The decoder model: one causal LM for every task, with optional shared LoRA and per-task soft prompts.

- LoRA (`model.lora.kind: shared`; Hu et al. 2021, https://arxiv.org/abs/2106.09685): peft's
  LoRA layers injected into the LM in place (`inject_adapter_in_model`, task type CAUSAL_LM), with
  no wrapper model around it, so `get_decoder()` and the head work as on the plain LM; the base
  weights are frozen. One adapter serves every task, so mixed-task batches need no routing.
- Soft prompts (`model.prompts.kind: shallow`, Lester et al. 2021,
  https://arxiv.org/abs/2104.08691): the encoder's `ShallowPrompt`
  module holds one [L, H] prompt per task and gathers it per row. Its `encode` is encoder-specific
  (real tokens keep the positions they have without prompts), so the decoder places the vectors
  itself: in front of each row, positions 0..L-1, the text after them at L, L+1, ... A decoder
  reads left to right, so the prompt is simply the first thing it reads.
- Loss and scores: the LM head runs only at answer positions (a Gemma vocabulary has 262k entries;
  logits for every position of a batch would dwarf the rest of the step).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from promptmux.errors import ConfigError
from promptmux.t2t.data import IGNORE

log = logging.getLogger("promptmux.t2t")


class T2TModel(nn.Module):
    """A causal LM shared by every task.

    Args:
        lm: a Hugging Face causal LM (`AutoModelForCausalLM`).
        tasks: task names, in bundle order (soft prompts are per task).
        prompt: a `ShallowPrompt` over `tasks`, or None.
    """

    def __init__(self, lm: nn.Module, tasks: list[str], prompt: nn.Module | None = None) -> None:
        super().__init__()
        self.lm = lm
        self.tasks = list(tasks)
        self.prompt = prompt
        self.lora: Any = None  # the LoraConfig of attached LoRA (attach_lora)

    @property
    def prompt_length(self) -> int:
        return 0 if self.prompt is None else self.prompt.length

    # --- running the LM ----------------------------------------------------------------------------

    def start(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: dict[str, slice], use_cache: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Run the decoder over a left-padded batch (each row's task prompt in front).

        Returns the hidden states of the real token positions [B, T, H], the attention mask over
        everything the decoder has read ([B, L + T]) and the key/value cache (or None).
        """
        decoder = self.lm.get_decoder()
        mask = attention_mask
        kwargs: dict[str, Any] = {}
        if self.prompt is not None:
            batch, L = input_ids.size(0), self.prompt.length
            task_ids = self.prompt.task_ids(rows, batch, input_ids.device)
            words = self.lm.get_input_embeddings()(input_ids)
            kwargs["inputs_embeds"] = torch.cat([self.prompt(task_ids).to(words.dtype), words], 1)
            mask = torch.cat([attention_mask.new_ones(batch, L), attention_mask], 1)
        else:
            kwargs["input_ids"] = input_ids
        out = decoder(attention_mask=mask, position_ids=positions(mask), use_cache=use_cache, **kwargs)
        hidden = out.last_hidden_state[:, self.prompt_length :]
        return hidden, mask, out.past_key_values if use_cache else None

    def step(self, next_ids: torch.Tensor, mask: torch.Tensor, cache: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """One decoding step: feed `next_ids` [B, 1] after what the cache holds; returns the new
        hidden state [B, 1, H], the extended mask and the cache."""
        position = mask.sum(-1, keepdim=True)  # positions are 0-based counts of real tokens read
        mask = torch.cat([mask, mask.new_ones(mask.size(0), 1)], 1)
        out = self.lm.get_decoder()(
            input_ids=next_ids, attention_mask=mask, position_ids=position, past_key_values=cache, use_cache=True
        )
        return out.last_hidden_state, mask, out.past_key_values

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits (fp32) from hidden states, as the LM's own forward computes them.

        The head runs outside autocast, in the weights' precision: bf16 logits of size ~20 are
        spaced 0.125 apart, so two labels' verbalizer scores would often tie exactly. It only
        runs at answer positions, so fp32 costs little.
        """
        head = self.lm.get_output_embeddings()
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            logits = head(hidden.to(next(head.parameters()).dtype)).float()
        cap = getattr(self.lm.config, "final_logit_softcapping", None)
        if cap:  # Gemma 2/3 squash logits into (-cap, cap)
            logits = torch.tanh(logits / cap) * cap
        return logits

    def row_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, rows: dict[str, slice]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probability of each row's labelled tokens, and how many there are ([B] each)."""
        hidden, _, _ = self.start(input_ids, attention_mask, rows)
        # The token at position t is predicted from the hidden state at t - 1.
        targets = labels[:, 1:]
        where = targets != IGNORE
        logp = F.log_softmax(self.logits(hidden[:, :-1][where]), -1)
        token = logp.gather(-1, targets[where].unsqueeze(-1)).squeeze(-1)
        row = torch.arange(labels.size(0), device=labels.device).unsqueeze(1).expand_as(targets)[where]
        sums = torch.zeros(labels.size(0), device=token.device, dtype=token.dtype).index_add(0, row, token)
        counts = where.sum(-1)
        return sums, counts

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, rows: dict[str, slice]
    ) -> dict[str, torch.Tensor]:
        """Per-task loss: mean negative log-likelihood over the answer tokens of the task's rows."""
        sums, counts = self.row_logprobs(input_ids, attention_mask, labels, rows)
        losses = {}
        for task, sl in rows.items():
            n = counts[sl].sum()
            if int(n) == 0:
                raise ValueError(f"task {task!r}: no answer tokens in this batch (rows cut to nothing?)")
            losses[task] = -sums[sl].sum() / n
        return losses


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids from an attention mask: 0, 1, ... over attended tokens; padding gets 0."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


# --- building ----------------------------------------------------------------------------------


def load_lm(path: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A causal LM from a local Hugging Face folder (weights in `dtype`; training autocasts)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)


def build_model(lm: nn.Module, tasks: list[str], prompts: Any = None, lora: Any = None, freeze: str = "none") -> T2TModel:
    """The decoder model with `model.prompts` (shallow or none) and `model.lora` (shared or none).

    `freeze`: `none` trains the whole LM (only LoRA when LoRA is on), `backbone` keeps it frozen.
    """
    from promptmux.model.prompts import build_prompt

    prompt = build_prompt(prompts, tasks, lm)
    if prompt is not None:
        if prompt.kind != "shallow":
            raise ConfigError(f"model.prompts.kind: {prompt.kind} is not available for a decoder; use shallow")
        _start_from_embedding_outputs(prompt, lm)
    model = T2TModel(lm, tasks, prompt)
    attach_lora(model, lora)
    if freeze == "backbone" or model.lora is not None:
        for name, p in model.lm.named_parameters():
            p.requires_grad_(model.lora is not None and "lora_" in name)
    return model


def attach_lora(model: T2TModel, cfg: Any) -> None:
    """Inject one shared LoRA adapter (peft) into the LM's `target_modules` Linear layers."""
    from promptmux.model.lora import as_lora_config, find_targets

    cfg = as_lora_config(cfg)
    if cfg is None:
        return
    if cfg.kind != "shared":
        raise ConfigError(f"model.lora.kind: {cfg.kind} is not available for a decoder; use shared")
    from peft import LoraConfig as PeftLoraConfig
    from peft import inject_adapter_in_model

    targets = find_targets(model.lm, cfg.target_modules)
    peft_cfg = PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets, task_type="CAUSAL_LM"
    )
    inject_adapter_in_model(peft_cfg, model.lm)
    model.lora = cfg


def lm_is_trained(model: T2TModel) -> bool:
    """Whether any of the LM's own (non-LoRA) weights train, so a bundle must keep the whole LM."""
    return any(p.requires_grad for n, p in model.lm.named_parameters() if "lora_" not in n)


def lora_state(model: T2TModel) -> dict[str, torch.Tensor]:
    """The LoRA matrices by their names in the LM."""
    return {n: p.detach() for n, p in model.lm.named_parameters() if "lora_" in n}


def build_optimizer(cfg: Any, model: T2TModel, extra: nn.Module | None = None) -> torch.optim.Optimizer:
    """AdamW: LM weights at `train.lr` (no decay on biases and norms), LoRA at `model.lora.lr`,
    soft prompts at `model.prompts.lr` (else `train.head_lr`, else `train.lr`; their networks at
    `model.prompts.network_lr`) without decay,
    weighting parameters at `train.head_lr`."""
    t = cfg.train
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}

    def add(params, lr: float, decay: bool) -> None:
        for name, p in params:
            if p.requires_grad:
                wd = t.weight_decay if decay and p.ndim >= 2 and "norm" not in name.lower() else 0.0
                groups.setdefault((lr, wd), []).append(p)

    named = list(model.lm.named_parameters())
    add([(n, p) for n, p in named if "lora_" not in n], t.lr, True)
    add([(n, p) for n, p in named if "lora_" in n], cfg.model.lora.lr or t.lr, True)
    if model.prompt is not None:
        from promptmux.model.prompts.base import prompt_rates

        for name, p, lr in prompt_rates(model.prompt, cfg.model.prompts.lr or t.head_lr or t.lr, cfg.model.prompts.network_lr):
            add([(name, p)], lr, False)
    if extra is not None:
        add(extra.named_parameters(), t.head_lr or t.lr, True)
    if not groups:
        raise ConfigError("model: nothing is left to train")
    params = [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
    return torch.optim.AdamW(params, lr=t.lr)


def _start_from_embedding_outputs(prompt: nn.Module, lm: nn.Module) -> None:
    """Prompt vectors start like the LM's input vectors: its embedding module may scale its table
    (Gemma multiplies by sqrt(hidden)), so `init: vocab` takes what the module outputs for random
    vocabulary tokens, and `init: random` matches that scale."""
    from promptmux.model.prompts.base import vocab_token_ids

    embed = lm.get_input_embeddings()
    with torch.no_grad():
        for p in prompt.prompts.values():
            ids = vocab_token_ids(embed.weight.size(0), p.size(0))
            vectors = embed(ids.to(embed.weight.device)).float()
            if prompt.init == "random":
                vectors = torch.randn_like(vectors) * vectors.std()
            p.copy_(vectors.to(p.dtype))
