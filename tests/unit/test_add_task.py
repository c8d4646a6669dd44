"""`promptmux add-task`: a new task on a frozen bundle, on the tiny in-process model.

Old tasks' outputs must be bit-identical between the input and the output bundle (with and without
soft prompts in the input, and with per-task LoRA); the new task must learn; the new bundle must
serve old and new tasks in one mixed batch; few-shot sampling must pick exactly k per label; the
Reptile update must move θ toward the task-adapted weights as defined; bad input must fail naming
what is wrong.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from helpers import single_thread, tiny_config, write_jsonl, write_tasks  # noqa: F401  (fixture)
from typer.testing import CliRunner

from promptmux.cli import app
from promptmux.config import config_from_dict
from promptmux.config.add_task import ReptileConfig
from promptmux.data.collate import collate
from promptmux.data.encode import encode_examples
from promptmux.data.few_shot import few_shot_sample
from promptmux.errors import ConfigError, DataError
from promptmux.model.added import ADDED_PROMPT_KINDS
from promptmux.serve.bundle import load_bundle
from promptmux.serve.mixed import PassStats, predict_mixed
from promptmux.serve.predictor import Predictor
from promptmux.tasks.spec import Example
from promptmux.train.add_task import add_task
from promptmux.train.reptile import Reptile, reptile_update
from promptmux.train.trainer import train

pytestmark = pytest.mark.usefixtures("single_thread")

OLD = ["sentiment", "ner", "score"]
NEW = "pair"
INPUTS = {
    "sentiment": [
        "the movie was good",
        "awful",
        "a really very boring film with an actor and a plot",
    ],
    "ner": ["john works in paris", "mary", "the city of london city"],
    "score": ["the plot was great", "worst"],
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("add-task-data")
    write_tasks(folder, OLD + [NEW], n_train=160, n_dev=40)
    return folder


def make_bundle(
    data_dir: Path, backbone: Path, out: Path, model: dict[str, Any] | None = None
) -> Path:
    """Train a short three-task run and return its best bundle (quality does not matter here)."""
    tasks = {name: spec for name, spec in write_tasks(data_dir, OLD, n_train=160, n_dev=40).items()}
    raw = tiny_config(backbone, tasks, out, train={"max_steps": 20, "eval_every": 20})
    if model:
        raw["model"] = {**raw["model"], **model}
    train(config_from_dict(raw, base_dir=data_dir))
    return out / "best"


@pytest.fixture(scope="module")
def bundles(
    data_dir: Path, tiny_backbone: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Input bundles: no soft prompts, and `shared` prompts (whose module is sized by task count)."""
    root = tmp_path_factory.mktemp("add-task-bundles")
    return {
        "none": make_bundle(data_dir, tiny_backbone, root / "none"),
        "shared": make_bundle(
            data_dir,
            tiny_backbone,
            root / "shared",
            {
                "prompts": {"kind": "shared", "length": 4, "rank": 2},
                "freeze": {"strategy": "backbone"},
            },
        ),
    }


