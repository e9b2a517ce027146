"""vLLM's V2 model runner and Turing's sampler: which runner a release profiles with, what each profiles
(kvcalc/engines/vllm.py model_runner, sampler_rule), and --vllm-use-v2-model-runner as vLLM reads
VLLM_USE_V2_MODEL_RUNNER. Sources: vllm/config/vllm.py and vllm/v1/worker/gpu/ of the 0.21-0.30 wheels."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcalc import ModelSpec, Workload
from kvcalc.capacity import budget
from kvcalc.spec import Engine, MoeSpec
from kvcalc.units import GiB

FIT = ["fit", "--model", "qwen2.5-1.5b", "--seq", "4096", "--memory", "14.56GiB", "--engine", "vllm"]
# eslam-ahmed43/llm-lab logs/vllm_server.log (0f01b470): vLLM 0.30.0, "Using V2 Model Runner", a compute capability 7.5 card
T4_LOG = [*FIT, "--gpu-memory-utilization", "0.85", "--no-enable-prefix-caching", "--vllm-version", "0.30.0"]


def _term(doc: dict, name: str) -> dict:
    return next(term for term in doc["budget"]["terms"] if term["name"] == name)


def test_the_v2_runner_profiles_the_logits_only_on_the_published_0_30_log(cli) -> None:
    # R = 256 requests of V = 151,936 logits in fp16, and the hidden states: 256 * 151,936 * 2 + 2 * 2,048 * 1,536 * 2
    doc = cli.json(*T4_LOG)
    activation = _term(doc, "activation peak")
    assert "R * V * 2 + 2 * T * H * b = 256 * 151,936 * 2 + 2 * 2,048 * 1,536 * 2 = 90,374,144 B" in activation["formula"]
    # so the forward pass binds: 2,048 * 2 * (2 * 1,536 + 3 * 8,960) B, 0.11 GiB where the log's transient peak is 0.12 GiB
    assert activation["bytes"] == 2048 * 2 * (2 * 1536 + 3 * 8960)
    assert "model runner V2: vLLM 0.30.0: the V2 runner is the default for every model from 0.29" in activation["formula"]
    assert "vllm/v1/worker/gpu/model_runner.py" in activation["source"]
    assert _term(doc, "CUDA graphs")["bytes"] > 0  # from 0.29 V2 captures its graphs to measure them


@pytest.mark.parametrize(
    ("release", "per_logit", "graphs"),
    [("0.22.0", 6, False), ("0.27.1", 6, False), ("0.28.0", 2, False), ("0.29.0", 2, True), ("0.30.0", 2, True)],
)
def test_v2_sampler_and_graph_estimate_by_release(cli, release: str, per_logit: int, graphs: bool) -> None:
    # sample/sampler.py: the fp32 copy of the logits before 0.28; model_runner.py profile_cudagraph_memory returns 0 before 0.29
    doc = cli.json(*FIT, "--vllm-version", release, "--vllm-use-v2-model-runner", "1")
    assert f"R * V * {per_logit} + 2 * T * H * b" in _term(doc, "activation peak")["formula"]
    assert (_term(doc, "CUDA graphs")["bytes"] > 0) is graphs
    if not graphs:
        assert "profile_cudagraph_memory returns 0 before 0.29" in _term(doc, "CUDA graphs")["formula"]


@pytest.mark.parametrize(
    ("model", "release", "runner"),
    [
        ("qwen2.5-1.5b", "0.25.0", "V2"),  # dense: the default from 0.25
        ("qwen2.5-1.5b", "0.24.0", "V1"),  # 0.22-0.24: listed architectures only, which kvcalc does not record
        ("qwen2.5-1.5b", "0.19.1", "V1"),
        ("qwen3-30b-a3b", "0.27.1", "V1"),  # MoE before 0.29: V1 unless listed
        ("qwen3-30b-a3b", "0.29.0", "V2"),
        ("qwen3.5-27b", "0.27.1", "V1"),  # hybrid before 0.29
    ],
)
def test_the_release_picks_the_runner_by_model_kind(cli, model: str, release: str, runner: str) -> None:
    args = ["fit", "--model", model, "--gpu", "h100-sxm", "--seq", "8192", "--engine", "vllm", "--vllm-version", release]
    args.append("--enforce-eager")  # a hybrid's Mamba-block refusal checks CUDA graphs' sizes; the runner is the same
    assert f"model runner {runner}: vLLM {release}" in _term(cli.json(*args), "activation peak")["formula"]


def test_no_release_keeps_the_v1_profile_and_a_draft_model_keeps_v1(cli) -> None:
    assert "model runner V1: no --vllm-version" in _term(cli.json(*FIT), "activation peak")["formula"]
    args = ["fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--vllm-version", "0.30.0"]
    drafted = cli.json(*args, "--speculative-model", "llama3.2-1b")
    assert (
        "model runner V1: vLLM 0.30.0: a draft model (speculative method draft_model)"
        in _term(drafted, "activation peak")["formula"]
    )


@pytest.mark.parametrize(
    ("release", "per_logit", "gpu"),
    [("0.30.0", 15, "t4"), ("0.24.0", 15, "t4"), ("0.19.1", 15, "t4"), ("0.17.0", 15, "v100-32gb"), ("0.16.0", 38, "t4"),
     ("0.16.0", 38, "a100-80gb"), ("0.30.0", 15, "a100-80gb")],
)  # fmt: skip
def test_v1_sampler_sorts_before_0_17_on_every_gpu(cli, release: str, per_logit: int, gpu: str) -> None:
    # vllm/v1/sample/ops/topk_topp_sampler.py apply_top_k_top_p: from the 0.17.0 wheel the native path runs
    # apply_top_k_top_p_triton for 8 or more rows (no sort), whatever the SM; FlashInfer's sampler is opt-in from 0.11.1
    args = ["fit", "--model", "qwen2.5-1.5b", "--gpu", gpu, "--seq", "4096", "--engine", "vllm", "--vllm-version", release]
    formula = _term(cli.json(*args, "--vllm-use-v2-model-runner", "0"), "activation peak")["formula"]
    assert f"R * V * {per_logit} + 2 * T * H * b" in formula


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--vllm-use-v2-model-runner", "yes"], "--vllm-use-v2-model-runner 'yes': use 1 or 0"),
        (
            ["--engine", "sglang", "--vllm-use-v2-model-runner", "1"],
            "--vllm-use-v2-model-runner applies to --engine vllm, not sglang",
        ),
        (
            ["--vllm-version", "0.7.3", "--vllm-use-v2-model-runner", "1"],
            "--vllm-use-v2-model-runner 1: vLLM 0.7.3 runs the V0 engine, which has no V2 model runner",
        ),
        (
            # vllm-project/vllm#25266, "GPU Model Runner V2", first shipped in v0.12.0
            ["--vllm-version", "0.11.2", "--vllm-use-v2-model-runner", "1"],
            "--vllm-use-v2-model-runner 1: vLLM 0.11.2 has no V2 model runner (it came in 0.12.0)",
        ),
    ],
)
def test_a_bad_runner_switch_is_one_line_and_exit_2(cli, args: list[str], expected: str) -> None:
    engine = [] if "--engine" in args else ["--engine", "vllm"]
    result = cli("fit", "--model", "llama3.1-8b", "--memory", "79GiB", *engine, *args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_fit_help_names_the_runner_switch(cli) -> None:
    assert "--vllm-use-v2-model-runner" in cli.help("fit")


@st.composite
def dense_or_moe(draw: st.DrawFn) -> ModelSpec:
    hidden = draw(st.sampled_from([1024, 2048, 4096]))
    return ModelSpec(
        name="m",
        layers=draw(st.integers(2, 48)),
        heads=16,
        kv_heads=draw(st.sampled_from([2, 4, 8])),
        head_dim=128,
        hidden=hidden,
        intermediate=draw(st.integers(hidden, 4 * hidden)),
        vocab=draw(st.integers(1000, 260_000)),
        moe=MoeSpec(experts=8, experts_per_token=2, expert_intermediate=hidden) if draw(st.booleans()) else None,
    )


@settings(max_examples=60)
@given(
    dense_or_moe(),
    st.sampled_from(["0.12.0", "0.19.1", "0.22.0", "0.25.0", "0.28.0", "0.30.0"]),
    st.sampled_from([None, "t4", "h100-sxm"]),
    st.booleans(),
    st.integers(8 * GiB, 200 * GiB),
)
def test_the_v2_profile_never_takes_more_than_v1s(
    model: ModelSpec, release: str, gpu: str | None, eager: bool, memory: int
) -> None:
    # V2's dummy sampler holds at most the logits and one fp32 copy (6 B), V1's at least 15 B per logit, and V2
    # subtracts a CUDA-graph estimate only where V1 does: the same release leaves V2 at least V1's KV budget
    def usable(v2: bool) -> int:
        engine = Engine(name="vllm", vllm_version=release, vllm_use_v2_model_runner=v2, enforce_eager=eager)
        return budget(model, Workload(seq=4096, engine=engine), memory, gpu_name=gpu).usable_bytes

    assert usable(True) >= usable(False)


def _sampler_formula(cli, *args: str) -> str:
    doc = cli.json("fit", "--model", "qwen2.5-7b", "--gpu", "h100-sxm", "--seq", "4096", "--engine", "vllm", *args)
    return _term(doc, "activation peak")["formula"]


@pytest.mark.parametrize(
    "args",
    [
        ("--vllm-version", "0.7.3"),  # the V0 engine's sampler
        ("--vllm-version", "0.22.0", "--vllm-use-v2-model-runner", "1"),  # the V2 runner's dummy sampler skips top-k/top-p
    ],
)
@pytest.mark.parametrize("flag", ["--vllm-flashinfer-sampler", "--no-vllm-flashinfer-sampler"])
def test_the_sampler_flag_says_it_is_ignored_where_no_flashinfer_choice_exists(cli, args: tuple[str, ...], flag: str) -> None:
    plain, flagged = _sampler_formula(cli, *args), _sampler_formula(cli, *args, flag)
    assert f"{flag} ignored: this sampler has no FlashInfer choice" in flagged
    assert "ignored" not in plain
    assert plain.split(" B per logit")[0] == flagged.split(" B per logit")[0]  # the same bytes per logit either way


def test_a_sampler_flag_without_a_release_follows_the_newest_rule(cli) -> None:
    # no --vllm-version = the newest release's rules: from 0.17 either sampler profiles 15 B per logit
    for flag in ("--vllm-flashinfer-sampler", "--no-vllm-flashinfer-sampler"):
        formula = _sampler_formula(cli, "--vllm-use-v2-model-runner", "0", flag)
        assert "15 B per logit" in formula and "(newest rules)" in formula and "0.17.0 on" in formula
    assert "38 B per logit" in _sampler_formula(cli, "--vllm-use-v2-model-runner", "0")  # no flag: the largest published
