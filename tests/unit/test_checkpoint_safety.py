"""Checkpoints survive failures: interrupted writes, crashes between renames, NaN losses, SIGTERM.

- fsutil: `atomic_directory` / `replace_directory` / `recover_directory` / `atomic_write_text`.
- A checkpoint write that fails midway (disk full) keeps the previous `last/`, leaves no temporary
  folder behind, and the run resumes from it.
- A crash between the two renames of a swap is repaired on resume, for `last/` and for `best/`.
- A NaN loss stops the run with a TrainingError naming task and step; `last/` is untouched.
- SIGTERM to `promptmux train` saves a checkpoint and exits 0; `--resume` finishes the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from engine_support import (
    cli,
    events,
    folder_digest,
    load_tensors,
    one_thread,
    sigterm_during_step,
    subprocess_env,
    trainer_state,
    write_run_config,
)

from promptmux import fsutil
from promptmux.config import load_config
from promptmux.errors import TrainingError
from promptmux.model.heads.regression import RegressionHead
from promptmux.serve.bundle import load_bundle
from promptmux.train import trainer
from promptmux.train.trainer import train

TWO_TASKS = {"sentiment": 24, "score": 16}


def leftovers(folder: Path) -> list[str]:
    """Hidden entries (temporary or previous versions) that a finished swap must not leave."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def fill(folder: Path, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.txt").write_text(text)
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "b.txt").write_text(text + "!")


