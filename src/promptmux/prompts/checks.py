"""Validation of a task's `prompt` section: template, rules, pool, ensemble and adaptive settings.

`check_prompt_config` is called by `config.load.check_config`, which prefixes the key it returns
with `tasks.<name>.prompt`, so an error reads `tasks.sst2.prompt.rules[1].when.max_words: ...`.
"""

from __future__ import annotations

from typing import Any

from promptmux.prompts.rules import check_when
from promptmux.prompts.templates import check_template


def check_prompt_config(prompt: Any, task_type: str, pair: bool) -> tuple[str, str] | None:
    """Why a task's `PromptConfig` cannot be used, as (key under `prompt`, problem); None if it can.

    Args:
        prompt: the task's `PromptConfig`.
        task_type: the task's type (token tasks take no templates, so no rules, pool or ensemble).
        pair: whether the task reads text pairs (`fields.text_b` is set).
    """
    if prompt.template is not None:
        problem = check_template(prompt.template, task_type, pair)
        if problem:
            return "template", problem
    if task_type == "token":
        # Token tasks tag the input words one by one: there is no template to pick or vary.
        for key, used in (
            ("rules", bool(prompt.rules)),
            ("pool", bool(prompt.pool)),
            ("ensemble", prompt.ensemble > 1),
            ("adaptive", prompt.adaptive),
        ):
            if used:
                return key, "token tasks tag the input words one by one and take no template"
    for i, rule in enumerate(prompt.rules):
        bad = check_when(rule.when)
        if bad:
            key, problem = bad
            return f"rules[{i}].when" + (f".{key}" if key else ""), problem
        problem = check_template(rule.template, task_type, pair)
        if problem:
            return f"rules[{i}].template", problem
    seen = {prompt.template: "template"}
    for i, template in enumerate(prompt.pool):
        problem = check_template(template, task_type, pair)
        if problem:
            return f"pool[{i}]", problem
        if template in seen:
            return f"pool[{i}]", f"repeats {seen[template]}; each candidate must differ"
        seen[template] = f"pool[{i}]"
    n = 1 + len(prompt.pool)
    if prompt.ensemble > n:
        return "ensemble", (
            f"{prompt.ensemble} prompts asked, but the task has {n} "
            f"(template + {len(prompt.pool)} in pool); "
            f"add templates to prompt.pool or lower prompt.ensemble"
        )
    if prompt.adaptive and not prompt.pool:
        return "adaptive", "needs candidate templates to choose from: list them in prompt.pool"
    return None
