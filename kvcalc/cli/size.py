"""`kvcalc size`: KV-cache bytes, the weights, and with a GPU what fits and the decode time (roofline and expected)."""

from __future__ import annotations

from typing import Annotated

import typer

from kvcalc import presets
from kvcalc.cli.common import (
    ActiveParamsOpt,
    BatchOpt,
    BlockOpt,
    EfficiencyOpt,
    ExplainOpt,
    GpuOpt,
    InterconnectOpt,
    JsonOpt,
    KDtypeOpt,
    KvDtypeOpt,
    MemoryOpt,
    ModelOpt,
    OverheadOpt,
    ParamsOpt,
    PpOpt,
    PresetsOpt,
    ReserveOpt,
    SeqOpt,
    SharedPrefixOpt,
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
    hardware_given,
    plot_option,
    plot_target,
    print_json,
    seconds_per_layer,
    single_command,
    weights_format,
    with_params,
    write_plot,
)
from kvcalc.cli.engine_options import EngineOpt, EngineOptions, build_engine, with_engine_options
from kvcalc.cli.resident_options import (
    LanguageOnlyOpt,
    LimitMmOpt,
    MmProcessorKwargsOpt,
    NumSpeculativeTokensOpt,
    SkipMmProfilingOpt,
    SpeculativeModelOpt,
    multimodal,
    with_draft,
    with_draft_pool,
)
from kvcalc.errors import DoesNotFit
from kvcalc.kvcache import estimate_kv
from kvcalc.weights import count_params, stored_mtp, unknown_weights, weight_bytes


@with_engine_options()
def size(
    model: ModelOpt,
    seq: SeqOpt,
    batch: BatchOpt = 1,
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
    gpu: GpuOpt = None,
    memory: MemoryOpt = None,
    utilization: UtilOpt = None,
    reserve: ReserveOpt = None,
    efficiency: EfficiencyOpt = None,
    overhead_ms: OverheadOpt = None,
    shared_prefix: SharedPrefixOpt = 0,
    speculative_model: SpeculativeModelOpt = None,
    num_speculative_tokens: NumSpeculativeTokensOpt = None,
    limit_mm_per_prompt: LimitMmOpt = None,
    language_model_only: LanguageOnlyOpt = False,
    skip_mm_profiling: SkipMmProfilingOpt = False,
    mm_processor_kwargs: MmProcessorKwargsOpt = None,
    presets_dir: PresetsOpt = None,
    params: ParamsOpt = None,
    active_params: ActiveParamsOpt = None,
    json_out: JsonOpt = False,
    explain: ExplainOpt = False,
    units: UnitsOpt = "gib",
    plot: Annotated[
        str | None, plot_option("the KV cache vs context (per layer kind for mixed models; with --gpu, the KV budget)")
    ] = None,
) -> None:
    """KV-cache bytes per token, per sequence and for the batch; the weights; with --gpu or --memory, what fits and the decode bound.

    Example: kvcalc size --model llama3-8b --seq 8k --batch 16 --kv-dtype fp8
    """
    decimal = decimal_units(units)
    plot_path = plot_target(plot)
    spec = with_params(presets.load_model(model, presets_dir), params, active_params)
    engine_spec = build_engine(engine, **engine_options)
    work = build_workload(
        spec, seq, batch, kv_dtype, tp, pp, block_size, engine_spec, state_dtype, k_dtype, v_dtype, shared_prefix
    )
    work, tenants, found_draft = with_draft(spec, work, speculative_model, presets_dir, num_speculative_tokens)
    weights_fmt = weights_format(spec, weight_dtype)
    params = count_params(spec)
    weights = weight_bytes(params, weights_fmt) if params else None
    report = step = None
    if hardware_given(gpu, memory):
        from kvcalc import capacity, latency  # only with a GPU: `size` alone prints the KV cache and weights

        gpu_spec, budget = gpu_and_budget(
            spec, work, gpu, memory, weights_fmt, utilization, reserve, presets_dir, tenants, interconnect
        )
        budget = multimodal(spec, work, budget, limit_mm_per_prompt, language_model_only, skip_mm_profiling, mm_processor_kwargs)
        work = work.model_copy(update={"engine": budget.engine})  # the engine's defaults on this GPU
        report = capacity.fit(spec, work, budget)
        report = with_draft_pool(report, work, found_draft)
        if gpu_spec is not None:
            step = latency.decode(spec, work, gpu_spec, weights_fmt, efficiency, seconds_per_layer(overhead_ms))
    kv = estimate_kv(spec, work)
    if json_out:
        from kvcalc import size_document

        weights_doc = size_document.Weights(
            dtype=weights_fmt.dtype,
            embeddings_dtype=weights_fmt.other_than_layers(weights_fmt.embeddings),
            experts_dtype=weights_fmt.other_than_layers(weights_fmt.experts),
            bytes=weights,
            params=params,
            mtp=stored_mtp(spec, weights_fmt),
        )
        print_json(size_document.size_json(spec, kv, weights_doc, report, step))
    else:
        from kvcalc import render

        render.kv_table(kv, decimal, explain)
        render.weights_line(params, weights, weights_fmt, decimal, unknown_weights(spec))
        render.mtp_line(stored_mtp(spec, weights_fmt), decimal, explain)
        if report is not None:
            render.fit_tables(report, spec.name, gpu_label(gpu_spec, memory), decimal, explain)
        if step is not None:
            render.decode_tables(step, None, decimal, explain)
    if plot_path is not None:
        from kvcalc import plots

        label = gpu_label(gpu_spec, memory) if report is not None else None
        write_plot(plots.size_chart(spec, work, kv, report, label, decimal), plot_path, json_out)
    if report is not None and not report.fits:
        raise typer.Exit(DoesNotFit.exit_code)


app = single_command(size)
