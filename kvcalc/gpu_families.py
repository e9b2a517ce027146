"""GPU generations by name: one table that vLLM's kernel choices (compute capability) and the decode
calibration's streaming rates (architecture family) both read.

A name is a GPU preset's (`h100-sxm`, `rtx3090`) or what vendors' tools print (`NVIDIA GeForce RTX 3090`,
`Tesla T4`), matched lower case by the marks each generation lists.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

SmFamily = Literal["pascal", "volta", "turing", "ampere", "ada", "hopper", "blackwell", "blackwell-thor", "blackwell-rtx"]


class Generation(NamedTuple):
    """An NVIDIA generation: the marks of its names, its (lowest) compute capability as vLLM compares it
    (capability.to_int(): 7.5 -> 75) and the architecture family the decode calibration fits a streaming
    rate for."""

    family: SmFamily
    marks: tuple[str, ...]
    capability: int
    architecture: str
    unless: tuple[str, ...] = ()  # marks of names this generation does not take (an RTX A1000 is no A100)


# First match wins: the Blackwell RTX parts before "rtx" marks of older generations, Hopper's h20 after h200, the
# GA100 parts before "a10". The architecture family is the die line and its memory: NVIDIA's datacenter dies with HBM
# (GP100, GV100, GA100, GH100, GB100) stream their datasheet bandwidth at another share than the same generation's
# GDDR or LPDDR dies (GP10x, TU10x, GA10x, GB20x and GB10), whose memory controllers and SM counts differ
# (docs/benchmarks.md: the split was judged leave one source out, issue 25).
GENERATIONS: tuple[Generation, ...] = (
    Generation("blackwell-rtx", ("rtx5", "rtx 5", "rtx-pro-6000", "rtx pro 6000", "dgx-spark", "gb10"), 120, "NVIDIA Blackwell (GDDR7, LPDDR5X)"),
    Generation("blackwell", ("b200", "b300", "gb200", "gb300"), 100, "NVIDIA Blackwell (HBM)"),
    # Jetson Thor is SM 11.0 from CUDA 13.0 (SM 10.1 before): vllm-project/vllm#39233 adds sm_110 as Jetson Thor's
    Generation("blackwell-thor", ("jetson-thor", "jetson thor", "nvidia thor"), 110, "NVIDIA Blackwell (GDDR7, LPDDR5X)"),
    Generation("hopper", ("h100", "h200", "h800", "h20", "gh200"), 90, "NVIDIA Hopper"),
    Generation("ada", ("l4", "l40", "l20", "rtx4", "rtx 4", "ada"), 89, "NVIDIA Ada"),
    Generation("ampere", ("a100", "a30", "a800"), 80, "NVIDIA Ampere (HBM)", unless=("rtx",)),
    Generation(
        "ampere",
        ("a10", "a40", "a6000", "rtx3", "rtx 3", "rtx a", "rtx-a", "a4000", "a5000", "jetson-agx-orin", "orin"),
        80,
        "NVIDIA Ampere (GDDR6, LPDDR5)",
    ),
    Generation("turing", ("t4", "2080", "rtx20", "titan rtx", "quadro rtx"), 75, "NVIDIA Turing"),
    Generation("volta", ("v100", "titan v"), 70, "NVIDIA Volta (HBM)"),
    Generation("pascal", ("p100",), 60, "NVIDIA Pascal (HBM)"),
    Generation("pascal", ("p40", "gtx10", "gtx 10"), 60, "NVIDIA Pascal"),
)  # fmt: skip
# Other vendors' families, by the start of a preset's name (no compute capability)
OTHER_ARCHITECTURES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("mi",), "AMD Instinct"),
    (("rx", "radeon"), "AMD Radeon"),
    (("apple",), "Apple"),
)
SM_CAPABILITY: dict[SmFamily, int] = {generation.family: generation.capability for generation in GENERATIONS}


def generation(gpu_name: str | None) -> Generation | None:
    """The NVIDIA generation a name marks, None for another vendor's GPU or an unknown name."""
    name = (gpu_name or "").lower()
    return next(
        (g for g in GENERATIONS if any(mark in name for mark in g.marks) and not any(mark in name for mark in g.unless)), None
    )


