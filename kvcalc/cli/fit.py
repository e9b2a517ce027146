"""`kvcalc fit`: how many sequences fit per GPU, and how long a context."""

from __future__ import annotations

from typing import Annotated

import typer

from kvcalc import capacity, engines, placement, presets
from kvcalc.cli import placement_options
from kvcalc.cli.common import (
    ActiveParamsOpt,
    BatchOpt,
    BlockOpt,
    ExplainOpt,
    InterconnectOpt,
    JsonOpt,
    KDtypeOpt,
    KvDtypeOpt,
    ModelOpt,
    ParamsOpt,
    PpOpt,
    PresetsOpt,
    ReserveOpt,
    SharedPrefixOpt,
    StateDtypeOpt,
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
    with_params,
    write_plot,
)
from kvcalc.cli.engine_options import EngineOpt, EngineOptions, MemoryInUseOpt, build_engine, with_engine_options
from kvcalc.cli.resident_options import (
    KvOffloadingSizeOpt,
    LanguageOnlyOpt,
    LimitMmOpt,
    LmcacheCpuSizeOpt,
    LoraDtypeOpt,
    MaxLoraRankOpt,
    MaxLorasOpt,
    MmProcessorKwargsOpt,
    NumSpeculativeTokensOpt,
    PcieOpt,
    SkipMmProfilingOpt,
    SpeculativeModelOpt,
    cpu_tier,
    lora_terms,
    multimodal,
    with_draft,
    with_draft_pool,
)
from kvcalc.cli.throughput_options import Economics, MaxTpotOpt, MaxTtftOpt, PriceOpt, PromptOpt
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
        list[str] | None,
        typer.Option(
            "--gpu", "-g", help=f"{placement_options.GPUS_HELP} Required unless --memory.", autocompletion=preset_names("gpus")
        ),
    ] = None,
    memory: Annotated[
        str | None, typer.Option("--memory", help=f"GPU memory, overriding the preset's; required without --gpu: {SIZE_HELP}.")
    ] = None,
    kv_dtype: KvDtypeOpt = None,
    k_dtype: KDtypeOpt = None,
    v_dtype: VDtypeOpt = None,
    state_dtype: StateDtypeOpt = None,
    weight_dtype: WeightDtypeOpt = None,
    tp: placement_options.LayerSplitTpOpt = 1,
    pp: PpOpt = 1,
    interconnect: InterconnectOpt = None,
    block_size: BlockOpt = None,
    engine: EngineOpt = "textbook",
    *,
    engine_options: EngineOptions,
    utilization: UtilOpt = None,
    reserve: ReserveOpt = None,
    memory_in_use: MemoryInUseOpt = None,
    max_seqs: Annotated[
        int | None,
        typer.Option(
            "--max-seqs",
            help="A cap on concurrent sequences, for engines without one of their own (vllm: --max-num-seqs; sglang: --max-running-requests).",
        ),
    ] = None,
    max_tpot_ms: MaxTpotOpt = None,
    max_ttft_ms: MaxTtftOpt = None,
    prompt: PromptOpt = None,
    price_per_hour: PriceOpt = None,
    shared_prefix: SharedPrefixOpt = 0,
    speculative_model: SpeculativeModelOpt = None,
    num_speculative_tokens: NumSpeculativeTokensOpt = None,
    max_loras: MaxLorasOpt = None,
    max_lora_rank: MaxLoraRankOpt = None,
    lora_dtype: LoraDtypeOpt = None,
    kv_offloading_size: KvOffloadingSizeOpt = None,
    lmcache_cpu_size: LmcacheCpuSizeOpt = None,
    pcie_gb_per_s: PcieOpt = None,
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
    plot: Annotated[str | None, plot_option("the max batch vs context, with --seq and --batch")] = None,
    ram: placement_options.RamOpt = None,
    fit_target: placement_options.FitTargetOpt = None,
    fit_ctx: placement_options.FitCtxOpt = None,
    n_gpu_layers: placement_options.NglOpt = None,
    n_cpu_moe: placement_options.NCpuMoeOpt = None,
    tensor_split: placement_options.TensorSplitOpt = None,
    wired_limit: placement_options.WiredLimitOpt = None,
    no_mmap: placement_options.NoMmapOpt = False,
    mtp: placement_options.MtpOpt = False,
    mmproj: placement_options.MmprojOpt = None,
    model_draft: placement_options.DraftOpt = None,
    ram_bandwidth: placement_options.RamBandwidthOpt = None,
) -> None:
    """How many sequences of --seq tokens fit per GPU, and how long a context fits for --batch.

    Needs --gpu or --memory (one of them is required): the memory to budget.

    With --engine llamacpp, --tp N is N GPUs of --gpu holding whole layers each (llama.cpp's -sm layer; any N, whether or not it divides the heads), and several --gpu, --tp or any placement option (--ram, -ngl, --n-cpu-moe, -ts, --fit-*, a Mac's GPU), or a model that does not fit whole, it plans where llama.cpp puts each layer (its --fit): per GPU and in host RAM, the llama-server flags, and exit code 1 only when the plan does not fit. Whenever it plans, the verdict (and --json's fits, with placement_max_batch) is the plan's, the budget above it one GPU holding the whole model's, and --max-tpot-ms / --max-ttft-ms / --price-per-hour judge the plan: each sequence keeps --seq tokens (n_ctx = batch * seq), each GPU billed at its own preset price. See docs/placement.md.

    With --max-tpot-ms / --max-ttft-ms (and --gpu): the largest batch at --seq that also meets them, and its tokens/s; with --price-per-hour: what a million output and prompt tokens cost at that batch (memory's max batch without a target).

    Exit code 1 when the weights do not fit, or the batch does not fit at --seq (or at any context when --seq is not given), or no batch meets the targets; the shortfall is printed.
    """
    decimal = decimal_units(units)
    plot_path = plot_target(plot)
    spec = with_params(presets.load_model(model, presets_dir), params, active_params)
    default_seq = min(8192, spec.max_positions or 8192)
    engine_spec = build_engine(engine, **engine_options)
    workload_tp, split_gpus = placement_options.layer_split_tp(engine, tp)
    work = build_workload(
        spec,
        default_seq if seq is None else seq,
        batch,
        kv_dtype,
        workload_tp,
        pp,
        block_size,
        engine_spec,
        state_dtype,
        k_dtype,
        v_dtype,
        shared_prefix,
    )
    positive(max_seqs=max_seqs)
    own_cap = engines.profile(engine_spec).max_seqs_option
    if max_seqs is not None and own_cap is not None:
        raise InvalidInput(
            f"--engine {engine_spec.name} caps sequences with --{own_cap.replace('_', '-')}: give it in place of --max-seqs"
        )
    weights_fmt = weights_format(spec, weight_dtype)
    gpus = gpu or []
    gpu_specs = placement_options.load_gpus(gpus, presets_dir, engine)
    first = gpu_specs[0].name if len(gpu_specs) > len(gpus) else (gpus[0] if gpus else None)  # --gpu auto: the first of them
    gpu_specs = placement_options.tp_devices(gpu_specs, split_gpus)  # llama.cpp --tp N: N GPUs, whole layers each
    work, tenants, found_draft = with_draft(spec, work, speculative_model, presets_dir, num_speculative_tokens)
    tenants += lora_terms(spec, work, max_loras, max_lora_rank, lora_dtype)
    gpu_spec, budget = gpu_and_budget(
        spec, work, first, memory, weights_fmt, utilization, reserve, presets_dir, tenants, interconnect, memory_in_use
    )
    budget = multimodal(spec, work, budget, limit_mm_per_prompt, language_model_only, skip_mm_profiling, mm_processor_kwargs)
    report = capacity.fit(spec, work, budget, max_seqs)
    report = with_draft_pool(report, work, found_draft)
    economics = Economics(max_tpot_ms, max_ttft_ms, prompt, price_per_hour, work.seq)
    reused = shared_prefix or economics.target.prompt
    tier = cpu_tier(spec, work, kv_offloading_size, pcie_gb_per_s, reused, lmcache_cpu_size)
    laid_out, steps = None, None
    asked = placement_options.wants_plan(
        gpu_specs,
        ram,
        fit_target,
        fit_ctx,
        n_gpu_layers,
        n_cpu_moe,
        tensor_split,
        wired_limit,
        no_mmap,
        mtp,
        mmproj,
        model_draft,
        ram_bandwidth,
    )
    metal = any(g.backend == "metal" for g in gpu_specs)
    if asked or (engine == "llamacpp" and gpu_specs and (metal or not report.fits)):
        devices, request, laid_out = placement_options.plan(
            spec, work, weights_fmt, gpu_specs, seq, ram, fit_target, fit_ctx, n_gpu_layers, n_cpu_moe, tensor_split,
            wired_limit, no_mmap, mmproj, model_draft, presets_dir, mtp, memory_in_use,
        )  # fmt: skip
        if ram_bandwidth is not None:
            steps = placement_options.speeds(spec, work, weights_fmt, laid_out, devices, request, gpu_specs, ram_bandwidth)
    placed = len(laid_out.devices) if laid_out is not None else 0  # the verdict and speeds are the plan's
    plan = cost = placed_batch = None
    if laid_out is not None:  # each sequence keeps --seq tokens: the plan again at each batch (-np B)
        placed_batch = placement_options.split_memory_batch(spec, work, weights_fmt, laid_out, devices, request)
    if economics.asked:  # the largest batch memory holds at --seq caps the search
        speeds = economics.need_gpu(gpu_spec)
        billed = None
        if laid_out is not None and placed_batch is not None:  # llama.cpp's placement: its own fit and speed at each batch
            plan = placement_options.split_throughput(
                economics, spec, work, weights_fmt, laid_out, devices, request, gpu_specs, ram_bandwidth, placed_batch
            )
            speeds = placement_options.prefill_gpu(spec, work, weights_fmt, gpu_specs)
            billed = gpu_specs
        else:
            plan = economics.plan(spec, work, speeds, report.max_batch, weights_fmt)
        cost = economics.cost(spec, work, speeds, plan.batch, plan.tokens_per_s, weights_fmt, billed=billed)
    if json_out:
        from kvcalc import documents

        verdict = report.model_dump()
        if laid_out is not None:  # the verdict is the placement's; the rest of the report one GPU's
            verdict.update(fits=laid_out.fits, verdict="fits" if laid_out.fits else "does not fit")
        document = documents.FitDocument(
            **verdict,
            budget_scope=placement.ONE_GPU_SCOPE if laid_out is not None else None,
            placement_max_batch=placed_batch,
            model=spec.name,
            gpu=gpu_label(gpu_spec, memory),
            placement=laid_out,
            speed_steps=steps,
            throughput=plan,
            cost=cost,
            cpu_tier=tier,
        )
        print_json(document)
    else:
        from kvcalc import render

        render.fit_tables(report, spec.name, gpu_label(gpu_spec, memory), decimal, explain, laid_out is not None, placed)
        if laid_out is not None:
            render.placement_table(laid_out, decimal, explain)
            render.split_verdict(laid_out, placed_batch, request.ctx_size or laid_out.ctx_size)
        if steps is not None:
            render.speed_steps_table(steps)
        render.throughput_lines(plan, cost, explain)
        render.cpu_tier_lines(tier, decimal, explain)
    if plot_path is not None:
        from kvcalc import plots
        from kvcalc.spec import cache_dtypes

        dtype = "/".join(dict.fromkeys(d.value for d in cache_dtypes(spec, work)))  # K/V when they differ
        curve = capacity.max_batch_curve(spec, work, report, max_seqs)
        write_plot(plots.fit_chart(report, spec.name, dtype, gpu_label(gpu_spec, memory), curve), plot_path, json_out)
    if plan is not None and plan.batch == 0:
        raise typer.Exit(DoesNotFit.exit_code)
    if laid_out is not None:
        if not laid_out.fits:
            raise typer.Exit(DoesNotFit.exit_code)
    elif not (report.fits if seq is not None else report.max_context > 0):
        raise typer.Exit(DoesNotFit.exit_code)


app = single_command(fit)
