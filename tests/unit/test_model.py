"""The shared encoder (loading, freezing, pooling), every head, and mixed-task batches."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import single_thread  # noqa: F401  (fixture)
from mixed_support import assert_rows_alone, batch_logits

from promptmux.data.collate import collate
from promptmux.data.encode import encode_examples
from promptmux.errors import ConfigError
from promptmux.model import (
    MultiTaskModel,
    TaskInfo,
    apply_freeze,
    build_model,
    count_parameters,
    load_backbone,
    resolve_backbone,
)
from promptmux.model.backbone import PACKAGED_MODELS, pool
from promptmux.model.heads import HEADS
from promptmux.tasks.spec import Example

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone: Path):
    return load_backbone(str(tiny_backbone))[1]


def fresh_encoder(tiny_backbone: Path) -> torch.nn.Module:
    return load_backbone(str(tiny_backbone))[0]


# --- loading --------------------------------------------------------------------------------------


def test_load_backbone_has_no_pooler(tiny_backbone: Path) -> None:
    encoder, tokenizer = load_backbone(str(tiny_backbone))
    assert encoder.config.hidden_size == 32 and encoder.config.num_hidden_layers == 2
    assert not any(name.startswith("pooler") for name, _ in encoder.named_parameters())
    assert tokenizer.pad_token_id == 0


def test_resolve_backbone_bad_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_backbone(str(tmp_path / "no-such-model"))
    message = str(info.value)
    assert "model.backbone" in message and "no-such-model" in message and "minilm" in message
    # A folder without a Hugging Face config.json is no model either.
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="config.json"):
        resolve_backbone(str(tmp_path / "empty"))


def test_resolve_backbone_accepts_a_local_folder(tiny_backbone: Path) -> None:
    assert resolve_backbone(str(tiny_backbone)) == tiny_backbone


def test_resolve_backbone_packaged_alias() -> None:
    module = PACKAGED_MODELS["minilm"][0]
    pytest.importorskip(module, reason="the packaged MiniLM is not installed")
    path = resolve_backbone("minilm")
    assert (path / "config.json").is_file()


def test_resolve_backbone_alias_without_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    module, _, dist = PACKAGED_MODELS["minilm"]
    monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(ConfigError) as info:
        resolve_backbone("minilm")
    assert "model.backbone" in str(info.value) and dist in str(info.value)


# --- freezing -------------------------------------------------------------------------------------


def _is_embedding(name: str) -> bool:
    return name.startswith("embeddings.")


def _layer(name: str) -> int | None:
    return int(name.split(".")[2]) if name.startswith("encoder.layer.") else None


@pytest.mark.parametrize(
    "strategy, k, trainable",
    [
        ("none", 0, lambda n: True),
        ("embeddings", 0, lambda n: not _is_embedding(n)),
        ("bottom_k", 1, lambda n: not _is_embedding(n) and _layer(n) != 0),
        ("bottom_k", 2, lambda n: False),
        ("top_k", 1, lambda n: _layer(n) == 1),
        ("top_k", 2, lambda n: _layer(n) is not None),
        ("backbone", 0, lambda n: False),
    ],
)
def test_freeze_strategies(tiny_backbone: Path, strategy: str, k: int, trainable) -> None:
    encoder = fresh_encoder(tiny_backbone)
    model = build_model(encoder, [TaskInfo("t", "classification", ["a", "b"], "mean", "accuracy")], 0.0)
    apply_freeze(model.encoder, strategy, k)
    names = [n for n, _ in encoder.named_parameters()]
    assert any(_is_embedding(n) for n in names) and any(_layer(n) == 1 for n in names)
    wrong = [n for n, p in encoder.named_parameters() if p.requires_grad != trainable(n)]
    assert not wrong, f"{strategy} k={k}: wrong requires_grad on {wrong}"
    # Heads are never frozen by the encoder's strategy.
    assert all(p.requires_grad for p in model.heads.parameters())
    expected = sum(p.numel() for n, p in encoder.named_parameters() if trainable(n))
    expected += sum(p.numel() for p in model.heads.parameters())
    assert count_parameters(model) == (expected, sum(p.numel() for p in model.parameters()))


@pytest.mark.parametrize("strategy", ["bottom_k", "top_k"])
def test_freeze_k_larger_than_the_layer_count(tiny_backbone: Path, strategy: str) -> None:
    with pytest.raises(ConfigError, match=r"model\.freeze\.k: 3 exceeds the encoder's 2 layers"):
        apply_freeze(fresh_encoder(tiny_backbone), strategy, 3)


def test_freeze_unknown_strategy(tiny_backbone: Path) -> None:
    with pytest.raises(ConfigError, match="model.freeze.strategy"):
        apply_freeze(fresh_encoder(tiny_backbone), "half", 1)


def test_count_parameters_counts_each_tensor_once() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    net[0].requires_grad_(False)
    assert count_parameters(net) == (4 * 2 + 2, 3 * 4 + 4 + 4 * 2 + 2)


# --- pooling --------------------------------------------------------------------------------------


def test_pool_mean_ignores_padding_and_cls_takes_the_first_token() -> None:
    hidden = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    garbage = hidden.clone()
    garbage[0, 3:] = 1e6  # padded positions hold anything
    mean = pool(garbage, mask, "mean")
    assert torch.allclose(mean[0], hidden[0, :3].mean(0))
    assert torch.allclose(mean[1], hidden[1].mean(0))
    assert torch.equal(pool(garbage, mask, "cls"), hidden[:, 0])


def test_pool_pair_compares_the_means_of_the_two_texts() -> None:
    hidden = torch.randn(2, 6, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    segments = torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 1]])  # padding holds type 0
    garbage = hidden.clone()
    garbage[0, 5] = 1e6
    out = pool(garbage, mask, "pair", segments)
    u0, v0 = hidden[0, :3].mean(0), hidden[0, 3:5].mean(0)
    u1, v1 = hidden[1, :2].mean(0), hidden[1, 2:].mean(0)
    torch.testing.assert_close(out[0], torch.cat([u0, v0, (u0 - v0).abs(), u0 * v0]))
    torch.testing.assert_close(out[1], torch.cat([u1, v1, (u1 - v1).abs(), u1 * v1]))
    with pytest.raises(ValueError, match="pair pooling needs the token type ids"):
        pool(hidden, mask, "pair")


@pytest.mark.parametrize("kind", ["mean", "cls"])
def test_pooled_vector_of_a_padded_row_equals_the_unpadded_row(tiny_backbone: Path, tokenizer, kind: str) -> None:
    encoder = fresh_encoder(tiny_backbone).eval()
    short = tokenizer("the movie was good")["input_ids"]
    long = tokenizer("a very very long and really boring plot of a film with an actor")["input_ids"]
    width = len(long)
    ids = torch.tensor([short + [0] * (width - len(short)), long])
    mask = torch.tensor([[1] * len(short) + [0] * (width - len(short)), [1] * width])
    with torch.no_grad():
        padded = pool(encoder(input_ids=ids, attention_mask=mask).last_hidden_state, mask, kind)[0]
        alone_ids = torch.tensor([short])
        alone_mask = torch.ones_like(alone_ids)
        alone = pool(encoder(input_ids=alone_ids, attention_mask=alone_mask).last_hidden_state, alone_mask, kind)[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)


# --- heads ----------------------------------------------------------------------------------------


def make_head(task_type: str, hidden: int = 8, n_labels: int = 3, pooling: str = "mean"):
    torch.manual_seed(0)
    return HEADS.get(task_type)(hidden, n_labels, pooling=pooling, dropout=0.0).eval()


def test_every_task_type_has_a_head() -> None:
    assert set(HEADS.names()) == {"classification", "multilabel", "regression", "token"}


def test_classification_head_shapes() -> None:
    head = make_head("classification")
    hidden, mask = torch.randn(4, 6, 8), torch.ones(4, 6, dtype=torch.long)
    logits = head(hidden, mask, {})
    assert logits.shape == (4, 3)
    loss = head.loss(logits, torch.tensor([0, 1, 2, 0]))
    assert loss.shape == () and torch.isfinite(loss)
    preds = head.predict(logits, {})
    assert preds == logits.argmax(-1).tolist() and all(isinstance(p, int) for p in preds)
    scores = head.scores(logits, {})
    assert len(scores) == 4 and all(len(s) == 3 and abs(sum(s) - 1) < 1e-5 for s in scores)


def test_multilabel_head_shapes_and_threshold() -> None:
    head = make_head("multilabel")
    logits = head(torch.randn(4, 6, 8), torch.ones(4, 6, dtype=torch.long), {})
    assert logits.shape == (4, 3)
    labels = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.float32)
    assert head.loss(logits, labels).shape == ()
    fixed = torch.tensor([[2.0, -2.0, 3.0], [-1.0, -1.0, -1.0]])
    assert head.predict(fixed, {}) == [(0, 2), ()]
    scores = head.scores(fixed, {})
    assert len(scores) == 2 and len(scores[0]) == 3 and 0 < scores[0][1] < 0.5 < scores[0][0]


def test_regression_head_standardizes_and_maps_back() -> None:
    head = make_head("regression", n_labels=1)
    targets = [0.5, 1.0, 4.0, 4.5, 2.0]
    head.set_target_stats(targets)
    mean, std = float(np.mean(targets)), float(np.std(targets, ddof=1))
    assert head.target_mean.item() == pytest.approx(mean)
    assert head.target_std.item() == pytest.approx(std)
    # The statistics are buffers, so a bundle saves them with the weights.
    assert {"target_mean", "target_std"} <= set(head.state_dict())
    logits = head(torch.randn(5, 6, 8), torch.ones(5, 6, dtype=torch.long), {})
    assert logits.shape == (5, 1)
    assert head.loss(logits, torch.tensor(targets)).shape == ()
    # Standardized outputs map back to the data's scale, and a perfect output has zero loss.
    y = torch.tensor(targets)
    perfect = ((y - mean) / std).unsqueeze(-1)
    assert head.predict(perfect, {}) == pytest.approx(targets, abs=1e-5)
    assert head.scores(perfect, {}) == pytest.approx(targets, abs=1e-5)
    assert head.loss(perfect, y).item() == pytest.approx(0.0, abs=1e-10)


def test_regression_constant_targets_keep_unit_scale() -> None:
    head = make_head("regression", n_labels=1)
    head.set_target_stats([3.0, 3.0, 3.0])
    assert head.target_std.item() == 1.0 and head.target_mean.item() == 3.0
    head.set_target_stats([7.0])
    assert head.target_std.item() == 1.0


def test_token_head_tags_each_word_from_its_first_piece() -> None:
    head = make_head("token", hidden=3, n_labels=3)
    with torch.no_grad():  # identity output layer: a word's logits are its first piece's state
        head.out.weight.copy_(torch.eye(3))
        head.out.bias.zero_()
    hidden = torch.zeros(2, 6, 3)
    # Row 0: words start at tokens 1, 2 and 4 (token 3 is a continuation piece); row 1: one word.
    hidden[0, 1, 2] = hidden[0, 2, 0] = hidden[0, 4, 1] = 1.0
    hidden[0, 3, 2] = 5.0  # a continuation piece must not count
    hidden[1, 1, 1] = 1.0
    starts = torch.tensor([[1, 2, 4], [1, -1, -1]])
    extra = {"word_starts": starts}
    logits = head(hidden, torch.ones(2, 6, dtype=torch.long), extra)
    assert logits.shape == (2, 3, 3)
    assert head.predict(logits, extra) == [(2, 0, 1), (1,)]
    scores = head.scores(logits, extra)
    assert [len(s) for s in scores] == [3, 1] and all(len(w) == 3 for s in scores for w in s)
    labels = torch.tensor([[2, 0, 1], [1, -100, -100]])
    padded_labels = torch.tensor([[2, 0, 1], [1, 0, 2]])
    assert head.loss(logits, labels).item() < head.loss(logits, padded_labels).item()


# --- the multi-task model -------------------------------------------------------------------------

TASKS = [
    TaskInfo("cls", "classification", ["neg", "pos"], "mean", "accuracy"),
    TaskInfo("pair", "classification", ["no", "yes", "maybe"], "cls", "accuracy"),
    TaskInfo("multi", "multilabel", ["a", "b", "c", "d"], "mean", "micro_f1"),
    TaskInfo("reg", "regression", None, "mean", "pearson"),
    TaskInfo("tok", "token", ["O", "B-PER", "I-PER"], "mean", "entity_f1"),
    TaskInfo("sbert", "classification", ["no", "yes"], "pair", "accuracy"),
]

EXAMPLES = {
    "cls": [Example("the movie was good"), Example("bad"), Example("a really very boring film with an actor")],
    "pair": [Example("the plot", "was fine"), Example("john won the match in london", "mary lost")],
    "multi": [Example("stock market"), Example("the team won the game and the bank price")],
    "reg": [Example("love it"), Example("worst movie of the city"), Example("ok")],
    "tok": [Example(("john", "works", "in", "paris")), Example(("mary",)), Example(("xylophone", "the", "film"))],
    "sbert": [Example("the plot", "was fine"), Example("john won", "mary lost the match in london"), Example("ok", "ok")],
}


@pytest.fixture(scope="module")
def multitask(tiny_backbone: Path, tokenizer):
    torch.manual_seed(0)
    encoder = load_backbone(str(tiny_backbone))[0]
    model = build_model(encoder, TASKS, head_dropout=0.1).eval()
    encoded = {t.name: encode_examples(EXAMPLES[t.name], tokenizer, t.type, 32, t.n_labels) for t in TASKS}
    return model, encoded


def test_build_model_makes_one_head_per_task(multitask) -> None:
    model, _ = multitask
    assert isinstance(model, MultiTaskModel)
    assert list(model.heads) == [t.name for t in TASKS]
    assert [type(model.heads[t.name]).task_type for t in TASKS] == [t.type for t in TASKS]
    assert [model.heads[t.name].out.out_features for t in TASKS] == [2, 3, 4, 1, 3, 2]
    assert model.heads["pair"].pooling == "cls" and model.heads["cls"].pooling == "mean"
    assert model.heads["sbert"].out.in_features == 4 * 32 and model.heads["cls"].out.in_features == 32


@pytest.mark.parametrize("order", [["cls", "pair", "multi", "reg", "tok", "sbert"], ["tok", "sbert", "reg", "pair", "cls", "multi"]])
def test_mixed_batch_gives_each_task_its_rows(multitask, order: list[str]) -> None:
    """A row's logits do not depend on which other tasks share its batch (eval mode, fp32)."""
    model, encoded = multitask
    mixed = batch_logits(model, [(t, encoded[t], np.arange(len(encoded[t]))) for t in order])
    assert list(mixed) == order
    for t in order:
        alone = batch_logits(model, [(t, encoded[t], np.arange(len(encoded[t])))])[t]
        assert mixed[t].shape == alone.shape
        assert mixed[t].shape[0] == len(EXAMPLES[t])
        torch.testing.assert_close(mixed[t], alone, atol=1e-5, rtol=1e-5)
        # Row by row too: one row alone (no padding at all) gives the same logits.
        assert_rows_alone(model, mixed, t, encoded[t])


def test_mixed_batch_shapes_per_head(multitask) -> None:
    model, encoded = multitask
    out = batch_logits(model, [(t.name, encoded[t.name], np.arange(len(encoded[t.name]))) for t in TASKS])
    assert out["cls"].shape == (3, 2) and out["pair"].shape == (2, 3) and out["multi"].shape == (2, 4)
    assert out["reg"].shape == (3, 1)
    assert out["tok"].shape == (3, 4, 3)  # 3 sentences, up to 4 words, 3 tags
    head = model.heads["tok"]
    batch = collate([("tok", encoded["tok"], np.arange(3))], 0)
    preds = head.predict(out["tok"], batch.extra["tok"])
    assert [len(p) for p in preds] == [4, 1, 3]  # one tag per word, whatever the pieces


def test_train_mode_dropout_changes_outputs_eval_mode_does_not(multitask) -> None:
    model, encoded = multitask
    parts = [("cls", encoded["cls"], np.arange(3))]
    a, b = batch_logits(model, parts)["cls"], batch_logits(model, parts)["cls"]
    assert torch.equal(a, b)
    model.train()
    try:
        torch.manual_seed(1)
        c = batch_logits(model, parts)["cls"]
    finally:
        model.eval()
    assert not torch.allclose(a, c)
