"""LoRA (shared, and one adapter per task routed per row) on the tiny in-process model.

Per-task routing in mixed batches, gradients and freezing, short training runs through `train()`,
bundles that save adapters next to the heads and load them back, mixed-task inference through the
Predictor, merged export, and the config errors.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import single_thread, tiny_config, write_tasks  # noqa: F401  (fixture)
from mixed_support import TrainedRun, batch_logits, encode_mixed, mixed_tasks
from safetensors.torch import load_file
from typer.testing import CliRunner

from promptmux.cli import app
from promptmux.config import config_from_dict
from promptmux.data.collate import collate
from promptmux.data.encode import encode_examples
from promptmux.errors import BundleError, ConfigError
from promptmux.eval.report import evaluate_bundle
from promptmux.model import MultiTaskModel, TaskInfo, build_model, load_backbone
from promptmux.model.lora import TaskLoraLinear, freeze_encoder, lora_modules, lora_parameters
from promptmux.precision import autocast
from promptmux.serve.bundle import load_bundle
from promptmux.serve.export import export_merged
from promptmux.serve.mixed import predict_mixed
from promptmux.serve.predictor import Predictor
from promptmux.train.setup import build_optimizer
from promptmux.train.trainer import train

pytestmark = pytest.mark.usefixtures("single_thread")

R = 4
TASKS = mixed_tasks()


@pytest.fixture(scope="module")
def encoded(tiny_backbone: Path):
    return encode_mixed(tiny_backbone, TASKS)


def make_model(tiny_backbone: Path, kind: str = "per_task", seed: int = 0, prompts=None, **lora) -> MultiTaskModel:
    torch.manual_seed(seed)
    encoder = load_backbone(str(tiny_backbone))[0]
    spec = {"kind": kind, "r": R, "alpha": 8.0, **lora} if kind != "none" else None
    return build_model(encoder, TASKS, head_dropout=0.0, prompts=prompts, lora=spec).eval()


def everything(encoded, order=("a", "b", "tok")):
    return [(t, encoded[t], np.arange(len(encoded[t]))) for t in order]


@torch.no_grad()
def perturb(model: MultiTaskModel, task: str, scale: float = 0.5) -> None:
    """Give `task`'s adapter a non-zero update (B starts at zero)."""
    for _, layer in lora_modules(model.encoder):
        b = layer.lora_B[task] if isinstance(layer, TaskLoraLinear) else layer.lora_B[task].weight
        b.add_(scale * torch.randn_like(b))


# --- per-task routing in mixed batches -------------------------------------------------------------


def test_zero_initialised_adapters_start_from_the_plain_model(tiny_backbone: Path, encoded) -> None:
    plain = batch_logits(make_model(tiny_backbone, "none"), everything(encoded))
    for kind in ("shared", "per_task"):
        got = batch_logits(make_model(tiny_backbone, kind), everything(encoded))
        for t in plain:
            torch.testing.assert_close(got[t], plain[t], atol=1e-6, rtol=0)


def test_per_task_rows_route_to_their_own_adapter(tiny_backbone: Path, encoded) -> None:
    model = make_model(tiny_backbone)
    for t in ("a", "b", "tok"):
        perturb(model, t)
    mixed = batch_logits(model, everything(encoded, ("tok", "b", "a")))
    # Each task's rows in the mixed batch equal those rows run alone with that task's adapter.
    for t in ("a", "b", "tok"):
        alone = batch_logits(model, [(t, encoded[t], np.arange(len(encoded[t])))])[t]
        got = mixed[t][:, : alone.shape[1]] if t == "tok" else mixed[t]
        torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-5)
    # Heads a and b made identical: the adapter is then the only difference between tasks a and b.
    model.heads["b"].load_state_dict(model.heads["a"].state_dict())
    rows = np.arange(len(encoded["a"]))
    as_a = batch_logits(model, [("a", encoded["a"], rows), ("tok", encoded["tok"], np.arange(2))])["a"]
    as_b = batch_logits(model, [("tok", encoded["tok"], np.arange(2)), ("b", encoded["a"], rows)])["b"]
    assert (as_a - as_b).abs().max() > 1e-3
    with torch.no_grad():
        for _, layer in lora_modules(model.encoder):
            layer.lora_A["b"].copy_(layer.lora_A["a"])
            layer.lora_B["b"].copy_(layer.lora_B["a"])
    as_b = batch_logits(model, [("b", encoded["a"], rows)])["b"]
    torch.testing.assert_close(as_a, as_b, atol=1e-5, rtol=1e-5)


