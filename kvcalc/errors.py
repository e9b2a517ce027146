"""Domain errors. The core raises these; only the CLI turns them into exit codes."""


class KvcalcError(Exception):
    """Base of every error kvcalc reports to a user as one line (exit code 2)."""

    exit_code = 2


class InvalidInput(KvcalcError):
    """A flag or a value that cannot be used (zero batch, unknown dtype, bad TP split)."""


class PresetNotFound(KvcalcError):
    """No shipped or user preset has this name."""


class InvalidPreset(KvcalcError):
    """A preset file that does not parse or does not validate."""


class DoesNotFit(KvcalcError):
    """A well-formed question whose answer is no: exit code 1, so CI can tell it from bad input."""

    exit_code = 1


class MeasureUnavailable(KvcalcError):
    """torch or the requested device is missing."""