def new_task_file(
    folder: Path, data_dir: Path, add: dict[str, Any] | None = None, **extra: Any
) -> Path:
    """A new-task YAML for the `pair` task, next to its data."""
    spec: dict[str, Any] = {
        "tasks": {
            NEW: {
                "type": "classification",
                "fields": {"text": "premise", "text_b": "hypothesis"},
                "data": {
                    "train": str(data_dir / NEW / "train.jsonl"),
                    "dev": str(data_dir / NEW / "dev.jsonl"),
                },
            }
        },
        "seed": 3,
        "train": {
            "max_steps": 60,
            "batch_size": 16,
            "lr": 1e-2,
            "eval_every": 30,
            "precision": "fp32",
            "warmup_ratio": 0.0,
            "log_every": 30,
        },
        "add_task": {"prompt": "shallow", "prompt_length": 4, **(add or {})},
        **extra,
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "new_task.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def added(
    bundles: dict[str, Path], data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The pair task added to each input bundle (plain init, all training rows)."""
    root = tmp_path_factory.mktemp("add-task-out")
    out = {}
    for kind, bundle in bundles.items():
        spec = new_task_file(root / kind, data_dir)
        out[kind] = add_task(bundle, spec, root / kind / "bundle")
    return out


def task_logits(model, tokenizer, task: str, texts: list[str], info) -> torch.Tensor:
    """Logits of one task's rows through `MultiTaskModel.forward` (what Predictor runs)."""
    examples = [Example(tuple(t.split())) if info.type == "token" else Example(t) for t in texts]
    enc = encode_examples(examples, tokenizer, info.type, 32, info.n_labels)
    batch = collate([(task, enc, np.arange(len(enc)))], tokenizer.pad_token_id or 0)
    with torch.no_grad():
        return model(**batch.model_inputs())[task]


# --- old tasks do not move ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["none", "shared"])
def test_old_task_outputs_are_bit_identical(bundles, added, kind: str) -> None:
    before_model, tokenizer, infos, _, _ = load_bundle(bundles[kind])
    after_model, _, after_infos, settings, _ = load_bundle(added[kind].out_dir)
    assert [t.name for t in after_infos] == OLD + [NEW]
    assert settings["added_tasks"]["tasks"] == [NEW]
    for info in infos:
        a = task_logits(before_model, tokenizer, info.name, INPUTS[info.name], info)
        b = task_logits(after_model, tokenizer, info.name, INPUTS[info.name], info)
        assert torch.equal(a, b), info.name
    # Every old parameter is stored unchanged.
    old_state, new_state = before_model.state_dict(), after_model.state_dict()
    for key, value in old_state.items():
        assert torch.equal(value, new_state[key]), key
    # And through the public API.
    p_before, p_after = (
        Predictor.from_pretrained(bundles[kind]),
        Predictor.from_pretrained(added[kind].out_dir),
    )
    for task, texts in INPUTS.items():
        assert p_before.predict(task, texts) == p_after.predict(task, texts)
    # The command's own before/after scores agree too.
    result = added[kind]
    assert set(result.old_before) == set(OLD) and result.old_after == result.old_before


def test_input_bundle_is_not_modified(bundles, added) -> None:
    for bundle in bundles.values():
        meta = json.loads((bundle / "bundle.json").read_text())
        assert [t["name"] for t in meta["tasks"]] == OLD
        assert not (bundle / "add_task.json").exists()


@pytest.mark.parametrize("kind", ["none", "shared"])
def test_new_task_learns_above_chance(added, kind: str) -> None:
    result = added[kind]
    assert result.new_dev["accuracy"] > 70.0  # chance is about 50
    assert result.trainable == result.trainable_parts["head"] + result.trainable_parts["prompt"]
    assert result.trainable_parts["prompt"] == 4 * 32  # L x hidden
    saved = json.loads((Path(result.out_dir) / "add_task.json").read_text())
    assert saved["new_dev"] == result.new_dev and saved["task"] == NEW


def test_a_task_added_with_key_value_prefixes_leaves_old_tasks_and_learns(bundles, data_dir, tmp_path) -> None:
    """`prompt: prefix`: the new task's keys and values in every layer; old tasks compute as before."""
    spec = new_task_file(tmp_path, data_dir, {"prompt": "prefix"})
    result = add_task(bundles["none"], spec, tmp_path / "out")
    layers = 2  # the tiny model's
    assert result.trainable_parts["prompt"] == layers * 2 * 4 * 32  # N x (key, value) x L x hidden
    assert result.new_dev["accuracy"] > 70.0  # chance is about 50
    before_model, tokenizer, infos, _, _ = load_bundle(bundles["none"])
    after_model, _, _, settings, _ = load_bundle(result.out_dir)
    assert settings["added_tasks"]["prompt"]["kind"] == "prefix"
    for info in infos:
        a = task_logits(before_model, tokenizer, info.name, INPUTS[info.name], info)
        b = task_logits(after_model, tokenizer, info.name, INPUTS[info.name], info)
        assert torch.equal(a, b), info.name
    # A mixed batch of old and new rows predicts what each task's rows predict alone.
    p = Predictor.from_pretrained(result.out_dir)
    pairs = [("the film was", "it was great"), ("the film", "it was awful really")]
    items = [(NEW, p.example(NEW, pair)) for pair in pairs] + [("sentiment", p.example("sentiment", t)) for t in INPUTS["sentiment"]]
    mixed = predict_mixed(p, items, PassStats(), overhead=10**6)
    alone = p.predict(NEW, pairs) + p.predict("sentiment", INPUTS["sentiment"])
    for m, a in zip(mixed, alone, strict=True):
        assert m["label"] == a["label"]
        for label, prob in a["probabilities"].items():
            assert m["probabilities"][label] == pytest.approx(prob, abs=1e-5)


def test_the_new_bundle_adds_only_the_new_head_and_prompt(bundles, data_dir, tmp_path) -> None:
    """The new bundle holds the old tensors (checked above) plus exactly the new head and prompt."""
    result = add_task(
        bundles["none"], new_task_file(tmp_path, data_dir), tmp_path / "out", ["train.max_steps=5"]
    )
    model = load_bundle(result.out_dir)[0]
    new_keys = {k for k in model.state_dict() if k.startswith((f"heads.{NEW}.", "added."))}
    assert new_keys == {
        f"heads.{NEW}.out.weight",
        f"heads.{NEW}.out.bias",
        f"added.prompt.prompts.{NEW}",
    }


def test_mixed_batch_serves_old_and_new_tasks(added) -> None:
    p = Predictor.from_pretrained(added["shared"].out_dir)
    pairs = [("the film was", "it was great"), ("the film", "it was awful really")]
    items = [("sentiment", p.example("sentiment", t)) for t in INPUTS["sentiment"]]
    items += [(NEW, p.example(NEW, pair)) for pair in pairs]
    items += [("ner", p.example("ner", t)) for t in INPUTS["ner"]]
    stats = PassStats()
    mixed = predict_mixed(p, items, stats, overhead=10**6)  # one pass for everything
    assert stats.passes == 1
    alone = (
        p.predict("sentiment", INPUTS["sentiment"])
        + p.predict(NEW, pairs)
        + p.predict("ner", INPUTS["ner"])
    )
    assert [m.get("label") for m in mixed] == [a.get("label") for a in alone]
    for m, a in zip(mixed, alone):
        if "probabilities" in m:
            for label, prob in a["probabilities"].items():
                assert m["probabilities"][label] == pytest.approx(prob, abs=1e-5)
        else:
            assert [t["tag"] for t in m["tokens"]] == [t["tag"] for t in a["tokens"]]


def test_an_added_pair_task_pools_its_two_texts_in_mixed_batches(bundles, data_dir, tmp_path) -> None:
    spec = new_task_file(tmp_path, data_dir)
    result = add_task(bundles["none"], spec, tmp_path / "out", ["tasks.pair.pooling=pair"])
    model, _, infos, _, _ = load_bundle(result.out_dir)
    assert {t.name: t.pooling for t in infos}[NEW] == "pair"
    assert model.heads[NEW].out.in_features == 4 * 32  # [u, v, |u - v|, u * v]
    assert result.new_dev["accuracy"] > 70.0
    p = Predictor.from_pretrained(result.out_dir)
    pairs = [("the film was", "it was great"), ("the film", "it was awful really")]
    items = [("sentiment", p.example("sentiment", t)) for t in INPUTS["sentiment"]]
    items += [(NEW, p.example(NEW, pair)) for pair in pairs]
    mixed = predict_mixed(p, items, PassStats(), overhead=10**6)  # old and added rows in one batch
    alone = p.predict("sentiment", INPUTS["sentiment"]) + p.predict(NEW, pairs)
    for m, a in zip(mixed, alone):
        assert m["label"] == a["label"]
        for label, prob in a["probabilities"].items():
            assert m["probabilities"][label] == pytest.approx(prob, abs=1e-5)


def test_served_task_list_shows_each_tasks_own_soft_prompt(added) -> None:
    from promptmux.serve.tasks import describe_prompt

    _, _, infos, settings, _ = load_bundle(added["shared"].out_dir)
    by_name = {t.name: t for t in infos}
    assert describe_prompt(by_name[NEW], {}, settings) == {
        "soft": {"kind": "shallow", "length": 4, "init": "vocab"}
    }
    assert describe_prompt(by_name["sentiment"], {}, settings)["soft"]["kind"] == "shared"


def test_a_second_added_task_keeps_the_first(added, data_dir, tmp_path) -> None:
    """Adding to an add-task bundle keeps the first added task (and the old ones) bit-identical."""
    first = added["none"]
    spec = new_task_file(tmp_path, data_dir)
    text = spec.read_text().replace(f"\n  {NEW}:", "\n  pair2:")
    spec.write_text(text)
    second = add_task(first.out_dir, spec, tmp_path / "out", ["train.max_steps=3"])
    before, tokenizer, infos, _, _ = load_bundle(first.out_dir)
    after, _, _, settings, _ = load_bundle(second.out_dir)
    assert settings["added_tasks"] == {
        "tasks": [NEW, "pair2"],
        "prompt": {"kind": "shallow", "length": 4, "init": "vocab", "tasks": [NEW, "pair2"]},
    }
    info = {t.name: t for t in infos}
    pairs = ["the film was ok"]
    for task in (NEW, "sentiment"):
        assert torch.equal(
            task_logits(before, tokenizer, task, pairs, info[task]),
            task_logits(after, tokenizer, task, pairs, info[task]),
        )


# --- few-shot and Reptile -------------------------------------------------------------------------


def test_few_shot_sample_picks_exactly_k_per_label() -> None:
    examples = [Example(f"row {i}", label=i % 3) for i in range(60)] + [
        Example("extra", label=0)
    ] * 5
    labels = ["a", "b", "c"]
    picked = few_shot_sample(examples, labels, 4, seed=1)
    assert len(picked) == 12
    assert {lab: sum(ex.label == lab for ex in picked) for lab in range(3)} == {0: 4, 1: 4, 2: 4}
    assert picked == few_shot_sample(examples, labels, 4, seed=1)  # seeded
    assert picked != few_shot_sample(examples, labels, 4, seed=2)
    order = [examples.index(ex) for ex in picked if ex.text != "extra"]
    assert order == sorted(order)  # the data's own order is kept
    with pytest.raises(DataError, match="label 'b' has 20"):
        few_shot_sample(examples, labels, 21, seed=1, task="t")


def test_reptile_update_is_the_interpolation() -> None:
    theta = {"p": torch.tensor([0.0, 2.0, -1.0])}
    adapted = {"p": torch.tensor([1.0, 0.0, -1.0])}
    out = reptile_update(theta, adapted, 0.25)
    torch.testing.assert_close(out["p"], torch.tensor([0.25, 1.5, -1.0]))
    assert torch.equal(reptile_update(theta, adapted, 1.0)["p"], adapted["p"])


@pytest.mark.parametrize("kind", ADDED_PROMPT_KINDS)
def test_reptile_step_moves_theta_toward_the_task_adapted_weights(added, data_dir, kind: str) -> None:
    """One meta step: φ comes from inner steps on an old task; θ' = θ + ε(φ − θ), so θ' lies on
    the segment from θ to φ at distance (1 − ε)·|θ − φ| from φ. For every kind an added task may
    use (deep and prefix prompts reach the encoder through hooks, and the inner loop trains a copy)."""
    from promptmux.model.added import extend

    model, tokenizer, infos, _, _ = load_bundle(added["none"].out_dir)
    model.requires_grad_(False)
    # (a fresh module: the bundle's added task already uses shallow prompts, and kinds cannot mix)
    fresh = extend(None, "fresh", model.encoder, {"kind": kind, "length": 4}).prompt
    fresh.requires_grad_(False)
    fresh.prompts["fresh"].requires_grad_(True)
    sentiment = next(t for t in infos if t.name == "sentiment")
    rows = [
        json.loads(line)
        for line in (data_dir / "sentiment" / "train.jsonl").read_text().splitlines()
    ]
    examples = [Example(r["text"], label=sentiment.labels.index(r["label"])) for r in rows]
    enc = encode_examples(examples, tokenizer, "classification", 32, 2)
    eps = 0.3
    cfg = ReptileConfig(inner_steps=3, inner_lr=0.05, meta_steps=1, meta_lr=eps)
    head_before = {k: v.clone() for k, v in model.heads["sentiment"].state_dict().items()}
    step = Reptile(model, fresh, "fresh", {"sentiment": enc}, cfg, 16, 0, seed=0).step()
    key = "prompts.fresh"
    theta, phi, new = step.theta[key], step.adapted[key], step.updated[key]
    assert step.task == "sentiment" and len(step.losses) == 3
    assert (phi - theta).abs().max() > 1e-3  # the inner loop moved
    torch.testing.assert_close(new, theta + eps * (phi - theta), atol=1e-6, rtol=0)
    assert math.isclose(
        float((new - phi).norm()), (1 - eps) * float((theta - phi).norm()), rel_tol=1e-4
    )
    assert float((new - phi).norm()) < float((theta - phi).norm())
    # The prompt now holds θ'; the old task's head is untouched (the inner loop trains a copy).
    assert torch.equal(fresh.prompts["fresh"].detach(), new)
    for k, v in model.heads["sentiment"].state_dict().items():
        assert torch.equal(v, head_before[k])


def test_few_shot_plain_vs_reptile_init(bundles, data_dir, tmp_path) -> None:
    """Both inits run and score; they start the same new prompt from different points."""
    results = {}
    for init in ("plain", "reptile"):
        add = {
            "few_shot": 8,
            "init": init,
            "reptile": {"meta_steps": 4, "inner_steps": 2, "inner_lr": 0.05},
        }
        spec = new_task_file(tmp_path / init, data_dir, add)
        results[init] = add_task(
            bundles["none"], spec, tmp_path / init / "out", ["train.max_steps=20"]
        )
    for init, r in results.items():
        assert r.train_rows == 16 and r.few_shot == 8  # 8 per label, 2 labels
        assert math.isfinite(r.new_dev["accuracy"]) and 0 <= r.new_dev["accuracy"] <= 100
        assert r.old_after == r.old_before
    assert results["plain"].reptile is None
    summary = results["reptile"].reptile
    assert summary["meta_steps"] == 4 and sum(summary["tasks"].values()) == 4
    assert set(summary["tasks"]) <= set(OLD) and summary["theta_moved"] > 0
    prompts = [
        load_bundle(r.out_dir)[0].added.prompt.prompts[NEW].detach() for r in results.values()
    ]
    assert not torch.equal(*prompts)


# --- LoRA -----------------------------------------------------------------------------------------


def test_lora_bundle_gets_a_new_adapter_and_old_outputs_stay(
    data_dir, tiny_backbone, tmp_path
) -> None:
    bundle = make_bundle(
        data_dir,
        tiny_backbone,
        tmp_path / "run",
        {"lora": {"kind": "per_task", "r": 2, "target_modules": ["query", "value"]}},
    )
    spec = new_task_file(tmp_path, data_dir)
    with pytest.raises(
        ConfigError, match="add_task.prompt: a task added with LoRA reads no soft prompt"
    ):
        add_task(bundle, spec, tmp_path / "out")
    result = add_task(bundle, spec, tmp_path / "out", ["add_task.prompt=none"])
    assert result.method == "lora" and result.prompt is None and "lora" in result.trainable_parts
    assert (Path(result.out_dir) / "adapters" / f"{NEW}.safetensors").is_file()
    before, tokenizer, infos, _, _ = load_bundle(bundle)
    after = load_bundle(result.out_dir)[0]
    for info in infos:
        a = task_logits(before, tokenizer, info.name, INPUTS[info.name], info)
        assert torch.equal(a, task_logits(after, tokenizer, info.name, INPUTS[info.name], info)), (
            info.name
        )
    assert result.old_after == result.old_before


# --- errors ---------------------------------------------------------------------------------------


def test_name_collision_names_both(bundles, data_dir, tmp_path) -> None:
    spec = new_task_file(tmp_path, data_dir)
    spec.write_text(spec.read_text().replace(f"\n  {NEW}:", "\n  sentiment:"))
    with pytest.raises(
        ConfigError, match=r"tasks\.sentiment: the bundle .* already has a task named 'sentiment'"
    ):
        add_task(bundles["none"], spec, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["add_task.fewshot=4"], r"add_task\.fewshot: unknown key"),
        (["add_task=shallow"], r"add_task: expected a mapping"),
        (
            ["add_task.reptile.meta_lr=2"],
            r"add_task\.reptile\.meta_lr: Input should be less than or equal to 1",
        ),
        (["add_task.init=meta"], r"add_task\.init: Input should be 'plain' or 'reptile'"),
        (["sampling.strategy=uniform"], r"sampling: not used by add-task"),
        (["tasks.pair.fields.txt=a"], r"tasks\.pair\.fields\.txt: unknown key"),
        (
            ["model.backbone=/elsewhere/model"],
            r"model\.backbone: the new task shares the bundle's encoder",
        ),
        (["model.max_length=64"], r"model\.max_length: the new task shares"),
        (
            ["add_task.few_shot=4", "tasks.pair.type=regression"],
            r"add_task\.few_shot: .* needs a classification task",
        ),
        (
            ["add_task.init=reptile", "add_task.prompt=none"],
            r"add_task\.init: reptile .* set add_task\.prompt",
        ),
        (["add_task.method=lora"], r"add_task\.method: lora .* LoRA kind 'none'"),
        (
            ["add_task.reptile.tasks=[nope]", "add_task.init=reptile"],
            r"add_task\.reptile\.tasks: nope not in the bundle",
        ),
    ],
)
def test_bad_new_task_files_name_the_key(bundles, data_dir, tmp_path, overrides, message) -> None:
    spec = new_task_file(tmp_path, data_dir)
    with pytest.raises(ConfigError, match=message):
        add_task(bundles["none"], spec, tmp_path / "out", overrides)


