"""From a task's config to its validated examples: read splits, carve missing ones, map fields and
labels, and apply the bad-row policy.

Rows go through two passes. The first checks each record on its own (fields present, text not
empty, regression target numeric, token/tag lengths equal) and keeps the raw label; the second maps
raw labels to ids once the label set is known, which for an inferred set means after all of train
has been read.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from promptmux.config.schema import TaskConfig
from promptmux.errors import ConfigError, DataError
from promptmux.tasks.readers import WHOLE, BadRow, Row, read_records, read_source
from promptmux.tasks.spec import Example, TaskData

__all__ = ["load_task"]

log = logging.getLogger("promptmux.data")

SPLITS = ("train", "dev", "test")


class _Bad(Exception):
    """One row is unusable; carries the field at fault (None for a malformed row)."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


@dataclass(slots=True)
class _Pending:
    """A row that passed the first pass; `raw` is the label before mapping to ids."""

    row: int
    origin: str
    text: str | tuple[str, ...]
    text_b: str | None
    raw: Any
    meta: dict[str, Any] | None = None  # the metadata fields prompt rules read, nothing else


class _Split:
    """Bad-row bookkeeping for one split: raises under on_bad_row=error, counts under skip."""

    def __init__(self, task: str, split: str, skip: bool) -> None:
        self.task, self.split, self.skip = task, split, skip
        self.skipped = 0
        self.first: str | None = None

    def bad(self, origin: str, row: int, err: _Bad) -> None:
        where = f"{origin} row {row}" + (f", field {err.field!r}" if err.field else "")
        message = f"{where}: {err.reason}"
        if not self.skip:
            raise DataError(f"tasks.{self.task} ({self.split}): {message}")
        self.skipped += 1
        if self.first is None:
            self.first = message


def load_task(name: str, task: TaskConfig) -> TaskData:
    """Read, validate and split one task's data.

    Given per-split files are used as they are; a missing dev (and, with `split.test_fraction > 0`,
    test) split is carved out of train with `data.split.seed`. A single `data.path` or
    `data.callable` source is carved the same way unless it already holds its own splits. Labels are
    mapped to ids against `task.labels`, or a set inferred from the rows of train (before carving,
    so the set does not depend on the seed). `data.max_examples` then keeps a seeded sample per
    split.

    Args:
        name: the task's name, as in `tasks.<name>`.
        task: the task's validated config; data paths are absolute and `data.format` is set.

    Returns:
        The task's examples per split ("train", "dev" and, when given or carved, "test"), its label
        set (None for regression) and per-split counts of skipped bad rows.

    Raises:
        DataError: a file is missing, or a bad row under `on_bad_row: error`, or no usable rows.
    """
    d = task.data
    fmt = d.format
    if fmt is None:
        raise ConfigError(
            f"tasks.{name}.data.format: not set; load the config with promptmux.config.load_config"
        )
    skip = d.on_bad_row == "skip"
    trackers = {s: _Split(name, s, skip) for s in SPLITS}

    pending: dict[str, list[_Pending]] = {}
    if d.train is not None:
        for split in SPLITS:
            path = getattr(d, split)
            if path is not None:
                rows = read_records(fmt, path, d, split=split, context=f"tasks.{name}.data.{split}")
                pending[split] = _first_pass(rows, path, task, trackers[split])
    else:
        source = d.path if d.path is not None else d.callable
        assert source is not None, "check_config guarantees one source"
        key = "path" if d.path is not None else "callable"
        streams = read_source(fmt, source, d, context=f"tasks.{name}.data.{key}")
        for split, rows in streams.items():
            # A single stream is attributed to train: its bad rows are found before carving.
            ours = "train" if split == WHOLE else split
            pending[ours] = _first_pass(rows, source, task, trackers[ours])

    carved: set[str] = set()
    if "dev" not in pending:
        pending, carved = _carve(pending, d.split.dev_fraction, d.split.test_fraction, d.split.seed)

    if not pending.get("train"):
        raise DataError(f"tasks.{name} (train): no usable rows in {_origin(d)}")

    labels = _label_set(name, task, pending, carved)
    splits: dict[str, list[Example]] = {}
    for split, items in pending.items():
        examples = _second_pass(items, task, labels, trackers[split])
        cap = d.max_examples.get(split)  # type: ignore[call-overload]
        if cap is not None:
            if cap < 0:
                key = f"tasks.{name}.data.max_examples.{split}"
                raise ConfigError(f"{key}: must be >= 0, got {cap}")
            examples = _sample(examples, cap, d.split.seed, split)
        splits[split] = examples

    skipped: dict[str, int] = {}
    for split, tracker in trackers.items():
        if tracker.skipped:
            skipped[split] = tracker.skipped
            log.warning(
                "tasks.%s (%s): skipped %d bad row%s (on_bad_row: skip); first: %s",
                name, split, tracker.skipped, "" if tracker.skipped == 1 else "s", tracker.first,
            )
    return TaskData(name=name, type=task.type, labels=labels, splits=splits, skipped=skipped)


