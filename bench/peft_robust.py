"""Parameter-efficient and robust training on real GLUE data (issue 7): LoRA vs full fine-tuning,
FGM on vs off, a distilled 3-layer student, and a task added to a frozen bundle.

Every run trains one multi-task MiniLM (configs/glue5.yaml restricted to `--tasks`) on the same
capped training rows, in mixed-task batches, for the same number of steps, and is scored on the
GLUE dev sets (GLUE test labels are not public) once, after its last step (train.eval_every =
steps: no picking of the best evaluation on the dev set). Per task the main metric of glue5.yaml;
"mean" is their unweighted mean (GLUE style). With several seeds, cells are mean ± std over seeds.

Runs (per seed; each needed run happens once and is shared by the sections that use it):

    full            full fine-tuning (encoder lr --lr, heads --head-lr)
    lora_shared     LoRA r=--lora-r, one adapter for all tasks (model.lora.kind=shared)
    lora_per_task   LoRA, one adapter per task, rows routed to their task's adapter
    fgm             full + train.adversarial.method=fgm (epsilon --fgm-epsilon)
    student         model.num_layers=--student-layers (the first layers of the same checkpoint),
                    trained on labels alone, otherwise as full
    student_distill the same student with distill.teacher = full's bundle (the 6-layer multi-task
                    model of this seed, after its last step), temperature and alpha as flagged
    base            full (or lora_per_task with --add-method lora) without the held-back task
    added           `add-task` of the held-back task on base's frozen bundle (train/add_task.py)

Sections (`--sections`) and what they compare:

- lora: full vs lora_shared vs lora_per_task. LoRA gets its own, higher learning rate
  (model.lora.lr = --lora-lr, 5e-4 by default: LoRA's matrices start at B = 0 and move little at
  full fine-tuning's 1e-4); the heads keep --head-lr. Adapters on query and value (the default
  model.lora.target_modules), alpha 16. Reported: scores and mean, trainable parameters and share,
  the adapter files' sizes in the bundle (`adapters/<task>.safetensors`, or the one shared file),
  peak memory, step time and wall time. Aim (issue 7): mean within 1 point of full, adapter files
  under 1 MB per task, lower peak memory.
- fgm: full (FGM off) vs fgm (on), same seed, data order and budget: scores, and the step-time
  ratio two ways: seconds per step of fgm / of full (measured from the train events' clocks, the
  loop alone), and the trainer's own `adversarial.step_time_ratio` (clean + adversarial time over
  clean time of the perturbed micro-batches, mean over log intervals).
- distill: full (the teacher) vs student vs student_distill, same steps.
- add_task: the held-back task (`--holdout`, rte by default) learned by add-task on the frozen
  bundle of the others (a shallow soft prompt of 20 vectors + a new head with --add-method prompt;
  a new per-task LoRA adapter + head with --add-method lora), for --add-steps steps of --batch-size
  rows of that task alone, keeping the last step's weights, vs the same task in the joint model
  trained with it from the start (full, or lora_per_task). Old tasks: dev scores before and after
  the addition, from add_task.json (they must be unchanged). Learning rates of the addition: head
  --add-head-lr (default 1e-2 for prompt, --head-lr for lora), prompt or adapter --add-lr
  (default 1e-1 for prompt, as found for shallow prompts in bench/prompt_tuning.py; --lora-lr
  for lora).

Peak memory: each run trains in a fresh Python process (this script with --worker), which reports
its own peak resident set size (getrusage(RUSAGE_SELF).ru_maxrss) at its end: model loading, data
encoding, training, the final evaluation and bundle writing included; for student_distill the
loaded teacher too. On a GPU also torch.cuda.max_memory_allocated. In one process, runs after the
first would inherit its peak. The runs of a seed go one after the other (full first, as teacher
and reference), seeds outermost.

Budget (`--steps`, `--batch-size`, `--add-steps`): the defaults, 200 steps of 16 rows (4,000
training rows per task at most, full dev sets), are sized for roughly 30-40 minutes per seed on 2
otherwise idle CPU cores (estimated from about 1 s per full fine-tuning step there: full 1x,
each LoRA run about 0.8x, FGM about 2x, each student about 0.5x plus the teacher's forward passes,
base 1x, add-task about 0.7x, plus one full dev evaluation per run; on a shared machine it takes
several times longer). 200 steps are about 800 rows per task: SST-2 moves well away from the
majority class in such a budget, while MRPC and RTE barely do (bench/results/prompt_tuning.md), so
use --steps 1000 or more when there is time. The report is rewritten after every run, so an
interrupted benchmark leaves the runs done so far. Step times from separate runs drift with the
machine's load; the trainer's own FGM ratio is measured inside one run and is the steadier one.

Usage (from the repository root; data under ../shared/data or $PROMPTMUX_DATA):

    .venv/bin/python bench/peft_robust.py                           # all sections, 1 seed
    .venv/bin/python bench/peft_robust.py --sections lora,fgm --seeds 3
    .venv/bin/python bench/peft_robust.py --steps 6 --train-cap 64 --dev-cap 32 --seeds 1 \
        --results-dir /tmp/peft-smoke --tag smoke                   # smoke test (minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from peft_robust_report import markdown, summarize

SECTIONS = ("lora", "fgm", "distill", "add_task")
# Which runs each section needs, in the order they train (full first: teacher and reference).
ORDER = (
    "full",
    "lora_shared",
    "lora_per_task",
    "fgm",
    "student",
    "student_distill",
    "base",
    "added",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--sections", default=",".join(SECTIONS), help="comma separated: " + ", ".join(SECTIONS)
    )
    common.add_tasks_arg(p, "sst2,mrpc,rte,stsb")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument(
        "--steps", type=int, default=200, help="optimizer steps per training run (the budget)"
    )
    common.add_run_args(
        p,
        batch_size=16,
        train_cap=4000,
        precision=True,
        lr=1e-4,
        lr_help="encoder rate of full fine-tuning (and the student)",
        sampling=None,
    )
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16.0)
    p.add_argument("--lora-lr", type=float, default=5e-4, help="model.lora.lr")
    p.add_argument("--fgm-epsilon", type=float, default=1.0, help="train.adversarial.epsilon")
    p.add_argument("--student-layers", type=int, default=3)
    p.add_argument("--distill-temperature", type=float, default=2.0)
    p.add_argument("--distill-alpha", type=float, default=0.5)
    p.add_argument(
        "--holdout", default="rte", help="the task held back and added later (add_task section)"
    )
    p.add_argument("--add-method", default="prompt", choices=["prompt", "lora"])
    p.add_argument("--add-steps", type=int, default=None, help="add-task steps (default: --steps)")
    p.add_argument(
        "--add-lr",
        type=float,
        default=None,
        help="new prompt/adapter rate (default 1e-1 prompt, --lora-lr lora)",
    )
    p.add_argument(
        "--add-head-lr",
        type=float,
        default=None,
        help="new head rate (default 1e-2 prompt, --head-lr lora)",
    )
    common.add_output_args(
        p,
        "peft_robust",
        precision=False,
        threads_in=" in each run",
        overrides_for="every training run",
    )
    p.add_argument(
        "--work-dir",
        default=None,
        help="keep the runs (bundles, logs, add_task.json) in this new folder (default: temporary)",
    )
    args = p.parse_args(argv)
    check_args(p, args)
    return args


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.sections_list = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(args.sections_list) - set(SECTIONS))
    if unknown or not args.sections_list:
        p.error(f"--sections: unknown {unknown}; choose from {', '.join(SECTIONS)}")
    tasks = args.tasks.split(",")
    if "add_task" in args.sections_list:
        if args.holdout not in tasks:
            p.error(f"--holdout: {args.holdout!r} is not one of --tasks ({args.tasks})")
        if len(tasks) < 2:
            p.error("--tasks: add_task needs the held-back task and at least one other")
    for name in ("seeds", "steps", "batch_size", "student_layers", "lora_r"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')}: must be at least 1")
    if args.add_steps is None:
        args.add_steps = args.steps
    if args.add_steps < 1:
        p.error("--add-steps: must be at least 1")


def needed_runs(args: argparse.Namespace) -> list[str]:
    """The runs the chosen sections need, in training order."""
    # full: teacher, FGM-off and LoRA reference, and the joint model of add_task with prompts.
    want = set() if args.sections_list == ["add_task"] and args.add_method == "lora" else {"full"}
    if "lora" in args.sections_list:
        want |= {"lora_shared", "lora_per_task"}
    if "fgm" in args.sections_list:
        want.add("fgm")
    if "distill" in args.sections_list:
        want |= {"student", "student_distill"}
    if "add_task" in args.sections_list:
        want |= {"base", "added"} | ({"lora_per_task"} if args.add_method == "lora" else set())
    return [r for r in ORDER if r in want]


# ---- run specifications (what the parent sends to a worker) --------------------------------------


def base_overrides(
    args: argparse.Namespace, tasks: list[str], seed: int, out: Path
) -> dict[str, Any]:
    return common.run_overrides(args, tasks, args.steps, seed, out, sampling={"mixed": True})


def lora_overrides(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    return {
        "model.lora.kind": kind,
        "model.lora.r": args.lora_r,
        "model.lora.alpha": args.lora_alpha,
        "model.lora.lr": args.lora_lr,
    }


def train_spec(args: argparse.Namespace, name: str, seed: int, folder: Path) -> dict[str, Any]:
    """The config of one training run, as glue_config's arguments."""
    tasks = args.tasks.split(",")
    raw_update: dict[str, Any] = {}
    if name == "base":
        tasks = [t for t in tasks if t != args.holdout]
    overrides = base_overrides(args, tasks, seed, folder / "run")
    if name in ("lora_shared", "lora_per_task"):
        overrides.update(lora_overrides(args, name.removeprefix("lora_")))
    elif name == "base" and args.add_method == "lora":
        overrides.update(lora_overrides(args, "per_task"))
    elif name == "fgm":
        overrides.update(
            {"train.adversarial.method": "fgm", "train.adversarial.epsilon": args.fgm_epsilon}
        )
    elif name in ("student", "student_distill"):
        overrides["model.num_layers"] = args.student_layers
    if name == "student_distill":
        # The teacher: the full run of this seed, with its weights after the last step.
        teacher = folder.parent / "full" / "run" / "last"
        raw_update["distill"] = {
            "teacher": str(teacher),
            "temperature": args.distill_temperature,
            "alpha": args.distill_alpha,
        }
    return {
        "kind": "train",
        "tasks": ",".join(tasks),
        "overrides": overrides,
        "extra": list(args.set),
        "raw_update": raw_update,
    }


