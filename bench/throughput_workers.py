"""The three trainers that bench/throughput.py compares, each run in its own process.

A worker loads its model and data, then trains in chunks of a fixed number of optimizer steps.
After each chunk it reports the chunk's wall time and the tokens it consumed to the parent, and
waits (untimed) until the parent tells it to go on. The parent lets one worker run at a time, in
rounds, so the trainers alternate on the same cores and drift in machine load hits all of them.
The chunking uses each trainer's own callback hook after the optimizer step, so the loops that
are timed are the libraries' real loops (data loading, collation, forward, backward, optimizer).

Workers:
    run_glue    Hugging Face Trainer, run_glue defaults: every row padded to max_length, fp32.
    hf_dynamic  Hugging Face Trainer, DataCollatorWithPadding (pad to the longest row), bf16.
    promptmux   promptmux.train.trainer.train: length buckets, dynamic padding, bf16 autocast.
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

WORKERS = ("run_glue", "hf_dynamic", "promptmux")


class Pacer:
    """Counts the tokens of every training batch, and stops the clock at chunk boundaries.

    `boundaries` are the optimizer steps after which a chunk ends. At each one the pacer sends the
    chunk's figures to the parent and blocks until it answers: "go" (start the next chunk) or
    "finish" (after the last chunk: leave training and evaluate).
    """

    def __init__(self, conn, boundaries: list[int]) -> None:
        self.conn = conn
        self.boundaries = set(boundaries)
        self.last = max(boundaries)
        self._reset()

    def _reset(self) -> None:
        self.t0 = time.perf_counter()
        self.rows = self.real = self.padded = 0
        self.attn_padded = self.attn_real = 0  # sum over rows of L^2 (padded width / real length)

    def count(self, mask) -> None:
        """One training batch's attention mask [B, L] (1 = real token)."""
        lengths = mask.sum(1)
        b, width = mask.shape
        self.rows += int(b)
        self.real += int(lengths.sum())
        self.padded += int(b * width)
        self.attn_padded += int(b * width * width)
        self.attn_real += int((lengths * lengths).sum())

    def at_step(self, step: int) -> None:
        if step not in self.boundaries:
            return
        seconds = time.perf_counter() - self.t0
        self.conn.send(
            {
                "kind": "chunk",
                "step": step,
                "seconds": seconds,
                "rows": self.rows,
                "real": self.real,
                "padded": self.padded,
                "attn_padded": self.attn_padded,
                "attn_real": self.attn_real,
                "peak_rss_mb": peak_rss_mb(),
            }
        )
        command = self.conn.recv()
        if command not in ("go", "finish"):
            raise RuntimeError(f"worker: unexpected command {command!r}")
        self._reset()  # the wait for the parent is not part of any chunk


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def entry(conn, name: str, settings: dict[str, Any]) -> None:
    """Process target: wait for "start", train (reporting chunks), evaluate, report, exit."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import torch

    datasets.disable_progress_bars()
    if settings["threads"]:
        torch.set_num_threads(settings["threads"])
    if conn.recv() != "start":
        return
    warm, steps, rounds = settings["warmup"], settings["steps"], settings["rounds"]
    pacer = Pacer(conn, [warm + k * steps for k in range(rounds + 1)])
    with tempfile.TemporaryDirectory(prefix=f"throughput-{name}-") as tmp:
        run = run_promptmux if name == "promptmux" else run_hf
        scores, info = run(name, settings, pacer, Path(tmp))
    conn.send({"kind": "final", "scores": scores, "peak_rss_mb": peak_rss_mb(), **info})
    conn.close()


def mix_config(settings: dict[str, Any], out: Path, overrides: dict[str, Any] | None = None):
    """The GLUE tasks of the mix (configs/glue5.yaml) with the row caps and training settings.

    Both Hugging Face workers read their rows through this config too, so all three trainers draw
    from exactly the same examples.
    """
    from common import glue_config

    total = settings["warmup"] + settings["steps"] * settings["rounds"]
    base = {
        "seed": settings["seed"],
        "model.max_length": settings["max_length"],
        "sampling.strategy": settings["sampling"],
        "train.max_steps": total,
        "train.epochs": None,
        "train.batch_size": settings["batch_size"],
        "train.grad_accum": 1,
        "train.eval_every": total,  # one evaluation, after the last (timed) step
        "train.log_every": total,
        "train.progress": False,
        "train.precision": "bf16",
        "train.length_buckets": True,
        "output.dir": str(out),
        "output.tensorboard": False,
    }
    for split, cap in (("train", settings["train_cap"]), ("dev", settings["dev_cap"])):
        if cap:
            base.update(
                {f"tasks.{t}.data.max_examples.{split}": cap for t in settings["tasks"].split(",")}
            )
    return glue_config(settings["tasks"], {**base, **(overrides or {})}, [])


def nonembedding_params(encoder) -> int:
    """Parameters of the transformer layers (the N of 6N); embeddings, pooler, heads excluded."""
    from promptmux.model.backbone import encoder_layers

    return sum(p.numel() for p in encoder_layers(encoder).parameters())


def model_shape(encoder) -> dict[str, int]:
    c = encoder.config
    return {
        "n_params": nonembedding_params(encoder),
        "n_layers": c.num_hidden_layers,
        "hidden": c.hidden_size,
    }


# ---- promptmux


def run_promptmux(name: str, settings: dict[str, Any], pacer: Pacer, tmp: Path):
    """train() on the mix; the batches it trains on are counted by wrapping its collate."""
    import promptmux.train.trainer as trainer_module
    from promptmux.train.trainer import Callback, train

    original = trainer_module.collate

    def counting_collate(*args, **kwargs):
        batch = original(*args, **kwargs)
        pacer.count(batch.attention_mask)
        return batch

    class Chunks(Callback):
        def on_step_end(self, ctx) -> None:
            pacer.at_step(ctx.step)

    # The loop calls the name `collate` from its own module for every training batch (evaluation
    # collates through promptmux.eval.evaluator), so wrapping it there counts exactly the rows
    # trained on.
    trainer_module.collate = counting_collate
    # A fresh encoding cache: the rows are tokenized in this run, as the Hugging Face workers
    # tokenize theirs, so neither side's setup (nor its peak memory) depends on earlier runs.
    os.environ["PROMPTMUX_CACHE"] = str(tmp / "cache")
    cfg = mix_config(settings, tmp / "run")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            result = train(cfg, callbacks=[Chunks()])
    finally:
        trainer_module.collate = original
    scores = result.last_metrics
    return scores, {"shape": model_shape(result.model.encoder), "steps": result.steps}


# ---- Hugging Face Trainer


def read_rows(settings: dict[str, Any], tmp: Path):
    """(config, task infos, train rows, dev rows) of the mix, read with promptmux's readers."""
    from promptmux.tasks.build import load_task

    cfg = mix_config(settings, tmp / "unused")
    tasks, train_rows, dev_rows = [], [], {}
    for i, (task, tcfg) in enumerate(cfg.tasks.items()):
        data = load_task(task, tcfg)
        tasks.append({"name": task, "type": data.type, "labels": data.labels})
        train_rows += [(i, ex) for ex in data.split("train")]
        dev_rows[task] = data.split("dev")
    return cfg, tasks, train_rows, dev_rows


