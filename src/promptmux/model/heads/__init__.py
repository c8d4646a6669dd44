"""Task heads, one file per task type, registered by type name."""

from promptmux.model.heads import classification, multilabel, regression, token  # noqa: F401
from promptmux.model.heads.base import HEADS, Head, head_extra

__all__ = ["HEADS", "Head", "head_extra"]
