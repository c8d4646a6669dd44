"""Task samplers, one file per strategy, registered by name."""

from promptmux.data.samplers import proportional, temperature, uniform  # noqa: F401
from promptmux.data.samplers.base import SAMPLERS, TaskSampler

__all__ = ["SAMPLERS", "TaskSampler", "build_sampler"]


def build_sampler(strategy: str, sizes: dict[str, int], seed: int, temperature: float) -> TaskSampler:
    cls = SAMPLERS.get(strategy)
    if strategy == "temperature":
        return cls(sizes, seed, temperature=temperature)
    return cls(sizes, seed)
