"""Endless, resumable streams of row indices for each task's training split."""

from __future__ import annotations

import numpy as np


class TaskStream:
    """Yields row indices epoch after epoch, in length-bucketed random order.

    Each epoch's order is a pure function of (seed, epoch), so the whole state is two integers and
    resuming is exact. With buckets on, a random pool of `batch_size * bucket_size` rows is sorted
    by length and cut into batches whose order is shuffled again: batches hold rows of similar
    length (little padding) while the data order stays random at the scale of the pool.

    Args:
        lengths: token count of each row.
        batch_size: rows per (global) batch, used to cut length buckets.
        seed: base seed for this task.
        buckets: sort pools by length (True) or keep the plain random order.
        bucket_size: batches per pool.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, buckets: bool = True, bucket_size: int = 64) -> None:
        if len(lengths) == 0:
            raise ValueError("a task stream needs at least one row")
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.buckets = buckets
        self.bucket_size = bucket_size
        self.epoch = 0
        self.cursor = 0
        self._order_epoch = -1
        self._order = np.empty(0, dtype=np.int64)

    def order(self, epoch: int) -> np.ndarray:
        if epoch != self._order_epoch:
            self._order = self._make_order(epoch)
            self._order_epoch = epoch
        return self._order

    def _make_order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.lengths))
        if not self.buckets:
            return perm
        pool = self.batch_size * self.bucket_size
        batches: list[np.ndarray] = []
        for start in range(0, len(perm), pool):
            chunk = perm[start : start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        order = rng.permutation(len(batches))
        return np.concatenate([batches[i] for i in order])

    def take(self, n: int) -> np.ndarray:
        """The next `n` row indices, crossing into the next epoch when this one runs out."""
        out = []
        while n > 0:
            order = self.order(self.epoch)
            got = order[self.cursor : self.cursor + n]
            out.append(got)
            n -= len(got)
            self.cursor += len(got)
            if self.cursor >= len(order):
                self.epoch += 1
                self.cursor = 0
        return np.concatenate(out)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self.cursor = int(state["cursor"])
