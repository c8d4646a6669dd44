"""Every shipped config loads and validates; where its data is present, every referenced file exists.

The configs are globbed, so a new file under `configs/` or `src/promptmux/resources/` is covered
without touching this test.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA
from promptmux.config import load_config
from promptmux.config.schema import Config
from promptmux.model.backbone import PACKAGED_MODELS, resolve_backbone

CONFIG_DIRS = [REPO / "configs", REPO / "src" / "promptmux" / "resources"]
CONFIGS = sorted(p for d in CONFIG_DIRS for ext in ("*.yaml", "*.yml") for p in d.rglob(ext))


def _id(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_configs_are_found() -> None:
    names = {p.name for p in CONFIGS}
    assert {"demo.yaml", "glue5.yaml", "conll.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=_id)
def test_config_loads_and_validates(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.tasks
    for name, task in cfg.tasks.items():
        assert task.data.format is not None, f"tasks.{name}.data.format was not inferred"
        # Every task reports its main metric (check_config already knows the metric is valid).
        assert cfg.main_metric(name)


@pytest.mark.parametrize("path", CONFIGS, ids=_id)
def test_config_backbone_resolves(path: Path) -> None:
    backbone = load_config(path).model.backbone
    if backbone in PACKAGED_MODELS and importlib.util.find_spec(PACKAGED_MODELS[backbone][0]) is None:
        pytest.skip(f"{backbone} ships in the package {PACKAGED_MODELS[backbone][2]}, not installed here")
    assert (resolve_backbone(backbone) / "config.json").is_file()


def _under(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("path", CONFIGS, ids=_id)
def test_config_data_is_present(path: Path) -> None:
    """Files under the shared benchmark data need it (skipped when absent); any other file must exist."""
    cfg = load_config(path)
    checked = 0
    for name, task in cfg.tasks.items():
        d = task.data
        for field in ("train", "dev", "test", "path"):
            value = getattr(d, field)
            if value is None:
                continue
            file = Path(value)
            if _under(file, SHARED_DATA) and not SHARED_DATA.is_dir():
                pytest.skip(f"benchmark data not found at {SHARED_DATA} (set PROMPTMUX_DATA)")
            assert file.exists(), f"{path.name}: tasks.{name}.data.{field} points at a missing file: {file}"
            checked += 1
        if d.callable is not None:
            module, _, func = d.callable.partition(":")
            assert callable(getattr(importlib.import_module(module), func, None)), (
                f"{path.name}: tasks.{name}.data.callable: {module} defines no function {func}"
            )
            checked += 1
    assert checked, f"{path.name}: no data source was checked"


@pytest.mark.data
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"benchmark data not found at {SHARED_DATA} (set PROMPTMUX_DATA)")
def test_benchmark_configs_point_at_the_shared_data() -> None:
    """The GLUE and CoNLL configs read ../shared/data by default; a moved data_root is honoured."""
    for name in ("glue5.yaml", "conll.yaml"):
        cfg = load_config(REPO / "configs" / name)
        for task_name, task in cfg.tasks.items():
            assert _under(Path(task.data.train), SHARED_DATA), f"{name}: tasks.{task_name}.data.train"
