"""Training throughput on a GLUE mix: promptmux vs the Hugging Face Trainer (same model and data).

Three configurations train the same MiniLM on the same GLUE training rows (read through
configs/glue5.yaml, same caps) with batch 32, in one run:

    run_glue    HF Trainer as run_glue runs by default: every row padded to 128 tokens, fp32,
                lr 2e-5, default AdamW, linear decay, no warmup.
    hf_dynamic  the same, plus DataCollatorWithPadding (pad to the batch's longest row) and bf16.
    promptmux   promptmux's train() on the same rows: length buckets, dynamic padding, bf16
                autocast, its glue5 recipe (lr 5e-5, head lr 1e-3, 6% warmup), tasks drawn in
                proportion to their sizes (as a shuffled concatenation draws them).

The HF side is the encoder with its pooler plus one linear head per task, each row scored by its
own task's head (AutoModelForSequenceClassification's layout, per task); the heads add a few
thousand FLOPs per row, so every configuration does the same encoder work per token.

How it is measured. Each configuration runs in its own process (so its peak resident memory is
its own). The parent lets one process train at a time: first `--warmup` untimed steps each (model
loading, first-iteration allocations), then `--rounds` rounds in which every configuration trains
`--steps` steps in turn (run_glue, hf_dynamic, promptmux, run_glue, ...), so drift in machine load
hits all of them alike. Each round also times a large fp32 and bf16 matmul in the parent (the
peak). A chunk is timed from the go signal to the end of its last optimizer step, inside the
trainer's own loop (data loading, collation, forward, backward, optimizer step all included).

Figures per configuration:
  - non-padding tokens/s: real tokens of the rows each trained on / wall seconds (median over
    rounds, with min and max); speed-ups are the medians of per-round ratios;
  - peak RSS of its process up to its last training step (resource.getrusage ru_maxrss): setup,
    tokenization (promptmux gets a fresh encoding cache, so it tokenizes as the HF side does) and
    training;
  - MFU = achieved model FLOPs/s / measured matmul peak of its precision, with model FLOPs of a
    training step on a [B, L] batch = 6·N·B·L + 12·n_layers·d·B·L² (N: transformer-layer parameters,
    embeddings and heads excluded; the second term is attention's QK^T and AV, forward + backward),
    counted on the padded batch as the hardware computes it ("MFU"), and on real tokens only
    ("useful MFU": 6·N·real + 12·n_layers·d·Σ len²);
  - dev scores after the same number of training rows (warmup + rounds·steps batches of 32),
    evaluated once after the last round with promptmux's metric functions.

Usage (from the repository root; data under ../shared/data or $PROMPTMUX_DATA):

    .venv/bin/python bench/throughput.py              # 10 warmup + 12 rounds x 25 steps each
    .venv/bin/python bench/throughput.py --rounds 2 --steps 5 --warmup 2 --train-cap 200 \
        --dev-cap 64 \
        --tag smoke --results-dir /tmp/bench-smoke
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from throughput_workers import WORKERS, mix_config

LABELS = {
    "run_glue": "HF Trainer, run_glue defaults (pad to 128, fp32)",
    "hf_dynamic": "HF Trainer, dynamic padding + bf16",
    "promptmux": "promptmux (length buckets, dynamic padding, bf16)",
}
PRECISION = {"run_glue": "fp32", "hf_dynamic": "bf16", "promptmux": "bf16"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common.add_tasks_arg(p, text="GLUE tasks of the mix (configs/glue5.yaml names)")
    p.add_argument(
        "--configs",
        default=",".join(WORKERS),
        help=f"which configurations to run ({', '.join(WORKERS)})",
    )
    p.add_argument(
        "--steps", type=int, default=25, help="optimizer steps per configuration per round"
    )
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument(
        "--warmup",
        type=int,
        default=10,
        help="untimed steps per configuration before the first round",
    )
    common.add_run_args(
        p,
        lr=None,
        sampling="proportional",
        sampling_help=(
            "promptmux sampling.strategy; proportional matches the HF shuffled concatenation"
        ),
    )
    p.add_argument(
        "--matmul-size", type=int, default=2048, help="n of the n x n matmul timed for the peak"
    )
    p.add_argument("--seed", type=int, default=42)
    common.add_output_args(
        p, "throughput", precision=False, threads_in=" in every process", overrides_for=None
    )
    args = p.parse_args(argv)
    names = args.configs.split(",")
    unknown = sorted(set(names) - set(WORKERS))
    if unknown or len(set(names)) != len(names):
        p.error(f"--configs: {unknown or 'duplicates'}; choose from {', '.join(WORKERS)}")
    if min(args.steps, args.rounds, args.warmup) < 1:
        p.error("--steps, --rounds and --warmup must be >= 1 (the warmup chunk absorbs setup time)")
    return args


def matmul_peak(n: int, dtype, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n @ n x n matmul in `dtype` over a few repeats."""
    import torch

    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # first call: kernel selection and allocation
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


