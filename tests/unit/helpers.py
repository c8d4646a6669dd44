"""Small learnable task files and configs for the tiny in-process backbone (shared by unit tests).

Each generator returns rows whose label follows a few words of the text, so that ~100 training
steps of the 2-layer, hidden-32 model are enough to beat chance. `write_tasks` writes one JSONL file
per split and task, and `tiny_config` returns a config dict (paths relative to the folder the files
are in, i.e. the `base_dir` to validate it with).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

POS = ["good", "great", "fun", "love", "best"]
NEG = ["bad", "awful", "boring", "hate", "worst"]
FILLER = ["the", "a", "of", "to", "and", "is", "was", "it", "this", "that", "very", "really"]
SPORTS = ["team", "won", "match", "game"]
FINANCE = ["market", "stock", "price", "bank"]
PEOPLE = ["john", "mary"]
PLACES = ["paris", "london"]


def sentiment(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Single-text classification: the label is the polarity of one sentiment word."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        word = rng.choice(POS if positive else NEG)
        words = ["the", "movie", "was", word, *rng.sample(FILLER, rng.randint(0, 6))]
        rows.append({"text": " ".join(words), "label": "positive" if positive else "negative"})
    return rows


def pairs(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Text-pair classification: the label follows the sentiment word of the second text."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        agree = rng.random() < 0.5
        first = " ".join(["the", "film", *rng.sample(FILLER, rng.randint(1, 4))])
        second = " ".join(["it", "was", rng.choice(POS if agree else NEG), *rng.sample(FILLER, rng.randint(0, 3))])
        rows.append({"premise": first, "hypothesis": second, "label": "yes" if agree else "no"})
    return rows


def topics(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Multi-label: `sports` when a sports word occurs, `finance` when a finance word does (any subset)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = [name for name in ("sports", "finance") if rng.random() < 0.5]
        words = rng.sample(FILLER, 3)
        if "sports" in labels:
            words.insert(rng.randint(0, len(words)), rng.choice(SPORTS))
        if "finance" in labels:
            words.insert(rng.randint(0, len(words)), rng.choice(FINANCE))
        rows.append({"text": " ".join(words), "label": labels})
    return rows


def scores(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Regression on a 0..5 scale: about 4.5 with a positive word, 0.5 with a negative one."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        word = rng.choice(POS if positive else NEG)
        value = (4.5 if positive else 0.5) + rng.uniform(-0.3, 0.3)
        words = ["the", "plot", "was", word, *rng.sample(FILLER, rng.randint(0, 4))]
        rows.append({"text": " ".join(words), "label": round(value, 3)})
    return rows


def entities(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """BIO tagging: john/mary are B-PER, paris/london B-LOC (followed by `city`: I-LOC)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words: list[str] = []
        tags: list[str] = []
        for _ in range(rng.randint(3, 7)):
            r = rng.random()
            if r < 0.2:
                words.append(rng.choice(PEOPLE))
                tags.append("B-PER")
            elif r < 0.35:
                words.append(rng.choice(PLACES))
                tags.append("B-LOC")
                if rng.random() < 0.5:
                    words.append("city")
                    tags.append("I-LOC")
            else:
                words.append(rng.choice(FILLER))
                tags.append("O")
        rows.append({"tokens": words, "tags": tags})
    return rows


# name -> (generator, task config without data)
TASKS: dict[str, tuple[Any, dict[str, Any]]] = {
    "sentiment": (sentiment, {"type": "classification"}),
    "pair": (pairs, {"type": "classification", "fields": {"text": "premise", "text_b": "hypothesis"}}),
    "topics": (topics, {"type": "multilabel"}),
    "score": (scores, {"type": "regression"}),
    "ner": (entities, {"type": "token", "fields": {"text": "tokens", "label": "tags"}}),
}


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def write_tasks(
    folder: Path, names: list[str] | None = None, n_train: int = 160, n_dev: int = 40, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Write train/dev JSONL files for the named tasks (default: all) and return their `tasks:` section."""
    tasks = {}
    for i, name in enumerate(names or list(TASKS)):
        make, spec = TASKS[name]
        write_jsonl(folder / name / "train.jsonl", make(n_train, seed=seed + 100 * i))
        write_jsonl(folder / name / "dev.jsonl", make(n_dev, seed=seed + 100 * i + 1))
        tasks[name] = {**spec, "data": {"train": f"{name}/train.jsonl", "dev": f"{name}/dev.jsonl"}}
    return tasks


def tiny_config(backbone: Path, tasks: dict[str, Any], out_dir: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A fast config for the tiny backbone; `sections` update the top-level sections key by key."""
    cfg: dict[str, Any] = {
        "seed": 0,
        "model": {"backbone": str(backbone), "max_length": 32, "pooling": "mean", "head_dropout": 0.0},
        "tasks": tasks,
        "sampling": {"strategy": "uniform", "mixed": True},
        "train": {
            "batch_size": 16, "eval_batch_size": 32, "max_steps": 100, "lr": 2e-3, "head_lr": 1e-2,
            "warmup_ratio": 0.0, "precision": "fp32", "eval_every": 50, "log_every": 10, "progress": False,
        },
        "output": {"dir": str(out_dir), "tensorboard": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture(scope="module", autouse=False)
def single_thread():
    """Run torch on one thread: the tiny model gains nothing from two, and threads that spin-wait
    for each other are many times slower when other processes share the 2 cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