def test_missing_files_and_bad_out_folders(bundles, data_dir, tmp_path) -> None:
    with pytest.raises(ConfigError, match="new-task file not found: .*nope.yaml"):
        add_task(bundles["none"], tmp_path / "nope.yaml", tmp_path / "out")
    spec = new_task_file(tmp_path, data_dir)
    spec.write_text(spec.read_text().replace("pair/train.jsonl", "pair/missing.jsonl"))
    with pytest.raises(
        DataError, match=r"tasks\.pair\.data\.train: file not found: .*missing\.jsonl"
    ):
        add_task(bundles["none"], spec, tmp_path / "out")
    spec = new_task_file(tmp_path, data_dir)
    with pytest.raises(ConfigError, match="add-task never modifies its input"):
        add_task(bundles["none"], spec, bundles["none"].parent)  # the run folder holding the bundle
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(ConfigError, match="--out: .*taken already exists; .* --overwrite"):
        add_task(bundles["none"], spec, tmp_path / "taken")
    with pytest.raises(
        ConfigError, match="tasks: a new-task file holds exactly one new task; got pair, other"
    ):
        add_task(
            bundles["none"],
            spec,
            tmp_path / "out",
            ["tasks.other.type=classification", "tasks.other.data.train=x.jsonl"],
        )


