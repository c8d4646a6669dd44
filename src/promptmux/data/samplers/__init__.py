"""Task samplers, one file per strategy, registered by name."""

from promptmux.data.samplers import annealed, capped, performance, proportional, temperature, uniform  # noqa: F401
from promptmux.data.samplers.base import SAMPLERS, TaskSampler

__all__ = ["SAMPLERS", "TaskSampler", "build_sampler"]


def build_sampler(
    strategy: str, sizes: dict[str, int], seed: int, temperature: float, options: dict | None = None
) -> TaskSampler:
    """Instantiate a registered sampler; bad `options` raise a ConfigError naming sampling.options."""
    cls = SAMPLERS.get(strategy)
    kwargs = dict(options or {})
    if strategy == "temperature":
        kwargs["temperature"] = temperature
    try:
        return cls(sizes, seed, **kwargs)
    except (TypeError, ValueError) as e:
        if not options:
            raise
        from promptmux.errors import ConfigError

        raise ConfigError(f"sampling.options: {e}") from None
