"""Task relationships: the affinity recorder, suggested groups, heatmaps and `promptmux analyze`."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import single_thread, tiny_config, write_tasks  # noqa: F401  (fixture)
from typer.testing import CliRunner

from promptmux.analysis.affinity import AffinityRecorder, cosine_matrix
from promptmux.analysis.groups import (
    best_groupings,
    partition_score,
    partitions,
    received,
    recommend,
)
from promptmux.analysis.plots import heatmap, value_scale
from promptmux.analysis.report import clear_entries, standard_errors, suggest, write_report
from promptmux.cli import app
from promptmux.config import config_from_dict
from promptmux.errors import ConfigError
from promptmux.train.trainer import Callback, train

pytestmark = pytest.mark.usefixtures("single_thread")

TASKS = ["sentiment", "score", "ner"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workdir(tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three tiny tasks of three types and a YAML config that trains them together."""
    folder = tmp_path_factory.mktemp("analysis")
    tasks = write_tasks(folder, TASKS, n_train=64, n_dev=16)
    raw = tiny_config(
        tiny_backbone, tasks, folder / "runs" / "main", train={"max_steps": 12, "eval_every": 6}
    )
    (folder / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return folder


def config(workdir: Path, out: Path, **train: object):
    raw = yaml.safe_load((workdir / "config.yaml").read_text())
    raw["train"].update(train)
    raw["output"] = {"dir": str(out), "tensorboard": False, "overwrite": True}
    return config_from_dict(raw, base_dir=workdir)


# --- groups (pure) -------------------------------------------------------------------------------


def block_matrix(
    blocks: list[list[int]], n: int, inside: float = 1.0, across: float = -0.5
) -> np.ndarray:
    a = np.full((n, n), across)
    for b in blocks:
        for i in b:
            for j in b:
                a[i, j] = inside
    return a


@pytest.mark.parametrize("n, bell", [(1, 1), (2, 2), (3, 5), (4, 15), (5, 52), (6, 203), (7, 877)])
def test_partitions_are_all_distinct_set_partitions(n: int, bell: int) -> None:
    seen = {tuple(tuple(g) for g in sorted(p)) for p in partitions(n)}
    assert len(seen) == bell
    for p in seen:
        assert sorted(i for g in p for i in g) == list(range(n))


def test_received_reads_rows_as_the_helping_task() -> None:
    # a[i][j]: effect of a step on i on j's loss. Task 0 helps 1 (+1); task 1 hurts 0 (-0.2).
    a = np.array([[5.0, 1.0], [-0.2, 5.0]])
    assert received(a, [0, 1]).tolist() == pytest.approx([-0.2, 1.0])  # diagonal ignored
    assert received(a, [1]).tolist() == [0.0]
    assert partition_score(a, [[0, 1]]) == pytest.approx(0.4)
    assert partition_score(a, [[0], [1]]) == 0.0


def test_block_structure_is_found_and_recommended() -> None:
    names = ["a", "b", "c", "d", "e"]
    a = block_matrix([[0, 2, 4], [1, 3]], 5)
    found = best_groupings(a, names)
    assert [g.n_groups for g in found] == [1, 2, 3, 4, 5]
    assert found[1].groups == (("a", "c", "e"), ("b", "d"))
    assert found[1].score == pytest.approx(1.0)
    assert found[4].score == 0.0  # all singletons
    assert recommend(found).groups == (("a", "c", "e"), ("b", "d"))


def test_all_harmful_affinity_recommends_training_tasks_apart() -> None:
    a = np.full((4, 4), -0.3)
    best = recommend(best_groupings(a, ["w", "x", "y", "z"]))
    assert best.groups == (("w",), ("x",), ("y",), ("z",))


def test_ties_and_near_ties_go_to_fewer_groups() -> None:
    a = np.zeros((3, 3))  # every partition scores 0
    assert recommend(best_groupings(a, ["a", "b", "c"])).n_groups == 1
    # One block of four with noise: its split into pairs may score a hair higher than the block.
    rng = np.random.default_rng(1)
    noisy = np.ones((4, 4)) + rng.normal(0, 0.01, (4, 4))
    found = best_groupings(noisy, ["a", "b", "c", "d"])
    assert recommend(found).groups == (("a", "b", "c", "d"),)
    assert recommend(found, tolerance=0.0).score == max(g.score for g in found)
    with pytest.raises(ValueError, match="tolerance"):
        recommend(found, tolerance=1.5)


def test_greedy_merging_above_the_exhaustive_limit_finds_blocks() -> None:
    names = [f"t{i}" for i in range(11)]
    blocks = [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9, 10]]
    rng = np.random.default_rng(0)
    a = block_matrix(blocks, 11) + rng.normal(0, 0.05, (11, 11))
    found = best_groupings(a, names)
    assert len(found) == 11
    assert recommend(found).groups == tuple(tuple(names[i] for i in b) for b in blocks)


