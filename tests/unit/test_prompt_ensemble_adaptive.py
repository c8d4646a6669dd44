"""Prompt ensembles (inference averages k prompts) and adaptive prompt re-selection in training."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from engine_support import (
    assert_same_tensors,
    events,
    load_tensors,
    one_thread,
    sigterm_during_step,
    trainer_state,
)
from helpers import single_thread, tiny_config, write_tasks  # noqa: F401  (fixture)

from promptmux.config import config_from_dict
from promptmux.prompts.adaptive import rank
from promptmux.prompts.ensemble import combine, variants
from promptmux.serve.predictor import Predictor
from promptmux.tasks.spec import Example

ENSEMBLE_PROMPTS = {
    "sentiment": {"template": "review {text}", "pool": ["film {text}", "{text} !"], "ensemble": 3},
    "topics": {"pool": ["topic {text}"], "ensemble": 2},  # no template: the plain input comes first
    "score": {"template": "rate {text}", "pool": ["{text} score"], "ensemble": 2},
    "pair": {"template": "{text}{sep}{text_b}", "pool": ["{text}{sep}so {text_b}"], "ensemble": 2},
}
INPUTS = {
    "sentiment": ["the movie was great fun", "the movie was awful", "boring and bad it was"],
    "topics": ["the team won the match", "the stock market and the bank", "it was that"],
    "score": ["the plot was good", "the plot was worst", "it is ok"],
    "pair": [("the film was long", "it was awful"), ("the film", "it was the best")],
    "ner": ["john works in paris city", "mary and john"],
}


def test_combine_averages_probabilities_and_values():
    pred, probs = combine("classification", [[0.2, 0.8], [0.7, 0.3]])
    assert pred == 1 and probs == pytest.approx([0.45, 0.55])
    assert combine("classification", [[0.1, 0.6, 0.3], [0.5, 0.1, 0.4], [0.6, 0.2, 0.2]])[0] == 0
    assert combine("multilabel", [[0.9, 0.2, 0.6], [0.3, 0.4, 0.5]]) == (
        (0, 2),
        pytest.approx([0.6, 0.3, 0.55]),
    )
    assert combine("regression", [1.0, 2.0, 4.5]) == (pytest.approx(2.5), pytest.approx(2.5))
    with pytest.raises(ValueError, match="token"):
        combine("token", [[[0.5]]])


def test_rank_prefers_the_best_then_the_active_then_config_order():
    cands = ["a", "b", "c", None]
    assert rank(cands, [1.0, 3.0, 2.0, 0.0], "a") == ["b", "c", "a", None]
    assert rank(cands, [2.0, 2.0, 2.0, 2.0], "c") == [
        "c",
        "a",
        "b",
        None,
    ]  # a tie keeps the active one
    assert rank(cands, [math.nan, 1.0, 1.0, 0.5], "a") == ["b", "c", None, "a"]  # NaN ranks last


@pytest.fixture(scope="module")
def ensemble_run(
    tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory, single_thread: None  # noqa: F811  (pytest fixture)
):
    from promptmux.train.trainer import train

    folder = tmp_path_factory.mktemp("ensemble")
    tasks = write_tasks(
        folder, ["sentiment", "pair", "topics", "score", "ner"], n_train=60, n_dev=12
    )
    for name, prompt in ENSEMBLE_PROMPTS.items():
        tasks[name]["prompt"] = prompt
    raw = tiny_config(
        tiny_backbone, tasks, folder / "run", train={"max_steps": 20, "eval_every": 20}
    )
    result = train(config_from_dict(raw, base_dir=folder))
    return folder / "run", result


def single(predictor: Predictor, task: str, template: str | None) -> Predictor:
    """The same model predicting `task` under one template only."""
    tasks = [
        replace(info, prompt=template, pool=None, ensemble=1) if info.name == task else info
        for info in predictor.tasks.values()
    ]
    return Predictor(predictor.model, predictor.tokenizer, tasks, predictor.settings)


def numbers(out: dict[str, Any]) -> list[float]:
    return [out["value"]] if "value" in out else list(out["probabilities"].values())


def test_ensemble_is_the_mean_of_its_single_prompt_predictions(ensemble_run):
    run, _ = ensemble_run
    predictor = Predictor.from_pretrained(run / "last")
    bundle = {t["name"]: t for t in json.loads((run / "last" / "bundle.json").read_text())["tasks"]}
    assert (
        bundle["sentiment"]["pool"] == ["film {text}", "{text} !"]
        and bundle["sentiment"]["ensemble"] == 3
    )
    assert variants(predictor.tasks["topics"]) == [None, "topic {text}"]
    assert variants(predictor.tasks["ner"]) == [None]
    for task in ENSEMBLE_PROMPTS:
        info = predictor.tasks[task]
        got = predictor.predict(task, INPUTS[task])
        per_prompt = [
            single(predictor, task, v).predict(task, INPUTS[task]) for v in variants(info)
        ]
        assert len(per_prompt) == info.ensemble
        for i, out in enumerate(got):
            singles = [numbers(p[i]) for p in per_prompt]
            mean = [sum(col) / len(col) for col in zip(*singles)]
            assert numbers(out) == pytest.approx(mean, abs=1e-6), task
            if info.type == "classification":
                assert out["label"] == info.labels[max(range(len(mean)), key=mean.__getitem__)]
            if info.type == "multilabel":
                assert out["labels"] == [label for label, p in zip(info.labels, mean) if p > 0.5]
        # The prompts differ, so averaging is not a no-op.
        assert numbers(per_prompt[0][0]) != numbers(per_prompt[1][0]), task


def test_k_1_predicts_exactly_the_single_prompt(ensemble_run):
    from promptmux.data.encode import encode_examples
    from promptmux.eval.evaluator import run_task

    run, result = ensemble_run
    predictor = Predictor.from_pretrained(run / "last")
    one = single(predictor, "sentiment", "review {text}")
    got = one.predict("sentiment", INPUTS["sentiment"])
    enc = encode_examples(
        [Example(f"review {t}") for t in INPUTS["sentiment"]],
        predictor.tokenizer,
        "classification",
        32,
        2,
    )
    _, scores = run_task(
        result.model, "sentiment", enc, predictor.pad_id, precision="fp32", with_scores=True
    )
    for g, s in zip(got, scores):
        assert list(g["probabilities"].values()) == [round(p, 6) for p in s]


def test_mixed_task_batches_and_http_average_the_same_prompts(ensemble_run):
    from serve_support import client_for, post
    from serve_support import run as run_async

    from promptmux.serve.mixed import PassStats, predict_mixed

    run, _ = ensemble_run
    predictor = Predictor.from_pretrained(run / "last")
    items = [
        (task, x) for i in range(3) for task, xs in INPUTS.items() if i < len(xs) for x in [xs[i]]
    ]
    expected = [predictor.predict(t, [x])[0] for t, x in items]
    stats = PassStats()
    mixed = predict_mixed(
        predictor, [(t, predictor.example(t, x)) for t, x in items], stats, overhead=10**9
    )
    assert stats.passes == 1  # all tasks, all prompt variants: one forward
    for a, b in zip(mixed, expected):
        if "tokens" in b:
            assert [t["tag"] for t in a["tokens"]] == [t["tag"] for t in b["tokens"]]
        else:
            assert numbers(a) == pytest.approx(numbers(b), abs=1e-5)
    body = {
        "items": [
            {
                "task": t,
                **({"text_a": x[0], "text_b": x[1]} if isinstance(x, tuple) else {"text": x}),
            }
            for t, x in items
        ],
        "return_probabilities": True,
    }

    async def go():
        async with client_for(predictor) as client:
            return (await post(client, body)).json()

    for result, b in zip(run_async(go())["results"], expected):
        if "probabilities" in b:
            assert list(result["probabilities"].values()) == pytest.approx(numbers(b), abs=1e-4)
        elif "value" in b:
            assert result["value"] == pytest.approx(b["value"], abs=1e-4)


def test_promptmux_eval_uses_the_ensemble(ensemble_run, tmp_path):
    from promptmux.eval.report import evaluate_bundle

    run, _ = ensemble_run
    predictor = Predictor.from_pretrained(run / "last")
    report = evaluate_bundle(run / "last", "dev", report_dir=tmp_path)
    dev = [
        json.loads(line)
        for line in (run.parent / "sentiment" / "dev.jsonl").read_text().splitlines()
    ]
    preds = predictor.predict("sentiment", [r["text"] for r in dev])
    accuracy = 100 * sum(p["label"] == r["label"] for p, r in zip(preds, dev)) / len(dev)
    assert report["metrics"]["sentiment"]["accuracy"] == pytest.approx(accuracy)


def test_bundles_without_prompt_fields_still_load(ensemble_run, tmp_path):
    import shutil

    run, _ = ensemble_run
    old = tmp_path / "old"
    shutil.copytree(run / "last", old)
    meta = json.loads((old / "bundle.json").read_text())
    for t in meta["tasks"]:
        for key in ("rules", "pool", "ensemble"):
            t.pop(key)
    (old / "bundle.json").write_text(json.dumps(meta))
    predictor = Predictor.from_pretrained(old)
    assert predictor.tasks["sentiment"].ensemble == 1 and predictor.tasks["sentiment"].pool is None
    now = Predictor.from_pretrained(run / "last")
    assert predictor.predict("sentiment", INPUTS["sentiment"]) == single(
        now, "sentiment", "review {text}"
    ).predict("sentiment", INPUTS["sentiment"])


# ---------------------------------------------------------------- adaptive re-selection

ADAPTIVE = {
    "template": "review {text}",
    "pool": ["film {text}", "movie {text} !"],
    "ensemble": 2,
    "adaptive": True,
}


def adaptive_config(folder: Path, backbone: Path, out: Path, prompt: dict[str, Any], **train: Any):
    tasks = write_tasks(folder, ["sentiment", "score"], n_train=40, n_dev=8)
    tasks["sentiment"]["prompt"] = prompt
    raw = tiny_config(backbone, tasks, out, train={"max_steps": 12, "eval_every": 4, **train})
    return config_from_dict(raw, base_dir=folder)


def fake_scores(favourite: str):
    """A scorer that ranks `favourite` first, then the candidates in reverse config order."""

    def score(model, info, candidates, data, tokenizer, cfg, cache_dir=None):
        return [100.0 if c == favourite else float(i) for i, c in enumerate(candidates)]

    return score


def test_adaptive_switches_to_the_best_candidate_logs_saves_and_resumes(
    tmp_path, tiny_backbone, monkeypatch
):
    from promptmux.prompts import adaptive
    from promptmux.train.trainer import train

    monkeypatch.setattr(adaptive, "score_candidates", fake_scores("movie {text} !"))
    with one_thread():
        straight = train(adaptive_config(tmp_path, tiny_backbone, tmp_path / "straight", ADAPTIVE))
        with monkeypatch.context() as m:
            sigterm_during_step(m, 6)  # after the switch at step 4
            first = train(adaptive_config(tmp_path, tiny_backbone, tmp_path / "legs", ADAPTIVE))
        assert (first.steps, first.stopped) == (6, "sigterm")
        resumed = train(
            adaptive_config(tmp_path, tiny_backbone, tmp_path / "legs", ADAPTIVE), resume=True
        )
        monkeypatch.setattr(adaptive, "score_candidates", fake_scores("review {text}"))
        train(adaptive_config(tmp_path, tiny_backbone, tmp_path / "kept", ADAPTIVE))
    assert resumed.steps == 12

    log = events(tmp_path / "straight", "prompt_select")
    assert [(e["step"], e["switched"], e["chosen"]) for e in log] == [
        (4, True, "movie {text} !"),
        (8, False, "movie {text} !"),
        (12, False, "movie {text} !"),
    ]
    assert (
        log[0]["task"] == "sentiment"
        and log[0]["previous"] == "review {text}"
        and log[0]["metric"] == "accuracy"
    )
    assert log[0]["scores"] == [
        {"template": "review {text}", "score": 0.0},
        {"template": "film {text}", "score": 1.0},
        {"template": "movie {text} !", "score": 100.0},
    ]
    assert [e["switched"] for e in events(tmp_path / "kept", "prompt_select")] == [
        False,
        False,
        False,
    ]

    for bundle in ("best", "last"):
        info = Predictor.from_pretrained(tmp_path / "straight" / bundle).tasks["sentiment"]
        assert (info.prompt, info.pool) == ("movie {text} !", ["film {text}", "review {text}"]), (
            bundle
        )
    assert trainer_state(tmp_path / "straight")["trainer"]["prompts"]["active"] == {
        "sentiment": "movie {text} !"
    }

    # --resume continued under the chosen template: the same model, bit for bit.
    assert_same_tensors(
        load_tensors(tmp_path / "straight" / "last" / "model.safetensors"),
        load_tensors(tmp_path / "legs" / "last" / "model.safetensors"),
    )
    assert [e["switched"] for e in events(tmp_path / "legs", "prompt_select")] == [
        True,
        False,
        False,
    ]
    # And the switch changed what was trained on (steps 5-12 read the new template).
    a = load_tensors(tmp_path / "straight" / "last" / "model.safetensors")
    b = load_tensors(tmp_path / "kept" / "last" / "model.safetensors")
    assert any(not (a[k] == b[k]).all() for k in a)

    # The loaded bundle ensembles the top 2 of the ranking: the chosen template and the runner-up.
    predictor = Predictor.from_pretrained(tmp_path / "straight" / "last")
    texts = ["the movie was great", "the movie was awful"]
    got = predictor.predict("sentiment", texts)
    parts = [
        single(predictor, "sentiment", t).predict("sentiment", texts)
        for t in ("movie {text} !", "film {text}")
    ]
    for i, out in enumerate(got):
        mean = [(x + y) / 2 for x, y in zip(numbers(parts[0][i]), numbers(parts[1][i]))]
        assert numbers(out) == pytest.approx(mean, abs=1e-6)
    # The trained model itself, fed the chosen template by hand, agrees with the loaded bundle.
    from promptmux.data.encode import encode_examples
    from promptmux.eval.evaluator import run_task

    enc = encode_examples(
        [Example(f"movie {t} !") for t in texts], predictor.tokenizer, "classification", 32, 2
    )
    _, scores = run_task(
        straight.model, "sentiment", enc, predictor.pad_id, precision="fp32", with_scores=True
    )
    for s, out in zip(scores, parts[0]):
        assert numbers(out) == [round(p, 6) for p in s]


def test_adaptive_scores_are_real_dev_scores_and_the_best_wins(
    tmp_path, tiny_backbone, single_thread  # noqa: F811  (pytest fixture)
):
    from transformers import AutoTokenizer

    from promptmux.prompts.adaptive import score_candidates
    from promptmux.train.setup import prepare_data
    from promptmux.train.trainer import train

    hidden = " ".join(["the"] * 40) + " {text}"  # pushes the text past max_length: unsolvable
    prompt = {
        "template": "{text}",
        "pool": [hidden, "review {text}"],
        "adaptive": True,
        "adaptive_every": 2,
    }
    tasks = write_tasks(tmp_path, ["sentiment"], n_train=80, n_dev=24)
    tasks["sentiment"]["prompt"] = prompt
    cfg = config_from_dict(
        tiny_config(
            tiny_backbone, tasks, tmp_path / "run", train={"max_steps": 40, "eval_every": 20}
        ),
        base_dir=tmp_path,
    )
    result = train(cfg)
    log = events(tmp_path / "run", "prompt_select")
    assert [e["step"] for e in log] == [40]  # every 2nd evaluation: only the one at step 40
    scores = {s["template"]: s["score"] for s in log[0]["scores"]}
    assert scores[hidden] < max(scores.values())
    assert log[0]["chosen"] == max(scores, key=lambda t: (scores[t], t == "{text}"))
    # The logged scores are the final model's dev scores under each candidate.
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    data = prepare_data(cfg, tokenizer)
    again = score_candidates(
        result.model, data.tasks[0], ["{text}", hidden, "review {text}"], data, tokenizer, cfg
    )
    assert again == pytest.approx([scores["{text}"], scores[hidden], scores["review {text}"]])
    assert (
        Predictor.from_pretrained(tmp_path / "run" / "last").tasks["sentiment"].prompt
        == log[0]["chosen"]
    )
