"""The expected decode time: its calibration against published cases (leave one source out), its
terms, its band, the engine options that change it, and its invariants."""

from __future__ import annotations

import json
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc import Workload, decode_fit
from kvcalc.decode_profiles import (
    AT_PEAK,
    COMPUTE_EFFICIENCY,
    TRITON_MLA,
    band,
    format_class,
    mla_decode_kernel,
    prefill_key,
    profile_for,
    quant_floor_key,
    streamed_bandwidth,
    terms,
)
from kvcalc.engines import PROFILES
from kvcalc.errors import InvalidInput
from kvcalc.latency import all_reduce_bytes, decode, expected_seconds, tp_comm_seconds
from kvcalc.presets import load_gpu, load_model
from kvcalc.spec import Engine
from kvcalc.units import DType, parse_engine_version
from kvcalc.weights import WeightFormat
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _calibration():  # noqa: ANN202
    """benchmarks/decode_calibration.py, which fits the constants and writes docs/benchmarks.md's section."""
    return load_script("benchmarks/decode_calibration.py")


calibration = _calibration()
CASES = calibration.load_cases()
SCOPE = calibration.in_scope(CASES)


@pytest.fixture(scope="module")
def predictions() -> list:
    return calibration.loso(CASES)


def test_docs_and_shipped_constants_are_what_the_script_makes_of_the_fixture(predictions: list) -> None:
    # kvcalc/decode_fit.py holds the fit on every case; docs/benchmarks.md the LOSO table of the same fixture
    doc = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert calibration.refreshed(doc, calibration.section(CASES, predictions)) == doc, (
        "python benchmarks/decode_calibration.py --write"
    )
    shipped = (ROOT / "kvcalc" / "decode_fit.py").read_text(encoding="utf-8")
    assert calibration.constants_module(CASES, predictions) == shipped, "python benchmarks/decode_calibration.py --write"


def test_every_held_out_prediction_comes_from_a_fit_without_its_source(predictions: list) -> None:
    assert len(predictions) == len(SCOPE) and {p.case.id for p in predictions} == {c.id for c in SCOPE}
    group = next(p.case.group for p in predictions if p.case.group.startswith("qwen2.5-docs-speedbench-vllm"))
    held = calibration.fit([c for c in SCOPE if c.group != group])
    for p in predictions:
        if p.case.group == group:
            assert p.held_out == pytest.approx(calibration.predict(p.case, held), rel=1e-9)


def test_the_lean_table_is_the_signed_median_of_held_out_errors_by_slice(predictions: list) -> None:
    # docs/benchmarks.md "Where the held-out error of vllm leans": each row's signed median is
    # predicted / measured - 1 of exactly the held-out cases of its slice; small slices are left out
    rows = [line.split(" | ") for line in calibration._lean(predictions, "vllm") if line.startswith("| weights read")]
    assert rows, "the lean table has a row by model size"
    vllm = [p for p in predictions if calibration.band_engine(p.case) == "vllm"]
    for row in rows:
        value, cases, signed = row[1], int(row[2]), row[4]
        subset = [p for p in vllm if calibration._size(p.case) == value]
        assert len(subset) == cases >= calibration.LEAN_MIN_CASES
        assert signed == f"{calibration._percentile([p.loso_error for p in subset], 0.5):+.1%}"


def test_the_fixture_covers_what_people_serve_with() -> None:
    engines = {e: sum(calibration.band_engine(c) == e for c in SCOPE) for e in ("vllm", "sglang", "transformers", "llamacpp")}
    assert engines["vllm"] >= 100 and engines["sglang"] >= 60 and engines["transformers"] >= 30 and engines["llamacpp"] >= 100
    assert len(SCOPE) >= 400 and len({c.gpu for c in SCOPE}) >= 12
    assert {c.tp for c in SCOPE} >= {1, 2, 4, 8}
    assert {c.format_class for c in SCOPE} >= {"16-bit", "fp8", "int8", "int4", "fp4", "ggml-4to6bit"}


def test_every_case_has_its_source_and_every_exclusion_its_reason() -> None:
    for case in CASES:
        assert case.url.startswith("https://") and case.group, case.id
        if case.excluded_because is None:
            assert load_gpu(case.gpu).bandwidth_bytes_per_s > 0 and case.weights_read_bytes > 0, case.id
            assert case.tokens_per_s > 0 and case.layers > 0 and case.mode and case.engine_key, case.id
    assert len({c.id for c in CASES}) == len(CASES)


def test_kvcalc_counts_the_bytes_the_collected_cases_read() -> None:
    # the importer takes each case's bytes from kvcalc's own decode: recounting gives the same bytes
    checked = 0
    for case in SCOPE:
        if case.origin != "collected" or case.format_class != "16-bit" or case.weight_format not in ("bf16", "fp16"):
            continue
        model = load_model(case.preset)
        step = decode(model, Workload(seq=case.avg_context, tp=case.tp), load_gpu(case.gpu))
        assert step.expected.weights_read_bytes == case.weights_read_bytes, case.id
        assert step.expected.bytes_moved - step.expected.weights_read_bytes == case.kv_read_bytes, case.id
        checked += 1
    assert checked >= 50


ENGINE_OPTIONS = {"vllm": "vllm", "sglang": "sglang", "transformers": "hf", "trtllm": "trtllm"}


def _stated_release(version: str | None) -> tuple[int, ...] | None:
    """A case's vLLM release as the importer reads it: None where the source states none ("not stated")."""
    try:
        return parse_engine_version(version) if version else None
    except InvalidInput:
        return None


def test_kvcalc_engines_pick_the_profile_their_cases_were_fitted_under() -> None:
    checked = 0
    for case in SCOPE:
        name = ENGINE_OPTIONS.get(case.engine)
        if name is None or _stated_release(case.engine_version) is None and name == "vllm":
            continue
        options = {}
        if name == "vllm":
            options = {"vllm_version": ".".join(map(str, _stated_release(case.engine_version) or ()))}
            # eager: the flag, or a release that ran eager on its own (before graphs; 0.4 past 8k tokens)
            options |= {"enforce_eager": True} if case.enforce_eager or case.mode == "eager" else {}
        profile = PROFILES[name].decode_profile(load_gpu(case.gpu), Engine(name=name, **options))
        assert (profile.mode, profile.engine_key) == (case.mode, case.engine_key), case.id
        checked += 1
    assert checked >= 300


def test_kvcalc_decode_predicts_a_case_as_the_calibration_does() -> None:
    # one formula: kvcalc.latency's expected time with the shipped constants = the script's prediction
    table = calibration.fit(SCOPE)
    case = next(c for c in SCOPE if c.engine == "vllm" and c.engine_key == "vllm-v0" and c.tp == 2 and c.weight_format == "bf16")
    engine = Engine(name="vllm", vllm_version=case.engine_version)
    step = decode(load_model(case.preset), Workload(seq=case.avg_context, tp=case.tp, engine=engine), load_gpu(case.gpu),
                  interconnect=case.interconnect)  # fmt: skip
    predicted = 1 / (1 / calibration.predict(case, table) - calibration._prefill(case, table))
    assert step.expected_tokens_per_s == pytest.approx(predicted, rel=2e-3)
    assert step.expected.tp_comm_seconds > 0 and step.expected.interconnect == "nvlink"


