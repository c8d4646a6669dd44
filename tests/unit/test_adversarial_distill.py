"""Adversarial training (FGM, PGD) and knowledge distillation, on the tiny in-process model.

Adversarial: the perturbation has the defined shape (norm epsilon on the real tokens of the
perturbed rows, zero elsewhere), raises the loss, PGD stays in the epsilon-ball, the step's
gradient is that of clean + weight * adversarial loss, and short trainings (mixed batches, bf16,
grad accumulation, soft prompts, two DDP processes) run. Distillation: a student trained on a tiny
teacher's outputs only gets closer to it on held-out rows; a 1-layer student of the 2-layer
checkpoint trains, saves and reloads; bad teachers and configs fail naming the key.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from engine_support import assert_same_tensors, load_tensors, subprocess_env, write_run_config
from helpers import single_thread, tiny_config, write_tasks  # noqa: F401  (fixture)

from promptmux.config import config_from_dict
from promptmux.config.schema import AdversarialConfig, DistillConfig
from promptmux.data.collate import collate
from promptmux.errors import ConfigError
from promptmux.eval.evaluator import run_task
from promptmux.model import build_model, load_backbone
from promptmux.model.backbone import embeddings_module, encoder_layers
from promptmux.serve.bundle import load_bundle
from promptmux.serve.predictor import Predictor
from promptmux.train.adversarial import Adversary, project, real_token_mask, row_norms
from promptmux.train.distill import load_teachers
from promptmux.train.setup import prepare_data
from promptmux.train.trainer import train

pytestmark = pytest.mark.usefixtures("single_thread")


class OneProcess:
    """The two accelerator calls an `Adversary` makes, for a single process."""

    distributed_type = SimpleNamespace(name="NO")

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def no_sync(self, model):
        return nullcontext()


# ---------------------------------------------------------------- adversarial: the perturbation


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_backbone: Path):
    """Prepared data for a classification and a regression task, and a mixed batch of both."""
    folder = tmp_path_factory.mktemp("adv")
    tasks = write_tasks(folder, ["sentiment", "score"], n_train=40, n_dev=8)
    cfg = config_from_dict(tiny_config(tiny_backbone, tasks, folder / "run"), base_dir=folder)
    tokenizer = load_backbone(str(tiny_backbone))[1]
    data = prepare_data(cfg, tokenizer, cache=False)
    train_sets = data.encoded["train"]
    batch = collate(
        [
            ("sentiment", train_sets["sentiment"], np.arange(6)),
            ("score", train_sets["score"], np.arange(5)),
        ],
        0,
    )
    return SimpleNamespace(cfg=cfg, data=data, batch=batch)


def make_model(tiny_backbone: Path, data, prompts=None):
    torch.manual_seed(0)
    model = build_model(load_backbone(str(tiny_backbone))[0], data.tasks, 0.0, prompts)
    for info in data.tasks:
        if info.type == "regression":
            model.heads[info.name].set_target_stats(
                [ex.label for ex in data.raw[info.name].split("train")]
            )
    return model.eval()  # no dropout: the clean and adversarial passes are comparable


def clean_losses(model, batch, delta=None) -> dict[str, torch.Tensor]:
    """Task losses, with `delta` added to the embedding output when given (our own hook)."""
    hook = None
    if delta is not None:
        hook = embeddings_module(model.encoder).register_forward_hook(lambda m, a, out: out + delta)
    try:
        logits = model(**batch.model_inputs())
    finally:
        if hook is not None:
            hook.remove()
    return {t: model.heads[t].loss(logits[t], batch.labels[t]) for t in logits}


def adversarial_step(
    model, batch, **options
) -> tuple[Adversary, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One trainer micro-batch: watched clean pass + backward, then the adversary's step."""
    adversary = Adversary(AdversarialConfig(**options), model, list(batch.rows), OneProcess())
    model.zero_grad(set_to_none=True)
    with adversary.watch():
        losses = clean_losses(model, batch)
    sum(losses.values()).backward()
    adv = adversary.step(model, batch, dict.fromkeys(losses, 1.0), sync=True)
    return adversary, {t: v.detach() for t, v in losses.items()}, adv


