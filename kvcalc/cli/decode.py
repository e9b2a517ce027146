"""`kvcalc decode`: time per output token and prefill time on a GPU (roofline and expected)."""

from __future__ import annotations

from typing import Annotated, get_args

import typer

from kvcalc import latency, presets
from kvcalc.cli import placement_options
from kvcalc.cli.common import (
    GPU_HELP,
    BatchOpt,
    BlockOpt,
    EfficiencyOpt,
    ExplainOpt,
    JsonOpt,
    KDtypeOpt,
    KvDtypeOpt,
    ModelOpt,
    OverheadOpt,
    PresetsOpt,
    SeqOpt,
    StateDtypeOpt,
    TpOpt,
    UnitsOpt,
    VDtypeOpt,
    WeightDtypeOpt,
    build_workload,
    decimal_units,
    print_json,
    seconds_per_layer,
    single_command,
    weights_format,
)
from kvcalc.cli.engine_options import EngineOpt, EngineOptions, build_engine, with_engine_options
from kvcalc.errors import InvalidInput
from kvcalc.spec import Interconnect

INTERCONNECTS: tuple[str, ...] = get_args(Interconnect)
InterconnectOpt = Annotated[
    str | None,
    typer.Option(
        "--interconnect",
        help="The link TP ranks all-reduce over: nvlink, xgmi, pcie-p2p or pcie (default: the GPU preset's interconnect, else pcie).",
    ),
]


def interconnect_of(text: str | None) -> Interconnect | None:
    """--interconnect as given, checked."""
    if text is None:
        return None
    if text.lower() not in INTERCONNECTS:
        raise InvalidInput(f"--interconnect {text!r}: choose {', '.join(INTERCONNECTS[:-1])} or {INTERCONNECTS[-1]}")
    return text.lower()  # type: ignore[return-value]


@with_engine_options(
    "hf_version", "max_cache_len", "swa_full", "ubatch", "kv_unified", "flash_attn", "max_num_batched_tokens",
    "enforce_eager",
    "vllm_version",
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
    tp: TpOpt = 1,
    block_size: BlockOpt = None,
    engine: EngineOpt = "textbook",
    *,
    engine_options: EngineOptions,
    efficiency: EfficiencyOpt = None,
    overhead_ms: OverheadOpt = None,
    interconnect: InterconnectOpt = None,
    presets_dir: PresetsOpt = None,
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

    With --engine llamacpp and several --gpu, -ngl, --n-cpu-moe or -ts, it also plans the placement (as `fit` does, keeping what you fixed) and predicts the speed of that split: each device's bytes per token over its bandwidth, the CPU's over --ram-bandwidth, and the hops.
    """
    decimal = decimal_units(units)
    spec = presets.load_model(model, presets_dir)
    work = build_workload(
        spec,
        seq,
        batch,
        kv_dtype,
        tp,
        1,
        block_size,
        build_engine(engine, **engine_options),
        state_dtype,
        k_dtype,
        v_dtype,
    )
    gpu_specs = placement_options.load_gpus(gpu, presets_dir, engine)
    gpu_spec = gpu_specs[0]
    weights_fmt = weights_format(spec, weight_dtype)
    step = latency.decode(
        spec, work, gpu_spec, weights_fmt, efficiency, seconds_per_layer(overhead_ms), interconnect=interconnect_of(interconnect)
    )
    first = latency.prefill(spec, work, gpu_spec, weights_fmt, 1.0 if efficiency is None else efficiency)
    laid_out = split = None
    if placement_options.wants_plan(gpu_specs, n_gpu_layers, n_cpu_moe, tensor_split, ram_bandwidth, fit_target, wired_limit):
        devices, _, laid_out = placement_options.plan(
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
    if json_out:
        from kvcalc import documents

        print_json(documents.DecodeDocument(decode=step, prefill=first, placement=laid_out, split=split))
    else:
        from kvcalc import render

        render.decode_tables(step, first, decimal, explain)
        if laid_out is not None and split is not None:
            render.placement_table(laid_out, decimal, explain)
            render.split_decode_table(split, [d.name for d in laid_out.devices], explain)


app = single_command(decode)
