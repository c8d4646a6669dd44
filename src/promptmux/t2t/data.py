"""Causal-LM rows: prompt tokens + answer tokens, the loss on the answer only, left-padded batches.

A row is `prompt ids + answer ids`: the prompt is the task's template filled in and tokenized with
the tokenizer's special tokens (a BOS where the model uses one); the answer is `" " + answer text`
tokenized without them, so the decoder reads the answer as the words that follow the prompt.
Generation answers end with EOS (the model learns where to stop); classification answers are the
label's verbalizer words alone, exactly the tokens verbalizer scoring sums (infer.py), so training
raises what evaluation compares.

Batches are left-padded everywhere (training, scoring, generation): every row's last prompt token
is then the last column, which greedy decoding needs, and one forward function serves all three.
Position ids come from the attention mask (model.py), so padding shifts no positions. Rows of one
task are contiguous, as in the encoder's batches (`rows[task]` is their slice); all rows share the
one LM, so a batch may mix tasks freely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from promptmux.t2t.tasks import T2TTask
from promptmux.tasks.spec import Example

IGNORE = -100  # label of positions without loss (prompt and padding), as torch's cross-entropy


@dataclass
class T2TEncoded:
    """Token rows of one task split, stored flat: row i is `ids[offsets[i]:offsets[i+1]]`, of which
    the first `prompt_lengths[i]` tokens are prompt (no loss) and the rest answer."""

    ids: np.ndarray
    offsets: np.ndarray
    prompt_lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass
class T2TBatch:
    """A left-padded batch; `labels` hold the answer token ids and IGNORE elsewhere."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    rows: dict[str, slice] = field(default_factory=dict)

    @property
    def n_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def __len__(self) -> int:
        return self.input_ids.size(0)

    def to(self, device: torch.device | str) -> T2TBatch:
        return T2TBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.rows)

    def model_inputs(self) -> dict:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "labels": self.labels, "rows": self.rows}


def tokenize_prompts(task: T2TTask, examples: Sequence[Example], tokenizer) -> list[list[int]]:
    """Each example's filled-in template, tokenized with the tokenizer's special tokens."""
    if not examples:
        return []
    return tokenizer([task.prompt_text(ex) for ex in examples], add_special_tokens=True)["input_ids"]


def tokenize_answers(texts: Sequence[str], tokenizer) -> list[list[int]]:
    """Answer texts as the words after the prompt: `" " + text`, no special tokens."""
    if not texts:
        return []
    return tokenizer([" " + t.strip() for t in texts], add_special_tokens=False)["input_ids"]


def fit(prompt: list[int], answer: list[int], max_length: int, bos_id: int | None) -> tuple[list[int], list[int]]:
    """Cut a row to `max_length` tokens: the answer keeps at most `max_length - 1`, the prompt loses
    tokens from its start (after a leading BOS), so its end, where the template asks for the
    answer ("...\\nSentiment:"), stays next to the answer."""
    answer = answer[: max(1, max_length - 1)]
    room = max_length - len(answer)
    if len(prompt) > room:
        keep_bos = bos_id is not None and prompt and prompt[0] == bos_id and room > 1
        prompt = ([bos_id] if keep_bos else []) + prompt[len(prompt) - (room - int(keep_bos)) :]
    return prompt, answer


def pack(prompts: Sequence[list[int]], answers: Sequence[list[int]], max_length: int, bos_id: int | None) -> T2TEncoded:
    """Rows `prompt + answer`, each cut to `max_length` by `fit`, stored flat."""
    ids: list[int] = []
    offsets = [0]
    prompt_lengths = []
    for p, a in zip(prompts, answers, strict=True):
        p, a = fit(list(p), list(a), max_length, bos_id)
        ids.extend(p)
        ids.extend(a)
        offsets.append(len(ids))
        prompt_lengths.append(len(p))
    return T2TEncoded(np.asarray(ids, dtype=np.int64), np.asarray(offsets, dtype=np.int64), np.asarray(prompt_lengths, dtype=np.int64))


def encode_training(task: T2TTask, examples: Sequence[Example], tokenizer, max_length: int) -> T2TEncoded:
    """Labeled examples as training rows: prompt + answer (generation: cut to the task's
    `max_new_tokens`, then EOS)."""
    prompts = tokenize_prompts(task, examples, tokenizer)
    answers = tokenize_answers([task.target_text(ex) for ex in examples], tokenizer)
    if task.type == "generation":
        eos = _eos_id(tokenizer)
        answers = [a[: task.max_new_tokens] + [eos] for a in answers]
    return pack(prompts, answers, max_length, tokenizer.bos_token_id)


def collate(parts: Sequence[tuple[str, T2TEncoded, np.ndarray]], pad_id: int) -> T2TBatch:
    """One left-padded batch from `(task, encoded rows, row indices)` parts, in the given order."""
    spans = [(enc.offsets[idx], enc.offsets[idx + 1]) for _, enc, idx in parts]
    width = max(int((e - s).max()) for s, e in spans if len(s))
    total = sum(len(idx) for _, _, idx in parts)
    ids = np.full((total, width), pad_id, dtype=np.int64)
    mask = np.zeros((total, width), dtype=np.int64)
    labels = np.full((total, width), IGNORE, dtype=np.int64)
    rows: dict[str, slice] = {}
    r = 0
    for (task, enc, idx), (starts, ends) in zip(parts, spans):
        for j, (s, e, i) in enumerate(zip(starts, ends, idx)):
            n = int(e - s)
            ids[r + j, width - n :] = enc.ids[s:e]
            mask[r + j, width - n :] = 1
            answer = n - int(enc.prompt_lengths[i])
            if answer:
                labels[r + j, width - answer :] = enc.ids[e - answer : e]
        if task in rows:
            raise ValueError(f"task {task!r} appears twice in one batch; its rows must be contiguous")
        rows[task] = slice(r, r + len(idx))
        r += len(idx)
    return T2TBatch(torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(labels), rows)


def pad_id_of(tokenizer) -> int:
    """The id that fills padding: the tokenizer's pad token, else EOS (masked out either way)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return _eos_id(tokenizer)


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the decoder's tokenizer has no EOS token; generation needs one to stop")
    return int(tokenizer.eos_token_id)
