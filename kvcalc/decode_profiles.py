"""What engines really reach when they decode: the calibrated terms of the expected-time model. Pure data.

    t_token = max(bytes / (bandwidth * efficiency[format]), FLOPs / (peak * compute_efficiency))
              + overhead_per_layer * layers

The efficiencies per weight format and the fixed cost per layer were fitted on 160 published
batch-1 decode measurements (tests/fixtures/decode_calibration.json, each with its URL; fit and
errors in docs/benchmarks.md). An engine picks its profile in `EngineProfile.decode_profile(gpu)`;
this module imports only kvcalc.base and kvcalc.units, so the engine protocol can import it.
"""

from __future__ import annotations

from typing import Literal

from kvcalc.base import Frozen
from kvcalc.units import DType, bytes_per_value

FormatClass = Literal["16-bit", "8-bit", "ggml-4to6bit", "ggml-2to3bit", "int4-gpu", "int4-tinygemm"]
ProfileName = Literal["cuda-graphs", "llamacpp-cuda-legacy", "llamacpp-metal", "llamacpp-rocm-vulkan", "transformers-eager"]

CALIBRATION = "fitted on 160 published batch-1 decode measurements (docs/benchmarks.md, tests/fixtures/decode_calibration.json)"

# Share of peak bandwidth a step streams at, by how the weights are decoded (Huber least squares on
# relative time error; cases per class in docs/benchmarks.md). 16-bit and simple 4-bit blocks stream
# near peak; int8 weight-only and Q2/Q3 k-quants pay for dequantizing; tinygemm int4 is latency-bound.
EFFICIENCY: dict[FormatClass, float] = {
    "16-bit": 0.868,  # fp16/bf16, any engine (31 cases)
    "8-bit": 0.697,  # int8 weight-only (gpt-fast, torchao; 5 cases)
    "ggml-4to6bit": 0.877,  # llama.cpp Q4_0, Q4_1, Q5_0, Q4_K, Q6_K (76 cases)
    "ggml-2to3bit": 0.335,  # llama.cpp Q2_K, Q3_K_S (4 cases, sizes estimated)
    "int4-gpu": 0.916,  # AWQ, GPTQ, EXL2, MLC q4f16 with fused GEMV kernels (40 cases)
    "int4-tinygemm": 0.579,  # torchao / gpt-fast int4 weight-only on A100 (4 cases)
}

# Share of the dense peak FLOP/s a compute-bound step reaches. Not calibrated: every case above is
# batch 1 and memory-bound. An assumption: large bf16 GEMMs reach 70-80% of the dense peak in
# cuBLAS/CUTLASS, and decode's GEMMs are thinner than those.
COMPUTE_EFFICIENCY = 0.7


class DecodeProfile(Frozen):
    """The terms of one engine family's expected decode time, and where they come from."""

    name: ProfileName
    label: str  # which engines and builds it describes
    efficiency: dict[FormatClass, float]
    compute_efficiency: float
    overhead_seconds_per_layer: float  # kernel launches and syncs a step pays per layer
    source: str


def _profile(name: ProfileName, label: str, overhead_ms: float, source: str = CALIBRATION) -> DecodeProfile:
    return DecodeProfile(
        name=name,
        label=label,
        efficiency=EFFICIENCY,
        compute_efficiency=COMPUTE_EFFICIENCY,
        overhead_seconds_per_layer=overhead_ms / 1e3,
        source=source,
    )


CUDA_GRAPHS = _profile(
    "cuda-graphs",
    "CUDA with graphs, torch.compile or a C++ runtime (vLLM, SGLang, TensorRT-LLM, MLC, gpt-fast, LMDeploy,"
    " ExLlamaV2, llama.cpp builds with CUDA graphs)",
    0.047,  # 66 cases
)
LLAMACPP_CUDA_LEGACY = _profile("llamacpp-cuda-legacy", "llama.cpp CUDA builds before CUDA graphs (mid-2024 and older)", 0.098)
LLAMACPP_METAL = _profile("llamacpp-metal", "llama.cpp on Apple silicon (Metal)", 0.167)  # 28 cases
LLAMACPP_ROCM_VULKAN = _profile("llamacpp-rocm-vulkan", "llama.cpp on AMD (ROCm/HIP or Vulkan)", 0.153)  # 6 cases
TRANSFORMERS_EAGER = _profile(
    "transformers-eager",
    "transformers generate() in eager PyTorch (a Python call per op)",
    0.5,
    "set from one case, not fitted (fixture case 164: llama-7B fp16 on A10G, 23.15 tok/s at 32 layers,"
    " whose time beyond the 16-bit memory term is 0.52 ms per layer)",
)
DECODE_PROFILES: dict[str, DecodeProfile] = {
    p.name: p for p in (CUDA_GRAPHS, LLAMACPP_CUDA_LEGACY, LLAMACPP_METAL, LLAMACPP_ROCM_VULKAN, TRANSFORMERS_EAGER)
}

_FORMAT_CLASSES: dict[DType, FormatClass] = {
    DType.fp32: "16-bit",  # assumed: streams like 16-bit (no fp32 case)
    DType.fp16: "16-bit",
    DType.bf16: "16-bit",
    DType.fp8: "8-bit",  # assumed: fp8 weights were not measured; int8 weight-only's figure
    DType.fp8_e4m3: "8-bit",
    DType.fp8_e5m2: "8-bit",
    DType.int8: "8-bit",
    DType.q8_0: "8-bit",  # assumed: no q8_0 case
    DType.int4: "int4-gpu",
    DType.mxfp4: "int4-gpu",  # assumed: no mxfp4 case
    DType.nvfp4: "int4-gpu",  # assumed: no nvfp4 case
    DType.int8_per_token_head: "8-bit",  # a cache dtype; as weights, int8's
    DType.q4_0: "ggml-4to6bit",
    DType.q4_1: "ggml-4to6bit",
    DType.q5_0: "ggml-4to6bit",
    DType.q5_1: "ggml-4to6bit",
    DType.iq4_nl: "ggml-4to6bit",
}


def format_class(dtype: DType) -> FormatClass:
    """How weights of `dtype` are decoded, as the calibration groups them.

    >>> format_class(DType.bf16), format_class(DType.q4_0), format_class(DType.int4)
    ('16-bit', 'ggml-4to6bit', 'int4-gpu')
    """
    if dtype in _FORMAT_CLASSES:
        return _FORMAT_CLASSES[dtype]
    if dtype in (DType.nvfp4, DType.fp8_block, DType.int8_per_token_head, DType.fp8_per_token_head):
        return "8-bit" if dtype != DType.nvfp4 else "int4-gpu"  # assumed: no case of these formats
    return stored_format_class(8 * bytes_per_value(dtype))  # the GGUF k- and i-quants by their bits per weight


def stored_format_class(bits_per_weight: float) -> FormatClass:
    """How a GGUF's weights stored at `bits_per_weight` on average are decoded: 16-bit from 12 bits,
    8-bit from 7, the 4- to 6-bit k-quants from 4 (Q4_0 is 4.5, Q6_K 6.56), below that Q2_K/Q3_K.

    >>> stored_format_class(4.85), stored_format_class(3.4), stored_format_class(16.0)
    ('ggml-4to6bit', 'ggml-2to3bit', '16-bit')
    """
    for floor, klass in ((12, "16-bit"), (7, "8-bit"), (4, "ggml-4to6bit")):
        if bits_per_weight >= floor:
            return klass
    return "ggml-2to3bit"
