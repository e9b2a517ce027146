"""`kvcalc decode`: time per output token and prefill time on a GPU (roofline and expected)."""

from __future__ import annotations

from typing import Annotated

import typer

from kvcalc import capacity, latency, placement, presets
from kvcalc.cli import placement_options
from kvcalc.cli.common import (
    GPU_HELP,
    ActiveParamsOpt,
    BatchOpt,
    BlockOpt,
    EfficiencyOpt,
    ExplainOpt,
    InterconnectOpt,
    JsonOpt,
    KDtypeOpt,
    KvDtypeOpt,
    ModelOpt,
    OverheadOpt,
    ParamsOpt,
    PresetsOpt,
    SeqOpt,
    SharedPrefixOpt,
    StateDtypeOpt,
    UnitsOpt,
    VDtypeOpt,
    WeightDtypeOpt,
    build_workload,
    decimal_units,
    interconnect_option,
    print_json,
    seconds_per_layer,
    single_command,
    weights_format,
    with_params,
)
from kvcalc.cli.engine_options import EngineOpt, EngineOptions, build_engine, with_engine_options
from kvcalc.cli.resident_options import AcceptanceRateOpt, NumSpeculativeTokensOpt, SpeculativeModelOpt, draft_for_decode
from kvcalc.cli.throughput_options import Economics, MaxTpotOpt, MaxTtftOpt, PriceOpt, PromptOpt
from kvcalc.errors import DoesNotFit
from kvcalc.speculative import speculative_decode