def build_hf_model(path, tasks: list[dict[str, Any]]):
    """The encoder with its pooler and one head per task, as AutoModelForSequenceClassification
    builds for one task (pooled [CLS] -> dropout -> linear; one output and MSE for regression).

    A batch mixes tasks; each row's loss comes from its own task's head (the per-task heads are a
    few thousand FLOPs per row, so the FLOPs match a single-task run_glue model).
    """
    import torch
    from torch import nn
    from transformers import AutoModel

    class MixedHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(path)
            hidden = self.encoder.config.hidden_size
            self.dropout = nn.Dropout(self.encoder.config.hidden_dropout_prob)
            self.heads = nn.ModuleList(
                nn.Linear(hidden, 1 if t["type"] == "regression" else len(t["labels"]))
                for t in tasks
            )
            self.pacer: Pacer | None = None

        def forward(
            self, input_ids, attention_mask, token_type_ids=None, task_ids=None, labels=None
        ):
            if self.training and self.pacer is not None:
                self.pacer.count(attention_mask)
            out = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            pooled = self.dropout(out.pooler_output)
            logits, losses = {}, []
            for t in torch.unique(task_ids).tolist():
                rows = task_ids == t
                z = self.heads[t](pooled[rows])
                logits[t] = z
                if labels is not None:
                    y = labels[rows]
                    if tasks[t]["type"] == "regression":
                        losses.append(
                            nn.functional.mse_loss(
                                z.squeeze(-1).float(), y.float(), reduction="sum"
                            )
                        )
                    else:
                        losses.append(
                            nn.functional.cross_entropy(z.float(), y.long(), reduction="sum")
                        )
            loss = torch.stack(losses).sum() / input_ids.size(0) if losses else None
            return {"loss": loss, "logits": logits}

    return MixedHeads()