def content(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def fail_replace(monkeypatch, when) -> list[tuple[Path, Path]]:
    """Make `os.replace(src, dst)` raise where `when(src, dst)` holds; returns the calls seen."""
    real, calls = os.replace, []

    def replace(src, dst, *args, **kwargs):
        calls.append((Path(src), Path(dst)))
        if when(Path(src), Path(dst)):
            raise OSError(5, "simulated crash")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(fsutil.os, "replace", replace)
    return calls


# ---- fsutil


def test_atomic_directory_replaces_the_previous_version_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "bundle"
    fill(target, "old")
    with fsutil.atomic_directory(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".bundle.tmp")
        assert content(target) == {"a.txt": "old", "sub/b.txt": "old!"}  # readers still see the old one
        fill(tmp, "new")
    assert content(target) == {"a.txt": "new", "sub/b.txt": "new!"}
    assert leftovers(tmp_path) == []


def test_atomic_directory_failure_while_filling_keeps_the_target(tmp_path):
    target = tmp_path / "bundle"
    fill(target, "old")
    with pytest.raises(RuntimeError, match="disk full"), fsutil.atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("disk full")
    assert content(target) == {"a.txt": "old", "sub/b.txt": "old!"}
    assert leftovers(tmp_path) == []


def test_crash_between_the_two_renames_is_recovered(tmp_path, monkeypatch):
    target = tmp_path / "bundle"
    fill(target, "old")
    with monkeypatch.context() as m:
        calls = fail_replace(m, lambda src, dst: dst == target)  # old -> .old done, tmp -> target fails
        with pytest.raises(OSError, match="simulated crash"), fsutil.atomic_directory(target) as tmp:
            fill(tmp, "new")
    assert calls[0] == (target, tmp_path / ".bundle.old")
    assert not target.exists()
    assert leftovers(tmp_path) == [".bundle.old"]  # the new version's temporary folder was removed

    assert fsutil.recover_directory(target) == target
    assert content(target) == {"a.txt": "old", "sub/b.txt": "old!"}
    assert leftovers(tmp_path) == []
    assert fsutil.recover_directory(target) == target  # idempotent


def test_recover_directory_keeps_the_new_version_when_the_crash_came_after_the_second_rename(tmp_path):
    target = tmp_path / "bundle"
    assert fsutil.recover_directory(target) is None
    fill(target, "new")
    fill(tmp_path / ".bundle.old", "old")  # the crash came before the old copy was deleted
    assert fsutil.recover_directory(target) == target
    assert content(target)["a.txt"] == "new"
    # The next swap clears the stale copy.
    fill(tmp_path / "next", "newer")
    fsutil.replace_directory(tmp_path / "next", target)
    assert content(target)["a.txt"] == "newer"
    assert leftovers(tmp_path) == []


def test_atomic_write_text_failure_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    fsutil.atomic_write_text(path, "old")
    fail_replace(monkeypatch, lambda src, dst: dst == path)
    with pytest.raises(OSError, match="simulated crash"):
        fsutil.atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


# ---- the trainer's checkpoints


def config_for(tmp_path: Path, backbone: Path, *overrides: str, **sections):
    train_section = {"max_steps": 12, "eval_every": 4, "log_every": 4, "grad_accum": 1}
    train_section.update(sections.pop("train", {}))
    path = write_run_config(tmp_path, backbone, tasks=TWO_TASKS, train=train_section, **sections)
    return path, tmp_path / "run", lambda *more: load_config(path, [*overrides, *more])


def test_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, tiny_backbone, monkeypatch):
    _, run, cfg = config_for(tmp_path, tiny_backbone)
    real_save, seen, snapshot = torch.save, [], {}

    def save(obj, f, *args, **kwargs):  # the disk fills up while the second checkpoint is written
        if Path(f).name == "optimizer.pt":
            seen.append(f)
            if len(seen) == 2:
                snapshot.update(folder_digest(run / "last"))
                raise OSError(28, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    with one_thread():
        with monkeypatch.context() as m:
            m.setattr(torch, "save", save)
            with pytest.raises(OSError, match="No space left"):
                train(cfg())
        assert snapshot, "the second checkpoint was never written"
        assert trainer_state(run)["trainer"]["step"] == 4
        assert folder_digest(run / "last") == snapshot  # byte for byte the step-4 checkpoint
        assert leftovers(run) == []  # no half-written .last.tmp for anyone to trip on
        model, _, tasks, _, folder = load_bundle(run / "last")
        assert folder == run / "last" and [t.name for t in tasks] == list(TWO_TASKS)

        result = train(cfg(), resume=True)
    assert (result.steps, result.stopped) == (12, "completed")
    assert [e["step"] for e in events(run, "train")] == [4, 8, 8, 12]  # steps 5-8 ran again after the resume
    assert leftovers(run) == []


def test_crash_between_the_renames_of_last_is_repaired_on_resume(tmp_path, tiny_backbone, monkeypatch):
    _, run, cfg = config_for(tmp_path, tiny_backbone)
    with one_thread():
        with monkeypatch.context() as m:
            fail_replace(m, lambda src, dst: dst == run / "last" and (run / ".last.old").exists())
            with pytest.raises(OSError, match="simulated crash"):
                train(cfg())
        assert not (run / "last").exists() and (run / ".last.old").is_dir()
        step4 = folder_digest(run / ".last.old")

        # A process killed at this point runs no cleanup at all: resume must cope with that too.
        result = train(cfg(), resume=True)
    assert (result.steps, result.stopped) == (12, "completed")
    assert [e["step"] for e in events(run, "train")] == [4, 8, 8, 12]
    assert trainer_state(run)["trainer"]["step"] == 12
    assert leftovers(run) == []
    assert step4["trainer_state.json"] != folder_digest(run / "last")["trainer_state.json"]


def test_crash_between_the_renames_of_best_is_repaired_on_resume(tmp_path, tiny_backbone, monkeypatch):
    # Without dev data every evaluation "improves", so best/ is rewritten at every evaluation.
    no_dev = [f"tasks.{t}.data.{key}" for t in TWO_TASKS for key in ("dev=null", "split.dev_fraction=0")]
    _, run, cfg = config_for(tmp_path, tiny_backbone, *no_dev)
    with one_thread():
        with monkeypatch.context() as m:
            # The second swap of best/: best/ -> .best.old done, then the new one fails to move in.
            fail_replace(m, lambda src, dst: dst == run / "best" and (run / ".best.old").exists())
            with pytest.raises(OSError, match="simulated crash"):
                train(cfg())
        assert not (run / "best").exists() and (run / ".best.old").is_dir()
        best4 = folder_digest(run / ".best.old")

        # Resume, and stop (SIGTERM) at step 5, before any evaluation could write a new best/.
        with monkeypatch.context() as m:
            sigterm_during_step(m, 5)
            result = train(cfg(), resume=True)
    assert (result.steps, result.stopped) == (5, "sigterm")
    assert folder_digest(run / "best") == best4
    assert leftovers(run) == []


def test_nan_loss_stops_with_task_and_step_and_keeps_the_last_checkpoint(tmp_path, tiny_backbone, monkeypatch):
    _, run, cfg = config_for(tmp_path, tiny_backbone)
    real_loss, steps_seen, at_nan = RegressionHead.loss, [], {}
    real_check = trainer._check_finite

    def check(acc, losses, step, stop):
        steps_seen.append(step)
        return real_check(acc, losses, step, stop)

    def loss(self, logits, labels):  # the first regression batch after the first checkpoint goes NaN
        value = real_loss(self, logits, labels)
        if self.training and (run / "last").exists() and not at_nan:
            at_nan.update(last=folder_digest(run / "last"), best=folder_digest(run / "best"))
            return value * float("nan")
        return value

    monkeypatch.setattr(RegressionHead, "loss", loss)
    monkeypatch.setattr(trainer, "_check_finite", check)
    with one_thread(), pytest.raises(TrainingError) as err:
        train(cfg())
    step = steps_seen[-1]
    assert step > 4, "the NaN came before the first checkpoint"
    message = str(err.value)
    assert "task score" in message and f"at step {step}" in message and "nan" in message
    assert "last good checkpoint was kept" in message

    assert folder_digest(run / "last") == at_nan["last"]
    assert folder_digest(run / "best") == at_nan["best"]
    assert trainer_state(run)["trainer"]["step"] < step
    tensors = load_tensors(run / "last" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in tensors.values())
    load_bundle(run / "last")
    assert leftovers(run) == []
    assert not (run / "results.json").exists()


def test_sigterm_saves_a_checkpoint_exits_0_and_resume_finishes(tmp_path, tiny_backbone):
    max_steps = 300
    config, run, _ = config_for(
        tmp_path, tiny_backbone,
        train={"max_steps": max_steps, "eval_every": 1000, "log_every": 1, "batch_size": 4},
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "promptmux.cli", "train", str(config)],
        env=subprocess_env(tmp_path / "cache"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        log = run / "metrics.jsonl"
        while not log.exists() or '"train"' not in log.read_text():
            assert proc.poll() is None, "training ended before it was signalled:\n" + proc.stderr.read()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, errors = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out + errors
    state = trainer_state(run)
    stopped_at = state["trainer"]["step"]
    assert 0 < stopped_at < max_steps
    assert f"SIGTERM: checkpoint saved at step {stopped_at}; continue with --resume" in out
    assert f"sigterm after {stopped_at} steps" in out
    assert json.loads((run / "results.json").read_text())["stopped"] == "sigterm"

    done = cli("train", "--resume", str(config), cache=tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"completed after {max_steps} steps" in done.stdout
    assert trainer_state(run)["trainer"]["step"] == max_steps
    assert json.loads((run / "results.json").read_text())["stopped"] == "completed"
    steps = [e["step"] for e in events(run, "train")]
    assert steps == list(range(1, max_steps + 1))  # every step once: none lost, none repeated
