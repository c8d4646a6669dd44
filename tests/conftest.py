"""Shared fixtures: a tiny random BERT built in-process, small task files, offline settings."""

from __future__ import annotations

import inspect
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PROMPTMUX_DATA", REPO.parent / "shared" / "data"))

WORDS = (
    "the a an of to and is was it this that movie film good great bad awful fun boring plot actor "
    "team won lost match game market stock price bank city paris london john mary works at in on "
    "for with not very really love hate like best worst ok fine"
).split()


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PROMPTMUX_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT with random weights and a word-piece vocabulary, saved locally."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'-")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + letters + [f"##{c}" for c in letters]
    vocab = list(dict.fromkeys(vocab))
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 names the argument `vocab`, 4.x `vocab_file`.
    arg = "vocab" if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters else "vocab_file"
    tok = BertTokenizerFast(**{arg: str(folder / "vocab.txt")}, do_lower_case=True)
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def sentiment_rows(n: int, seed: int = 0) -> list[dict]:
    """Small learnable sentiment rows for unit tests (label follows the sentiment word)."""
    rng = random.Random(seed)
    pos, neg = ["good", "great", "fun", "love", "best"], ["bad", "awful", "boring", "hate", "worst"]
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        word = rng.choice(pos if label else neg)
        filler = rng.sample(WORDS[:12], 3)
        rows.append({"text": " ".join(["the", "movie", "was", word, *filler]), "label": label})
    return rows
