"""Knowledge distillation from trained bundles (teachers) into the model being trained (student).

Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network" (2015),
https://arxiv.org/abs/1503.02531.

Teachers: one multi-task bundle (`distill.teacher`) or one bundle per task (`distill.teachers`).
Each teacher runs, in eval mode and without gradients, on the rows of the tasks it teaches in the
student's own batch (same token ids: the tokenizers must have the same vocabulary). For each
distilled task t the loss becomes

    L_t = (1 - alpha) * task loss + alpha * D_t

with D_t by task type, at temperature T:

- classification: KL(softmax(z_teacher / T) || softmax(z_student / T)) * T^2, mean over rows;
- token: the same per real word (padding words are skipped);
- multilabel: the binary KL of each label's sigmoid(z / T), mean over rows and labels, * T^2
  (binary cross-entropy against the teacher's probabilities minus their entropy: same gradient,
  and 0 when the student matches the teacher);
- regression: MSE between the student output and the teacher's prediction, both on the student
  head's standardized scale (heads predict (y - mean) / std with their own training statistics,
  so the teacher's value is mapped to data scale with its statistics, then standardized with the
  student's). T does not apply.

The T^2 factor keeps the soft-target gradients at the scale of the hard-label ones when T changes
(Hinton et al., section 2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from promptmux.config.schema import Config, DistillConfig
from promptmux.data.collate import Batch
from promptmux.errors import BundleError, ConfigError
from promptmux.model.heads import Head
from promptmux.model.multitask import MultiTaskModel, TaskInfo
from promptmux.precision import autocast
from promptmux.train.batch_rows import select_tasks

log = logging.getLogger("promptmux.train")


def soft_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) * T^2, mean over rows ([N, C] logits)."""
    s = F.log_softmax(student.float() / temperature, -1)
    t = F.log_softmax(teacher.float() / temperature, -1)
    return (t.exp() * (t - s)).sum(-1).mean() * temperature**2


