"""Adaptive prompts: during training, move each task to the template that scores best on dev.

Choosing a template by its dev score is how "Making Pre-trained Language Models Better Few-shot
Learners" (LM-BFF, Gao et al., 2021, https://arxiv.org/abs/2012.15723) picks among candidates;
here the choice is revisited as the shared model trains, since the best wording for a task can
change once the encoder has adapted to it.

For every task with `prompt.adaptive: true`, every `prompt.adaptive_every` evaluations (counted
over the run, resumes included), right before the evaluation:

1. each candidate (`template`, then `pool`, in config order; no template means the plain input)
   is scored on the task's dev split with the current model: dev is encoded under the candidate
   (rules still win for the rows they match) and the task's main metric computed;
2. the task switches to the best candidate (ties keep the active template, then the earlier
   candidate); the rest are ranked best first, which is the order prompt ensembles take them in;
3. its train and dev splits are re-encoded under the active template, `TaskInfo.prompt` / `.pool`
   change (so bundles written afterwards, `best/` included, record them), and a `prompt_select`
   event goes to metrics.jsonl: task, metric, each candidate's score, the choice, `switched`.

The evaluation that follows then scores the model under the chosen template, so the best bundle is
judged with the prompt it records. The active template and the ranking live in the trainer state
(`state["prompts"]`, saved in every checkpoint), so `--resume` re-encodes with them and continues.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

from promptmux.config.schema import Config
from promptmux.data.encode import default_cache_dir
from promptmux.eval.evaluator import evaluate
from promptmux.model.multitask import MultiTaskModel, TaskInfo
from promptmux.train.setup import PreparedData, encode_task_split

log = logging.getLogger("promptmux.train")

STATE_KEY = "prompts"


def score_candidates(
    model: MultiTaskModel,
    info: TaskInfo,
    candidates: list[str | None],
    data: PreparedData,
    tokenizer,
    cfg: Config,
    cache_dir: Any = None,
) -> list[float]:
    """The task's main metric on its dev split under each candidate template, in order."""
    dev = data.raw[info.name].split("dev")
    pad_id = tokenizer.pad_token_id or 0
    metric = cfg.main_metric(info.name)
    scores = []
    for template in candidates:
        trial = replace(info, prompt=template)
        enc = encode_task_split(trial, dev, tokenizer, cfg.model.max_length, cache_dir)
        metrics = evaluate(
            model,
            [trial],
            {info.name: (enc, dev)},
            pad_id,
            cfg.train.eval_batch_size,
            cfg.train.precision,
        )
        scores.append(float(metrics[info.name][metric]))
    return scores


def rank(candidates: list[str | None], scores: list[float], active: str | None) -> list[str | None]:
    """Candidates best first; ties keep the active template first, then the config order.

    A score that is not a number (a correlation over constant predictions) ranks last.
    """

    def key(i: int) -> tuple[float, int, int]:
        s = scores[i]
        return (-s if not math.isnan(s) else math.inf, candidates[i] != active, i)

    return [candidates[i] for i in sorted(range(len(candidates)), key=key)]