def test_changing_one_tasks_adapter_changes_only_its_rows(tiny_backbone: Path, encoded) -> None:
    model = make_model(tiny_backbone)
    before = batch_logits(model, everything(encoded))
    perturb(model, "b")
    after = batch_logits(model, everything(encoded))
    assert (after["b"] - before["b"]).abs().max() > 1e-3
    torch.testing.assert_close(after["a"], before["a"], atol=1e-6, rtol=0)
    torch.testing.assert_close(after["tok"], before["tok"], atol=1e-6, rtol=0)


def test_routing_is_kept_per_thread(tiny_backbone: Path, encoded) -> None:
    """The server runs passes of one model in several threads: each pass routes its own rows."""
    model = make_model(tiny_backbone)
    for t in ("a", "b", "tok"):
        perturb(model, t)
    jobs = [everything(encoded, order) for order in (("a", "b", "tok"), ("tok", "a"), ("b",), ("b", "a"))] * 4
    expected = [batch_logits(model, parts) for parts in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda parts: batch_logits(model, parts), jobs))
    for e, g in zip(expected, got):
        for t in e:
            torch.testing.assert_close(g[t], e[t], atol=1e-5, rtol=1e-5)


def test_encoder_called_without_rows_is_a_clear_error(tiny_backbone: Path, encoded) -> None:
    model = make_model(tiny_backbone)
    batch = collate(everything(encoded), pad_id=0)
    with pytest.raises(RuntimeError, match="per-task LoRA: this pass has no task rows"):
        model.encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask)


def test_bf16_autocast_runs_and_stays_close(tiny_backbone: Path, encoded) -> None:
    model = make_model(tiny_backbone)
    perturb(model, "a")
    full = batch_logits(model, everything(encoded))
    with autocast("cpu", "bf16"):
        low = batch_logits(model, everything(encoded))
    for t in full:
        assert torch.isfinite(low[t]).all()
        torch.testing.assert_close(low[t].float(), full[t], atol=0.1, rtol=0.1)


# --- gradients, freezing, optimizer ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["per_task", "shared"])
def test_gradients_reach_only_adapters_of_tasks_in_the_batch(tiny_backbone: Path, encoded, kind: str) -> None:
    model = make_model(tiny_backbone, kind).train()
    perturb(model, "a" if kind == "per_task" else "default")  # non-zero B: A gets gradients too
    batch = collate([("a", encoded["a"], np.arange(3)), ("tok", encoded["tok"], np.arange(2))], pad_id=0)
    out = model(**batch.model_inputs())
    sum(v.float().square().mean() for v in out.values()).backward()
    lora_ids = {id(p) for p in lora_parameters(model)}
    for name, p in model.encoder.named_parameters():
        if id(p) in lora_ids:
            continue
        assert not p.requires_grad and p.grad is None, f"base weight {name} is not frozen"
    for _, layer in lora_modules(model.encoder):
        for adapter in layer.lora_A:
            a = layer.lora_A[adapter] if kind == "per_task" else layer.lora_A[adapter].weight
            b = layer.lora_B[adapter] if kind == "per_task" else layer.lora_B[adapter].weight
            assert a.requires_grad and b.requires_grad
            if adapter == "b":  # task b has no row in the batch
                assert a.grad is None and b.grad is None
            else:
                assert b.grad is not None and b.grad.abs().sum() > 0
                if adapter in ("a", "default"):
                    assert a.grad is not None and a.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.heads["a"].parameters())


def test_a_single_task_batch_trains(tiny_backbone: Path, encoded) -> None:
    """One task's slice spanning the whole batch (single-task sampling) gets gradients too."""
    model = make_model(tiny_backbone, dropout=0.1).train()
    batch = collate([("b", encoded["b"], np.arange(2))], pad_id=0)
    model(**batch.model_inputs())["b"].square().mean().backward()
    layer = lora_modules(model.encoder)[0][1]
    assert layer.lora_B["b"].grad is not None and layer.lora_B["b"].grad.abs().sum() > 0
    assert layer.lora_B["a"].grad is None