def hf_dataset(tokenizer, train_rows, max_length: int, pad_to_max: bool, folder: Path):
    """A file-backed `datasets.Dataset` tokenized with `map`, as run_glue builds it (memory-mapped
    Arrow cache files, so peak memory is not inflated by an in-memory copy run_glue never holds)."""
    from datasets import Dataset, load_from_disk

    raw = Dataset.from_dict(
        {
            "text": [ex.text for _, ex in train_rows],
            "text_b": [ex.text_b for _, ex in train_rows],
            "label": [float(ex.label) for _, ex in train_rows],
            "task_ids": [t for t, _ in train_rows],
        }
    )
    raw.save_to_disk(str(folder / "raw"))
    raw = load_from_disk(str(folder / "raw"))

    padding = "max_length" if pad_to_max else False

    def tokenize(batch):
        # Rows are grouped by task, so a map batch is all single texts or all pairs except where
        # two tasks meet; there the rows are tokenized one by one.
        a, b = batch["text"], batch["text_b"]
        n_pairs = sum(x is not None for x in b)
        if n_pairs in (0, len(a)):
            return tokenizer(
                a, b if n_pairs else None, truncation=True, max_length=max_length, padding=padding
            )
        rows = [
            tokenizer(x, y, truncation=True, max_length=max_length, padding=padding)
            for x, y in zip(a, b)
        ]
        return {k: [r[k] for r in rows] for k in rows[0]}

    return raw.map(
        tokenize,
        batched=True,
        remove_columns=["text", "text_b"],
        cache_file_name=str(folder / "tokenized.arrow"),
    )


def run_hf(name: str, settings: dict[str, Any], pacer: Pacer, tmp: Path):
    """Hugging Face Trainer on the same rows; run_glue settings, or dynamic padding + bf16."""
    import torch
    from transformers import (
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    from promptmux.model.backbone import resolve_backbone

    run_glue = name == "run_glue"
    cfg, tasks, train_rows, dev_rows = read_rows(settings, tmp)
    path = resolve_backbone(cfg.model.backbone)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dataset = hf_dataset(tokenizer, train_rows, settings["max_length"], run_glue, tmp)
    torch.manual_seed(settings["seed"])
    model = build_hf_model(path, tasks)
    model.pacer = pacer
    total = settings["warmup"] + settings["steps"] * settings["rounds"]
    # run_glue's defaults: lr 2e-5, linear decay, no warmup, no weight decay, the default AdamW.
    args = TrainingArguments(
        output_dir=str(tmp / "hf"),
        per_device_train_batch_size=settings["batch_size"],
        learning_rate=2e-5,
        max_steps=total,
        bf16=not run_glue,
        seed=settings["seed"],
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )

    class Chunks(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            pacer.at_step(state.global_step)

    collator = default_data_collator if run_glue else DataCollatorWithPadding(tokenizer)
    trainer = Trainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=[Chunks()]
    )
    # Quiet, as the promptmux worker is: the Trainer's closing summary counts the pauses too.
    with contextlib.redirect_stdout(io.StringIO()):
        trainer.train()
    model.pacer = None
    scores = evaluate_hf(
        model, tokenizer, tasks, dev_rows, settings["max_length"], "fp32" if run_glue else "bf16"
    )
    info = {
        "shape": model_shape(model.encoder),
        "steps": trainer.state.global_step,
        # What the Trainer really ran with (bf16 on CPU goes through accelerate's autocast).
        "mixed_precision": str(trainer.accelerator.mixed_precision),
        "optimizer": f"{type(getattr(trainer.optimizer, 'optimizer', trainer.optimizer)).__name__} "
        f"({getattr(args.optim, 'value', args.optim)})",
    }
    return scores, info


def evaluate_hf(
    model, tokenizer, tasks, dev_rows, max_length: int, precision: str
) -> dict[str, dict[str, float]]:
    """Dev metrics with promptmux's metric functions (so both sides are scored the same way)."""
    import torch

    from promptmux.eval.metrics import compute_metrics

    model.eval()
    device = next(model.parameters()).device
    amp = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if precision == "bf16"
        else contextlib.nullcontext()
    )
    scores = {}
    for t, info in enumerate(tasks):
        rows = dev_rows[info["name"]]
        if not rows:
            continue
        preds = []
        for start in range(0, len(rows), 128):
            part = rows[start : start + 128]
            texts = [ex.text for ex in part]
            pairs = [ex.text_b for ex in part] if part[0].text_b is not None else None
            enc = tokenizer(
                texts,
                pairs,
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            task_ids = torch.full((len(part),), t, dtype=torch.long)
            with torch.no_grad(), amp:
                z = model(
                    **{k: v.to(device) for k, v in enc.items()}, task_ids=task_ids.to(device)
                )["logits"][t].float()
            preds += (
                z.squeeze(-1).tolist() if info["type"] == "regression" else z.argmax(-1).tolist()
            )
        scores[info["name"]] = compute_metrics(
            info["type"], preds, [ex.label for ex in rows], info["labels"]
        )
    return scores
