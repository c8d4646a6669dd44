"""precision auto/bf16/fp32: resolved from the hardware once per run, recorded in the bundle, and
a bf16 bundle predicts in fp32 where bf16 would be emulated. Hardware support is simulated by
patching the CPU probe, so both branches run on any machine."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

import promptmux.precision as precision_mod
from helpers import single_thread, tiny_config, write_tasks  # noqa: F401  (fixture)
from promptmux.config import config_from_dict
from promptmux.errors import ConfigError
from promptmux.precision import autocast, resolve_precision, serving_precision
from promptmux.serve.predictor import Predictor
from promptmux.train.trainer import train


@pytest.fixture(params=[True, False], ids=["native-bf16", "emulated-bf16"])
def native(request, monkeypatch) -> bool:
    monkeypatch.setattr(precision_mod, "_cpu_native_bf16", lambda: request.param)
    return request.param


def test_auto_is_bf16_only_where_native(native: bool) -> None:
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"


def test_explicit_bf16_is_honoured_and_warns_only_where_emulated(native: bool, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="promptmux.precision"):
        assert resolve_precision("bf16", "cpu") == "bf16"
    warned = [r.getMessage() for r in caplog.records]
    assert bool(warned) is (not native)
    if warned:
        assert "no native bf16" in warned[0] and "auto or fp32" in warned[0]


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision must be one of auto, bf16, fp32, got 'fp16'"):
        resolve_precision("fp16", "cpu")


@pytest.mark.parametrize("asked", ["auto", "bf16", "fp32"])
def test_autocast_follows_the_resolved_precision(native: bool, asked: str) -> None:
    with autocast("cpu", asked):
        on = torch.is_autocast_enabled("cpu")
    assert on is (asked == "bf16" or (asked == "auto" and native))


def test_serving_precision_keeps_fp32_and_drops_emulated_bf16(native: bool) -> None:
    assert serving_precision("fp32", "cpu") == "fp32"
    assert serving_precision("bf16", "cpu") == ("bf16" if native else "fp32")
    assert serving_precision("auto", "cpu") == ("bf16" if native else "fp32")


def test_the_cpu_probe_reads_torch_and_cpuinfo() -> None:
    flags = precision_mod._cpu_flags()
    expected = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported() or bool(
        flags & {"amx_bf16", "avx512_bf16", "bf16"}
    )
    assert precision_mod._cpu_native_bf16() is expected


def test_config_takes_auto_by_default_and_refuses_fp16(tiny_backbone: Path, tmp_path: Path) -> None:
    tasks = write_tasks(tmp_path, ["sentiment"], n_train=8, n_dev=4)
    raw = tiny_config(tiny_backbone, tasks, tmp_path / "run")
    del raw["train"]["precision"]
    assert config_from_dict(raw, base_dir=tmp_path).train.precision == "auto"
    raw["train"]["precision"] = "fp16"
    with pytest.raises(ConfigError, match="train.precision"):
        config_from_dict(raw, base_dir=tmp_path)


@pytest.mark.usefixtures("single_thread")
def test_a_run_records_and_logs_what_auto_resolved_to(native: bool, tiny_backbone: Path, tmp_path: Path, capsys) -> None:
    tasks = write_tasks(tmp_path, ["sentiment"], n_train=32, n_dev=8)
    raw = tiny_config(tiny_backbone, tasks, tmp_path / "run", train={"precision": "auto", "max_steps": 2, "eval_every": 2})
    result = train(config_from_dict(raw, base_dir=tmp_path))
    used = "bf16" if native else "fp32"
    bundle = json.loads((result.out_dir / "last" / "bundle.json").read_text())
    assert bundle["settings"]["precision"] == used
    assert f"precision: {used} |" in capsys.readouterr().out
    # The saved config keeps what was asked, so the same file resolves anew on other hardware.
    assert yaml.safe_load((result.out_dir / "last" / "config.yaml").read_text())["train"]["precision"] == "auto"


@pytest.mark.usefixtures("single_thread")
def test_a_bf16_bundle_predicts_in_fp32_where_bf16_is_emulated(tiny_backbone: Path, tmp_path: Path, monkeypatch) -> None:
    tasks = write_tasks(tmp_path, ["sentiment"], n_train=32, n_dev=8)
    raw = tiny_config(tiny_backbone, tasks, tmp_path / "run", train={"precision": "bf16", "max_steps": 2, "eval_every": 2})
    result = train(config_from_dict(raw, base_dir=tmp_path))
    monkeypatch.setattr(precision_mod, "_cpu_native_bf16", lambda: False)
    loaded = Predictor.from_pretrained(result.out_dir / "last")
    assert loaded.precision == "fp32"
    texts = ["the movie was good", "the movie was awful"]
    fp32 = Predictor.from_pretrained(result.out_dir / "last", precision="fp32")
    assert loaded.predict("sentiment", texts) == fp32.predict("sentiment", texts)
    assert Predictor.from_pretrained(result.out_dir / "last", precision="bf16").precision == "bf16"  # asked: honoured
    monkeypatch.setattr(precision_mod, "_cpu_native_bf16", lambda: True)
    assert Predictor.from_pretrained(result.out_dir / "last").precision == "bf16"