class Workers:
    """One process per configuration, driven over pipes; one trains at a time."""

    def __init__(self, names: list[str], settings: dict[str, Any]) -> None:
        import multiprocessing as mp

        from throughput_workers import entry

        ctx = mp.get_context("spawn")  # fresh interpreters: nothing shared, honest peak memory
        self.procs, self.conns = {}, {}
        for name in names:
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=entry, args=(child, name, settings), name=f"throughput-{name}"
            )
            proc.start()
            child.close()
            self.procs[name], self.conns[name] = proc, parent

    def ask(self, name: str, command: str) -> dict[str, Any]:
        self.conns[name].send(command)
        try:
            return self.conns[name].recv()
        except EOFError:
            proc = self.procs[name]
            proc.join(5)
            raise SystemExit(
                f"throughput: the {name} worker died (exit code {proc.exitcode}); "
                "see its traceback above"
            ) from None

    def close(self) -> None:
        for proc in self.procs.values():
            proc.join(60)
            if proc.is_alive():
                proc.terminate()


def summarize(
    name: str,
    chunks: list[dict[str, Any]],
    final: dict[str, Any],
    peaks: dict[str, float],
    metric_of: dict[str, str],
) -> dict[str, Any]:
    from promptmux.eval.metrics import aggregate_score

    shape = final["shape"]
    seconds = sum(c["seconds"] for c in chunks)
    per_token = 6 * shape["n_params"]
    attn = 12 * shape["n_layers"] * shape["hidden"]
    flops = sum(per_token * c["padded"] + attn * c["attn_padded"] for c in chunks)
    useful = sum(per_token * c["real"] + attn * c["attn_real"] for c in chunks)
    real_tps = [c["real"] / c["seconds"] for c in chunks]
    peak = peaks[PRECISION[name]]
    scores = {t: m[metric_of[t]] for t, m in final["scores"].items()}
    return {
        "label": LABELS[name],
        "precision": PRECISION[name],
        "real_tokens_per_s": {
            "median": statistics.median(real_tps),
            "min": min(real_tps),
            "max": max(real_tps),
            "overall": sum(c["real"] for c in chunks) / seconds,
        },
        "padded_tokens_per_s": sum(c["padded"] for c in chunks) / seconds,
        "padding_share": 1 - sum(c["real"] for c in chunks) / sum(c["padded"] for c in chunks),
        "seconds_per_step": statistics.median(c["seconds"] for c in chunks)
        / (chunks[0]["step"] - chunks[0]["start"]),
        "model_tflops_per_s": flops / seconds / 1e12,
        "mfu": flops / seconds / peak,
        "useful_mfu": useful / seconds / peak,
        "mfu_vs_bf16_peak": flops / seconds / peaks["bf16"],
        "peak_rss_mb_training": max(c["peak_rss_mb"] for c in chunks),
        "peak_rss_mb_with_eval": final["peak_rss_mb"],
        "steps": final["steps"],
        "hf_mixed_precision": final.get("mixed_precision"),
        "hf_optimizer": final.get("optimizer"),
        "dev": final["scores"],
        "dev_main": scores,
        "dev_mean": aggregate_score(scores) if scores else None,
    }


