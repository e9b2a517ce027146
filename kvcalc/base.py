"""The two pydantic bases of every kvcalc model.

Validators are built on first use (defer_build), so a command pays only for the models it uses.
"""

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """An immutable value: results and breakdowns."""

    model_config = ConfigDict(frozen=True, defer_build=True)


class Strict(Frozen):
    """An immutable value read from user input or printed as a document: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