def test_every_shipped_constant_names_its_cases() -> None:
    tables = (
        decode_fit.FORMAT_INVERSE, decode_fit.KERNEL_INVERSE, decode_fit.ENGINE_KERNEL_INVERSE, decode_fit.GPU_INVERSE,
        decode_fit.ARCHITECTURE_INVERSE, decode_fit.KV_REPEAT_INVERSE, decode_fit.PYTHON_EAGER_LAYER_S,
        decode_fit.ROCM_MOE_LAYER_S, {k: v for k, v in decode_fit.SM_BYTES_PER_CLOCK.items() if v},
        decode_fit.QUANT_LAYER_FLOOR_S, decode_fit.PREFILL_INVERSE,
    )  # fmt: skip
    prefixes = ("format", "kernel", "own", "gpu", "architecture", "repeat", "python", "rocm", "cap", "floor", "prefill")
    for prefix, table in zip(prefixes, tables, strict=True):
        for key in table:
            assert "cases from" in decode_fit.SOURCES[f"{prefix} {key}"], key
    for key in decode_fit.MODE_STEP_S:
        assert "cases from" in decode_fit.SOURCES[f"step {key}"]


@pytest.mark.parametrize(
    ("engine", "preset", "options", "seq"),
    [
        ("transformers", "qwen2.5-7b", {}, 31_744),  # repeat_kv: 28 query heads over 4 KV heads
        ("vllm", "qwen2.5-7b", {"vllm_version": "0.4.2"}, 31_744),  # eager past 8k tokens: Python dispatch per layer
    ],
)
def test_kvcalc_decode_charges_the_new_terms_as_the_calibration_does(engine: str, preset: str, options: dict, seq: int) -> None:
    # the KV copies of transformers' repeat_kv and vLLM's Python dispatch in eager: one formula in kvcalc.latency
    table = calibration.fit(SCOPE)
    case = next(
        c for c in SCOPE if c.engine == engine and c.preset == preset and c.tp == 1 and c.weight_format == "bf16"
        and c.avg_context == seq and (engine != "vllm" or c.engine_key == "vllm-0.4")
    )  # fmt: skip
    name = ENGINE_OPTIONS[engine]
    work = Workload(seq=case.avg_context, engine=Engine(name=name, **options))
    step = decode(load_model(case.preset), work, load_gpu(case.gpu))
    predicted = 1 / (1 / calibration.predict(case, table) - calibration._prefill(case, table))
    assert step.expected_tokens_per_s == pytest.approx(predicted, rel=2e-3)
    if engine == "transformers":
        assert step.expected.kv_repeats == case.kv_repeats == 6 and step.expected.kv_repeat_inverse > 0
    else:
        assert step.expected.mode == "eager" and step.expected.python_dispatch_seconds_per_layer > 0


def test_sglang_fp8_moe_on_rocm_pays_its_cost_per_layer_as_the_calibration_does() -> None:
    # the sgl-cookbook's MI300X FP8 MoE rows (DeepSeek-V3.1 TP 8, MiniMax-M2 TP 4): one formula in kvcalc.latency
    table = calibration.fit(SCOPE)
    case = next(c for c in SCOPE if c.engine == "sglang" and c.gpu == "mi300x" and c.format_class == "fp8" and c.moe)
    fmt = WeightFormat(dtype=DType.fp8, embeddings=DType.bf16, experts=DType.fp8)  # as the importer counts the case's bytes
    work = Workload(seq=case.avg_context, tp=case.tp, engine=Engine(name="sglang"))
    step = decode(load_model(case.preset), work, load_gpu(case.gpu), fmt, interconnect=case.interconnect)
    predicted = 1 / (1 / calibration.predict(case, table) - calibration._prefill(case, table))
    assert step.expected_tokens_per_s == pytest.approx(predicted, rel=2e-3)
    assert step.expected.rocm_moe_seconds_per_layer == decode_fit.ROCM_MOE_LAYER_S["sglang fp8 moe"] > 0
    assert "cases from 2 sources" in decode_fit.SOURCES["rocm sglang fp8 moe"]


def test_a_small_quantized_model_pays_the_gemm_floor_as_the_calibration_does() -> None:
    # Qwen2.5-0.5B-GPTQ-Int4 under vLLM 0.6.3 (Qwen's speed table): its quantized GEMMs, not its bytes, set the weights'
    # time; kvcalc.latency charges max(bytes / bandwidth, layers * floor) as the script predicts the case
    table = calibration.fit(SCOPE)
    case = next(c for c in SCOPE if c.group == "qwen2.5-docs-speedbench-vllm" and c.preset == "qwen2.5-0.5b"
                and c.weight_format == "gptq-int4" and c.avg_context == 1025)  # fmt: skip
    assert calibration._floor_binds(case, table, table[calibration.CAP])
    fmt = WeightFormat(dtype=DType.int4, embeddings=DType.bf16, experts=DType.int4)  # as the importer counts the case's bytes
    work = Workload(seq=case.avg_context, engine=Engine(name="vllm", vllm_version=case.engine_version))
    step = decode(load_model(case.preset), work, load_gpu(case.gpu), fmt)
    predicted = 1 / (1 / calibration.predict(case, table) - calibration._prefill(case, table))
    assert step.expected_tokens_per_s == pytest.approx(predicted, rel=2e-3)
    floor = decode_fit.QUANT_LAYER_FLOOR_S["int4"]
    assert step.expected.quant_floor_seconds == pytest.approx(case.layers * floor) and floor > 0
    assert "cases from" in decode_fit.SOURCES["floor int4"] and step.expected.quant_floor_source.startswith("fitted on")


@pytest.mark.parametrize(
    ("preset", "dtype", "engine", "floored"),
    [
        ("qwen2.5-0.5b", DType.int4, "vllm", True),  # 24 small layers: the floor binds
        ("qwen2.5-72b", DType.int4, "vllm", False),  # 80 large layers: their bytes take longer than the floor
        ("qwen2.5-0.5b", DType.bf16, "vllm", False),  # 16-bit GEMMs have no floor of their own
        ("qwen2.5-0.5b", DType.q4_0, "llamacpp", False),  # llama.cpp's mat-vec kernels: not the fused engines' GEMMs
    ],
)
def test_only_small_quantized_models_in_fused_kernels_hit_the_gemm_floor(
    preset: str, dtype: DType, engine: str, floored: bool
) -> None:
    fmt = WeightFormat(dtype=dtype, embeddings=DType.bf16, experts=dtype)
    step = decode(load_model(preset), Workload(seq=1024, tp=2 if "72b" in preset else 1, engine=Engine(name=engine)),
                  load_gpu("a100-80gb"), fmt).expected  # fmt: skip
    streamed = step.weights_read_bytes / (step.streamed_bandwidth_bytes_per_s * step.efficiency)
    assert (step.quant_floor_seconds > streamed) is floored
    assert step.memory_seconds >= max(streamed, step.quant_floor_seconds)
    # a MoE's experts run other kernels (fused_moe, Marlin MoE)
    assert quant_floor_key("fused", "int4", True, "a100-80gb") is None


