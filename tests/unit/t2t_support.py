"""A tiny random causal LM (Llama, 2 layers, hidden 32) with a word-level tokenizer, and small
text-to-text task files, for the decoder tests (tests/unit/test_t2t.py)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from conftest import WORDS

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
EXTRA = ["review", "sentiment", "summary", "topic", "news", "sports", "finance", "yes", "no", "very", ":", "?", "."]
POS = ["good", "great", "fun", "love", "best"]
NEG = ["bad", "awful", "boring", "hate", "worst"]
# Larger than Llama's 0.02: with a random LM head that small, logits stay within about +-0.6
# whatever the hidden state, and LoRA or soft prompts (which cannot touch the head) barely move them.
INIT_STD = 0.2
FILLER = ["the", "a", "of", "to", "and", "is", "was", "it", "this", "that", "very", "really"]


def build_tiny_lm(folder: Path, seed: int = 0) -> Path:
    """Save a word-level tokenizer (BOS added in front, like Llama/Gemma tokenizers) and a random
    2-layer Llama into `folder`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(dict.fromkeys(SPECIALS + WORDS + EXTRA))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
    fast.save_pretrained(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=256, bos_token_id=vocab["<bos>"], eos_token_id=vocab["<eos>"],
        pad_token_id=vocab["<pad>"], initializer_range=INIT_STD,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def sentiment(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        words = ["the", "movie", "was", rng.choice(POS if positive else NEG), *rng.sample(FILLER, rng.randint(0, 3))]
        rows.append({"text": " ".join(words), "label": "positive" if positive else "negative"})
    return rows


def topics(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Generation: a short text about sports or money; the target names the topic in two words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        sports = rng.random() < 0.5
        words = rng.sample(["team", "won", "match", "game"] if sports else ["market", "stock", "price", "bank"], 2)
        words += rng.sample(FILLER, rng.randint(0, 2))
        rows.append({"document": " ".join(words), "title": "sports news" if sports else "finance news"})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def write_t2t_tasks(folder: Path, n_train: int = 32, n_dev: int = 12) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "sent_train.jsonl", sentiment(n_train, 1))
    write_jsonl(folder / "sent_dev.jsonl", sentiment(n_dev, 2))
    write_jsonl(folder / "topic_train.jsonl", topics(n_train, 3))
    write_jsonl(folder / "topic_dev.jsonl", topics(n_dev, 4))
    return folder


def t2t_config(lm: Path, out: Path, **train: Any) -> dict[str, Any]:
    """A two-task decoder config (paths relative to the task folder: validate with that base_dir)."""
    return {
        "seed": 0,
        "model": {"kind": "decoder", "backbone": str(lm), "max_length": 32, "max_new_tokens": 4},
        "tasks": {
            "sentiment": {
                "type": "classification",
                "data": {"train": "sent_train.jsonl", "dev": "sent_dev.jsonl"},
                "prompt": {"template": "review : {text} sentiment :"},
                "verbalizer": {"positive": "good", "negative": "bad"},
            },
            "topic": {
                "type": "generation",
                "data": {"train": "topic_train.jsonl", "dev": "topic_dev.jsonl"},
                "fields": {"text": "document", "label": "title"},
                "prompt": {"template": "{text} topic :"},
                "max_new_tokens": 3,
            },
        },
        "sampling": {"strategy": "uniform", "mixed": True},
        "train": {
            "max_steps": 12, "batch_size": 8, "eval_batch_size": 16, "lr": 3e-3, "eval_every": 12, "log_every": 4,
            "precision": "fp32", "progress": False, "warmup_ratio": 0.0, **train,
        },
        "output": {"dir": str(out), "tensorboard": False},
    }
