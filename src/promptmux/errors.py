"""Errors a user can act on. Each message names the key, file, row or task at fault."""


class PromptmuxError(Exception):
    """Base class for every error promptmux raises on purpose."""


class ConfigError(PromptmuxError):
    """A config value is missing, of the wrong type or impossible. The message names the dotted key."""


class DataError(PromptmuxError):
    """A data file or row cannot be used. The message names the file, row and field."""


class TrainingError(PromptmuxError):
    """Training cannot go on (for example a non-finite loss). The message names the task and step."""


class BundleError(PromptmuxError):
    """A saved bundle is missing files or is inconsistent."""
