"""load_task: splits (given and carved), field mapping, every task type, labels and bad rows."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from promptmux.config import config_from_dict
from promptmux.config.schema import TaskConfig
from promptmux.errors import DataError
from promptmux.tasks import Example, TaskData, load_task


def task_cfg(tmp_path: Path, **task: Any) -> TaskConfig:
    """Build a TaskConfig the way a user's YAML would, with paths relative to tmp_path."""
    cfg = config_from_dict({"tasks": {"t": task}}, base_dir=tmp_path)
    return cfg.tasks["t"]


def load(tmp_path: Path, **task: Any) -> TaskData:
    return load_task("t", task_cfg(tmp_path, **task))


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def write_tsv(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text(header + "\n" + "".join(line + "\n" for line in lines))
    return path


# --- given splits, field mapping -------------------------------------------------------------------


def test_given_splits_and_field_mapping(tmp_path: Path) -> None:
    write_tsv(tmp_path / "train.tsv", "sentence\tlabel", ["good film \t1", "bad film \t0", "fine\t1"])
    write_tsv(tmp_path / "dev.tsv", "sentence\tlabel", ["meh\t0"])
    write_tsv(tmp_path / "test.tsv", "sentence\tlabel", ["wow\t1"])
    td = load(
        tmp_path,
        type="classification",
        data={"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv", "quoting": "none"},
        fields={"text": "sentence"},
    )
    assert td.name == "t" and td.type == "classification"
    assert td.labels == ["0", "1"]
    # Texts are stripped (SST-2 sentences carry a trailing space).
    assert td.splits["train"] == [
        Example("good film", None, 1),
        Example("bad film", None, 0),
        Example("fine", None, 1),
    ]
    assert td.split("dev") == [Example("meh", None, 0)]
    assert td.split("test") == [Example("wow", None, 1)]
    assert td.skipped == {}


def test_text_pairs(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "train.jsonl",
        [{"a": "p", "b": "h", "y": "entailment"}, {"a": "p2", "b": "h2", "y": "neutral"}],
    )
    write_jsonl(tmp_path / "dev.jsonl", [{"a": "p3", "b": "h3", "y": "neutral"}])
    td = load(
        tmp_path,
        type="classification",
        data={"train": "train.jsonl", "dev": "dev.jsonl"},
        fields={"text": "a", "text_b": "b", "label": "y"},
    )
    assert td.labels == ["entailment", "neutral"]
    assert td.splits["train"][0] == Example("p", "h", 0)
    assert td.splits["dev"] == [Example("p3", "h3", 1)]


# --- labels ----------------------------------------------------------------------------------------


def test_int_and_string_labels_match(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 0}, {"text": "b", "label": "1"}])
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "c", "label": 1}])
    td = load(tmp_path, type="classification", data={"train": "train.jsonl", "dev": "dev.jsonl"})
    assert td.labels == ["0", "1"]
    assert [e.label for e in td.splits["train"] + td.splits["dev"]] == [0, 1, 1]


def test_inferred_numeric_labels_sort_numerically(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"text": str(v), "label": v} for v in (10, 2, 1, 2)])
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "x", "label": 1}])
    td = load(tmp_path, type="classification", data={"train": "train.jsonl", "dev": "dev.jsonl"})
    assert td.labels == ["1", "2", "10"]
    assert [e.label for e in td.splits["train"]] == [2, 1, 0, 1]


def test_declared_labels_keep_their_order(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": "pos"}, {"text": "b", "label": "neg"}])
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "c", "label": "neutral"}])
    td = load(
        tmp_path,
        type="classification",
        labels=["pos", "neutral", "neg"],
        data={"train": "train.jsonl", "dev": "dev.jsonl"},
    )
    assert td.labels == ["pos", "neutral", "neg"]
    assert [e.label for e in td.splits["train"]] == [0, 2]
    assert td.splits["dev"][0].label == 1


def test_one_inferred_label_is_not_enough(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 1}])
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "c", "label": 1}])
    with pytest.raises(DataError, match="at least two"):
        load(tmp_path, type="classification", data={"train": "train.jsonl", "dev": "dev.jsonl"})


# --- task types ------------------------------------------------------------------------------------


def test_multilabel_lists_and_separated_strings(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"text": "a", "label": ["sport", "news"]},
            {"text": "b", "label": "tech|news"},
            {"text": "c", "label": []},
        ],
    )
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "d", "label": "tech | sport | tech"}])
    data = {"train": "train.jsonl", "dev": "dev.jsonl"}
    td = load(tmp_path, type="multilabel", label_separator="|", data=data)
    assert td.labels == ["news", "sport", "tech"]
    assert [e.label for e in td.splits["train"]] == [(0, 1), (0, 2), ()]
    assert td.splits["dev"][0].label == (1, 2)


