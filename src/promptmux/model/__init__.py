from promptmux.model.backbone import apply_freeze, count_parameters, load_backbone, resolve_backbone
from promptmux.model.multitask import MultiTaskModel, TaskInfo, build_model

__all__ = [
    "MultiTaskModel",
    "TaskInfo",
    "apply_freeze",
    "build_model",
    "count_parameters",
    "load_backbone",
    "resolve_backbone",
]
