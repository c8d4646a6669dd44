"""Run logs: `metrics.jsonl` (one JSON object per event), TensorBoard, and a progress display."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


class RunLogger:
    """Writes train/eval events on the main process; a no-op elsewhere.

    The progress bar shows the running loss of each task. When stderr is not a terminal (CI,
    log files) a plain line is printed every `log_every` steps instead of a redrawn bar.
    """

    def __init__(self, out_dir: Path, total_steps: int, start_step: int, enabled: bool, tensorboard: bool, progress: bool) -> None:
        self.enabled = enabled
        self.total = total_steps
        self._jsonl = None
        self._tb = None
        self._bar = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(out_dir / "metrics.jsonl", "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:  # tensorboard is a dependency, but a missing one must not stop training
                self._tb = None
        if progress and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True, desc="train")

    def event(self, kind: str, step: int, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"event": kind, "step": step, "time": round(time.time(), 3), **fields}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for name, value in _flatten(fields):
                self._tb.add_scalar(f"{kind}/{name}", value, step)

    def progress(self, step: int, losses: dict[str, float], line_every: int) -> None:
        if not self.enabled:
            return
        shown = " ".join(f"{t}={v:.3f}" for t, v in losses.items())
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix_str(shown, refresh=False)
        elif step % line_every == 0 or step == self.total:
            print(f"step {step}/{self.total}  loss {shown}", flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()


def _flatten(fields: dict[str, Any], prefix: str = ""):
    for k, v in fields.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flatten(v, name + "/")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield name, v