@pytest.mark.parametrize(
    "matrix, tasks, match",
    [
        (np.zeros((2, 3)), ["a", "b"], "must be 2x2"),
        (np.array([[0.0, np.nan], [0.0, 0.0]]), ["a", "b"], "non-finite"),
        (np.zeros((2, 2)), ["a", "a"], "unique"),
        (np.zeros((0, 0)), [], "no tasks"),
    ],
)
def test_groupings_reject_bad_matrices(matrix: np.ndarray, tasks: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        best_groupings(matrix, tasks)


# --- plots ---------------------------------------------------------------------------------------


def test_heatmap_writes_a_png_and_checks_its_shape(tmp_path: Path) -> None:
    path = heatmap(
        [[1.0, -0.2], [0.3, 1.0]], ["a", "b"], tmp_path / "sub" / "h.png", "t", "rows", "cols"
    )
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="must be 3x3"):
        heatmap([[1.0, 0.0], [0.0, 1.0]], ["a", "b", "c"], tmp_path / "bad.png", "t", "r", "c")
    # The scale follows the off-diagonal values (the diagonal is usually far larger).
    assert value_scale(np.array([[3e-2, 2e-4], [-5e-4, 1e-2]])) == -4
    assert value_scale(np.array([[1.0, 0.5], [-1.0, 1.0]])) == 0


def test_standard_errors_and_clear_entries() -> None:
    records = [
        {"cosine": [[1.0, 0.1], [0.1, 1.0]], "lookahead": None},
        {"cosine": [[1.0, 0.3], [0.3, 1.0]], "lookahead": [[0.5, 0.1], [0.2, 0.5]]},
    ]
    sem = standard_errors(records, "cosine")
    np.testing.assert_allclose(sem, [[0.0, 0.1], [0.1, 0.0]], atol=1e-12)
    assert standard_errors(records, "lookahead") is None  # one record holds it
    assert clear_entries([[1.0, 0.19], [0.25, 1.0]], sem) == (1, 2)
    assert clear_entries([[1.0, 0.5], [0.5, 1.0]], None) == (0, 2)


def test_noisy_affinities_do_not_drive_the_recommendation() -> None:
    """a<->b is large on average but flips sign between records; b<->c is small and steady."""

    def z(ab: float, bc: float) -> list[list[float]]:
        return [[5.0, ab, 0.0], [ab, 5.0, bc], [0.0, bc, 5.0]]

    records = [{"lookahead": z(ab, bc)} for ab, bc in ((6.0, 0.9), (-3.0, 1.1), (3.0, 1.0))]
    mean = np.mean([r["lookahead"] for r in records], axis=0).tolist()
    cos = np.eye(3).tolist()
    groups = suggest(
        {"tasks": ["a", "b", "c"], "lookahead": mean, "cosine": cos, "records": records}
    )
    assert groups["lookahead"]["recommended"]["groups"] == [["a", "b"], ["c"]]  # the raw means
    assert groups["basis"] == "lookahead_clear"
    assert groups["recommended"]["groups"] == [["a"], ["b", "c"]]
    # With nothing clear of the noise, the raw means decide (and the report says so).
    flat = [{"lookahead": z(ab, 0.0)} for ab in (6.0, -3.0, 3.0)]
    mean = np.mean([r["lookahead"] for r in flat], axis=0).tolist()
    groups = suggest({"tasks": ["a", "b", "c"], "lookahead": mean, "cosine": cos, "records": flat})
    assert groups["basis"] == "lookahead" and "lookahead_clear" not in groups


def test_report_without_lookahead_groups_by_cosine_and_marks_gaps(tmp_path: Path) -> None:
    """Every record at η = 0 (no lookahead), a stopped run and a baseline without dev metrics."""
    cos = [[1.0, 0.4, -0.2], [0.4, 1.0, -0.3], [-0.2, -0.3, 1.0]]
    record = {"step": 5, "lr": 0.0, "losses": {}, "cosine": cos, "lookahead": None, "seconds": 1.0}
    summary = {
        "tasks": ["a", "b", "c"], "every": 5, "probe_size": 4, "lookahead_precision": "fp32",
        "total_steps": 10, "n_records": 1, "n_lookahead_records": 0, "cosine": cos,
        "lookahead": None, "records": [record], "steps": 5, "stopped": "sigterm",
    }  # fmt: skip
    baselines = {"a": {"metric": "accuracy", "multi": 80.0, "single": None, "delta": None}}
    payload = write_report(tmp_path, summary, baselines, "promptmux analyze x.yaml", "x.yaml")
    assert payload["groups"]["basis"] == "cosine"
    assert payload["groups"]["recommended"]["groups"] == [["a", "b"], ["c"]]
    assert (tmp_path / "gradient_cosine.png").is_file()
    assert not (tmp_path / "lookahead_affinity.png").exists()
    md = (tmp_path / "affinity.md").read_text()
    assert "stopped early (sigterm) after 5 steps" in md
    assert "| a | accuracy | n/a | 80.00 | n/a |" in md
    assert "## Lookahead task affinity" not in md
    assert json.loads((tmp_path / "affinity.json").read_text())["lookahead_sem"] is None


