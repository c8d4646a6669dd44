"""Candidate templates for prompt search (pure functions).

Candidates come, in this order of priority (the order also breaks ties in the search):

1. `current`: the task's `prompt.template`, and `plain`: the bare input (`{text}`, or
   `{text}{sep}{text_b}` for pairs), the baseline every prompt must beat;
2. `pool`: the templates listed in `prompt.pool`, and `rule`: the templates of `prompt.rules`
   (each tried on every row; the search does not evaluate the conditions);
3. `keywords`: templates built from words mined per label by information gain
   (`promptmux.prompts.keywords`), e.g. "{text} (great or awful?)";
4. `labels`: templates naming the label set, when the label names are words;
5. `generic`: a few fixed templates for the task's type and pair-ness.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from promptmux.config.schema import TaskConfig
from promptmux.errors import ConfigError
from promptmux.prompts.keywords import Keyword
from promptmux.prompts.templates import check_template

_WORDY = re.compile(r"^[A-Za-z][A-Za-z /&_-]*$")

GENERIC_SINGLE = (
    "Text: {text}",
    "Classify this text: {text}",
    "{text} This text is about",
    "Input: {text} Answer:",
)
GENERIC_REGRESSION = (
    "Text: {text}",
    "Rate this text: {text}",
    "{text} Score:",
)
GENERIC_PAIR = (
    "{text} {text_b}",
    "Sentence 1: {text}{sep}Sentence 2: {text_b}",
    "Premise: {text}{sep}Hypothesis: {text_b}",
    "{text}{sep}Question: {text_b} True or false?",
    "Do these two texts say the same thing? {text}{sep}{text_b}",
)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One template to score, and where it came from (current, plain, pool, rule, keywords, ...)."""

    template: str
    source: str


def plain_template(pair: bool) -> str:
    """The template that leaves the input as it is."""
    return "{text}{sep}{text_b}" if pair else "{text}"


def _escape(word: str) -> str:
    return word.replace("{", "{{").replace("}", "}}")


def _either(words: Sequence[str]) -> str:
    """ "a or b", "a, b or c"."""
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _with_input(body_after: str | None, body_before: str | None, pair: bool) -> str:
    core = plain_template(pair)
    if body_before is not None:
        return f"{body_before} {core}"
    return f"{core} {body_after}"


def keyword_templates(keywords: dict[int, list[Keyword]], pair: bool) -> list[str]:
    """A small family of templates built from per-label keywords (empty without words to use).

    Needs at least one word for two different labels: a single word names no choice.
    """
    firsts = [_escape(ws[0].word) for _, ws in sorted(keywords.items()) if ws]
    if len(firsts) < 2:
        return []
    choice = _either(firsts)
    # Up to three words per label, interleaved so that each label is named early.
    lists = [[_escape(k.word) for k in ws[:3]] for _, ws in sorted(keywords.items()) if ws]
    related = [w for rank in range(3) for ws in lists if rank < len(ws) for w in [ws[rank]]]
    return [
        _with_input(f"({choice}?)", None, pair),
        _with_input(None, f"{choice[0].upper()}{choice[1:]}?", pair),
        _with_input(f"Related words: {', '.join(related)}.", None, pair),
    ]


def label_templates(labels: Sequence[str] | None, pair: bool) -> list[str]:
    """Templates naming the labels ("{text} (World, Sports or Business?)") when they are words."""
    if not labels or not all(_WORDY.match(name) for name in labels):
        return []
    names = [_escape(name.replace("_", " ").strip()) for name in labels]
    choice = _either(names)
    lead = choice[0].upper() + choice[1:]
    return [_with_input(f"({choice}?)", None, pair), _with_input(None, f"{lead}?", pair)]


def generic_templates(task_type: str, pair: bool) -> tuple[str, ...]:
    """Fixed templates that suit any task of this type and pair-ness."""
    if pair:
        return GENERIC_PAIR
    return GENERIC_REGRESSION if task_type == "regression" else GENERIC_SINGLE


def build_candidates(
    name: str,
    task: TaskConfig,
    keywords: dict[int, list[Keyword]],
    labels: Sequence[str] | None,
    max_candidates: int,
) -> list[Candidate]:
    """The candidates for task `name`, deduplicated, in priority order, at most `max_candidates`.

    Raises:
        ConfigError: a template of `prompt.pool` or `prompt.rules` does not fit the task (the
            message names the key), or `max_candidates` < 1.
    """
    if max_candidates < 1:
        raise ConfigError(f"--max-candidates must be >= 1, got {max_candidates}")
    pair = task.fields.text_b is not None
    key = f"tasks.{name}.prompt"
    found: list[Candidate] = []
    if task.prompt.template:
        found.append(Candidate(task.prompt.template, "current"))
    found.append(Candidate(plain_template(pair), "plain"))
    for i, template in enumerate(task.prompt.pool):
        problem = check_template(template, task.type, pair)
        if problem:
            raise ConfigError(f"{key}.pool[{i}]: {problem}")
        found.append(Candidate(template, "pool"))
    for i, rule in enumerate(task.prompt.rules):
        problem = check_template(rule.template, task.type, pair)
        if problem:
            raise ConfigError(f"{key}.rules[{i}].template: {problem}")
        found.append(Candidate(rule.template, "rule"))
    found += [Candidate(t, "keywords") for t in keyword_templates(keywords, pair)]
    found += [Candidate(t, "labels") for t in label_templates(labels, pair)]
    found += [Candidate(t, "generic") for t in generic_templates(task.type, pair)]
    out: list[Candidate] = []
    seen: set[str] = set()
    for c in found:
        if c.template in seen:
            continue
        # Built-in templates are valid by construction; a failure here is a bug, not user input.
        assert check_template(c.template, task.type, pair) is None, c.template
        seen.add(c.template)
        out.append(c)
    return out[:max_candidates]
