"""Encoding (every task type, cache), collation, task streams, samplers and loss weightings."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import promptmux.data.encode as encode_mod
from promptmux.data.collate import collate
from promptmux.data.encode import Encoded, encode_examples
from promptmux.data.samplers import SAMPLERS, build_sampler
from promptmux.data.streams import TaskStream
from promptmux.errors import ConfigError
from promptmux.tasks.spec import Example
from promptmux.weighting import WEIGHTINGS, build_weighting


@pytest.fixture(scope="module")
def tokenizer(tiny_backbone: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_backbone)


def rows_of(enc: Encoded) -> list[list[int]]:
    return [enc.ids[enc.offsets[i] : enc.offsets[i + 1]].tolist() for i in range(len(enc))]


# --- encode_examples ------------------------------------------------------------------------------


def test_encode_single_text_classification(tokenizer) -> None:
    examples = [Example("the movie was good", None, 1), Example("bad", None, 0), Example("xylophone fun", None, 1)]
    enc = encode_examples(examples, tokenizer, "classification", 32, 2)
    assert len(enc) == 3 and enc.task_type == "classification"
    assert rows_of(enc) == [tokenizer(ex.text)["input_ids"] for ex in examples]
    assert enc.lengths.tolist() == [len(r) for r in rows_of(enc)] and enc.n_tokens() == sum(enc.lengths)
    assert enc.type_ids is None  # single texts need no segment ids
    assert enc.labels.dtype == np.int64 and enc.labels.tolist() == [1, 0, 1]


def test_encode_pairs_have_token_type_ids(tokenizer) -> None:
    examples = [Example("the plot", "was good", 1), Example("a film", "boring", 0)]
    enc = encode_examples(examples, tokenizer, "classification", 32, 2)
    for i, ex in enumerate(examples):
        expected = tokenizer(ex.text, ex.text_b)
        assert rows_of(enc)[i] == expected["input_ids"]
        types = enc.type_ids[enc.offsets[i] : enc.offsets[i + 1]].tolist()
        assert types == expected["token_type_ids"]
        assert types[0] == 0 and types[-1] == 1 and set(types) == {0, 1}


def test_encode_truncates_to_max_length(tokenizer) -> None:
    enc = encode_examples([Example(" ".join(["the"] * 50), None, 0)], tokenizer, "classification", 10, 2)
    assert enc.lengths.tolist() == [10]
    pair = encode_examples([Example(" ".join(["a"] * 30), " ".join(["of"] * 30), 0)], tokenizer, "classification", 12, 2)
    assert pair.lengths.tolist() == [12] and 1 in pair.type_ids.tolist()


def test_encode_multilabel_and_regression_labels(tokenizer) -> None:
    multi = encode_examples([Example("x", None, (0, 2)), Example("y", None, ())], tokenizer, "multilabel", 32, 3)
    assert multi.labels.dtype == np.float32 and multi.labels.tolist() == [[1, 0, 1], [0, 0, 0]]
    reg = encode_examples([Example("x", None, 0.25), Example("y", None, -3.5)], tokenizer, "regression", 32, 1)
    assert reg.labels.dtype == np.float32 and reg.labels.tolist() == [0.25, -3.5]


def test_encode_unlabeled_examples(tokenizer) -> None:
    for task_type, n in (("classification", 2), ("multilabel", 3), ("regression", 1)):
        assert encode_examples([Example("good")], tokenizer, task_type, 32, n).labels is None
    tok = encode_examples([Example(("john", "works"))], tokenizer, "token", 32, 3)
    assert tok.labels is None and tok.word_starts.tolist() == [1, 2]


def test_encode_token_word_starts_are_first_pieces(tokenizer) -> None:
    words = ("john", "xylophone", "in", "paris")
    pieces = [tokenizer.tokenize(w) for w in words]
    assert len(pieces[1]) > 1, "the test needs a word that splits into several pieces"
    enc = encode_examples([Example(words, None, (1, 0, 0, 2)), Example(("mary",), None, (1,))], tokenizer, "token", 32, 3)
    expected, pos = [], 1  # position 0 is [CLS]
    for p in pieces:
        expected.append(pos)
        pos += len(p)
    assert enc.word_starts.tolist() == expected + [1]
    assert enc.word_offsets.tolist() == [0, 4, 5]
    assert enc.labels.tolist() == [1, 0, 0, 2, 1]
    assert rows_of(enc)[0] == tokenizer(list(words), is_split_into_words=True)["input_ids"]
    assert enc.type_ids is None


def test_encode_token_drops_words_past_max_length(tokenizer) -> None:
    words = tuple(["the", "film", "was", "good", "and", "john", "won", "the", "match", "in", "paris"])
    tags = tuple(range(len(words)))
    enc = encode_examples([Example(words, None, tags), Example(("xylophone", "mary"), None, (5, 6))], tokenizer, "token", 8, 11)
    # 8 tokens hold [CLS] + 6 one-piece words + [SEP].
    assert enc.lengths.tolist()[0] == 8
    assert enc.word_offsets.tolist()[:2] == [0, 6]
    assert enc.word_starts[:6].tolist() == [1, 2, 3, 4, 5, 6]
    assert enc.labels[:6].tolist() == [0, 1, 2, 3, 4, 5]
    # A word whose first piece fits is kept even when its other pieces are cut; one that does not fit is dropped.
    long_word = ("xylophone",) * 3
    cut = encode_examples([Example(long_word, None, (1, 2, 3))], tokenizer, "token", 8, 4)
    assert cut.word_starts.tolist() == [1] and cut.labels.tolist() == [1]


# --- the on-disk cache ----------------------------------------------------------------------------


def test_cache_is_hit_the_second_time(tiny_backbone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer

    # Fresh tokenizers: the first has never truncated anything, the second has just truncated at
    # another length. Neither may change the cache key.
    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone)
    other = AutoTokenizer.from_pretrained(tiny_backbone)
    other(["warm up"], truncation=True, max_length=9)
    examples = [Example("the plot", "was good", 1), Example("bad", "film", 0)]
    first = encode_examples(examples, tokenizer, "classification", 32, 2, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp*"))

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again despite the cache")

    monkeypatch.setattr(encode_mod, "_encode", no_tokenizing)
    second = encode_examples(examples, tokenizer, "classification", 32, 2, cache_dir=tmp_path)
    third = encode_examples(examples, other, "classification", 32, 2, cache_dir=tmp_path)
    np.testing.assert_array_equal(third.ids, first.ids)
    for name in ("ids", "offsets", "type_ids", "labels"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))
        assert getattr(second, name).dtype == getattr(first, name).dtype
    assert second.task_type == "classification"
    # Anything that changes the encoding is a different key: a miss, so tokenizing is attempted.
    relabeled = [Example("the plot", "was good", 0), examples[1]]
    for rows, max_length, n_labels in ((examples, 16, 2), (examples[:1], 32, 2), (relabeled, 32, 2), (examples, 32, 3)):
        with pytest.raises(AssertionError, match="tokenized again"):
            encode_examples(rows, tokenizer, "classification", max_length, n_labels, cache_dir=tmp_path)


def test_cache_keeps_token_arrays(tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    examples = [Example(("john", "xylophone"), None, (1, 0))]
    first = encode_examples(examples, tokenizer, "token", 32, 2, cache_dir=tmp_path)
    monkeypatch.setattr(encode_mod, "_encode", None)  # any call would fail
    second = encode_examples(examples, tokenizer, "token", 32, 2, cache_dir=tmp_path)
    for name in ("ids", "offsets", "labels", "word_starts", "word_offsets"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))


def test_corrupt_cache_file_is_ignored_and_rebuilt(tokenizer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    examples = [Example("the movie was good", None, 1), Example("bad", None, 0)]
    first = encode_examples(examples, tokenizer, "classification", 32, 2, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"not a zip file at all")
    with caplog.at_level(logging.WARNING, logger="promptmux.data"):
        again = encode_examples(examples, tokenizer, "classification", 32, 2, cache_dir=tmp_path)
    assert "ignoring unreadable cache file" in caplog.text
    np.testing.assert_array_equal(again.ids, first.ids)
    np.testing.assert_array_equal(again.labels, first.labels)
    # The entry was rewritten and reads back.
    assert np.load(path)["ids"].tolist() == first.ids.tolist()


# --- collate --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def encoded(tokenizer) -> dict[str, Encoded]:
    return {
        "cls": encode_examples(
            [Example("good", None, 1), Example("the movie was really very boring", None, 0), Example("fun film", None, 1)],
            tokenizer, "classification", 32, 2,
        ),
        "pair": encode_examples([Example("the plot", "was fine", 2), Example("a", "b", 0)], tokenizer, "classification", 32, 3),
        "multi": encode_examples([Example("stock", None, (1,)), Example("game bank", None, (0, 1))], tokenizer, "multilabel", 32, 2),
        "reg": encode_examples([Example("love", None, 4.5), Example("hate it", None, 0.5)], tokenizer, "regression", 32, 1),
        "tok": encode_examples(
            [Example(("john", "works", "in", "paris"), None, (1, 0, 0, 2)), Example(("xylophone",), None, (0,))],
            tokenizer, "token", 32, 3,
        ),
    }


def test_collate_pads_dynamically_to_the_longest_row(encoded) -> None:
    enc = encoded["cls"]
    batch = collate([("cls", enc, np.array([0, 2]))], pad_id=0)
    assert batch.input_ids.shape == (2, max(enc.lengths[0], enc.lengths[2]))
    batch = collate([("cls", enc, np.array([2, 1, 0]))], pad_id=0)
    assert batch.input_ids.shape == (3, enc.lengths.max())
    assert batch.attention_mask.sum(1).tolist() == enc.lengths[[2, 1, 0]].tolist()
    assert batch.n_tokens == int(enc.lengths.sum())
    for j, i in enumerate([2, 1, 0]):
        n = enc.lengths[i]
        assert batch.input_ids[j, :n].tolist() == rows_of(enc)[i]
        assert (batch.input_ids[j, n:] == 0).all() and (batch.attention_mask[j, n:] == 0).all()
    assert batch.token_type_ids is None
    assert batch.input_ids.dtype == torch.int64 and len(batch) == 3


def test_collate_pad_to_multiple(encoded) -> None:
    batch = collate([("cls", encoded["cls"], np.array([0]))], pad_id=7, pad_to_multiple=8)
    assert batch.input_ids.shape[1] == 8
    assert (batch.input_ids[0, encoded["cls"].lengths[0] :] == 7).all()


def test_collate_mixed_rows_are_contiguous_slices_and_labels_have_their_formats(encoded) -> None:
    order = ["tok", "cls", "pair", "multi", "reg"]
    parts = [(t, encoded[t], np.arange(len(encoded[t]))[::-1]) for t in order]
    batch = collate(parts, pad_id=0)
    sizes = [len(encoded[t]) for t in order]
    starts = np.cumsum([0] + sizes)
    assert batch.rows == {t: slice(int(starts[k]), int(starts[k + 1])) for k, t in enumerate(order)}
    assert batch.input_ids.shape == (sum(sizes), max(int(encoded[t].lengths.max()) for t in order))
    for t, (_, enc, idx) in zip(order, parts):
        sl = batch.rows[t]
        for j, i in enumerate(idx):
            assert batch.input_ids[sl][j, : enc.lengths[i]].tolist() == rows_of(enc)[i]
    # token_type_ids exist because one part is a pair task; rows of other tasks are all zeros.
    assert batch.token_type_ids is not None
    assert batch.token_type_ids[batch.rows["pair"]].max() == 1
    assert batch.token_type_ids[batch.rows["cls"]].abs().sum() == 0
    labels = batch.labels
    assert labels["cls"].dtype == torch.int64 and labels["cls"].tolist() == [1, 0, 1][::-1]
    assert labels["pair"].tolist() == [0, 2]
    assert labels["multi"].dtype == torch.float32 and labels["multi"].tolist() == [[1, 1], [0, 1]]
    assert labels["reg"].dtype == torch.float32 and labels["reg"].tolist() == [0.5, 4.5]
    # Token tasks: word-level tags padded with -100, word starts with -1.
    assert labels["tok"].tolist() == [[0, -100, -100, -100], [1, 0, 0, 2]]
    assert batch.extra["tok"]["word_starts"].tolist() == [[1, -1, -1, -1], [1, 2, 3, 4]]
    assert set(batch.extra) == {"tok"}


def test_collate_unlabeled_has_no_labels(tokenizer) -> None:
    enc = encode_examples([Example(("john", "works"))], tokenizer, "token", 32, 3)
    cls = encode_examples([Example("good")], tokenizer, "classification", 32, 2)
    batch = collate([("tok", enc, np.array([0])), ("cls", cls, np.array([0]))], pad_id=0)
    assert batch.labels == {} and batch.extra["tok"]["word_starts"].tolist() == [[1, 2]]


def test_batch_to_and_model_inputs(encoded) -> None:
    batch = collate([("pair", encoded["pair"], np.array([0, 1])), ("tok", encoded["tok"], np.array([1]))], 0).to("cpu")
    inputs = batch.model_inputs()
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids", "rows", "extra"}
    assert inputs["rows"] == {"pair": slice(0, 2), "tok": slice(2, 3)}
    assert batch.labels["tok"].tolist() == [[0]]


# --- task streams ---------------------------------------------------------------------------------


def padded_width(stream: TaskStream, lengths: np.ndarray, batch_size: int, n_batches: int) -> int:
    return sum(int(lengths[stream.take(batch_size)].max()) * batch_size for _ in range(n_batches))


@pytest.mark.parametrize("buckets", [True, False])
@pytest.mark.parametrize("n", [1, 7, 100, 257])
def test_stream_covers_every_row_once_per_epoch(buckets: bool, n: int) -> None:
    lengths = np.random.default_rng(0).integers(1, 50, n)
    stream = TaskStream(lengths, batch_size=8, seed=3, buckets=buckets, bucket_size=4)
    for epoch in range(3):
        chunks = [5] * (n // 5) + ([n % 5] if n % 5 else [])
        got = np.concatenate([stream.take(c) for c in chunks])
        assert sorted(got.tolist()) == list(range(n)), f"epoch {epoch}"
    assert stream.epoch == 3 and stream.cursor == 0


def test_stream_is_deterministic_per_seed_and_epoch() -> None:
    lengths = np.random.default_rng(1).integers(1, 50, 200)
    a = TaskStream(lengths, 8, seed=5)
    b = TaskStream(lengths, 8, seed=5)
    c = TaskStream(lengths, 8, seed=6)
    np.testing.assert_array_equal(a.take(400), b.take(400))
    assert not np.array_equal(a.order(0), c.order(0))
    assert not np.array_equal(a.order(0), a.order(1))
    np.testing.assert_array_equal(a.order(1), TaskStream(lengths, 8, seed=5).order(1))


def test_stream_crosses_into_the_next_epoch() -> None:
    lengths = np.arange(1, 11)
    stream = TaskStream(lengths, 4, seed=0)
    got = stream.take(13)
    np.testing.assert_array_equal(got[:10], stream.order(0))
    np.testing.assert_array_equal(got[10:], stream.order(1)[:3])
    assert stream.state_dict() == {"epoch": 1, "cursor": 3}


def test_length_buckets_reduce_padding() -> None:
    lengths = np.random.default_rng(2).integers(4, 128, 2048)
    plain = padded_width(TaskStream(lengths, 16, seed=0, buckets=False), lengths, 16, 128)
    bucketed = padded_width(TaskStream(lengths, 16, seed=0, buckets=True, bucket_size=16), lengths, 16, 128)
    assert bucketed < 0.6 * plain, (bucketed, plain)
    # Batches still come in random order of length (not shortest first).
    stream = TaskStream(lengths, 16, seed=0, buckets=True, bucket_size=16)
    maxima = [int(lengths[stream.take(16)].max()) for _ in range(32)]
    assert maxima != sorted(maxima)


@pytest.mark.parametrize("buckets", [True, False])
def test_stream_resumes_the_exact_sequence(buckets: bool) -> None:
    lengths = np.random.default_rng(3).integers(1, 60, 90)
    stream = TaskStream(lengths, 8, seed=11, buckets=buckets, bucket_size=2)
    stream.take(37)
    stream.take(70)  # into epoch 1
    state = copy.deepcopy(stream.state_dict())
    expected = np.concatenate([stream.take(13) for _ in range(20)])
    resumed = TaskStream(lengths, 8, seed=11, buckets=buckets, bucket_size=2)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(np.concatenate([resumed.take(13) for _ in range(20)]), expected)


def test_stream_needs_rows() -> None:
    with pytest.raises(ValueError):
        TaskStream(np.array([], dtype=np.int64), 8, seed=0)


# --- samplers -------------------------------------------------------------------------------------

SIZES = {"big": 9000, "mid": 900, "small": 100}
TEMPERATURE = 3.0
# One row per registered sampler: its probabilities by definition. A new sampler needs a row here.
# (Probabilities at step 0 with default options; step-dependent samplers have their own tests in
# test_strategies_matrix.py.)
EXPECTED = {
    "proportional": lambda n, T: n / n.sum(),
    "temperature": lambda n, T: n ** (1 / T) / (n ** (1 / T)).sum(),
    "uniform": lambda n, T: np.full(len(n), 1 / len(n)),
    "annealed": lambda n, T: n / n.sum(),  # proportional at step 0
    "capped": lambda n, T: n / n.sum(),  # every task is below the default cap (2**16 rows)
    "performance": lambda n, T: np.full(len(n), 1 / len(n)),  # uniform until the first evaluation
}


def make_sampler(name: str, seed: int = 0, sizes: dict[str, int] = SIZES):
    sampler = build_sampler(name, sizes, seed, TEMPERATURE)
    sampler.set_total_steps(4000)
    return sampler


def test_every_sampler_has_an_expected_definition() -> None:
    assert set(SAMPLERS.names()) == set(EXPECTED), "add the new sampler's definition to EXPECTED"


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_probabilities_match_the_definition(name: str) -> None:
    sampler = make_sampler(name)
    p = sampler.probabilities(0)
    assert p.shape == (3,) and (p >= 0).all()
    assert p.sum() == pytest.approx(1.0)
    n = np.array(list(SIZES.values()), dtype=np.float64)
    np.testing.assert_allclose(p, EXPECTED[name](n, TEMPERATURE), rtol=1e-9)
    assert sampler.tasks == list(SIZES)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_draws_follow_the_probabilities(name: str) -> None:
    sampler = make_sampler(name, seed=1)
    # Averaged over the steps drawn, for samplers whose probabilities change with the step.
    p = dict(zip(sampler.tasks, np.mean([sampler.probabilities(s) for s in range(4000)], axis=0)))
    draws = [sampler.sample(step) for step in range(4000)]
    for task in SIZES:
        assert draws.count(task) / len(draws) == pytest.approx(p[task], abs=0.03)
    totals = dict.fromkeys(SIZES, 0)
    p = dict(zip(sampler.tasks, np.mean([sampler.probabilities(s) for s in range(300)], axis=0)))
    for step in range(300):
        counts = sampler.counts(32, step)
        assert sum(counts.values()) == 32
        assert set(counts) <= set(SIZES) and all(c > 0 for c in counts.values())
        for t, c in counts.items():
            totals[t] += c
    for task in SIZES:
        assert totals[task] / (300 * 32) == pytest.approx(p[task], abs=0.03)


@pytest.mark.parametrize("name", SAMPLERS.names())
def test_sampler_resumes_the_exact_draw_sequence(name: str) -> None:
    sampler = make_sampler(name, seed=7)
    for step in range(25):
        sampler.sample(step)
        sampler.counts(16, step)
    state = copy.deepcopy(sampler.state_dict())
    expected = [(sampler.sample(s), sampler.counts(16, s)) for s in range(25, 75)]
    resumed = make_sampler(name, seed=999)  # the state replaces the seed's
    resumed.load_state_dict(state)
    assert [(resumed.sample(s), resumed.counts(16, s)) for s in range(25, 75)] == expected
    # The same seed gives the same sequence; another seed does not.
    def draws(seed: int) -> list[dict[str, int]]:
        sampler = make_sampler(name, seed=seed)
        return [sampler.counts(16, i) for i in range(20)]

    assert draws(3) == draws(3) != draws(4)


def test_temperature_limits() -> None:
    n = {"a": 1000, "b": 10}
    t1 = build_sampler("temperature", n, 0, 1.0).probabilities(0)
    np.testing.assert_allclose(t1, build_sampler("proportional", n, 0, 1.0).probabilities(0))
    hot = build_sampler("temperature", n, 0, 1e6).probabilities(0)
    np.testing.assert_allclose(hot, [0.5, 0.5], atol=1e-4)
    with pytest.raises(ValueError, match="temperature"):
        build_sampler("temperature", n, 0, 0.0)


def test_unknown_sampler_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: annealed, capped, performance, proportional, temperature, uniform"):
        build_sampler("annealed_typo", SIZES, 0, 2.0)


def test_sampler_rejects_options() -> None:
    with pytest.raises(TypeError, match="unexpected sampler options"):
        SAMPLERS.get("uniform")(SIZES, 0, temperature=2.0)


# --- loss weighting -------------------------------------------------------------------------------

TASK_WEIGHTS = {"a": 2.0, "b": 0.5, "c": 1.0}
# One row per registered loss-based weighting: the weights it gives to the tasks of the first step
# (before learning), from the step's losses L. Gradient-combining strategies (PCGrad, ...) are
# checked against their definitions in test_strategies_matrix.py.
EXPECTED_WEIGHTS = {
    "equal": lambda present, L: {t: 1.0 for t in present},
    "static": lambda present, L: {t: TASK_WEIGHTS[t] for t in present},
    "loss_driven": lambda present, L: {t: 1 / (1 + np.exp(-L[t])) for t in present},  # alpha 1, beta 0
    "priority": lambda present, L: {t: {"a": 0.9, "b": 0.5, "c": 1.0}[t] for t in present},  # phase 0 (+ config weight)
    "uncertainty": lambda present, L: {t: 1.0 for t in present},  # log-variances start at 0
    "dwa": lambda present, L: {t: 1.0 for t in present},  # 1 until two windows are complete
    "famo": lambda present, L: {t: len(present) * (1 / L[t]) / sum(1 / L[u] for u in present) for t in present},
}
OPTIONS = {"priority": {"phases": [{"until_step": 10, "weights": {"a": 0.9}}, {"weights": {"a": 0.1}}]}}
LOSS_BASED = [n for n in WEIGHTINGS.names() if not WEIGHTINGS.get(n).needs_task_grads]


def test_every_weighting_has_an_expected_definition() -> None:
    assert set(LOSS_BASED) == set(EXPECTED_WEIGHTS), "add the new weighting to EXPECTED_WEIGHTS"


@pytest.mark.parametrize("name", LOSS_BASED)
@pytest.mark.parametrize("present", [["a", "b", "c"], ["b"], ["c", "a"]])
def test_weighting_gives_the_right_weights(name: str, present: list[str]) -> None:
    weighting = build_weighting(name, list(TASK_WEIGHTS), TASK_WEIGHTS, OPTIONS.get(name, {}))
    losses = {t: torch.tensor(float(i + 1), requires_grad=True) for i, t in enumerate(present)}
    total, weights = weighting(losses, step=0)
    expected = EXPECTED_WEIGHTS[name](present, {t: v.item() for t, v in losses.items()})
    assert weights == pytest.approx(expected)
    assert total.item() == pytest.approx(sum(expected[t] * losses[t].item() for t in present))
    total.backward()
    assert all(losses[t].grad.item() == pytest.approx(expected[t]) for t in present)
    # Weightings carry their state through checkpoints.
    weighting.load_state_dict(weighting.state_dict())


def test_unknown_weighting_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: .*equal.*static"):
        build_weighting("gradnorm_typo", ["a"], {"a": 1.0}, {})


@pytest.mark.parametrize("name", WEIGHTINGS.names())
def test_unknown_weighting_options_name_the_key(name: str) -> None:
    with pytest.raises(ConfigError, match=r"weighting\.options: .*not_an_option"):
        build_weighting(name, ["a"], {"a": 1.0}, {**OPTIONS.get(name, {}), "not_an_option": 1.5})


def test_pair_pooling_with_a_tokenizer_without_token_types_is_a_config_error(tiny_backbone: Path, tmp_path: Path) -> None:
    from helpers import tiny_config, write_tasks
    from transformers import AutoTokenizer

    from promptmux.config import config_from_dict
    from promptmux.train.setup import prepare_data

    tasks = write_tasks(tmp_path, ["pair"], n_train=8, n_dev=4)
    tasks["pair"]["pooling"] = "pair"
    cfg = config_from_dict(tiny_config(tiny_backbone, tasks, tmp_path / "run"), base_dir=tmp_path)
    plain = AutoTokenizer.from_pretrained(tiny_backbone, model_input_names=["input_ids", "attention_mask"])
    assert "token_type_ids" not in plain("a", "b")
    with pytest.raises(ConfigError, match="tasks.pair.pooling: pair reads the two texts from token type ids"):
        prepare_data(cfg, plain, cache=False)
    with_types = AutoTokenizer.from_pretrained(tiny_backbone)
    assert prepare_data(cfg, with_types, cache=False).encoded["train"]["pair"].type_ids is not None
