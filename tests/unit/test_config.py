"""Config loading: YAML, dotted overrides, validation errors naming the key, env, paths, formats."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from promptmux.config import apply_override, config_from_dict, config_to_dict, load_config
from promptmux.errors import ConfigError

BASE: dict[str, Any] = {
    "model": {"backbone": "/nonexistent/model"},
    "tasks": {
        "sst": {"type": "classification", "data": {"train": "sst/train.jsonl", "dev": "sst/dev.jsonl"}},
        "sts": {"type": "regression", "data": {"train": "sts/train.tsv"}, "fields": {"text_b": "b"}},
        "ner": {"type": "token", "data": {"train": "ner/train.conll"}, "fields": {"text": "tokens", "label": "ner"}},
    },
}


def build(overrides: list[str] = (), base_dir: Path | str = "/data", **changes: Any) -> Any:
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return config_from_dict(raw, overrides, base_dir=base_dir)


def write_yaml(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# --- loading --------------------------------------------------------------------------------------


def test_load_yaml_fills_defaults_and_resolves_paths(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "cfg" / "run.yaml", BASE)
    cfg = load_config(path)
    assert cfg.model.backbone == "/nonexistent/model"
    assert cfg.train.batch_size == 32 and cfg.sampling.strategy == "temperature"
    assert list(cfg.tasks) == ["sst", "sts", "ner"]
    assert cfg.tasks["sst"].data.train == str((tmp_path / "cfg" / "sst" / "train.jsonl").resolve())
    assert cfg.main_metric("sst") == "accuracy" and cfg.main_metric("sts") == "pearson"


def test_config_is_frozen() -> None:
    cfg = build()
    with pytest.raises(ValidationError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_config_to_dict_round_trips() -> None:
    cfg = build(["train.lr=1e-4", "tasks.sst.weight=3"])
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg


@pytest.mark.parametrize(
    "text, match",
    [
        ("tasks: [", "not valid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("", "top level must be a mapping"),
    ],
)
def test_unreadable_yaml(tmp_path: Path, text: str, match: str) -> None:
    path = write_yaml(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


# --- overrides ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, get, expected",
    [
        ("train.lr=3e-5", lambda c: c.train.lr, 3e-5),
        ("train.batch_size=8", lambda c: c.train.batch_size, 8),
        ("train.length_buckets=false", lambda c: c.train.length_buckets, False),
        ("train.max_steps=null", lambda c: c.train.max_steps, None),
        ("tasks.sst.weight=2", lambda c: c.tasks["sst"].weight, 2.0),
        ("tasks.sst.labels=[neg, pos]", lambda c: c.tasks["sst"].labels, ["neg", "pos"]),
        ("tasks.sst.labels=[0, 1]", lambda c: c.tasks["sst"].labels, ["0", "1"]),
        ("model.freeze.strategy=embeddings", lambda c: c.model.freeze.strategy, "embeddings"),
        ("tasks.sst.data.kwargs={a: 1, b: [x]}", lambda c: c.tasks["sst"].data.kwargs, {"a": 1, "b": ["x"]}),
        ("output.dir=runs/a=b", lambda c: c.output.dir, "runs/a=b"),
        ("tasks.sst.fields.text=sentence", lambda c: c.tasks["sst"].fields.text, "sentence"),
    ],
)
def test_dotted_override_values_are_yaml(override: str, get, expected: Any) -> None:
    assert get(build([override])) == expected


def test_override_creates_nested_sections_and_later_wins() -> None:
    cfg = build(["model.freeze.strategy=top_k", "model.freeze.k=1", "train.lr=1", "train.lr=2"])
    assert (cfg.model.freeze.strategy, cfg.model.freeze.k) == ("top_k", 1)
    assert cfg.train.lr == 2.0


def test_override_can_add_a_task(tmp_path: Path) -> None:
    cfg = build(["tasks.new.type=multilabel", "tasks.new.data.path=new.csv", "tasks.new.label_separator=|"])
    assert cfg.tasks["new"].type == "multilabel" and cfg.tasks["new"].data.format == "csv"


def test_override_does_not_mutate_input() -> None:
    raw = copy.deepcopy(BASE)
    config_from_dict(raw, ["tasks.sst.weight=5", "train.lr=1"])
    assert raw == BASE


@pytest.mark.parametrize(
    "override, match",
    [
        ("train.lr", "expected key=value"),
        ("=3", "expected key=value"),
        ("train.lr.x=1", r"train\.lr is not a section"),
    ],
)
def test_malformed_override(override: str, match: str) -> None:
    raw = copy.deepcopy(BASE)
    raw["train"] = {"lr": 1e-4}
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw, [override])


def test_apply_override_in_place() -> None:
    data: dict[str, Any] = {}
    apply_override(data, "a.b.c=[1, 2]")
    apply_override(data, "a.d=")
    assert data == {"a": {"b": {"c": [1, 2]}, "d": ""}}


# --- schema errors name the dotted key ------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        # unknown keys
        ("train.learning_rate=1e-4", "train.learning_rate: unknown key"),
        ("bogus=1", "bogus: unknown key"),
        ("tasks.sst.data.trian=x.csv", "tasks.sst.data.trian: unknown key"),
        ("model.freeze.depth=2", "model.freeze.depth: unknown key"),
        # wrong types
        ("train.batch_size=abc", "train.batch_size"),
        ("train.batch_size=3.5", "train.batch_size"),
        ("train.progress=maybe", "train.progress"),
        ("train=5", "train"),
        ("tasks.sst.labels=abc", "tasks.sst.labels"),
        ("tasks.sst.data.kwargs=[1]", "tasks.sst.data.kwargs"),
        ("tasks.sst.data.max_examples.validation=3", "tasks.sst.data.max_examples.validation"),
        # impossible values
        ("train.lr=0", "train.lr"),
        ("train.lr=-1e-5", "train.lr"),
        ("train.batch_size=0", "train.batch_size"),
        ("train.warmup_ratio=1", "train.warmup_ratio"),
        ("train.precision=fp16", "train.precision"),
        ("train.scheduler=step", "train.scheduler"),
        ("train.max_steps=0", "train.max_steps"),
        ("train.epochs=0", "train.epochs"),
        ("model.max_length=4", "model.max_length"),
        ("model.pooling=max", "model.pooling"),
        ("model.head_dropout=1", "model.head_dropout"),
        ("model.freeze.strategy=half", "model.freeze.strategy"),
        ("model.freeze.k=-1", "model.freeze.k"),
        ("sampling.temperature=0", "sampling.temperature"),
        ("tasks.sst.type=ranking", "tasks.sst.type"),
        ("tasks.sst.weight=-1", "tasks.sst.weight"),
        ("tasks.sst.data.format=xml", "tasks.sst.data.format"),
        ("tasks.sst.data.on_bad_row=ignore", "tasks.sst.data.on_bad_row"),
        ("tasks.sst.data.split.dev_fraction=1.5", "tasks.sst.data.split.dev_fraction"),
        ("tasks.sst.data.max_examples.train=-1", "tasks.sst.data.max_examples.train"),
        ("tasks.sst.type=null", "tasks.sst.type"),
        ("model.prompts.reparam=mlp", "model.prompts.reparam"),
        ("model.prompts.reparam_hidden=0", "model.prompts.reparam_hidden"),
        ("model.prompts.layer=-1", "model.prompts.layer"),
    ],
)
def test_schema_errors_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        build([override])
    assert key in str(info.value)


def test_missing_required_keys_are_named() -> None:
    with pytest.raises(ConfigError, match=r"tasks: required key is missing"):
        config_from_dict({"model": {"backbone": "x"}})
    with pytest.raises(ConfigError, match=r"tasks\.t\.type: required key is missing"):
        config_from_dict({"tasks": {"t": {"data": {"train": "a.csv"}}}})


def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        build(["train.lr=0", "train.bogus=1", "model.pooling=max"])
    for key in ("train.lr", "train.bogus", "model.pooling"):
        assert key in str(info.value)


# --- cross-field rules (check_config): one row per rule -------------------------------------------


@pytest.mark.parametrize(
    "override, key",
    [
        ("tasks={}", "tasks: at least one task"),
        ("tasks.2nd={type: classification, data: {train: a.csv}}", "tasks.2nd:"),
        ("tasks.a b={type: classification, data: {train: a.csv}}", "tasks.a b:"),
        ("tasks.sst.data.path=all.jsonl", "tasks.sst.data: give exactly one of"),
        ("tasks.sst.data={format: jsonl}", "tasks.sst.data: give exactly one of"),
        ("tasks.sst.data={dev: dev.jsonl}", "tasks.sst.data: give exactly one of"),
        ("tasks.sst.data={callable: 'm:f', path: a.csv}", "tasks.sst.data: give exactly one of"),
        ("tasks.sst.data={path: all.jsonl, dev: dev.jsonl}", "tasks.sst.data.dev:"),
        ("tasks.sst.data={callable: 'm:f', test: t.jsonl}", "tasks.sst.data.test:"),
        ("tasks.sst.data={callable: mymodule.loader}", "tasks.sst.data.callable:"),
        ("tasks.sst.data.split={dev_fraction: 0.6, test_fraction: 0.4}", "tasks.sst.data.split:"),
        ("tasks.ner.data.format=csv", "tasks.ner.data.format:"),
        ("tasks.ner.data.train=ner/train.tsv", "tasks.ner.data.format:"),
        ("tasks.sst.data.format=conll", "tasks.sst.data.format:"),
        ("tasks.sst.metric=pearson", "tasks.sst.metric:"),
        ("tasks.sts.metric=accuracy", "tasks.sts.metric:"),
        ("tasks.sts.labels=[a, b]", "tasks.sts.labels:"),
        ("tasks.sst.labels=[a, b, a]", "tasks.sst.labels:"),
        ("tasks.sst.labels=[a]", "tasks.sst.labels: a classification task needs at least 2 labels"),
        ("tasks.tags={type: multilabel, labels: [], data: {path: t.csv}}", "tasks.tags.labels: a multilabel task needs at least 1 label"),
        ("tasks.sst.label_separator=|", "tasks.sst.label_separator:"),
        ("tasks.ner.fields.text_b=other", "tasks.ner.fields.text_b:"),
        ("tasks.sst.pooling=pair", "tasks.sst.pooling: pair needs a text pair (set tasks.sst.fields.text_b)"),
        ("tasks.ner.pooling=pair", "tasks.ner.pooling: pair pools sequence-level text pairs"),
        ("tasks.sts={type: regression, data: {train: s.tsv}, fields: {text_b: b}, pooling: pair, prompt: {template: '{text} {text_b}'}}",
         "tasks.sts.pooling: pair reads the two texts as two segments, but the template '{text} {text_b}' joins them"),
        ("tasks.sts={type: regression, data: {train: s.tsv}, fields: {text_b: b}, pooling: pair, prompt: {pool: ['{text}{sep}{text_b}', 'A: {text} B: {text_b}']}}",
         "the template 'A: {text} B: {text_b}' joins them"),
        ("model.freeze.strategy=bottom_k", "model.freeze.k:"),
        ("model.freeze.strategy=top_k", "model.freeze.k:"),
        ("train.epochs=2", "train.max_steps"),
        ("sampling.strategy=annealed_typo", "sampling.strategy:"),
        ("weighting.strategy=gradnorm_typo", "weighting.strategy:"),
        ("weighting.options={alpha: 1}", "weighting.options:"),
        ("weighting={strategy: static, options: {weights: [1, 2]}}", "weighting.options:"),
        ("model.prompts={kind: generated, reparam: residual}", "model.prompts.reparam: residual reparameterizes per-task prompt vectors"),
        ("model.prompts={kind: none, reparam: residual}", "not kind none"),
        ("model.prompts={kind: deep, layer: 2}", "model.prompts.layer: only late prompts enter at a layer, not kind deep"),
        ("model.prompts={kind: shallow, network_lr: 0.001}", "model.prompts.network_lr: only the prompt's networks train at it"),
        ("model.prompts={kind: deep, instance_hidden: 8}", "model.prompts.instance_hidden: instance-aware prompts are made from the hidden states where the prompt acts (kinds late, prefix), not for kind deep"),
    ],
)
def test_cross_field_rules_name_the_key(override: str, key: str) -> None:
    overrides = [override]
    if override.startswith("train.epochs"):
        overrides.insert(0, "train.max_steps=10")
    with pytest.raises(ConfigError) as info:
        build(overrides)
    assert key in str(info.value)


def test_cross_field_rules_accept_valid_neighbours() -> None:
    cfg = build(
        [
            "tasks.tags={type: multilabel, labels: [only], label_separator: '|', data: {path: t.csv}}",
            "tasks.sst.metric=mcc",
            "model.freeze.strategy=top_k",
            "model.freeze.k=1",
            "train.epochs=2",
            "sampling.strategy=uniform",
            "weighting.strategy=static",
            "tasks.sts.pooling=pair",
            "tasks.sts.prompt.template='First: {text}{sep}Second: {text_b}'",
            "model.prompts={kind: prefix, reparam: residual, reparam_hidden: 4}",
        ]
    )
    assert cfg.tasks["tags"].labels == ["only"] and cfg.main_metric("sst") == "mcc"
    assert cfg.tasks["sts"].pooling == "pair"


def test_unknown_strategies_list_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="proportional.*temperature.*uniform"):
        build(["sampling.strategy=nope"])
    with pytest.raises(ConfigError, match="equal.*static"):
        build(["weighting.strategy=nope"])


# --- environment variables ------------------------------------------------------------------------


def test_env_interpolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_TEST_DATA", str(tmp_path / "envdata"))
    monkeypatch.setenv("PM_TEST_LR", "0.5")
    monkeypatch.delenv("PM_TEST_UNSET", raising=False)
    cfg = build(
        data_root="${PM_TEST_DATA}",
        train={"lr": "${PM_TEST_LR}"},
        output={"dir": "${PM_TEST_UNSET:-runs/default}/x-${PM_TEST_UNSET:-}"},
    )
    assert cfg.tasks["sst"].data.train == str(tmp_path / "envdata" / "sst" / "train.jsonl")
    assert cfg.train.lr == 0.5
    assert cfg.output.dir == "runs/default/x-"


def test_env_set_variable_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PM_TEST_DIR", "from-env")
    assert build(output={"dir": "${PM_TEST_DIR:-fallback}"}).output.dir == "from-env"


def test_env_missing_variable_names_variable_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PM_TEST_MISSING", raising=False)
    with pytest.raises(ConfigError) as info:
        build(output={"dir": "runs/${PM_TEST_MISSING}"})
    assert "PM_TEST_MISSING" in str(info.value)
    assert "output.dir" in str(info.value)


# --- paths ----------------------------------------------------------------------------------------


def test_data_root_is_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_yaml(tmp_path / "configs" / "c.yaml", {**BASE, "data_root": "../data"})
    monkeypatch.chdir(tmp_path / "configs")  # the current directory must not matter
    cfg = load_config(path)
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_config(path) == cfg
    assert cfg.tasks["sst"].data.train == str((tmp_path / "data" / "sst" / "train.jsonl").resolve())
    assert cfg.tasks["sst"].data.dev == str((tmp_path / "data" / "sst" / "dev.jsonl").resolve())


def test_default_data_root_is_the_config_folder_and_absolute_paths_stay(tmp_path: Path) -> None:
    raw = copy.deepcopy(BASE)
    raw["tasks"]["sst"]["data"]["dev"] = str(tmp_path / "abs" / "dev.jsonl")
    cfg = load_config(write_yaml(tmp_path / "cfg" / "c.yaml", raw))
    assert cfg.tasks["sst"].data.train == str((tmp_path / "cfg" / "sst" / "train.jsonl").resolve())
    assert cfg.tasks["sst"].data.dev == str(tmp_path / "abs" / "dev.jsonl")


def test_absolute_data_root(tmp_path: Path) -> None:
    cfg = load_config(write_yaml(tmp_path / "c.yaml", {**BASE, "data_root": str(tmp_path / "root")}))
    assert cfg.tasks["sts"].data.train == str(tmp_path / "root" / "sts" / "train.tsv")


def test_data_root_override(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "c.yaml", {**BASE, "data_root": "a"})
    cfg = load_config(path, [f"data_root={tmp_path / 'b'}"])
    assert cfg.tasks["sst"].data.train == str(tmp_path / "b" / "sst" / "train.jsonl")


def test_data_root_must_be_a_string() -> None:
    with pytest.raises(ConfigError, match="data_root"):
        build(data_root=5)


def test_relative_backbone_folder_resolves_against_the_config(tmp_path: Path) -> None:
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    raw = {**copy.deepcopy(BASE), "model": {"backbone": "models/tiny"}}
    cfg = load_config(write_yaml(tmp_path / "c.yaml", raw))
    assert Path(cfg.model.backbone) == tmp_path / "models" / "tiny"
    # An alias or a folder that is not there is left as written (resolve_backbone reports it).
    raw["model"]["backbone"] = "minilm"
    assert load_config(write_yaml(tmp_path / "c.yaml", raw)).model.backbone == "minilm"


# --- data format inference ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, fmt",
    [("a.csv", "csv"), ("a.TSV", "tsv"), ("a.jsonl", "jsonl"), ("a.json", "jsonl"), ("a.parquet", "parquet")],
)
def test_format_is_inferred_from_the_extension(name: str, fmt: str) -> None:
    assert build([f"tasks.sst.data.train={name}"]).tasks["sst"].data.format == fmt


def test_format_inference_for_conll_folders_and_callables(tmp_path: Path) -> None:
    (tmp_path / "saved").mkdir()
    cfg = build(
        [
            "tasks.ner.data.train=x.conll",
            "tasks.sst.data={path: saved}",
            "tasks.sts.data={callable: 'pkg.mod:rows'}",
        ],
        base_dir=tmp_path,
    )
    assert cfg.tasks["ner"].data.format == "conll"
    assert cfg.tasks["sst"].data.format == "datasets"
    assert cfg.tasks["sts"].data.format == "callable"


def test_explicit_format_wins() -> None:
    assert build(["tasks.ner.data.train=a.txt", "tasks.ner.data.format=conll"]).tasks["ner"].data.format == "conll"


def test_unknown_extension_asks_for_the_format() -> None:
    with pytest.raises(ConfigError) as info:
        build(["tasks.sst.data.train=train.txt"])
    assert "tasks.sst.data.format" in str(info.value) and "train.txt" in str(info.value)


# --- validation comes before any model loads ------------------------------------------------------


def test_bad_config_fails_on_its_key_before_the_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    import promptmux.model.backbone as backbone

    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded before the config was validated")

    monkeypatch.setattr(backbone, "load_backbone", boom)
    monkeypatch.setattr(backbone, "resolve_backbone", boom)
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", boom)
    path = write_yaml(tmp_path / "c.yaml", {**BASE, "model": {"backbone": "/no/such/model"}})
    with pytest.raises(ConfigError, match=r"train\.lr"):
        load_config(path, ["train.lr=-1"])
    # The CLI too: `train` stops at the config key, never reaching the backbone.
    from typer.testing import CliRunner

    import promptmux.train.trainer as trainer
    from promptmux.cli import app

    monkeypatch.setattr(trainer, "load_backbone", boom)
    result = CliRunner().invoke(app, ["train", str(path), "train.lr=-1"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError) and "train.lr" in str(result.exception)


def test_null_task_override_drops_the_task():
    raw = {"tasks": {
        "a": {"type": "classification", "data": {"train": "a.csv"}},
        "b": {"type": "regression", "data": {"train": "b.csv"}},
    }}
    cfg = config_from_dict(raw, ["tasks.b=null"])
    assert list(cfg.tasks) == ["a"]
    with pytest.raises(ConfigError, match="at least one task"):
        config_from_dict(raw, ["tasks.a=null", "tasks.b=null"])