@pytest.mark.parametrize(
    ("gpu", "engine", "dtype"),
    [("mi300x", "vllm", DType.int4), ("v100-32gb", "vllm", DType.int8), ("apple-m4-max", "sglang", DType.int4),
     ("mi300x", "trtllm", DType.int4)],
)  # fmt: skip
def test_no_gemm_floor_where_marlin_does_not_run(gpu: str, engine: str, dtype: DType) -> None:
    # the floor is Marlin's grid (gpu_families.marlin_runs, vllm marlin_utils.py 007d5005): CUDA from SM 7.5 only
    fmt = WeightFormat(dtype=dtype, embeddings=DType.bf16, experts=dtype)
    model, workload = load_model("qwen2.5-0.5b"), Workload(seq=1024, engine=Engine(name=engine))
    assert decode(model, workload, load_gpu(gpu), fmt).expected.quant_floor_seconds == 0.0
    assert decode(model, workload, load_gpu("a100-80gb"), fmt).expected.quant_floor_seconds > 0.0


def test_vllm_v0_releases_share_one_fitted_prefill_speed(cli) -> None:
    # end-to-end timings of V0 (Qwen2's table on 0.4.2, Qwen2.5's on 0.6.3, ROCm/vllm's 0.7.3 benchmark_latency runs) fit
    # one prefill speed, which each source held out takes from the others; later releases and other engines prefill at
    # COMPUTE_EFFICIENCY
    assert prefill_key("vllm-0.4") == prefill_key("vllm-v0") == "vllm-v0" and prefill_key("vllm-v1") is None
    sources = decode_fit.SOURCES["prefill vllm-v0"]
    assert "qwen2-docs-speedbench-vllm" in sources and "qwen2.5-docs-speedbench-vllm" in sources
    args = ("decode", "--model", "qwen2.5-7b", "--gpu", "a100-80gb", "--seq", "32768", "--engine", "vllm", "--json")
    old, v0, v1 = (json.loads(cli(*args, "--vllm-version", v).stdout)["decode"]["expected"] for v in ("0.4.2", "0.6.3", "0.11.0"))
    fitted = COMPUTE_EFFICIENCY / decode_fit.PREFILL_INVERSE["vllm-v0"]
    assert old["prefill_compute_efficiency"] == v0["prefill_compute_efficiency"] == pytest.approx(fitted)
    assert v1["prefill_compute_efficiency"] == COMPUTE_EFFICIENCY and v1["prefill_source"] == "not fitted: an assumption"
    explained = cli(*args[:-1], "--vllm-version", "0.6.3", "--explain").stdout
    assert "prefill in end-to-end timings" in explained and "vllm-v0 (V0's prefill)" in explained


def test_decode_explains_the_quantized_gemm_floor(cli) -> None:
    args = ("decode", "--model", "qwen2.5-0.5b", "--gpu", "a100-80gb", "--engine", "vllm", "--weight-dtype", "int4")
    doc = cli.json(*args)["decode"]["expected"]
    assert doc["quant_floor_seconds"] == pytest.approx(24 * decode_fit.QUANT_LAYER_FLOOR_S["int4"])
    out = cli(*args, "--explain").stdout
    assert "quantized GEMM floor = layers *" in out and "max(weights / (bandwidth *" in out


@pytest.mark.parametrize(
    ("engine", "gpu", "dtype", "charged"),
    [
        ("sglang", "mi300x", DType.fp8, True),
        ("sglang", "h200", DType.fp8, False),  # CUDA: sgl-kernel's kernels
        ("vllm", "mi300x", DType.fp8, False),  # another engine's MoE path
        ("sglang", "mi300x", DType.bf16, False),  # no 16-bit MoE case showed a cost of its own (docs/benchmarks.md)
    ],
)
def test_only_sglangs_fp8_moe_on_rocm_pays_the_rocm_moe_layer_cost(engine: str, gpu: str, dtype: DType, charged: bool) -> None:
    model = load_model("deepseek-v3")
    fmt = WeightFormat(dtype=dtype, embeddings=DType.bf16, experts=dtype)
    step = decode(model, Workload(seq=4096, tp=8, engine=Engine(name=engine)), load_gpu(gpu), fmt).expected
    assert (step.rocm_moe_seconds_per_layer > 0) is charged
    assert step.overhead_seconds_per_layer >= step.rocm_moe_seconds_per_layer


