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

For a decoder (`model.kind: decoder`) a candidate is a template and a verbalizer, the words the
LM answers with after the template, one per label. `build_decoder_candidates` crosses templates
(current, plain, pool, generic ones that end where the answer goes) with verbalizers (the task's
own, the label names when they are words, and the top keyword of each label, one-token ones first).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
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
    # Decoder candidates: the answer words of each label, in label order (None for an encoder).
    verbalizer: tuple[str, ...] | None = None

    def describe(self) -> str:
        """The template, and for a decoder candidate its answer words: "{text}\\nAnswer: -> bad / good"."""
        if self.verbalizer is None:
            return self.template
        return f"{self.template} -> {' / '.join(self.verbalizer)}"


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


# Decoder templates end where the answer goes: the verbalizer words follow after one space.
# `{choice}` is replaced by the candidate's answer words ("bad or good").
DECODER_SINGLE = (
    "{text}\nAnswer:",
    "Text: {text}\nLabel:",
    "{text}\nQuestion: {choice}?\nAnswer:",
    "Classify the text as {choice}.\nText: {text}\nAnswer:",
    "{text}\nIn one word, the text is",
)
DECODER_PAIR = (
    "Sentence 1: {text}\nSentence 2: {text_b}\nAnswer:",
    "Premise: {text}\nHypothesis: {text_b}\nQuestion: {choice}?\nAnswer:",
    "{text}\nQuestion: {text_b} {choice}?\nAnswer:",
    "Are these two texts {choice}?\n{text}\n{text_b}\nAnswer:",
)


def decoder_verbalizers(
    task: TaskConfig,
    keywords: dict[int, list[Keyword]],
    labels: Sequence[str],
    one_token: Callable[[str], bool] | None = None,
) -> list[tuple[tuple[str, ...], str]]:
    """(answer words per label, source) for a decoder's classification task, deduplicated.

    Sources: `current` (tasks.T.verbalizer), `labels` (the label names, lower-cased, when they are
    words), `keywords` (each label's top keyword by information gain, when all labels have a
    distinct one). With `one_token` (is this word one token of the LM?), a label's keyword is its
    best one-token keyword where it has one: one-token answers are read in one LM pass per row,
    several-token ones take a pass per label.
    """
    found: list[tuple[tuple[str, ...], str]] = []
    if task.verbalizer:
        found.append((tuple(task.verbalizer[label] for label in labels), "current"))
    if labels and all(_WORDY.match(name) for name in labels):
        found.append((tuple(name.replace("_", " ").strip().lower() for name in labels), "labels"))
    tops = [_top_word(ws, one_token) for _, ws in sorted(keywords.items()) if ws]
    if len(tops) == len(labels) and len(set(tops)) == len(tops):
        found.append((tuple(tops), "keywords"))
    out, seen = [], set()
    for words, source in found:
        if len(set(words)) == len(words) and words not in seen:
            seen.add(words)
            out.append((words, source))
    return out


def _top_word(ranked: Sequence[Keyword], one_token: Callable[[str], bool] | None) -> str:
    """The first keyword (by information gain) that is one token, else the first."""
    if one_token is not None:
        for kw in ranked:
            if one_token(kw.word):
                return kw.word
    return ranked[0].word


def build_decoder_candidates(
    name: str,
    task: TaskConfig,
    keywords: dict[int, list[Keyword]],
    labels: Sequence[str],
    max_candidates: int,
    one_token: Callable[[str], bool] | None = None,
) -> list[Candidate]:
    """(template, verbalizer) candidates for a decoder's classification task, in priority order:
    the task's own pair first, then every template (current, plain, generic) with every verbalizer
    (`one_token`: see `decoder_verbalizers`).

    Raises:
        ConfigError: no verbalizer to try (give tasks.T.verbalizer), or `max_candidates` < 1.
    """
    if max_candidates < 1:
        raise ConfigError(f"--max-candidates must be >= 1, got {max_candidates}")
    verbalizers = decoder_verbalizers(task, keywords, labels, one_token)
    if not verbalizers:
        raise ConfigError(
            f"tasks.{name}.verbalizer: prompt search for a decoder needs answer words per label; "
            "give the task's verbalizer (the label names are not words and no keywords were found)"
        )
    pair = task.fields.text_b is not None
    templates: list[tuple[str, str]] = []
    if task.prompt.template:
        templates.append((task.prompt.template, "current"))
    templates.append(("{text}\n{text_b}" if pair else "{text}", "plain"))
    templates += [(t, "generic") for t in (DECODER_PAIR if pair else DECODER_SINGLE)]
    out: list[Candidate] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    for template, t_source in templates:
        for words, v_source in verbalizers:
            filled = template.replace("{choice}", _either([_escape(w) for w in words]))
            if (filled, words) in seen:
                continue
            assert check_template(filled, task.type, pair) is None, filled
            seen.add((filled, words))
            source = t_source if v_source == "current" else f"{t_source}+{v_source}"
            out.append(Candidate(filled, source, words))
    return out[:max_candidates]
