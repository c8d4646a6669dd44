"""Two-process CPU training (DDP over gloo), launched with torchrun like a user would.

Each rank of `ddp_worker.py` dumps the parameters of its final model; every rank must end with
the same model, and that model must be the saved `last/` bundle. Covers single-task batches
(with heads unused in a step) and mixed-task batches, and resuming a 2-process checkpoint in
1 process (a clear TrainingError).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from engine_support import (
    assert_same_tensors,
    load_tensors,
    subprocess_env,
    trainer_state,
    write_run_config,
)

from promptmux.config import load_config
from promptmux.errors import TrainingError
from promptmux.serve.predictor import Predictor
from promptmux.train.trainer import train

WORKER = Path(__file__).with_name("ddp_worker.py")
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(config: Path, dump: Path, cache: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [
        TORCHRUN, "--nnodes", "1", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(WORKER), str(config), str(dump), *overrides,
    ]
    return subprocess.run(cmd, env=subprocess_env(cache), capture_output=True, text=True, timeout=240)


@pytest.mark.parametrize("mixed", [False, True], ids=["single-task-batches", "mixed-batches"])
def test_two_processes_end_with_the_same_model_as_the_saved_bundle(tmp_path, tiny_backbone, mixed):
    config = write_run_config(
        tmp_path, tiny_backbone,
        sampling={"mixed": mixed}, train={"batch_size": 4, "max_steps": 12, "eval_every": 6},
    )
    run, dump = tmp_path / "run", tmp_path / "dump"
    done = launch(config, dump, tmp_path / "cache")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]

    ranks = [json.loads((dump / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks == [{"rank": r, "world_size": 2, "steps": 12, "stopped": "completed"} for r in (0, 1)]
    rank0, rank1 = (load_tensors(dump / f"rank{r}.safetensors") for r in (0, 1))
    assert_same_tensors(rank0, rank1)
    assert_same_tensors(rank0, load_tensors(run / "last" / "model.safetensors"))

    # Written once, by the main process: one log, a checkpoint that knows its world size.
    assert done.stdout.count("processes: 2") == 1
    state = trainer_state(run)
    assert (state["trainer"]["step"], state["world_size"]) == (12, 2)
    assert sorted(p.name for p in (run / "last").glob("rng_*.pt")) == ["rng_0.pt", "rng_1.pt"]

    predictor = Predictor.from_pretrained(run / "last")
    assert predictor.predict("sentiment", ["the movie was great"])[0]["label"] in {"positive", "negative"}
    assert isinstance(predictor.predict("score", ["the plot was awful"])[0]["value"], float)
    tagged = predictor.predict("ner", ["john works in paris"])[0]
    assert [t["word"] for t in tagged["tokens"]] == ["john", "works", "in", "paris"]

    if not mixed:
        # The checkpoint of 2 processes cannot continue in 1: the data split and RNGs differ.
        before = (run / "last" / "model.safetensors").read_bytes()
        with pytest.raises(TrainingError, match="written by 2 processes, this run has 1"):
            train(load_config(config), resume=True)
        assert (run / "last" / "model.safetensors").read_bytes() == before


def test_end_process_group_leaves_the_group_and_is_a_no_op_outside_one(tmp_path):
    import torch.distributed as dist

    from promptmux.train.distributed import end_process_group

    end_process_group()  # no group in this process: nothing to do, nothing raised
    assert not dist.is_initialized()
    # A one-process gloo group, in a child so that this process never holds one.
    script = (
        "import sys, torch.distributed as dist\n"
        "from promptmux.train.distributed import end_process_group\n"
        "dist.init_process_group('gloo', init_method=sys.argv[1], rank=0, world_size=1)\n"
        "end_process_group()\n"
        "print('left' if not dist.is_initialized() else 'still in the group')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, f"tcp://127.0.0.1:{free_port()}"],
        env=subprocess_env(tmp_path / "cache"), capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "left"