@pytest.mark.parametrize(
    "prompts", [None, {"kind": "shallow", "length": 3}], ids=["plain", "soft-prompts"]
)
def test_fgm_perturbs_only_the_real_tokens_of_the_chosen_rows_with_norm_epsilon(
    tiny_backbone, setup, prompts
):
    model = make_model(tiny_backbone, setup.data, prompts)
    batch, eps = setup.batch, 0.7
    adversary, clean, adv = adversarial_step(
        model, batch, method="fgm", epsilon=eps, tasks=["sentiment"]
    )
    delta = adversary.last_delta
    prompt = 3 if prompts else 0
    assert delta.shape == (len(batch), prompt + batch.input_ids.size(1), 32)
    norms = row_norms(delta)
    rows = batch.rows["sentiment"]
    assert torch.allclose(norms[rows], torch.full_like(norms[rows], eps), rtol=1e-5)
    assert torch.count_nonzero(delta[batch.rows["score"]]) == 0
    mask = real_token_mask(batch.attention_mask, prompt)
    assert (
        torch.count_nonzero(delta * (1 - mask).unsqueeze(-1)) == 0
    )  # padding and prompt positions
    assert torch.count_nonzero(delta[rows, prompt]) > 0  # the real tokens are perturbed
    assert set(adv) == {"sentiment"}


def test_fgm_raises_the_loss_and_the_step_gradient_is_clean_plus_weighted_adversarial(
    tiny_backbone, setup
):
    model = make_model(tiny_backbone, setup.data)
    batch, weight = setup.batch, 0.5
    adversary, clean, adv = adversarial_step(
        model, batch, method="fgm", epsilon=0.05, weight=weight
    )
    # To first order the loss grows by epsilon * ||g|| along g / ||g||, for each perturbed task.
    for t in clean:
        assert adv[t] > clean[t], t
    got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    # The same gradient from scratch: clean loss + weight * loss at the recorded perturbation.
    model.zero_grad(set_to_none=True)
    delta = adversary.last_delta
    again = clean_losses(model, batch, delta)
    assert all(torch.allclose(again[t].detach(), adv[t], atol=1e-6) for t in adv)
    (sum(clean_losses(model, batch).values()) + weight * sum(again.values())).backward()
    want = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == want.keys()
    for n in want:
        assert torch.allclose(got[n], want[n], atol=1e-6, rtol=1e-4), n


def test_pgd_stays_in_the_ball_raises_the_loss_and_one_full_step_is_fgm(tiny_backbone, setup):
    model = make_model(tiny_backbone, setup.data)
    batch, eps = setup.batch, 0.5
    pgd, clean, adv = adversarial_step(model, batch, method="pgd", epsilon=eps, alpha=0.2, steps=6)
    norms = row_norms(pgd.last_delta)
    assert (norms <= eps * (1 + 1e-5)).all()
    assert torch.allclose(
        norms, torch.full_like(norms, eps), rtol=1e-4
    )  # 6 x 0.2 > 0.5: on the sphere
    for t in clean:
        assert adv[t] > clean[t], t
    # PGD with one step of size epsilon is FGM.
    one, _, _ = adversarial_step(model, batch, method="pgd", epsilon=eps, alpha=eps, steps=1)
    fgm, _, _ = adversarial_step(model, batch, method="fgm", epsilon=eps)
    assert torch.allclose(one.last_delta, fgm.last_delta, atol=1e-6)


def test_pgd_ascent_finds_a_worse_point_than_fgm_on_a_fixed_batch(tiny_backbone, setup):
    """With a radius where the loss is far from linear, several projected steps beat one."""
    model = make_model(tiny_backbone, setup.data)
    batch, eps = setup.batch, 8.0
    _, _, fgm = adversarial_step(model, batch, method="fgm", epsilon=eps)
    _, _, pgd = adversarial_step(model, batch, method="pgd", epsilon=eps, alpha=eps / 4, steps=12)
    for t in fgm:
        assert pgd[t] > fgm[t], t


def test_projection_scales_only_rows_outside_the_ball():
    delta = torch.zeros(3, 2, 2)
    delta[0, 0, 0] = 3.0  # outside: scaled back to 1
    delta[1, 1, 1] = 0.5  # inside: kept
    out = project(delta, 1.0)
    assert torch.allclose(row_norms(out), torch.tensor([1.0, 0.5, 0.0]))
    assert torch.equal(out[1], delta[1])


# ---------------------------------------------------------------- adversarial: training runs


def read_events(run: Path, kind: str) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


