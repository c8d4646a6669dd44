"""Prometheus metrics in the text exposition format, without a client library.

Only what the server needs: counters, gauges and histograms, each with optional labels, rendered
by `MetricsRegistry.render()` as the text format version 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/). Updates come from the event loop
and from the model thread, so every family guards its values with a lock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import TypeVar

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    # The exposition format escapes backslash, double quote and newline inside label values.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str], extra: tuple[str, str] | None = None) -> str:
    pairs = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra is not None:
        pairs.append(f'{extra[0]}="{extra[1]}"')
    return "{" + ",".join(pairs) + "}" if pairs else ""


class _Family:
    """A named metric with a fixed tuple of label names; one value (or histogram) per label set."""

    kind = ""

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"metric {self.name}: expected labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(_Family):
    """A monotonically increasing count (the `_total` suffix is part of the given name)."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"counter {self.name} cannot decrease (got {amount})")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labelnames:
            items = [((), 0.0)]  # an unlabeled counter is exposed from the start
        return [f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in items]


class Gauge(Counter):
    """A value that goes up and down (queue depth, items in flight)."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)


class Histogram(_Family):
    """Observations counted into cumulative buckets (`le` upper bounds), plus their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float], labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        if "le" in self.labelnames:
            raise ValueError(f"histogram {name}: 'le' is reserved for bucket bounds")
        bounds = sorted(float(b) for b in buckets)
        if not bounds or bounds != sorted(set(bounds)):
            raise ValueError(f"histogram {name}: buckets must be distinct numbers, got {list(buckets)}")
        self.bounds = bounds if math.isinf(bounds[-1]) else [*bounds, math.inf]
        self._counts: dict[LabelValues, list[int]] = {}
        self._sums: dict[LabelValues, float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * len(self.bounds))
            # Stored per bucket (not cumulative); render() accumulates.
            for i, bound in enumerate(self.bounds):
                if value <= bound:
                    counts[i] += 1
                    break
            self._sums[key] = self._sums.get(key, 0.0) + value

    def snapshot(self, **labels: str) -> dict[float, int]:
        """Cumulative count per upper bound (what `/metrics` shows), for tests and the bench."""
        key = self._key(labels)
        with self._lock:
            counts = list(self._counts.get(key, [0] * len(self.bounds)))
        out, total = {}, 0
        for bound, n in zip(self.bounds, counts):
            total += n
            out[bound] = total
        return out

    def lines(self) -> list[str]:
        with self._lock:
            items = sorted((k, list(c), self._sums[k]) for k, c in self._counts.items())
        if not items and not self.labelnames:
            items = [((), [0] * len(self.bounds), 0.0)]
        out = []
        for key, counts, total_sum in items:
            running = 0
            for bound, n in zip(self.bounds, counts):
                running += n
                out.append(f"{self.name}_bucket{_labels(self.labelnames, key, ('le', _number(bound)))} {running}")
            out.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_number(total_sum)}")
            out.append(f"{self.name}_count{_labels(self.labelnames, key)} {running}")
        return out


F = TypeVar("F", bound=_Family)


class MetricsRegistry:
    """The server's metric families, in registration order."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def add(self, family: F) -> F:
        if family.name in self._families:
            raise ValueError(f"metric {family.name!r} is registered twice")
        self._families[family.name] = family
        return family

    def render(self) -> str:
        lines: list[str] = []
        for family in self._families.values():
            lines += family.header() + family.lines()
        return "\n".join(lines) + "\n"


class ServerMetrics:
    """The families `/metrics` exposes, under the `promptmux_` prefix."""

    def __init__(self) -> None:
        self.registry = MetricsRegistry()
        add = self.registry.add
        self.requests: Counter = add(Counter("promptmux_requests_total", "HTTP requests answered, by route and status code.", ("route", "status")))
        self.items: Counter = add(Counter("promptmux_items_total", "Items predicted, by task.", ("task",)))
        self.errors: Counter = add(Counter("promptmux_errors_total", "Requests answered with an error, by kind.", ("kind",)))
        self.batches: Counter = add(Counter("promptmux_batches_total", "Micro-batches run (items gathered from the queue together)."))
        self.passes: Counter = add(Counter("promptmux_forward_passes_total", "Encoder passes (a micro-batch of very uneven lengths is split by length)."))
        self.tokens: Counter = add(Counter("promptmux_tokens_total", "Tokens through the encoder: real ones, and real plus padding.", ("kind",)))
        self.batch_size: Histogram = add(Histogram("promptmux_batch_size", "Items per micro-batch.", [1, 2, 4, 8, 16, 32, 64, 128, 256]))
        self.batch_tasks: Histogram = add(Histogram("promptmux_batch_tasks", "Distinct tasks per micro-batch.", [1, 2, 3, 4, 6, 8, 16]))
        self.latency: Histogram = add(
            Histogram(
                "promptmux_request_duration_seconds",
                "Time from request received to response ready, by route.",
                [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
                ("route",),
            )
        )
        self.forward_seconds: Histogram = add(
            Histogram("promptmux_forward_seconds", "Time to predict one micro-batch (tokenize, encoder, heads).", [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5])
        )
        self.queue_depth: Gauge = add(Gauge("promptmux_queue_depth", "Items waiting for a forward pass."))

    def render(self) -> str:
        return self.registry.render()
