"""Hard prompts: template rendering, validation, and their use in training and prediction."""

from __future__ import annotations

import pytest

from promptmux.config import config_from_dict
from promptmux.errors import ConfigError
from promptmux.prompts.templates import apply_template, check_template, render
from promptmux.tasks.spec import Example


def test_render_single_and_pair_templates():
    assert render("Topic of this article: {text}", "Rates rose.") == ("Topic of this article: Rates rose.", None)
    assert render("Premise: {text}{sep}Hypothesis: {text_b}", "A cat sat.", "An animal sat.") == (
        "Premise: A cat sat.", "Hypothesis: An animal sat.")
    assert render("{text} ? {text_b}", "a", "b") == ("a ? b", None)  # no {sep}: one segment
    assert render("{{literal}} {text}", "x") == ("{literal} x", None)


def test_apply_template_keeps_labels_and_is_identity_without_template():
    rows = [Example("good film", None, 1), Example("bad film", None, 0)]
    assert apply_template(None, rows) is rows
    out = apply_template("Review: {text}", rows)
    assert [e.text for e in out] == ["Review: good film", "Review: bad film"]
    assert [e.label for e in out] == [1, 0]


@pytest.mark.parametrize(
    ("template", "task_type", "pair", "problem"),
    [
        ("Review: {text}", "classification", False, None),
        ("P: {text}{sep}H: {text_b}", "classification", True, None),
        ("Review: {txt}", "classification", False, "unknown placeholder"),
        ("Review: {text", "classification", False, "malformed"),
        ("Review:", "classification", False, "must contain {text}"),
        ("P: {text}", "classification", True, "must contain {text_b}"),
        ("{text}{sep}{text_b}", "regression", False, "need a pair task"),
        ("{text}{sep}{text_b}{sep}", "classification", True, "once"),
        ("Tags: {text}", "token", False, "token tasks"),
    ],
)
def test_check_template(template, task_type, pair, problem):
    got = check_template(template, task_type, pair)
    if problem is None:
        assert got is None
    else:
        assert problem in got


def test_bad_template_is_a_config_error_naming_the_key():
    raw = {"tasks": {"sst2": {"type": "classification", "data": {"train": "x.csv"}, "prompt": {"template": "{sentence}"}}}}
    with pytest.raises(ConfigError, match=r"tasks\.sst2\.prompt\.template: unknown placeholder"):
        config_from_dict(raw)


def test_prompted_training_and_prediction_agree(tmp_path, tiny_backbone):
    """The bundle records the template and the Predictor applies it: loaded predictions equal the
    in-memory model's predictions on prompted inputs, and differ from unprompted inputs' encoding."""
    import json

    from conftest import sentiment_rows
    from promptmux.data.encode import encode_examples
    from promptmux.eval.evaluator import run_task
    from promptmux.serve.predictor import Predictor
    from promptmux.train.trainer import train

    path = tmp_path / "s.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in sentiment_rows(120)) + "\n")
    cfg = config_from_dict({
        "model": {"backbone": str(tiny_backbone), "max_length": 32},
        "tasks": {"s": {"type": "classification", "data": {"path": str(path)}, "prompt": {"template": "review : {text} !"}}},
        "train": {"max_steps": 20, "eval_every": 20, "batch_size": 8, "precision": "fp32", "progress": False},
        "output": {"dir": str(tmp_path / "run"), "tensorboard": False},
    })
    result = train(cfg)
    predictor = Predictor.from_pretrained(tmp_path / "run" / "last")
    assert predictor.tasks["s"].prompt == "review : {text} !"
    texts = ["the movie was good", "the movie was awful"]
    got = predictor.predict("s", texts)
    prompted = [Example(f"review : {t} !") for t in texts]
    enc = encode_examples(prompted, predictor.tokenizer, "classification", 32, 2)
    _, scores = run_task(result.model, "s", enc, predictor.pad_id, precision="fp32", with_scores=True)
    for g, s in zip(got, scores):
        assert g["score"] == pytest.approx(max(s), abs=1e-5)
    plain = encode_examples([Example(t) for t in texts], predictor.tokenizer, "classification", 32, 2)
    _, plain_scores = run_task(result.model, "s", plain, predictor.pad_id, precision="fp32", with_scores=True)
    assert plain_scores != scores
