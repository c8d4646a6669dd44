"""`promptmux add-task`: learn one new task on a frozen multi-task bundle; write a new bundle.

Every parameter of the input bundle is frozen (encoder, old heads, old prompts). The new task gets
a new head and, by default, its own soft prompt (`model/added.py`), optionally started from a
Reptile meta-learned point (`train/reptile.py`) and optionally learned from k examples per label.
Old tasks' outputs stay bit-identical: their parameters are copied unchanged and batches without
the new task take the model's old path.

Why a compact loop here rather than `trainer.train()`: `train()` builds its model from a config
(pretrained backbone + fresh heads) and owns what many-task runs need (samplers, weightings, DDP,
resumable checkpoints). add-task starts from a saved bundle, trains one head and one prompt on one
task, and must never write into its input; it reuses the pieces (`prepare_data`, `TaskStream`,
`collate`, `build_scheduler`, `evaluate`) around a loop of a few dozen lines.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from promptmux.config.add_task import AddTaskSpec, BundleFacts, load_add_task
from promptmux.config.load import config_to_dict
from promptmux.data.collate import collate
from promptmux.data.encode import default_cache_dir
from promptmux.data.few_shot import few_shot_sample
from promptmux.data.streams import TaskStream
from promptmux.errors import ConfigError, TrainingError
from promptmux.eval.evaluator import evaluate
from promptmux.fsutil import atomic_directory
from promptmux.model.added import extend
from promptmux.model.heads import HEADS
from promptmux.model.multitask import MultiTaskModel, TaskInfo
from promptmux.precision import autocast, serving_precision
from promptmux.serve.bundle import load_bundle, read_bundle_meta, resolve_bundle, write_bundle
from promptmux.train.add_task_data import load_old_tasks
from promptmux.train.reptile import Reptile
from promptmux.train.setup import (
    PreparedData,
    build_scheduler,
    encode_task_split,
    prepare_data,
    total_steps,
)

log = logging.getLogger("promptmux.train")
RESULT_FILE = "add_task.json"


@dataclass
class AddTaskResult:
    """What add-task did and measured (also written to the new bundle as add_task.json)."""

    out_dir: str
    source: str
    task: str
    method: str
    prompt: dict[str, Any] | None
    init: str
    few_shot: int | None
    train_rows: int
    steps: int
    kept_step: int
    trainable: int
    total: int
    trainable_parts: dict[str, int]
    main_metric: dict[str, str]
    old_before: dict[str, dict[str, float]]
    old_after: dict[str, dict[str, float]]
    old_skipped: dict[str, str]
    new_dev: dict[str, float]
    new_test: dict[str, float]
    reptile: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def add_task(
    bundle: str | os.PathLike,
    new_task: str | os.PathLike,
    out: str | os.PathLike,
    overrides: list[str] | tuple[str, ...] = (),
    overwrite: bool = False,
    meta_config: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
) -> AddTaskResult:
    """Learn the task of `new_task` (a new-task YAML) on the frozen `bundle`; write `out`.

    Args:
        bundle: a bundle folder, or a run folder (its best bundle). Never modified.
        new_task: the new-task file (see `promptmux.config.add_task`).
        out: folder of the new bundle (old tasks + the new one), written atomically.
        overrides: dotted overrides of the new-task file (`add_task.few_shot=16`).
        overwrite: replace `out` if it exists.
        meta_config: a config whose `tasks:` point at the old tasks' data (default: the data paths
            recorded in the bundle's config.yaml); used for old-task scores and Reptile.
        device: where to train (default: cuda if available, else cpu).
    """
    folder = resolve_bundle(bundle)
    out = Path(out)
    _check_out(out, folder, overwrite)
    facts = bundle_facts(folder)
    spec = load_add_task(new_task, facts, overrides)
    cfg = spec.config
    from accelerate.utils import set_seed

    set_seed(cfg.seed)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, tokenizer, old_infos, settings, _ = load_bundle(folder)
    model.to(device)
    pad_id = tokenizer.pad_token_id or 0
    # What Predictor will use on the bundle here (a bf16 bundle predicts in fp32 without native bf16).
    serve_precision = serving_precision(settings.get("precision", "fp32"), device)
    eval_bs = cfg.train.eval_batch_size

    new = prepare_new_task(spec, tokenizer)
    info = new.tasks[0]
    meta_tasks = spec.add.reptile.tasks or [t.name for t in old_infos]
    old, skipped = load_old_tasks(
        facts,
        old_infos,
        tokenizer,
        cfg.model.max_length,
        meta_config,
        train_for=meta_tasks if spec.add.init == "reptile" else [],
    )
    before = evaluate(model, old_infos, old.split("dev"), pad_id, eval_bs, serve_precision)

    parts = attach_new_task(model, info, spec, settings, new)
    trainable = sum(parts.values())
    total = sum(p.numel() for p in model.parameters())
    log.info(
        "add-task %s: trainable parameters %s of %s (%.3f%%)",
        spec.name,
        f"{trainable:,}",
        f"{total:,}",
        100 * trainable / total,
    )
    summary = None
    if spec.add.init == "reptile":
        assert model.added is not None and model.added.prompt is not None
        sets = {t: old.encoded["train"][t] for t in meta_tasks}
        batch = spec.add.reptile.batch_size or cfg.train.batch_size
        summary = Reptile(
            model,
            model.added.prompt,
            spec.name,
            sets,
            spec.add.reptile,
            batch,
            pad_id,
            cfg.seed,
            cfg.train.precision,
        ).run()
    steps, kept = fit(model, info, new, spec, pad_id, device, serve_precision)

    settings_out = {k: v for k, v in settings.items() if k != "added_tasks"}
    if model.added is not None:
        settings_out["added_tasks"] = model.added.settings()
    config_out = None
    if facts.config is not None:
        config_out = dict(facts.config)
        config_out["tasks"] = {
            **facts.config.get("tasks", {}),
            spec.name: config_to_dict(cfg)["tasks"][spec.name],
        }
    with atomic_directory(out) as tmp:
        write_bundle(tmp, model, tokenizer, old_infos + [info], settings_out, config_out)
        # Score what was written: the reloaded bundle is what users will serve.
        saved = load_bundle(tmp)[0].to(device)
        after = evaluate(saved, old_infos, old.split("dev"), pad_id, eval_bs, serve_precision)
        new_dev = evaluate(saved, [info], new.split("dev"), pad_id, eval_bs, serve_precision).get(
            spec.name, {}
        )
        new_test = evaluate(saved, [info], new.split("test"), pad_id, eval_bs, serve_precision).get(
            spec.name, {}
        )
        added = model.added.settings()["prompt"] if model.added is not None else None
        result = AddTaskResult(
            out_dir=str(out),
            source=str(folder),
            task=spec.name,
            method=spec.method,
            prompt=None if spec.prompt == "none" else added,
            init=spec.add.init,
            few_shot=spec.add.few_shot,
            train_rows=len(new.raw[spec.name].split("train")),
            steps=steps,
            kept_step=kept,
            trainable=trainable,
            total=total,
            trainable_parts=parts,
            main_metric={**{t.name: t.metric for t in old_infos}, spec.name: info.metric},
            old_before=before,
            old_after=after,
            old_skipped=skipped,
            new_dev=new_dev,
            new_test=new_test,
            reptile=summary,
        )
        (tmp / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return result


def bundle_facts(folder: Path) -> BundleFacts:
    """Tasks, settings and config.yaml of a bundle, without loading its weights."""
    import yaml

    meta = read_bundle_meta(folder)
    config_file = folder / "config.yaml"
    config = (
        yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else None
    )
    return BundleFacts(folder, [t["name"] for t in meta["tasks"]], meta["settings"], config)


def prepare_new_task(spec: AddTaskSpec, tokenizer) -> PreparedData:
    """The new task's splits, encoded; train holds k examples per label under `add_task.few_shot`."""
    cfg, name = spec.config, spec.name
    data = prepare_data(cfg, tokenizer, splits=("dev", "test"))
    train = data.raw[name].split("train")
    if not train:
        from promptmux.errors import DataError

        raise DataError(f"tasks.{name}: the train split is empty")
    if spec.add.few_shot is not None:
        train = few_shot_sample(
            train, data.raw[name].labels or [], spec.add.few_shot, cfg.seed, name
        )
        data.raw[name].splits["train"] = train
    info = data.tasks[0]
    # Raw rows are unprompted (prepare_data prompts only what it encodes): encode_task_split
    # applies the task's template and rules, as prepare_data did for dev and test.
    data.encoded["train"] = {
        name: encode_task_split(info, train, tokenizer, cfg.model.max_length, default_cache_dir())
    }
    return data


