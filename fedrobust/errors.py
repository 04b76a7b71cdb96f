"""User-facing errors: one line that says what is wrong and how to fix it."""


class FedrobustError(Exception):
    """An error caused by the user's input or environment, printed without a traceback."""


class ConfigError(FedrobustError):
    """A configuration value is unknown, of the wrong type, or impossible."""


class DataError(FedrobustError):
    """A dataset file is missing, corrupt, or unsupported."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where a command must stop what it started; the command exits 128 + 15."""
