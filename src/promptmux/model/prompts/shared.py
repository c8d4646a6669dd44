"""Multi-task prompt tuning: one shared prompt, modulated per task by a low-rank factor.

Wang et al., "Multitask Prompt Tuning Enables Parameter-Efficient Transfer Learning" (ICLR 2023),
https://arxiv.org/abs/2303.02861: P_t = P* ⊙ (u_t v_tᵀ), with u_t ∈ R^{L×r} and v_t ∈ R^{r×H}.

peft's `MultitaskPromptEmbedding` computes exactly this and takes one task id per row, so it does
the work here. Its own initialisations do not fit: its factors start at N(0, 0.02), which makes
u_t v_tᵀ ≈ 1e-3 and the starting prompt almost zero (and its text init downloads a tokenizer), so
we re-initialise: P* from vocabulary embeddings and u_t v_tᵀ ≈ 1 (each task starts from P*),
with a little noise so that the r rank components do not stay identical.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from promptmux.model.prompts.base import PROMPTS, SoftPrompt, init_input_vectors


@PROMPTS.register("shared")
class SharedPrompt(SoftPrompt):
    """L·H shared parameters plus r·(L + H) per task."""

    kind = "shared"

    def __init__(self, tasks: Sequence[str], encoder: nn.Module, length: int, rank: int = 1, init: str = "vocab") -> None:
        super().__init__(tasks, encoder, length, init)
        from peft import MultitaskPromptTuningConfig, TaskType
        from peft.tuners.multitask_prompt_tuning.model import MultitaskPromptEmbedding

        self.rank = rank
        config = MultitaskPromptTuningConfig(
            task_type=TaskType.FEATURE_EXTRACTION, num_virtual_tokens=length, token_dim=self.hidden,
            num_tasks=len(self.tasks), num_ranks=rank, num_transformer_submodules=1, prompt_tuning_init="RANDOM",
        )
        self.mpt = MultitaskPromptEmbedding(config, encoder.get_input_embeddings())
        with torch.no_grad():
            self.mpt.embedding.weight.copy_(init_input_vectors(encoder, length, init))
            self.mpt.prefix_task_cols.copy_(1.0 + 0.02 * torch.randn_like(self.mpt.prefix_task_cols))
            self.mpt.prefix_task_rows.copy_((1.0 + 0.02 * torch.randn_like(self.mpt.prefix_task_rows)) / rank)
        self.register_buffer("positions", torch.arange(length), persistent=False)

    @classmethod
    def from_config(cls, cfg, tasks: Sequence[str], encoder: nn.Module) -> SharedPrompt:
        return cls(tasks, encoder, cfg.length, cfg.rank, cfg.init)

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:
        return self.mpt(self.positions.expand(task_ids.numel(), -1), task_ids)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}"
