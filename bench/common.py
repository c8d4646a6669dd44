"""What the benchmark scripts share: the GLUE config they start from, a quiet timed training run,
the environment every report records (versions, commit, machine, load), and writing reports."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GLUE5 = REPO / "configs" / "glue5.yaml"
RESULTS = REPO / "bench" / "results"


def setup(threads: int | None) -> None:
    """Offline, quiet tokenizers, and (optionally) a fixed torch thread count."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if threads:
        import torch

        torch.set_num_threads(threads)


def glue_config(tasks: str, overrides: dict[str, Any], extra: list[str], raw_update: dict[str, Any] | None = None):
    """configs/glue5.yaml restricted to `tasks` (comma separated), with `overrides` then `extra` applied."""
    import yaml

    from promptmux.config import config_from_dict

    raw = yaml.safe_load(GLUE5.read_text(encoding="utf-8"))
    names = tasks.split(",")
    unknown = sorted(set(names) - set(raw["tasks"]))
    if unknown:
        raise SystemExit(f"--tasks: {unknown} not in {GLUE5.name} ({', '.join(raw['tasks'])})")
    raw["tasks"] = {t: raw["tasks"][t] for t in names}
    raw.update(raw_update or {})
    items = [f"{k}={json.dumps(v)}" for k, v in overrides.items()] + list(extra)
    return config_from_dict(raw, items, base_dir=GLUE5.parent)


def timed_train(cfg) -> tuple[Any, float, list[dict[str, Any]], str]:
    """Train with stdout captured: (result, wall seconds, metrics.jsonl events, captured log)."""
    from promptmux.train.trainer import train

    log = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(log):
        result = train(cfg)
    wall = time.perf_counter() - t0
    events = [json.loads(line) for line in (Path(cfg.output.dir) / "metrics.jsonl").read_text().splitlines()]
    return result, wall, events, log.getvalue()


def write_report(folder: Path, stem: str, report: dict[str, Any], markdown: str) -> None:
    """`<stem>.json` and `<stem>.md` in `folder`; the markdown is printed too."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (folder / f"{stem}.md").write_text(markdown, encoding="utf-8")
    print(markdown)


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
