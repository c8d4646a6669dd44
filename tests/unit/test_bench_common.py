"""The command-line options and run overrides the bench scripts share (bench/common.py).

The README and bench/results/*.md quote the scripts' commands, so their flags and defaults are
pinned here too: a refactor of the shared helpers must not change what a quoted command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def bench_module(name: str) -> ModuleType:
    """Import a bench script as the scripts import each other (bench/ on sys.path)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def common() -> ModuleType:
    return bench_module("common")


def parser(common: ModuleType, **run: object) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    common.add_tasks_arg(p)
    common.add_run_args(p, **run)
    common.add_output_args(p, "demo")
    return p


def test_shared_options_defaults_and_order(common: ModuleType) -> None:
    args = parser(common).parse_args([])
    assert list(vars(args)) == [
        "tasks", "batch_size", "train_cap", "dev_cap", "max_length", "lr", "head_lr", "sampling",
        "precision", "threads", "set", "tag", "results_dir",
    ]  # fmt: skip
    assert args.tasks == "sst2,cola,mrpc,stsb,rte"
    assert (args.batch_size, args.train_cap, args.dev_cap, args.max_length) == (32, None, None, 128)
    assert (args.lr, args.head_lr, args.sampling) == (5e-5, 1e-3, "temperature")
    assert args.precision == "auto"
    assert (args.threads, args.set, args.tag) == (None, [], "")
    assert args.results_dir == str(BENCH / "results")


def test_switches_leave_options_out_and_set_defaults(common: ModuleType) -> None:
    p = argparse.ArgumentParser()
    common.add_run_args(
        p,
        batch_size=16,
        train_cap=4000,
        unit="sentences",
        test_cap=True,
        precision=True,
        lr=None,
        sampling=None,
    )
    common.add_output_args(p, "demo", precision=False, overrides_for=None)
    args = p.parse_args([])
    assert list(vars(args)) == [
        "batch_size", "train_cap", "dev_cap", "test_cap", "max_length", "precision", "threads",
        "tag", "results_dir",
    ]  # fmt: skip
    assert (args.batch_size, args.train_cap) == (16, 4000)
    helps = {a.dest: a.help for a in p._actions}
    assert helps["train_cap"] == "training sentences kept per task (seeded sample; 0: all)"
    assert helps["test_cap"].startswith("test sentences kept per task")
    assert helps["tag"] == "suffix for the result files (demo<-tag>.json/.md)"


def test_bad_precision_is_refused_naming_the_option(
    common: ModuleType, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit):
        parser(common).parse_args(["--precision", "fp16"])
    assert "--precision: invalid choice: 'fp16'" in capsys.readouterr().err


def test_run_overrides(common: ModuleType) -> None:
    argv = ["--train-cap", "60", "--dev-cap", "24", "--precision", "fp32"]
    args = parser(common).parse_args(argv)
    out = Path("/tmp/run")
    o = common.run_overrides(args, ["sst2", "rte"], 40, 1001, out, sampling={"mixed": True})
    assert o == {
        "seed": 1001,
        "model.max_length": 128,
        "sampling.mixed": True,
        "train.max_steps": 40,
        "train.epochs": None,
        "train.batch_size": 32,
        "train.grad_accum": 1,
        "train.lr": 5e-5,
        "train.head_lr": 1e-3,
        "train.eval_every": 40,  # one evaluation, after the last step
        "train.log_every": 2,
        "train.progress": False,
        "train.precision": "fp32",
        "output.dir": "/tmp/run",
        "output.tensorboard": False,
        "tasks.sst2.data.max_examples.train": 60,
        "tasks.rte.data.max_examples.train": 60,
        "tasks.sst2.data.max_examples.dev": 24,
        "tasks.rte.data.max_examples.dev": 24,
    }
    # A cap of 0 keeps every row; a parser without --test-cap caps no test split.
    args.train_cap = 0
    o = common.run_overrides(args, ["sst2"], 5, 0, Path("out"), eval_every=2)
    assert not any(k.endswith((".train", ".test")) for k in o)
    assert (o["train.eval_every"], o["train.log_every"]) == (2, 1)