@pytest.mark.parametrize(
    "adversarial, sections",
    [
        ({"method": "fgm", "epsilon": 0.5}, {}),
        (
            {"method": "pgd", "epsilon": 0.5, "alpha": 0.2, "steps": 2, "tasks": ["sentiment"]},
            {
                "train": {"precision": "bf16", "grad_accum": 2},
                "sampling": {"mixed": False},
                "model": {"prompts": {"kind": "shallow", "length": 3}},
            },
        ),
    ],
    ids=["fgm-mixed-fp32", "pgd-single-task-bf16-accum-prompts"],
)
def test_training_with_adversarial_examples_runs(tmp_path, tiny_backbone, adversarial, sections):
    tasks = write_tasks(tmp_path, ["sentiment", "score"], n_train=48, n_dev=12)
    raw = tiny_config(tiny_backbone, tasks, tmp_path / "run")
    raw["train"].update(
        {
            "max_steps": 8,
            "eval_every": 8,
            "log_every": 4,
            "batch_size": 8,
            "adversarial": adversarial,
        }
    )
    for key, value in sections.items():
        raw[key] = {**raw[key], **value}
    result = train(config_from_dict(raw, base_dir=tmp_path))
    assert result.steps == 8
    logged = read_events(tmp_path / "run", "train")
    for event in logged:
        assert all(np.isfinite(v) for v in event["loss"].values())
    parts = [e["adversarial"] for e in logged]
    perturbed = {t for p in parts for t in p["loss"]}
    assert perturbed == set(adversarial.get("tasks") or ["sentiment", "score"])
    assert all(np.isfinite(v) for p in parts for v in p["loss"].values())
    ratios = [p["step_time_ratio"] for p in parts if "step_time_ratio" in p]
    assert ratios and all(r > 1.0 for r in ratios)


