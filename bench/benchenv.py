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


def describe(env: dict[str, Any]) -> str:
    """One markdown line naming the machine, its load, the versions and the commit."""
    load = ", ".join(f"{x:.1f}" for x in env["load_average_at_start"])
    versions = ", ".join(f"{m} {env[m]}" for m in ("transformers", "accelerate", "peft") if m in env)
    dirty = " (uncommitted changes)" if env.get("git_dirty") else ""
    return (
        f"Machine: {env['gpu'] or env['cpu']}, {env['cores']} cores (load average at start {load}), "
        f"torch {env['torch']} ({env['torch_threads']} threads), {versions}, git {env['git']}{dirty}, {env['date']}."
    )
