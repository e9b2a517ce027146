"""`kvcalc presets list` and `kvcalc presets show`."""

from __future__ import annotations

from typing import Annotated

import typer

from kvcalc import presets
from kvcalc.cli import KvcalcCommand, KvcalcGroup
from kvcalc.cli.common import JsonOpt, PresetsOpt, preset_names, print_json, reports_errors, warn
from kvcalc.errors import InvalidInput

app = typer.Typer(
    name="presets", cls=KvcalcGroup, help="List and show the model and GPU presets.", no_args_is_help=True, add_completion=False
)


@app.command("list", cls=KvcalcCommand)
@reports_errors
def presets_list(presets_dir: PresetsOpt = None, json_out: JsonOpt = False) -> None:
    """Every model and GPU preset at a glance (a model's layers, KV heads, head dim, attention kinds, max context, parameters and KV bytes per token; a GPU's memory and bandwidth), and where it comes from."""
    from kvcalc import documents

    listing = presets.presets_listing(presets_dir)
    for problem in listing.errors:
        warn(f"{problem.path}: {problem.reason} (not listed)")
    document = documents.PresetsDocument.of(listing)
    if json_out:
        print_json(document)
    else:
        from kvcalc import render

        render.presets_tables(document)


@app.command("show", cls=KvcalcCommand)
@reports_errors
def presets_show(
    name: Annotated[
        str | None,
        typer.Argument(
            help="A model or GPU preset name, or a file; without one, the names to choose from.",
            autocompletion=preset_names("models", "gpus"),
            show_default=False,
        ),
    ] = None,
    presets_dir: PresetsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Every field of one preset, validated, and where each value comes from: its file, derived from other fields, or the default."""
    from kvcalc import documents

    if name is None:
        if json_out:
            raise InvalidInput("presets show --json: give a preset name (`kvcalc presets list --json` lists them all)")
        listing = presets.presets_listing(presets_dir)
        for kind, entries in (("models", listing.models), ("GPUs", listing.gpus)):
            typer.echo(f"{kind} ({len(entries)}): " + ", ".join(entry.name for entry in entries))
        typer.echo("kvcalc presets show NAME shows one")
        return

    document = documents.PresetDocument.of(presets.describe(name, presets_dir))
    if json_out:
        print_json(document)
    else:
        from kvcalc import render

        render.spec_table(document)
