"""Load a YAML config, apply dotted overrides, validate, and resolve data paths.

Relative data paths are resolved against `data_root` (itself relative to the config file's folder,
default: that folder), so a config works whatever the current directory. `output.dir` is relative to
the current directory, where users expect `runs/...` to appear. Strings may use `${VAR}` or
`${VAR:-default}` to read environment variables.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from copy import deepcopy
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from promptmux.config.schema import INSTANCE_KINDS, TASK_METRICS, VECTOR_KINDS, Config
from promptmux.errors import ConfigError

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TASK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]*$")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".conll": "conll",
}


def read_yaml(path: Path, what: str, where: str = "") -> Any:
    """The parsed YAML document at `path`.

    Raises:
        ConfigError: no such file, or not valid YAML; the message starts with `where` (a flag
            name, say) when given and names `what` the file is.
    """
    prefix = f"{where} " if where else ""
    if not path.is_file():
        raise ConfigError(f"{prefix}{what} not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{prefix}{path}: not valid YAML: {e}") from None


def load_config(path: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML file, apply `key=value` overrides and return a validated `Config`."""
    path = Path(path)
    raw = read_yaml(path, "config file")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (tasks, model, train, ...)")
    return config_from_dict(raw, overrides, base_dir=path.parent)


def config_from_dict(
    raw: Mapping[str, Any], overrides: Iterable[str] = (), base_dir: str | os.PathLike = "."
) -> Config:
    """Validate a plain dict (as read from YAML). Paths resolve against `base_dir`."""
    data = _expand_env(deepcopy(dict(raw)), "")
    for item in overrides:
        apply_override(data, item)
    if isinstance(data.get("tasks"), dict):
        # `tasks.cola=null` drops a task: handy to train a subset of a shipped config.
        data["tasks"] = {name: task for name, task in data["tasks"].items() if task is not None}
    data_root = data.pop("data_root", None)
    root = Path(base_dir)
    if data_root is not None:
        if not isinstance(data_root, str):
            raise ConfigError("data_root: expected a path string")
        root = root / data_root
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e)) from None
    cfg = _resolve_paths(cfg, root.resolve(), Path(base_dir).resolve())
    check_config(cfg)
    return cfg


