"""Prompt search for a decoder: (template, verbalizer) candidates scored zero-shot by the LM.

The LM here is rigged: its next-token distribution is the same after any text (a head with zero
weights and a fixed bias), so every candidate predicts one constant label, the one whose answer
word is likelier, and its accuracy is that label's share of the rows. That makes every score, the
choice and the written config exactly predictable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from t2t_support import build_tiny_lm, write_jsonl
from typer.testing import CliRunner

from promptmux.cli import app
from promptmux.config import config_from_dict, load_config
from promptmux.config.schema import TaskConfig
from promptmux.errors import ConfigError
from promptmux.prompts.candidates import build_decoder_candidates, decoder_verbalizers
from promptmux.prompts.keywords import Keyword
from promptmux.prompts.search import search_prompts
from promptmux.prompts.search_output import format_table, summary, to_dict, write_search_config
from promptmux.prompts.zero_shot import load_decoder

# Next-token probabilities of the rigged LM; every other token shares what is left.
RIGGED = {"good": 0.3, "bad": 0.2, "hate": 0.15, "love": 0.1}


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-llama-search"))


def rows(n_love: int, n_hate: int) -> list[dict[str, str]]:
    # The top keywords by information gain are "good" (every love row) and "dull" (every hate row).
    out = [{"text": f"the movie was {w} good", "label": "love"} for w in ("great", "best") * (n_love // 2)]
    out += [{"text": f"the movie was {w} dull", "label": "hate"} for w in ("awful", "worst") * (n_hate // 2)]
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("search-data")
    write_jsonl(folder / "train.jsonl", rows(28, 12))  # 70% love
    write_jsonl(folder / "dev.jsonl", rows(6, 14))  # 30% love
    write_jsonl(folder / "gen.jsonl", [{"text": "team won", "label": "sports news"}] * 4)
    return folder


def raw_config(lm: Path, verbalizer: dict[str, str] | None = None) -> dict:
    return {
        "seed": 0,
        "model": {"kind": "decoder", "backbone": str(lm), "max_length": 32},
        "tasks": {
            "feeling": {
                "type": "classification",
                "data": {"train": "train.jsonl", "dev": "dev.jsonl"},
                "prompt": {"template": "review : {text} sentiment :"},
                "verbalizer": verbalizer or {"love": "good", "hate": "bad"},
            },
            "topic": {"type": "generation", "data": {"train": "gen.jsonl", "dev": "gen.jsonl"},
                      "prompt": {"template": "{text} topic :"}},
        },
        "train": {"precision": "fp32", "progress": False},
    }


def rigged_backbone(cfg) -> tuple:
    model, tokenizer = load_decoder(cfg, "feeling")
    lm = model.lm
    vocab = lm.config.vocab_size
    probs = torch.full((vocab,), (1 - sum(RIGGED.values())) / (vocab - len(RIGGED)))
    for word, p in RIGGED.items():
        probs[tokenizer.convert_tokens_to_ids(word)] = p
    head = torch.nn.Linear(lm.config.hidden_size, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(probs.log())
    lm.lm_head = head
    return model, tokenizer


def expected_accuracy(words: tuple[str, ...], labels: list[str], gold: list[str]) -> float:
    """The constant prediction is the label whose word is likeliest (the first on a tie)."""
    p = [RIGGED.get(w, 0.0) for w in words]
    predicted = labels[int(np.argmax(p))]
    return 100.0 * sum(g == predicted for g in gold) / len(gold)


def test_every_candidate_is_scored_by_the_lm_and_the_best_on_train_is_chosen(tiny_lm: Path, data_dir: Path) -> None:
    cfg = config_from_dict(raw_config(tiny_lm), base_dir=data_dir)
    result = search_prompts(cfg, "feeling", train_rows=1000, max_candidates=50, backbone=rigged_backbone(cfg))
    assert result.zero_shot and result.folds == 0 and result.sizes["cv"] == 40
    assert result.labels == ["hate", "love"]
    train_gold = [r["label"] for r in rows(28, 12)]
    dev_gold = [r["label"] for r in rows(6, 14)]
    verbalizers = {r.candidate.verbalizer for r in result.results}
    assert ("bad", "good") in verbalizers and ("hate", "love") in verbalizers  # current and label names
    for r in result.results:
        words = r.candidate.verbalizer
        assert r.cv.metrics["accuracy"] == pytest.approx(expected_accuracy(words, result.labels, train_gold))
        assert r.dev.metrics["accuracy"] == pytest.approx(expected_accuracy(words, result.labels, dev_gold))
    # Chosen on train (70% love: "good" > "bad" predicts love), never on dev (where hate wins).
    assert result.best.candidate.verbalizer == ("bad", "good")
    assert result.best.template == "review : {text} sentiment :"  # the earliest of the tied best
    assert result.best.cv.metrics["accuracy"] == pytest.approx(70.0)
    assert result.best.dev.metrics["accuracy"] == pytest.approx(30.0)
    s = summary(result)
    assert s["proxy"] == "zero-shot" and s["chosen_verbalizer"] == ["bad", "good"]
    assert s["chosen_minus_median_dev"] == pytest.approx(30.0 - result.median_dev())
    assert "train accuracy" in format_table(result) and "-> bad / good" in format_table(result)
    assert json.dumps(to_dict(result))  # JSON-ready


def test_the_written_config_carries_the_chosen_template_and_verbalizer(tiny_lm: Path, data_dir: Path, tmp_path: Path) -> None:
    source = data_dir / "decoder.yaml"
    source.write_text(yaml.safe_dump(raw_config(tiny_lm, {"love": "love", "hate": "hate"})), encoding="utf-8")
    cfg = load_config(source)
    result = search_prompts(cfg, "feeling", train_rows=1000, max_candidates=50, backbone=rigged_backbone(cfg))
    # "hate" (0.15) beats "love" (0.1): the task's own verbalizer predicts hate, 30% on train; the
    # mined keywords "dull" / "good" predict love, 70%.
    assert result.results[0].cv.metrics["accuracy"] == pytest.approx(30.0)
    assert result.best.candidate.verbalizer == ("dull", "good") and result.best.candidate.source == "current+keywords"
    out = data_dir / "chosen.yaml"
    write_search_config(source, [], cfg, result, out)
    written = load_config(out)  # a valid decoder config: template + verbalizer, no pool
    task = written.tasks["feeling"]
    assert task.prompt.template == result.best.template and task.prompt.pool == []
    assert task.verbalizer == dict(zip(result.labels, result.best.candidate.verbalizer))
    header = out.read_text(encoding="utf-8").split("seed:")[0]
    assert "zero-shot on train rows" in header
    assert json.dumps(result.ranked()[1].candidate.describe()) in header  # the runner-up, as a comment


def test_cli_searches_a_decoder_task_and_refuses_a_generation_task(tiny_lm: Path, data_dir: Path) -> None:
    source = data_dir / "cli.yaml"
    source.write_text(yaml.safe_dump(raw_config(tiny_lm)), encoding="utf-8")
    out = data_dir / "cli.chosen.yaml"
    result = CliRunner().invoke(app, ["prompts", "search", str(source), "--task", "feeling", "--out", str(out),
                                      "--max-candidates", "3", "--train-rows", "10", "--report", str(data_dir / "report")])
    assert result.exit_code == 0, result.output
    assert "zero-shot, 10 rows" in result.output
    page = (data_dir / "report" / "prompt_search_feeling.md").read_text(encoding="utf-8")
    assert "zero-shot accuracy on 10 train rows" in page and "| train accuracy |" in page
    assert load_config(out).tasks["feeling"].verbalizer is not None
    bad = CliRunner().invoke(app, ["prompts", "search", str(source), "--task", "topic", "--out", str(data_dir / "x.yaml")])
    assert isinstance(bad.exception, ConfigError) and "tasks.topic" in str(bad.exception)
    assert "classification" in str(bad.exception) and not (data_dir / "x.yaml").exists()


def test_verbalizers_the_tokenizer_cannot_tell_apart_are_skipped(tiny_lm: Path, data_dir: Path) -> None:
    # Both words are unknown to the tiny tokenizer: one <unk> token for two labels.
    cfg = config_from_dict(raw_config(tiny_lm, {"love": "zzyzx", "hate": "qwxyz"}), base_dir=data_dir)
    lines: list[str] = []
    result = search_prompts(cfg, "feeling", train_rows=1000, max_candidates=50, progress=lines.append,
                            backbone=rigged_backbone(cfg))
    assert all(r.candidate.verbalizer != ("qwxyz", "zzyzx") for r in result.results)
    assert any(line.startswith("skipped") and "qwxyz / zzyzx" in line for line in lines)


def task_config(**kw) -> TaskConfig:
    return TaskConfig.model_validate({"type": "classification", "data": {"train": "t.jsonl"}, **kw})


def test_decoder_candidates_cross_templates_with_verbalizers() -> None:
    task = task_config(prompt={"template": "Review: {text}\nSentiment:"}, verbalizer={"0": "awful", "1": "great"})
    keywords = {0: [Keyword("dull", 0, 0.1, 5)], 1: [Keyword("moving", 1, 0.1, 5)]}
    assert decoder_verbalizers(task, keywords, ["0", "1"]) == [(("awful", "great"), "current"), (("dull", "moving"), "keywords")]
    cands = build_decoder_candidates("s", task, keywords, ["0", "1"], 100)
    assert (cands[0].template, cands[0].verbalizer, cands[0].source) == ("Review: {text}\nSentiment:", ("awful", "great"), "current")
    assert cands[1].source == "current+keywords" and cands[2].template == "{text}" and cands[2].source == "plain"
    assert len(cands) == 2 * 7 and len({(c.template, c.verbalizer) for c in cands}) == len(cands)
    # "{choice}" names the candidate's own answer words.
    asks = [c for c in cands if "Question:" in c.template]
    assert {c.template for c in asks} == {"{text}\nQuestion: awful or great?\nAnswer:", "{text}\nQuestion: dull or moving?\nAnswer:"}
    assert len(build_decoder_candidates("s", task, keywords, ["0", "1"], 5)) == 5
    # Pairs read both fields, with no {sep} (a decoder reads one text).
    pair = task_config(fields={"text_b": "b"}, verbalizer={"0": "no", "1": "yes"})
    for c in build_decoder_candidates("p", pair, {}, ["0", "1"], 100):
        assert "{text_b}" in c.template and "{sep}" not in c.template


def test_decoder_candidates_need_answer_words() -> None:
    task = task_config()
    # Label names that are not words, no verbalizer, keywords for one label only: nothing to answer with.
    with pytest.raises(ConfigError, match=r"tasks\.s\.verbalizer"):
        build_decoder_candidates("s", task, {0: [Keyword("dull", 0, 0.1, 5)], 1: []}, ["0", "1"], 10)
    # The same top keyword for two labels names no choice; label names that are words do.
    same = {0: [Keyword("film", 0, 0.1, 5)], 1: [Keyword("film", 1, 0.1, 5)]}
    assert decoder_verbalizers(task, same, ["bad_review", "Good"]) == [(("bad review", "good"), "labels")]
    cands = build_decoder_candidates("s", task, same, ["bad_review", "Good"], 10)
    assert {c.verbalizer for c in cands} == {("bad review", "good")} and cands[0].source == "plain+labels"


def test_keyword_verbalizers_prefer_one_token_words() -> None:
    task = task_config(verbalizer={"0": "awful", "1": "great"})
    keywords = {
        0: [Keyword("unwatchable", 0, 0.3, 5), Keyword("dull", 0, 0.2, 5)],
        1: [Keyword("moving", 1, 0.3, 5), Keyword("fun", 1, 0.2, 5)],
    }
    short = {"dull", "moving", "fun", "awful", "great"}.__contains__
    # Label 0's best one-token keyword ranks second; label 1's best keyword is one token already.
    assert decoder_verbalizers(task, keywords, ["0", "1"], one_token=short)[1] == (("dull", "moving"), "keywords")
    # Without a tokenizer, or when no keyword of a label is one token, the top keyword stays.
    assert decoder_verbalizers(task, keywords, ["0", "1"])[1] == (("unwatchable", "moving"), "keywords")
    assert decoder_verbalizers(task, keywords, ["0", "1"], one_token=lambda w: False)[1][0] == ("unwatchable", "moving")
    cands = build_decoder_candidates("s", task, keywords, ["0", "1"], 100, one_token=short)
    assert ("dull", "moving") in {c.verbalizer for c in cands}