def attach_new_task(
    model: MultiTaskModel, info: TaskInfo, spec: AddTaskSpec, settings: dict, data: PreparedData
) -> dict[str, int]:
    """Freeze everything, then add the new head (+ prompt); returns trainable counts per part."""
    model.requires_grad_(False)
    device = next(model.parameters()).device
    torch.manual_seed(spec.config.seed)  # the plain start: the same for `init: plain` and `reptile`
    hidden = model.encoder.config.hidden_size
    head = HEADS.get(info.type)(
        hidden, info.n_labels, pooling=info.pooling, dropout=settings.get("head_dropout", 0.0)
    )
    if info.type == "regression":
        head.set_target_stats([ex.label for ex in data.raw[info.name].split("train")])
    model.heads[info.name] = head.to(device)
    parts = {"head": sum(p.numel() for p in head.parameters())}
    if spec.method == "lora":
        # Not an added task in the `model/added.py` sense: it takes the model's own path, where
        # each task's rows go through its own adapter; old adapters are untouched.
        parts["lora"] = add_lora_adapter(model, info.name)
        return parts
    prompt = None
    if spec.prompt != "none":
        prompt = {"kind": spec.prompt, "length": spec.prompt_length, "init": spec.add.prompt_init}
    try:
        model.added = extend(model.added, info.name, model.encoder, prompt).to(device)
    except ValueError as e:
        raise ConfigError(f"add_task.prompt: {e}") from None
    model.added.requires_grad_(False)  # earlier added tasks' prompts stay as they are
    if prompt is not None:
        assert model.added.prompt is not None
        param = model.added.prompt.prompts[info.name].requires_grad_(True)
        parts["prompt"] = param.numel()
    return parts