def test_regression(tmp_path: Path) -> None:
    write_tsv(tmp_path / "train.tsv", "s1\ts2\tscore", ["a\tb\t5.000", "c\td\t0.5"])
    write_tsv(tmp_path / "dev.tsv", "s1\ts2\tscore", ["e\tf\t 3 "])
    td = load(
        tmp_path,
        type="regression",
        data={"train": "train.tsv", "dev": "dev.tsv"},
        fields={"text": "s1", "text_b": "s2", "label": "score"},
    )
    assert td.labels is None
    assert td.splits["train"] == [Example("a", "b", 5.0), Example("c", "d", 0.5)]
    assert td.splits["dev"][0].label == 3.0 and isinstance(td.splits["dev"][0].label, float)


CONLL_TRAIN = "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n"
CONLL_DEV = "Bonn NNP B-NP B-LOC\n"


def test_token_task_from_conll(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text(CONLL_TRAIN)
    (tmp_path / "dev.txt").write_text(CONLL_DEV)
    td = load(
        tmp_path,
        type="token",
        data={"format": "conll", "train": "train.txt", "dev": "dev.txt"},
        fields={"text": "tokens", "label": "ner"},
        labels=["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"],
    )
    assert td.splits["train"] == [
        Example(("EU", "rejects"), None, (3, 0)),
        Example(("Peter",), None, (1,)),
    ]
    assert td.splits["dev"] == [Example(("Bonn",), None, (5,))]


def test_token_tags_inferred_with_o_first(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"words": ["Ann", "ran"], "tags": ["B-PER", "O"]},
            {"words": ["in", "Oslo"], "tags": ["O", "B-LOC"]},
        ],
    )
    write_jsonl(tmp_path / "dev.jsonl", [{"words": ["Bo"], "tags": ["B-PER"]}])
    td = load(
        tmp_path,
        type="token",
        data={"train": "train.jsonl", "dev": "dev.jsonl"},
        fields={"text": "words", "label": "tags"},
    )
    assert td.labels == ["O", "B-LOC", "B-PER"]
    assert td.splits["train"][0] == Example(("Ann", "ran"), None, (2, 0))


# --- carving splits, max_examples ------------------------------------------------------------------


def _numbered(tmp_path: Path, n: int) -> None:
    write_jsonl(tmp_path / "all.jsonl", [{"text": f"row {i}", "label": i % 3} for i in range(n)])


def _texts(examples: list[Example]) -> list[str]:
    return [str(e.text) for e in examples]


def test_carving_from_path_is_seeded_disjoint_and_complete(tmp_path: Path) -> None:
    _numbered(tmp_path, 100)
    split = {"dev_fraction": 0.2, "test_fraction": 0.1, "seed": 7}
    spec = {"type": "classification", "data": {"path": "all.jsonl", "split": split}}
    a, b = load(tmp_path, **spec), load(tmp_path, **spec)
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 70, "dev": 20, "test": 10}
    assert a.splits == b.splits
    train, dev, test = (set(_texts(a.splits[s])) for s in ("train", "dev", "test"))
    assert not (train & dev or train & test or dev & test)
    assert len(train | dev | test) == 100
    # Each split keeps file order.
    assert _texts(a.splits["dev"]) == sorted(_texts(a.splits["dev"]), key=lambda t: int(t.split()[1]))
    spec["data"]["split"]["seed"] = 8  # type: ignore[index]
    assert load(tmp_path, **spec).splits["dev"] != a.splits["dev"]


def test_dev_carved_out_of_train_when_only_train_given(tmp_path: Path) -> None:
    _numbered(tmp_path, 50)
    td = load(tmp_path, type="classification", data={"train": "all.jsonl"})
    assert {k: len(v) for k, v in td.splits.items()} == {"train": 45, "dev": 5}
    assert td.labels == ["0", "1", "2"]


def test_callable_single_source_and_given_splits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"pm_build_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "def rows(n):\n    return [{'text': f'x{i}', 'label': i % 2} for i in range(n)]\n\n"
        "def splits():\n    return {'train': rows(4), 'validation': rows(2), 'test': rows(1)}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    td = load(tmp_path, type="classification", data={"callable": f"{name}:rows", "kwargs": {"n": 10}})
    assert {k: len(v) for k, v in td.splits.items()} == {"train": 9, "dev": 1}
    td = load(tmp_path, type="classification", data={"callable": f"{name}:splits"})
    assert {k: len(v) for k, v in td.splits.items()} == {"train": 4, "dev": 2, "test": 1}


def test_max_examples_is_a_seeded_sample(tmp_path: Path) -> None:
    _numbered(tmp_path, 200)
    data = {"path": "all.jsonl", "max_examples": {"train": 30, "dev": 5}}
    spec = {"type": "classification", "data": data}
    a, b = load(tmp_path, **spec), load(tmp_path, **spec)
    assert len(a.splits["train"]) == 30 and len(a.splits["dev"]) == 5
    assert a.splits == b.splits
    full = load(tmp_path, type="classification", data={"path": "all.jsonl"})
    assert set(_texts(a.splits["train"])) <= set(_texts(full.splits["train"]))
    assert _texts(a.splits["train"]) != _texts(full.splits["train"])[:30]  # a sample, not the head
    assert a.labels == full.labels


