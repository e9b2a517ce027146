"""`kvcalc measure`: allocate the predicted KV cache on a real device and time decode (needs torch)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
import yaml

from kvcalc import presets
from kvcalc.cli.common import (
    JsonOpt,
    PresetsOpt,
    build_workload,
    plot_option,
    plot_target,
    positive,
    preset_names,
    print_json,
    single_command,
    size_option,
    tokens_option,
    write_plot,
)
from kvcalc.compare import derive, parse_variants
from kvcalc.errors import DoesNotFit, InvalidInput
from kvcalc.units import SIZE_HELP, format_bytes, format_seconds


def measure(
    gpu_flag: Annotated[bool, typer.Option("--gpu", help="Measure on the CUDA GPU (same as --device cuda).")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda\\[:N].")] = "cpu",
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Preset name or model file (default: llama3-8b).", autocompletion=preset_names("models")
        ),
    ] = "llama3-8b",
    seq: Annotated[
        int | None, tokens_option("--seq", "-s", help="Context in tokens, e.g. 8k = 8,192 (default: 8192 on GPU, 2048 on CPU).")
    ] = None,
    batch: Annotated[int | None, typer.Option("--batch", "-b", help="Sequences (default: 8 on GPU, 1 on CPU).")] = None,
    layers: Annotated[
        int | None, typer.Option("--layers", help="Measure only the first N layers (predictions scale alike).")
    ] = None,
    kv_dtype: Annotated[
        str | None, typer.Option("--kv-dtype", help="fp32, fp16 or bf16 (default: bf16 on GPU, fp32 on CPU).")
    ] = None,
    variants: Annotated[
        str | None, typer.Option("--variants", help="Comma list of attention variants to measure: mha, gqa, gqa:G, mqa, mla.")
    ] = None,
    gpu_preset: Annotated[
        str | None,
        typer.Option(
            "--gpu-preset",
            help="GPU preset for the peak-bandwidth prediction (default: recognised from the device name).",
            autocompletion=preset_names("gpus"),
        ),
    ] = None,
    max_memory: Annotated[
        str | None,
        typer.Option(
            "--max-memory", help=f"Take at most this much memory, per rank (CPU default: 4 GiB over all ranks): {SIZE_HELP}."
        ),
    ] = None,
    tp: Annotated[
        int,
        typer.Option(
            "--tp",
            help="Tensor-parallel ranks, one process each (gloo on cpu, NCCL on cuda): each allocates and times its shard."
            " CPU: at most 4 per core and 64.",
        ),
    ] = 1,
    calibrate: Annotated[
        bool,
        typer.Option(
            "--calibrate",
            help="Fit the device's streaming bandwidth and fixed cost per decode layer instead (t = bytes/BW + layers*overhead),"
            " beside the decode profiles' terms.",
        ),
    ] = False,
    save: Annotated[
        Path | None,
        typer.Option("--save", help="With --calibrate: write the fitted terms as a GPU file (.yaml) for decode --gpu FILE."),
    ] = None,
    presets_dir: PresetsOpt = None,
    json_out: JsonOpt = False,
    plot: Annotated[str | None, plot_option("predicted vs measured per variant (decode time and cache bytes)")] = None,
) -> None:
    """Allocate the predicted KV cache on a real device, check its bytes, and time SDPA GQA decode against the roofline (needs torch: pip install "kvcalc\\[measure]").

    When the cache does not fit in free memory it measures fewer layers, then a smaller batch, and says so. Out of memory is reported (exit 1; with --json, a document with "fits": false) after freeing every tensor.
    """
    from kvcalc import documents, render
    from kvcalc.measure.runner import measure as run_measure

    plot_path = plot_target(plot)  # --plot: checked before any tensor is allocated
    device = "cuda" if gpu_flag else device
    if save is not None and not calibrate:
        raise InvalidInput("--save writes a calibration: give --calibrate")
    if calibrate:
        calibrate_device(device, max_memory, save, gpu_preset, presets_dir, json_out, plot_path is not None)
        return
    on_gpu = device.startswith("cuda")
    positive(seq=seq, batch=batch, layers=layers, tp=tp)
    spec = presets.load_model(model, presets_dir)
    default_dtype = "bf16" if on_gpu else "fp32"
    work = build_workload(
        spec, seq or (8192 if on_gpu else 2048), batch or (8 if on_gpu else 1), kv_dtype or default_dtype, 1, 1, None
    )
    subjects = [(spec.name, spec)]
    if variants:
        subjects = [(v.name, derive(spec, v)) for v in parse_variants(variants.split(","))]
    peak = presets.load_gpu(gpu_preset, presets_dir) if gpu_preset else None
    limit = size_option("max-memory", max_memory) if max_memory else None
    with render.progress(enabled=not json_out) as step:
        try:
            report = run_measure(subjects, work, device, layers, limit, peak, step, tp)
        except DoesNotFit as exc:  # an answer, as size and fit give theirs: --json prints it too
            if json_out:
                print_json(documents.MeasureDoesNotFitDocument(model=spec.name, device=device.partition(":")[0], reason=str(exc)))
            raise
    if report is None:  # a rank of a torchrun launch other than 0: rank 0 prints every rank's figures
        return
    if json_out:
        print_json(documents.MeasureDocument.of(report))
    else:
        render.measure_tables(report, decimal=False)
    if plot_path is not None:  # --plot: the figure of the report
        from kvcalc import plots

        write_plot(plots.measure_chart(report), plot_path, json_out)


def calibrate_device(
    device: str, max_memory: str | None, save: Path | None, gpu_preset: str | None, presets_dir: PresetsOpt, json_out: bool,
    plotted: bool,
) -> None:  # fmt: skip
    """measure --calibrate: fit, print beside the decode profiles' terms, and --save a GPU file."""
    from kvcalc import render
    from kvcalc.measure.calibrate import gpu_file, profile_terms
    from kvcalc.measure.runner import calibrate

    if plotted:
        raise InvalidInput("--plot draws a measure run, not a calibration: drop --plot or --calibrate")
    if save is not None and save.suffix.lower() not in (".yaml", ".yml"):
        raise InvalidInput(f"--save {str(save)!r}: give a file ending in .yaml")
    if save is not None and not save.parent.is_dir():  # checked before the calibration runs, as --plot is
        raise InvalidInput(f"--save {str(save)!r}: folder {str(save.parent)!r} does not exist")
    preset = presets.load_gpu(gpu_preset, presets_dir) if gpu_preset else None
    limit = size_option("max-memory", max_memory) if max_memory else None
    with render.progress(enabled=not json_out) as step:
        result = calibrate(device, limit, step)
    if save is not None:
        name = save.stem if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", save.stem) else "calibrated"
        spec = gpu_file(result, name)
        try:
            save.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True), sort_keys=False), encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"--save {str(save)!r}: {exc.strerror}") from None
    if json_out:
        print_json({"calibration": result.model_dump(mode="json"), "saved": str(save) if save else None})
        return
    typer.echo(
        f"calibration on {result.device_name} ({result.device}, {result.threads} threads, torch {result.torch_version},"
        f" load {result.load_average:.1f}{', busy' if result.busy else ''})"
    )
    typer.echo("  t = bytes / bandwidth + layers * overhead, least squares over the steady (lower-quartile) times:")
    for point in result.points:
        typer.echo(
            f"    {point.layers:>3} layers, {format_bytes(point.bytes_read):>11}: {format_seconds(point.figure.steady_seconds):>9}"
            f" measured, {format_seconds(point.fitted_seconds):>9} fitted (spread {point.figure.spread:.2f}x)"
        )
    typer.echo(f"  {result.matmul_dtype} matmul: {result.matmul_flops_per_s / 1e9:.3g} GFLOP/s")
    width = max(len(row[0]) for row in profile_terms(result, preset))
    typer.echo(f"  {'':<{width}}  {'streaming bandwidth':<28}  overhead per layer")
    for source, stream, overhead in profile_terms(result, preset):
        typer.echo(f"  {source:<{width}}  {stream:<28}  {overhead}")
    for line in [*result.why, *result.notes]:
        typer.echo(f"  note: {line}")
    if save is not None:
        typer.echo(f"saved: {save} (use: kvcalc decode --gpu {save})")


app = single_command(measure)