def add_lora_adapter(model: MultiTaskModel, task: str) -> int:
    """A new trainable adapter for `task` in every per-task LoRA layer; returns its size.

    Initialised as `TaskLoraLinear` initialises its adapters (A Kaiming-uniform, B zeros), so the
    new task starts from the base encoder.
    """
    from promptmux.model.lora import TaskLoraLinear, lora_modules

    layers = [m for _, m in lora_modules(model.encoder)] if model.lora is not None else []
    if not layers or not all(isinstance(m, TaskLoraLinear) for m in layers):
        raise ConfigError(
            "add_task.method: lora needs a bundle with per-task LoRA layers (model.lora.kind: per_task)"
        )
    n = 0
    for layer in layers:
        w = layer.base_layer.weight
        a = torch.empty(layer.r, layer.base_layer.in_features, device=w.device, dtype=w.dtype)
        torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        layer.lora_A[task] = torch.nn.Parameter(a)
        layer.lora_B[task] = torch.nn.Parameter(
            torch.zeros(layer.base_layer.out_features, layer.r, device=w.device, dtype=w.dtype)
        )
        n += layer.lora_A[task].numel() + layer.lora_B[task].numel()
    return n


def fit(
    model: MultiTaskModel,
    info: TaskInfo,
    data: PreparedData,
    spec: AddTaskSpec,
    pad_id: int,
    device: torch.device,
    eval_precision: str,
) -> tuple[int, int]:
    """Train the new task's trainable parts; returns (steps run, step whose weights are kept)."""
    cfg, name, t = spec.config, info.name, spec.config.train
    enc = data.encoded["train"][name]
    head = model.heads[name]
    head_lr = t.head_lr or t.lr
    groups = [
        {
            "params": [p for p in head.parameters() if p.ndim >= 2],
            "lr": head_lr,
            "weight_decay": t.weight_decay,
        },
        {
            "params": [p for p in head.parameters() if p.ndim < 2],
            "lr": head_lr,
            "weight_decay": 0.0,
        },
    ]
    # The new prompt or adapter: every trainable parameter outside the heads.
    own = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("heads.")]
    if own:  # no decay: at these learning rates it would pull prompts toward zero
        groups.append({"params": own, "lr": spec.add.lr or head_lr, "weight_decay": 0.0})
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=t.lr)
    steps = total_steps(cfg, {name: len(enc)}, 1)
    scheduler = build_scheduler(cfg, optimizer, steps)
    rows = min(t.batch_size, len(enc))
    stream = TaskStream(
        enc.lengths, rows, seed=cfg.seed * 1000, buckets=t.length_buckets, bucket_size=t.bucket_size
    )
    dev, metric = data.split("dev"), cfg.main_metric(name)
    best: tuple[float, int, list[torch.Tensor]] | None = None
    since_best, losses, step = 0, [], 0
    model.train()
    try:
        for step in range(1, steps + 1):
            for _ in range(t.grad_accum):
                batch = collate([(name, enc, stream.take(rows))], pad_id).to(device)
                with autocast(device, t.precision):
                    logits = model(**batch.model_inputs())[name]
                loss = head.loss(logits, batch.labels[name])
                if not torch.isfinite(loss.detach()):
                    raise TrainingError(
                        f"non-finite loss for task {name} at step {step}; lower train.lr or use precision fp32"
                    )
                (loss / t.grad_accum).backward()
                losses.append(float(loss.detach()))
            if t.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if step % t.log_every == 0 or step == steps:
                log.info(
                    "add-task %s step %d/%d: loss %.4f",
                    name,
                    step,
                    steps,
                    sum(losses) / len(losses),
                )
                losses.clear()
            if dev and (step % t.eval_every == 0 or step == steps):
                score = evaluate(model, [info], dev, pad_id, t.eval_batch_size, eval_precision)[
                    name
                ][metric]
                log.info("add-task %s step %d: dev %s %.2f", name, step, metric, score)
                if best is None or score > best[0]:
                    best, since_best = (score, step, [p.detach().clone() for p in params]), 0
                else:
                    since_best += 1
                if (
                    t.early_stopping_patience is not None
                    and since_best >= t.early_stopping_patience
                ):
                    log.info("add-task %s: early stopping at step %d", name, step)
                    break
    finally:
        model.eval()
    if spec.add.keep == "best" and best is not None:
        with torch.no_grad():
            for p, value in zip(params, best[2]):
                p.copy_(value)
        return step, best[1]
    return step, step


