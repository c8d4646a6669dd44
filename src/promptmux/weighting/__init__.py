"""Loss weighting strategies. Each lives in its own file and registers itself by name."""

from promptmux.weighting import (  # noqa: F401  (registration)
    cagrad,
    dwa,
    equal,
    famo,
    gradnorm,
    loss_driven,
    mgda,
    pcgrad,
    priority,
    static,
    uncertainty,
)
from promptmux.weighting.base import WEIGHTINGS, GradientWeighting, Weighting

__all__ = ["WEIGHTINGS", "GradientWeighting", "Weighting", "build_weighting"]


def build_weighting(strategy: str, tasks: list[str], task_weights: dict[str, float], options: dict) -> Weighting:
    """Instantiate a registered strategy; bad options raise a ConfigError naming weighting.options."""
    from promptmux.errors import ConfigError

    cls = WEIGHTINGS.get(strategy)
    try:
        return cls(tasks, task_weights, **options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"weighting.options: {e}") from None
