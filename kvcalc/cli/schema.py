"""`kvcalc schema`: the JSON Schema of a command's --json document."""

from __future__ import annotations

from typing import Annotated

import typer

from kvcalc.cli.common import choices, print_json, single_command
from kvcalc.errors import InvalidInput

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"  # the dialect pydantic writes
JSON_COMMANDS = ("size", "fit", "decode", "compare", "measure", "check", "presets-list", "presets-show")  # = documents.SCHEMAS


def schema(
    command: Annotated[
        str,
        typer.Argument(
            metavar="COMMAND", help=f"One of: {', '.join(JSON_COMMANDS)}.", autocompletion=choices(lambda: JSON_COMMANDS)
        ),
    ],
) -> None:
    """The JSON Schema of a command's --json document (generated from its result model; `version` marks breaking changes).

    Covers: size (the model, its KV figures and weights; what fits and the decode step with --gpu), fit (the budget per GPU, max batch, max context and the engine's log lines), decode (one decode step and the prefill), compare (a row per variant, engine or model), measure (predicted vs measured, per variant), check (each workload's figures and assertions), presets-list (every preset with its shape or memory and bandwidth) and presets-show (one preset's fields, each with its source).
    """
    from kvcalc import documents

    if command not in documents.SCHEMAS:
        raise InvalidInput(f"no command {command!r} prints JSON; choose one of {', '.join(documents.SCHEMAS)}")
    print_json({"$schema": JSON_SCHEMA_DIALECT, **documents.SCHEMAS[command].model_json_schema()})


app = single_command(schema)