def test_freeze_strategies_with_lora(tiny_backbone: Path) -> None:
    model = make_model(tiny_backbone)
    freeze_encoder(model, "none")  # the base is frozen, LoRA trains
    assert not any(p.requires_grad for n, p in model.encoder.named_parameters() if "lora_" not in n)
    assert all(p.requires_grad for n, p in model.encoder.named_parameters() if "lora_" in n)
    layers = model.encoder.encoder.layer
    freeze_encoder(model, "top_k", 1)
    assert all(p.requires_grad for p in layers[1].parameters())  # the top layer trains in full
    assert not any(p.requires_grad for n, p in layers[0].named_parameters() if "lora_" not in n)
    assert all(p.requires_grad for n, p in layers[0].named_parameters() if "lora_" in n)
    assert not any(p.requires_grad for p in model.encoder.embeddings.parameters())
    model = make_model(tiny_backbone)
    layers = model.encoder.encoder.layer
    freeze_encoder(model, "bottom_k", 1)  # LoRA of the bottom layer frozen too: only upper layers adapt
    assert not any(p.requires_grad for p in layers[0].parameters())
    lora_1 = [p.requires_grad for n, p in layers[1].named_parameters() if "lora_" in n]
    assert lora_1 and all(lora_1)
    assert not any(p.requires_grad for n, p in layers[1].named_parameters() if "lora_" not in n)
    with pytest.raises(ConfigError, match="model.freeze.strategy: backbone would freeze the LoRA"):
        freeze_encoder(make_model(tiny_backbone), "backbone")


@pytest.mark.parametrize("lora_lr, expected", [(0.02, 0.02), (None, 2e-3)])
def test_lora_gets_its_own_rate(tiny_backbone: Path, tmp_path: Path, lora_lr, expected) -> None:
    tasks = write_tasks(tmp_path, ["sentiment"], n_train=8, n_dev=4)
    lora = {"kind": "per_task", "r": R, **({"lr": lora_lr} if lora_lr else {})}
    cfg = config_from_dict(tiny_config(tiny_backbone, tasks, tmp_path / "run", model={"lora": lora}), base_dir=tmp_path)
    info = TaskInfo("sentiment", "classification", ["negative", "positive"], "mean", "accuracy")
    model = build_model(load_backbone(str(tiny_backbone))[0], [info], 0.0, lora=cfg.model.lora)
    groups = build_optimizer(cfg, model).param_groups
    ids = {id(p) for p in lora_parameters(model)}
    assert ids and {g["lr"] for g in groups for p in g["params"] if id(p) in ids} == {expected}
    # Nothing of the frozen base is handed to the optimizer.
    assert sum(len(g["params"]) for g in groups) == len(ids) + len(list(model.heads.parameters()))


# --- config errors ---------------------------------------------------------------------------------


def lora_cfg(tiny_backbone: Path, tmp_path: Path, lora: dict, **model):
    tasks = write_tasks(tmp_path, ["sentiment"], n_train=8, n_dev=4)
    return config_from_dict(tiny_config(tiny_backbone, tasks, tmp_path / "run", model={"lora": lora, **model}), base_dir=tmp_path)


@pytest.mark.parametrize(
    "lora, model, message",
    [
        ({"kind": "pertask"}, {}, r"model\.lora\.kind: Input should be 'none', 'shared' or 'per_task'"),
        ({"kind": "shared", "r": 0}, {}, r"model\.lora\.r: Input should be greater than or equal to 1"),
        ({"kind": "shared", "alpha": -1}, {}, r"model\.lora\.alpha: Input should be greater than 0"),
        ({"kind": "per_task", "dropout": 1.0}, {}, r"model\.lora\.dropout"),
        ({"kind": "per_task", "target_modules": []}, {}, r"model\.lora\.target_modules: give at least one"),
        ({"kind": "per_task", "rank": 4}, {}, r"model\.lora\.rank: unknown key"),
        ({"kind": "shared"}, {"freeze": {"strategy": "backbone"}}, r"model\.freeze\.strategy: backbone would freeze"),
    ],
)
def test_config_errors_name_the_key(tiny_backbone: Path, tmp_path: Path, lora, model, message) -> None:
    with pytest.raises(ConfigError, match=message):
        lora_cfg(tiny_backbone, tmp_path, lora, **model)


@pytest.mark.parametrize("kind", ["shared", "per_task"])
@pytest.mark.parametrize("target, what", [("querry", "matches no module"), ("LayerNorm", "which is not a Linear layer")])
def test_unknown_target_module_is_found_at_build_time(tiny_backbone: Path, tmp_path: Path, kind, target, what) -> None:
    cfg = lora_cfg(tiny_backbone, tmp_path, {"kind": kind, "target_modules": ["query", target]})  # loads fine
    with pytest.raises(ConfigError) as err:
        build_model(load_backbone(str(tiny_backbone))[0], TASKS, 0.0, lora=cfg.model.lora)
    text = str(err.value)
    assert text.startswith(f"model.lora.target_modules: {target!r}") and what in text
    assert "Linear layers are named dense, key, query, value" in text


