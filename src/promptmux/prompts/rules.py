"""Prompt rules: pick each example's template from its text and metadata (pure functions).

A task's hard prompt is its `template` plus optional `rules`, each `{when: {...}, template: ...}`.
The first rule whose conditions all hold picks the example's template; when none holds, the task's
`template` applies (no template: the input as it is). A rule with an empty `when` always holds.

Conditions of `when`:

- `min_words: n` / `max_words: n`: `text` has at least / at most n words (split on whitespace;
  for pair tasks only the first text counts).
- `question: true|false`: `text` asks a question, or does not. A text asks a question when it
  contains "?" or its first word is an interrogative (`INTERROGATIVES`: wh-words and the auxiliary
  verbs that open yes/no questions, "is", "can", "does", ...). A heuristic: "Will you come" counts,
  so does an imperative that opens with "do"; a rule wants the common case, not a parser.
- `field: name` with `equals: value` or `in: [values]`: the row's metadata field `name` equals the
  value, or one of the values. Values compare as text ("1" matches 1; true matches "true", any
  case), so a YAML config matches CSV rows (all text) and JSON rows (typed) alike. A row without the
  field (or with null) matches neither.

Metadata fields are read from the data rows at training time (only the fields that rules name are
kept, in `Example.meta`) and given per input at inference (`Predictor.predict(..., meta=)`, the
`meta` object of an HTTP item, or the columns of a `promptmux predict --input` file).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from promptmux.prompts.templates import render
from promptmux.tasks.spec import Example

CONDITIONS = ("min_words", "max_words", "question", "field", "equals", "in")
INTERROGATIVES = frozenset(
    {
        "who",
        "whom",
        "whose",
        "what",
        "which",
        "when",
        "where",
        "why",
        "how",
        "is",
        "are",
        "was",
        "were",
        "am",
        "do",
        "does",
        "did",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "has",
        "have",
        "had",
    }
)
_STRIP = "\"'“”‘’(¿¡«"


def word_count(text: str) -> int:
    """Words of `text`, split on whitespace."""
    return len(text.split())


def is_question(text: str) -> bool:
    """True when `text` contains "?" or opens with an interrogative word (see `INTERROGATIVES`)."""
    if "?" in text:
        return True
    words = text.split(maxsplit=1)
    if not words:
        return False
    first = words[0].strip(_STRIP).rstrip(",.:;!").lower()
    return first in INTERROGATIVES


def _as_text(value: Any) -> str:
    # Booleans compare case-insensitively ("True" from a CSV cell, true from YAML); all else as str.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 1.0 from a JSON row matches `equals: 1`
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower()
    return str(value).strip()


def matches(when: Mapping[str, Any], example: Example) -> bool:
    """Whether every condition of `when` holds for `example` (`when` validated by `check_when`)."""
    text = example.text if isinstance(example.text, str) else " ".join(example.text)
    if "min_words" in when and word_count(text) < when["min_words"]:
        return False
    if "max_words" in when and word_count(text) > when["max_words"]:
        return False
    if "question" in when and is_question(text) != bool(when["question"]):
        return False
    if "field" in when:
        meta = example.meta or {}
        value = meta.get(when["field"])
        if value is None:
            return False
        allowed = [when["equals"]] if "equals" in when else list(when.get("in", ()))
        if _as_text(value) not in {_as_text(v) for v in allowed}:
            return False
    return True


def _when_and_template(rule: Any) -> tuple[Mapping[str, Any], str]:
    # Rules come as config objects (PromptRuleConfig) at training time and as plain dicts from
    # bundle.json at inference; both have `when` and `template`.
    if isinstance(rule, Mapping):
        return rule.get("when") or {}, rule["template"]
    return rule.when, rule.template


def choose_template(
    example: Example, template: str | None, rules: Sequence[Any] = ()
) -> str | None:
    """The template for `example`: the first matching rule's, else `template` (None: no prompt)."""
    for rule in rules:
        when, chosen = _when_and_template(rule)
        if matches(when, example):
            return chosen
    return template


def prompt_for(example: Example, template: str | None, rules: Sequence[Any] = ()) -> Example:
    """`example` as the encoder reads it: wrapped in the template its rules (or `template`) pick."""
    chosen = choose_template(example, template, rules)
    if not chosen or not isinstance(example.text, str):
        return example
    a, b = render(chosen, example.text, example.text_b)
    return replace(example, text=a, text_b=b)


def apply_prompts(
    examples: Iterable[Example], template: str | None, rules: Sequence[Any] = ()
) -> list[Example]:
    """`prompt_for` over a list (the one way training, evaluation and inference prompt inputs)."""
    if not template and not rules:
        return examples if isinstance(examples, list) else list(examples)
    return [prompt_for(ex, template, rules) for ex in examples]


def meta_fields(rules: Sequence[Any]) -> tuple[str, ...]:
    """The metadata fields `rules` read (in first-use order): the only ones rows need to keep."""
    names: dict[str, None] = {}
    for rule in rules:
        when, _ = _when_and_template(rule)
        if isinstance(when.get("field"), str):
            names[when["field"]] = None
    return tuple(names)


def rules_as_dicts(rules: Sequence[Any]) -> list[dict[str, Any]]:
    """Rules as plain data (what bundle.json records)."""
    return [{"when": dict(w), "template": t} for w, t in map(_when_and_template, rules)]


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def check_when(when: Any) -> tuple[str, str] | None:
    """Why the conditions `when` are unusable, as (condition key or "", problem); None if usable."""
    if not isinstance(when, Mapping):
        return (
            "",
            f"expected a mapping of conditions, got {type(when).__name__}",
        )
    for key in when:
        if key not in CONDITIONS:
            return str(key), f"unknown condition; known: {', '.join(CONDITIONS)}"
    for key in ("min_words", "max_words"):
        if key in when and not _whole(when[key]):
            return key, f"expected a whole number >= 0, got {when[key]!r}"
    if "min_words" in when and "max_words" in when and when["max_words"] < when["min_words"]:
        return (
            "max_words",
            f"{when['max_words']} is below min_words ({when['min_words']}): no text can match",
        )
    if "question" in when and not isinstance(when["question"], bool):
        return "question", f"expected true or false, got {when['question']!r}"
    has_field = "field" in when
    if has_field and (not isinstance(when["field"], str) or not when["field"].strip()):
        return "field", f"expected the name of a metadata field, got {when['field']!r}"
    for key in ("equals", "in"):
        if key in when and not has_field:
            return key, "compares a metadata field: add `field: <name>`"
    if has_field and ("equals" in when) == ("in" in when):
        return "field", "give exactly one of `equals: value` or `in: [values]`"
    if "equals" in when and not _scalar(when["equals"]):
        return "equals", f"expected a text, number or boolean, got {type(when['equals']).__name__}"
    if "in" in when:
        values = when["in"]
        if not isinstance(values, list) or not values or not all(_scalar(v) for v in values):
            return "in", f"expected a non-empty list of texts, numbers or booleans, got {values!r}"
    return None
