"""Hard prompts: text templates wrapped around each input (pure functions).

A template names the task in words the encoder already understands, e.g. `"Topic of this
article: {text}"`. Placeholders are `{text}` and `{text_b}`; `{sep}` cuts the rendered text into
the two segments of a pair (`"Premise: {text}{sep}Hypothesis: {text_b}"`), so the encoder still
sees a [SEP]-separated pair with its segment ids. Literal braces are written `{{` and `}}`.
"""

from __future__ import annotations

import string
from dataclasses import replace

from promptmux.tasks.spec import Example

PLACEHOLDERS = frozenset({"text", "text_b", "sep"})


def placeholders(template: str) -> set[str]:
    """The placeholder names a template uses (ValueError for malformed braces)."""
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def check_template(template: str, task_type: str, pair: bool) -> str | None:
    """Why `template` cannot be used for this task, or None when it can."""
    try:
        names = placeholders(template)
    except ValueError as e:
        return f"malformed template ({e}); write literal braces as {{{{ and }}}}"
    unknown = names - PLACEHOLDERS
    if unknown:
        return f"unknown placeholder(s) {', '.join('{' + n + '}' for n in sorted(unknown))}; use {{text}}, {{text_b}} or {{sep}}"
    if task_type == "token":
        return "token tasks tag the input words one by one and take no template"
    if "text" not in names:
        return "the template must contain {text}"
    if pair and "text_b" not in names:
        return "this task reads text pairs (fields.text_b): the template must contain {text_b}"
    if not pair and ("text_b" in names or "sep" in names):
        return "{text_b} and {sep} need a pair task (set fields.text_b)"
    if template.count("{sep}") > 1:
        return "{sep} may appear once"
    return None


def render(template: str, text: str, text_b: str | None = None) -> tuple[str, str | None]:
    """Fill `template`; returns (first segment, second segment or None)."""
    values = {"text": text, "text_b": text_b or "", "sep": "\x00"}
    filled = template.format_map(values)
    if "\x00" in filled:
        a, b = filled.split("\x00", 1)
        return a.strip(), b.strip()
    return filled.strip(), None


def apply_template(template: str | None, examples: list[Example]) -> list[Example]:
    """The examples with their texts wrapped by `template` (unchanged when it is None)."""
    if not template:
        return examples
    out = []
    for ex in examples:
        a, b = render(template, ex.text, ex.text_b)
        out.append(replace(ex, text=a, text_b=b))
    return out