def test_two_processes_with_adversarial_training_end_with_the_same_model(tmp_path, tiny_backbone):
    """DDP: the clean backward never syncs by itself; steps without perturbed rows sync as usual."""
    config = write_run_config(
        tmp_path,
        tiny_backbone,
        sampling={"mixed": False},
        train={
            "batch_size": 4,
            "max_steps": 6,
            "eval_every": 6,
            "adversarial": {"method": "pgd", "steps": 2, "tasks": ["sentiment", "ner"]},
        },
    )
    dump = tmp_path / "dump"
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    worker = Path(__file__).with_name("ddp_worker.py")
    done = subprocess.run(
        [
            torchrun,
            "--nnodes",
            "1",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(port),
            str(worker),
            str(config),
            str(dump),
        ],
        env=subprocess_env(tmp_path / "cache"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    rank0, rank1 = (load_tensors(dump / f"rank{r}.safetensors") for r in (0, 1))
    assert_same_tensors(rank0, rank1)
    assert_same_tensors(rank0, load_tensors(tmp_path / "run" / "last" / "model.safetensors"))


# ---------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    "change, key",
    [
        (
            {"train": {"adversarial": {"method": "fgm", "tasks": ["nope"]}}},
            r"train\.adversarial\.tasks: unknown task",
        ),
        (
            {"train": {"adversarial": {"method": "pgd"}}, "weighting": {"strategy": "pcgrad"}},
            r"train\.adversarial\.method: pgd cannot be combined with weighting\.strategy: pcgrad",
        ),
        (
            {"train": {"adversarial": {"method": "fgm", "epsilon": 0}}},
            r"train\.adversarial\.epsilon",
        ),
        (
            {"distill": {"teacher": "a", "teachers": {"sentiment": "b"}}},
            r"distill: give distill\.teacher .* exactly one",
        ),
        ({"distill": {}}, r"distill: give distill\.teacher"),
        ({"distill": {"teachers": {"nope": "b"}}}, r"distill\.teachers: unknown task"),
        (
            {"distill": {"teachers": {"sentiment": "b"}, "tasks": ["score"]}},
            r"distill\.tasks: .*'score'.* no teacher",
        ),
        ({"distill": {"teacher": "a", "alpha": 1.5}}, r"distill\.alpha"),
        ({"model": {"num_layers": 0}}, r"model\.num_layers"),
    ],
)
def test_bad_settings_name_the_key(tmp_path, tiny_backbone, change, key):
    tasks = write_tasks(tmp_path, ["sentiment", "score"], n_train=8, n_dev=4)
    raw = tiny_config(tiny_backbone, tasks, tmp_path / "run")
    for section, value in change.items():
        if isinstance(raw.get(section), dict):
            merged = dict(raw[section])
            for k, v in value.items():
                merged[k] = {**merged[k], **v} if isinstance(merged.get(k), dict) else v
            raw[section] = merged
        else:
            raw[section] = value
    with pytest.raises(ConfigError, match=key):
        config_from_dict(raw, base_dir=tmp_path)


def test_more_layers_than_the_checkpoint_is_a_config_error(tiny_backbone):
    with pytest.raises(ConfigError, match=r"model\.num_layers: 3 exceeds the backbone's 2 layers"):
        load_backbone(str(tiny_backbone), 3)


# ---------------------------------------------------------------- distillation


def test_distillation_terms_are_as_defined():
    from promptmux.model.heads import HEADS
    from promptmux.train.distill import binary_kl, distill_loss, soft_kl

    torch.manual_seed(0)
    s, t, temp = torch.randn(5, 3), torch.randn(5, 3), 2.0
    p, q = (t / temp).softmax(-1), (s / temp).softmax(-1)
    want = (p * (p / q).log()).sum(-1).mean() * temp**2
    assert soft_kl(s, t, temp).item() == pytest.approx(want.item(), rel=1e-5)
    assert soft_kl(t, t, temp).item() == pytest.approx(0.0, abs=1e-6)
    p, q = torch.sigmoid(t / temp), torch.sigmoid(s / temp)
    want = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log()).mean() * temp**2
    assert binary_kl(s, t, temp).item() == pytest.approx(want.item(), rel=1e-5)
    assert binary_kl(t, t, temp).item() == pytest.approx(0.0, abs=1e-6)

    # Token tasks: padding words (word_starts -1) do not count.
    cls = HEADS.get("classification")(8, 3)
    extra = {"word_starts": torch.tensor([[1, 2, -1], [1, -1, -1]])}
    s, t = torch.randn(2, 3, 3), torch.randn(2, 3, 3)
    loss = distill_loss("token", s, t, 1.0, cls, cls, extra)
    t[0, 2], t[1, 1:] = 100.0, -100.0
    assert distill_loss("token", s, t, 1.0, cls, cls, extra).item() == pytest.approx(loss.item())

    # Regression: the teacher's value, on the data scale, standardized with the student's stats.
    student, teacher = HEADS.get("regression")(8), HEADS.get("regression")(8)
    student.set_target_stats([1.5, 2.5])  # mean 2, std 0.707
    teacher.set_target_stats([0.0, 2.0])  # mean 1, std 1.414: output 0.5 means 1 + 0.707 = 1.707
    target = (1 + 0.5 * 2**0.5 - 2) / 0.5**0.5
    out = torch.tensor([[target]])
    assert distill_loss(
        "regression", out, torch.tensor([[0.5]]), 2.0, student, teacher, {}
    ).item() == pytest.approx(0.0, abs=1e-10)
    assert distill_loss(
        "regression", out + 1, torch.tensor([[0.5]]), 2.0, student, teacher, {}
    ).item() == pytest.approx(1.0, rel=1e-5)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_backbone: Path):
    """A tiny multi-task teacher, trained once: one task of each type."""
    folder = tmp_path_factory.mktemp("teacher")
    tasks = write_tasks(folder, ["sentiment", "topics", "score", "ner"], n_train=120, n_dev=30)
    raw = tiny_config(tiny_backbone, tasks, folder / "run")
    raw["train"].update({"max_steps": 120, "eval_every": 120})
    train(config_from_dict(raw, base_dir=folder))
    return SimpleNamespace(folder=folder, tasks=tasks, run=folder / "run")


def distance_to_teacher(model, teacher_model, data) -> dict[str, float]:
    """On dev rows: KL (classification, per word for token tasks), binary KL, MSE of values."""
    out = {}
    for info in data.tasks:
        enc = data.encoded["dev"][info.name]
        _, s = run_task(model, info.name, enc, 0, 64, with_scores=True)
        _, t = run_task(teacher_model, info.name, enc, 0, 64, with_scores=True)
        if info.type == "regression":
            out[info.name] = float(np.mean((np.array(s) - np.array(t)) ** 2))
            continue
        if info.type == "token":
            s, t = [w for row in s for w in row], [w for row in t for w in row]
        p, q = np.clip(np.array(t), 1e-7, 1 - 1e-7), np.clip(np.array(s), 1e-7, 1 - 1e-7)
        if info.type == "multilabel":
            kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
        else:
            kl = p * np.log(p / q)
        out[info.name] = float(kl.sum(-1).mean()) if info.type != "multilabel" else float(kl.mean())
    return out


