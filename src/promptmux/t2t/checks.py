"""Config checks that depend on `model.kind` (called by `config.load.check_config`).

An encoder reads every task through a head, so it has no use for verbalizers or generation tasks;
a decoder answers every task in text, so each task must say what the answer is: the label's
verbalizer words (classification) or the target text (generation). Settings that only the encoder
path implements are refused under a decoder rather than silently ignored.
"""

from __future__ import annotations

from promptmux.config.schema import Config, TaskConfig
from promptmux.errors import ConfigError

DECODER_TASK_TYPES = ("classification", "generation")

# The encoder's LoRA default names BERT's attention layers; a decoder's are usually named otherwise.
_ENCODER_LORA_DEFAULT = ["query", "value"]


def check_model_kind(cfg: Config) -> None:
    """Raise ConfigError, naming the dotted key, for settings `model.kind` cannot honour."""
    if cfg.model.kind == "encoder":
        for name, task in cfg.tasks.items():
            _check_encoder_task(f"tasks.{name}", task)
        return
    for name, task in cfg.tasks.items():
        _check_decoder_task(f"tasks.{name}", task)
    _check_decoder_model(cfg)


def _check_encoder_task(key: str, task: TaskConfig) -> None:
    if task.type == "generation":
        raise ConfigError(
            f"{key}.type: generation tasks are answered by a decoder LM; set model.kind: decoder "
            f"(and a causal LM as model.backbone)"
        )
    if task.verbalizer is not None:
        raise ConfigError(
            f"{key}.verbalizer: verbalizers are read by the text-to-text path; set model.kind: "
            f"decoder, or remove the verbalizer (an encoder classifies through its head)"
        )
    if task.max_new_tokens is not None:
        raise ConfigError(f"{key}.max_new_tokens: only generation tasks under model.kind: decoder generate text")


def _check_decoder_task(key: str, task: TaskConfig) -> None:
    from promptmux.prompts.templates import placeholders

    if task.type not in DECODER_TASK_TYPES:
        raise ConfigError(
            f"{key}.type: model.kind: decoder answers in text: use classification (with a "
            f"verbalizer) or generation; {task.type} tasks need model.kind: encoder"
        )
    template = task.prompt.template
    if template is None:
        raise ConfigError(
            f"{key}.prompt.template: required with model.kind: decoder; it is the text the decoder "
            f'reads before its answer, e.g. "Review: {{text}}\\nSentiment:"'
        )
    try:
        if "sep" in placeholders(template):
            raise ConfigError(
                f"{key}.prompt.template: {{sep}} splits a text pair for an encoder; a decoder reads "
                f'one text, so write both fields into it, e.g. "Premise: {{text}}\\nHypothesis: {{text_b}}"'
            )
    except ValueError:
        pass  # malformed braces: check_prompt_config names the problem
    for sub, used in (
        ("rules", bool(task.prompt.rules)),
        ("pool", bool(task.prompt.pool)),
        ("ensemble", task.prompt.ensemble > 1),
        ("adaptive", task.prompt.adaptive),
    ):
        if used:
            raise ConfigError(f"{key}.prompt.{sub}: not supported with model.kind: decoder (one template per task)")
    if task.type == "generation":
        if task.verbalizer is not None:
            raise ConfigError(f"{key}.verbalizer: generation tasks answer free text; verbalizers are for classification")
        if task.labels is not None:
            raise ConfigError(f"{key}.labels: generation tasks have no label set (fields.label holds the target text)")
        return
    if task.max_new_tokens is not None:
        raise ConfigError(
            f"{key}.max_new_tokens: a classification task's answer is scored through its verbalizer, "
            f"not generated; remove it"
        )
    _check_verbalizer(key, task)


def _check_verbalizer(key: str, task: TaskConfig) -> None:
    verbalizer = task.verbalizer
    if not verbalizer:
        raise ConfigError(
            f"{key}.verbalizer: required for a classification task under model.kind: decoder: the "
            f"words the decoder answers with for each label, e.g. {{negative: terrible, positive: great}}"
        )
    seen: dict[str, str] = {}
    for label, words in verbalizer.items():
        if not isinstance(words, str) or not words.strip():
            raise ConfigError(f"{key}.verbalizer.{label}: empty; give the word or phrase that means this label")
        norm = " ".join(words.split()).lower()
        if norm in seen:
            raise ConfigError(
                f"{key}.verbalizer: labels {seen[norm]!r} and {label!r} share the answer {words!r}; "
                f"each label needs its own words"
            )
        seen[norm] = label
    if task.labels is not None:
        missing = [label for label in task.labels if label not in verbalizer]
        if missing:
            raise ConfigError(f"{key}.verbalizer: no entry for label(s) {missing}; every label in {key}.labels needs one")
        extra = [label for label in verbalizer if label not in task.labels]
        if extra:
            raise ConfigError(f"{key}.verbalizer.{extra[0]}: not a label of the task (labels: {', '.join(task.labels)})")


def _check_decoder_model(cfg: Config) -> None:
    from promptmux.weighting import WEIGHTINGS

    m = cfg.model
    if m.prompts.kind not in ("none", "shallow"):
        raise ConfigError(
            f"model.prompts.kind: {m.prompts.kind} is for the encoder; with model.kind: decoder soft "
            f"prompts are shallow (per-task vectors before the prompt) or none"
        )
    if m.lora.kind == "per_task":
        raise ConfigError("model.lora.kind: per_task is not supported with model.kind: decoder; use shared")
    if m.lora.kind != "none" and list(m.lora.target_modules) == _ENCODER_LORA_DEFAULT:
        raise ConfigError(
            "model.lora.target_modules: the default [query, value] names BERT's layers; name the "
            "decoder's Linear layers, e.g. [q_proj, v_proj] (Llama, Gemma)"
        )
    if m.freeze.strategy not in ("none", "backbone"):
        raise ConfigError(
            f"model.freeze.strategy: {m.freeze.strategy} is for the encoder; with model.kind: decoder "
            f"use none (the whole LM trains, or only LoRA with model.lora) or backbone (the LM stays "
            f"frozen and soft prompts train)"
        )
    if m.freeze.strategy == "backbone" and m.prompts.kind == "none" and m.lora.kind == "none":
        raise ConfigError(
            "model.freeze.strategy: backbone freezes the whole decoder and nothing else would train; "
            "set model.prompts.kind: shallow or model.lora.kind: shared"
        )
    if m.num_layers is not None:
        raise ConfigError("model.num_layers: not supported with model.kind: decoder")
    strategy = cfg.weighting.strategy
    if strategy in WEIGHTINGS and WEIGHTINGS.get(strategy).needs_task_grads:
        raise ConfigError(
            f"weighting.strategy: {strategy} combines per-task gradients, which the text-to-text "
            f"loop does not compute; use a loss-based weighting (equal, static, loss_driven, "
            f"uncertainty, dwa, famo, priority)"
        )
    if cfg.train.adversarial.method != "none":
        raise ConfigError("train.adversarial.method: adversarial training is implemented for model.kind: encoder only")
    if cfg.distill is not None:
        raise ConfigError("distill: distillation is implemented for model.kind: encoder only")
