"""The multi-task model: one shared encoder, one head per task (hard parameter sharing)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from promptmux.model.heads import HEADS, Head


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

    @property
    def n_labels(self) -> int:
        return 1 if self.type == "regression" else len(self.labels or [])

    def to_dict(self) -> dict:
        return asdict(self)


class MultiTaskModel(nn.Module):
    """Runs the shared encoder once over a (possibly mixed-task) batch and each head on its rows.

    Rows of one task are contiguous in a batch (the collator groups them), so each head sees a
    slice view of the encoder output rather than a gathered copy.
    """

    def __init__(self, encoder: nn.Module, heads: dict[str, Head]) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        rows: dict[str, slice],
        extra: dict[str, dict[str, torch.Tensor]],
        token_type_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        return {
            task: self.heads[task](hidden[sl], attention_mask[sl], extra.get(task, {}))
            for task, sl in rows.items()
        }


def build_model(encoder: nn.Module, tasks: list[TaskInfo], head_dropout: float) -> MultiTaskModel:
    hidden = encoder.config.hidden_size
    heads = {
        t.name: HEADS.get(t.type)(hidden, t.n_labels, pooling=t.pooling, dropout=head_dropout)
        for t in tasks
    }
    return MultiTaskModel(encoder, heads)
