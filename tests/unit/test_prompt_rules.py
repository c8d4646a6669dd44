"""Prompt rules: conditions, per-example template choice, config errors, metadata, and the same
prompts in training, evaluation, the Predictor, the HTTP path and file prediction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import single_thread, tiny_config, write_jsonl, write_tasks  # noqa: F401  (fixture)

from promptmux.config import config_from_dict
from promptmux.errors import ConfigError
from promptmux.prompts.rules import (
    apply_prompts,
    choose_template,
    is_question,
    matches,
    meta_fields,
    prompt_for,
)
from promptmux.tasks.spec import Example

RULES = [
    {"when": {"question": True}, "template": "asked {text}"},
    {"when": {"field": "source", "equals": "web"}, "template": "web {text}"},
    {"when": {"max_words": 4}, "template": "short {text}"},
]


def expected_template(text: str, source: Any) -> str:
    """What RULES should pick, written out independently of promptmux.prompts.rules."""
    first = text.split()[0].lower()
    if "?" in text or first in {"is", "was", "what", "how", "why", "do", "does", "can"}:
        return "asked {text}"
    if source is not None and str(source) == "web":
        return "web {text}"
    if len(text.split()) <= 4:
        return "short {text}"
    return "review {text}"


@pytest.mark.parametrize(
    ("text", "question"),
    [
        ("was the movie good", True),
        ("the movie was good ?", True),
        ("How long is it", True),
        ('"Why not," she said.', True),
        ("the movie was good", False),
        ("this is fun", False),
        ("", False),
    ],
)
def test_is_question(text, question):
    assert is_question(text) is question


def test_conditions_and_first_matching_rule_wins():
    web_long = Example("the movie was really very good", meta={"source": "web"})
    assert matches({"min_words": 6}, web_long) and not matches({"min_words": 7}, web_long)
    assert matches({"max_words": 6}, web_long) and not matches({"max_words": 5}, web_long)
    assert matches({"question": False}, web_long) and not matches({"question": True}, web_long)
    assert matches({"field": "source", "in": ["news", "web"]}, web_long)
    assert not matches({"field": "source", "equals": "news"}, web_long)
    assert not matches({"field": "lang", "equals": "en"}, web_long)  # absent field: no match
    typed = Example("x", meta={"stars": 5, "verified": True, "ratio": 1.0})
    assert matches({"field": "stars", "equals": "5"}, typed)  # compared as text
    assert matches({"field": "verified", "equals": "TRUE"}, typed)
    assert matches({"field": "ratio", "equals": 1}, typed)
    assert matches({}, Example("anything"))  # no condition: always
    # Several conditions: all must hold.
    assert not matches(
        {"min_words": 2, "field": "source", "equals": "web"},
        Example("a b", meta={"source": "news"}),
    )

    assert choose_template(Example("is it good"), "review {text}", RULES) == "asked {text}"
    assert (
        choose_template(Example("is it good", meta={"source": "web"}), "review {text}", RULES)
        == "asked {text}"
    )
    assert (
        choose_template(
            Example("the film was good", meta={"source": "web"}), "review {text}", RULES
        )
        == "web {text}"
    )
    assert choose_template(Example("the film was good"), "review {text}", RULES) == "short {text}"
    assert (
        choose_template(Example("the film was very good"), "review {text}", RULES)
        == "review {text}"
    )
    assert choose_template(Example("the film was very good"), None, RULES) is None

    got = prompt_for(
        Example("the film", "was good", 1, {"source": "web"}),
        "{text}{sep}{text_b}",
        [
            {
                "when": {"field": "source", "equals": "web"},
                "template": "site {text}{sep}then {text_b}",
            }
        ],
    )
    assert (got.text, got.text_b, got.label) == ("site the film", "then was good", 1)
    rows = [Example("a b c d e f"), Example("is it?")]
    assert [e.text for e in apply_prompts(rows, "review {text}", RULES)] == [
        "review a b c d e f",
        "asked is it?",
    ]
    assert apply_prompts(rows, None) is rows
    assert meta_fields(
        RULES + [{"when": {"field": "lang", "in": ["en"]}, "template": "{text}"}]
    ) == ("source", "lang")


def _raw(prompt: dict[str, Any], task: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {
        "type": "classification",
        "data": {"train": "x.jsonl"},
        "prompt": prompt,
        **(task or {}),
    }
    return {"tasks": {"sst2": spec}}


@pytest.mark.parametrize(
    ("prompt", "task", "key", "message"),
    [
        (
            {"rules": [RULES[0], {"when": {"max_words": "ten"}, "template": "{text}"}]},
            None,
            r"tasks\.sst2\.prompt\.rules\[1\]\.when\.max_words: expected a whole number",
            None,
        ),
        (
            {"rules": [{"when": {"max_words": -1}, "template": "{text}"}]},
            None,
            r"rules\[0\]\.when\.max_words: expected a whole number",
            None,
        ),
        (
            {"rules": [{"when": {"lenght": 3}, "template": "{text}"}]},
            None,
            r"rules\[0\]\.when\.lenght: unknown condition",
            "min_words",
        ),
        (
            {"rules": [{"when": {"question": "yes"}, "template": "{text}"}]},
            None,
            r"rules\[0\]\.when\.question: expected true or false",
            None,
        ),
        (
            {"rules": [{"when": {"min_words": 5, "max_words": 2}, "template": "{text}"}]},
            None,
            r"rules\[0\]\.when\.max_words: 2 is below",
            None,
        ),
        (
            {"rules": [{"when": {"field": "source"}, "template": "{text}"}]},
            None,
            r"rules\[0\]\.when\.field: give exactly one of",
            None,
        ),
        (
            {"rules": [{"when": {"equals": "web"}, "template": "{text}"}]},
            None,
            r"rules\[0\]\.when\.equals: compares a metadata field",
            None,
        ),
        (
            {"rules": [{"when": {"field": "s", "equals": "a", "in": ["b"]}, "template": "{text}"}]},
            None,
            r"rules\[0\]\.when\.field: give exactly one",
            None,
        ),
        (
            {"rules": [{"when": {"field": "s", "in": []}, "template": "{text}"}]},
            None,
            r"rules\[0\]\.when\.in: expected a non-empty list",
            None,
        ),
        (
            {"rules": [{"when": {"field": "s", "equals": ["a"]}, "template": "{text}"}]},
            None,
            r"rules\[0\]\.when\.equals: expected a text",
            None,
        ),
        (
            {"rules": [{"when": {"question": True}, "template": "Q: {sentence}"}]},
            None,
            r"rules\[0\]\.template: unknown placeholder",
            None,
        ),
        ({"pool": ["A {text}", "B {txt}"]}, None, r"prompt\.pool\[1\]: unknown placeholder", None),
        (
            {"template": "A {text}", "pool": ["B {text}", "A {text}"]},
            None,
            r"prompt\.pool\[1\]: repeats template",
            None,
        ),
        (
            {"template": "A {text}", "pool": ["B {text}"], "ensemble": 3},
            None,
            r"prompt\.ensemble: 3 prompts asked, but the task has 2",
            None,
        ),
        (
            {"pool": ["B {text}"], "adaptive": True, "adaptive_every": 0},
            None,
            r"adaptive_every",
            None,
        ),
        ({"adaptive": True}, None, r"prompt\.adaptive: needs candidate templates", None),
        (
            {"rules": [{"when": {}, "template": "{text}"}]},
            {"type": "token"},
            r"prompt\.rules: token tasks",
            None,
        ),
        (
            {"ensemble": 2, "pool": ["{text}"]},
            {"type": "token"},
            r"prompt\.pool: token tasks",
            None,
        ),
        (
            {"rules": [{"when": {"question": True}, "template": "{text}"}]},
            {"fields": {"text_b": "h"}},
            r"rules\[0\]\.template: this task reads text pairs",
            None,
        ),
    ],
)
def test_bad_prompt_configs_name_the_key(prompt, task, key, message):
    with pytest.raises(ConfigError, match=key) as info:
        config_from_dict(_raw(prompt, task))
    if message:
        assert message in str(info.value)


def test_token_task_refuses_an_ensemble():
    with pytest.raises(ConfigError, match=r"tasks\.sst2\.prompt\.ensemble: token tasks"):
        config_from_dict(_raw({"ensemble": 2}, {"type": "token"}))


def test_rows_keep_only_the_metadata_fields_rules_read(tmp_path):
    from promptmux.tasks.build import load_task

    rows = [
        {
            "text": f"the movie {i}",
            "label": i % 2,
            "source": "web" if i % 3 else "news",
            "other": "x" * 100,
        }
        for i in range(12)
    ]
    write_jsonl(tmp_path / "t.jsonl", rows)
    ruled = config_from_dict(
        {
            "tasks": {
                "t": {
                    "type": "classification",
                    "data": {"train": str(tmp_path / "t.jsonl")},
                    "prompt": {"rules": [RULES[1]]},
                }
            }
        }
    )
    data = load_task("t", ruled.tasks["t"])
    source = {r["text"]: r["source"] for r in rows}
    kept = data.split("train") + data.split("dev")
    assert len(kept) == 12 and all(ex.meta == {"source": source[ex.text]} for ex in kept)
    plain = config_from_dict(
        {"tasks": {"t": {"type": "classification", "data": {"train": str(tmp_path / "t.jsonl")}}}}
    )
    assert all(ex.meta is None for ex in load_task("t", plain.tasks["t"]).split("train"))


def test_a_rule_on_a_field_no_row_has_is_an_error(tmp_path, tiny_backbone):
    from transformers import AutoTokenizer

    from promptmux.train.setup import prepare_data

    tasks = write_tasks(tmp_path, ["sentiment"], n_train=20, n_dev=4)
    tasks["sentiment"]["prompt"] = {
        "rules": [{"when": {"field": "sorce", "equals": "web"}, "template": "w {text}"}]
    }
    cfg = config_from_dict(tiny_config(tiny_backbone, tasks, tmp_path / "run"), base_dir=tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"tasks\.sentiment\.prompt\.rules\[0\]\.when\.field: no train row has a field 'sor",
    ):
        prepare_data(cfg, AutoTokenizer.from_pretrained(tiny_backbone))


# ---------------------------------------------------------------- train -> bundle -> predict


def sentiment_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Sentiment rows with a `source` field and some questions, so every rule fires."""
    import random

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = rng.random() < 0.5
        word = rng.choice(["good", "great", "fun"] if positive else ["bad", "awful", "boring"])
        kind = i % 4
        if kind == 0:
            text = f"was the movie {word}"
        elif kind == 1:
            text = f"the movie was {word}"
        else:
            text = " ".join(
                ["the", "movie", "was", word, *rng.sample(["a", "very", "really", "it", "this"], 3)]
            )
        rows.append(
            {
                "text": text,
                "label": "pos" if positive else "neg",
                "source": rng.choice(["web", "news"]),
            }
        )
    return rows