def _origin(d: Any) -> str:
    return str(d.train or d.path or d.callable)


def _first_pass(
    rows: Iterator[Row], origin: str, task: TaskConfig, tracker: _Split
) -> list[_Pending]:
    out: list[_Pending] = []
    f = task.fields
    # Imported here: promptmux.prompts imports tasks.spec, which runs tasks/__init__ (this module).
    from promptmux.prompts.rules import meta_fields

    wanted = meta_fields(task.prompt.rules)
    for row, record in rows:
        try:
            if isinstance(record, BadRow):
                raise _Bad(None, record.reason)
            if task.type == "token":
                words = _sequence(record, f.text, "words")
                if not words or not any(w.strip() for w in words):
                    raise _Bad(f.text, "empty word sequence")
                tags = _sequence(record, f.label, "tags")
                if len(tags) != len(words):
                    why = f"{len(tags)} tags for {len(words)} words; expected one tag per word"
                    raise _Bad(f.label, why)
                out.append(_Pending(row, origin, tuple(words), None, tags))
                continue
            text = _text(record, f.text)
            text_b = _text(record, f.text_b) if f.text_b else None
            raw = _field(record, f.label)
            if task.type == "regression":
                raw = _number(raw, f.label)
            elif task.type == "classification":
                raw = str(raw).strip()
                if not raw:
                    raise _Bad(f.label, "empty label; every train/dev/test row needs one")
            elif task.type == "generation":
                raw = _text(record, f.label)  # the target text the decoder learns to write
            meta = {name: record.get(name) for name in wanted} if wanted else None
            out.append(_Pending(row, origin, text, text_b, raw, meta))
        except _Bad as err:
            tracker.bad(origin, row, err)
    return out


def _field(record: dict[str, Any], name: str) -> Any:
    if name not in record or record[name] is None:
        have = ", ".join(map(str, record)) or "no fields"
        raise _Bad(name, f"missing; the record has: {have}")
    return record[name]


