"""Predictor input checks and outputs, batch prediction from files, and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from helpers import single_thread, tiny_config, write_jsonl, write_tasks  # noqa: F401  (fixture)
from promptmux.cli import app
from promptmux.config import load_config
from promptmux.errors import BundleError, ConfigError, DataError, PromptmuxError
from promptmux.serve.batch import predict_file
from promptmux.serve.predictor import Predictor, bio_entities
from promptmux.train.trainer import train

pytestmark = pytest.mark.usefixtures("single_thread")

TASK_NAMES = ["sentiment", "pair", "ner"]


@pytest.fixture(scope="module")
def workdir(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Task files and a YAML config (relative paths, as a user would write it)."""
    folder = tmp_path_factory.mktemp("cli")
    tasks = write_tasks(folder, TASK_NAMES, n_train=120, n_dev=24)
    raw = tiny_config(tiny_backbone, tasks, folder / "run", train={"max_steps": 60, "eval_every": 30})
    raw["output"]["dir"] = "runs/main"  # relative: resolved against the current directory
    (folder / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def run_dir(workdir: Path, single_thread) -> Path:
    out = workdir / "runs" / "main"
    train(load_config(workdir / "config.yaml", [f"output.dir={out}"]))
    return out


@pytest.fixture(scope="module")
def predictor(run_dir: Path) -> Predictor:
    return Predictor.from_pretrained(run_dir)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --- Predictor.predict ----------------------------------------------------------------------------


def test_unknown_task_names_the_known_ones(predictor: Predictor) -> None:
    with pytest.raises(DataError, match=r"unknown task 'topic'.*sentiment, pair, ner"):
        predictor.predict("topic", ["good"])


@pytest.mark.parametrize(
    "task, inputs, match",
    [
        ("sentiment", [""], r"input 0: empty text"),
        ("sentiment", ["good", "   "], r"input 1: empty text"),
        ("pair", [("the plot", " ")], r"input 0: empty text"),
        ("pair", [("", "was good")], r"input 0: empty text"),
        ("sentiment", [123], r"input 0: expected a text or a \(text_a, text_b\) pair, got int"),
        ("sentiment", ["good", None], r"input 1: expected a text.*got NoneType"),
        ("sentiment", [["a", "b", "c"]], r"input 0: expected a text.*got list"),
        ("pair", [("a", 5)], r"input 0: expected a text.*got tuple"),
        ("ner", [""], r"input 0: a token task needs a non-empty text or list of words"),
        ("ner", [["john", " "]], r"input 0: a token task needs"),
        ("ner", [[]], r"input 0: a token task needs"),
        ("ner", [["john", 5]], r"input 0: a token task needs"),
        ("ner", ["john", None], r"input 1: a token task needs"),
        ("ner", [42], r"input 0: a token task needs"),
    ],
)
def test_predict_rejects_bad_inputs(predictor: Predictor, task: str, inputs: list[Any], match: str) -> None:
    with pytest.raises(DataError, match=match):
        predictor.predict(task, inputs)


def test_predict_single_inputs_and_empty_list(predictor: Predictor) -> None:
    (one,) = predictor.predict("sentiment", "the movie was good")
    assert one["label"] in ("negative", "positive")
    assert one["score"] == pytest.approx(max(one["probabilities"].values()), abs=1e-6)
    assert sum(one["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert len(predictor.predict("pair", ("the film", "it was great"))) == 1
    assert predictor.predict("sentiment", []) == []
    many = predictor.predict("sentiment", ["the movie was good", "the movie was awful", "fun"])
    assert len(many) == 3
    # Surrounding whitespace does not change a prediction.
    assert predictor.predict("sentiment", ["  the movie was good \n"]) == predictor.predict("sentiment", ["the movie was good"])


def test_token_output_from_text_or_words(predictor: Predictor) -> None:
    from_text = predictor.predict("ner", "mary works in london city")
    from_words = predictor.predict("ner", [["mary", "works", "in", "london", "city"]])
    assert from_text == from_words
    (pred,) = from_text
    tokens = pred["tokens"]
    assert [t["word"] for t in tokens] == ["mary", "works", "in", "london", "city"]
    tags = [t["tag"] for t in tokens]
    assert set(tags) <= {"O", "B-PER", "B-LOC", "I-LOC"}
    assert all(0 < t["score"] <= 1 for t in tokens)
    assert pred["entities"] == bio_entities([t["word"] for t in tokens], tags)


def test_token_words_past_max_length_get_o(predictor: Predictor) -> None:
    words = ["john"] * 40  # max_length 32 leaves room for 30 words
    (pred,) = predictor.predict("ner", [words])
    assert len(pred["tokens"]) == 40
    assert [t["tag"] for t in pred["tokens"][30:]] == ["O"] * 10
    assert all(t["score"] is None for t in pred["tokens"][30:])
    assert all(t["score"] is not None for t in pred["tokens"][:30])


@pytest.mark.parametrize(
    "tags, expected",
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
        (["O", "I-LOC", "I-LOC", "O"], [("LOC", 1, 3)]),  # an I- without B- starts a span
        (["B-PER", "I-LOC", "B-PER", "B-PER"], [("PER", 0, 1), ("LOC", 1, 2), ("PER", 2, 3), ("PER", 3, 4)]),
        (["B-MISC", "I-MISC", "I-MISC", "I-MISC"], [("MISC", 0, 4)]),
        (["B-ORG", "O", "I-ORG", "O"], [("ORG", 0, 1), ("ORG", 2, 3)]),
        (["O", "NOUN", "O", "O"], []),  # tags without a BIO prefix name no entity
    ],
)
def test_bio_entities(tags: list[str], expected: list[tuple[str, int, int]]) -> None:
    words = ["w0", "w1", "w2", "w3"]
    spans = bio_entities(words, tags)
    assert [(s["type"], s["start"], s["end"]) for s in spans] == expected
    assert [s["text"] for s in spans] == [" ".join(words[a:b]) for _, a, b in expected]


# --- predict_file ---------------------------------------------------------------------------------


@pytest.fixture()
def counting(predictor: Predictor, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the number of inputs of each `predict` call."""
    calls: list[int] = []
    real = predictor.predict

    def wrapped(task, inputs, batch_size=64):
        calls.append(len(inputs))
        return real(task, inputs, batch_size=batch_size)

    monkeypatch.setattr(predictor, "predict", wrapped)
    return calls


def test_predict_file_jsonl_streams_in_chunks(predictor: Predictor, counting: list[int], tmp_path: Path) -> None:
    texts = [f"the movie was {w}" for w in ["good", "bad", "fun", "awful", "great", "boring", "best", "worst"]]
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": t, "id": i} for i, t in enumerate(texts)])
    out = tmp_path / "out" / "preds.jsonl"
    assert predict_file(predictor, "sentiment", src, out, chunk_size=3) == 8
    assert counting == [3, 3, 2]
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["row"] for r in lines] == list(range(1, 9))  # JSONL rows are line numbers
    expected = predictor.predict("sentiment", texts)
    assert [{k: v for k, v in r.items() if k != "row"} for r in lines] == expected
    assert leftovers(out.parent) == []


def test_predict_file_csv_pairs(predictor: Predictor, tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text('premise,hypothesis\nthe film,it was great\n"the plot, again",it was awful\n', encoding="utf-8")
    out = tmp_path / "preds.jsonl"
    n = predict_file(predictor, "pair", src, out, text_field="premise", text_b_field="hypothesis", chunk_size=1)
    assert n == 2
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["row"] for r in lines] == [2, 3]  # CSV rows are line numbers, header on line 1
    expected = predictor.predict("pair", [("the film", "it was great"), ("the plot, again", "it was awful")])
    assert [r["label"] for r in lines] == [e["label"] for e in expected]


def test_predict_file_token_task(predictor: Predictor, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"tokens": ["john", "works"]}, {"tokens": "mary in paris"}])
    out = tmp_path / "preds.jsonl"
    assert predict_file(predictor, "ner", src, out, text_field="tokens") == 2
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [len(r["tokens"]) for r in lines] == [2, 3]


@pytest.mark.parametrize(
    "bad_line, match",
    [
        ("{not json", r"row 5: invalid JSON"),
        ('{"label": 1}', r"row 5: missing field 'text'"),
        ('{"text": "   "}', r"row 5\b.*empty text"),
        ('{"text": null}', r"row 5\b"),
        ('{"text": ["a", "list"]}', r"row 5\b"),
    ],
)
def test_predict_file_bad_row_keeps_existing_output(
    predictor: Predictor, counting: list[int], tmp_path: Path, bad_line: str, match: str
) -> None:
    good = [json.dumps({"text": f"the movie was {w}"}) for w in ["good", "bad", "fun", "awful", "great", "best"]]
    src = write_jsonl(tmp_path / "in.jsonl", good[:4] + [bad_line] + good[4:])
    out = tmp_path / "preds.jsonl"
    out.write_text("previous results\n", encoding="utf-8")
    with pytest.raises(DataError, match=match) as info:
        predict_file(predictor, "sentiment", src, out, chunk_size=2)
    assert str(src) in str(info.value)
    assert out.read_text(encoding="utf-8") == "previous results\n"
    assert leftovers(tmp_path) == [], "a temporary file was left behind"
    assert counting[:2] == [2, 2]  # the rows before the bad one were streamed, not read up front


def test_predict_file_unknown_format_and_task(predictor: Predictor, tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("good\n")
    with pytest.raises(DataError, match=r"in\.txt: cannot tell the format"):
        predict_file(predictor, "sentiment", src, tmp_path / "o.jsonl")
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "good"}])
    with pytest.raises(DataError, match="unknown task"):
        predict_file(predictor, "nope", src, tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists() and leftovers(tmp_path) == []


# --- the command line -----------------------------------------------------------------------------


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch, workdir: Path) -> CliRunner:
    monkeypatch.chdir(workdir)
    return CliRunner()


def test_cli_train_with_overrides(cli: CliRunner, workdir: Path, run_dir: Path) -> None:
    out = workdir / "runs" / "cli-train"
    overrides = ["train.max_steps=4", "train.eval_every=2", "tasks.sentiment.weight=2", f"output.dir={out}"]
    result = cli.invoke(app, ["train", "config.yaml", *overrides])
    assert result.exit_code == 0, result.output
    assert "completed after 4 steps" in result.stdout and str(out) in result.stdout
    assert (out / "best" / "bundle.json").is_file() and (out / "last" / "bundle.json").is_file()
    assert json.loads((out / "results.json").read_text())["steps"] == 4
    saved = yaml.safe_load((out / "best" / "config.yaml").read_text())
    assert saved["tasks"]["sentiment"]["weight"] == 2.0 and saved["train"]["max_steps"] == 4
    # A second run into the same folder is refused and names the key.
    again = cli.invoke(app, ["train", "config.yaml", "train.max_steps=4", f"output.dir={out}"])
    assert again.exit_code != 0 and isinstance(again.exception, ConfigError)
    assert "output.dir" in str(again.exception)


def test_cli_eval_writes_json_and_report(cli: CliRunner, run_dir: Path) -> None:
    result = cli.invoke(app, ["eval", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "aggregate (dev)" in result.stdout
    data = json.loads((run_dir / "eval_dev.json").read_text())
    assert set(data["metrics"]) == set(TASK_NAMES) and data["split"] == "dev"
    assert data["sizes"] == {t: 24 for t in TASK_NAMES}
    assert data["bundle"] == str(run_dir / "best")
    report = (run_dir / "report_dev.md").read_text()
    assert all(f"| {t} |" in report for t in TASK_NAMES)
    # The scores equal those of the training run's evaluation of the same (best) bundle.
    results = json.loads((run_dir / "results.json").read_text())
    for t in TASK_NAMES:
        for metric, value in results["best_metrics"][t].items():
            assert data["metrics"][t][metric] == pytest.approx(value, abs=1e-6)


def test_cli_eval_on_moved_data_with_an_override(cli: CliRunner, run_dir: Path, workdir: Path, tmp_path: Path) -> None:
    rows = (workdir / "sentiment" / "dev.jsonl").read_text(encoding="utf-8").splitlines()[:10]
    moved = tmp_path / "moved-dev.jsonl"
    moved.write_text("\n".join(rows) + "\n", encoding="utf-8")
    reports = tmp_path / "reports"
    from promptmux.eval.report import evaluate_bundle

    result = evaluate_bundle(run_dir, "dev", [f"tasks.sentiment.data.dev={moved}"], report_dir=reports)
    assert result["sizes"]["sentiment"] == 10 and result["sizes"]["ner"] == 24
    assert (reports / "eval_dev.json").is_file() and (reports / "report_dev.md").is_file()


def test_cli_eval_missing_split(cli: CliRunner, run_dir: Path) -> None:
    result = cli.invoke(app, ["eval", str(run_dir), "--split", "test"])
    assert result.exit_code != 0 and isinstance(result.exception, BundleError)
    assert "'test'" in str(result.exception)


def test_cli_predict_texts(cli: CliRunner, run_dir: Path, predictor: Predictor) -> None:
    result = cli.invoke(app, ["predict", str(run_dir), "--task", "sentiment", "the movie was good", "awful"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in lines] == ["the movie was good", "awful"]
    expected = predictor.predict("sentiment", ["the movie was good", "awful"])
    assert [r["label"] for r in lines] == [e["label"] for e in expected]
    pair = cli.invoke(app, ["predict", str(run_dir), "-t", "pair", "the film ||| it was great"])
    assert pair.exit_code == 0, pair.output
    (row,) = [json.loads(line) for line in pair.stdout.splitlines()]
    assert row["label"] == predictor.predict("pair", ("the film", "it was great"))[0]["label"]


def test_cli_predict_file(cli: CliRunner, run_dir: Path, workdir: Path, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "the movie was good"}, {"text": "boring"}])
    out = tmp_path / "out.jsonl"
    result = cli.invoke(app, ["predict", str(run_dir), "--task", "sentiment", "--input", str(src), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 2 predictions" in result.stderr
    assert len(out.read_text().splitlines()) == 2
    to_stdout = cli.invoke(app, ["predict", str(run_dir), "--task", "sentiment", "-i", str(src)])
    assert to_stdout.exit_code == 0
    assert to_stdout.stdout.splitlines() == out.read_text().splitlines()


def test_cli_predict_needs_inputs(cli: CliRunner, run_dir: Path, tmp_path: Path) -> None:
    result = cli.invoke(app, ["predict", str(run_dir), "--task", "sentiment"])
    assert result.exit_code != 0 and isinstance(result.exception, PromptmuxError)
    src = write_jsonl(tmp_path / "in.jsonl", [{"text": "good"}])
    both = cli.invoke(app, ["predict", str(run_dir), "--task", "sentiment", "-i", str(src), "good"])
    assert both.exit_code != 0 and "not both" in str(both.exception)


def test_cli_tasks_on_a_config(cli: CliRunner, run_dir: Path) -> None:
    result = cli.invoke(app, ["tasks", "config.yaml"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert set(lines) == set(TASK_NAMES)
    assert "classification" in lines["sentiment"] and "train=120" in lines["sentiment"] and "dev=24" in lines["sentiment"]
    assert "labels: negative, positive" in lines["sentiment"] and "metric: accuracy" in lines["sentiment"]
    assert "token" in lines["ner"] and "labels: O, B-LOC, B-PER, I-LOC" in lines["ner"]
    with_override = cli.invoke(app, ["tasks", "config.yaml", "tasks.ner.metric=accuracy"])
    assert "metric: accuracy" in {line.split()[0]: line for line in with_override.stdout.splitlines()}["ner"]


@pytest.mark.parametrize("which", ["run", "best", "last"])
def test_cli_tasks_on_a_bundle(cli: CliRunner, run_dir: Path, which: str) -> None:
    path = run_dir if which == "run" else run_dir / which
    result = cli.invoke(app, ["tasks", str(path)])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert set(lines) == set(TASK_NAMES)
    assert "labels: no, yes" in lines["pair"] and "metric: entity_f1" in lines["ner"]


def test_cli_tasks_on_a_folder_without_bundle(cli: CliRunner, tmp_path: Path) -> None:
    result = cli.invoke(app, ["tasks", str(tmp_path)])
    assert result.exit_code != 0 and isinstance(result.exception, BundleError)


def test_cli_bad_config_names_the_key(cli: CliRunner, workdir: Path) -> None:
    result = cli.invoke(app, ["train", "config.yaml", "train.batch_size=0"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError) and "train.batch_size" in str(result.exception)
    result = cli.invoke(app, ["tasks", "config.yaml", "tasks.sentiment.metrc=f1"])
    assert result.exit_code != 0 and "tasks.sentiment.metrc: unknown key" in str(result.exception)


def test_main_maps_errors_to_exit_code_2(workdir: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "promptmux.cli", "train", str(workdir / "config.yaml"), "train.lr=-1"],
        capture_output=True, text=True, env=env, cwd=workdir, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and "train.lr" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "task, fields, record, match",
    [
        (
            "pair", ("premise", "hypothesis"), {"premise": "the film", "hypothesis": None},
            r"row 2, field 'hypothesis': expected text, got NoneType",
        ),
        ("pair", ("premise", "hypothesis"), {"premise": "the film"}, r"row 2: missing field 'hypothesis'"),
        ("ner", ("tokens", None), {"tokens": None}, r"row 2: a token task needs"),
        ("ner", ("tokens", None), {"tokens": ["john", ""]}, r"row 2: a token task needs"),
    ],
)
def test_predict_file_bad_fields_name_the_row(
    predictor: Predictor, tmp_path: Path, task: str, fields: tuple[str, str | None], record: dict, match: str
) -> None:
    first = {"premise": "a film", "hypothesis": "it was good"} if task == "pair" else {"tokens": ["john"]}
    src = write_jsonl(tmp_path / "in.jsonl", [first, record])
    with pytest.raises(DataError, match=match):
        predict_file(predictor, task, src, tmp_path / "out.jsonl", text_field=fields[0], text_b_field=fields[1])
    assert not (tmp_path / "out.jsonl").exists() and leftovers(tmp_path) == []