# --- the recorder in a real (tiny) training run --------------------------------------------------


def test_recorder_measures_finite_matrices_and_logs_events(workdir: Path, tmp_path: Path) -> None:
    recorder = AffinityRecorder(every=4, probe_size=8)
    train(config(workdir, tmp_path / "run"), callbacks=[recorder])
    s = recorder.summary()
    assert s["tasks"] == TASKS and s["n_records"] == 3 and s["total_steps"] == 12
    assert [r["step"] for r in s["records"]] == [4, 8, 12]
    # Linear decay without warmup: η is 0 after the last step, so that record has no lookahead.
    assert s["records"][-1]["lookahead"] is None and s["n_lookahead_records"] == 2
    for r in s["records"][:2]:
        cos, z = np.array(r["cosine"]), np.array(r["lookahead"])
        assert cos.shape == z.shape == (3, 3)
        assert np.isfinite(cos).all() and np.isfinite(z).all()
        np.testing.assert_allclose(np.diag(cos), 1.0, atol=1e-6)
        np.testing.assert_allclose(cos, cos.T, atol=1e-9)
        assert (np.abs(cos) <= 1.0).all()
        # A small step along a task's own gradient lowers that task's loss.
        assert (np.diag(z) > 0).all(), z
        # To first order Z[i][j] = η g_i·g_j / L_j: its sign follows the gradient cosine.
        clear = np.abs(cos) > 0.2
        assert (np.sign(z[clear]) == np.sign(cos[clear])).all(), (cos, z)
        assert r["lr"] > 0 and set(r["losses"]) == set(TASKS)
    np.testing.assert_allclose(s["cosine"], np.mean([r["cosine"] for r in s["records"]], axis=0))
    events = [
        json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    ]
    affinity = [e for e in events if e["event"] == "affinity"]
    assert [e["step"] for e in affinity] == [4, 8, 12]
    assert affinity[0]["cosine"]["ner"]["ner"] == pytest.approx(1.0)
    assert set(affinity[0]["lookahead"]["sentiment"]) == set(TASKS)


class _DrawsRandomNumbers(Callback):
    """A careless callback: consumes the training RNG (the bit-identity test must catch this)."""

    def on_step_end(self, ctx) -> None:
        torch.rand(1)


def _final_weights(cfg, callbacks) -> dict[str, torch.Tensor]:
    result = train(cfg, callbacks=callbacks)
    return {k: v.detach().clone() for k, v in result.model.state_dict().items()}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_recorder_leaves_training_bit_identical(
    workdir: Path, tmp_path: Path, precision: str
) -> None:
    # Encoder dropout is on (p=0.1), so any use of the training RNG would change the weights.
    cfg = config(workdir, tmp_path / "run", max_steps=8, eval_every=8, precision=precision)
    plain = _final_weights(cfg, [])
    recorded = _final_weights(cfg, [AffinityRecorder(every=2, probe_size=8)])
    assert plain.keys() == recorded.keys()
    different = [k for k in plain if not torch.equal(plain[k], recorded[k])]
    assert not different, different
    # The check can fail: a callback that touches the RNG does change training.
    careless = _final_weights(cfg, [_DrawsRandomNumbers()])
    assert any(not torch.equal(plain[k], careless[k]) for k in plain)


def test_recorder_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="--every must be an integer >= 1"):
        AffinityRecorder(every=0)
    with pytest.raises(ConfigError, match="--probe-size must be an integer >= 1"):
        AffinityRecorder(every=1, probe_size=0)
    with pytest.raises(ConfigError, match="no affinity was recorded"):
        AffinityRecorder(every=5).summary()


# --- promptmux analyze ---------------------------------------------------------------------------


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch, workdir: Path) -> CliRunner:
    monkeypatch.chdir(workdir)
    return CliRunner()


