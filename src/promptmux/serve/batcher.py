"""Cross-request micro-batching: items of any task, from any request, share one encoder pass.

Requests put their items on one queue. A worker takes up to `max_batch_size` items, waiting at
most `max_wait_ms` (counted from the oldest item's arrival) for more to join, and predicts them
together in a model thread (`predict_mixed`: one mixed-task encoder pass, split by length only
when padding would cost more than another pass), so the event loop keeps accepting requests
meanwhile. While a batch runs the next one fills up, so under load batches grow by themselves and
under a light load an item waits no more than `max_wait_ms`. Several workers (`workers`) share
the one model, each with its own thread.

Each item has its own future. A request that times out or disconnects cancels its futures; the
worker drops cancelled items before the pass and ignores their results after it. If a pass
fails, its items are retried one by one, so only the item at fault gets the error.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from promptmux.serve.metrics import ServerMetrics
from promptmux.serve.mixed import PassStats, predict_mixed
from promptmux.serve.predictor import Predictor
from promptmux.tasks.spec import Example

log = logging.getLogger("promptmux.serve")


class QueueFull(Exception):
    """The queue holds `max_queue` items already; the caller should answer 503."""


@dataclass
class Job:
    """One item waiting for its prediction."""

    task: str
    example: Example
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Groups items from concurrent requests into mixed-task forward passes.

    Args:
        predictor: the loaded bundle.
        max_batch_size: most items per forward pass (1: every item runs alone).
        max_wait_ms: longest time the oldest waiting item waits for others to join.
        max_queue: most items waiting; `submit` raises `QueueFull` beyond it.
        metrics: where to count batches (optional).
        workers: model threads sharing the one model. With several, passes run side by side
            (torch releases the GIL inside its kernels), e.g. two single-threaded passes on two
            cores: the throughput of two replicas for the memory of one.
    """

    def __init__(self, predictor: Predictor, max_batch_size: int = 32, max_wait_ms: float = 5.0, max_queue: int = 4096, metrics: ServerMetrics | None = None, workers: int = 1) -> None:
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.metrics = metrics
        self._queue: deque[Job] = deque()
        # The model runs in its own thread(s), so the event loop never blocks on it. One thread by
        # default: passes then run one after another, each using torch's intra-op threads.
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="promptmux-model")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task] = []

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def healthy(self) -> bool:
        """False when a worker has died (they should not: they survive failed passes)."""
        return all(not t.done() for t in self._tasks)

    def start(self) -> None:
        """Start the workers on the running event loop (again, if the loop changed)."""
        loop = asyncio.get_running_loop()
        if self._tasks and self._loop is loop and self.healthy:
            return
        for task in self._tasks:
            task.cancel()  # a worker of an earlier loop (tests run one loop each) or a dead one
        self._loop = loop
        self._wakeup = asyncio.Event()
        self._tasks = [loop.create_task(self._run(), name=f"promptmux-batcher-{i}") for i in range(self.workers)]

    async def stop(self) -> None:
        """Stop the workers; items still waiting fail with a clear error."""
        running = [t for t in self._tasks if not t.done()]
        for task in running:
            task.cancel()
        for task in running:
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._tasks = []
        while self._queue:
            job = self._queue.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._set_depth()

    def close(self) -> None:
        """Release the model thread (after `stop`)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def submit(self, items: Sequence[tuple[str, Example]]) -> list[asyncio.Future]:
        """Queue validated items; returns one future per item (its `format_output` dict)."""
        self.start()
        if len(self._queue) + len(items) > self.max_queue:
            raise QueueFull(f"{len(self._queue)} item(s) waiting already and {len(items)} more would pass the limit of {self.max_queue}; retry later")
        assert self._loop is not None and self._wakeup is not None
        jobs = [Job(task, example, self._loop.create_future()) for task, example in items]
        self._queue.extend(jobs)
        self._set_depth()
        self._wakeup.set()
        return [job.future for job in jobs]

    async def predict(self, items: Sequence[tuple[str, Example]]) -> list[dict[str, Any] | BaseException]:
        """Submit items and wait for all their predictions (cancels them if the caller gives up).

        An item whose prediction failed has its exception in its place, so the caller can say
        which items failed.
        """
        futures = self.submit(items)
        try:
            return list(await asyncio.gather(*futures, return_exceptions=True))
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    # --- the worker ----------------------------------------------------------------------------

    def _take(self, batch: list[Job]) -> None:
        while self._queue and len(batch) < self.max_batch_size:
            job = self._queue.popleft()
            if not job.future.done():  # cancelled: its request timed out or went away
                batch.append(job)
        self._set_depth()

    async def _next_batch(self) -> list[Job]:
        assert self._wakeup is not None
        batch: list[Job] = []
        while not batch:
            self._wakeup.clear()
            self._take(batch)
            if not batch:
                await self._wakeup.wait()
        deadline = batch[0].enqueued + self.max_wait_s
        while len(batch) < self.max_batch_size:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                break
            self._take(batch)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            try:
                results = await loop.run_in_executor(self._executor, self._forward, [(j.task, j.example) for j in batch])
            except asyncio.CancelledError:
                for job in batch:
                    job.future.cancel()
                raise
            except Exception as e:  # noqa: BLE001  the worker must outlive any one batch
                log.exception("batch of %d items failed", len(batch))
                results = [e] * len(batch)
            for job, result in zip(batch, results):
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def _forward(self, items: list[tuple[str, Example]]) -> list[dict[str, Any] | BaseException]:
        """Runs in the model thread: one mixed pass, or item by item if that pass fails."""
        try:
            return list(self._pass(items))
        except Exception:
            log.warning("a batch of %d items failed; retrying them one by one", len(items), exc_info=True)
        results: list[dict[str, Any] | BaseException] = []
        for item in items:
            try:
                results.extend(self._pass([item]))
            except Exception as e:  # noqa: BLE001  this item's own error, reported to its request
                results.append(e)
        return results

    def _pass(self, items: list[tuple[str, Example]]) -> list[dict[str, Any]]:
        start = time.perf_counter()
        stats = PassStats()
        try:
            return predict_mixed(self.predictor, items, stats)
        finally:
            m = self.metrics
            if m is not None:  # failed batches count too: they cost model time
                m.batches.inc()
                m.batch_size.observe(len(items))
                m.batch_tasks.observe(len({task for task, _ in items}))
                m.forward_seconds.observe(time.perf_counter() - start)
                m.passes.inc(stats.passes)
                m.tokens.inc(stats.tokens, kind="real")
                m.tokens.inc(stats.padded_tokens, kind="padded")

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._queue))
