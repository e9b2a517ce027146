"""`kvcalc presets list` and `kvcalc presets show`."""

from __future__ import annotations

from typing import Annotated

import typer

from kvcalc import presets
from kvcalc.cli import KvcalcCommand, KvcalcGroup
from kvcalc.cli.common import JsonOpt, PresetsOpt, preset_names, print_json, reports_errors, warn
from kvcalc.spec import ModelSpec

app = typer.Typer(
    name="presets", cls=KvcalcGroup, help="List and show the model and GPU presets.", no_args_is_help=True, add_completion=False
)


@app.command("list", cls=KvcalcCommand)
@reports_errors
def presets_list(presets_dir: PresetsOpt = None, json_out: JsonOpt = False) -> None:
    """Every model and GPU preset, and where it comes from (shipped or a user folder)."""
    from kvcalc import documents

    listing = presets.presets_listing(presets_dir)
    for problem in listing.errors:
        warn(f"{problem.path}: {problem.reason} (not listed)")
    document = documents.PresetsDocument(**listing.model_dump())
    if json_out:
        print_json(document)
    else:
        from kvcalc import render

        render.presets_tables(document.model_dump(mode="json", exclude={"version", "errors"}))


@app.command("show", cls=KvcalcCommand)
@reports_errors
def presets_show(
    name: Annotated[
        str, typer.Argument(help="A model or GPU preset name, or a file.", autocompletion=preset_names("models", "gpus"))
    ],
    presets_dir: PresetsOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One preset's fields, validated, with its source."""
    spec = presets.load_any(name, presets_dir)
    if json_out:
        from kvcalc import documents

        print_json(documents.PresetDocument(kind="model" if isinstance(spec, ModelSpec) else "gpu", spec=spec))
    else:
        from kvcalc import render

        render.spec_table(spec.model_dump(mode="json", exclude_none=True))
