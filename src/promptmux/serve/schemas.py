"""Server settings and the HTTP request/response shapes (also what `/docs` shows)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from promptmux.errors import ConfigError


@dataclass(frozen=True)
class ServeSettings:
    """Limits and batching knobs of the HTTP server.

    Attributes:
        max_batch_size: most items in one forward pass (1 turns micro-batching off).
        max_wait_ms: how long the first waiting item may wait for others to join its batch.
        max_items: most items in one request (more: 413).
        max_text_chars: most characters in one text (longer: 413, or cut when `truncate`).
        truncate: cut texts longer than `max_text_chars` instead of refusing them.
        timeout_s: a request still waiting for predictions after this long gets a 504.
        max_queue: most items waiting for the model; beyond it requests get a 503 (back-pressure
            instead of latency that grows without bound).
        max_body_bytes: largest request body read (more: 413 before parsing).
        workers: model threads sharing the one model (see `MicroBatcher`).
    """

    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_items: int = 64
    max_text_chars: int = 4000
    truncate: bool = False
    timeout_s: float = 30.0
    max_queue: int = 4096
    max_body_bytes: int = 8 * 1024 * 1024
    workers: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "truncate":
                continue
            whole = isinstance(f.default, int)  # counts and sizes must be whole numbers
            kinds = (int,) if whole else (int, float)
            number = isinstance(value, kinds) and not isinstance(value, bool)
            if not number or not (value >= 0 if f.name == "max_wait_ms" else value > 0):
                bound = ">= 0" if f.name == "max_wait_ms" else "> 0"
                raise ConfigError(f"serve.{f.name} must be {'an integer' if whole else 'a number'} {bound}, got {value!r}")
        if self.max_items > self.max_queue:
            raise ConfigError(f"serve.max_items ({self.max_items}) must not exceed serve.max_queue ({self.max_queue}): such a request could never be queued")

    def limits(self) -> dict[str, Any]:
        """The limits a client should know about (shown by `/v1/tasks`)."""
        return {
            "max_items": self.max_items,
            "max_text_chars": self.max_text_chars,
            "truncate": self.truncate,
            "timeout_s": self.timeout_s,
            "max_batch_size": self.max_batch_size,
            "max_wait_ms": self.max_wait_ms,
            "workers": self.workers,
        }


class PredictItem(BaseModel):
    """One input: `{task, text}`, or `{task, text_a, text_b}` for a task that reads pairs.

    Token tasks take `text` and split it on whitespace into words.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"task": "sentiment", "text": "a great film"}]})

    task: str = Field(description="Task name (see GET /v1/tasks).")
    text: str | None = Field(None, description="The text, for single-text and token tasks.")
    text_a: str | None = Field(None, description="First text of a pair.")
    text_b: str | None = Field(None, description="Second text of a pair.")
    meta: dict[str, Any] | None = Field(
        None, description="Metadata fields for the task's prompt rules (`field` conditions); fields no rule reads are ignored."
    )


class PredictRequest(BaseModel):
    """A list of items, of any tasks in any order; answers come back in the same order."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"task": "sentiment", "text": "a great film"},
                        {"task": "pair", "text_a": "the film", "text_b": "it was good"},
                    ],
                    "top_k": 2,
                    "return_probabilities": False,
                }
            ]
        },
    )

    items: list[PredictItem] = Field(min_length=1, description="Items to predict (tasks may be mixed).")
    top_k: int | None = Field(
        None, ge=1, description="Add `top`: the k most probable labels with their scores (classification and multilabel tasks; ignored for others)."
    )
    return_probabilities: bool = Field(False, description="Add `probabilities`: every label's probability (classification, multilabel).")


class PredictResponse(BaseModel):
    """Per item, in request order: `index`, `task` and the prediction.

    - classification: `label`, `score`
    - multilabel: `labels`, `scores` (probability of each chosen label)
    - regression: `value`
    - token: `tokens` (`word`, `tag`, `score`), `entities` (`type`, `text`, `start`, `end`)

    plus `top` / `probabilities` when asked for, and `truncated: true` on items whose text was cut.
    """

    results: list[dict[str, Any]]


class ErrorDetail(BaseModel):
    """One problem: where (`item` index and `field`, when the problem is in an item) and what."""

    item: int | None = None
    field: str | None = None
    message: str


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    """Every error answer has this shape."""

    error: ErrorBody


class TaskDescription(BaseModel):
    name: str
    type: str
    labels: list[str] | None
    pair: bool | None = Field(description="True: give text_a and text_b; False: give text; null: the bundle does not say (either is accepted).")
    prompt: Any = Field(None, description="The task's prompt, when the bundle has one.")
    metric: str
    pooling: str


class TasksResponse(BaseModel):
    tasks: list[TaskDescription]
    limits: dict[str, Any]