def paired_ratio(
    rounds: list[dict[str, Any]], num: str, dens: list[str]
) -> dict[str, float] | None:
    """Median (and range) over rounds of `num`'s tokens/s / the best of `dens` in that round."""
    if not dens or num not in rounds[0] or not all(d in rounds[0] for d in dens):
        return None
    ratios = [r[num] / max(r[d] for d in dens) for r in rounds]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def markdown(report: dict[str, Any]) -> str:
    st, s, env = report["settings"], report["summary"], report["environment"]
    metric_of = report["metric_of"]
    tasks = list(metric_of)
    peaks = report["matmul_peak_gflops"]
    rows = st["warmup"] + st["rounds"] * st["steps"]
    lines = [
        "# Training throughput: promptmux vs the Hugging Face Trainer",
        "",
        f"Command: `{report['command']}`",
        "",
        (
            f"Same MiniLM, data and machine, one run. GLUE mix {', '.join(tasks)} (train rows "
            f"per task: {st['train_cap'] or 'all'}), batch {st['batch_size']}, max length "
            f"{st['max_length']}. Per configuration: {st['warmup']} untimed warmup steps, then "
            f"{st['rounds']} rounds x {st['steps']} timed steps, interleaved "
            f"({', '.join(report['order'])}, ...), each configuration in its own process. "
            "Tokens/s counts the non-padding tokens of the rows trained on."
        ),
        "",
        (
            "| configuration | real tokens/s (median, min–max) | padded tokens/s | padding "
            "| s/step | MFU | useful MFU | MFU vs bf16 peak | peak RSS (MB) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in s.values():
        t = c["real_tokens_per_s"]
        cells = [
            c["label"],
            f"{t['median']:,.0f} ({t['min']:,.0f}–{t['max']:,.0f})",
            f"{c['padded_tokens_per_s']:,.0f}",
            f"{100 * c['padding_share']:.0f}%",
            f"{c['seconds_per_step']:.2f}",
            f"{100 * c['mfu']:.1f}% ({c['precision']})",
            f"{100 * c['useful_mfu']:.1f}%",
            f"{100 * c['mfu_vs_bf16_peak']:.1f}%",
            f"{c['peak_rss_mb_training']:,.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Speed-ups in non-padding tokens/s (median of per-round ratios, min–max):", ""]
    for key, text, aim in (
        ("vs_run_glue", "promptmux / run_glue defaults", 4.0),
        ("vs_best_trainer", "promptmux / best Trainer configuration", 1.7),
    ):
        r = report["ratios"].get(key)
        if r:
            verdict = "met" if r["median"] >= aim else "not met"
            lines.append(
                f"- {text}: **{r['median']:.2f}x** ({r['min']:.2f}–{r['max']:.2f}); "
                f"aim ≥ {aim}x: {verdict}"
            )
    lines += [
        "",
        (
            f"Dev scores after the same number of training rows ({rows} steps x "
            f"{st['batch_size']}), last model, dev rows per task: {st['dev_cap'] or 'all'}:"
        ),
        "",
        "| configuration | " + " | ".join(f"{t} {metric_of[t]}" for t in tasks) + " | mean |",
        "|---" * (len(tasks) + 2) + "|",
    ]
    for c in s.values():
        cells = [f"{c['dev_main'][t]:.1f}" if t in c["dev_main"] else "—" for t in tasks]
        lines.append(f"| {c['label']} | " + " | ".join(cells) + f" | {c['dev_mean']:.1f} |")
    n = st["matmul_size"]
    lines += [
        "",
        (
            f"Matmul peak ({n}x{n} @ {n}x{n}, best of the rounds): fp32 {peaks['fp32']:,.0f} "
            f"GFLOP/s, bf16 {peaks['bf16']:,.0f} GFLOP/s; at 6·N = "
            f"{report['flops_per_token_6n'] / 1e6:.1f} MFLOP per token the bf16 peak equals "
            f"{report['bf16_peak_tokens_per_s']:,.0f} tokens/s."
        ),
        "",
        (
            "MFU = model FLOPs/s ÷ matmul peak of the configuration's precision; model FLOPs of a "
            "training step on a [B, L] batch = 6·N·B·L + 12·n_layers·d·B·L² (N = transformer-layer "
            f"parameters, {report['shape']['n_params']:,}; padded batch). Useful MFU counts real "
            "tokens only (6·N·tokens + 12·n_layers·d·Σ len²). Recipes are each library's own: "
            "run_glue/hf_dynamic lr 2e-5, no warmup, pooled [CLS]; promptmux lr 5e-5, head lr "
            f"1e-3, 6% warmup, mean pooling, tasks drawn by `{st['sampling']}` sampling, "
            "single-task "
            "length-bucketed batches."
        ),
        "",
        common.describe(env),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    common.setup(args.threads)
    import torch

    names = args.configs.split(",")
    command = common.command_line("throughput.py", argv)
    env = common.environment()
    settings = {
        k: getattr(args, k)
        for k in (
            "tasks",
            "steps",
            "rounds",
            "warmup",
            "batch_size",
            "max_length",
            "train_cap",
            "dev_cap",
            "sampling",
            "seed",
            "threads",
        )
    }
    with tempfile.TemporaryDirectory() as tmp:
        probe = mix_config(settings, Path(tmp))
    metric_of = {t: probe.main_metric(t) for t in probe.tasks}
    workers = Workers(names, settings)
    chunks: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    per_round: list[dict[str, float]] = []
    peaks = {"fp32": 0.0, "bf16": 0.0}
    try:
        for name in names:  # one at a time: setup and warmup of one never overlap another's
            print(
                f"[{time.strftime('%H:%M:%S')}] {name}: setup + {args.warmup} warmup steps ...",
                flush=True,
            )
            workers.ask(name, "start")
        for r in range(args.rounds):
            peaks["fp32"] = max(peaks["fp32"], matmul_peak(args.matmul_size, torch.float32))
            peaks["bf16"] = max(peaks["bf16"], matmul_peak(args.matmul_size, torch.bfloat16))
            row = {}
            for name in names:
                c = workers.ask(name, "go")
                c["start"] = c["step"] - args.steps
                chunks[name].append(c)
                row[name] = c["real"] / c["seconds"]
            per_round.append(row)
            print(
                f"[{time.strftime('%H:%M:%S')}] round {r + 1}/{args.rounds}: "
                + ", ".join(f"{n} {v:,.0f} tok/s" for n, v in row.items()),
                flush=True,
            )
        finals = {}
        for name in names:
            print(f"[{time.strftime('%H:%M:%S')}] {name}: dev evaluation ...", flush=True)
            finals[name] = workers.ask(name, "finish")
    finally:
        workers.close()
    summary = {n: summarize(n, chunks[n], finals[n], peaks, metric_of) for n in names}
    shape = finals[names[0]]["shape"]
    report = {
        "command": command,
        "settings": common.settings_of(args),
        "order": names,
        "metric_of": metric_of,
        "matmul_peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
        "shape": shape,
        "flops_per_token_6n": 6 * shape["n_params"],
        "bf16_peak_tokens_per_s": peaks["bf16"] / (6 * shape["n_params"]),
        "ratios": {
            "vs_run_glue": paired_ratio(per_round, "promptmux", ["run_glue"]),
            "vs_best_trainer": paired_ratio(
                per_round, "promptmux", [n for n in ("run_glue", "hf_dynamic") if n in names]
            ),
        },
        "summary": summary,
        "per_round_real_tokens_per_s": per_round,
        "chunks": chunks,
        "environment": env,
    }
    common.save_report(args, "throughput", report, markdown(report))
    return report


if __name__ == "__main__":
    main()
