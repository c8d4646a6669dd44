from promptmux.config.load import apply_override, config_from_dict, config_to_dict, load_config
from promptmux.config.schema import TASK_METRICS, Config, DataConfig, TaskConfig

__all__ = [
    "Config",
    "DataConfig",
    "TASK_METRICS",
    "TaskConfig",
    "apply_override",
    "config_from_dict",
    "config_to_dict",
    "load_config",
]