@with_engine_options(
    "hf_version", "max_cache_len", "swa_full", "ubatch", "kv_unified", "flash_attn", "max_num_batched_tokens",
    "enforce_eager",
    "vllm_version",
    "attention_backend",
    "disable_cuda_graph",
)  # fmt: skip
def decode(
    model: ModelOpt,
    gpu: Annotated[list[str], typer.Option("--gpu", "-g", help=GPU_HELP + " Repeat it for a llama.cpp split, in device order.")],
    seq: SeqOpt = 8192,
    batch: BatchOpt = 1,
    kv_dtype: KvDtypeOpt = None,
    k_dtype: KDtypeOpt = None,
    v_dtype: VDtypeOpt = None,
    state_dtype: StateDtypeOpt = None,
    weight_dtype: WeightDtypeOpt = None,
    tp: placement_options.LayerSplitTpOpt = 1,
    block_size: BlockOpt = None,
    engine: EngineOpt = "textbook",
    *,
    engine_options: EngineOptions,
    efficiency: EfficiencyOpt = None,
    overhead_ms: OverheadOpt = None,
    max_tpot_ms: MaxTpotOpt = None,
    max_ttft_ms: MaxTtftOpt = None,
    prompt: PromptOpt = None,
    price_per_hour: PriceOpt = None,
    shared_prefix: SharedPrefixOpt = 0,
    speculative_model: SpeculativeModelOpt = None,
    num_speculative_tokens: NumSpeculativeTokensOpt = None,
    acceptance_rate: AcceptanceRateOpt = None,
    interconnect: InterconnectOpt = None,
    presets_dir: PresetsOpt = None,
    params: ParamsOpt = None,
    active_params: ActiveParamsOpt = None,
    json_out: JsonOpt = False,
    explain: ExplainOpt = False,
    units: UnitsOpt = "gib",
    n_gpu_layers: placement_options.NglOpt = None,
    n_cpu_moe: placement_options.NCpuMoeOpt = None,
    tensor_split: placement_options.TensorSplitOpt = None,
    ram_bandwidth: placement_options.RamBandwidthOpt = None,
    fit_target: placement_options.FitTargetOpt = None,
    wired_limit: placement_options.WiredLimitOpt = None,
) -> None:
    """Time per output token at --batch and --seq: the roofline (bandwidth vs compute) and the expected time engines reach (the --engine's decode profile, its release and options), with the band published cases fall in, tokens/s, and prefill time.

    With --engine llamacpp and several --gpu (or --tp N: N of --gpu, whole layers each), -ngl, --n-cpu-moe or -ts, it also plans the placement (as `fit` does, keeping what you fixed) and predicts the speed of that split: each device's bytes per token over its bandwidth, the CPU's over --ram-bandwidth, and the hops. The first tables are then one GPU holding the whole model; --max-tpot-ms, --max-ttft-ms and --price-per-hour judge the placement's speed (each sequence keeping --seq tokens), each GPU billed at its own preset price.

    With --engine llamacpp the profile follows the GPU: CUDA with graphs, launch by launch on Pascal (llama.cpp captures no CUDA graph below compute capability 7.0), Metal, or ROCm/Vulkan; each recurrent-state layer of a hybrid model (Gated DeltaNet, short conv, Mamba) adds a fitted cost (--explain shows both).

    With --speculative-model, --num-speculative-tokens and --acceptance-rate: the expected time per token of speculative decoding (rounds of draft steps and one verification; docs/residents.md).

    With --max-tpot-ms or --max-ttft-ms: the largest batch that meets them and fits the engine's memory budget, and its tokens/s (exit code 1 when not even one sequence meets them); with --price-per-hour: the cost per million output and prompt tokens.
    """
    decimal = decimal_units(units)
    spec = with_params(presets.load_model(model, presets_dir), params, active_params)
    workload_tp, split_gpus = placement_options.layer_split_tp(engine, tp)
    work = build_workload(
        spec,
        seq,
        batch,
        kv_dtype,
        workload_tp,
        1,
        block_size,
        build_engine(engine, **engine_options),
        state_dtype,
        k_dtype,
        v_dtype,
        shared_prefix,
    )
    gpu_specs = placement_options.tp_devices(placement_options.load_gpus(gpu, presets_dir, engine), split_gpus)
    link = interconnect_option(interconnect)  # overrides the preset's: every figure below reads gpu.interconnect
    gpu_spec = gpu_specs[0] if link is None else gpu_specs[0].model_copy(update={"interconnect": link})
    weights_fmt = weights_format(spec, weight_dtype)
    economics = Economics(max_tpot_ms, max_ttft_ms, prompt, price_per_hour, work.seq)
    overhead = seconds_per_layer(overhead_ms)
    step = latency.decode(spec, work, gpu_spec, weights_fmt, efficiency, overhead)
    speculation = None
    drafting = draft_for_decode(spec, work, speculative_model, num_speculative_tokens, acceptance_rate, presets_dir)
    if drafting is not None:
        draft_spec, tokens, acceptance, draft_reads = drafting
        draft_step = None  # n-gram lookup: no draft model
        if draft_spec is not None:
            draft_step = latency.decode(draft_spec, work, gpu_spec, None, efficiency, overhead)
        speculation = speculative_decode(step, draft_step, tokens, acceptance, draft_reads)
    first = economics.prefill(spec, work, gpu_spec, work.batch, weights_fmt, efficiency)
    laid_out = split = None
    if placement_options.wants_plan(gpu_specs, n_gpu_layers, n_cpu_moe, tensor_split, ram_bandwidth, fit_target, wired_limit):
        devices, request, laid_out = placement_options.plan(
            spec,
            work,
            weights_fmt,
            gpu_specs,
            seq,
            None,
            fit_target,
            None,
            n_gpu_layers,
            n_cpu_moe,
            tensor_split,
            wired_limit,
            False,
        )
        split = placement_options.split_speed(spec, work, weights_fmt, laid_out, devices, gpu_specs, ram_bandwidth)
    placed = len(laid_out.devices) if laid_out is not None else 0  # the speeds are the plan's
    tokens_per_s = split.tokens_per_s if split is not None else step.expected_tokens_per_s
    prefill_on, billed = gpu_spec, None
    if laid_out is not None:
        prefill_on = placement_options.prefill_gpu(spec, work, weights_fmt, gpu_specs)
        billed = gpu_specs
    plan, cost = None, economics.cost(spec, work, prefill_on, work.batch, tokens_per_s, weights_fmt, efficiency, billed)
    if economics.searching:  # the batch memory holds under the engine's budget caps the search
        if laid_out is not None:  # llama.cpp's placement: its own fit and speed at each batch
            held = placement_options.split_memory_batch(spec, work, weights_fmt, laid_out, devices, request)
            plan = placement_options.split_throughput(
                economics, spec, work, weights_fmt, laid_out, devices, request, gpu_specs, ram_bandwidth, held
            )
        else:
            budget = capacity.budget(
                spec, work, gpu_spec.memory_bytes, weights_fmt, gpu_name=gpu_spec.name, interconnect=gpu_spec.interconnect,
                preset=gpu_spec,
            )  # fmt: skip
            held = capacity.fit(spec, work, budget, details=False).max_batch
            plan = economics.plan(spec, work, gpu_spec, held, weights_fmt, efficiency, overhead)
        cost = economics.cost(spec, work, prefill_on, plan.batch, plan.tokens_per_s, weights_fmt, efficiency, billed)
    if json_out:
        from kvcalc import documents

        print_json(
            documents.DecodeDocument(
                decode=step,
                prefill=first,
                decode_scope=placement.ONE_GPU_SCOPE if placed else None,
                placement=laid_out,
                split=split,
                throughput=plan,
                cost=cost,
                speculative=speculation,
            )
        )
    else:
        from kvcalc import render

        if placed:
            where = f"splits the layers over {placed} GPUs (-sm layer)" if placed > 1 else "places the layers (its --fit)"
            render.console.print(
                f"llama.cpp {where}: the decode and prefill tables first are for"
                f" {placement.ONE_GPU_SCOPE}; the placement's own speed follows it",
                soft_wrap=True,
            )
        render.decode_tables(step, first, decimal, explain)
        if laid_out is not None and split is not None:
            render.placement_table(laid_out, decimal, explain)
            render.split_decode_table(split, [d.name for d in laid_out.devices], explain)
        render.throughput_lines(plan, cost, explain)
        render.speculative_lines(speculation, explain)
    if plan is not None and plan.batch == 0:
        raise typer.Exit(DoesNotFit.exit_code)


app = single_command(decode)