def add_task_spec(args: argparse.Namespace, seed: int, folder: Path) -> dict[str, Any]:
    """The new-task file for the held-back task, and where add-task reads and writes."""
    import yaml

    from promptmux.config.load import config_to_dict

    full = common.glue_config(
        args.tasks, base_overrides(args, args.tasks.split(","), seed, folder / "unused"), args.set
    )
    task = config_to_dict(full)["tasks"][args.holdout]  # data paths resolved, caps applied
    prompt = args.add_method == "prompt"
    new_task = {
        "seed": seed,
        "tasks": {args.holdout: task},
        "train": {
            "max_steps": args.add_steps,
            "epochs": None,
            "batch_size": args.batch_size,
            "lr": args.add_head_lr or (1e-2 if prompt else args.head_lr),
            "eval_every": args.add_steps,  # one evaluation, after the last step
            "log_every": max(1, args.add_steps // 20),
            "progress": False,
            "precision": args.precision,
        },
        "add_task": {
            "method": args.add_method,
            "keep": "last",
            "lr": args.add_lr or (1e-1 if prompt else args.lora_lr),
            **({"prompt": "shallow", "prompt_length": 20} if prompt else {}),
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "new_task.yaml"
    path.write_text(yaml.safe_dump(new_task, sort_keys=False), encoding="utf-8")
    bundle = folder.parent / "base" / "run" / "last"
    return {
        "kind": "add_task",
        "bundle": str(bundle),
        "new_task": str(path),
        "out": str(folder / "bundle"),
    }


# ---- the worker: one run in a fresh process ------------------------------------------------------


def peak_memory() -> dict[str, float]:
    """This process's peak resident memory (MiB; ru_maxrss is in KiB on Linux), and the GPU's."""
    import torch

    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def status_kib(field: str) -> int | None:
    """A memory field of /proc/self/status in KiB (VmRSS, VmHWM), None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class TrainingMemory:
    """Memory of the training steps alone, not of loading, encoding, evaluation or saving.

    The process's peak RSS (peak_memory) is dominated by what every run does alike (the
    interpreter, the tokenized data, evaluation, writing the bundle), which hides what a method
    saves. After the first optimizer step (parameters, gradients and optimizer state all exist),
    this resets the kernel's RSS high-water mark (writing 5 to /proc/self/clear_refs) and reads it
    at the last step, before the final evaluation: the peak over steps 2..N. It also counts the
    training state exactly: parameter, gradient and optimizer-state bytes.
    """

    def __init__(self) -> None:
        self.out: dict[str, float] = {}

    def on_step_end(self, ctx: Any) -> None:
        if ctx.step == 1:
            state = sum(
                t.numel() * t.element_size()
                for group in ctx.optimizer.state.values()
                for t in group.values()
                if hasattr(t, "numel")
            )
            params = list(ctx.model.parameters())
            self.out["state_mib"] = (
                sum(p.numel() * p.element_size() for p in params)
                + sum(p.numel() * p.element_size() for p in params if p.requires_grad)  # grads
                + state
            ) / 2**20
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.out["rss_step1_mib"] = (status_kib("VmRSS") or 0) / 1024
            except OSError:  # not Linux, or not allowed: the process peak stays the only figure
                return
        if ctx.step == ctx.total_steps and "rss_step1_mib" in self.out:
            self.out["train_peak_rss_mib"] = (status_kib("VmHWM") or 0) / 1024

    def on_train_end(self, ctx: Any) -> None:
        pass


def work_train(spec: dict[str, Any]) -> dict[str, Any]:
    from promptmux.model.lora import lora_parameters

    cfg = common.glue_config(spec["tasks"], spec["overrides"], spec["extra"], spec["raw_update"])
    memory = TrainingMemory()
    result, wall, events, _ = common.timed_train(cfg, [memory])
    model = result.model
    train_events = [e for e in events if e["event"] == "train"]
    ratios = [
        e["adversarial"]["step_time_ratio"]
        for e in train_events
        if "step_time_ratio" in e.get("adversarial", {})
    ]
    bundle = Path(cfg.output.dir) / "last"
    adapters = {
        p.stem: p.stat().st_size for p in sorted((bundle / "adapters").glob("*.safetensors"))
    }
    return {
        "scores": {t: m[cfg.main_metric(t)] for t, m in result.last_metrics.items()},
        "metrics": result.last_metrics,
        "steps": result.steps,
        "wall_s": wall,
        "step_s": common.loop_step_seconds(events, wall, result.steps),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in model.parameters()),
        "lora_trainable": sum(p.numel() for p in lora_parameters(model) if p.requires_grad),
        "adapter_bytes": adapters,
        "model_bytes": (bundle / "model.safetensors").stat().st_size,
        "adversarial_step_time_ratio": sum(ratios) / len(ratios) if ratios else None,
        "distill_last": train_events[-1].get("distill") if train_events else None,
        "loss_last": train_events[-1]["loss"] if train_events else None,
        **memory.out,
    }


def work_add_task(spec: dict[str, Any]) -> dict[str, Any]:
    from promptmux.train.add_task import add_task

    t0 = time.perf_counter()
    result = add_task(spec["bundle"], spec["new_task"], spec["out"])
    return {**result.to_dict(), "wall_s": time.perf_counter() - t0}


def worker(spec_path: str) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # add-task reports by logging
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    common.setup(spec.get("threads"))
    out = work_train(spec) if spec["kind"] == "train" else work_add_task(spec)
    out.update(peak_memory())
    Path(spec["result"]).write_text(json.dumps(out, indent=2), encoding="utf-8")


def run_in_child(spec: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Run one spec in a fresh interpreter; its output goes to folder/log.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {**spec, "result": str(folder / "result.json")}
    (folder / "spec.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
    log = folder / "log.txt"
    with log.open("w", encoding="utf-8") as f:
        code = subprocess.run(
            [sys.executable, __file__, "--worker", str(folder / "spec.json")],
            stdout=f,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode
    if code != 0:
        tail = "".join(
            log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-40:]
        )
        raise SystemExit(
            f"peft_robust: run {folder.name} failed (exit code {code}); end of its log:\n{tail}"
        )
    return json.loads((folder / "result.json").read_text(encoding="utf-8"))


# ---- main ----------------------------------------------------------------------------------------


def one_line(name: str, r: dict[str, Any]) -> str:
    """Progress: a finished run's scores, peak memory and time."""
    if name == "added":
        scores = {r["task"]: r["new_dev"].get(r["main_metric"][r["task"]], float("nan"))}
    else:
        scores = r["scores"]
    text = ", ".join(f"{t} {v:.1f}" for t, v in scores.items())
    return f"  {text} | peak {r['peak_rss_mib']:.0f} MiB | {r['wall_s'] / 60:.1f} min"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        worker(argv[1])
        return {}
    args = parse_args(argv)
    common.setup(args.threads)
    command = common.command_line("peft_robust.py", argv)
    tasks = args.tasks.split(",")
    probe = common.glue_config(args.tasks, base_overrides(args, tasks, 0, Path("probe")), args.set)
    names = needed_runs(args)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    report: dict[str, Any] = {
        "command": command,
        "settings": common.settings_of(args, "sections_list", "work_dir"),
        "sections": args.sections_list,
        "metric_of": {t: probe.main_metric(t) for t in probe.tasks},
        "holdout": args.holdout,
        "runs": runs,
        "environment": common.environment(),
        "complete": False,
    }
    stem = common.result_stem("peft_robust", args.tag)
    folder = Path(args.results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    keep = contextlib.nullcontext(args.work_dir) if args.work_dir else None
    with keep or tempfile.TemporaryDirectory(prefix="peft-robust-") as tmp:
        for seed in range(args.seeds):
            where = Path(tmp) / f"seed{seed}"
            for name in names:
                print(f"[{time.strftime('%H:%M:%S')}] seed {seed} {name} ...", flush=True)
                if name == "added":
                    spec = add_task_spec(args, 1000 + seed, where / name)
                else:
                    spec = train_spec(args, name, 1000 + seed, where / name)
                r = run_in_child({**spec, "threads": args.threads}, where / name)
                runs[name].append(r)
                print(one_line(name, r), flush=True)
                # Rewrite the files after every run: a benchmark that stops keeps what it measured.
                report["summary"] = summarize(runs, report["metric_of"])
                (folder / f"{stem}.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
                (folder / f"{stem}.md").write_text(markdown(report), encoding="utf-8")
    report["complete"] = True
    common.save_report(args, "peft_robust", report, markdown(report))
    return report


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
