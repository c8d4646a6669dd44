"""Shared pieces of the training-engine reliability tests (resume, checkpoint safety, distributed).

Runs are tiny (2-layer hidden-32 BERT, max_length 32, a few dozen steps) and written as a YAML
config next to their data, so the very same config can be trained in-process
(`load_config(path)`) or in a fresh process (`python -m promptmux.cli train path`).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from helpers import TASKS, write_jsonl

# Task name -> training rows: different sizes, so that temperature sampling is not uniform.
SIZES = {"sentiment": 40, "score": 24, "ner": 32}


def write_run_config(
    folder: Path, backbone: Path, tasks: dict[str, int] | None = None, **sections: dict[str, Any]
) -> Path:
    """Write task files and `config.yaml` into `folder`; `sections` update the defaults key by key.

    Defaults exercise every piece of state an exact resume must restore: dropout in the encoder
    (BERT's own 0.1) and in the heads, temperature sampling, length buckets, gradient accumulation,
    warmup then linear decay.
    """
    tasks = tasks or SIZES
    spec: dict[str, Any] = {}
    for i, (name, n) in enumerate(tasks.items()):
        make, task = TASKS[name]
        write_jsonl(folder / name / "train.jsonl", make(n, seed=100 * i))
        write_jsonl(folder / name / "dev.jsonl", make(12, seed=100 * i + 1))
        spec[name] = {**task, "data": {"train": f"{name}/train.jsonl", "dev": f"{name}/dev.jsonl"}}
    cfg: dict[str, Any] = {
        "seed": 7,
        "model": {"backbone": str(backbone), "max_length": 32, "pooling": "mean", "head_dropout": 0.1},
        "tasks": spec,
        "sampling": {"strategy": "temperature", "temperature": 2.0, "mixed": False},
        "train": {
            "batch_size": 8, "eval_batch_size": 32, "max_steps": 16, "lr": 2e-3, "head_lr": 1e-2,
            "warmup_ratio": 0.25, "scheduler": "linear", "grad_accum": 2, "precision": "fp32",
            "eval_every": 4, "log_every": 4, "length_buckets": True, "bucket_size": 2, "progress": False,
        },
        "output": {"dir": str(folder / "run"), "tensorboard": False},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value} if isinstance(cfg.get(key), dict) else value
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def subprocess_env(cache: Path) -> dict[str, str]:
    """Environment for child processes: offline, a private encoding cache, one thread each, and no
    library progress bars (they would bury a failing child's own messages in the captured output).

    One thread also makes CPU float results independent of the core count, so that a child and
    this process (see `one_thread`) compute bit-identical steps.
    """
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_PROGRESS_BARS="1",
        PROMPTMUX_CACHE=str(cache), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
    )
    return env


def cli(*args: str, cache: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `python -m promptmux.cli ARGS` in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "promptmux.cli", *args],
        env=subprocess_env(cache), capture_output=True, text=True, timeout=timeout,
    )


@contextmanager
def one_thread() -> Iterator[None]:
    """Train in-process on one thread (as the children do), then restore the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


def trainer_state(run: Path) -> dict[str, Any]:
    return json.loads((run / "last" / "trainer_state.json").read_text(encoding="utf-8"))


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def events(run: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def sigterm_during_step(monkeypatch, step: int) -> None:
    """Send this process a real SIGTERM while step `step` (1-based) runs.

    The trainer's own handler flags the stop, so its preemption path (finish the step, save,
    exit) is what runs, at a step chosen by the test instead of by a race.
    """
    from promptmux.train import trainer

    real = trainer._check_finite
    sent: list[int] = []

    def check(acc, losses, at, stop):
        real(acc, losses, at, stop)
        if at == step and not sent:
            sent.append(at)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(trainer, "_check_finite", check)
