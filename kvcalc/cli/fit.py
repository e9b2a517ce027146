"""`kvcalc fit`: how many sequences fit per GPU, and how long a context."""

from __future__ import annotations

from typing import Annotated

import typer

from kvcalc import capacity, engines, presets
from kvcalc.cli.common import (
    GPU_HELP,
    BatchOpt,
    BlockOpt,
    ExplainOpt,
    InterconnectOpt,
    JsonOpt,
    KDtypeOpt,
    KvDtypeOpt,
    ModelOpt,
    PpOpt,
    PresetsOpt,
    ReserveOpt,
    StateDtypeOpt,
    TpOpt,
    UnitsOpt,
    UtilOpt,
    VDtypeOpt,
    WeightDtypeOpt,
    build_workload,
    decimal_units,
    gpu_and_budget,
    gpu_label,
    plot_option,
    plot_target,
    positive,
    preset_names,
    print_json,
    single_command,
    tokens_option,
    weights_format,
    write_plot,
)
from kvcalc.cli.engine_options import EngineOpt, EngineOptions, build_engine, with_engine_options
from kvcalc.errors import DoesNotFit, InvalidInput
from kvcalc.units import SIZE_HELP, TOKENS_HELP


@with_engine_options()
def fit(
    model: ModelOpt,
    seq: Annotated[
        int | None,
        tokens_option(
            "--seq", "-s", help=f"Context for max batch (default: 8192, or the model's max if smaller): {TOKENS_HELP}."
        ),
    ] = None,
    batch: BatchOpt = 1,
    gpu: Annotated[
        str | None, typer.Option("--gpu", "-g", help=f"{GPU_HELP} Required unless --memory.", autocompletion=preset_names("gpus"))
    ] = None,
    memory: Annotated[
        str | None, typer.Option("--memory", help=f"GPU memory, overriding the preset's; required without --gpu: {SIZE_HELP}.")
    ] = None,
    kv_dtype: KvDtypeOpt = None,
    k_dtype: KDtypeOpt = None,
    v_dtype: VDtypeOpt = None,
    state_dtype: StateDtypeOpt = None,
    weight_dtype: WeightDtypeOpt = None,
    tp: TpOpt = 1,
    pp: PpOpt = 1,
    interconnect: InterconnectOpt = None,
    block_size: BlockOpt = None,
    engine: EngineOpt = "textbook",
    *,
    engine_options: EngineOptions,
    utilization: UtilOpt = None,
    reserve: ReserveOpt = None,
    max_seqs: Annotated[
        int | None,
        typer.Option(
            "--max-seqs",
            help="A cap on concurrent sequences, for engines without one of their own (vllm: --max-num-seqs; sglang: --max-running-requests).",
        ),
    ] = None,
    presets_dir: PresetsOpt = None,
    json_out: JsonOpt = False,
    explain: ExplainOpt = False,
    units: UnitsOpt = "gib",
    plot: Annotated[str | None, plot_option("the max batch vs context, with --seq and --batch")] = None,
) -> None:
    """How many sequences of --seq tokens fit per GPU, and how long a context fits for --batch.

    Needs --gpu or --memory (one of them is required): the memory to budget.

    Exit code 1 when the weights do not fit, or the batch does not fit at --seq (or at any context when --seq is not given); the shortfall is printed.
    """
    decimal = decimal_units(units)
    plot_path = plot_target(plot)
    spec = presets.load_model(model, presets_dir)
    default_seq = min(8192, spec.max_positions or 8192)
    engine_spec = build_engine(engine, **engine_options)
    work = build_workload(
        spec, default_seq if seq is None else seq, batch, kv_dtype, tp, pp, block_size, engine_spec, state_dtype, k_dtype, v_dtype
    )
    positive(max_seqs=max_seqs)
    own_cap = engines.profile(engine_spec).max_seqs_option
    if max_seqs is not None and own_cap is not None:
        raise InvalidInput(
            f"--engine {engine_spec.name} caps sequences with --{own_cap.replace('_', '-')}: give it in place of --max-seqs"
        )
    weights_fmt = weights_format(spec, weight_dtype)
    gpu_spec, budget = gpu_and_budget(spec, work, gpu, memory, weights_fmt, utilization, reserve, presets_dir, interconnect)
    report = capacity.fit(spec, work, budget, max_seqs)
    if json_out:
        from kvcalc import documents

        print_json(documents.FitDocument(**report.model_dump(), model=spec.name, gpu=gpu_label(gpu_spec, memory)))
    else:
        from kvcalc import render

        render.fit_tables(report, spec.name, gpu_label(gpu_spec, memory), decimal, explain)
    if plot_path is not None:
        from kvcalc import plots

        dtype = (work.kv_dtype or spec.dtype).value
        write_plot(plots.fit_chart(report, spec.name, dtype, gpu_label(gpu_spec, memory)), plot_path, json_out)
    if not (report.fits if seq is not None else report.max_context > 0):
        raise typer.Exit(DoesNotFit.exit_code)


app = single_command(fit)
