"""Tasks added to a trained, frozen multi-task model (`promptmux add-task`).

A model's soft prompt module (`MultiTaskModel.prompt`) serves the tasks it was trained with. A task
added later gets its own head and, optionally, its own soft prompt, while every old task must keep
computing exactly what it computed before, bit for bit. Growing the old prompt module in place
would do for some kinds (shallow, deep, prefix, late) but not for others (`shared` sizes its factors by the task
count, and a model without prompts has no module at all). So added tasks live beside the old model:

- `AddedTasks` holds the added task names and one prompt module (`shallow`, `deep` or `prefix`, per-task
  parameters only) for those of them that use a prompt; added tasks without one read the bare
  encoder.
- A batch that holds no added task takes the model's own path untouched, so old-task outputs are
  the same computation as before the task was added.
- A batch that mixes old and added tasks is split into groups by how their rows reach the encoder
  (old prompt, added prompt, no prompt): one encoder pass per group, over that group's rows with
  the padding trimmed to the group's longest row. Rows never share an attention pass with rows of
  another prompt layout, so the prompt lengths of old and added tasks need not match.

bundle.json records the layout under `settings["added_tasks"]` (see `AddedTasks.settings`), so
`load_bundle` rebuilds the same modules and the learned values come from model.safetensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from promptmux.config.schema import VECTOR_KINDS
from promptmux.model.heads import head_extra
from promptmux.model.prompts.base import PROMPTS, SoftPrompt

if TYPE_CHECKING:
    from promptmux.model.multitask import MultiTaskModel

# Kinds whose parameters are per task (a ParameterDict keyed by task name): a task can be added
# without touching the values of the tasks already there. (An added late prompt enters at the
# default layer, the middle one.)
ADDED_PROMPT_KINDS = VECTOR_KINDS


class AddedTasks(nn.Module):
    """Added task names and the soft prompt module of those that use one.

    Args:
        tasks: every added task, in the order they were added.
        prompt: a `shallow`, `deep` or `prefix` prompt module over the added tasks that have a prompt, or None.
    """

    def __init__(self, tasks: Sequence[str], prompt: SoftPrompt | None = None) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.prompt = prompt
        unknown = [t for t in (prompt.tasks if prompt is not None else []) if t not in self.tasks]
        if unknown:
            raise ValueError(
                f"added-task prompts for tasks that are not added: {', '.join(unknown)}"
            )

    def involved(self, rows: dict[str, slice]) -> bool:
        """Whether a batch holds rows of an added task (else the model's own path serves it)."""
        return any(task in self.tasks for task in rows)

    def route(self, task: str) -> str:
        """How a task's rows reach the encoder: "old" (the model's own path), "prompt" or "plain"."""
        if task not in self.tasks:
            return "old"
        return "prompt" if self.prompt is not None and task in self.prompt.tasks else "plain"

    def encode(
        self,
        encoder: nn.Module,
        route: str,
        rows: dict[str, slice],
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encoder states at the real tokens of added-task rows (`route` "prompt" or "plain")."""
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if route == "plain":
            return encoder(**kwargs).last_hidden_state
        assert self.prompt is not None
        return self.prompt.encode(encoder, rows, **kwargs)[:, self.prompt.length :]

    def forward(
        self,
        model: MultiTaskModel,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        rows: dict[str, slice],
        extra: dict[str, dict[str, torch.Tensor]],
        token_type_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """`MultiTaskModel.forward` for a batch that holds added tasks: one pass per route."""
        groups: dict[str, list[str]] = {}
        for task in rows:
            groups.setdefault(self.route(task), []).append(task)
        out: dict[str, torch.Tensor] = {}
        for route, tasks in groups.items():
            if len(groups) == 1:  # the whole batch: no gathering, no trimming
                ids, mask, types, sub = input_ids, attention_mask, token_type_ids, rows
            else:
                ids, mask, types, sub = _gather(
                    tasks, rows, input_ids, attention_mask, token_type_ids
                )
            if route == "old":
                # Old tasks go through the model's own path (their rows form a batch of old tasks).
                out.update(model(ids, mask, sub, extra, types))
                continue
            hidden = self.encode(model.encoder, route, sub, ids, mask, types)
            for task in tasks:
                sl = sub[task]
                head = model.heads[task]
                out[task] = head(hidden[sl], mask[sl], head_extra(head, extra.get(task, {}), types, sl))
        return {task: out[task] for task in rows}

    def settings(self) -> dict[str, Any]:
        """The layout for bundle.json: task names and the prompt module's shape (or None)."""
        prompt = None
        if self.prompt is not None:
            p = self.prompt
            prompt = {"kind": p.kind, "length": p.length, "init": p.init, "tasks": list(p.tasks)}
        return {"tasks": list(self.tasks), "prompt": prompt}

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}"


def _gather(
    tasks: list[str],
    rows: dict[str, slice],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, slice]]:
    """The rows of `tasks` as their own batch, padded only to their own longest row."""
    index = torch.cat([torch.arange(rows[t].start, rows[t].stop) for t in tasks]).to(
        input_ids.device
    )
    sub: dict[str, slice] = {}
    start = 0
    for t in tasks:
        n = rows[t].stop - rows[t].start
        sub[t] = slice(start, start + n)
        start += n
    mask = attention_mask[index]
    # Collated batches pad on the right; trimming makes the group's pass the one its rows would get
    # batched alone (the same shapes, hence the same kernels).
    width = int(mask.any(0).nonzero().max()) + 1 if bool(mask.any()) else mask.size(1)
    types = None if token_type_ids is None else token_type_ids[index, :width]
    return input_ids[index, :width], mask[:, :width], types, sub