# --- bad rows --------------------------------------------------------------------------------------

BAD_ROWS = [
    # (task type, train records, field at fault, words expected in the message)
    ("classification", [{"label": 1}], "text", "missing"),
    ("classification", [{"text": "   ", "label": 1}], "text", "empty text"),
    ("classification", [{"text": "a", "label": None}], "label", "missing"),
    ("regression", [{"text": "a", "label": "high"}], "label", "expected a number"),
    ("regression", [{"text": "a", "label": "nan"}], "label", "finite"),
    ("token", [{"text": ["a", "b"], "label": ["O"]}], "label", "1 tags for 2 words"),
    ("token", [{"text": "a b", "label": ["O", "O"]}], "text", "list of words"),
]


@pytest.mark.parametrize(("type_", "bad", "field", "words"), BAD_ROWS)
def test_bad_row_error_names_task_split_file_row_field(
    tmp_path: Path, type_: str, bad: list[dict], field: str, words: str
) -> None:
    good = {"text": ["w"], "label": ["O"]} if type_ == "token" else {"text": "ok", "label": 1}
    extra = {"text": "ok2", "label": 0} if type_ == "classification" else good
    path = write_jsonl(tmp_path / "train.jsonl", [good, extra, *bad])
    write_jsonl(tmp_path / "dev.jsonl", [good])
    with pytest.raises(DataError) as info:
        load(tmp_path, type=type_, data={"train": "train.jsonl", "dev": "dev.jsonl"})
    msg = str(info.value)
    assert msg.startswith("tasks.t (train): ")
    assert f"{path} row 3, field '{field}'" in msg
    assert words in msg


def test_unknown_label_in_dev(tmp_path: Path) -> None:
    write_tsv(tmp_path / "train.tsv", "sentence\tlabel", ["a\t0", "b\t1"])
    path = write_tsv(tmp_path / "dev.tsv", "sentence\tlabel", ["c\t1", "d\tneutral"])
    with pytest.raises(DataError) as info:
        load(
            tmp_path,
            type="classification",
            data={"train": "train.tsv", "dev": "dev.tsv"},
            fields={"text": "sentence"},
        )
    assert str(info.value) == (
        f"tasks.t (dev): {path} row 3, field 'label': unknown label 'neutral'; known: 0, 1"
    )


def test_unknown_declared_tag_in_train(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", [{"text": ["a"], "label": ["B-XYZ"]}])
    expected = rf"{path} row 1, field 'label': unknown tag 'B-XYZ'; known: O, B-PER"
    with pytest.raises(DataError, match=expected):
        load(tmp_path, type="token", labels=["O", "B-PER"], data={"train": "train.jsonl"})


def test_malformed_line_is_a_bad_row(tmp_path: Path) -> None:
    records = [{"text": "a", "label": 0}, "{broken", {"text": "b", "label": 1}]
    path = write_jsonl(tmp_path / "train.jsonl", records)
    with pytest.raises(DataError, match=rf"{path} row 2: invalid JSON"):
        load(tmp_path, type="classification", data={"train": "train.jsonl"})


def test_skip_counts_exactly_and_logs_once_per_split(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"text": "a", "label": 0},
            {"text": "", "label": 1},
            "{broken",
            {"label": 1},
            {"text": "b", "label": 1},
        ],
    )
    write_jsonl(tmp_path / "dev.jsonl", [{"text": "c", "label": 0}, {"text": "d", "label": "neutral"}])
    with caplog.at_level(logging.WARNING, logger="promptmux.data"):
        data = {"train": "train.jsonl", "dev": "dev.jsonl", "on_bad_row": "skip"}
        td = load(tmp_path, type="classification", data=data)
    assert td.skipped == {"train": 3, "dev": 1}
    assert _texts(td.splits["train"]) == ["a", "b"] and _texts(td.splits["dev"]) == ["c"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "promptmux.data"]
    assert len(warnings) == 2
    assert "tasks.t (train): skipped 3 bad rows" in warnings[0]
    assert "tasks.t (dev): skipped 1 bad row " in warnings[1] and "neutral" in warnings[1]


def test_no_usable_rows(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"text": "", "label": 0}])
    with pytest.raises(DataError, match="no usable rows"):
        load(tmp_path, type="classification", data={"train": "train.jsonl", "on_bad_row": "skip"})


def test_missing_file_names_the_key(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "train.jsonl", [{"text": "a", "label": 0}])
    with pytest.raises(DataError, match=r"tasks\.t\.data\.dev: file not found: .*dev\.jsonl"):
        load(tmp_path, type="classification", data={"train": "train.jsonl", "dev": "dev.jsonl"})
