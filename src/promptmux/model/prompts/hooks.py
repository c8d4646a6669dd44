"""Per-pass tensors for encoder hooks, kept per thread (deep and prefix prompts use them).

Per-layer prompts reach the encoder through hooks on its modules: a layer's input (`deep`) or its
attention's key and value projections (`prefix`). The server may run passes of one model in
several threads at once, so the tensors of the pass running in a thread are thread-local, and the
hooks stay installed (a no-op outside a pass with prompts) rather than added and removed per pass.
Not compatible with gradient checkpointing, whose recomputation runs outside the pass.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import torch
from torch import nn

_ACTIVE = threading.local()


def active(module: nn.Module) -> torch.Tensor | None:
    """The tensor set for `module` by the pass running in this thread, or None."""
    return (getattr(_ACTIVE, "by_module", None) or {}).get(module)


def ensure_hook(module: nn.Module, name: str, install: Callable[[nn.Module], object]) -> None:
    """Install a hook once per module: `install(module)` runs unless the `name` marker is set."""
    if not getattr(module, name, False):
        install(module)
        setattr(module, name, True)


@contextlib.contextmanager
def activating(by_module: dict[nn.Module, torch.Tensor]) -> Iterator[None]:
    """Within the context, `active(m)` returns `by_module[m]` in this thread (nesting restores)."""
    previous = getattr(_ACTIVE, "by_module", None)
    _ACTIVE.by_module = by_module
    try:
        yield
    finally:
        _ACTIVE.by_module = previous
