"""The two pydantic bases of every kvcalc model, and a check the models and the CLI share.

Validators are built on first use (defer_build), so a command pays only for the models it uses.
"""

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict


def first_repeated(names: Sequence[str]) -> str | None:
    """The first name given more than once, or None.

    >>> first_repeated(["mha", "gqa", "mha"]), first_repeated(["mha"])
    ('mha', None)
    """
    return next((name for name in names if names.count(name) > 1), None)


class Frozen(BaseModel):
    """An immutable value: results and breakdowns."""

    model_config = ConfigDict(frozen=True, defer_build=True)


class Strict(Frozen):
    """An immutable value read from user input or printed as a document: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
