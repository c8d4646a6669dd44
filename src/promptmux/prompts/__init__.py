"""Prompts as the task switch: hard templates (and, in model/prompts, learned soft prompts)."""

from promptmux.prompts.templates import apply_template, check_template, render

__all__ = ["apply_template", "check_template", "render"]