def apply_override(data: dict, item: str) -> None:
    """Apply one `dotted.key=value` override in place; the value is parsed as YAML."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key=value, e.g. train.lr=3e-5")
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = nxt
    try:
        node[parts[-1]] = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        node[parts[-1]] = value


def check_config(cfg: Config) -> None:
    """Cross-field checks. Raises ConfigError naming the dotted key."""
    from promptmux.data.samplers import SAMPLERS, build_sampler
    from promptmux.weighting import WEIGHTINGS, build_weighting

    if not cfg.tasks:
        raise ConfigError("tasks: at least one task is required")
    from promptmux.t2t.checks import check_model_kind

    check_model_kind(cfg)  # what model.kind allows: verbalizers, generation tasks (promptmux.t2t)
    for name, task in cfg.tasks.items():
        key = f"tasks.{name}"
        if not _TASK_NAME.match(name):
            raise ConfigError(f"{key}: task names start with a letter and use letters, digits, _ or -")
        d = task.data
        sources = [s for s in ("train", "path", "callable") if getattr(d, s)]
        if len(sources) != 1:
            raise ConfigError(
                f"{key}.data: give exactly one of train (per-split files), path (one file to split) "
                f"or callable (module:function); got {sources or 'none'}"
            )
        if d.path or d.callable:
            for split in ("dev", "test"):
                if getattr(d, split):
                    raise ConfigError(f"{key}.data.{split}: per-split files go with data.train, not data.path/callable")
        if d.callable and ":" not in d.callable:
            raise ConfigError(f"{key}.data.callable: expected 'module:function', got {d.callable!r}")
        if d.split.dev_fraction + d.split.test_fraction >= 1.0:
            raise ConfigError(f"{key}.data.split: dev_fraction + test_fraction must be < 1")
        if task.type == "token" and d.format not in (None, "conll", "jsonl", "parquet", "datasets", "callable"):
            raise ConfigError(f"{key}.data.format: token tasks read conll, jsonl, parquet, datasets or callable data")
        if d.format == "conll" and task.type != "token":
            raise ConfigError(f"{key}.data.format: conll data holds token tags; use type: token")
        metric = task.metric
        if metric is not None and metric not in TASK_METRICS[task.type]:
            raise ConfigError(
                f"{key}.metric: {metric!r} is not a {task.type} metric; choose one of {', '.join(TASK_METRICS[task.type])}"
            )
        if task.type == "regression" and task.labels is not None:
            raise ConfigError(f"{key}.labels: regression tasks have no label set")
        if task.labels is not None and len(set(task.labels)) != len(task.labels):
            raise ConfigError(f"{key}.labels: labels must be unique")
        least = 1 if task.type == "multilabel" else 2
        if task.labels is not None and len(task.labels) < least:
            raise ConfigError(f"{key}.labels: a {task.type} task needs at least {least} label{'s' if least > 1 else ''}")
        if task.label_separator is not None and task.type != "multilabel":
            raise ConfigError(f"{key}.label_separator: only multilabel tasks split labels")
        if task.fields.text_b is not None and task.type == "token":
            raise ConfigError(f"{key}.fields.text_b: token tasks take one word sequence")
        if task.pooling == "pair":
            _check_pair_pooling(key, task)
        from promptmux.prompts.checks import check_prompt_config

        bad_prompt = check_prompt_config(task.prompt, task.type, task.fields.text_b is not None)
        if bad_prompt:  # template, rules, pool, ensemble, adaptive
            raise ConfigError(f"{key}.prompt.{bad_prompt[0]}: {bad_prompt[1]}")
    fr = cfg.model.freeze
    if fr.strategy in ("bottom_k", "top_k") and fr.k < 1:
        raise ConfigError(f"model.freeze.k: strategy {fr.strategy} needs k >= 1")
    _check_lora(cfg)
    prompts = cfg.model.prompts
    if prompts.reparam != "none" and prompts.kind not in VECTOR_KINDS:
        raise ConfigError(
            f"model.prompts.reparam: {prompts.reparam} reparameterizes per-task prompt vectors "
            f"(kinds {', '.join(VECTOR_KINDS)}), not kind {prompts.kind}"
        )
    if prompts.layer is not None and prompts.kind != "late":
        raise ConfigError(f"model.prompts.layer: only late prompts enter at a layer, not kind {prompts.kind}")
    if prompts.instance_hidden is not None and prompts.kind not in INSTANCE_KINDS:
        raise ConfigError(
            f"model.prompts.instance_hidden: instance-aware prompts are made from the hidden states where "
            f"the prompt acts (kinds {', '.join(INSTANCE_KINDS)}), not for kind {prompts.kind}"
        )
    if prompts.network_lr is not None and prompts.reparam == "none" and prompts.instance_hidden is None:
        raise ConfigError(
            "model.prompts.network_lr: only the prompt's networks train at it (reparam: residual, or "
            "instance_hidden), and this prompt has none"
        )
    if cfg.train.max_steps is not None and cfg.train.epochs is not None:
        raise ConfigError("train: give train.max_steps or train.epochs, not both (clear one with an override such as train.epochs=null)")
    if cfg.sampling.strategy not in SAMPLERS:
        raise ConfigError(
            f"sampling.strategy: unknown {cfg.sampling.strategy!r}; known: {', '.join(SAMPLERS.names())}"
        )
    if cfg.weighting.strategy not in WEIGHTINGS:
        raise ConfigError(
            f"weighting.strategy: unknown {cfg.weighting.strategy!r}; known: {', '.join(WEIGHTINGS.names())}"
        )
    # Build the weighting and the sampler once so that bad options fail here, before any model loads.
    weighting = build_weighting(cfg.weighting.strategy, list(cfg.tasks), {n: t.weight for n, t in cfg.tasks.items()}, cfg.weighting.options)
    build_sampler(cfg.sampling.strategy, dict.fromkeys(cfg.tasks, 1), cfg.seed, cfg.sampling.temperature, cfg.sampling.options)
    if weighting.needs_task_grads and not cfg.sampling.mixed and cfg.train.grad_accum < 2 and len(cfg.tasks) > 1:
        raise ConfigError(
            f"weighting.strategy: {cfg.weighting.strategy} combines the gradients of several tasks in a step; "
            f"set sampling.mixed=true (rows of several tasks in each batch), or train.grad_accum >= 2 "
            f"(each step sums several single-task batches)"
        )
    _check_adversarial(cfg, weighting.needs_task_grads)
    _check_distill(cfg)


def _unknown_tasks(cfg: Config, key: str, names: Iterable[str]) -> None:
    unknown = [n for n in names if n not in cfg.tasks]
    if unknown:
        raise ConfigError(f"{key}: unknown task(s) {unknown}; tasks are {list(cfg.tasks)}")


def _check_adversarial(cfg: Config, task_grads: bool) -> None:
    adv = cfg.train.adversarial
    if adv.method == "none":
        return
    if adv.tasks is not None:
        if not adv.tasks:
            raise ConfigError("train.adversarial.tasks: give at least one task, or null for all tasks")
        _unknown_tasks(cfg, "train.adversarial.tasks", adv.tasks)
    if task_grads:
        # Those strategies take per-task gradients with autograd.grad and no backward pass, so
        # there is no gradient at the embedding output to build the perturbation from.
        raise ConfigError(
            f"train.adversarial.method: {adv.method} cannot be combined with weighting.strategy: "
            f"{cfg.weighting.strategy}, which combines per-task gradients; use a loss-based weighting "
            f"or train.adversarial.method=none"
        )


def _check_distill(cfg: Config) -> None:
    d = cfg.distill
    if d is None:
        return
    if (d.teacher is None) == (d.teachers is None):
        raise ConfigError("distill: give distill.teacher (one multi-task bundle) or distill.teachers "
                          "(task -> bundle), exactly one of them")
    if d.teachers is not None:
        if not d.teachers:
            raise ConfigError("distill.teachers: give at least one task -> bundle entry")
        _unknown_tasks(cfg, "distill.teachers", d.teachers)
    if d.tasks is not None:
        if not d.tasks:
            raise ConfigError("distill.tasks: give at least one task, or null for every task with a teacher")
        _unknown_tasks(cfg, "distill.tasks", d.tasks)
        missing = [t for t in d.tasks if d.teachers is not None and t not in d.teachers]
        if missing:
            raise ConfigError(f"distill.tasks: task(s) {missing} have no teacher in distill.teachers")


def _check_pair_pooling(key: str, task) -> None:
    """`pooling: pair` compares the two texts of a pair: the task must have two, kept apart."""
    if task.type == "token":
        raise ConfigError(f"{key}.pooling: pair pools sequence-level text pairs; token tasks tag words")
    if task.fields.text_b is None:
        raise ConfigError(f"{key}.pooling: pair needs a text pair (set {key}.fields.text_b)")
    templates = [task.prompt.template, *(r.template for r in task.prompt.rules), *task.prompt.pool]
    joined = [t for t in templates if t is not None and "{sep}" not in t]
    if joined:
        raise ConfigError(
            f"{key}.pooling: pair reads the two texts as two segments, but the template {joined[0]!r} joins them "
            f"into one (split them with {{sep}}, e.g. \"{{text}}{{sep}}{{text_b}}\")"
        )


def _check_lora(cfg: Config) -> None:
    """`model.lora` checks that need no model; target names are matched when the encoder is built."""
    lora = cfg.model.lora
    if lora.kind == "none":
        return
    if not lora.target_modules or not all(isinstance(t, str) and t.strip() for t in lora.target_modules):
        raise ConfigError("model.lora.target_modules: give at least one Linear layer name, e.g. [query, value]")
    if cfg.model.freeze.strategy == "backbone":
        raise ConfigError(
            "model.freeze.strategy: backbone would freeze the LoRA matrices too; with model.lora the "
            "base encoder is frozen already, so use none (only LoRA trains in the encoder) or top_k"
        )


def _resolve_paths(cfg: Config, data_root: Path, config_dir: Path) -> Config:
    tasks = {}
    for name, task in cfg.tasks.items():
        d = task.data
        update: dict[str, Any] = {}
        for field in ("train", "dev", "test", "path"):
            value = getattr(d, field)
            if value is not None and not Path(value).expanduser().is_absolute():
                update[field] = str(data_root / value)
            elif value is not None:
                update[field] = str(Path(value).expanduser())
        fmt = d.format
        if fmt is None:
            fmt = _infer_format(f"tasks.{name}.data", update.get("train") or update.get("path"), d.callable)
        update["format"] = fmt
        tasks[name] = task.model_copy(update={"data": d.model_copy(update=update)})
    backbone = cfg.model.backbone
    if ("/" in backbone or backbone.startswith(".")) and not Path(backbone).expanduser().is_absolute():
        candidate = config_dir / backbone
        if candidate.exists():
            backbone = str(candidate)
    return cfg.model_copy(update={"tasks": tasks, "model": cfg.model.model_copy(update={"backbone": backbone})})


def _infer_format(key: str, path: str | None, func: str | None) -> str | None:
    if func:
        return "callable"
    if path is None:
        return None  # no source at all: check_config names the missing data.train/path/callable
    p = Path(path)
    if p.suffix.lower() in _EXTENSIONS:
        return _EXTENSIONS[p.suffix.lower()]
    if p.is_dir():
        return "datasets"
    raise ConfigError(f"{key}.format: cannot tell the format of {path!r}; set it (csv, tsv, jsonl, parquet, datasets, conll)")


def _expand_env(node: Any, key: str) -> Any:
    """Substitute `${VAR}` / `${VAR:-default}` in every string; `key` is the dotted key of `node`."""
    if isinstance(node, str):
        def sub(m: re.Match) -> str:
            value = os.environ.get(m.group(1))
            if value is None:
                if m.group(2) is None:
                    raise ConfigError(
                        f"{key or '(top level)'}: environment variable {m.group(1)} is not set "
                        f"(used as ${{{m.group(1)}}}; write ${{{m.group(1)}:-default}} for a fallback)"
                    )
                return m.group(2)
            return value

        return _ENV.sub(sub, node)
    if isinstance(node, dict):
        return {k: _expand_env(v, f"{key}.{k}" if key else str(k)) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_env(v, f"{key}.{i}") for i, v in enumerate(node)]
    return node


def _format_validation_error(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{key}: unknown key")
        elif err["type"] == "missing":
            lines.append(f"{key}: required key is missing")
        else:
            got = err.get("input")
            shown = f" (got {got!r})" if not isinstance(got, (dict, list)) else ""
            lines.append(f"{key}: {err['msg']}{shown}")
    return "invalid config:\n  " + "\n  ".join(lines)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain data, ready for YAML (round-trips through `config_from_dict`)."""
    return cfg.model_dump(mode="json")
