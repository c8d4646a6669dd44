"""Shared pieces of the mixed-task model tests (test_model, test_lora, test_soft_prompts).

Three small tasks whose rows pad in every batch, their encoding for the tiny backbone, logits of
one collated batch, the check that a row alone gives what it gives inside a mixed batch, and a
short `train()` run that keeps what those tests compare (the state before the first step and the
trainer's printed summary).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import promptmux.train.trainer as trainer_mod
from promptmux.data.collate import collate
from promptmux.data.encode import encode_examples
from promptmux.model import MultiTaskModel, TaskInfo, load_backbone
from promptmux.tasks.spec import Example

# Rows of two classification tasks ("a", "b") and a token task ("tok"), of unequal lengths, so
# that every batch of them pads.
MIXED_EXAMPLES: dict[str, list[Example]] = {
    "a": [
        Example("the movie was good"),
        Example("bad"),
        Example("a really very boring film with an actor"),
    ],
    "b": [Example("the plot was fine and fun"), Example("worst")],
    "tok": [Example(("john", "works", "in", "paris")), Example(("mary",))],
}


def mixed_tasks(b_pooling: str = "mean") -> list[TaskInfo]:
    """The tasks of MIXED_EXAMPLES: a and b (pooled by `b_pooling`) with the same two labels, and
    tok with three BIO tags."""
    return [
        TaskInfo("a", "classification", ["neg", "pos"], "mean", "accuracy"),
        TaskInfo("b", "classification", ["neg", "pos"], b_pooling, "accuracy"),
        TaskInfo("tok", "token", ["O", "B-PER", "B-LOC"], "mean", "entity_f1"),
    ]


def encode_mixed(backbone: Path, tasks: list[TaskInfo]) -> dict[str, Any]:
    """MIXED_EXAMPLES encoded for `tasks` (as `mixed_tasks` gives them) with the backbone's
    tokenizer, at max length 32."""
    tokenizer = load_backbone(str(backbone))[1]
    return {
        t.name: encode_examples(MIXED_EXAMPLES[t.name], tokenizer, t.type, 32, t.n_labels)
        for t in tasks
    }


def batch_logits(
    model: MultiTaskModel, parts: list[tuple[str, Any, Any]]
) -> dict[str, torch.Tensor]:
    """The logits per task of one collated batch of `parts` ((task, encoded, rows), ...)."""
    batch = collate(parts, pad_id=0)
    with torch.no_grad():
        return model(**batch.model_inputs())


def assert_rows_alone(
    model: MultiTaskModel, mixed: dict[str, torch.Tensor], task: str, encoded: Any
) -> None:
    """Each row of `task`, alone in its batch (no padding at all), gives the logits it got in the
    batch whose logits are `mixed`."""
    for i in range(len(encoded)):
        alone = batch_logits(model, [(task, encoded, np.array([i]))])[task]
        row = mixed[task][i : i + 1]
        if row.dim() == 3:  # token logits: a lone sentence pads to its own word count
            row = row[:, : alone.shape[1]]
        torch.testing.assert_close(row, alone, atol=1e-5, rtol=1e-5)


@dataclass
class TrainedRun:
    """A finished `train()` run: its name and variant (`kind`), the folder of its task files, the
    config, the result, the model's state before the first step, and what the trainer printed."""

    name: str
    kind: str
    folder: Path
    cfg: Any
    result: Any
    initial: dict[str, torch.Tensor]
    printed: str

    @classmethod
    def train(cls, name: str, folder: Path, cfg: Any, kind: str | None = None) -> TrainedRun:
        """Train `cfg` in process, recording the freshly built model's state and the trainer's
        messages (tests check the printed summary)."""
        initial: dict[str, torch.Tensor] = {}
        real_build = trainer_mod.build_model

        def recording_build(*args: Any, **kwargs: Any) -> MultiTaskModel:
            model = real_build(*args, **kwargs)
            initial.update({k: v.clone() for k, v in model.state_dict().items()})
            return model

        printed: list[str] = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(trainer_mod, "build_model", recording_build)
            mp.setattr(trainer_mod.RunLogger, "message", lambda self, text: printed.append(text))
            result = trainer_mod.train(cfg)
        return cls(name, kind or name, folder, cfg, result, initial, "\n".join(printed))

    @property
    def out(self) -> Path:
        return Path(self.cfg.output.dir)

    def dev_inputs(self, task: str) -> list[Any]:
        """The dev rows `write_tasks` wrote for `task`, as the Predictor takes them."""
        path = self.folder / task / "dev.jsonl"
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        if task == "pair":
            return [(r["premise"], r["hypothesis"]) for r in rows]
        if task == "ner":
            return [r["tokens"] for r in rows]
        return [r["text"] for r in rows]
