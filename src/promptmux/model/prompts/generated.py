"""Prompts generated from a learned task embedding: P_t = g(W·e_t + b).

In the spirit of hypernetwork-generated prompts (HyperPrompt, He et al. 2022,
https://arxiv.org/abs/2203.00759; HyperFormer, Mahabadi et al. 2021,
https://arxiv.org/abs/2106.04489): tasks share the generator, and a new task needs only a new
embedding e_t. peft has no prompt generator conditioned per row, hence this small module.

g is a one-hidden-layer MLP applied at each prompt position j with shared weights:
g(z)_j = P0_j + U·tanh(z + c_j), where z = W·e_t + b (generator_hidden wide), c_j a learned
per-position offset and P0 a shared base prompt. Sharing U across positions keeps g small
(H·h + L·h + L·H parameters instead of h·L·H for one output layer over the whole prompt: 0.1M
rather than 2M for MiniLM at L=20, h=256).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from promptmux.model.prompts.base import PROMPTS, SoftPrompt, init_input_vectors, stacked


@PROMPTS.register("generated")
class GeneratedPrompt(SoftPrompt):
    """A task embedding per task (task_embedding_dim numbers); everything else is shared."""

    kind = "generated"

    def __init__(
        self, tasks: Sequence[str], encoder: nn.Module, length: int, task_embedding_dim: int = 32,
        generator_hidden: int = 256, init: str = "vocab",
    ) -> None:
        super().__init__(tasks, encoder, length, init)
        self.task_embeddings = nn.ParameterDict({t: nn.Parameter(torch.randn(task_embedding_dim)) for t in self.tasks})
        self.project = nn.Linear(task_embedding_dim, generator_hidden)  # W, b
        self.offsets = nn.Parameter(0.5 * torch.randn(length, generator_hidden))  # c_j
        base = init_input_vectors(encoder, length, init)
        self.base = nn.Parameter(base)  # P0
        self.out = nn.Linear(generator_hidden, self.hidden, bias=False)  # U
        # Start near P0 with task differences about a tenth of the embeddings' scale.
        nn.init.normal_(self.out.weight, std=0.1 * float(base.std()) / generator_hidden**0.5)

    @classmethod
    def from_config(cls, cfg, tasks: Sequence[str], encoder: nn.Module) -> GeneratedPrompt:
        return cls(tasks, encoder, cfg.length, cfg.task_embedding_dim, cfg.generator_hidden, cfg.init)

    def generate(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Prompts [T, L, H] for task embeddings [T, d]."""
        z = self.project(embeddings)  # [T, h]
        return self.base + self.out(torch.tanh(z[:, None, :] + self.offsets))

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:
        # One prompt per task, then gathered per row: the generator runs T times, not B times.
        return self.generate(stacked(self.task_embeddings, self.tasks))[task_ids]

    def add_task(self, name: str) -> None:
        """Register a new task: only its embedding is new (and trainable on its own if wanted)."""
        if name in self.task_embeddings:
            raise ValueError(f"task {name!r} already has a prompt")
        dim = self.project.in_features
        self.task_embeddings[name] = nn.Parameter(torch.randn(dim, device=self.base.device))
        self.tasks.append(name)
