"""Prompt search: keyword mining, information gain, candidates, the probe search and its CLI."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import single_thread, tiny_config, write_jsonl, write_tasks  # noqa: F401  (fixture)
from typer.testing import CliRunner

from promptmux.cli import app
from promptmux.config import config_from_dict, load_config
from promptmux.config.schema import TaskConfig
from promptmux.errors import ConfigError, DataError
from promptmux.prompts.candidates import build_candidates, keyword_templates, label_templates
from promptmux.prompts.information import entropy, information_gain, quantile_bins
from promptmux.prompts.keywords import Keyword, mine_keywords, words
from promptmux.prompts.search import carve_rows, choose, search_prompts
from promptmux.prompts.search_output import (
    check_out,
    format_table,
    summary,
    to_dict,
    write_search_config,
)
from promptmux.tasks.spec import Example

pytestmark = pytest.mark.usefixtures("single_thread")


# --- information gain -----------------------------------------------------------------------------


def test_entropy_and_information_gain_exact_on_hand_examples() -> None:
    assert entropy([5, 5]) == pytest.approx(1.0)
    assert entropy([4, 0]) == 0.0 and entropy([]) == 0.0
    gold = [0, 1, 0, 1, 0, 1, 0, 1]
    assert information_gain(gold, gold) == pytest.approx(1.0)  # H(Y) = 1 bit, perfect predictions
    assert information_gain(gold, [1 - g for g in gold]) == pytest.approx(
        1.0
    )  # a relabelling loses nothing
    assert information_gain(gold, [0] * 8) == 0.0  # a constant prediction says nothing
    assert information_gain([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(
        0.0, abs=1e-12
    )  # independent
    # gold 0,0,1,1 / pred 0,0,0,1: IG = 1 - 3/4 * H(2/3, 1/3)
    h = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert information_gain([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(1 - 0.75 * h)
    rng = np.random.default_rng(0)
    y, noise = rng.integers(0, 2, 20000), rng.integers(0, 2, 20000)
    assert information_gain(y, noise) < 0.001  # random predictions: about 0
    with pytest.raises(ValueError, match="pair up"):
        information_gain([0, 1], [0])
    assert quantile_bins([1, 2, 3, 4], [0.5, 2.5, 9], 2).tolist() == [0, 1, 1]


# --- keywords -----------------------------------------------------------------------------------


def test_keywords_find_the_words_that_carry_the_label() -> None:
    texts = [
        "the movie was great",
        "a great film",
        "great acting and the movie",
        "truly great plot",
        "the movie was awful",
        "an awful film",
        "awful acting in the movie",
        "truly awful plot",
    ]
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    found = mine_keywords(texts, labels, 2, top_k=3, min_count=2)
    assert found[1][0] == Keyword("great", 1, pytest.approx(1.0), 4)
    assert found[0][0] == Keyword("awful", 0, pytest.approx(1.0), 4)
    # Words in both classes alike carry no information; stopwords and short words are dropped.
    mined = {k.word for ws in found.values() for k in ws}
    assert not mined & {"movie", "film", "acting", "plot", "the", "was", "an"}
    assert words("It's the BEST film, isn't it? 10/10 ok") == {"best", "film"}
    # Rare words are dropped (min_count), and bad inputs are named.
    assert mine_keywords(texts, labels, 2, min_count=5) == {0: [], 1: []}
    with pytest.raises(ValueError, match="pair up"):
        mine_keywords(texts, labels[:3], 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        mine_keywords(texts, [2] * 8, 2)


# --- candidates ---------------------------------------------------------------------------------


def _task(**extra) -> TaskConfig:
    return TaskConfig.model_validate(
        {"type": "classification", "data": {"train": "x.jsonl"}, **extra}
    )


def test_candidates_order_sources_and_pair_templates() -> None:
    kw = {
        0: [Keyword("awful", 0, 0.5, 9), Keyword("bad", 0, 0.4, 9)],
        1: [Keyword("great", 1, 0.5, 9)],
    }
    assert keyword_templates(kw, pair=False)[0] == "{text} (awful or great?)"
    assert keyword_templates(kw, pair=True)[1] == "Awful or great? {text}{sep}{text_b}"
    assert "Related words: awful, great, bad." in keyword_templates(kw, pair=False)[2]
    assert (
        keyword_templates({0: kw[0], 1: []}, pair=False) == []
    )  # one label named: no choice to offer
    assert (
        label_templates(["World", "Sci/Tech", "not_entailment"], False)[0]
        == "{text} (World, Sci/Tech or not entailment?)"
    )
    assert label_templates(["0", "1"], False) == []
    task = _task(prompt={"template": "Review: {text}", "pool": ["Film: {text}", "Review: {text}"]})
    found = build_candidates("sst2", task, kw, ["neg", "pos"], max_candidates=50)
    templates = [c.template for c in found]
    assert [c.source for c in found[:3]] == ["current", "plain", "pool"]
    assert len(templates) == len(
        set(templates)
    )  # the pool's repeat of the current template is gone
    assert {"keywords", "labels", "generic"} <= {c.source for c in found}
    assert [c.template for c in build_candidates("sst2", task, kw, None, 4)] == templates[:4]
    pair = build_candidates("p", _task(fields={"text_b": "h"}), kw, None, 50)
    assert pair[0].template == "{text}{sep}{text_b}" and all("{text_b}" in c.template for c in pair)
    with pytest.raises(ConfigError, match=r"tasks\.sst2\.prompt\.pool\[0\]: .*\{text\}"):
        build_candidates("sst2", _task(prompt={"pool": ["no placeholder"]}), kw, None, 5)
    with pytest.raises(ConfigError, match="max-candidates"):
        build_candidates("sst2", task, kw, None, 0)


def test_choose_and_carve_rows() -> None:
    assert choose([50.0, 70.0, 70.0, 60.0]) == 1  # the earliest of a tie
    rows = [Example(f"text {i}", None, i % 2) for i in range(90)]
    probe, select, kw_rows = carve_rows(rows, 1000, 40, seed=3, task="t")
    assert (
        len(select) == 30 and len(probe) == 40 and len(kw_rows) == 60
    )  # selection <= a third of train
    assert not {e.text for e in select} & {e.text for e in kw_rows}
    assert carve_rows(rows, 1000, 40, seed=3, task="t") == (probe, select, kw_rows)  # seeded
    with pytest.raises(DataError, match=r"tasks\.t \(train\): 20 rows"):
        carve_rows(rows[:20], 1000, 40, seed=3, task="t")


# --- the search, end to end on the tiny model ----------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path) -> Path:
    folder = tmp_path_factory.mktemp("search")
    tasks = write_tasks(
        folder, ["sentiment", "pair", "score", "topics", "ner"], n_train=150, n_dev=40
    )
    write_jsonl(
        folder / "few" / "train.jsonl", [{"text": f"good {i}", "label": i % 2} for i in range(12)]
    )
    tasks["few"] = {"type": "classification", "data": {"train": "few/train.jsonl"}}
    tasks["sentiment"]["prompt"] = {"template": "Review: {text}", "pool": ["Opinion: {text}"]}
    cfg = tiny_config(tiny_backbone, tasks, folder / "runs")
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return folder


@pytest.mark.parametrize("task", ["sentiment", "pair", "score", "topics"])
def test_search_scores_every_candidate_and_chooses_the_best_on_selection(
    workdir: Path, task: str
) -> None:
    cfg = load_config(workdir / "config.yaml")
    result = search_prompts(cfg, task, train_rows=80, select_rows=40, max_candidates=5)
    assert len(result.results) == 5 and result.sizes["select"] == 40 and result.sizes["dev"] == 40
    sel = [r.select.metrics[result.metric] for r in result.results]
    assert result.chosen == int(np.argmax(sel)) and sel[result.chosen] == max(sel)
    for r in result.results:
        assert (
            0.0 <= r.select.gain <= r.select.entropy + 1e-9
            and 0.0 <= r.dev.gain <= r.dev.entropy + 1e-9
        )
        assert (r.dev.accuracy is None) == (task == "score")
    table = format_table(result)
    assert all(repr(r.template) in table for r in result.results)
    s = summary(result)
    assert s["median_dev"] == pytest.approx(float(np.median(result.dev_scores())))
    assert s["chosen_minus_median_dev"] == pytest.approx(s["chosen_dev"] - s["median_dev"])
    json.dumps(to_dict(result))  # the report is plain JSON


def test_search_learns_the_sentiment_signal_and_is_deterministic(workdir: Path) -> None:
    cfg = load_config(workdir / "config.yaml")
    a = search_prompts(cfg, "sentiment", train_rows=100, select_rows=50, max_candidates=3)
    b = search_prompts(cfg, "sentiment", train_rows=100, select_rows=50, max_candidates=3)
    assert [r.select.metrics for r in a.results] == [r.select.metrics for r in b.results]
    assert [c.template for c in (r.candidate for r in a.results)] == [
        "Review: {text}",
        "{text}",
        "Opinion: {text}",
    ]
    # The label follows one sentiment word: the keywords are those words, and the probe reads it.
    assert {k.word for k in a.keywords["positive"]} <= {"good", "great", "fun", "love", "best"}
    assert {k.word for k in a.keywords["negative"]} <= {"bad", "awful", "boring", "hate", "worst"}
    assert a.keywords["positive"] and a.keywords["negative"]
    assert max(r.dev.metrics["accuracy"] for r in a.results) > 65.0
    assert max(r.dev.gain for r in a.results) > 0.1


def test_written_config_has_the_chosen_template_and_the_others_in_the_pool(
    workdir: Path, tmp_path: Path
) -> None:
    config = workdir / "config.yaml"
    cfg = load_config(config, ["train.lr=1e-3"])
    result = search_prompts(cfg, "sentiment", train_rows=80, select_rows=40, max_candidates=4)
    for out in (workdir / "chosen-here.yaml", tmp_path / "elsewhere" / "chosen.yaml"):
        written = write_search_config(config, ["train.lr=1e-3"], cfg, result, out)
        again = load_config(out)
        prompt = again.tasks["sentiment"].prompt
        assert prompt.template == result.best.template == written.tasks["sentiment"].prompt.template
        assert set(prompt.pool) == {r.template for r in result.results} - {result.best.template}
        assert again.train.lr == 1e-3  # the overrides are part of the copy
        assert (
            again.tasks["sentiment"].data.train == cfg.tasks["sentiment"].data.train
        )  # paths still resolve
    assert (
        yaml.safe_load(config.read_text())["tasks"]["sentiment"]["prompt"]["template"]
        == "Review: {text}"
    )


def test_cli_prints_the_table_writes_config_and_report(workdir: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "chosen.yaml", tmp_path / "report"
    args = [
        "prompts",
        "search",
        str(workdir / "config.yaml"),
        "tasks.pair.metric=f1",
        "--task",
        "pair",
        "--out",
        str(out),
        "--train-rows",
        "60",
        "--select-rows",
        "30",
        "--max-candidates",
        "3",
        "--report",
        str(report),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # The main metric (overridden to F1) is the selection criterion; accuracy gets its own column.
    assert all(
        h in result.stdout
        for h in ("select f1", "select acc", "select IG (bits)", "dev f1", "dev acc")
    )
    assert "vs median candidate" in result.stdout and str(out) in result.stdout
    data = json.loads((report / "prompt_search_pair.json").read_text())
    assert len(data["candidates"]) == 3 and data["command"].startswith("promptmux prompts search")
    chosen = [c for c in data["candidates"] if c["chosen"]]
    assert (
        len(chosen) == 1 and load_config(out).tasks["pair"].prompt.template == chosen[0]["template"]
    )
    assert chosen[0]["select"]["metric"] == max(c["select"]["metric"] for c in data["candidates"])
    assert load_config(out).tasks["pair"].metric == "f1"
    assert "| * |" in (report / "prompt_search_pair.md").read_text()
    # An existing --out is refused (before any scoring), unless --overwrite.
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and isinstance(again.exception, ConfigError)
    assert "--overwrite" in str(again.exception)


def test_error_paths_name_what_is_wrong(workdir: Path) -> None:
    config = workdir / "config.yaml"
    cfg = load_config(config)
    with pytest.raises(ConfigError, match=r"no task 'nope'.*known: .*sentiment"):
        search_prompts(cfg, "nope")
    with pytest.raises(ConfigError, match=r"tasks\.ner: .*token tasks"):
        search_prompts(cfg, "ner")
    with pytest.raises(DataError, match=r"tasks\.few \(train\): \d+ rows"):
        search_prompts(cfg, "few")
    with pytest.raises(ConfigError, match="input config"):
        check_out(config, config, overwrite=True)
    result = CliRunner().invoke(app, ["prompts", "search", str(config), "--task", "ner"])
    assert result.exit_code != 0 and "token tasks" in str(result.exception)


def test_no_dev_split_is_an_error(workdir: Path, tiny_backbone: Path) -> None:
    rows = [
        {"text": random.Random(i).choice(["good", "bad"]) + " film", "label": i % 2}
        for i in range(60)
    ]
    write_jsonl(workdir / "nodev" / "all.jsonl", rows)
    raw = tiny_config(
        tiny_backbone,
        {
            "t": {
                "type": "classification",
                "data": {"path": "nodev/all.jsonl", "split": {"dev_fraction": 0.0}},
            }
        },
        workdir / "runs",
    )
    cfg = config_from_dict(raw, base_dir=workdir)
    with pytest.raises(DataError, match=r"tasks\.t \(dev\): no dev rows"):
        search_prompts(cfg, "t")