def _text(record: dict[str, Any], name: str) -> str:
    value = _field(record, name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _Bad(name, f"expected text, got {type(value).__name__}")
    value = value.strip()
    if not value:
        raise _Bad(name, "empty text")
    return value


def _sequence(record: dict[str, Any], name: str, what: str) -> list[str]:
    value = _field(record, name)
    if hasattr(value, "tolist") and not isinstance(value, (str, list, tuple)):
        value = value.tolist()  # numpy arrays, as some callables hand them over
    if not isinstance(value, (list, tuple)):
        raise _Bad(name, f"expected a list of {what}, got {type(value).__name__}")
    return [str(v) for v in value]


def _number(value: Any, name: str) -> float:
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise _Bad(name, f"expected a number, got {value!r}") from None
    if not math.isfinite(number):
        raise _Bad(name, f"expected a finite number, got {value!r}")
    return number


def _multilabel(raw: Any, separator: str | None, name: str) -> list[str]:
    if isinstance(raw, str):
        parts = raw.split(separator) if separator else [raw]
    elif isinstance(raw, (list, tuple)):
        parts = [str(v) for v in raw]
    elif hasattr(raw, "tolist"):
        parts = [str(v) for v in raw.tolist()]
    else:
        raise _Bad(name, f"expected a list of labels or a string, got {type(raw).__name__}")
    return [p.strip() for p in parts if p.strip()]


def _sort_labels(values: set[str]) -> list[str]:
    try:
        return sorted(values, key=lambda v: (float(v), v))
    except ValueError:
        return sorted(values)


def _label_set(
    name: str, task: TaskConfig, pending: dict[str, list[_Pending]], carved: set[str]
) -> list[str] | None:
    if task.type in ("regression", "generation"):
        return None
    if task.labels is not None:
        return list(task.labels)
    # Inferred from train and, for carved splits, from the rows carved out of it too: the set must
    # not change with the split seed.
    sources = [pending["train"]] + [pending[s] for s in sorted(carved)]
    seen: set[str] = set()
    for items in sources:
        for p in items:
            if task.type == "multilabel":
                try:
                    seen.update(_multilabel(p.raw, task.label_separator, task.fields.label))
                except _Bad:
                    pass  # reported with its row in the second pass
            elif task.type == "token":
                seen.update(p.raw)
            else:
                seen.add(p.raw)
    if task.type == "token":
        return (["O"] if "O" in seen else []) + sorted(seen - {"O"})
    labels = _sort_labels(seen)
    if task.type == "classification" and len(labels) < 2:
        raise DataError(
            f"tasks.{name} (train): found {len(labels)} label(s) ({', '.join(labels) or 'none'}) "
            f"in field {task.fields.label!r}; a classification task needs at least two"
        )
    return labels


def _second_pass(
    items: list[_Pending], task: TaskConfig, labels: list[str] | None, tracker: _Split
) -> list[Example]:
    ids = {label: i for i, label in enumerate(labels)} if labels is not None else {}
    field = task.fields.label
    known = ", ".join(labels) if labels is not None else ""
    out: list[Example] = []
    for p in items:
        try:
            if task.type in ("regression", "generation"):
                label: Any = p.raw
            elif task.type == "classification":
                label = _lookup(ids, p.raw, field, known)
            elif task.type == "multilabel":
                names = _multilabel(p.raw, task.label_separator, field)
                label = tuple(sorted({_lookup(ids, n, field, known) for n in names}))
            else:
                label = tuple(_lookup(ids, t, field, known, "tag") for t in p.raw)
            out.append(Example(text=p.text, text_b=p.text_b, label=label, meta=p.meta))
        except _Bad as err:
            tracker.bad(p.origin, p.row, err)
    return out


def _lookup(ids: dict[str, int], value: str, field: str, known: str, what: str = "label") -> int:
    try:
        return ids[value]
    except KeyError:
        raise _Bad(field, f"unknown {what} {value!r}; known: {known}") from None


def _carve(
    pending: dict[str, list[_Pending]], dev_fraction: float, test_fraction: float, seed: int
) -> tuple[dict[str, list[_Pending]], set[str]]:
    """Move a seeded random share of train into dev (and test), keeping each split in file order.

    Returns the new splits and the names of those carved.
    """
    train = pending["train"]
    n = len(train)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    want_dev = "dev" not in pending
    want_test = "test" not in pending and test_fraction > 0
    n_dev = _share(n, dev_fraction) if want_dev else 0
    # Train keeps at least one row whatever the fractions.
    n_test = max(0, min(_share(n, test_fraction), n - 1 - n_dev)) if want_test else 0
    out = dict(pending)
    carved: set[str] = set()
    if n_dev:
        out["dev"] = [train[i] for i in sorted(order[:n_dev])]
        carved.add("dev")
    if n_test:
        out["test"] = [train[i] for i in sorted(order[n_dev : n_dev + n_test])]
        carved.add("test")
    out["train"] = [train[i] for i in sorted(order[n_dev + n_test :])]
    return out, carved


def _share(n: int, fraction: float) -> int:
    # At least one row when a fraction is asked for and train can spare it.
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def _sample(examples: list[Example], cap: int, seed: int, split: str) -> list[Example]:
    if len(examples) <= cap:
        return examples
    order = list(range(len(examples)))
    # A string seed hashes with SHA-512 inside `random`, so the sample is the same in every run.
    random.Random(f"{seed}:{split}").shuffle(order)
    return [examples[i] for i in sorted(order[:cap])]
