"""The `SoftPrompt` interface: learned prompt vectors that switch the shared encoder between tasks.

How a prompt reaches the encoder (the same for every kind):

- The L prompt positions sit in front of each row's tokens in the tensors handed to the encoder
  (`inputs_embeds`). Attention itself ignores order; only position ids say where a token is, so
  the physical place only decides how prompts are stripped again: in front, it is a plain slice,
  `hidden[:, L:]` (`MultiTaskModel.forward` does it), after which [CLS] is back at index 0 for
  cls pooling and `word_starts` index the real tokens as without prompts.
- Real tokens keep the position ids they have without prompts (0, 1, ..., n-1), so the frozen
  encoder reads the text at the positions it was trained on, and `max_length + L` need not fit
  the position table.
  Prompt positions get ids 1..L, as if they followed [CLS]. They share those ids with the first
  real tokens, which is harmless: for a fixed slot a position embedding is a constant offset
  that the learned prompt absorbs. The alternative, shifting real tokens to L+1.. as peft does,
  scored the same in a short pilot (shallow prompts, frozen MiniLM, 150 steps: SST-2 71.8 vs
  71.8, MRPC F1 81.4 vs 81.5, RTE 53.4 vs 53.8), so the simpler invariant wins.
- The attention mask is extended with ones (every row attends to its prompt), token type ids with
  zeros.
- Every row gets its own task's prompt: `task_ids` maps the `rows` slices of a mixed-task batch
  to per-row task indices, and kinds gather their vectors by those indices.

Kinds override `forward` (vectors at the input) and, for per-layer prompts, `layer_context`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from promptmux.config.schema import VECTOR_KINDS
from promptmux.model.prompts.reparam import ResidualReparam
from promptmux.registry import Registry

PROMPTS: Registry[type[SoftPrompt]] = Registry("soft prompt kind")

# Settings that decide a prompt module's shape; recorded in bundle.json so that a bundle rebuilds
# the same module (the learned values come from model.safetensors).
SHAPE_KEYS = ("kind", "length", "layer", "instance_hidden", "rank", "task_embedding_dim", "generator_hidden", "init", "reparam", "reparam_hidden")


class SoftPrompt(nn.Module):
    """Per-task prompt vectors prepended to every row of a (possibly mixed-task) batch.

    Args:
        tasks: task names, in a fixed order (the order of `TaskInfo`s in the model).
        encoder: the shared encoder (for its hidden size, word embeddings and layers).
        length: number of prompt positions L.
        init: "vocab" (start from embeddings of random vocabulary tokens) or "random".
    """

    kind: ClassVar[str]

    def __init__(self, tasks: Sequence[str], encoder: nn.Module, length: int, init: str = "vocab") -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.length = length
        self.hidden = encoder.config.hidden_size
        self.init = init
        self.reparam: ResidualReparam | None = None  # see reparam.py; set by `reparameterize`

    # --- what kinds implement -------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg: Any, tasks: Sequence[str], encoder: nn.Module) -> SoftPrompt:
        """Build from a validated `SoftPromptConfig` (kinds with more settings take theirs)."""
        return cls(tasks, encoder, cfg.length, cfg.init)

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:
        """The input vectors at the prompt positions, [B, L, H], one row per task id."""
        raise NotImplementedError

    def layer_context(
        self, encoder: nn.Module, task_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> contextlib.AbstractContextManager:
        """A context active while the encoder runs (per-layer prompts install layer hooks here);
        `attention_mask` ([B, n]) is the text's, without the prompt positions."""
        return contextlib.nullcontext()

    # --- shared machinery ---------------------------------------------------------------------

    def vectors(self) -> torch.Tensor:
        """Every task's prompt vectors, stacked in task order ([T, ...]), reparameterized if set."""
        stack = stacked(self.prompts, self.tasks)
        return stack if self.reparam is None else self.reparam(stack)

    def networks(self) -> list[nn.Module]:
        """The small networks that shape the vectors (they may train at `model.prompts.network_lr`)."""
        return [] if self.reparam is None else [self.reparam]

    def reparameterize(self, bottleneck: int) -> None:
        """Route the per-task vectors through a shared residual network (`reparam: residual`)."""
        if self.kind not in VECTOR_KINDS:
            raise ValueError(f"soft prompts: kind {self.kind} has no per-task vectors to reparameterize")
        self.reparam = ResidualReparam(self.hidden, bottleneck, stacked(self.prompts, self.tasks))

    def task_ids(self, rows: dict[str, slice], batch_size: int, device: torch.device) -> torch.Tensor:
        """Per-row task indices from the batch's contiguous per-task row slices."""
        ids = torch.empty(batch_size, dtype=torch.long)
        covered = 0
        for task, sl in rows.items():
            if task not in self.tasks:
                raise ValueError(f"soft prompts: no prompt for task {task!r} (prompted tasks: {', '.join(self.tasks)})")
            ids[sl] = self.tasks.index(task)
            covered += sl.stop - sl.start
        if covered != batch_size:
            raise ValueError(f"soft prompts: rows cover {covered} of {batch_size} batch rows")
        return ids.to(device)

    def encode(
        self,
        encoder: nn.Module,
        rows: dict[str, slice],
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the encoder with each row's task prompt in front; returns all L + n positions."""
        task_ids = self.task_ids(rows, input_ids.size(0), input_ids.device)
        with self.layer_context(encoder, task_ids, attention_mask):
            return encoder(**self.encoder_inputs(encoder, task_ids, input_ids, attention_mask, token_type_ids)).last_hidden_state

    def encoder_inputs(
        self,
        encoder: nn.Module,
        task_ids: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
    ) -> dict[str, Any]:
        """The encoder's arguments: the L prompt positions in front of the text (a kind whose prompt
        joins at a later layer overrides this)."""
        batch, n = input_ids.shape
        L = self.length
        words = encoder.get_input_embeddings()(input_ids)
        prompt = self(task_ids).to(words.dtype)
        ones = attention_mask.new_ones(batch, L)
        kwargs: dict[str, Any] = {
            "inputs_embeds": torch.cat([prompt, words], 1),
            "attention_mask": torch.cat([ones, attention_mask], 1),
            "position_ids": self.position_ids(n, input_ids.device).expand(batch, -1),
        }
        if token_type_ids is not None:
            kwargs["token_type_ids"] = torch.cat([token_type_ids.new_zeros(batch, L), token_type_ids], 1)
        return kwargs

    def position_ids(self, n: int, device: torch.device) -> torch.Tensor:
        """[1, L + n]: prompts at 1..L, real tokens at 0..n-1 as without prompts (module docstring)."""
        L = self.length
        return torch.cat([torch.arange(1, L + 1, device=device), torch.arange(n, device=device)]).unsqueeze(0)

    def extra_repr(self) -> str:
        return f"tasks={len(self.tasks)}, length={self.length}, init={self.init}"


def vocab_token_ids(vocab_size: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """`n` random ids of ordinary vocabulary tokens (for `init: vocab`, Lester et al. 2021).

    WordPiece vocabularies (the BERT family) hold special and unused tokens, punctuation and rare
    characters first; from id 2000 on they list whole words, roughly most frequent first. We draw
    from the next 5,000 ids (Lester et al. sample from the 5,000 most common tokens). Small
    vocabularies (test models) skip their first tenth instead, where special tokens sit.
    """
    low = min(2000, vocab_size // 10)
    high = min(vocab_size, low + 5000)
    return torch.randint(low, high, (n,), generator=generator)


def init_input_vectors(encoder: nn.Module, n: int, init: str) -> torch.Tensor:
    """[n, H] starting values for prompt vectors that enter through the word embeddings."""
    weight = encoder.get_input_embeddings().weight.detach().float()
    if init == "vocab":
        return weight[vocab_token_ids(weight.size(0), n)].clone()
    return torch.randn(n, weight.size(1)) * weight.std()


def stacked(params: nn.ParameterDict, tasks: Sequence[str]) -> torch.Tensor:
    """Per-task parameters stacked in task order, [T, ...], ready to be indexed by task ids."""
    return torch.stack([params[t] for t in tasks])


def prompt_rates(prompt: SoftPrompt, lr: float, network_lr: float | None) -> Iterator[tuple[str, nn.Parameter, float]]:
    """Each parameter of `prompt` with its learning rate: `network_lr` (else `lr`) for those of its
    small networks (`networks()`), `lr` for the rest."""
    in_network = {id(p) for network in prompt.networks() for p in network.parameters()}
    for name, p in prompt.named_parameters():
        yield name, p, (network_lr or lr) if id(p) in in_network else lr


def prompt_settings(cfg: Any) -> dict[str, Any]:
    """The shape settings of a `SoftPromptConfig` (or of a dict of its fields), for bundle.json."""
    data = cfg.model_dump() if hasattr(cfg, "model_dump") else dict(cfg)
    return {k: data[k] for k in SHAPE_KEYS if k in data}


def build_prompt(cfg: Any, tasks: Sequence[str], encoder: nn.Module) -> SoftPrompt | None:
    """The prompt module for `model.prompts` (a SoftPromptConfig or a dict of its fields), or None."""
    from promptmux.config.schema import SoftPromptConfig

    if cfg is None:
        return None
    if not isinstance(cfg, SoftPromptConfig):
        cfg = SoftPromptConfig.model_validate(prompt_settings(cfg))
    if cfg.kind == "none":
        return None
    prompt = PROMPTS.get(cfg.kind).from_config(cfg, tasks, encoder)
    if cfg.reparam == "residual":
        prompt.reparameterize(cfg.reparam_hidden)
    return prompt
