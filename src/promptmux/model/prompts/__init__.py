"""Soft prompts: learned per-task vectors that tell the shared encoder which task a row belongs to.

One file per kind, registered by name (`model.prompts.kind`): shallow, deep, prefix, late, shared, generated.
"""

from promptmux.model.prompts import deep, generated, late, prefix, shallow, shared  # noqa: F401
from promptmux.model.prompts.base import PROMPTS, SoftPrompt, build_prompt, prompt_settings

__all__ = ["PROMPTS", "SoftPrompt", "build_prompt", "prompt_settings"]