def test_target_modules_match_like_peft(tiny_backbone: Path) -> None:
    model = make_model(tiny_backbone, target_modules=["attention.output.dense", "key"])
    names = [n for n, _ in lora_modules(model.encoder)]
    assert names == [f"encoder.layer.{i}.attention.{m}" for i in (0, 1) for m in ("self.key", "output.dense")]


# --- short training runs, bundles, Predictor, merged export ----------------------------------------


RUNS = {
    "shared": {"lora": {"kind": "shared", "r": R, "lr": 0.01}},
    "per_task": {"lora": {"kind": "per_task", "r": R, "lr": 0.01, "target_modules": ["query", "value", "intermediate.dense"]}},
    "per_task+shallow": {"lora": {"kind": "per_task", "r": R, "lr": 0.01}, "prompts": {"kind": "shallow", "length": 3, "lr": 0.05}},
}
PRECISION = {"per_task+shallow": "bf16"}  # LoRA + soft prompts under bf16 autocast


@pytest.fixture(scope="module", params=list(RUNS))
def run(request, tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory, single_thread) -> TrainedRun:  # noqa: F811
    name = request.param
    folder = tmp_path_factory.mktemp(f"lora-{name.replace('+', '-')}")
    tasks = write_tasks(folder, ["sentiment", "pair", "ner"], n_train=48, n_dev=12)
    cfg = config_from_dict(
        tiny_config(tiny_backbone, tasks, folder / "run", model=RUNS[name],
                    train={"max_steps": 12, "eval_every": 6, "log_every": 6, "precision": PRECISION.get(name, "fp32")}),
        base_dir=folder,
    )
    return TrainedRun.train(name, folder, cfg, kind=cfg.model.lora.kind)


def test_training_moves_only_lora_heads_and_prompts(run: TrainedRun) -> None:
    assert run.result.steps == 12
    state = run.result.model.state_dict()
    for k, v in state.items():
        changed = not torch.equal(v, run.initial[k])
        if ".lora_B." in k:
            assert changed, f"{k} did not train"
        elif k.startswith("encoder.") and ".lora_" not in k:
            assert not changed, f"base weight {k} changed"
    assert any(not torch.equal(state[k], run.initial[k]) for k in state if k.startswith("heads."))
    if run.result.model.prompt is not None:
        assert any(not torch.equal(state[k], run.initial[k]) for k in state if k.startswith("prompt."))
    losses = [json.loads(line) for line in (run.out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    train_losses = [v for e in losses if e["event"] == "train" for v in e["loss"].values()]
    assert train_losses and all(np.isfinite(train_losses))


def test_trainable_count_and_lora_share_are_printed(run: TrainedRun) -> None:
    model = run.result.model
    total = sum(p.numel() for p in model.parameters())
    n = sum(p.numel() for p in lora_parameters(model))
    m = re.search(rf"\| LoRA \({run.kind}\): ([\d,]+) \(([\d.]+)%\)", run.printed)
    assert m, run.printed
    assert int(m.group(1).replace(",", "")) == n and float(m.group(2)) == pytest.approx(100 * n / total, abs=0.001)
    trainable = re.search(r"trainable parameters: ([\d,]+) of", run.printed)
    assert int(trainable.group(1).replace(",", "")) == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_bundle_keeps_adapters_next_to_the_plain_model_file(run: TrainedRun, tiny_backbone: Path) -> None:
    bundle = run.out / "last"
    meta = json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))
    lora = dict(RUNS[run.name]["lora"])
    lora.pop("lr")
    assert meta["settings"]["lora"] == {"alpha": 16.0, "dropout": 0.0, "target_modules": ["query", "value"], **lora}
    saved = load_file(str(bundle / "model.safetensors"))
    assert not any("lora_" in k or "base_layer" in k for k in saved)
    # The base encoder is stored under its plain names, unchanged from the pretrained weights.
    pretrained = load_file(str(tiny_backbone / "model.safetensors"))
    for k, v in pretrained.items():
        assert torch.equal(saved[f"encoder.{k}"], v), k
    files = sorted(p.name for p in (bundle / "adapters").iterdir())
    expected = ["shared"] if run.kind == "shared" else ["ner", "pair", "sentiment"]
    assert files == [f"{n}.safetensors" for n in expected]
    # One small file per adapter: its A and B for every targeted layer, nothing else.
    per_adapter = sum(p.numel() for p in lora_parameters(run.result.model)) // len(expected)
    for name in expected:
        tensors = load_file(str(bundle / "adapters" / f"{name}.safetensors"))
        assert sum(t.numel() for t in tensors.values()) == per_adapter
        size = (bundle / "adapters" / f"{name}.safetensors").stat().st_size
        assert 4 * per_adapter < size < 4 * per_adapter + 16_000