@pytest.fixture(scope="module")
def ruled_run(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory, single_thread: None):  # noqa: F811  (pytest fixture)
    """A mixed-task run: rules on a text task and on a pair task, none on a token task."""
    from promptmux.train.trainer import train

    folder = tmp_path_factory.mktemp("rules")
    tasks = write_tasks(folder, ["pair", "ner"], n_train=60, n_dev=12)
    write_jsonl(folder / "sentiment" / "train.jsonl", sentiment_rows(80, 1))
    write_jsonl(folder / "sentiment" / "dev.jsonl", sentiment_rows(16, 2))
    tasks["sentiment"] = {
        "type": "classification",
        "data": {"train": "sentiment/train.jsonl", "dev": "sentiment/dev.jsonl"},
        "prompt": {"template": "review {text}", "rules": RULES},
    }
    tasks["pair"]["prompt"] = {
        "template": "{text}{sep}{text_b}",
        "rules": [{"when": {"min_words": 4}, "template": "long {text}{sep}then {text_b}"}],
    }
    raw = tiny_config(
        tiny_backbone, tasks, folder / "run", train={"max_steps": 20, "eval_every": 20}
    )
    cfg = config_from_dict(raw, base_dir=folder)
    result = train(cfg)
    return folder, result


def test_rules_survive_the_bundle_and_predictions_match_the_trained_model(ruled_run):
    from promptmux.data.encode import encode_examples
    from promptmux.eval.evaluator import run_task
    from promptmux.serve.predictor import Predictor

    folder, result = ruled_run
    meta = json.loads((folder / "run" / "last" / "bundle.json").read_text())
    by_name = {t["name"]: t for t in meta["tasks"]}
    assert (
        by_name["sentiment"]["rules"] == RULES and by_name["sentiment"]["prompt"] == "review {text}"
    )
    assert by_name["ner"]["rules"] is None

    predictor = Predictor.from_pretrained(folder / "run" / "last")
    texts = [
        "is the movie good",
        "the movie was awful",
        "the movie was fun really very a",
        "the movie was bad really it this",
    ]
    sources = [None, "news", "web", "news"]
    got = predictor.predict(
        "sentiment",
        texts,
        meta=[None if s is None else {"source": s, "unused": 1} for s in sources],
    )
    templates = [expected_template(t, s) for t, s in zip(texts, sources)]
    assert templates == [
        "asked {text}",
        "short {text}",
        "web {text}",
        "review {text}",
    ]  # every branch taken
    prompted = [Example(tpl.format(text=t)) for tpl, t in zip(templates, texts)]
    enc = encode_examples(prompted, predictor.tokenizer, "classification", 32, 2)
    _, scores = run_task(
        result.model, "sentiment", enc, predictor.pad_id, precision="fp32", with_scores=True
    )
    for g, s in zip(got, scores):
        assert list(g["probabilities"].values()) == pytest.approx(s, abs=1e-5)
    # Metadata matters: the same text from "web" reads differently.
    assert (
        predictor.predict("sentiment", texts[3], meta={"source": "web"})[0]["probabilities"]
        != got[3]["probabilities"]
    )


