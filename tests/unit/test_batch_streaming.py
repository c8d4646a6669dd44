"""`promptmux predict --input` on a large generated JSONL: bounded memory, atomic output."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import pytest
from helpers import single_thread  # noqa: F401  (fixture)
from serve_support import train_bundle
from typer.testing import CliRunner

import promptmux.serve.batch as batch_mod
from promptmux.cli import app as cli
from promptmux.errors import DataError
from promptmux.serve.batch import predict_file
from promptmux.serve.predictor import Predictor

pytestmark = pytest.mark.usefixtures("single_thread")

WORDS = "the movie was good bad fun awful great boring best worst very really and it this that".split()


@pytest.fixture(scope="module")
def predictor(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory, single_thread) -> Predictor:
    return Predictor.from_pretrained(train_bundle(tiny_backbone, tmp_path_factory.mktemp("batch"), steps=10))


def big_jsonl(path: Path, rows: int, seed: int = 0, bad_at: int | None = None) -> Path:
    """`rows` lines of 4-12 words each (plus padding fields, so rows weigh like real records)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            if i == bad_at:
                f.write('{"text": ')  # a broken line
                f.write("\n")
                continue
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12)))
            f.write(json.dumps({"id": i, "text": text, "meta": "x" * 64}) + "\n")
    return path


def peak_bytes(predictor: Predictor, src: Path, out: Path) -> int:
    tracemalloc.start()
    try:
        predict_file(predictor, "sentiment", src, out, chunk_size=256, batch_size=128)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_as_the_input_grows(predictor: Predictor, tmp_path: Path) -> None:
    small = big_jsonl(tmp_path / "small.jsonl", 2_000)
    large = big_jsonl(tmp_path / "large.jsonl", 20_000, seed=1)
    peak_small = peak_bytes(predictor, small, tmp_path / "small.out.jsonl")
    peak_large = peak_bytes(predictor, large, tmp_path / "large.out.jsonl")
    size_large = large.stat().st_size
    # Ten times the rows, about the same peak: memory follows chunk_size, not the file. Reading
    # the whole file (or keeping its predictions) would add several times its size.
    assert peak_large < peak_small * 1.5 + 512 * 1024, (peak_small, peak_large, size_large)
    assert peak_large < size_large / 2, (peak_large, size_large)
    lines = (tmp_path / "large.out.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 20_000
    assert [json.loads(lines[i])["row"] for i in (0, 1, 19_999)] == [1, 2, 20_000]


def test_rows_are_read_lazily_and_predicted_chunk_by_chunk(predictor: Predictor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = big_jsonl(tmp_path / "in.jsonl", 5_000)
    read = {"rows": 0}
    real_read = batch_mod.read_records

    def counting_reader(*args, **kwargs):
        for row in real_read(*args, **kwargs):
            read["rows"] += 1
            yield row

    calls: list[tuple[int, int]] = []  # (inputs in this call, rows read from the file so far)
    real_predict = predictor.predict

    def counting_predict(task, inputs, batch_size=64):
        calls.append((len(inputs), read["rows"]))
        return real_predict(task, inputs, batch_size=batch_size)

    monkeypatch.setattr(batch_mod, "read_records", counting_reader)
    monkeypatch.setattr(predictor, "predict", counting_predict)
    assert predict_file(predictor, "sentiment", src, tmp_path / "out.jsonl", chunk_size=1000) == 5_000
    assert [n for n, _ in calls] == [1000] * 5
    assert [r for _, r in calls] == [1000, 2000, 3000, 4000, 5000]  # never more than one chunk ahead


def test_failure_late_in_a_large_file_leaves_no_partial_output(predictor: Predictor, tmp_path: Path) -> None:
    src = big_jsonl(tmp_path / "in.jsonl", 8_000, bad_at=7_500)
    out = tmp_path / "out" / "preds.jsonl"
    out.parent.mkdir()
    out.write_text("earlier results\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"in\.jsonl row 7501: invalid JSON"):
        predict_file(predictor, "sentiment", src, out, chunk_size=500)
    assert out.read_text(encoding="utf-8") == "earlier results\n"  # untouched, though 7,000 rows were predicted
    assert sorted(p.name for p in out.parent.iterdir()) == ["preds.jsonl"], "a temporary file was left behind"


def test_cli_predict_large_file_to_file_and_stdout(predictor: Predictor, tmp_path: Path) -> None:
    src = big_jsonl(tmp_path / "in.jsonl", 3_000)
    out = tmp_path / "preds.jsonl"
    runner = CliRunner()
    result = runner.invoke(cli, ["predict", str(predictor.folder), "--task", "sentiment", "--input", str(src), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert len(out.read_text(encoding="utf-8").splitlines()) == 3_000
    result = runner.invoke(cli, ["predict", str(predictor.folder), "--task", "sentiment", "--input", str(src)])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == out.read_text(encoding="utf-8").splitlines()
