"""The multi-task model: one shared encoder, one head per task (hard parameter sharing)."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from promptmux.model.added import AddedTasks, build_added
from promptmux.model.heads import HEADS, Head, head_extra
from promptmux.model.lora import attach_lora, route_rows
from promptmux.model.prompts import SoftPrompt, build_prompt


@dataclass(frozen=True)
class TaskInfo:
    """What a bundle needs to rebuild and use a task's head."""

    name: str
    type: str
    labels: list[str] | None
    pooling: str
    metric: str
    # Whether the task reads text pairs (text_a, text_b). None means "not recorded": bundles
    # written before this field existed still load, and callers fall back to other evidence.
    pair: bool | None = None
    # The hard prompt wrapped around every input of this task (training and inference alike).
    prompt: str | None = None
    # Prompt rules ({when, template} dicts; the first match overrides `prompt` per example), the
    # other candidate templates (best first once adaptive selection ranked them; None in the list
    # is the plain input) and how many prompts inference averages (`prompt` + the first k-1 of
    # `pool`). See promptmux.prompts; bundles without these fields load with the defaults.
    rules: list[dict] | None = None
    pool: list[str | None] | None = None
    ensemble: int = 1

    @property
    def n_labels(self) -> int:
        return 1 if self.type == "regression" else len(self.labels or [])

    def to_dict(self) -> dict:
        return asdict(self)


class MultiTaskModel(nn.Module):
    """Runs the shared encoder once over a (possibly mixed-task) batch and each head on its rows.

    Rows of one task are contiguous in a batch (the collator groups them), so each head sees a
    slice view of the encoder output rather than a gathered copy.

    With soft prompts (`prompt`), every row gets its own task's L prompt positions in front of its
    tokens (see `promptmux.model.prompts.base`); they are stripped from the encoder output before
    the heads, so heads, pooling and token heads' `word_starts` see exactly the real tokens and
    the real attention mask, as without prompts.

    Tasks added later to the frozen model (`promptmux add-task`) sit in `added`, with their own
    prompts; batches that hold none of them take this path unchanged (see `model/added.py`).
    """

    def __init__(
        self, encoder: nn.Module, heads: dict[str, Head], prompt: SoftPrompt | None = None, added: AddedTasks | None = None
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.prompt = prompt
        self.added = added
        self.lora: Any = None  # the LoraConfig of attached LoRA (promptmux.model.lora.attach_lora)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        rows: dict[str, slice],
        extra: dict[str, dict[str, torch.Tensor]],
        token_type_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if self.added is not None and self.added.involved(rows):
            # Added tasks have no per-task LoRA adapter: their own passes read the base encoder
            # (old-task rows re-enter forward below, which routes them to their adapters).
            with route_rows({}) if self.lora is not None else contextlib.nullcontext():
                return self.added(self, input_ids, attention_mask, rows, extra, token_type_ids)
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        # Per-task LoRA layers add each task's update to its rows; they read the slices from here.
        with route_rows(rows) if self.lora is not None else contextlib.nullcontext():
            if self.prompt is None:
                hidden = self.encoder(**kwargs).last_hidden_state
            else:
                # Drop the prompt positions: heads read the real tokens only.
                hidden = self.prompt.encode(self.encoder, rows, **kwargs)[:, self.prompt.length :]
        return {
            task: self.heads[task](hidden[sl], attention_mask[sl], head_extra(self.heads[task], extra.get(task, {}), token_type_ids, sl))
            for task, sl in rows.items()
        }


def build_model(
    encoder: nn.Module,
    tasks: list[TaskInfo],
    head_dropout: float,
    prompts: Any = None,
    added: dict | None = None,
    lora: Any = None,
) -> MultiTaskModel:
    """One head per task; `prompts` (a SoftPromptConfig, or a dict of its settings as bundle.json
    records them) attaches soft prompts unless absent or of kind `none`. `added` (bundle.json's
    `added_tasks` record) marks tasks added by `promptmux add-task`: `prompts` then serves the
    other tasks only. `lora` (a LoraConfig, or a dict of its settings) attaches LoRA to the encoder
    and freezes its base weights unless absent or of kind `none`."""
    hidden = encoder.config.hidden_size
    heads = {
        t.name: HEADS.get(t.type)(hidden, t.n_labels, pooling=t.pooling, dropout=head_dropout)
        for t in tasks
    }
    extra = build_added(added, encoder)
    base = [t.name for t in tasks if extra is None or t.name not in extra.tasks]
    model = MultiTaskModel(encoder, heads, build_prompt(prompts, base, encoder), extra)
    attach_lora(model, lora)  # last, so that heads and prompts start as they do without LoRA
    return model