def test_mixed_task_batches_http_and_file_prediction_apply_the_same_rules(ruled_run, tmp_path):
    from serve_support import client_for, post, run

    from promptmux.serve.batch import predict_file
    from promptmux.serve.mixed import predict_mixed
    from promptmux.serve.predictor import Predictor

    folder, _ = ruled_run
    predictor = Predictor.from_pretrained(folder / "run" / "last")
    items = [
        ("sentiment", "was it good", {"source": "news"}),
        ("ner", "john works in paris", None),
        ("pair", ("the film was very long", "it was awful"), None),
        ("sentiment", "the movie was bad really it", {"source": "web"}),
        ("pair", ("the film", "it was good"), None),
        ("sentiment", "the movie was bad really it", {"source": "news"}),
    ]
    one_by_one = [predictor.predict(t, [x], meta=[m])[0] for t, x, m in items]
    mixed = predict_mixed(predictor, [(t, predictor.example(t, x, m)) for t, x, m in items])
    for a, b in zip(mixed, one_by_one):
        if "probabilities" in b:
            assert list(a["probabilities"].values()) == pytest.approx(
                list(b["probabilities"].values()), abs=1e-5
            )
        else:
            assert a == b

    body = {
        "items": [
            {
                "task": t,
                **({"text_a": x[0], "text_b": x[1]} if isinstance(x, tuple) else {"text": x}),
                **({"meta": m} if m else {}),
            }
            for t, x, m in items
        ],
        "return_probabilities": True,
    }

    async def go():
        async with client_for(predictor) as client:
            return (await post(client, body)).json(), (await client.get("/v1/tasks")).json()

    answer, listing = run(go())
    for result, expected in zip(answer["results"], one_by_one):
        if "probabilities" in expected:
            assert list(result["probabilities"].values()) == pytest.approx(
                list(expected["probabilities"].values()), abs=1e-4
            )
    described = {t["name"]: t["prompt"] for t in listing["tasks"]}
    assert (
        described["sentiment"]["rules"] == RULES
        and described["sentiment"]["template"] == "review {text}"
    )

    rows = [{"text": x, "source": m["source"]} for t, x, m in items if t == "sentiment"]
    write_jsonl(tmp_path / "in.jsonl", rows)
    predict_file(predictor, "sentiment", tmp_path / "in.jsonl", tmp_path / "out.jsonl")
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    expected = [o for (t, _, _), o in zip(items, one_by_one) if t == "sentiment"]
    for w, e in zip(written, expected):
        assert list(w["probabilities"].values()) == pytest.approx(
            list(e["probabilities"].values()), abs=1e-5
        )
    assert written[1]["probabilities"] != written[2]["probabilities"]  # same text, different source


def test_promptmux_eval_scores_the_bundle_as_training_evaluated_it(ruled_run):
    from promptmux.eval.report import evaluate_bundle

    folder, result = ruled_run
    report = evaluate_bundle(folder / "run" / "last", "dev", report_dir=folder / "reports")
    for task, metrics in result.last_metrics.items():
        assert report["metrics"][task] == pytest.approx(metrics, abs=1e-6), task