def _check_out(out: Path, folder: Path, overwrite: bool) -> None:
    o, f = out.resolve(), folder.resolve()
    if o == f or o in f.parents or f in o.parents:
        raise ConfigError(
            f"--out: {out} is, holds or lies inside the input bundle {folder}; add-task never modifies "
            f"its input, so choose another folder"
        )
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(
            f"--out: {out} already exists; choose another folder or pass --overwrite to replace it"
        )


def format_summary(result: AddTaskResult) -> str:
    """The report `promptmux add-task` prints."""
    from promptmux.eval.metrics import format_table

    share = 100 * result.trainable / max(result.total, 1)
    parts = " + ".join(f"{k} {v:,}" for k, v in result.trainable_parts.items())
    prompt = result.prompt
    what = f"{prompt['kind']} prompt (L={prompt['length']}) + head" if prompt else "head only"
    rows = f"{result.train_rows} train rows" + (
        f" (few-shot: {result.few_shot} per label)" if result.few_shot else ""
    )
    lines = [
        f"added task {result.task!r} to {result.source} -> {result.out_dir}",
        f"trainable: {what}: {result.trainable:,} of {result.total:,} parameters ({share:.3f}%; {parts})",
        f"{rows}; {result.steps} steps; kept the weights of step {result.kept_step}; init: {result.init}",
    ]
    if result.reptile:
        r = result.reptile
        lines.append(
            f"reptile: {r['meta_steps']} meta steps over {', '.join(sorted(r['tasks']))}; "
            f"inner loss {r['inner_loss_first']:.4f} -> {r['inner_loss_last']:.4f} (mean per meta step)"
        )
    main = result.main_metric
    if result.old_before:
        lines.append("old tasks (dev), before -> after:")
        for task, m in result.old_before.items():
            b, a = m[main[task]], result.old_after.get(task, {}).get(main[task], float("nan"))
            same = "unchanged" if _same(result.old_after.get(task, {}), m) else "CHANGED"
            lines.append(f"  {task:<16} {main[task]:<12} {b:8.2f} -> {a:8.2f}  {same}")
    for task, why in result.old_skipped.items():
        lines.append(f"  {task:<16} skipped: {why}")
    for split, metrics in (("dev", result.new_dev), ("test", result.new_test)):
        if metrics:
            lines.append(f"new task {result.task} ({split}):")
            lines.append(format_table({result.task: metrics}, {result.task: main[result.task]}))
    return "\n".join(lines)


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Metric dicts equal, NaN included (a constant prediction has no Pearson r, before or after)."""
    return a.keys() == b.keys() and all(
        a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a
    )