class PromptSelector:
    """Re-selects the active template of adaptive tasks; owns `state["prompts"]`.

    Args:
        cfg: the run's config.
        data: the prepared data; its `tasks` and `encoded` entries are updated in place.
        tokenizer: the run's tokenizer.
        state: the trainer state dict (saved in checkpoints).
        accelerator: the run's accelerator (scores are computed on the main process and shared).
    """

    def __init__(
        self,
        cfg: Config,
        data: PreparedData,
        tokenizer,
        state: dict[str, Any],
        accelerator: Any = None,
    ) -> None:
        self.cfg, self.data, self.tokenizer, self.acc = cfg, data, tokenizer, accelerator
        self.tasks = [name for name, t in cfg.tasks.items() if t.prompt.adaptive]
        self.cache_dir = default_cache_dir()
        self.state = state.setdefault(STATE_KEY, {"evals": 0, "active": {}, "ranked": {}})
        self._warned: set[str] = set()

    @classmethod
    def create(
        cls,
        cfg: Config,
        data: PreparedData,
        tokenizer,
        state: dict[str, Any],
        accelerator: Any = None,
    ) -> PromptSelector | None:
        """A selector when some task is adaptive (its saved choices applied), else None."""
        if not any(t.prompt.adaptive for t in cfg.tasks.values()):
            return None
        selector = cls(cfg, data, tokenizer, state, accelerator)
        for task, active in selector.state["active"].items():  # --resume: continue with the choices
            if task in selector.tasks:
                selector.apply(task, active, selector.state["ranked"].get(task, []))
        return selector

    def candidates(self, task: str) -> list[str | None]:
        prompt = self.cfg.tasks[task].prompt
        return [prompt.template, *prompt.pool]

    def info(self, task: str) -> TaskInfo:
        return next(t for t in self.data.tasks if t.name == task)

    def apply(self, task: str, active: str | None, ranked_rest: list[str | None]) -> None:
        """Make `active` the task's template: TaskInfo, and its train and dev encodings."""
        old = self.info(task)
        new = replace(old, prompt=active, pool=list(ranked_rest) or None)
        self.data.tasks[self.data.tasks.index(old)] = new
        if active == old.prompt:
            return
        for split in ("train", "dev"):
            examples = self.data.raw[task].split(split)
            if examples and task in self.data.encoded.get(split, {}):
                # The train TaskStream keeps the row order it drew from the first encoding's
                # lengths (row count and indices do not change): its length buckets follow the
                # config template's lengths until the run ends, slightly looser after a switch,
                # and a resumed run draws exactly the same order.
                self.data.encoded[split][task] = encode_task_split(
                    new, examples, self.tokenizer, self.cfg.model.max_length, self.cache_dir
                )

    def maybe_select(
        self, model: MultiTaskModel, step: int, logger: Any = None
    ) -> list[dict[str, Any]]:
        """Count one evaluation; re-select the tasks due. Returns the `prompt_select` events."""
        self.state["evals"] += 1
        due = [
            t
            for t in self.tasks
            if self.state["evals"] % self.cfg.tasks[t].prompt.adaptive_every == 0
        ]
        if not due:
            return []
        main = self.acc is None or self.acc.is_main_process
        results: dict[str, list[float] | None] = {}
        if main:
            for task in due:
                if not self.data.raw[task].split("dev"):
                    if task not in self._warned and logger is not None:
                        logger.message(
                            f"tasks.{task}.prompt.adaptive: no dev split to score prompts on; "
                            "keeping the template"
                        )
                    self._warned.add(task)
                    results[task] = None
                    continue
                results[task] = score_candidates(
                    model,
                    self.info(task),
                    self.candidates(task),
                    self.data,
                    self.tokenizer,
                    self.cfg,
                    self.cache_dir,
                )
        if self.acc is not None and self.acc.num_processes > 1:
            import torch.distributed as dist

            box = [results]
            dist.broadcast_object_list(box, src=0)  # every process re-encodes the same way
            results = box[0]
        events = []
        for task in due:
            scores = results.get(task)
            if scores is None:
                continue
            candidates = self.candidates(task)
            before = self.info(task).prompt
            ranked = rank(candidates, scores, before)
            self.apply(task, ranked[0], ranked[1:])
            self.state["active"][task], self.state["ranked"][task] = ranked[0], ranked[1:]
            event = {
                "task": task,
                "metric": self.cfg.main_metric(task),
                "scores": [
                    {"template": c, "score": None if math.isnan(s) else s}
                    for c, s in zip(candidates, scores)
                ],
                "chosen": ranked[0],
                "previous": before,
                "switched": ranked[0] != before,
            }
            events.append(event)
            if logger is not None:
                logger.event("prompt_select", step, **event)
                if event["switched"]:
                    logger.message(
                        f"prompt_select @ step {step}: {task} now uses {ranked[0]!r} "
                        f"(was {before!r})"
                    )
        return events