@settings(max_examples=25, deadline=None)
@given(kv_heads=st.sampled_from([1, 2, 4, 8, 16, 32]))
def test_only_transformers_pays_for_repeating_the_kv_and_more_so_for_larger_groups(kv_heads: int) -> None:
    fewer = load_model("llama3-8b").model_copy(update={"kv_heads": kv_heads})
    more = load_model("llama3-8b").model_copy(update={"kv_heads": max(1, kv_heads // 2)})
    gpu, work = load_gpu("a100-80gb"), Workload(seq=8192, engine=Engine(name="hf"))
    wide, narrow = decode(fewer, work, gpu).expected, decode(more, work, gpu).expected
    assert wide.kv_repeats == 32 / kv_heads - 1
    assert narrow.attention_efficiency <= wide.attention_efficiency  # more query heads per KV head: more copies
    served = decode(fewer, Workload(seq=8192, engine=Engine(name="vllm")), gpu).expected
    assert served.kv_repeats == 0 and served.python_dispatch_seconds_per_layer == 0  # graphs: no Python per layer


def test_llamacpp_streams_at_most_sms_times_clock_times_the_fitted_bytes_per_sm() -> None:
    # GTX 1050 Ti: 6 SMs at 1,392 MHz for 112 GB/s (its preset, from Wikipedia's GPU table via voidful/gpu-info-api):
    # 13.4 bytes per SM per clock at the datasheet rate, above the fitted cap, so llama.cpp streams 6 * 1.392 GHz * c
    cap = decode_fit.SM_BYTES_PER_CLOCK["llamacpp"]
    assert 0 < cap < 112e9 / (6 * 1.392e9)
    gpu = load_gpu("gtx1050ti")
    step = decode(load_model("llama3-8b"), Workload(seq=1024, engine=Engine(name="llamacpp")), gpu)
    assert step.expected.streamed_bandwidth_bytes_per_s == pytest.approx(6 * 1.392e9 * cap)
    assert step.expected.sm_bytes_per_clock == cap
    # the serving engines' GEMMs are not capped, nor is a GPU whose SMs stream less than the cap (RTX 4090: 3.1 B/SM/clock)
    vllm = decode(load_model("llama3-8b"), Workload(seq=1024, engine=Engine(name="vllm")), gpu)
    assert vllm.expected.streamed_bandwidth_bytes_per_s == gpu.bandwidth_bytes_per_s and vllm.expected.sm_bytes_per_clock == 0
    ada = decode(load_model("llama3-8b"), Workload(seq=1024, engine=Engine(name="llamacpp")), load_gpu("rtx4090"))
    assert ada.expected.streamed_bandwidth_bytes_per_s == 1008e9


@pytest.mark.parametrize(
    ("gpu", "mode"),
    [("gtx1050ti", "llamacpp-cuda-legacy"), ("p40", "llamacpp-cuda-legacy"), ("rtx2080", "llamacpp-cuda"), ("t4", "llamacpp-cuda"),
     ("rtx3090", "llamacpp-cuda"), ("mi300x", "llamacpp-rocm-vulkan")],
)  # fmt: skip
def test_llamacpp_launches_kernel_by_kernel_on_gpus_its_cuda_graphs_skip(gpu: str, mode: str) -> None:
    # ggml-cuda.cu disable_due_to_gpu_arch: no CUDA graph below compute capability 7.0 (8.0 before PR #25749, 2026-07-16)
    step = decode(load_model("qwen2.5-0.5b"), Workload(seq=512, engine=Engine(name="llamacpp")), load_gpu(gpu)).expected
    assert step.mode == mode
    graphs = decode(load_model("qwen2.5-0.5b"), Workload(seq=512, engine=Engine(name="llamacpp")), load_gpu("rtx3090")).expected
    if mode == "llamacpp-cuda-legacy":  # the legacy mode pays a step and more per layer than the graphs' mode
        assert (
            step.step_seconds + step.overhead_seconds_per_layer * 24
            > graphs.step_seconds + graphs.overhead_seconds_per_layer * 24
        )


@pytest.mark.parametrize(
    ("model", "recurrent"), [("qwen3.5-9b", 24), ("lfm2-1.2b", 10), ("qwen3.6-35b-a3b", 30), ("llama3-8b", 0)]
)
def test_llamacpp_charges_each_recurrent_state_layer_its_fitted_cost(model: str, recurrent: int) -> None:
    # Qwen3.5-9B: 24 Gated DeltaNet layers of 32 (every 4th is full attention); LFM2-1.2B: 10 short-conv layers of 16
    per_layer = decode_fit.RECURRENT_LAYER_S["llamacpp"]
    assert per_layer > 0
    spec, gpu = load_model(model), load_gpu("rtx3090")
    step = decode(spec, Workload(seq=512, engine=Engine(name="llamacpp")), gpu)
    assert step.expected.recurrent_layers == recurrent
    assert step.expected.recurrent_seconds == pytest.approx(recurrent * per_layer)
    assert any(line.startswith("recurrent layers = ") for line in step.explain) is (recurrent > 0)
    served = decode(spec, Workload(seq=512, engine=Engine(name="vllm")), gpu).expected  # fused engines: no such cost
    assert served.recurrent_seconds == 0 and served.recurrent_layers == recurrent
    overridden = decode(spec, Workload(seq=512, engine=Engine(name="llamacpp")), gpu, overhead_seconds_per_layer=1e-4).expected
    assert overridden.recurrent_seconds == 0  # --overhead-ms replaces every fitted cost per layer


@settings(max_examples=50, deadline=None)
@given(
    st.floats(1e9, 1e13), st.integers(1, 400) | st.none(), st.integers(10**8, 4 * 10**9) | st.none(),
    st.sampled_from(["llamacpp", "fused", "transformers"]), st.floats(0, 64),
)  # fmt: skip
def test_the_sm_cap_never_streams_above_the_peak_and_binds_only_llamacpp(peak, sms, clock, kernels, cap) -> None:  # noqa: ANN001
    streamed = streamed_bandwidth(peak, sms, clock, kernels, cap)
    assert 0 < streamed <= peak
    if kernels != "llamacpp" or sms is None or clock is None or cap == 0:
        assert streamed == peak


def test_a_gpu_without_cases_streams_at_its_architectures_rate() -> None:
    uncased = next(g for g in ("rtx4070", "l4", "l40s", "t4") if g not in decode_fit.GPU_INVERSE)
    step = decode(load_model("llama3-8b"), Workload(seq=4096, engine=Engine(name="vllm")), load_gpu(uncased)).expected
    assert step.gpu_architecture in decode_fit.ARCHITECTURE_INVERSE
    assert step.gpu_efficiency == pytest.approx(1 / decode_fit.ARCHITECTURE_INVERSE[step.gpu_architecture])
    assert f"no case on {uncased}" in step.gpu_efficiency_source


@pytest.mark.parametrize(
    ("engine", "gpu", "options", "mode", "key"),
    [
        ("llamacpp", "apple-m2-ultra", {}, "llamacpp-metal", "llamacpp"),
        ("llamacpp", "mi300x", {}, "llamacpp-rocm-vulkan", "llamacpp"),
        ("llamacpp", "rtx4090", {}, "llamacpp-cuda", "llamacpp"),
        ("vllm", "h100-sxm", {}, "graphs", "vllm-v1"),
        ("vllm", "h100-sxm", {"enforce_eager": True}, "eager", "vllm-v1"),
        ("vllm", "a100-80gb", {"vllm_version": "0.4.2"}, "graphs", "vllm-0.4"),
        ("vllm", "a100-80gb", {"vllm_version": "0.6.3.post1"}, "graphs", "vllm-v0"),
        ("vllm", "a100-80gb", {"vllm_version": "0.2.1"}, "eager", "vllm-0.4"),  # before CUDA graphs (0.2.6)
        ("sglang", "h20", {"disable_cuda_graph": True}, "eager", "sglang"),
        ("hf", "h100-sxm", {}, "transformers", "transformers"),
        ("textbook", "apple-m2-ultra", {}, "graphs", "textbook"),
    ],
)
def test_engine_release_options_and_backend_choose_the_profile(engine: str, gpu: str, options: dict, mode: str, key: str) -> None:
    work = Workload(seq=4096, engine=Engine(name=engine, **options))
    expected = decode(load_model("llama3-8b"), work, load_gpu(gpu)).expected
    assert (expected.mode, expected.engine_key) == (mode, key)


@pytest.mark.parametrize(
    ("text", "version"),
    [("0.20.2rc1", (0, 20, 2)), ("0.11.0+cu128", (0, 11, 0)), ("v0.5.3.post3", (0, 5, 3)), ("4.46", (4, 46, 0))],
)
def test_versions_are_read_as_the_engines_log_them(text: str, version: tuple[int, ...]) -> None:
    assert parse_engine_version(text) == version


def test_a_version_without_numbers_is_refused() -> None:
    with pytest.raises(InvalidInput):
        parse_engine_version("latest")


def test_every_weight_dtype_has_a_format_class_and_every_class_its_terms() -> None:
    classes = {format_class(d) for d in DType}
    for klass in classes:
        fitted = terms(profile_for("vllm"), klass, False, "a100-80gb", None)
        assert 0 < fitted.kernel_efficiency and 0 < fitted.gpu_efficiency


def test_the_band_is_its_groups_percentiles_and_widens_for_small_groups() -> None:
    doc = decode(load_model("qwen2.5-7b"), Workload(seq=2048, engine=Engine(name="vllm")), load_gpu("a100-80gb"))
    low, high, cases = decode_fit.BANDS["vllm 16-bit"]
    assert doc.expected.band.group == "vllm 16-bit" and not doc.expected.band.widened and cases >= 10
    assert doc.expected_tokens_per_s_low == pytest.approx(doc.expected_tokens_per_s * low)
    assert doc.expected_tokens_per_s_high == pytest.approx(doc.expected_tokens_per_s * high)
    small = band("textbook", "16-bit")
    everything = decode_fit.BANDS["all"]
    assert small.widened and (small.low, small.high) == everything[:2]


def test_overrides_replace_the_fitted_terms() -> None:
    model, gpu, work = load_model("llama3-8b"), load_gpu("h100-sxm"), Workload(seq=8192)
    step = decode(model, work, gpu, efficiency=0.5, overhead_seconds_per_layer=1e-3)
    memory = (15_009_857_536 + 1_073_741_824) / (3.35e12 * 0.5)
    assert step.expected_seconds_per_token == pytest.approx(memory + 32e-3 + step.expected.step_seconds)
    assert step.expected.overridden == ["efficiency", "overhead"] and step.expected.efficiency == 0.5


def test_expected_never_below_the_roofline_that_counts_the_whole_table() -> None:
    step = decode(load_model("llama3-8b"), Workload(seq=8192), load_gpu("h100-sxm"), efficiency=1.0, overhead_seconds_per_layer=0)
    assert step.expected.memory_seconds < step.seconds_per_token <= step.expected_seconds_per_token


def test_past_the_ridge_the_expected_time_is_compute_bound() -> None:
    step = decode(load_model("llama3-8b"), Workload(seq=64, batch=1024), load_gpu("h100-sxm"))
    assert step.roofline.bound == "compute" and step.expected.bound == "compute"
    assert step.expected.compute_seconds == pytest.approx(step.roofline.flops / (989e12 * 0.7))


def test_a_held_out_fit_never_predicts_a_case_faster_than_its_bytes_at_peak() -> None:
    # without flash7777's DGX Spark rows the int4 MoE kernel and format constants summed below 0 (issue 25, before
    # Triton's MLA term took the GLM-4.7-Flash rows' context cost off them; test_no_fitted_sum_streams_weights_or_kv_above_
    # the_peak covers any sum): whatever a held-out fit makes of them, no case is predicted faster than its bytes at peak
    group = "flash7777-vllm-marlin-sm12x"
    held = calibration.fit([c for c in SCOPE if c.group != group])
    mine = [c for c in SCOPE if c.group == group and c.format_class == "int4" and c.moe]
    for case in mine:
        peak = 1 / ((case.weights_read_bytes + case.kv_read_bytes) / load_gpu(case.gpu).bandwidth_bytes_per_s)
        assert 0 < calibration.predict(case, held) <= peak


@settings(max_examples=25, deadline=None)
@given(st.floats(-3.0, 3.0), st.floats(-3.0, 3.0))
def test_no_fitted_sum_streams_weights_or_kv_above_the_peak(kernel_inverse: float, attention_inverse: float) -> None:
    with (
        patch.dict(decode_fit.FORMAT_INVERSE, {"int4": kernel_inverse}),
        patch.dict(decode_fit.ATTENTION_INVERSE, {"vllm-v1": attention_inverse}),
    ):
        fitted = terms(profile_for("vllm", (0, 11, 0)), "int4", True, "dgx-spark", None)
    assert 0 < fitted.weights_efficiency <= 1 and 0 < fitted.kv_efficiency <= 1
    for efficiency, source in (
        (fitted.weights_efficiency, fitted.kernel_source),
        (fitted.kv_efficiency, fitted.attention_source),
    ):
        if AT_PEAK in source:  # --explain and the JSON say why this term is at the peak
            assert efficiency == pytest.approx(1.0)
    if kernel_inverse < 0:
        assert AT_PEAK in fitted.kernel_source


@pytest.mark.parametrize(("efficiency", "overhead"), [(0.0, None), (1.5, None), (None, -1e-3), (None, 2.0)])
def test_bad_terms_are_refused(efficiency: float | None, overhead: float | None) -> None:
    with pytest.raises(InvalidInput):
        decode(load_model("llama3-8b"), Workload(seq=1), load_gpu("h100-sxm"), None, efficiency, overhead)


def test_tp_all_reduces_are_two_per_layer_over_the_link() -> None:
    # llama3.1-70b, tp 8, batch 1: 2 * 7/8 * 8,192 * 2 B = 28,672 B per all-reduce; 160 all-reduces a step
    work = Workload(seq=2048, tp=8, engine=Engine(name="vllm"))
    model, gpu = load_model("llama3.1-70b"), load_gpu("h100-sxm")
    over_pcie = decode(model, work, gpu, interconnect="pcie").expected
    assert over_pcie.all_reduce_bytes == all_reduce_bytes(8192, 1, 8) == 28_672 and over_pcie.interconnect == "pcie"
    latency = decode_fit.ALL_REDUCE_S.get("pcie", 0.0)
    assert over_pcie.tp_comm_seconds == pytest.approx(160 * (latency + 28_672 / 32e9))
    assert decode(model, work.model_copy(update={"tp": 1}), gpu).expected.tp_comm_seconds == 0


MODELS = st.sampled_from(["llama3-8b", "mixtral-8x7b", "gemma3-4b", "qwen3-0.6b", "deepseek-v2-lite"])
GPUS = st.sampled_from(["h100-sxm", "rtx4090", "apple-m2-ultra", "mi300x", "p40"])
ENGINES = st.sampled_from(["textbook", "vllm", "llamacpp", "hf", "sglang"])
EFFICIENCIES = st.none() | st.floats(0.01, 1)
OVERHEADS = st.none() | st.floats(0, 1e-3)


@settings(deadline=None)  # the first draw builds the validators
@given(MODELS, GPUS, ENGINES, st.integers(1, 64), st.integers(1, 65536), EFFICIENCIES, OVERHEADS)
def test_expected_time_is_never_below_the_roofline(model, gpu, engine, batch, seq, efficiency, overhead) -> None:  # noqa: ANN001
    work = Workload(seq=max(seq, batch), batch=batch, engine=Engine(name=engine))
    step = decode(load_model(model), work, load_gpu(gpu), None, efficiency, overhead)
    assert step.expected_seconds_per_token >= step.seconds_per_token
    # the band is where published cases fell around the expected speed: ordered, not always around it (a biased group)
    assert 0 < step.expected_tokens_per_s_low <= step.expected_tokens_per_s_high


@settings(deadline=None)  # the first draw builds the validators
@given(MODELS, GPUS, st.integers(1, 32), st.integers(1, 32768), st.integers(1, 32768), OVERHEADS)
def test_a_longer_context_never_makes_a_step_faster(model, gpu, batch, seq, more, overhead) -> None:  # noqa: ANN001
    shorter = decode(load_model(model), Workload(seq=seq, batch=batch), load_gpu(gpu), None, None, overhead)
    longer = decode(load_model(model), Workload(seq=seq + more, batch=batch), load_gpu(gpu), None, None, overhead)
    assert longer.expected.bytes_moved >= shorter.expected.bytes_moved
    assert longer.expected_seconds_per_token >= shorter.expected_seconds_per_token


TERMS = (
    st.integers(1, 10**12), st.integers(0, 10**11), st.integers(0, 10**16), st.floats(1e9, 1e13), st.floats(1e12, 1e16),
    st.floats(0.01, 1), st.floats(0.01, 1), st.floats(0.01, 1), st.floats(0, 1),
)  # fmt: skip


@given(*TERMS, st.integers(0, 10**12), st.floats(0, 1))
def test_more_bytes_or_a_larger_fixed_cost_never_make_a_step_faster(
    weights, kv, flops, bandwidth, peak, eff, kv_eff, compute_eff, fixed, more_bytes, more_fixed  # noqa: ANN001
) -> None:  # fmt: skip
    _, _, base = expected_seconds(weights, kv, flops, bandwidth, peak, eff, kv_eff, compute_eff, fixed)
    assert expected_seconds(weights + more_bytes, kv, flops, bandwidth, peak, eff, kv_eff, compute_eff, fixed)[2] >= base
    assert expected_seconds(weights, kv + more_bytes, flops, bandwidth, peak, eff, kv_eff, compute_eff, fixed)[2] >= base
    assert expected_seconds(weights, kv, flops, bandwidth, peak, eff, kv_eff, compute_eff, fixed + more_fixed)[2] >= base


@given(*TERMS[:-1], st.floats(0, 1), st.floats(0, 1), st.floats(0, 1))
def test_a_higher_gemm_floor_never_makes_a_step_faster_and_never_beats_the_bytes(
    weights, kv, flops, bandwidth, peak, eff, kv_eff, compute_eff, fixed, floor, more  # noqa: ANN001
) -> None:  # fmt: skip
    memory, _, total = expected_seconds(weights, kv, flops, bandwidth, peak, eff, kv_eff, compute_eff, fixed, floor)
    assert expected_seconds(weights, kv, flops, bandwidth, peak, eff, kv_eff, compute_eff, fixed, floor + more)[2] >= total
    assert memory >= weights / (bandwidth * eff) + kv / (bandwidth * kv_eff)
    assert memory >= floor


@given(st.integers(1, 200), st.floats(0, 1e-4), st.floats(0, 1e-4), st.integers(0, 10**6), st.integers(0, 10**6))
def test_slower_or_bigger_all_reduces_never_make_a_step_faster(layers, latency, more, size, extra) -> None:  # noqa: ANN001
    for link in ("nvlink", "xgmi", "pcie-p2p", "pcie"):
        base = tp_comm_seconds(layers, latency, size, link)
        assert tp_comm_seconds(layers, latency + more, size + extra, link) >= base >= 0


def test_vllms_triton_mla_rows_pay_the_context_loop_as_the_calibration_does() -> None:
    # flash7777's GLM-4.7-Flash INT4 rows on the DGX Spark (SM 12.1: vLLM falls back to TRITON_MLA, vllm/platforms/cuda.py);
    # one formula in kvcalc.latency: MLA layers * context * the fitted cost per layer and context token
    table = calibration.fit(SCOPE)
    case = max((c for c in SCOPE if c.group == "flash7777-vllm-marlin-sm12x" and c.preset == "glm-4.7-flash" and c.tp == 1),
               key=lambda c: c.avg_context)  # fmt: skip
    assert case.mla_kernel == TRITON_MLA and calibration.preset_mla_layers(case.preset) == 47
    fmt = WeightFormat(dtype=DType.int4, embeddings=DType.bf16, experts=DType.int4)  # as the importer counts the case's bytes
    assert case.engine_key == "vllm-v1"  # vLLM 0.15 and 0.16 builds
    work = Workload(seq=case.avg_context, engine=Engine(name="vllm", vllm_version="0.16.0"))
    step = decode(load_model(case.preset), work, load_gpu(case.gpu), fmt)
    predicted = 1 / (1 / calibration.predict(case, table) - calibration._prefill(case, table))
    assert step.expected_tokens_per_s == pytest.approx(predicted, rel=2e-3)
    cost = decode_fit.MLA_TOKEN_S[TRITON_MLA]
    assert step.expected.mla_context_seconds == pytest.approx(47 * case.avg_context * cost) and cost > 0
    # both engines' Triton MLA rows fit it: SGLang's GLM-4.7-Flash on a B200 with --attention-backend triton
    assert "flash7777-vllm-marlin-sm12x" in decode_fit.SOURCES["mla triton-mla"]
    assert "sgl-cookbook-glm-4.7-flash" in decode_fit.SOURCES["mla triton-mla"]


@pytest.mark.parametrize(
    ("engine", "gpu", "backend", "kernel"),
    [
        ("vllm", "dgx-spark", None, TRITON_MLA),  # SM 12.x: no FlashMLA, FlashInfer or CUTLASS MLA
        ("vllm", "rtx5090", None, TRITON_MLA),
        ("vllm", "a100-80gb", None, TRITON_MLA),  # SM 8.0: FLASH_ATTN_MLA and FlashMLA need Hopper
        ("vllm", "h100-sxm", None, None),  # FLASH_ATTN_MLA / FlashMLA
        ("vllm", "b200", None, None),  # FlashInfer / CUTLASS MLA
        ("vllm", "b200", "triton_mla", TRITON_MLA),  # as the server was told
        ("vllm", "mi300x", None, TRITON_MLA),  # vllm/platforms/rocm.py: TRITON_MLA unless AITER's MLA is switched on
        ("sglang", "b200", None, None),  # SGLang's defaults are not Triton's
        ("sglang", "b200", "triton", TRITON_MLA),
    ],
)
def test_the_triton_mla_loop_is_charged_where_the_engine_runs_it(
    engine: str, gpu: str, backend: str | None, kernel: str | None
) -> None:
    assert mla_decode_kernel(engine, gpu, backend, mla=True) == kernel
    assert mla_decode_kernel(engine, gpu, backend, mla=False) is None  # a model without MLA never runs it


@pytest.mark.parametrize(
    ("version", "gpu", "kernel"),
    [
        ("0.6.6", "rtx3090", None),  # before 0.7.1 DeepSeek ran as expanded MHA: no MLA kernel (vllm-project/vllm#12601)
        ("0.7.2", "h100-sxm", TRITON_MLA),  # 0.7.1 and 0.7.2 decode MLA with Triton everywhere; FlashMLA from 0.7.3 (#13747)
        ("0.7.3", "h100-sxm", None),
        ("0.19.0", "a100-80gb", TRITON_MLA),
    ],
)
def test_vllm_s_mla_kernel_follows_the_release(version: str, gpu: str, kernel: str | None) -> None:
    assert mla_decode_kernel("vllm", gpu, None, True, version) == kernel


def test_the_budget_s_block_size_and_decode_read_one_backend_rule(cli) -> None:
    # Ampere runs Triton's MLA (--block-size kept) and is charged its decode loop; Hopper FlashMLA (64-token blocks)
    def backend(gpu: str) -> str:
        return cli.json("fit", "--model", "deepseek-v2-lite", "--gpu", gpu, "--engine", "vllm")["budget"]["engine"][
            "attention_backend"
        ]

    assert (backend("a100-80gb"), backend("h100-sxm"), backend("b200")) == ("triton_mla", "flashmla", "cutlass_mla")
    for gpu, charged in (("a100-80gb", True), ("h100-sxm", False)):
        doc = cli.json("decode", "--model", "deepseek-v2-lite", "--gpu", gpu, "--engine", "vllm", "--seq", "8192")
        assert (doc["decode"]["expected"]["mla_kernel"] == TRITON_MLA) is charged


@given(seq=st.integers(min_value=1, max_value=131072))
@settings(max_examples=20, deadline=None)
def test_the_mla_context_loop_grows_with_the_context_and_only_for_mla(seq: int) -> None:
    gpu = load_gpu("dgx-spark")
    mla = decode(load_model("glm-4.7-flash"), Workload(seq=seq, engine=Engine(name="vllm")), gpu).expected
    longer = decode(load_model("glm-4.7-flash"), Workload(seq=seq + 1024, engine=Engine(name="vllm")), gpu).expected
    assert 0 < mla.mla_context_seconds < longer.mla_context_seconds and mla.seconds < longer.seconds
    assert decode(load_model("llama3-8b"), Workload(seq=seq, engine=Engine(name="vllm")), gpu).expected.mla_context_seconds == 0


def test_decode_explains_the_triton_mla_loop(cli) -> None:
    args = ("decode", "--model", "glm-4.7-flash", "--gpu", "dgx-spark", "--seq", "16384", "--engine", "vllm")
    doc = cli.json(*args)["decode"]["expected"]
    assert doc["mla_kernel"] == TRITON_MLA and doc["mla_layers"] == 47
    assert doc["mla_context_seconds"] == pytest.approx(47 * 16384 * doc["mla_seconds_per_layer_token"])
    out = cli(*args, "--explain").stdout
    assert "MLA context loop = MLA layers * context" in out and "cases from" in out
    hopper = cli.json("decode", "--model", "glm-4.7-flash", "--gpu", "h100-sxm", "--seq", "16384", "--engine", "vllm")
    assert hopper["decode"]["expected"]["mla_context_seconds"] == 0
    told = cli.json(*args[:4], "b200", *args[5:], "--attention-backend", "triton_mla")["decode"]["expected"]
    assert told["mla_kernel"] == TRITON_MLA and told["mla_context_seconds"] > 0
    bad = cli(*args, "--attention-backend", "triton")  # SGLang's name: vLLM calls it triton_mla
    assert bad.exit_code == 2 and "--attention-backend" in bad.stderr


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_vllm_and_sglang_eager_moe_runs_the_fused_kernel_not_a_loop_over_experts(engine: str) -> None:
    # vllm/model_executor/layers/fused_moe/fused_moe.py runs all routed experts in one kernel with or without graphs
    model, gpu = load_model("deepseek-v3"), load_gpu("h200")
    eager = Engine(name="vllm", enforce_eager=True) if engine == "vllm" else Engine(name="sglang", disable_cuda_graph=True)
    step = decode(model, Workload(seq=4096, tp=8, engine=eager), gpu).expected
    graphs = decode(model, Workload(seq=4096, tp=8, engine=Engine(name=engine)), gpu).expected
    assert step.mode == "eager" and step.expert_loop_seconds == graphs.expert_loop_seconds
    # eager adds its step and per-layer costs (Python dispatch), not the 61 * 256 expert launches of a loop
    added = step.step_seconds - graphs.step_seconds + step.overhead_seconds - graphs.overhead_seconds
    assert step.seconds - graphs.seconds == pytest.approx(added)


def test_vllm_v0_releases_share_one_attention_efficiency() -> None:
    # vLLM 0.4 had its own, fitted on Qwen2's table alone (held out: the prior); every V0 release now takes V0's
    model, gpu = load_model("qwen2.5-7b"), load_gpu("a100-80gb")
    old, v0, v1 = (
        decode(model, Workload(seq=4096, engine=Engine(name="vllm", vllm_version=v)), gpu).expected
        for v in ("0.4.2", "0.6.3", "0.11.0")
    )
    assert old.attention_efficiency == v0.attention_efficiency != v1.attention_efficiency
    assert "vllm-0.4" not in decode_fit.ATTENTION_INVERSE and "shared by releases 0.2-0.7" in old.attention_efficiency_source


def test_decode_prints_the_terms_and_the_band(cli) -> None:
    doc = cli.json("decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "8192", "--engine", "vllm")["decode"]
    assert doc["seconds_per_token"] == pytest.approx(5.1147e-3, rel=1e-4)  # the roofline keeps its meaning (test_golden)
    assert doc["expected_tokens_per_s"] == pytest.approx(1 / doc["expected_seconds_per_token"])
    assert 0 < doc["expected_tokens_per_s_low"] < doc["expected_tokens_per_s_high"]
    for term in ("step_seconds", "gpu_efficiency", "kernel_efficiency", "attention_efficiency", "tp_comm_seconds", "band"):
        assert term in doc["expected"], term
    out = cli("decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--explain").stdout
    for term in ("fixed cost per step", "cost per layer", "efficiency =", "band:", "cases from"):
        assert term in out, term
    capped = cli(
        "decode", "--model", "llama3-8b", "--gpu", "gtx1050ti", "--engine", "llamacpp", "--weight-dtype", "q4_0", "--explain"
    )
    assert "streamed bandwidth = min(peak, SMs * clock" in capped.stdout and "cases from" in capped.stdout


def test_decode_explains_sglangs_fp8_moe_cost_on_rocm(cli) -> None:
    args = ("decode", "--model", "deepseek-v3", "--gpu", "mi300x", "--tp", "8", "--engine", "sglang", "--weight-dtype", "fp8")
    doc = cli.json(*args)["decode"]["expected"]
    assert doc["rocm_moe_seconds_per_layer"] > 0
    out = cli(*args, "--explain").stdout
    assert "MoE layer on ROCm" in out and "cases from 2 sources" in out


def test_decode_engine_options_slow_the_step(cli) -> None:
    args = ("decode", "--model", "llama3-8b", "--gpu", "a100-80gb", "--seq", "2048", "--json")
    graphs = json.loads(cli(*args, "--engine", "vllm").stdout)["decode"]
    eager = json.loads(cli(*args, "--engine", "vllm", "--enforce-eager").stdout)["decode"]
    # eager pays what graphs do plus its own increments (fitted on the eager cases, never below 0)
    assert eager["expected"]["mode"] == "eager" and eager["expected_seconds_per_token"] >= graphs["expected_seconds_per_token"]
    sglang = json.loads(cli(*args, "--engine", "sglang", "--disable-cuda-graph").stdout)["decode"]
    assert sglang["expected"]["mode"] == "eager"
    old = json.loads(cli(*args, "--engine", "vllm", "--vllm-version", "0.4.2").stdout)["decode"]
    assert old["expected"]["engine_key"] == "vllm-0.4"
    logged = json.loads(cli(*args, "--engine", "vllm", "--vllm-version", "0.11.0+cu128").stdout)["decode"]
    assert logged["expected"]["engine_key"] == "vllm-v1"


def test_vllm_v0_releases_share_one_fixed_step(cli) -> None:
    # V0's engine loop (vllm/engine/llm_engine.py LLMEngine.step) is one fixed cost for 0.2-0.7: the 0.4 and 0.6
    # releases keep their own keys (attention, graphs past 8k) but are charged the same step, and --explain says why
    args = ("decode", "--model", "llama3-8b", "--gpu", "a100-80gb", "--seq", "2048", "--engine", "vllm", "--json")
    old, v0 = (json.loads(cli(*args, "--vllm-version", v).stdout)["decode"]["expected"] for v in ("0.4.2", "0.6.3"))
    v1 = json.loads(cli(*args, "--vllm-version", "0.11.0").stdout)["decode"]["expected"]
    assert (old["engine_key"], v0["engine_key"]) == ("vllm-0.4", "vllm-v0")
    assert old["step_seconds"] == v0["step_seconds"] > 0 and "engine vllm-v0" in decode_fit.SOURCES
    assert "vllm-0.4" not in decode_fit.ENGINE_STEP_S and v1["step_source"].count("V0's engine loop") == 0
    explained = cli(*args[:-1], "--vllm-version", "0.4.2", "--explain").stdout
    assert "vllm-v0 (V0's engine loop, vllm/engine/llm_engine.py, shared by releases 0.2-0.7)" in explained


@pytest.mark.parametrize(
    ("version", "seq", "mode"), [("0.4.2", 8192, "graphs"), ("0.4.2", 8193, "eager"), ("0.6.3", 16384, "graphs")]
)
def test_vllm_before_0_6_runs_eager_past_max_context_len_to_capture(cli, version: str, seq: int, mode: str) -> None:
    args = ("decode", "--model", "llama3-8b", "--gpu", "a100-80gb", "--seq", str(seq), "--engine", "vllm")
    step = json.loads(cli(*args, "--vllm-version", version, "--json").stdout)["decode"]["expected"]
    assert step["mode"] == mode
    if mode == "eager":
        assert "max_context_len_to_capture" in cli(*args, "--vllm-version", version, "--explain").stdout


def test_decode_interconnect_option(cli) -> None:
    args = ("decode", "--model", "llama3.1-70b", "--gpu", "a100-80gb", "--tp", "4", "--engine", "vllm", "--json")
    doc = json.loads(cli(*args, "--interconnect", "pcie").stdout)["decode"]["expected"]
    assert doc["interconnect"] == "pcie" and doc["tp_comm_seconds"] > 0
    result = cli(*args, "--interconnect", "ethernet")
    assert result.exit_code == 2 and "--interconnect 'ethernet'" in result.stderr and "Traceback" not in result.output


def test_disable_cuda_graph_belongs_to_sglang(cli) -> None:
    result = cli("decode", "--model", "llama3-8b", "--gpu", "a100-80gb", "--engine", "vllm", "--disable-cuda-graph")
    assert result.exit_code == 2 and "--disable-cuda-graph applies to --engine sglang" in result.stderr


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "1001"])
def test_bad_overhead_is_refused_exit_2(cli, value: str) -> None:
    result = cli("decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--overhead-ms", value)
    assert result.exit_code == 2 and "--overhead-ms" in result.stderr and "Traceback" not in result.output


def test_size_with_a_gpu_shows_the_expected_time(cli) -> None:
    args = ("size", "--model", "llama3-8b", "--seq", "8192", "--gpu", "rtx4090", "--engine", "hf")
    assert cli.json(*args)["decode"]["expected"]["profile"] == "transformers"
    assert "time per output token, expected" in cli(*args).stdout


def test_compare_shows_the_expected_time_unless_asked_for_the_roofline(cli) -> None:
    args = ("compare", "textbook", "hf", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "4096")
    doc = cli.json(*args)
    textbook, hf = (row["decode"] for row in doc["variants"])
    assert doc["decode_judge"] == "expected" and hf["expected_seconds_per_token"] > textbook["expected_seconds_per_token"]
    assert hf["seconds_per_token"] == textbook["seconds_per_token"]  # one roofline: same bytes and FLOPs
    assert hf["profile"] == "transformers"
    assert cli.json(*args, "--roofline")["decode_judge"] == "roofline"
    assert "decode / token (roofline)" in cli(*args, "--roofline").stdout


def test_check_judges_the_expected_time_unless_the_plan_or_flag_says_roofline(cli, tmp_path: Path) -> None:
    # llama3-8b on h100-sxm at 8192: roofline 5.11 ms, expected about 8.4 ms (kvcalc/decode_fit.py, refitted whenever the
    # calibration grows: the figure is decode's own); the limit 6 ms lies between.
    workload = "workloads:\n  - {name: a, model: llama3-8b, gpu: h100-sxm, seq: 8192, expect: {decode_ms_at_most: 6}}\n"
    plan = tmp_path / "plan.yaml"
    plan.write_text(workload)
    result = cli("check", str(plan), "--json")
    verdict = json.loads(result.stdout)["workloads"][0]
    assert result.exit_code == 1 and verdict["decode_judge"] == "expected"
    expected = cli.json("decode", "--model", "llama3-8b", "--gpu", "h100-sxm", "--seq", "8192")["decode"]["expected"]
    assert verdict["decode_ms"] == verdict["decode_expected_ms"] == pytest.approx(expected["seconds"] * 1000)
    assert 6 < verdict["decode_ms"] < 2 * 5.1147  # slower than the limit, within twice the roofline
    assert verdict["decode_roofline_ms"] == pytest.approx(5.1147, rel=1e-4)
    assert cli("check", str(plan), "--roofline").exit_code == 0
    plan.write_text("decode_judge: roofline\n" + workload)
    assert cli("check", str(plan)).exit_code == 0
    plan.write_text("decode_judge: fastest\n" + workload)
    result = cli("check", str(plan))
    assert result.exit_code == 2 and "decode_judge" in result.stderr