def test_distilled_one_layer_student_gets_closer_to_the_teacher_and_reloads(
    tmp_path, tiny_backbone, teacher
):
    # The student sees the same tasks but learns from the teacher only (alpha 1: no labels), and
    # keeps one of the checkpoint's two layers.
    raw = tiny_config(tiny_backbone, teacher.tasks, tmp_path / "student", model={"num_layers": 1})
    raw["train"].update({"max_steps": 100, "eval_every": 100, "log_every": 20})
    raw["distill"] = {"teacher": str(teacher.run), "temperature": 2.0, "alpha": 1.0}
    cfg = config_from_dict(raw, base_dir=teacher.folder)
    result = train(cfg)

    teacher_model = load_bundle(teacher.run)[0]
    tokenizer = load_backbone(str(tiny_backbone))[1]
    data = prepare_data(cfg, tokenizer, cache=False)
    torch.manual_seed(cfg.seed)
    untrained = build_model(load_backbone(str(tiny_backbone), 1)[0], data.tasks, 0.0)
    for info in data.tasks:
        if info.type == "regression":
            untrained.heads[info.name].set_target_stats(
                [ex.label for ex in data.raw[info.name].split("train")]
            )
    before = distance_to_teacher(untrained, teacher_model, data)
    after = distance_to_teacher(result.model, teacher_model, data)
    for t in before:
        assert after[t] < 0.5 * before[t], (t, before[t], after[t])
    # Without labels the student still learned the task, through the teacher.
    assert result.last_metrics["sentiment"]["accuracy"] > 0.8

    logged = read_events(tmp_path / "student", "train")
    assert set(logged[-1]["distill"]["loss"]) == {"sentiment", "topics", "score", "ner"}
    first, last = logged[0]["distill"]["loss"], logged[-1]["distill"]["loss"]
    assert sum(last.values()) < sum(first.values())

    # The 1-layer student saves and reloads at its own depth, predicting the same.
    predictor = Predictor.from_pretrained(tmp_path / "student" / "last")
    assert predictor.model.encoder.config.num_hidden_layers == 1
    assert len(encoder_layers(predictor.model.encoder)) == 1
    enc = data.encoded["dev"]["sentiment"]
    _, reloaded = run_task(predictor.model, "sentiment", enc, 0, 64, with_scores=True)
    _, trained = run_task(result.model, "sentiment", enc, 0, 64, with_scores=True)
    assert np.allclose(reloaded, trained, atol=1e-5)


def test_per_task_teachers_run_only_on_their_task_rows(tmp_path, tiny_backbone, teacher):
    # Two task -> bundle entries (the same bundle, named two ways), mixed batches, some steps.
    raw = tiny_config(
        tiny_backbone, {t: teacher.tasks[t] for t in ("sentiment", "score")}, tmp_path / "run"
    )
    raw["train"].update({"max_steps": 6, "eval_every": 6, "log_every": 3})
    raw["distill"] = {
        "teachers": {"sentiment": str(teacher.run), "score": str(teacher.run / "best")},
        "alpha": 0.3,
    }
    cfg = config_from_dict(raw, base_dir=teacher.folder)
    tokenizer = load_backbone(str(tiny_backbone))[1]
    data = prepare_data(cfg, tokenizer, cache=False)
    teachers = load_teachers(cfg.distill, data.tasks, tokenizer, cfg.model.max_length)
    assert [(t.key, t.tasks) for t in teachers] == [
        ("distill.teachers.sentiment", ["sentiment"]),
        ("distill.teachers.score", ["score"]),
    ]

    assert teachers[0].model is teachers[1].model  # one bundle, loaded once
    seen: list[dict[str, slice]] = []
    for t in teachers[:1]:
        t.model.register_forward_pre_hook(
            lambda m, args, kwargs: seen.append(dict(kwargs["rows"])), with_kwargs=True
        )
    from promptmux.train.distill import Distiller

    student = make_model(tiny_backbone, data)
    distiller = Distiller(
        cfg.distill, student, teachers, {t.name: t.type for t in data.tasks}, "fp32"
    )
    train_sets = data.encoded["train"]
    batch = collate(
        [
            ("sentiment", train_sets["sentiment"], np.arange(3)),
            ("score", train_sets["score"], np.arange(4)),
        ],
        0,
    )
    logits = student(**batch.model_inputs())
    losses = {t: student.heads[t].loss(logits[t], batch.labels[t]) for t in logits}
    mixed = distiller.mix(losses, batch, logits)
    assert seen == [{"sentiment": slice(0, 3)}, {"score": slice(0, 4)}]
    parts = distiller.report()
    for t in ("sentiment", "score"):
        want = 0.7 * parts["task_loss"][t] + 0.3 * parts["loss"][t]
        assert mixed[t].item() == pytest.approx(want, rel=1e-5)

    result = train(cfg)
    assert result.steps == 6
    assert set(read_events(tmp_path / "run", "train")[-1]["distill"]["loss"]) == {
        "sentiment",
        "score",
    }