def sm_family(gpu_name: str | None) -> SmFamily | None:
    """The GPU generation vLLM's kernels are chosen by (None: not NVIDIA, or unknown).

    >>> sm_family("h100-sxm"), sm_family("NVIDIA GeForce RTX 3090"), sm_family("rtx5090"), sm_family("Tesla T4"), sm_family("mi300x")
    ('hopper', 'ampere', 'blackwell-rtx', 'turing', None)
    """
    found = generation(gpu_name)
    return found.family if found else None


def gpu_architecture(gpu_name: str) -> str:
    """The architecture family of a GPU, whose streaming rate the decode calibration fits; 'other' when
    no table names it.

    >>> gpu_architecture("rtx3090"), gpu_architecture("a100-80gb"), gpu_architecture("gtx1050ti"), gpu_architecture("mi300x")
    ('NVIDIA Ampere (GDDR6, LPDDR5)', 'NVIDIA Ampere (HBM)', 'NVIDIA Pascal', 'AMD Instinct')
    >>> gpu_architecture("tpu"), gpu_architecture("NVIDIA RTX A3000 Laptop GPU"), gpu_architecture("rtx-a1000")
    ('other', 'NVIDIA Ampere (GDDR6, LPDDR5)', 'NVIDIA Ampere (GDDR6, LPDDR5)')
    """
    found = generation(gpu_name)
    if found:
        return found.architecture
    name = gpu_name.lower()
    return next((family for starts, family in OTHER_ARCHITECTURES if name.startswith(starts)), "other")


def same_generation(architecture: str) -> list[str]:
    """The other die lines of an architecture's generation (NVIDIA Ampere (HBM): the GDDR6 / LPDDR5 parts').

    >>> same_generation("NVIDIA Pascal (HBM)"), same_generation("NVIDIA Volta (HBM)"), same_generation("AMD Instinct")
    (['NVIDIA Pascal'], [], [])
    """
    line = architecture.split(" (")[0]
    named = dict.fromkeys(g.architecture for g in GENERATIONS)
    return [other for other in named if other != architecture and other.split(" (")[0] == line]


def runs_cuda(gpu_name: str | None) -> bool:
    """Whether the GPU runs CUDA: NVIDIA's, and a GPU kvcalc cannot place (as marlin_runs takes it); not AMD's or Apple's.

    >>> [runs_cuda(name) for name in ("h100-sxm", "mi300x", "apple-m4-max", None)]
    [True, False, False, True]
    """
    return sm_family(gpu_name) is not None or not gpu_name or gpu_architecture(gpu_name) == "other"


# marlin_utils.py query_marlin_supported_quant_types: "if device_capability < 75: return []"; check_marlin_supports_layer
# and check_moe_marlin_supports_layer: False on ROCm (vllm 007d5005). vLLM's weight repack (engines.vllm.marlin_dropped)
# and the decode floor of fused engines' quantized GEMMs (decode_profiles.quant_floor_key) both read this one rule.
MARLIN_MIN_CAPABILITY = 75


def marlin_runs(gpu_name: str | None) -> tuple[bool, str]:
    """Whether vLLM's Marlin kernels run on the GPU, and why: CUDA from compute capability 7.5 (MARLIN_MIN_CAPABILITY),
    never ROCm, Metal or another vendor's GPU. A GPU kvcalc cannot place (no preset name) is taken as a CUDA GPU
    that runs them.

    >>> [marlin_runs(name)[0] for name in ("t4", "v100-32gb", "p40", "mi300x", "apple-m4-max", "h100-sxm", None)]
    [True, False, False, False, False, True, True]
    """
    family = sm_family(gpu_name)
    if not runs_cuda(gpu_name):
        vendor = gpu_architecture(gpu_name or "")
        runs = "runs ROCm" if vendor.startswith("AMD") else f"is an {vendor} GPU"
        return False, f"{gpu_name} {runs}, where vLLM has no Marlin (marlin_utils.py check_marlin_supports_layer: CUDA only)"
    if family is None:
        return True, "GPU not named: taken as CUDA from SM 7.5, where Marlin runs"
    capability = SM_CAPABILITY[family]
    if capability < MARLIN_MIN_CAPABILITY:
        return False, (
            f"{gpu_name} is SM {capability / 10:.1f}, below Marlin's 7.5 (marlin_utils.py query_marlin_supported_quant_types)"
        )
    return True, f"{gpu_name} is SM {capability / 10:.1f}: Marlin runs from 7.5"
