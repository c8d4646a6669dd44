"""Train -> save bundle -> load -> predict, for every task type, on the tiny in-process model.

Two runs are shared by the tests of this module: all five task kinds in mixed-task batches (fp32),
and three of them in single-task batches under bf16 autocast.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import promptmux.precision as precision_mod
import promptmux.train.trainer as trainer_mod
from helpers import TASKS, single_thread, tiny_config, write_tasks  # noqa: F401  (fixture)
from promptmux.config import config_from_dict
from promptmux.errors import ConfigError
from promptmux.serve.predictor import Predictor
from promptmux.train.trainer import TrainResult, train

pytestmark = pytest.mark.usefixtures("single_thread")

ALL = list(TASKS)  # sentiment (text), pair (text pair), topics (multilabel), score (regression), ner (token)
TYPES = {"sentiment": "classification", "pair": "classification", "topics": "multilabel", "score": "regression", "ner": "token"}
LABELS = {
    "sentiment": ["negative", "positive"],
    "pair": ["no", "yes"],
    "topics": ["finance", "sports"],
    "score": None,
    "ner": ["O", "B-LOC", "B-PER", "I-LOC"],
}
# Dev scores after 150 mixed steps must beat chance clearly (chance: 50% accuracy; 25% subset
# accuracy; 0 correlation; ~0 entity F1).
FLOORS = {
    "sentiment": ("accuracy", 80.0),
    "pair": ("accuracy", 65.0),
    "topics": ("subset_accuracy", 50.0),
    "score": ("pearson", 80.0),
    "ner": ("entity_f1", 80.0),
}


class Run:
    def __init__(self, result: TrainResult, cfg, folder: Path, batches: list[list[str]]) -> None:
        self.result, self.cfg, self.folder, self.batches = result, cfg, folder, batches
        self.out = Path(cfg.output.dir)

    def events(self, kind: str) -> list[dict[str, Any]]:
        lines = (self.out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        return [e for e in map(json.loads, lines) if e["event"] == kind]

    def dev_rows(self, task: str) -> list[dict[str, Any]]:
        path = self.folder / task / "dev.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _run(backbone: Path, tmp: Path, names: list[str], **sections: Any) -> Run:
    tasks = write_tasks(tmp, names)
    cfg = config_from_dict(tiny_config(backbone, tasks, tmp / "run", **sections), base_dir=tmp)
    batches: list[list[str]] = []
    real = trainer_mod.collate

    def recording(parts, *args, **kwargs):
        batches.append([task for task, _, _ in parts])
        return real(parts, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_mod, "collate", recording)
        result = train(cfg)
    return Run(result, cfg, tmp, batches)


@pytest.fixture(scope="module")
def mixed(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory, single_thread) -> Run:
    return _run(
        tiny_backbone,
        tmp_path_factory.mktemp("mixed"),
        ALL,
        sampling={"mixed": True},
        train={"precision": "fp32", "max_steps": 150, "eval_every": 75},
    )


@pytest.fixture(scope="module")
def single_bf16(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory, single_thread) -> Run:
    return _run(
        tiny_backbone,
        tmp_path_factory.mktemp("single"),
        ["sentiment", "score", "ner"],
        sampling={"mixed": False, "strategy": "proportional"},
        train={"precision": "bf16", "max_steps": 60, "eval_every": 30},
    )


def in_memory_predictor(run: Run) -> Predictor:
    """A Predictor around the trained model object itself (not read back from disk)."""
    from transformers import AutoTokenizer

    bundle = Predictor.from_pretrained(run.out / "last")
    tokenizer = AutoTokenizer.from_pretrained(run.cfg.model.backbone)
    return Predictor(run.result.model, tokenizer, list(bundle.tasks.values()), bundle.settings)


def inputs_of(run: Run, task: str) -> list[Any]:
    rows = run.dev_rows(task)
    if task == "pair":
        return [(r["premise"], r["hypothesis"]) for r in rows]
    if task == "ner":
        return [r["tokens"] for r in rows]
    return [r["text"] for r in rows]


def assert_same_predictions(a: list[dict], b: list[dict], tol: float) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        if "label" in x:
            assert x["label"] == y["label"]
            assert x["probabilities"] == pytest.approx(y["probabilities"], abs=tol)
        elif "labels" in x:
            assert x["labels"] == y["labels"]
            assert x["probabilities"] == pytest.approx(y["probabilities"], abs=tol)
        elif "value" in x:
            assert x["value"] == pytest.approx(y["value"], abs=tol * 10)
        else:
            assert [t["tag"] for t in x["tokens"]] == [t["tag"] for t in y["tokens"]]
            assert x["entities"] == y["entities"]


# --- the mixed fp32 run: all five task kinds ------------------------------------------------------


def test_run_folder_holds_bundles_logs_and_results(mixed: Run) -> None:
    out = mixed.out
    for name in ("best", "last"):
        for needed in ("bundle.json", "model.safetensors", "encoder/config.json", "tokenizer", "config.yaml"):
            assert (out / name / needed).exists(), f"{name}/{needed}"
    assert (out / "last" / "trainer_state.json").is_file()
    assert not (out / "tensorboard").exists()  # output.tensorboard: false
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["steps"] == 150 and results["stopped"] == "completed"
    assert results["best_step"] == mixed.result.best_step and set(results["last_metrics"]) == set(ALL)
    assert mixed.result.steps == 150


def test_metrics_jsonl_has_train_and_eval_events(mixed: Run) -> None:
    train_events, eval_events = mixed.events("train"), mixed.events("eval")
    assert [e["step"] for e in train_events] == list(range(10, 151, 10))
    assert [e["step"] for e in eval_events] == [75, 150]
    for e in train_events:
        assert set(e["loss"]) <= set(ALL) and np.isfinite(list(e["loss"].values())).all()
        assert e["lr"] >= 0 and e["tokens_per_s"] > 0 and set(e["weights"]) <= set(ALL)
    # The linear schedule decays the rate to zero by the last step.
    assert train_events[0]["lr"] > train_events[-2]["lr"] > train_events[-1]["lr"] == 0
    for e in eval_events:
        assert set(e["metrics"]) == set(ALL) and e["aggregate"] is not None


def test_mixed_batches_hold_several_tasks(mixed: Run) -> None:
    assert len(mixed.batches) == 150
    assert np.mean([len(b) for b in mixed.batches]) > 2.5
    assert all(len(set(b)) == len(b) for b in mixed.batches), "a task's rows must form one slice"


@pytest.mark.parametrize("task", ALL)
def test_training_reduces_the_loss(mixed: Run, task: str) -> None:
    losses = [e["loss"][task] for e in mixed.events("train") if task in e["loss"]]
    assert len(losses) >= 6
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < 0.9 * first, f"{task}: loss {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("task", ALL)
def test_training_beats_chance(mixed: Run, task: str) -> None:
    metric, floor = FLOORS[task]
    assert mixed.result.last_metrics[task][metric] >= floor, mixed.result.last_metrics[task]


@pytest.mark.parametrize("task", ALL)
def test_loaded_bundle_predicts_like_the_trained_model(mixed: Run, task: str) -> None:
    loaded = Predictor.from_pretrained(mixed.out / "last")
    assert loaded.precision == "fp32" and loaded.max_length == 32
    inputs = inputs_of(mixed, task)
    expected = in_memory_predictor(mixed).predict(task, inputs)
    assert_same_predictions(loaded.predict(task, inputs), expected, tol=1e-5)


def test_best_bundle_is_the_best_evaluation(mixed: Run) -> None:
    best = Predictor.from_pretrained(mixed.out)  # a run folder means its best bundle
    assert best.folder == mixed.out / "best"
    if mixed.result.best_step == mixed.result.steps:
        inputs = inputs_of(mixed, "sentiment")
        assert_same_predictions(best.predict("sentiment", inputs), in_memory_predictor(mixed).predict("sentiment", inputs), 1e-5)
    assert mixed.result.best_metrics == next(e["metrics"] for e in mixed.events("eval") if e["step"] == mixed.result.best_step)


@pytest.mark.parametrize("task", ALL)
def test_label_names_round_trip(mixed: Run, task: str) -> None:
    predictor = Predictor.from_pretrained(mixed.out)
    info = predictor.tasks[task]
    assert info.type == TYPES[task] and info.labels == LABELS[task]
    rows = mixed.dev_rows(task)
    preds = predictor.predict(task, inputs_of(mixed, task))
    # Names, not ids, and mapped the right way round: predictions agree with the gold names.
    if task in ("sentiment", "pair"):
        hits = [p["label"] == r["label"] for p, r in zip(preds, rows)]
    elif task == "topics":
        hits = [sorted(p["labels"]) == sorted(r["label"]) for p, r in zip(preds, rows)]
    elif task == "score":
        hits = [abs(p["value"] - r["label"]) < 1.5 for p, r in zip(preds, rows)]
    else:
        hits = [[t["tag"] for t in p["tokens"]] == r["tags"] for p, r in zip(preds, rows)]
    assert np.mean(hits) >= 0.5, f"{task}: predictions disagree with the gold label names"


def test_token_predictions_name_entities(mixed: Run) -> None:
    predictor = Predictor.from_pretrained(mixed.out)
    (pred,) = predictor.predict("ner", ["john works in paris city"])
    assert [t["word"] for t in pred["tokens"]] == ["john", "works", "in", "paris", "city"]
    assert [t["tag"] for t in pred["tokens"]] == ["B-PER", "O", "O", "B-LOC", "I-LOC"]
    assert pred["entities"] == [
        {"type": "PER", "start": 0, "end": 1, "text": "john"},
        {"type": "LOC", "start": 3, "end": 5, "text": "paris city"},
    ]


# --- the output.dir guard -------------------------------------------------------------------------


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        str(p.relative_to(folder)): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_second_run_into_the_same_folder_is_refused(mixed: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(mixed.out)
    assert "results.json" in before and "metrics.jsonl" in before

    def no_model(*args, **kwargs):
        raise AssertionError("the backbone was loaded before the output.dir check")

    monkeypatch.setattr(trainer_mod, "load_backbone", no_model)
    with pytest.raises(ConfigError, match=r"output\.dir") as info:
        train(mixed.cfg)
    assert str(mixed.out) in str(info.value)
    assert snapshot(mixed.out) == before


def test_overwrite_replaces_the_previous_run(mixed: Run, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(mixed.out, out)
    train_file = str(mixed.folder / "sentiment" / "train.jsonl")
    raw = tiny_config(mixed.cfg.model.backbone, {"sentiment": {"type": "classification", "data": {"train": train_file}}}, out)
    cfg = config_from_dict(raw, ["output.overwrite=true", "train.max_steps=3", "train.eval_every=3"])
    result = train(cfg)
    assert result.steps == 3
    assert json.loads((out / "results.json").read_text())["steps"] == 3
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(e["step"] for e in events) == 3, "the old run's log was kept"
    assert list(Predictor.from_pretrained(out).tasks) == ["sentiment"]


# --- single-task batches under bf16 ---------------------------------------------------------------


def test_single_task_batches(single_bf16: Run) -> None:
    assert len(single_bf16.batches) == 60
    assert all(len(b) == 1 for b in single_bf16.batches)
    seen = {b[0] for b in single_bf16.batches}
    assert seen == {"sentiment", "score", "ner"}


@pytest.mark.parametrize("task", ["sentiment", "score", "ner"])
def test_bf16_training_learns(single_bf16: Run, task: str) -> None:
    losses = [e["loss"][task] for e in single_bf16.events("train") if task in e["loss"]]
    assert losses[-1] < losses[0], f"{task}: {losses}"
    metric, floor = FLOORS[task]
    assert single_bf16.result.last_metrics[task][metric] >= floor * 0.8


@pytest.mark.parametrize("task", ["sentiment", "score", "ner"])
def test_bf16_bundle_predicts_like_the_trained_model(single_bf16: Run, task: str, monkeypatch) -> None:
    # As on hardware with native bf16, where a bf16 bundle predicts in bf16 (else in fp32: test_precision.py).
    monkeypatch.setattr(precision_mod, "_cpu_native_bf16", lambda: True)
    loaded = Predictor.from_pretrained(single_bf16.out / "last")
    assert loaded.precision == "bf16"
    inputs = inputs_of(single_bf16, task)
    assert_same_predictions(loaded.predict(task, inputs), in_memory_predictor(single_bf16).predict(task, inputs), tol=1e-3)
    # fp32 inference from the same bf16-trained bundle agrees on the decisions almost everywhere.
    fp32 = Predictor.from_pretrained(single_bf16.out / "last", precision="fp32")
    a, b = fp32.predict(task, inputs), loaded.predict(task, inputs)
    key = {"sentiment": "label", "score": "value", "ner": "entities"}[task]
    if key == "value":
        assert np.allclose([x["value"] for x in a], [x["value"] for x in b], atol=0.1)
    else:
        assert np.mean([x[key] == y[key] for x, y in zip(a, b)]) >= 0.9
