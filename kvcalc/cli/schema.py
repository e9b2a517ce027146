"""`kvcalc schema`: the JSON Schema of a command's --json document."""

from __future__ import annotations

from typing import Annotated

import typer

from kvcalc.cli.common import print_json, single_command
from kvcalc.errors import InvalidInput

JSON_COMMANDS = ("size", "fit", "decode", "compare", "measure", "check", "presets-list", "presets-show")  # = documents.SCHEMAS


def schema(
    command: Annotated[str, typer.Argument(help=f"One of: {', '.join(JSON_COMMANDS)}.")],
) -> None:
    """The JSON Schema of a command's --json document (generated from its result model; `version` marks breaking changes)."""
    from kvcalc import documents

    if command not in documents.SCHEMAS:
        raise InvalidInput(f"no command {command!r} prints JSON; choose one of {', '.join(documents.SCHEMAS)}")
    print_json(documents.SCHEMAS[command].model_json_schema())


app = single_command(schema)