def test_bundle_loads_back_with_identical_outputs(run: TrainedRun) -> None:
    predictor = Predictor.from_pretrained(run.out / "last", precision="fp32")
    loaded = predictor.model
    trained = run.result.model.eval()
    assert loaded.lora == trained.lora.model_copy(update={"lr": None})
    state = loaded.state_dict()
    assert state.keys() == trained.state_dict().keys()
    for k, v in trained.state_dict().items():
        assert torch.equal(state[k], v), k
    enc = {
        t.name: encode_examples(predictor.examples(t.name, run.dev_inputs(t.name)), predictor.tokenizer, t.type, 32, t.n_labels)
        for t in predictor.tasks.values()
    }
    parts = [(t, enc[t], np.arange(len(enc[t]))) for t in ("ner", "sentiment", "pair")]
    a, b = batch_logits(trained, parts), batch_logits(loaded, parts)
    for t in a:
        torch.testing.assert_close(a[t], b[t], atol=0, rtol=0)


def test_predictor_routes_mixed_task_items(run: TrainedRun) -> None:
    predictor = Predictor.from_pretrained(run.out / "last", precision="fp32")
    sentiment, pair = run.dev_inputs("sentiment")[:4], run.dev_inputs("pair")[:4]
    alone = predictor.predict("sentiment", sentiment) + predictor.predict("pair", pair)
    items = [("pair", predictor.example("pair", x)) for x in pair] + [("sentiment", predictor.example("sentiment", x)) for x in sentiment]
    mixed = predict_mixed(predictor, items)
    mixed = mixed[4:] + mixed[:4]
    for x, y in zip(alone, mixed):
        assert x["label"] == y["label"]
        for label, p in x["probabilities"].items():
            assert y["probabilities"][label] == pytest.approx(p, abs=1e-5)
    if run.kind == "per_task":  # zeroing one task's adapter changes that task's predictions only
        with torch.no_grad():
            for _, layer in lora_modules(predictor.model.encoder):
                layer.lora_B["pair"].zero_()
        again = predict_mixed(predictor, items)
        again = again[4:] + again[:4]
        for x, y in zip(mixed[:4], again[:4]):
            assert y["probabilities"] == pytest.approx(x["probabilities"], abs=1e-6)
        assert any(
            abs(y["probabilities"][k] - x["probabilities"][k]) > 1e-4
            for x, y in zip(mixed[4:], again[4:]) for k in x["probabilities"]
        )