def test_command_stem_and_settings(common: ModuleType) -> None:
    args = parser(common).parse_args(["--tag", "smoke", "--set", "train.lr=1e-4"])
    command = common.command_line("glue5.py", ["--tag", "a b"])
    assert command == "python bench/glue5.py --tag 'a b'"
    assert common.result_stem("glue5", args.tag) == "glue5-smoke"
    assert common.result_stem("glue5", "") == "glue5"
    settings = common.settings_of(args, "threads")
    assert "tag" not in settings and "results_dir" not in settings and "threads" not in settings
    assert settings["set"] == ["train.lr=1e-4"]


def test_loop_step_seconds(common: ModuleType) -> None:
    events = [
        {"event": "train", "step": 10, "time": 100.0},
        {"event": "eval", "step": 20, "time": 500.0},
        {"event": "train", "step": 30, "time": 140.0},
    ]
    assert common.loop_step_seconds(events, wall=999.0, steps=30) == 2.0
    assert common.loop_step_seconds(events[:1], wall=12.0, steps=4) == 3.0


# script -> defaults of its command line (a sample of its options).
SCRIPTS = {
    "glue5": {
        "tasks": "sst2,cola,mrpc,stsb,rte", "modes": "single,multi", "seeds": 3, "steps": 4000,
        "batch_size": 32, "train_cap": None, "lr": 5e-5, "head_lr": 1e-3,
        "sampling": "temperature", "temperature": 2.0, "precision": "auto",
    },
    "conll": {
        "aux": "pos,chunk", "budget": "compute", "seeds": 3, "steps": 1500, "batch_size": 32,
        "test_cap": None, "lr": 5e-5, "sampling": "temperature", "precision": "auto",
    },
    "weighting": {
        "tasks": "sst2,cola,mrpc,stsb,rte", "seeds": 3, "steps": 1500, "batch_size": 32,
        "lr": 5e-5, "head_lr": 1e-3, "sampling": "temperature", "precision": "auto",
    },
    "peft_robust": {
        "tasks": "sst2,mrpc,rte,stsb", "seeds": 1, "steps": 200, "batch_size": 16,
        "train_cap": 4000, "lr": 1e-4, "head_lr": 1e-3, "precision": "auto", "lora_r": 8,
        "work_dir": None,
    },
    "throughput": {
        "tasks": "sst2,cola,mrpc,stsb,rte", "steps": 25, "rounds": 12, "warmup": 10,
        "batch_size": 32, "max_length": 128, "sampling": "proportional", "seed": 42,
    },
}  # fmt: skip


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_script_command_line_defaults(script: str) -> None:
    args = bench_module(script).parse_args([])
    expected = SCRIPTS[script]
    assert {k: getattr(args, k) for k in expected} == expected
    assert (args.threads, args.tag) == (None, "")
    assert hasattr(args, "set") == (script != "throughput")


def test_peft_robust_records_precision_after_max_length() -> None:
    """Its report prints the settings in parser order: the order is part of the markdown."""
    names = list(vars(bench_module("peft_robust").parse_args([])))
    assert names.index("precision") == names.index("max_length") + 1


def touch_fresh_pages(mib: int) -> None:
    """Make the resident set grow by `mib` MiB for a moment, then give the pages back.

    An anonymous mmap always maps new pages. A bytearray would not do: in a long test process,
    malloc may serve it from a freed heap chunk that is still resident, so touching it raises
    neither RSS nor its high-water mark.
    """
    import mmap

    size = mib * 2**20
    with mmap.mmap(-1, size) as region:
        for offset in range(0, size, mmap.PAGESIZE):
            region[offset] = 1


