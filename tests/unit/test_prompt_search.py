"""Prompt search: keyword mining, information gain, candidates, the probe search and its CLI."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import (  # noqa: F401  (single_thread is a fixture)
    sentiment,
    single_thread,
    tiny_config,
    write_jsonl,
    write_tasks,
)
from typer.testing import CliRunner

from promptmux.cli import app
from promptmux.config import config_from_dict, load_config
from promptmux.config.schema import TaskConfig
from promptmux.errors import ConfigError, DataError
from promptmux.prompts.candidates import build_candidates, keyword_templates, label_templates
from promptmux.prompts.cv import (
    PairedGap,
    check_cv_rows,
    check_folds,
    cross_val_predict,
    fold_ids,
    median_members,
    paired_gaps,
    row_values,
    runner_up,
)
from promptmux.prompts.information import entropy, information_gain, quantile_bins
from promptmux.prompts.keywords import Keyword, mine_keywords, words
from promptmux.prompts.probe import fit_probe, predict
from promptmux.prompts.search import MIN_KEYWORD_ROWS, carve_rows, choose, search_prompts
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
    cv_rows, kw_rows = carve_rows(rows, 40, seed=3)
    # Few rows left over: keywords come from all of train (not leakage: see carve_rows).
    assert len(cv_rows) == 40 and kw_rows == rows
    assert carve_rows(rows, 40, seed=3) == (cv_rows, kw_rows)  # seeded
    assert carve_rows(rows, 40, seed=4)[0] != cv_rows
    assert carve_rows(rows, 10_000, seed=3)[0] == rows  # all of train when it is smaller
    big = [Example(f"text {i}", None, i % 2) for i in range(MIN_KEYWORD_ROWS + 300)]
    cv_rows, kw_rows = carve_rows(big, 300, seed=3)
    # Enough left over: keyword rows are disjoint from the CV rows, and together they are train.
    assert len(kw_rows) == MIN_KEYWORD_ROWS
    assert {e.text for e in cv_rows}.isdisjoint(e.text for e in kw_rows)
    with pytest.raises(ConfigError, match="--train-rows must be >= 1, got 0"):
        carve_rows(rows, 0, seed=3)


# --- cross-validation and paired standard errors --------------------------------------------------


def test_folds_cover_every_row_exactly_once_stratified_and_seeded() -> None:
    y = np.asarray([0] * 37 + [1] * 13 + [2] * 25)
    folds = fold_ids(y, "classification", 5, seed=0)
    assert folds.shape == y.shape and set(folds.tolist()) == set(range(5))  # one fold per row
    assert sum((folds == k).sum() for k in range(5)) == len(y)
    for label in range(3):  # stratified: each label spread evenly over the folds
        per_fold = np.bincount(folds[y == label], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1
    assert np.array_equal(folds, fold_ids(y, "classification", 5, seed=0))
    assert not np.array_equal(folds, fold_ids(y, "classification", 5, seed=1))
    reg = fold_ids(np.linspace(0, 1, 23), "regression", 4, seed=0)
    assert sorted(np.bincount(reg).tolist()) == [5, 6, 6, 6]
    assert not np.array_equal(reg, np.sort(reg))  # shuffled, not contiguous blocks
    for bad in (1, 0, -3, True, 2.5):
        with pytest.raises(ConfigError, match="--folds must be an integer >= 2"):
            check_folds(bad)  # type: ignore[arg-type]


def test_cv_row_checks_name_the_task_and_counts() -> None:
    check_cv_rows(np.asarray([0, 1] * 25), "classification", 5, "t", ["neg", "pos"])
    with pytest.raises(
        DataError, match=r"tasks\.t \(train\): 40 rows .*--folds 5 needs at least 50"
    ):
        check_cv_rows(np.asarray([0, 1] * 20), "classification", 5, "t", ["neg", "pos"])
    with pytest.raises(DataError, match=r"tasks\.t \(train\): .*label\(s\) 'pos' 3 .*--folds 5"):
        check_cv_rows(np.asarray([0] * 57 + [1] * 3), "classification", 5, "t", ["neg", "pos"])
    with pytest.raises(DataError, match=r"tasks\.t \(train\): all 60 rows .*one label"):
        check_cv_rows(np.zeros(60, dtype=np.int64), "classification", 5, "t", ["neg", "pos"])
    check_cv_rows(np.linspace(0, 1, 60), "regression", 5, "t", None)  # no label counts to check


def test_out_of_fold_predictions_never_come_from_a_probe_that_saw_the_row() -> None:
    # Noise features with far more dimensions than rows: a probe memorises the rows it is fitted on
    # (about 100% on them) and is at chance on the others. Out-of-fold accuracy must be the latter.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(80, 400)).astype(np.float32), rng.integers(0, 2, 80)
    in_sample = (predict(fit_probe("classification", x, y, 0), x) == y).mean()
    folds = fold_ids(y, "classification", 4, seed=0)
    oof = cross_val_predict("classification", x, y, folds, seed=0)
    assert in_sample == 1.0 and (oof == y).mean() < 0.75
    # Each fold's rows are predicted by the probe fitted on the other folds.
    held = folds == 2
    alone = predict(fit_probe("classification", x[~held], y[~held], 0), x[held])
    assert np.array_equal(oof[held], alone)
    reg = cross_val_predict("regression", x, rng.normal(size=80), folds, seed=0)
    assert reg.dtype.kind == "f" and reg.shape == (80,)  # values, not rounded to ids


def test_row_values_are_jackknife_values_and_accuracy_values_are_correctness() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    pred = np.where(rng.random(60) < 0.7, y, 1 - y)
    acc = row_values("classification", "accuracy", pred, y, ["a", "b"])
    assert acc is not None and np.allclose(acc, 100.0 * (pred == y))
    f1 = row_values("classification", "f1", pred, y, ["a", "b"])
    from promptmux.eval.metrics import compute_metrics

    full = compute_metrics("classification", pred.tolist(), y.tolist())["f1"]
    for i in (0, 7, 33):  # brute-force delete-one values on a few rows
        keep = np.arange(60) != i
        rest = compute_metrics("classification", pred[keep].tolist(), y[keep].tolist())["f1"]
        assert f1[i] == pytest.approx(60 * full - 59 * rest)
    assert row_values("regression", "pearson", pred.astype(float), y.astype(float), None) is None


def test_paired_gaps_over_runner_up_and_median() -> None:
    assert runner_up([70.0, 80.0, 75.0, 60.0], 1) == 2 and runner_up([5.0], 0) is None
    assert median_members([70.0, 80.0, 75.0, 60.0]) == [0, 2]  # 72.5 = mean of 70 and 75
    assert median_members([3.0, 1.0, 2.0]) == [2]
    rng = np.random.default_rng(2)
    values = [100.0 * (rng.random(200) < p) for p in (0.6, 0.7, 0.65, 0.5)]
    scores = [float(v.mean()) for v in values]
    gaps = paired_gaps(scores, values, chosen=1)
    diff_ru = values[1] - values[2]
    assert gaps["runner_up"].gap == pytest.approx(scores[1] - scores[2])
    assert gaps["runner_up"].se == pytest.approx(diff_ru.std(ddof=1) / np.sqrt(200))
    diff_med = values[1] - (values[0] + values[2]) / 2
    assert gaps["median"].gap == pytest.approx(scores[1] - float(np.median(scores)))
    assert gaps["median"].gap == pytest.approx(diff_med.mean())
    assert gaps["median"].se == pytest.approx(diff_med.std(ddof=1) / np.sqrt(200))
    # Identical rows in both candidates: the difference has no noise.
    assert paired_gaps([1.0, 1.0], [values[0], values[0]], 0)["runner_up"] == PairedGap(0.0, 0.0)
    plain = paired_gaps([0.3, 0.5], [None, None], 1)
    assert plain["runner_up"].se is None and plain["median"].gap == pytest.approx(0.1)
    assert "runner_up" not in paired_gaps([0.4], [None], 0)


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
    # Dev labels are the opposite of train's: a choice made on dev would differ from one on CV.
    write_jsonl(folder / "flipped" / "train.jsonl", sentiment(150, seed=7))
    flip = {"positive": "negative", "negative": "positive"}
    dev = [{**r, "label": flip[r["label"]]} for r in sentiment(60, seed=8)]
    write_jsonl(folder / "flipped" / "dev.jsonl", dev)
    tasks["flipped"] = {
        "type": "classification",
        "data": {"train": "flipped/train.jsonl", "dev": "flipped/dev.jsonl"},
    }
    # 57 rows of one label and 3 of the other: too few for 5 stratified folds.
    rare = [{"text": f"good {i}", "label": "rare" if i < 3 else "common"} for i in range(60)]
    write_jsonl(folder / "rare" / "train.jsonl", rare)
    write_jsonl(folder / "rare" / "dev.jsonl", rare[:10])
    tasks["rare"] = {
        "type": "classification",
        "data": {"train": "rare/train.jsonl", "dev": "rare/dev.jsonl"},
    }
    tasks["sentiment"]["prompt"] = {"template": "Review: {text}", "pool": ["Opinion: {text}"]}
    cfg = tiny_config(tiny_backbone, tasks, folder / "runs")
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return folder


@pytest.mark.parametrize("task", ["sentiment", "pair", "score", "topics"])
def test_search_scores_every_candidate_by_cv_and_chooses_the_best(workdir: Path, task: str) -> None:
    cfg = load_config(workdir / "config.yaml")
    result = search_prompts(cfg, task, train_rows=80, folds=4, max_candidates=5)
    assert len(result.results) == 5 and result.sizes["cv"] == 80 and result.sizes["dev"] == 40
    cv = [r.cv.metrics[result.metric] for r in result.results]
    assert result.chosen == int(np.argmax(cv)) and cv[result.chosen] == max(cv)
    for r in result.results:
        assert 0.0 <= r.cv.gain <= r.cv.entropy + 1e-9 and 0.0 <= r.dev.gain <= r.dev.entropy + 1e-9
        assert (r.dev.accuracy is None) == (task == "score")
        assert len(r.cv.predictions) == 80  # every CV row predicted (out of fold) once
    # Paired SEs where per-row values exist (classification); plain gaps elsewhere.
    classification = task in ("sentiment", "pair")
    assert (result.best.row_values is not None) == classification
    median = result.gaps["median"]
    assert median.gap == pytest.approx(cv[result.chosen] - float(np.median(cv)))
    assert (median.se is not None and median.se >= 0) == classification
    sorted_cv = sorted(cv, reverse=True)
    assert result.gaps["runner_up"].gap == pytest.approx(sorted_cv[0] - sorted_cv[1])
    table = format_table(result)
    assert all(repr(r.template) in table for r in result.results)
    assert f"CV {result.metric}" in table and "CV vs median ± paired SE" in table
    chosen_line = next(line for line in table.splitlines() if line.startswith("*"))
    assert f"{median.gap:+.2f}" in chosen_line and ("±" in chosen_line) == classification
    s = summary(result)
    assert s["chosen_cv"] == cv[result.chosen] and s["folds"] == 4 and s["cv_rows"] == 80
    assert s["median_dev"] == pytest.approx(float(np.median(result.dev_scores())))
    assert s["chosen_minus_median_dev"] == pytest.approx(s["chosen_dev"] - s["median_dev"])
    json.dumps(to_dict(result))  # the report is plain JSON


def test_search_learns_the_sentiment_signal_and_is_deterministic(workdir: Path) -> None:
    cfg = load_config(workdir / "config.yaml")
    a = search_prompts(cfg, "sentiment", train_rows=100, folds=5, max_candidates=3)
    b = search_prompts(cfg, "sentiment", train_rows=100, folds=5, max_candidates=3)
    assert [r.cv.metrics for r in a.results] == [r.cv.metrics for r in b.results]
    assert [r.dev.metrics for r in a.results] == [r.dev.metrics for r in b.results]
    assert a.chosen == b.chosen and a.gaps == b.gaps
    assert all(
        np.array_equal(x.cv.predictions, y.cv.predictions) for x, y in zip(a.results, b.results)
    )
    # Another seed draws other folds (and another probe sample): the CV scores move.
    c = search_prompts(load_config(workdir / "config.yaml", ["seed=5"]), "sentiment", 100, 5, 3)
    assert [r.cv.predictions.tolist() for r in c.results] != [
        r.cv.predictions.tolist() for r in a.results
    ]
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
    result = search_prompts(cfg, "sentiment", train_rows=80, folds=4, max_candidates=4)
    for out in (workdir / "chosen-here.yaml", tmp_path / "elsewhere" / "chosen.yaml"):
        written = write_search_config(config, ["train.lr=1e-3"], cfg, result, out)
        again = load_config(out)
        prompt = again.tasks["sentiment"].prompt
        assert prompt.template == result.best.template == written.tasks["sentiment"].prompt.template
        assert set(prompt.pool) == {r.template for r in result.results} - {result.best.template}
        assert prompt.pool == [r.template for r in result.ranked()][1:]  # best CV score first
        assert "4-fold cross-validation" in out.read_text().splitlines()[1]
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
        "--folds",
        "3",
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
        for h in (
            "CV f1",
            "CV acc",
            "CV IG (bits)",
            "CV vs median ± paired SE",
            "dev f1",
            "dev acc",
        )
    )
    assert "vs median candidate" in result.stdout and str(out) in result.stdout
    assert "(3-fold, 60 rows)" in result.stdout and "over the runner-up" in result.stdout
    data = json.loads((report / "prompt_search_pair.json").read_text())
    assert len(data["candidates"]) == 3 and data["command"].startswith("promptmux prompts search")
    assert "--folds 3" in data["command"] and data["settings"]["folds"] == 3
    chosen = [c for c in data["candidates"] if c["chosen"]]
    assert (
        len(chosen) == 1 and load_config(out).tasks["pair"].prompt.template == chosen[0]["template"]
    )
    assert chosen[0]["cv"]["metric"] == max(c["cv"]["metric"] for c in data["candidates"])
    gap = data["summary"]["cv_vs_median"]
    assert isinstance(gap["se"], float) and gap["gap"] >= 0
    assert "**CV** (3-fold, 60 rows)" in (report / "prompt_search_pair.md").read_text()
    assert load_config(out).tasks["pair"].metric == "f1"
    assert "| * |" in (report / "prompt_search_pair.md").read_text()
    # An existing --out is refused (before any scoring), unless --overwrite.
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and isinstance(again.exception, ConfigError)
    assert "--overwrite" in str(again.exception)
    # A bad --folds is refused before any scoring, naming the flag.
    other = tmp_path / "other.yaml"
    bad = [a if a != str(out) else str(other) for a in args]
    bad[bad.index("--folds") + 1] = "1"
    refused = CliRunner().invoke(app, bad)
    assert isinstance(refused.exception, ConfigError) and "--folds" in str(refused.exception)
    assert not other.exists()


def test_choice_uses_cv_scores_only_even_where_dev_disagrees(workdir: Path) -> None:
    # The "flipped" task's dev labels are the opposite of train's, so dev ranks candidates about
    # in reverse: a search that peeked at dev would choose another candidate.
    cfg = load_config(workdir / "config.yaml")
    result = search_prompts(cfg, "flipped", train_rows=150, folds=5, max_candidates=6)
    cv, dev = result.cv_scores(), result.dev_scores()
    assert int(np.argmax(dev)) != int(np.argmax(cv))  # the premise: dev would pick differently
    assert result.chosen == int(np.argmax(cv))
    assert result.best.cv.metrics["accuracy"] > 60  # the probe reads the signal out of fold


def test_error_paths_name_what_is_wrong(workdir: Path) -> None:
    config = workdir / "config.yaml"
    cfg = load_config(config)
    with pytest.raises(ConfigError, match=r"no task 'nope'.*known: .*sentiment"):
        search_prompts(cfg, "nope")
    with pytest.raises(ConfigError, match=r"tasks\.ner: .*token tasks"):
        search_prompts(cfg, "ner")
    with pytest.raises(DataError, match=r"tasks\.few \(train\): \d+ rows .*--folds 5 needs"):
        search_prompts(cfg, "few")
    with pytest.raises(DataError, match=r"tasks\.rare \(train\): .*'rare' 3 .*--folds 5"):
        search_prompts(cfg, "rare")
    search_prompts(cfg, "rare", folds=3, max_candidates=1)  # 3 folds: 3 rare rows are enough
    with pytest.raises(ConfigError, match="--folds must be an integer >= 2, got 1"):
        search_prompts(cfg, "sentiment", folds=1)
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
