"""promptmux: multi-task fine-tuning of one pretrained language model, with prompts as the task switch."""

from promptmux.errors import ConfigError, DataError, PromptmuxError, TrainingError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "PromptmuxError", "TrainingError", "Predictor", "__version__"]


def __getattr__(name: str):
    # Imported lazily so `import promptmux` stays cheap (no torch/transformers import).
    if name == "Predictor":
        from promptmux.serve.predictor import Predictor

        return Predictor
    raise AttributeError(name)