def test_cli_analyze_writes_heatmaps_tables_and_groups(
    cli: CliRunner, workdir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    run = tmp_path / "run"
    args = [
        "analyze",
        "config.yaml",
        "train.max_steps=10",
        f"output.dir={run}",
        "--every",
        "3",
        "--probe-size",
        "8",
        "--out",
        str(out),
    ]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert re.search(r"suggested groups \(lookahead(_clear)?\): \{", result.stdout)
    for name in ("lookahead_affinity.png", "gradient_cosine.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    assert (run / "best" / "bundle.json").is_file()  # the training run itself is a normal run
    data = json.loads((out / "affinity.json").read_text())
    assert data["tasks"] == TASKS and data["n_records"] == 3 and data["baselines"] is None
    assert np.array(data["lookahead"]).shape == (3, 3) and np.array(data["cosine"]).shape == (3, 3)
    groups = data["groups"]
    assert groups["basis"] in ("lookahead_clear", "lookahead")
    assert [len(g["groups"]) for g in groups["lookahead"]["by_count"]] == [1, 2, 3]
    members = sorted(t for g in groups["recommended"]["groups"] for t in g)
    assert members == sorted(TASKS)
    md = (out / "affinity.md").read_text()
    assert md.splitlines()[2] == "```bash"
    assert md.splitlines()[3] == (
        f"promptmux analyze config.yaml train.max_steps=10 output.dir={run} "
        f"--every 3 --probe-size 8 --out {out}"
    )
    for heading in (
        "## Lookahead task affinity",
        "## Gradient cosine",
        "## Suggested groups",
        "## Records",
    ):
        assert heading in md
    assert "| **score** |" in md and "lookahead_affinity.png" in md
    assert " ± " in md and "off-diagonal lookahead entries lie more than two standard errors" in md
    assert np.array(data["lookahead_sem"]).shape == (3, 3)


def test_cli_single_task_baselines_report_deltas(
    cli: CliRunner, workdir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    # Budget in epochs: 2 tasks x 64 rows / batch 16 = 8 steps; each single-task run gets 8 too.
    args = [
        "analyze",
        "config.yaml",
        "tasks.ner=null",
        "train.max_steps=null",
        "train.epochs=1",
        "train.eval_every=4",
        f"output.dir={tmp_path / 'run'}",
        "--every",
        "4",
        "--probe-size",
        "8",
        "--out",
        str(out),
        "--single-task-baselines",
    ]
    result = cli.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "affinity.json").read_text())
    assert data["total_steps"] == 8
    base = data["baselines"]
    assert set(base) == {"sentiment", "score"}
    multi = json.loads((tmp_path / "run" / "results.json").read_text())["best_metrics"]
    for task, metric in (("sentiment", "accuracy"), ("score", "pearson")):
        b = base[task]
        single = json.loads((out / "single" / task / "results.json").read_text())
        assert single["steps"] == 8 and list(single["best_metrics"]) == [task]
        assert b["metric"] == metric and b["steps"] == 8
        assert b["single"] == pytest.approx(single["best_metrics"][task][metric])
        assert b["multi"] == pytest.approx(multi[task][metric])
        assert b["delta"] == pytest.approx(b["multi"] - b["single"])
    md = (out / "affinity.md").read_text()
    assert "## Multi-task vs single-task" in md and "| sentiment | accuracy |" in md
    # Run again into the same --out: the baseline folders are refused before anything trains.
    again = cli.invoke(
        app, [*args[:6], "output.overwrite=false", f"output.dir={tmp_path / 'run2'}", *args[7:]]
    )
    assert again.exit_code != 0 and isinstance(again.exception, ConfigError)
    assert "already holds a run" in str(again.exception) and not (tmp_path / "run2").exists()


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--every", "0"], r"--every must be an integer >= 1"),
        (["--probe-size", "0"], r"--probe-size must be an integer >= 1"),
        (["--every", "50"], r"--every 50 is more than train.max_steps \(12\)"),
        (
            ["tasks.score=null", "tasks.ner=null"],
            r"needs at least two tasks; config.yaml has 1 \(sentiment\)",
        ),
        (
            ["tasks.score=null", "tasks.ner=null", "--single-task-baselines"],
            r"needs at least two tasks",
        ),
    ],
)
def test_cli_analyze_bad_input_fails_before_training(
    cli: CliRunner, tmp_path: Path, extra: list[str], match: str
) -> None:
    run = tmp_path / "run"
    result = cli.invoke(
        app, ["analyze", "config.yaml", f"output.dir={run}", "--out", str(tmp_path / "r"), *extra]
    )
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError), result.output
    assert re.search(match, str(result.exception)), str(result.exception)
    assert not run.exists() and not (tmp_path / "r").exists()


def test_cosine_matrix_values() -> None:
    g = torch.tensor([[3.0, 4.0], [4.0, -3.0], [-3.0, -4.0]])
    cos = cosine_matrix(g)
    assert (
        cos[0, 1] == pytest.approx(0.0)
        and cos[0, 2] == pytest.approx(-1.0)
        and cos[1, 1] == pytest.approx(1.0)
    )
    assert not math.isnan(cosine_matrix(torch.zeros(2, 3))[0, 1])
