"""Answers from the decoder: verbalizer scoring, greedy decoding, predictions and metrics.

Classification reads each label's verbalizer words after the prompt and sums their token
log-probabilities; the label with the highest sum wins (Schick and Schütze 2021, "Exploiting
Cloze Questions for Few Shot Text Classification and Natural Language Inference",
https://arxiv.org/abs/2001.07676, score labels the same way with a masked LM). A sum, not a mean:
it is the log-probability of the whole answer, so a longer verbalizer pays for each extra token;
keep verbalizers short, or of equal length. `probabilities` are these scores soft-maxed over the
labels. Generation decodes greedily up to the task's `max_new_tokens`, stopping at EOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from promptmux.precision import autocast
from promptmux.t2t.data import collate, fit, pack, pad_id_of, tokenize_answers, tokenize_prompts
from promptmux.t2t.model import T2TModel
from promptmux.t2t.tasks import T2TTask
from promptmux.tasks.spec import Example


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _by_length(prompts: Sequence[list[int]], size: int) -> list[np.ndarray]:
    """Row indices in batches of similar prompt length (less padding), shortest first."""
    order = np.argsort([len(p) for p in prompts], kind="stable")
    return [order[i : i + size] for i in range(0, len(order), size)]


@torch.no_grad()
def score_labels(
    model: T2TModel, task: T2TTask, examples: Sequence[Example], tokenizer, max_length: int, batch_size: int = 32, precision: str = "fp32"
) -> np.ndarray:
    """[N, K] summed log-probability of each label's verbalizer tokens after each example's prompt.

    When every verbalizer is a single token (the usual case: "positive" / "negative"), one pass
    over the prompt reads all K labels at its last position; otherwise each (prompt, answer) pair
    is a row of its own (K rows per example).
    """
    answers = tokenize_answers(task.answers(), tokenizer)
    longest = max(len(a) for a in answers)
    bos = tokenizer.bos_token_id
    # One prompt cut for all labels of a row, so that they are compared on the same text.
    prompts = [fit(p, [0] * longest, max_length, bos)[0] for p in tokenize_prompts(task, examples, tokenizer)]
    if longest == 1:
        return _single_token_scores(model, task.name, prompts, [a[0] for a in answers], tokenizer, max_length, batch_size, precision)
    return _answer_scores(model, task.name, prompts, answers, tokenizer, max_length, batch_size, precision)


@torch.no_grad()
def _single_token_scores(
    model: T2TModel, name: str, prompts: list[list[int]], answer_ids: list[int], tokenizer, max_length: int,
    batch_size: int, precision: str,
) -> np.ndarray:
    """[N, K] log-probability of each one-token answer after each prompt: one pass per prompt."""
    scores = np.zeros((len(prompts), len(answer_ids)), dtype=np.float64)
    device, pad, bos = _device(model), pad_id_of(tokenizer), tokenizer.bos_token_id
    ids = torch.tensor(answer_ids, device=device)
    for rows in _by_length(prompts, batch_size):
        enc = pack([prompts[i] for i in rows], [[] for _ in rows], max_length, bos)
        batch = collate([(name, enc, np.arange(len(enc)))], pad).to(device)
        with autocast(device, precision):
            hidden, _, _ = model.start(batch.input_ids, batch.attention_mask, batch.rows)
        # Left padding: every prompt ends in the last column, where the answer token is predicted.
        logp = torch.log_softmax(model.logits(hidden[:, -1]), -1)
        scores[rows] = logp[:, ids].double().cpu().numpy()
    return scores


@torch.no_grad()
def _answer_scores(
    model: T2TModel, name: str, prompts: list[list[int]], answers: list[list[int]], tokenizer, max_length: int,
    batch_size: int, precision: str,
) -> np.ndarray:
    """[N, K] summed log-probability of each answer's tokens after each prompt: K rows per prompt."""
    k = len(answers)
    scores = np.zeros((len(prompts), k), dtype=np.float64)
    device, pad, bos = _device(model), pad_id_of(tokenizer), tokenizer.bos_token_id
    for rows in _by_length(prompts, max(1, batch_size // k)):
        enc = pack([prompts[i] for i in rows for _ in range(k)], [a for _ in rows for a in answers], max_length, bos)
        batch = collate([(name, enc, np.arange(len(enc)))], pad).to(device)
        with autocast(device, precision):
            sums, _ = model.row_logprobs(**batch.model_inputs())
        scores[rows] = sums.float().view(len(rows), k).cpu().numpy()
    return scores


@torch.no_grad()
def greedy(
    model: T2TModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: dict[str, slice],
    max_new: Sequence[int], eos_id: int, precision: str = "fp32",
) -> list[list[int]]:
    """Greedy decoding of a left-padded prompt batch; row i gets at most `max_new[i]` tokens and
    stops after EOS (which is not returned). Uses the key/value cache: one token per step."""
    device = input_ids.device
    n = input_ids.size(0)
    out: list[list[int]] = [[] for _ in range(n)]
    done = [m <= 0 for m in max_new]
    with autocast(device, precision):
        hidden, mask, cache = model.start(input_ids, attention_mask, rows, use_cache=True)
        for _ in range(max(max_new, default=0)):
            nxt = model.logits(hidden[:, -1]).argmax(-1)
            for i, token in enumerate(nxt.tolist()):
                if done[i]:
                    continue
                if token == eos_id:
                    done[i] = True
                else:
                    out[i].append(token)
                    done[i] = len(out[i]) >= max_new[i]
            if all(done):
                break
            hidden, mask, cache = model.step(nxt.unsqueeze(1), mask, cache)
    return out


def generate(
    model: T2TModel, task: T2TTask, examples: Sequence[Example], tokenizer, max_length: int, batch_size: int = 32,
    precision: str = "fp32", max_new_tokens: int | None = None,
) -> list[str]:
    """Greedy answers of a generation task (or any task: the decoder just writes), one per example."""
    limit = max_new_tokens or task.max_new_tokens or 32
    bos, pad = tokenizer.bos_token_id, pad_id_of(tokenizer)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else -1
    prompts = [fit(p, [], max_length, bos)[0] for p in tokenize_prompts(task, examples, tokenizer)]
    device = _device(model)
    texts = [""] * len(prompts)
    for rows in _by_length(prompts, batch_size):
        enc = pack([prompts[i] for i in rows], [[] for _ in rows], max_length, bos)
        batch = collate([(task.name, enc, np.arange(len(enc)))], pad).to(device)
        ids = greedy(model, batch.input_ids, batch.attention_mask, batch.rows, [limit] * len(rows), eos, precision)
        for i, tokens in zip(rows, ids):
            texts[i] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return texts


def softmax(scores: np.ndarray) -> np.ndarray:
    z = scores - scores.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def predict(
    model: T2TModel, task: T2TTask, examples: Sequence[Example], tokenizer, max_length: int, batch_size: int = 32, precision: str = "fp32"
) -> list[dict[str, Any]]:
    """JSON-ready predictions: classification `label`, `score`, `probabilities` (over the labels);
    generation `text`."""
    if task.type == "generation":
        return [{"text": t} for t in generate(model, task, examples, tokenizer, max_length, batch_size, precision)]
    probs = softmax(score_labels(model, task, examples, tokenizer, max_length, batch_size, precision))
    labels = task.labels or []
    out = []
    for row in probs:
        best = int(row.argmax())
        out.append({"label": labels[best], "score": round(float(row[best]), 6),
                    "probabilities": {label: round(float(p), 6) for label, p in zip(labels, row)}})
    return out


def evaluate(
    model: T2TModel, tasks: Sequence[T2TTask], rows: dict[str, list[Example]], tokenizer, max_length: int,
    batch_size: int = 32, precision: str = "fp32",
) -> dict[str, dict[str, float]]:
    """Every metric of each task that has rows: accuracy, macro-F1, ... from verbalizer scoring;
    ROUGE and exact match from greedy answers. The model is left in the mode it was in."""
    from promptmux.eval.metrics import compute_metrics

    was_training = model.training
    model.eval()
    metrics: dict[str, dict[str, float]] = {}
    try:
        for task in tasks:
            examples = rows.get(task.name) or []
            if not examples:
                continue
            if task.type == "classification":
                preds = score_labels(model, task, examples, tokenizer, max_length, batch_size, precision).argmax(-1)
                refs = [int(ex.label) for ex in examples]  # type: ignore[arg-type]
                metrics[task.name] = compute_metrics("classification", preds.tolist(), refs, task.labels)
            else:
                texts = generate(model, task, examples, tokenizer, max_length, batch_size, precision)
                metrics[task.name] = compute_metrics("generation", texts, [str(ex.label) for ex in examples])
    finally:
        model.train(was_training)
    return metrics