def test_old_task_data_missing_is_skipped_for_scores_but_needed_by_reptile(
    data_dir, tiny_backbone, tmp_path
) -> None:
    moved = tmp_path / "data"
    shutil.copytree(data_dir, moved)
    bundle = make_bundle(moved, tiny_backbone, tmp_path / "run")
    (moved / "score" / "dev.jsonl").unlink()
    (moved / "score" / "train.jsonl").unlink()
    spec = new_task_file(tmp_path, data_dir)
    result = add_task(bundle, spec, tmp_path / "out", ["train.max_steps=2"])
    assert set(result.old_before) == {"sentiment", "ner"}
    assert "score" in result.old_skipped and "file not found" in result.old_skipped["score"]
    with pytest.raises(
        DataError, match="reptile needs old task score's training data.*--meta-config"
    ):
        add_task(bundle, spec, tmp_path / "out2", ["add_task.init=reptile"])
    # --meta-config points at the data elsewhere (and limits the tasks Reptile uses to those it names).
    meta = tmp_path / "meta.yaml"
    meta.write_text(
        yaml.safe_dump(
            {
                "tasks": {
                    "score": {
                        "type": "regression",
                        "data": {
                            "train": str(data_dir / "score" / "train.jsonl"),
                            "dev": str(data_dir / "score" / "dev.jsonl"),
                        },
                    }
                }
            }
        )
    )
    result = add_task(
        bundle,
        spec,
        tmp_path / "out3",
        [
            "add_task.init=reptile",
            "add_task.reptile.meta_steps=2",
            "add_task.reptile.inner_steps=1",
            "add_task.reptile.tasks=[score]",
            "train.max_steps=2",
        ],
        meta_config=meta,
    )
    assert result.reptile["tasks"] == {"score": 2} and set(result.old_before) == {"score"}
    bad = tmp_path / "bad_meta.yaml"
    bad.write_text(
        yaml.safe_dump(
            {"tasks": {"elsewhere": {"type": "regression", "data": {"train": "x.jsonl"}}}}
        )
    )
    with pytest.raises(
        ConfigError, match="--meta-config .*tasks.elsewhere is not a task of the bundle"
    ):
        add_task(bundle, spec, tmp_path / "out4", meta_config=bad)
    with pytest.raises(ConfigError, match="--meta-config file not found: .*absent.yaml"):
        add_task(bundle, spec, tmp_path / "out5", meta_config=tmp_path / "absent.yaml")
    bad.write_text("tasks: [")
    with pytest.raises(ConfigError, match="--meta-config .*bad_meta.yaml: not valid YAML"):
        add_task(bundle, spec, tmp_path / "out6", meta_config=bad)


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_add_task_prints_scores(bundles, data_dir, tmp_path) -> None:
    spec = new_task_file(tmp_path, data_dir)
    out = tmp_path / "cli-out"
    res = CliRunner().invoke(
        app, ["add-task", str(bundles["none"]), str(spec), "train.max_steps=4", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "old tasks (dev), before -> after:" in res.output
    assert res.output.count("unchanged") == 3 and "CHANGED" not in res.output
    assert (
        f"new task {NEW} (dev):" in res.output
        and "trainable: shallow prompt (L=4) + head" in res.output
    )
    assert Predictor.from_pretrained(out).predict(NEW, [("the film", "it was good")])[0][
        "label"
    ] in ("yes", "no")
    res = CliRunner().invoke(app, ["add-task", str(bundles["none"]), str(spec), "--out", str(out)])
    assert res.exit_code != 0 and "--overwrite" in str(res.exception)
    # The new bundle's config.yaml names every task's data, so `promptmux eval` scores them all.
    from promptmux.eval.report import evaluate_bundle

    assert set(evaluate_bundle(out, "dev")["metrics"]) == set(OLD) | {NEW}
