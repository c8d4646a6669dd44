"""Exact resume: 2N steps straight == N steps, stop, resume in a new process, N more (bit for bit).

The first leg plans the full 2N steps (same LR schedule) and is stopped after step N by a real
SIGTERM, delivered to this process from inside step N, so the trainer's own preemption path
writes the checkpoint. The second leg is a fresh `promptmux train --resume` process. Three tasks
of three types, dropout in encoder and heads, temperature sampling, length buckets and gradient
accumulation make every piece of saved state matter: drop any one of RNG, sampler, stream,
optimizer or scheduler state and the final parameters differ.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from engine_support import (
    assert_same_tensors,
    cli,
    events,
    load_tensors,
    one_thread,
    sigterm_during_step,
    trainer_state,
    write_run_config,
)

from promptmux.config import load_config
from promptmux.errors import TrainingError
from promptmux.train.trainer import train

N = 8  # the first leg stops after step N of 2N


@pytest.mark.parametrize(
    ("mixed", "eval_every"),
    [
        pytest.param(False, 6, id="single-task-batches-stop-between-evals"),
        pytest.param(True, 4, id="mixed-batches-stop-at-an-eval"),
    ],
)
def test_resume_in_a_new_process_is_bit_identical(
    tmp_path, tiny_backbone, monkeypatch, mixed, eval_every
):
    config = write_run_config(
        tmp_path, tiny_backbone,
        sampling={"mixed": mixed}, train={"max_steps": 2 * N, "eval_every": eval_every},
    )
    straight, legs = tmp_path / "straight", tmp_path / "legs"

    with one_thread():
        result = train(load_config(config, [f"output.dir={straight}"]))
        assert (result.steps, result.stopped) == (2 * N, "completed")

        with monkeypatch.context() as m:
            sigterm_during_step(m, N)
            first = train(load_config(config, [f"output.dir={legs}"]))
    assert (first.steps, first.stopped) == (N, "sigterm")
    assert trainer_state(legs)["trainer"]["step"] == N
    assert trainer_state(legs)["world_size"] == 1

    done = cli("train", "--resume", str(config), f"output.dir={legs}", cache=tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"completed after {2 * N} steps" in done.stdout

    # Nothing was trained twice or skipped: the log has each step's train event once.
    assert [e["step"] for e in events(legs, "train")] == list(range(4, 2 * N + 1, 4))
    # The same model, bit for bit, and the same trainer, sampler and stream state.
    assert_same_tensors(
        load_tensors(straight / "last" / "model.safetensors"),
        load_tensors(legs / "last" / "model.safetensors"),
    )
    assert trainer_state(legs) == trainer_state(straight)
    opt_a = torch.load(straight / "last" / "optimizer.pt", weights_only=False)["state"]
    opt_b = torch.load(legs / "last" / "optimizer.pt", weights_only=False)["state"]
    assert opt_a.keys() == opt_b.keys()
    for k in opt_a:
        assert_same_tensors(opt_a[k], opt_b[k])
    # And the same logged losses after the resume point.
    after = [(e["step"], e["loss"], e["lr"]) for e in events(straight, "train") if e["step"] > N]
    assert after == [(e["step"], e["loss"], e["lr"]) for e in events(legs, "train") if e["step"] > N]


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, tiny_backbone):
    config = write_run_config(tmp_path, tiny_backbone, tasks={"sentiment": 16})
    run = tmp_path / "never-trained"
    with pytest.raises(TrainingError, match=r"--resume: no checkpoint at .*never-trained.last"):
        train(load_config(config, [f"output.dir={run}"]), resume=True)
    assert not (run / "last").exists()

    # The command line says the same, without a traceback, and exits with status 2.
    done = cli("train", "--resume", str(config), f"output.dir={run}", cache=tmp_path / "cache")
    assert done.returncode == 2
    assert "error: --resume: no checkpoint" in done.stderr
    assert "Traceback" not in done.stderr


def test_resume_with_another_number_of_processes_is_a_clear_error(tmp_path, tiny_backbone):
    """A 2-process checkpoint cannot resume in 1 process (test_distributed has the real 2 -> 1)."""
    config = write_run_config(
        tmp_path, tiny_backbone, tasks={"sentiment": 16}, train={"max_steps": 4, "eval_every": 2}
    )
    run = tmp_path / "run"
    with one_thread():
        train(load_config(config, [f"output.dir={run}"]))
    state_file = run / "last" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["world_size"] = 2
    state_file.write_text(json.dumps(state))
    shutil.copy(run / "last" / "rng_0.pt", run / "last" / "rng_1.pt")
    before = (run / "last" / "model.safetensors").read_bytes()

    with pytest.raises(TrainingError, match="written by 2 processes, this run has 1"):
        train(load_config(config, [f"output.dir={run}"]), resume=True)
    assert (run / "last" / "model.safetensors").read_bytes() == before


def test_resume_under_a_changed_config_is_refused(tmp_path, tiny_backbone):
    """Another lr or step budget would silently train a different run; logging keys may change."""
    config = write_run_config(
        tmp_path, tiny_backbone, tasks={"sentiment": 16}, train={"max_steps": 4, "eval_every": 2}
    )
    run = tmp_path / "run"
    with one_thread():
        train(load_config(config, [f"output.dir={run}", "train.max_steps=2"]))
        before = (run / "last" / "model.safetensors").read_bytes()
        with pytest.raises(TrainingError, match=r"train\.lr \(.*-> 0\.5\).*train\.max_steps"):
            train(load_config(config, [f"output.dir={run}", "train.lr=0.5"]), resume=True)
        assert (run / "last" / "model.safetensors").read_bytes() == before
        result = train(load_config(config, [f"output.dir={run}", "train.max_steps=2", "train.log_every=1"]), resume=True)
    assert result.steps == 2


def test_resume_accepts_a_checkpoint_written_before_new_settings_existed(tmp_path, tiny_backbone):
    """A checkpoint's config.yaml without a section added later (here model.lora, train.adversarial)
    resumes when the current config keeps that section's defaults, and is refused when it does not."""
    import yaml

    config = write_run_config(
        tmp_path, tiny_backbone, tasks={"sentiment": 16}, train={"max_steps": 4, "eval_every": 2}
    )
    run = tmp_path / "run"
    with one_thread():
        train(load_config(config, [f"output.dir={run}", "train.max_steps=2"]))
        saved = run / "last" / "config.yaml"
        old = yaml.safe_load(saved.read_text())
        del old["model"]["lora"]
        del old["train"]["adversarial"]
        saved.write_text(yaml.safe_dump(old))
        with pytest.raises(TrainingError, match=r"model\.lora\.kind"):
            train(load_config(config, [f"output.dir={run}", "train.max_steps=2", "model.lora.kind=shared"]), resume=True)
        result = train(load_config(config, [f"output.dir={run}", "train.max_steps=2"]), resume=True)
    assert result.steps == 2
