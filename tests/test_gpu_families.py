"""GPU generations and the llama.cpp SM-rate cap fields of the GPU presets."""

from pathlib import Path

import pytest
import yaml

from kvcalc import Workload, capacity, weights
from kvcalc.gpu_families import SM_CAPABILITY, gpu_architecture, sm_family
from kvcalc.presets import load_gpu, load_model
from kvcalc.shipped import GPUS
from kvcalc.spec import Engine

NO_SM_FIELDS = "No SM (CU) count and boost clock"


def test_every_preset_of_a_capped_family_carries_both_fields_or_says_why_not() -> None:
    """Same-chip presets must not differ by whether the cap applies: a preset of an architecture family with
    capped presets carries streaming_multiprocessors and boost_clock_hz, or its notes say the source lacks them."""
    gpus = {name: make() for name, make in GPUS.items()}
    capped = {gpu_architecture(name) for name, gpu in gpus.items() if gpu.streaming_multiprocessors is not None}
    assert {
        "NVIDIA Ampere (HBM)",
        "NVIDIA Ampere (GDDR6, LPDDR5)",
        "NVIDIA Hopper",
        "NVIDIA Blackwell (GDDR7, LPDDR5X)",
    } <= capped
    assert "AMD Instinct" in capped
    unexplained = [
        name
        for name, gpu in gpus.items()
        if gpu_architecture(name) in capped and gpu.streaming_multiprocessors is None and NO_SM_FIELDS not in (gpu.notes or "")
    ]
    assert unexplained == []


@pytest.mark.parametrize(("field", "value"), [("streaming_multiprocessors", 108), ("boost_clock_hz", 1410000000)])
def test_a_gpu_file_with_one_sm_cap_field_is_refused(cli, tmp_path: Path, field: str, value: int) -> None:
    gpu = tmp_path / "half.yaml"
    fields = {"name": "half", "memory_bytes": 10**10, "bandwidth_bytes_per_s": 10**12, "bf16_flops": 10**14, field: value}
    gpu.write_text(yaml.safe_dump(fields))
    result = cli("decode", "--gpu", gpu, "--model", "llama3-8b", "--engine", "llamacpp")
    assert result.exit_code == 2
    assert "streaming_multiprocessors and boost_clock_hz go together" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_same_chip_presets_carry_the_same_cap() -> None:
    """The A100 40 GB and 80 GB carry the same 108 SMs at 1,410 MHz, so neither streams past 108 x 1.41 GHz x c."""
    forty, eighty = GPUS["a100-40gb"](), GPUS["a100-80gb"]()
    assert (forty.streaming_multiprocessors, forty.boost_clock_hz) == (eighty.streaming_multiprocessors, eighty.boost_clock_hz)


def test_jetson_thor_is_sm110_and_gets_no_sm100_mla_default() -> None:
    """Jetson Thor is SM 11.0 from CUDA 13.0 (vllm-project/vllm#39233); vLLM's CUTLASS MLA default is SM100's."""
    assert sm_family("jetson-thor") == "blackwell-thor" and SM_CAPABILITY["blackwell-thor"] == 110
    assert sm_family("NVIDIA Thor") == "blackwell-thor"
    assert sm_family("b200") == sm_family("gb300") == "blackwell"
    model = load_model("deepseek-v3")
    work = Workload(seq=1000, tp=1, engine=Engine(name="vllm"))
    chosen = {
        name: capacity.budget(model, work, load_gpu(name).memory_bytes, weights.weight_format(model), None, None, name).engine
        for name in ("b200", "jetson-thor")
    }
    assert chosen["b200"].attention_backend == "cutlass_mla"
    assert chosen["jetson-thor"].attention_backend == "triton_mla"  # no SM100 kernel: Triton's MLA, as on SM 12.x


@pytest.mark.parametrize(
    ("hbm", "gddr"),
    [("a100-80gb", "rtx3090"), ("a100-40gb", "a10g"), ("b200", "rtx5090"), ("b300", "dgx-spark"), ("v100-32gb", "t4")],
)
def test_a_generations_hbm_die_streams_at_a_rate_of_its_own(hbm: str, gddr: str) -> None:
    # GA100, GB100 and GV100 (HBM) apart from GA10x, GB20x/GB10 and TU10x (GDDR, LPDDR): docs/benchmarks.md judged the
    # split leave one source out
    assert gpu_architecture(hbm).endswith("(HBM)") and not gpu_architecture(gddr).endswith("(HBM)")
