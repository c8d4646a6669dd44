"""Prompt tuning: L trainable vectors per task prepended to the input embeddings.

Lester, Al-Rfou and Constant, "The Power of Scale for Parameter-Efficient Prompt Tuning" (2021),
https://arxiv.org/abs/2104.08691.

peft's `PromptEmbedding` holds one prompt per model (one task per forward pass); a mixed-task batch
needs each row to get its own task's prompt, so this module keeps one prompt per task and gathers
by row. The rest of peft's prompt tuning (its model wrapper) shifts the real tokens' positions and
owns the classification head, which our multi-task heads replace.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from promptmux.model.prompts.base import PROMPTS, SoftPrompt, init_input_vectors


@PROMPTS.register("shallow")
class ShallowPrompt(SoftPrompt):
    """One [L, H] prompt per task at the input: L·H trainable parameters per task."""

    kind = "shallow"

    def __init__(self, tasks: Sequence[str], encoder: nn.Module, length: int, init: str = "vocab") -> None:
        super().__init__(tasks, encoder, length, init)
        self.prompts = nn.ParameterDict(
            {t: nn.Parameter(init_input_vectors(encoder, length, init)) for t in self.tasks}
        )

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:
        return self.vectors()[task_ids]