def test_training_memory_counts_state_and_steps_peak() -> None:
    """peft_robust's TrainingMemory: exact params + grads + optimizer bytes at step 1, and the RSS
    high-water mark of steps 2..N (reset after step 1) read at the last step."""
    import sys as _sys
    from types import SimpleNamespace

    import torch

    memory = bench_module("peft_robust").TrainingMemory()
    model = torch.nn.Linear(256, 256)  # 65,792 float32 parameters
    model.bias.requires_grad_(False)  # frozen: counted as a parameter, not as a gradient
    opt = torch.optim.AdamW([model.weight])
    model(torch.randn(2, 256)).sum().backward()
    opt.step()  # creates exp_avg and exp_avg_sq for the weight (and a step counter)
    touch_fresh_pages(256)  # a peak BEFORE the reset (loading, say): must not count
    ctx = SimpleNamespace(step=1, total_steps=3, model=model, optimizer=opt)
    memory.on_step_end(ctx)
    weight, bias = 256 * 256 * 4, 256 * 4
    step_counter = sum(
        s["step"].numel() * s["step"].element_size() for s in opt.state.values()
    )
    expected = (weight + bias) + weight + 2 * weight + step_counter
    assert memory.out["state_mib"] == pytest.approx(expected / 2**20)
    if not _sys.platform.startswith("linux"):
        return
    assert memory.out["rss_step1_mib"] > 0 and "train_peak_rss_mib" not in memory.out
    memory.on_step_end(SimpleNamespace(step=2, total_steps=3, model=model, optimizer=opt))
    assert "train_peak_rss_mib" not in memory.out
    touch_fresh_pages(64)  # 64 MiB touched during "training"
    memory.on_step_end(SimpleNamespace(step=3, total_steps=3, model=model, optimizer=opt))
    peak, base = memory.out["train_peak_rss_mib"], memory.out["rss_step1_mib"]
    assert base + 60 <= peak < base + 64 + 150  # the spike after the reset, not the one before


def _prompt_tuning_part(methods: dict[str, dict[str, float]], threads: int = 1) -> dict:
    """A prompt_tuning report as the script writes it, with the given per-method sst2 accuracies."""
    module = bench_module("prompt_tuning")
    args = module.parse_args(["--methods", ",".join(methods), "--threads", str(threads)])
    return {
        "command": f"python bench/prompt_tuning.py --methods {','.join(methods)}",
        "settings": {k: v for k, v in vars(args).items() if k not in ("tag", "results_dir", "merge")},
        "metric_of": {"sst2": "accuracy"},
        "majority": {"sst2": {"accuracy": 50.0}},
        "results": {
            m: {"metrics": {"sst2": {"accuracy": acc}}, "trainable": 10, "total": 100, "trainable_share_pct": 10.0, "wall_s": 60.0}
            for m, acc in methods.items()
        },
        "environment": {"cpu": "test", "gpu": None, "cores": 2, "torch": "x", "torch_threads": threads,
                        "load_average_at_start": (0.0, 0.0, 0.0), "git": "abc", "date": "today", "native_bf16": False},
    }


def test_prompt_tuning_merges_parallel_parts_and_scores_gains_against_full(tmp_path: Path) -> None:
    import json

    module = bench_module("prompt_tuning")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_prompt_tuning_part({"deep": 80.0, "generated": 65.0})))
    b.write_text(json.dumps(_prompt_tuning_part({"full": 90.0, "shallow": 86.0}, threads=2)))  # threads may differ
    report = module.main(["--merge", f"{a},{b}", "--results-dir", str(tmp_path), "--tag", "merged"])
    assert list(report["results"]) == ["full", "shallow", "deep", "generated"]  # the usual order
    gains = {m: r["gain"]["sst2"] for m, r in report["results"].items()}
    assert gains == pytest.approx({"full": 1.0, "shallow": 0.9, "deep": 0.75, "generated": 0.375})
    md = (tmp_path / "prompt_tuning-merged.md").read_text()
    assert "| shallow | 86.0 | 0.90 |" in md and "fp32 (no native bf16, precision auto)" in md
    assert report["environment"]["parallel_processes"] == 2
    # each part's own machine line: here the parts ran with 1 and 2 threads
    assert "- a.json: Machine: test, 2 cores" in md and "(1 threads)" in md.split("- b.json")[0]
    assert "- b.json: Machine: test, 2 cores" in md and "(2 threads)" in md.split("- b.json")[1]
    c = tmp_path / "c.json"
    c.write_text(json.dumps(_prompt_tuning_part({"prefix": 70.0})))
    again = module.main(["--merge", f"{tmp_path / 'prompt_tuning-merged.json'},{c}", "--results-dir", str(tmp_path)])
    assert [m["file"] for m in again["machines"]] == ["a.json", "b.json", "c.json"]  # a merged part brings its parts'


