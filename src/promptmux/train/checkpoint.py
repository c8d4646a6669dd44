"""Full training checkpoints: bundle files plus optimizer, scheduler, sampler, stream and RNG state.

A checkpoint folder is a bundle too (predict from it directly). It is written into a temporary
folder and swapped into place only once every process has written its part, so an interrupted
write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptmux.errors import TrainingError
from promptmux.fsutil import recover_directory, replace_directory

STATE_FILE = "trainer_state.json"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    accelerator,
    target: Path,
    write_bundle_files,
    optimizer: torch.optim.Optimizer,
    scheduler,
    weighting: torch.nn.Module,
    state: dict[str, Any],
) -> None:
    """Write a checkpoint to `target` atomically; every process must call this.

    Args:
        write_bundle_files: callable(folder) writing the bundle files (main process only).
        state: JSON-serialisable trainer state (step, best score, sampler and stream states).
    """
    tmp = target.parent / f".{target.name}.tmp"
    if accelerator.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        # Each process keeps its own RNG stream (dropout differs per rank); all else is identical.
        torch.save(rng_state(), tmp / f"rng_{accelerator.process_index}.pt")
        if accelerator.is_main_process:
            write_bundle_files(tmp)
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            torch.save(weighting.state_dict(), tmp / "weighting.pt")
            state = dict(state, world_size=accelerator.num_processes)
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            replace_directory(tmp, target)
    except BaseException:
        # A failed write (disk full) must not leave a model-and-optimizer-sized half copy behind.
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    accelerator.wait_for_everyone()


def find_checkpoint(target: Path) -> Path:
    folder = recover_directory(target)
    if folder is None or not (folder / STATE_FILE).is_file():
        raise TrainingError(f"--resume: no checkpoint at {target} (a run saves one at every evaluation)")
    return folder


# Keys that may change between a run and its resumption: they do not change what is trained.
RESUMABLE_CHANGES = ("output.", "train.eval_every", "train.log_every", "train.progress", "train.eval_batch_size", "train.early_stopping_patience")


def check_resume_config(folder: Path, config: dict[str, Any]) -> None:
    """Refuse to resume under a config that would train something else than the checkpoint's run."""
    import yaml

    saved_file = folder / "config.yaml"
    if not saved_file.is_file():
        return
    raw = yaml.safe_load(saved_file.read_text(encoding="utf-8"))
    # Read the saved config through today's schema: settings added since the checkpoint was
    # written then take their defaults, and only a real difference blocks the resume.
    with contextlib.suppress(ValueError):
        from promptmux.config.load import config_to_dict
        from promptmux.config.schema import Config

        raw = config_to_dict(Config.model_validate(raw))
    saved = _flatten(raw)
    now = _flatten(config)
    changed = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k) and not k.startswith(RESUMABLE_CHANGES))
    if changed:
        shown = ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in changed[:8])
        raise TrainingError(
            f"--resume: the config differs from the checkpoint's in {shown}; resuming would not continue "
            f"the same run. Use the original values, or start a new run in another output.dir"
        )


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def read_state(folder: Path) -> dict[str, Any]:
    return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))


def load_rng(folder: Path, process_index: int) -> None:
    path = folder / f"rng_{process_index}.pt"
    if not path.is_file():
        raise TrainingError(f"{folder}: no RNG state for process {process_index}; resume with the same number of processes")
    set_rng_state(torch.load(path, weights_only=False))


def load_torch(folder: Path, name: str) -> Any:
    return torch.load(folder / name, weights_only=False, map_location="cpu")


def loop_state(state: dict[str, Any], sampler: Any, streams: dict[str, Any]) -> dict[str, Any]:
    """What a training loop saves besides the model and optimizer: its counters, the sampler's
    and every task stream's position (the `extra` argument of save_checkpoint)."""
    return {
        "trainer": state,
        "sampler": sampler.state_dict(),
        "streams": {t: s.state_dict() for t, s in streams.items()},
    }


def restore_loop_state(
    folder: Path, world: int, state: dict[str, Any], sampler: Any, streams: dict[str, Any], weighting: Any
) -> None:
    """Loads what loop_state saved (and the weighting's state) back into a resumed loop, in place.

    Raises:
        TrainingError: the checkpoint was written by another number of processes (the streams
            hand each process its share of rows, so the data order would change).
    """
    saved = read_state(folder)
    if saved.get("world_size", 1) != world:
        raise TrainingError(
            f"--resume: checkpoint was written by {saved.get('world_size')} processes, this run has {world}"
        )
    state.update(saved["trainer"])
    sampler.load_state_dict(saved["sampler"])
    for t, s in saved["streams"].items():
        streams[t].load_state_dict(s)
    weighting.load_state_dict(load_torch(folder, "weighting.pt"))


def restore_optimizer(folder: Path, optimizer: Any, scheduler: Any, process_index: int) -> None:
    """Optimizer, scheduler and this process's RNG state of a resumed run (after acc.prepare)."""
    optimizer.load_state_dict(load_torch(folder, "optimizer.pt"))
    scheduler.load_state_dict(load_torch(folder, "scheduler.pt"))
    load_rng(folder, process_index)