def binary_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean binary KL of sigmoid(teacher / T) to sigmoid(student / T) over all labels, * T^2."""
    s, t = student.float() / temperature, teacher.float() / temperature
    p = torch.sigmoid(t)
    cross = F.binary_cross_entropy_with_logits(s, p)
    entropy = F.binary_cross_entropy_with_logits(t, p)
    return (cross - entropy) * temperature**2


def distill_loss(
    task_type: str,
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float,
    student_head: Head,
    teacher_head: Head,
    extra: dict[str, torch.Tensor],
) -> torch.Tensor:
    """The distillation term D_t of one task (see the module docstring)."""
    if task_type == "classification":
        return soft_kl(student, teacher, temperature)
    if task_type == "token":
        real = extra["word_starts"] >= 0  # [B, W]: padding words carry no prediction
        return soft_kl(student[real], teacher[real], temperature)
    if task_type == "multilabel":
        return binary_kl(student, teacher, temperature)
    if task_type == "regression":
        value = teacher_head.values(teacher)  # the teacher's prediction on the data scale
        target = (value - student_head.target_mean) / student_head.target_std
        return F.mse_loss(student.float().squeeze(-1), target)
    raise ValueError(f"distillation: unknown task type {task_type!r}")


@dataclass
class Teacher:
    key: str  # the config key it comes from, for messages
    folder: Path
    model: MultiTaskModel
    tasks: list[str]  # the student tasks it teaches


class Distiller:
    """Mixes each distilled task's loss with its distillation term (`mix`), and logs both parts.

    Args:
        cfg: the `distill` section.
        student: the unwrapped student model (its heads map regression targets).
        teachers: the loaded, checked teachers (see `load_teachers`).
        types: task name -> task type, for every student task.
        precision: `train.precision` (teachers run under the same autocast).
    """

    def __init__(
        self,
        cfg: DistillConfig,
        student: MultiTaskModel,
        teachers: list[Teacher],
        types: dict[str, str],
        precision: str,
    ) -> None:
        self.alpha = cfg.alpha
        self.temperature = cfg.temperature
        self.student = student
        self.teachers = teachers
        self.types = types
        self.precision = precision
        self._parts: dict[str, dict[str, list[float]]] = {"loss": {}, "task_loss": {}}

    def teacher_logits(self, batch: Batch, tasks: list[str]) -> dict[str, torch.Tensor]:
        """Every teacher's logits for the rows of `tasks` present in the batch (no gradient)."""
        out: dict[str, torch.Tensor] = {}
        for teacher in self.teachers:
            present = [t for t in teacher.tasks if t in tasks and t in batch.rows]
            if not present:
                continue
            sub, _ = select_tasks(batch, present)
            with torch.no_grad(), autocast(batch.input_ids.device, self.precision):
                logits = teacher.model(**sub.model_inputs())
            out.update({t: logits[t] for t in present})
        return out

    def mix(
        self, losses: dict[str, torch.Tensor], batch: Batch, logits: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The task losses with (1 - alpha) * task loss + alpha * D_t for every distilled task."""
        taught = self.teacher_logits(batch, [t for t in logits if t in losses])
        mixed = dict(losses)
        for t, teacher in taught.items():
            d = distill_loss(
                self.types[t],
                logits[t],
                teacher,
                self.temperature,
                self.student.heads[t],
                self._teacher_of(t).model.heads[t],
                batch.extra.get(t, {}),
            )
            mixed[t] = (1.0 - self.alpha) * losses[t] + self.alpha * d
            self._parts["loss"].setdefault(t, []).append(float(d.detach()))
            self._parts["task_loss"].setdefault(t, []).append(float(losses[t].detach()))
        return mixed

    def report(self) -> dict[str, dict[str, float]]:
        """Mean distillation term and mean task loss per task since the last report."""
        out = {
            part: {t: sum(v) / len(v) for t, v in values.items()}
            for part, values in self._parts.items()
        }
        for values in self._parts.values():
            values.clear()
        return out

    def _teacher_of(self, task: str) -> Teacher:
        return next(teacher for teacher in self.teachers if task in teacher.tasks)


def load_teachers(
    cfg: DistillConfig,
    tasks: list[TaskInfo],
    tokenizer,
    max_length: int,
    device: torch.device | str = "cpu",
) -> list[Teacher]:
    """Load the teacher bundles and check them against the student; ConfigError names the key."""
    from promptmux.serve.bundle import load_bundle, resolve_bundle

    student = {t.name: t for t in tasks}
    wanted = cfg.tasks or list(cfg.teachers or student)
    if cfg.teacher is not None:
        plan = [("distill.teacher", cfg.teacher, wanted)]
    else:
        plan = [(f"distill.teachers.{t}", cfg.teachers[t], [t]) for t in wanted]
    loaded: dict[Path, tuple] = {}  # a bundle named for several tasks is loaded once
    teachers = []
    for key, path, names in plan:
        try:
            folder = resolve_bundle(path).resolve()
            if folder not in loaded:
                loaded[folder] = load_bundle(folder)
        except BundleError as e:
            raise ConfigError(f"{key}: {e}") from None
        model, t_tokenizer, t_tasks, _, folder = loaded[folder]
        check_teacher(key, folder, {t.name: t for t in t_tasks}, [student[n] for n in names])
        check_tokenizer(key, folder, t_tokenizer, tokenizer)
        limit = getattr(model.encoder.config, "max_position_embeddings", None)
        if limit is not None and max_length > limit:
            raise ConfigError(
                f"{key}: teacher bundle {folder} reads at most {limit} tokens, but "
                f"model.max_length is {max_length}; lower model.max_length"
            )
        model.to(device).eval().requires_grad_(False)
        teachers.append(Teacher(key, folder, model, names))
    return teachers


def check_teacher(
    key: str, folder: Path, teacher: dict[str, TaskInfo], student: list[TaskInfo]
) -> None:
    """The teacher must know each task with the same type and the same labels in the same order."""
    for s in student:
        t = teacher.get(s.name)
        where = f"{key}: teacher bundle {folder}"
        if t is None:
            raise ConfigError(
                f"{where} has no task {s.name!r} (it has: {', '.join(teacher)}); "
                f"list the tasks to distill in distill.tasks"
            )
        if t.type != s.type:
            raise ConfigError(
                f"{where}: task {s.name!r} is {t.type} there but {s.type} in this config"
            )
        if list(t.labels or []) != list(s.labels or []):
            raise ConfigError(
                f"{where}: task {s.name!r} has labels {t.labels} there but {s.labels} here; "
                f"distillation needs the same labels in the same order (set tasks.{s.name}.labels)"
            )
        if t.pair is not None and s.pair is not None and t.pair != s.pair:
            raise ConfigError(
                f"{where}: task {s.name!r} reads {'text pairs' if t.pair else 'single texts'} "
                f"there but {'text pairs' if s.pair else 'single texts'} here"
            )
        if t.prompt != s.prompt:
            log.warning(
                "%s: task %r was trained with hard prompt %r, this run uses %r; the teacher reads "
                "the student's inputs",
                where,
                s.name,
                t.prompt,
                s.prompt,
            )


def check_tokenizer(key: str, folder: Path, teacher, student) -> None:
    """The teacher reads the student's token ids: both vocabularies must be the same."""
    a, b = teacher.get_vocab(), student.get_vocab()
    if a == b:
        return
    differ = sorted(set(a.items()) ^ set(b.items()))[:3]
    raise ConfigError(
        f"{key}: teacher bundle {folder} has another tokenizer vocabulary than model.backbone "
        f"({len(a)} vs {len(b)} tokens; differing entries such as {differ}); the teacher reads the "
        f"student's token ids, so distill from a model of the same tokenizer family"
    )


def build_distiller(
    cfg: Config,
    student: MultiTaskModel,
    tasks: list[TaskInfo],
    tokenizer,
    device: torch.device | str,
) -> Distiller | None:
    """The run's `Distiller`, or None without a `distill` section."""
    if cfg.distill is None:
        return None
    teachers = load_teachers(cfg.distill, tasks, tokenizer, cfg.model.max_length, device)
    return Distiller(
        cfg.distill, student, teachers, {t.name: t.type for t in tasks}, cfg.train.precision
    )