def test_prompt_tuning_merge_refuses_other_settings_and_repeated_methods(tmp_path: Path) -> None:
    import json

    module = bench_module("prompt_tuning")
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(_prompt_tuning_part({"full": 90.0})))
    other = _prompt_tuning_part({"shallow": 86.0})
    other["settings"]["steps"] = 7
    b.write_text(json.dumps(other))
    c.write_text(json.dumps(_prompt_tuning_part({"full": 91.0})))
    with pytest.raises(SystemExit, match=f"--merge: {b} was run with other settings than {a}"):
        module.main(["--merge", f"{a},{b}", "--results-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match=f"--merge: {c} repeats methods of an earlier part: full"):
        module.main(["--merge", f"{a},{c}", "--results-dir", str(tmp_path)])


def test_prompt_tuning_merge_records_each_method_s_own_prompt_only_settings(tmp_path: Path) -> None:
    import json

    module = bench_module("prompt_tuning")

    def part(name: str, methods: dict[str, float], **settings) -> Path:
        report = _prompt_tuning_part(methods)
        report["settings"].update(settings)
        (tmp_path / name).write_text(json.dumps(report))
        return tmp_path / name

    a = part("a.json", {"full": 90.0, "late": 80.0}, late_layer=1)  # full reads neither setting
    b = part("b.json", {"prefix-res": 85.0}, reparam_hidden=12)
    c = part("c.json", {"late-res": 70.0}, late_layer=1, reparam_hidden=16)
    report = module.main(["--merge", f"{a},{b},{c}", "--results-dir", str(tmp_path), "--tag", "own"])
    assert report["settings"]["late_layer"] == 1  # late and late-res agree
    assert report["settings"]["reparam_hidden"] == "prefix-res=12,late-res=16"
    # A merged report merges again: its per-method values are read back per method.
    d = part("d.json", {"prefix-res": 86.0}, reparam_hidden=12, seed=7)
    again = module.main(["--merge", f"{tmp_path / 'prompt_tuning-own.json'},{d}", "--results-dir", str(tmp_path)])
    assert again["results"]["prefix-res"]["seeds"] == [42, 7] and again["settings"]["reparam_hidden"] == "prefix-res=12,late-res=16"
    # One method run with two values of a setting it reads is refused; a method that does not read it is not.
    e = part("e.json", {"prefix-res": 84.0}, reparam_hidden=16, seed=7)
    with pytest.raises(SystemExit, match=f"--merge: {e} ran prefix-res with reparam_hidden 16, an earlier part with 12"):
        module.main(["--merge", f"{a},{b},{e}", "--results-dir", str(tmp_path)])
    f = part("f.json", {"prefix": 84.0}, late_layer=2, reparam_hidden=32)
    assert "prefix" in module.main(["--merge", f"{a},{f}", "--results-dir", str(tmp_path)])["results"]


def test_prompt_tuning_merge_pools_a_method_over_seeds(tmp_path: Path) -> None:
    import json

    module = bench_module("prompt_tuning")
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(_prompt_tuning_part({"full": 90.0, "prefix": 80.0})))
    other = _prompt_tuning_part({"prefix": 70.0, "shallow": 60.0})
    other["settings"]["seed"] = 7
    b.write_text(json.dumps(other))
    report = module.main(["--merge", f"{a},{b}", "--results-dir", str(tmp_path), "--tag", "seeds"])
    prefix = report["results"]["prefix"]
    assert prefix["seeds"] == [42, 7] and prefix["metrics"]["sst2"]["accuracy"] == pytest.approx(75.0)
    assert prefix["metrics_sd"]["sst2"]["accuracy"] == pytest.approx(50**0.5)  # sd of 80 and 70 (n - 1)
    assert prefix["gain"]["sst2"] == pytest.approx(0.625)  # (75 - 50) / (90 - 50)
    assert prefix["gain_mean_per_seed"] == pytest.approx([0.75, 0.5]) and prefix["gain_mean_sd"] == pytest.approx(0.03125**0.5)
    assert report["results"]["shallow"]["metrics"]["sst2"]["accuracy"] == 60.0 and "seeds" not in report["results"]["shallow"]
    assert report["settings"]["seed"] == "7,42"
    md = (tmp_path / "prompt_tuning-seeds.md").read_text()
    assert "| prefix (2 seeds) | 75.0 ±7.1 | 0.62 | 0.62 ±0.18 |" in md and "prefix: seeds 42, 7" in md
    row = next(line for line in md.splitlines() if line.startswith("| prefix (2 seeds)"))
    assert row.endswith("| 10 | 10.000% | 1.0 min |")  # one thread count: the mean wall time
    # Seeds run at other thread counts: each seed's wall time with its count, not their mean.
    other["settings"]["seed"], other["settings"]["threads"] = 3, 2
    other["results"]["prefix"]["wall_s"] = 30.0
    c.write_text(json.dumps(other))
    report = module.main(["--merge", f"{a},{c}", "--results-dir", str(tmp_path), "--tag", "threads"])
    assert report["results"]["prefix"]["threads_per_seed"] == [1, 2]
    md = (tmp_path / "prompt_tuning-threads.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| prefix (2 seeds)"))
    assert row.endswith("| 1.0 / 0.5 min (1 / 2 threads) |")
    # Full fine-tuning over several seeds: its mean is every gain's reference.
    full7 = _prompt_tuning_part({"full": 80.0})
    full7["settings"]["seed"] = 7
    c.write_text(json.dumps(full7))
    report = module.main(["--merge", f"{a},{b},{c}", "--results-dir", str(tmp_path), "--tag", "fullseeds"])
    assert report["results"]["full"]["metrics"]["sst2"]["accuracy"] == pytest.approx(85.0)
    assert report["results"]["prefix"]["gain"]["sst2"] == pytest.approx((75 - 50) / (85 - 50))
    assert report["results"]["full"]["gain_mean_per_seed"] == pytest.approx([40 / 35, 30 / 35])
    md = (tmp_path / "prompt_tuning-fullseeds.md").read_text()
    assert "| full (2 seeds) | 85.0 ±7.1 |" in md and "the reference, full fine-tuning, is its mean over seeds" in md