def build_added(record: dict[str, Any] | None, encoder: nn.Module) -> AddedTasks | None:
    """Rebuild `AddedTasks` from its bundle.json record (`AddedTasks.settings`); None when absent."""
    if not record:
        return None
    prompt = None
    spec = record.get("prompt")
    if spec:
        prompt = new_prompt(
            spec["kind"], spec["tasks"], encoder, int(spec["length"]), spec.get("init", "vocab")
        )
    return AddedTasks(record["tasks"], prompt)


def new_prompt(
    kind: str, tasks: Sequence[str], encoder: nn.Module, length: int, init: str = "vocab"
) -> SoftPrompt:
    """A fresh per-task prompt module of an added-task kind."""
    if kind not in ADDED_PROMPT_KINDS:
        raise ValueError(
            f"added tasks take a {' or '.join(ADDED_PROMPT_KINDS)} soft prompt, not {kind!r}"
        )
    return PROMPTS.get(kind)(tasks, encoder, length, init)


def extend(
    added: AddedTasks | None, task: str, encoder: nn.Module, prompt: dict[str, Any] | None
) -> AddedTasks:
    """`added` plus one new task, with a fresh prompt when `prompt` ({kind, length, init}) is given.

    The previously added tasks keep their prompt values (copied); the new task's prompt starts
    from the kind's own initialisation.
    """
    tasks = (added.tasks if added is not None else []) + [task]
    old = added.prompt if added is not None else None
    if prompt is None:
        return AddedTasks(tasks, old)
    if old is not None and (old.kind, old.length) != (prompt["kind"], prompt["length"]):
        raise ValueError(
            f"the model's added tasks already use {old.kind} prompts of length {old.length}; "
            f"a further added task must use the same (or no prompt)"
        )
    names = (old.tasks if old is not None else []) + [task]
    module = new_prompt(
        prompt["kind"], names, encoder, int(prompt["length"]), prompt.get("init", "vocab")
    )
    if old is not None:
        with torch.no_grad():
            for name in old.tasks:
                module.prompts[name].copy_(old.prompts[name])
    device = encoder.get_input_embeddings().weight.device
    return AddedTasks(tasks, module.to(device))