def test_merged_export_predicts_like_the_lora_bundle(run: TrainedRun, tmp_path: Path) -> None:
    # per_task exports from the run folder (its best bundle), shared from its last bundle.
    source_path = run.out if run.kind == "per_task" else run.out / "last"
    source = Predictor.from_pretrained(source_path, precision="fp32")
    out = tmp_path / "merged"
    if run.kind == "shared":
        done = CliRunner().invoke(app, ["export", str(source_path), str(out), "--merge-lora"])
        assert done.exit_code == 0, done.output
        bundles = {None: out}
    else:
        written = export_merged(source_path, out)  # one merged bundle per task
        assert sorted(p.name for p in written) == ["ner", "pair", "sentiment"]
        bundles = {p.name: p for p in written}
    for task, folder in bundles.items():
        meta = json.loads((folder / "bundle.json").read_text(encoding="utf-8"))
        assert "lora" not in meta["settings"] and meta["settings"]["merged_lora"]["task"] == task
        assert not (folder / "adapters").exists()
        merged = Predictor.from_pretrained(folder, precision="fp32")
        assert merged.model.lora is None and not lora_modules(merged.model.encoder)
        assert list(merged.tasks) == ([task] if task else ["sentiment", "pair", "ner"])
        for name in merged.tasks:
            inputs = run.dev_inputs(name)
            want, got = source.predict(name, inputs), merged.predict(name, inputs)
            for x, y in zip(want, got):
                if name == "ner":
                    assert [t["tag"] for t in x["tokens"]] == [t["tag"] for t in y["tokens"]]
                    assert [t["score"] for t in y["tokens"]] == pytest.approx([t["score"] for t in x["tokens"]], abs=1e-4)
                else:
                    assert x["label"] == y["label"]
                    assert y["probabilities"] == pytest.approx(x["probabilities"], abs=1e-4)
        config = (folder / "config.yaml").read_text(encoding="utf-8")
        assert "kind: none" in config
    # `promptmux eval` scores a merged bundle as it scores the LoRA bundle (its config.yaml lists its tasks).
    task, folder = next(iter(bundles.items()))
    before = evaluate_bundle(source_path, "dev", report_dir=tmp_path / "before")["metrics"]
    after = evaluate_bundle(folder, "dev", report_dir=tmp_path / "after")["metrics"]
    assert set(after) == ({task} if task else set(before))
    if run.cfg.train.precision == "fp32":  # (bf16 rounding may flip a borderline row)
        for name, metrics in after.items():
            assert metrics == pytest.approx(before[name], abs=1e-6)


def test_export_errors(run: TrainedRun, tmp_path: Path) -> None:
    if run.kind == "per_task":
        with pytest.raises(BundleError, match=r"--task: .* has no task 'nope'; its tasks: sentiment, pair, ner"):
            export_merged(run.out, tmp_path / "x", task="nope")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(BundleError, match="already exists and is not empty"):
        export_merged(run.out, tmp_path / "full", task="sentiment")
    done = CliRunner().invoke(app, ["export", str(run.out), str(tmp_path / "y")])
    assert done.exit_code != 0 and "pass --merge-lora" in str(done.exception)


def test_export_of_a_bundle_without_lora_is_a_clear_error(tiny_backbone: Path, tmp_path: Path) -> None:
    from promptmux.serve.bundle import write_bundle

    model, tokenizer = make_model(tiny_backbone, "none"), load_backbone(str(tiny_backbone))[1]
    write_bundle(tmp_path / "plain", model, tokenizer, TASKS, {"max_length": 32})
    with pytest.raises(BundleError, match="has no LoRA to merge"):
        export_merged(tmp_path / "plain", tmp_path / "out")


def test_missing_adapter_file_is_a_clear_error(tiny_backbone: Path, tmp_path: Path) -> None:
    from promptmux.serve.bundle import write_bundle

    model, tokenizer = make_model(tiny_backbone), load_backbone(str(tiny_backbone))[1]
    write_bundle(tmp_path / "b", model, tokenizer, TASKS, {"max_length": 32})
    (tmp_path / "b" / "adapters" / "tok.safetensors").unlink()
    with pytest.raises(BundleError, match=r"records LoRA \(per_task\) but adapters/tok.safetensors is missing"):
        load_bundle(tmp_path / "b")


def test_resume_restores_adapters_exactly(tiny_backbone: Path, tmp_path: Path, monkeypatch) -> None:
    """A run stopped at step 4 and resumed ends where a straight 8-step run ends, adapters included."""
    from engine_support import (
        assert_same_tensors,
        load_tensors,
        sigterm_during_step,
        write_run_config,
    )

    from promptmux.config import load_config

    config = write_run_config(
        tmp_path, tiny_backbone, tasks={"sentiment": 24, "ner": 16},
        model={"lora": {"kind": "per_task", "r": R, "lr": 0.01, "dropout": 0.1}},
        sampling={"mixed": True}, train={"max_steps": 8, "eval_every": 8, "grad_accum": 1},
    )
    straight, legs = tmp_path / "straight", tmp_path / "legs"
    train(load_config(config, [f"output.dir={straight}"]))
    with monkeypatch.context() as m:
        sigterm_during_step(m, 4)
        first = train(load_config(config, [f"output.dir={legs}"]))
    assert (first.steps, first.stopped) == (4, "sigterm")
    done = train(load_config(config, [f"output.dir={legs}"]), resume=True)
    assert (done.steps, done.stopped) == (8, "completed")
    for name in ("model.safetensors", "adapters/sentiment.safetensors", "adapters/ner.safetensors"):
        assert_same_tensors(load_tensors(straight / "last" / name), load_tensors(legs / "last" / name))