def test_prompt_tuning_per_method_settings() -> None:
    per_method = bench_module("prompt_tuning").per_method
    assert per_method("3e-2", "deep") == 3e-2
    assert per_method("full=1e-3,shallow=1e-2", "shallow") == 1e-2
    assert per_method("20,prefix=15", "prefix") == 15
    assert per_method("20,prefix=15", "shallow") == 20  # not named: the one without a name
    assert per_method("20,prefix=15", "prefix-res") == 15  # not named: its kind's
    assert per_method("1e-2,prefix-res=1e-3,prefix=3e-3", "prefix-res") == 1e-3
    with pytest.raises(SystemExit, match="names no value for method deep"):
        per_method("full=1e-3,shallow=1e-2", "deep")  # (a silent fallback once gave prefixes 1e-1)
    assert per_method("full=1e-3,shallow=1e-2", "deep", recorded=True) == 1e-2  # how older runs read it


def test_prompt_tuning_full_from_an_earlier_report_must_match_but_for_the_budget(tmp_path: Path) -> None:
    import json

    module = bench_module("prompt_tuning")
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps(_prompt_tuning_part({"full": 90.0, "shallow": 80.0})))
    args = module.parse_args(["--methods", "shallow,prefix", "--steps", "6000", "--full-from", str(earlier)])
    reference, notes = module.full_reference(args, ["shallow", "prefix"])
    assert list(reference) == ["full"] and reference["full"]["metrics"]["sst2"]["accuracy"] == 90.0
    assert "(360 steps; the other methods here ran 6000 steps" in notes[0]
    with pytest.raises(SystemExit, match="leave it out of --methods"):
        module.full_reference(args, ["full", "shallow"])
    other = module.parse_args(["--methods", "shallow", "--seed", "7", "--full-from", str(earlier)])
    with pytest.raises(SystemExit, match="other settings: seed"):
        module.full_reference(other, ["shallow"])
    no_full = tmp_path / "no_full.json"
    no_full.write_text(json.dumps(_prompt_tuning_part({"shallow": 80.0})))
    with pytest.raises(SystemExit, match="has no full method"):
        module.full_reference(module.parse_args(["--full-from", str(no_full)]), ["shallow"])


