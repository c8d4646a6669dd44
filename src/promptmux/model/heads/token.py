"""Token classification: one tag per word (BIO entity tags, POS tags, chunks)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from promptmux.model.heads.base import HEADS, Head


@HEADS.register("token")
class TokenHead(Head):
    """Tags each word from the encoder state of its first sub-word token.

    Predicting at word level (rather than on every sub-word) makes training, evaluation and
    prediction agree on one tag per word, which is what entity-level F1 scores. `extra` holds
    `word_starts` [B, W]: the token position of each word's first piece, -1 for padding.
    """

    task_type = "token"

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, extra: dict[str, torch.Tensor]) -> torch.Tensor:
        starts = extra["word_starts"]
        index = starts.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.size(-1))
        words = torch.gather(hidden, 1, index)
        return self.out(self.dropout(words))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)

    def predict(self, logits: torch.Tensor, extra: dict[str, torch.Tensor]) -> list[tuple[int, ...]]:
        lengths = (extra["word_starts"] >= 0).sum(-1).tolist()
        ids = logits.argmax(-1).tolist()
        return [tuple(row[:n]) for row, n in zip(ids, lengths)]

    def scores(self, logits: torch.Tensor, extra: dict[str, torch.Tensor]) -> list[list[list[float]]]:
        lengths = (extra["word_starts"] >= 0).sum(-1).tolist()
        probs = logits.float().softmax(-1).tolist()
        return [row[:n] for row, n in zip(probs, lengths)]
