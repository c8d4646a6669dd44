"""What every benchmark records next to its numbers: versions, commit, machine and load."""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def environment() -> dict[str, Any]:
    """Versions, git revision (and whether the tree was dirty), CPU/GPU, threads and load average."""
    import torch

    info: dict[str, Any] = {"python": platform.python_version()}
    for module in ("torch", "transformers", "accelerate", "peft"):
        with contextlib.suppress(ImportError):
            info[module] = importlib.import_module(module).__version__
    try:
        git = ["git", "-C", str(REPO)]
        info["git"] = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        info["git_dirty"] = bool(subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True).stdout.strip())
    except OSError:
        info["git"], info["git_dirty"] = "unknown", None
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    info.update(
        cpu=cpu,
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        cores=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        load_average_at_start=os.getloadavg(),
        date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    )
    return info