def test_bad_teachers_fail_naming_the_key_bundle_and_mismatch(tmp_path, tiny_backbone, teacher):
    tokenizer = load_backbone(str(tiny_backbone))[1]

    def student_tasks(names: list[str], **task_changes):
        tasks = write_tasks(tmp_path / "data", names, n_train=20, n_dev=4)
        for name, change in task_changes.items():
            tasks[name] = {**tasks[name], **change}
        raw = tiny_config(tiny_backbone, tasks, tmp_path / "run")
        cfg = config_from_dict(raw, base_dir=tmp_path / "data")
        return prepare_data(cfg, tokenizer, cache=False).tasks

    one = DistillConfig(teacher=str(teacher.run))
    with pytest.raises(
        ConfigError, match=r"distill\.teacher: teacher bundle .*run/best has no task 'pair'"
    ):
        load_teachers(one, student_tasks(["sentiment", "pair"]), tokenizer, 32)
    with pytest.raises(
        ConfigError,
        match=r"task 'sentiment' has labels \['negative', 'positive'\] there "
        r"but \['positive', 'negative'\] here",
    ):
        load_teachers(
            one,
            student_tasks(["sentiment"], sentiment={"labels": ["positive", "negative"]}),
            tokenizer,
            32,
        )
    # A classification task called `score` (the sentiment rows): the teacher's `score` regresses.
    tasks = {"score": student_tasks(["sentiment"])[0]}
    with pytest.raises(
        ConfigError,
        match=r"distill\.teachers\.score: .*task 'score' is regression there "
        r"but classification in this config",
    ):
        load_teachers(
            DistillConfig(teachers={"score": str(teacher.run)}),
            [replace(tasks["score"], name="score")],
            tokenizer,
            32,
        )
    with pytest.raises(ConfigError, match=r"distill\.teachers\.sentiment: .*no bundle found"):
        load_teachers(
            DistillConfig(teachers={"sentiment": str(tmp_path / "nothing")}),
            student_tasks(["sentiment"]),
            tokenizer,
            32,
        )
    with pytest.raises(
        ConfigError, match=r"reads at most 128 tokens, but model\.max_length is 256"
    ):
        load_teachers(one, student_tasks(["sentiment"]), tokenizer, 256)

    # Another vocabulary: the teacher would read the student's ids as other tokens.
    from transformers import BertTokenizerFast

    vocab = tmp_path / "vocab.txt"
    vocab.write_text(
        "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie"]) + "\n",
        encoding="utf-8",
    )
    other = BertTokenizerFast(str(vocab))
    with pytest.raises(
        ConfigError, match=r"distill\.teacher: teacher bundle .* another tokenizer vocabulary"
    ):
        load_teachers(one, student_tasks(["sentiment"]), other, 32)

    # Through the trainer too, before any step: a student task the teacher lacks.
    tasks = write_tasks(tmp_path / "data", ["sentiment", "pair"], n_train=20, n_dev=4)
    raw = tiny_config(tiny_backbone, tasks, tmp_path / "run2")
    raw["distill"] = {"teacher": str(teacher.run)}
    with pytest.raises(ConfigError, match=r"no task 'pair'"):
        train(config_from_dict(raw, base_dir=tmp_path / "data"))
    assert not (tmp_path / "run2" / "last").exists()
    # Naming the distilled tasks leaves the others to their labels.
    raw["distill"] = {"teacher": str(teacher.run), "tasks": ["sentiment"]}
    raw["train"].update({"max_steps": 2, "eval_every": 2})
    raw["output"]["overwrite"] = True
    assert train(config_from_dict(raw, base_dir=tmp_path / "data")).steps == 2
    assert yaml.safe_load((tmp_path / "run2" / "last" / "config.yaml").read_text())["distill"][
        "tasks"
    ] == ["sentiment"]