def test_prompt_tuning_late_layer_reaches_only_late_methods_and_not_the_full_reference(tmp_path: Path) -> None:
    import json

    module = bench_module("prompt_tuning")
    args = module.parse_args(["--methods", "late,late-res,late-inst,deep", "--late-layer", "1"])
    methods = ("late", "late-res", "late-inst", "deep", "prefix", "prefix-inst", "prefix-res-inst", "full", "head")
    models = {m: module.build_config(args, m, tmp_path / m).model for m in methods}
    assert models["late"].prompts.layer == models["late-res"].prompts.layer == models["late-inst"].prompts.layer == 1
    assert models["deep"].prompts.layer is None
    # Late prompts take 32 vectors by default (the most inside 0.2% of MiniLM); with a network, 20.
    lengths = tuple(models[m].prompts.length for m in ("late", "late-res", "late-inst", "deep"))
    assert lengths == (32, 20, 20, 20)
    # Prefixes take 15 (inside 1%); with both networks, 14.
    assert tuple(models[m].prompts.length for m in ("prefix", "prefix-inst", "prefix-res-inst")) == (15, 15, 14)
    # The instance term and --network-lr (1e-3 by default) reach only the methods with a network.
    assert models["late-inst"].prompts.instance_hidden == 16 and models["late"].prompts.instance_hidden is None
    assert models["prefix-res-inst"].prompts.instance_hidden == 16 and models["prefix-res-inst"].prompts.reparam == "residual"
    assert models["prefix-inst"].prompts.reparam == "none" and models["prefix-inst"].prompts.network_lr == 1e-3
    assert models["late-inst"].prompts.network_lr == models["late-res"].prompts.network_lr == 1e-3
    assert models["late"].prompts.network_lr is None and models["deep"].prompts.network_lr is None
    rate = module.build_config(module.parse_args(["--network-lr", "3e-3"]), "prefix-res", tmp_path / "r").model.prompts.network_lr
    assert rate == 3e-3
    # The methods without prompts build (the default per-method rates name none of them).
    assert models["full"].prompts.kind == models["head"].prompts.kind == "none"
    # A report from before the option (no late_layer recorded) still serves as the full reference.
    earlier = _prompt_tuning_part({"full": 90.0})
    del earlier["settings"]["late_layer"]
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    args = module.parse_args(["--methods", "late", "--late-layer", "2", "--full-from", str(tmp_path / "earlier.json")])
    assert list(module.full_reference(args, ["late"])[0]) == ["full"]


def test_prompt_tuning_merge_takes_named_methods_and_records_per_method_rates(tmp_path: Path) -> None:
    import json

    module = bench_module("prompt_tuning")
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text(json.dumps(_prompt_tuning_part({"full": 90.0, "shallow": 86.0})))
    b.write_text(json.dumps(_prompt_tuning_part({"prefix": 50.0, "deep": 80.0})))  # prefix diverged here
    rerun = _prompt_tuning_part({"prefix": 88.0})
    rerun["settings"]["prompt_lr"] = "prefix=3e-3"
    c.write_text(json.dumps(rerun))
    report = module.main(["--merge", f"{a},{b}=deep,{c}", "--results-dir", str(tmp_path)])
    assert list(report["results"]) == ["full", "shallow", "deep", "prefix"]
    assert report["results"]["prefix"]["metrics"]["sst2"]["accuracy"] == 88.0
    rates = dict(item.split("=") for item in report["settings"]["prompt_lr"].split(","))
    assert rates["prefix"] == "0.003" and rates["shallow"] == "0.1"
    with pytest.raises(SystemExit, match="has no method generated"):
        module.main(["--merge", f"{a},{b}=generated", "--results-dir", str(tmp_path)])


def test_seed_stats_is_the_mean_and_sample_sd_over_seeds(common: ModuleType) -> None:
    assert common.seed_stats([1.0, 2.0, 6.0]) == {"mean": 3.0, "std": pytest.approx(2.6457513), "n": 3}
    assert common.seed_stats([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}  # one seed: no spread
    weighting = bench_module("weighting")
    runs = [{"scores": {"a": a}, "aggregate": a, "step_s": 1.0} for a in (1.0, 3.0)]
    summary = weighting.summarize(runs, ["a"])
    assert summary["tasks"]["a"] == summary["aggregate"] == {"mean": 2.0, "std": pytest.approx(2**0.5), "n": 2}
