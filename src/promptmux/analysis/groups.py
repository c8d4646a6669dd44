"""Suggest task groups from a task-affinity matrix (pure functions).

Scoring follows Fifty et al. 2021, "Efficiently Identifying Task Groupings for Multi-Task Learning"
(https://arxiv.org/abs/2109.04617): a task trained in a group benefits from the affinity the
*other* members of its group have onto it. With `affinity[i][j]` the effect of a step on task i on
task j's loss (positive: i helps j):

- a task j in group G receives `mean(affinity[i][j] for i in G if i != j)`;
- a task alone in its group (a singleton) receives 0: it is trained by itself, neither helped nor
  hurt by anyone (the diagonal self term is ignored everywhere);
- a partition's score is the mean of what its tasks receive;
- the recommendation is the fewest groups scoring within 5% (of the score spread) of the best.

The mean (rather than the sum) over group members is what makes block structure visible: with a
sum, adding any task with a small positive affinity would always pay, and one group of everything
would win whenever all affinities are positive.

Up to `EXHAUSTIVE_MAX` tasks every partition is scored (Bell(9) = 21,147); above that, groups are
merged greedily (best merge first), which finds block structure but is not guaranteed optimal.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

EXHAUSTIVE_MAX = 9


@dataclass(frozen=True)
class Grouping:
    """One partition of the tasks and its score (see the module docstring)."""

    groups: tuple[tuple[str, ...], ...]
    score: float

    @property
    def n_groups(self) -> int:
        return len(self.groups)

    def to_dict(self) -> dict:
        return {"groups": [list(g) for g in self.groups], "score": self.score}


def partitions(n: int) -> Iterator[list[list[int]]]:
    """Every partition of `range(n)` into non-empty groups, each group in increasing order.

    Generated as restricted growth strings: element k joins one of the groups opened by elements
    before it, or opens a new one, so each partition appears exactly once.
    """
    if n == 0:
        yield []
        return

    def grow(k: int, groups: list[list[int]]) -> Iterator[list[list[int]]]:
        if k == n:
            yield [list(g) for g in groups]
            return
        for g in groups:
            g.append(k)
            yield from grow(k + 1, groups)
            g.pop()
        groups.append([k])
        yield from grow(k + 1, groups)
        groups.pop()

    yield from grow(1, [[0]])


def received(affinity: np.ndarray, group: Sequence[int]) -> np.ndarray:
    """What each member of `group` receives from the others (0 for a singleton), in group order."""
    if len(group) < 2:
        return np.zeros(len(group))
    idx = np.asarray(group)
    block = affinity[np.ix_(idx, idx)]
    # Column j holds what j receives; drop the diagonal (a task's effect on itself).
    return (block.sum(axis=0) - np.diag(block)) / (len(group) - 1)


def partition_score(affinity: np.ndarray, groups: Sequence[Sequence[int]]) -> float:
    """Mean over all tasks of the affinity each receives from the other members of its group."""
    n = sum(len(g) for g in groups)
    return float(sum(received(affinity, g).sum() for g in groups) / n)


def best_groupings(
    affinity: np.ndarray | Sequence[Sequence[float]], tasks: Sequence[str]
) -> list[Grouping]:
    """The best partition for each number of groups 1..K (index k-1 holds k groups).

    Raises:
        ValueError: the matrix is not K x K for the K task names, or holds non-finite values.
    """
    a = _check(affinity, tasks)
    k = len(tasks)
    best: dict[int, tuple[float, list[list[int]]]] = {}
    candidates = partitions(k) if k <= EXHAUSTIVE_MAX else _greedy(a)
    for part in candidates:
        score = partition_score(a, part)
        held = best.get(len(part))
        # Ties keep the first found, so results do not depend on floating-point noise order.
        if held is None or score > held[0] + 1e-12:
            best[len(part)] = (score, part)
    return [_named(best[n][1], best[n][0], tasks) for n in sorted(best)]


def recommend(groupings: Sequence[Grouping], tolerance: float = 0.05) -> Grouping:
    """The partition with the fewest groups whose score is within `tolerance` of the best.

    The tolerance is a share of the spread between the best and the worst group count's score.
    Why not simply the best: splitting a group whose members all help each other equally leaves
    the mean score unchanged, so measurement noise alone decides between a block and its pieces;
    fewer groups means fewer models to train and serve for (almost) the same score.
    """
    if not groupings:
        raise ValueError("no groupings to choose from")
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    scores = [g.score for g in groupings]
    top, spread = max(scores), max(scores) - min(scores)
    near = [g for g in groupings if g.score >= top - tolerance * spread - 1e-12]
    return min(near, key=lambda g: g.n_groups)


def _greedy(a: np.ndarray) -> Iterator[list[list[int]]]:
    """Singletons, then repeatedly the merge of two groups that gives the best partition score."""
    part = [[i] for i in range(len(a))]
    yield [list(g) for g in part]
    while len(part) > 1:
        options = []
        for x in range(len(part)):
            for y in range(x + 1, len(part)):
                merged = [g for i, g in enumerate(part) if i not in (x, y)] + [
                    sorted(part[x] + part[y])
                ]
                options.append((partition_score(a, merged), merged))
        part = max(options, key=lambda o: o[0])[1]
        yield [list(g) for g in part]


def _named(part: list[list[int]], score: float, tasks: Sequence[str]) -> Grouping:
    # Groups listed by their first task's position, so output follows the config's task order.
    ordered = sorted((sorted(g) for g in part), key=lambda g: g[0])
    return Grouping(tuple(tuple(tasks[i] for i in g) for g in ordered), score)


def _check(affinity: np.ndarray | Sequence[Sequence[float]], tasks: Sequence[str]) -> np.ndarray:
    a = np.asarray(affinity, dtype=np.float64)
    k = len(tasks)
    if k == 0:
        raise ValueError("no tasks to group")
    if len(set(tasks)) != k:
        raise ValueError(f"task names must be unique, got {list(tasks)}")
    if a.shape != (k, k):
        raise ValueError(
            f"affinity matrix must be {k}x{k} for tasks {list(tasks)}, got shape {a.shape}"
        )
    if not np.isfinite(a).all():
        raise ValueError("affinity matrix holds non-finite values")
    return a
