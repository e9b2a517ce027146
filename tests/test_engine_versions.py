"""--sglang-version and --trtllm-version: accepted as the engines print their releases, recorded in the
JSON and --explain (kvcalc keeps no rule of theirs that differs by release, so the budget is the same)."""

import pytest


@pytest.mark.parametrize(
    ("engine", "flag", "version", "line"),
    [
        ("sglang", "--sglang-version", "0.5.4.post2", "SGLang 0.5.4.post2 (--sglang-version): recorded"),
        ("sglang", "--sglang-version", "v0.4.9", "SGLang v0.4.9 (--sglang-version): recorded"),
        ("trtllm", "--trtllm-version", "1.2.0rc4", "TensorRT-LLM 1.2.0rc4 (--trtllm-version): recorded"),
        ("trtllm", "--trtllm-version", "1.1.0rc3", "TensorRT-LLM 1.1.0rc3 (--trtllm-version): recorded"),
    ],
)
def test_engine_version_is_recorded_and_leaves_the_budget_as_it_was(cli, engine, flag, version, line) -> None:
    args = ("fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--engine", engine)
    unversioned = cli.json(*args)["budget"]
    budget = cli.json(*args, flag, version)["budget"]
    assert budget["engine"][flag.removeprefix("--").replace("-", "_")] == version
    assert budget["usable_bytes"] == unversioned["usable_bytes"]
    assert any(text.startswith(line) for text in budget["explain"])
    assert not any(text.startswith(line) for text in unversioned["explain"])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--engine", "sglang", "--sglang-version", "latest"], "--sglang-version: cannot read version 'latest'"),
        (["--engine", "trtllm", "--trtllm-version", "main"], "--trtllm-version: cannot read version 'main'"),
        (["--engine", "vllm", "--sglang-version", "0.5.4"], "--sglang-version applies to --engine sglang, not vllm"),
        (["--engine", "sglang", "--trtllm-version", "1.0.0"], "--trtllm-version applies to --engine trtllm, not sglang"),
    ],
)
def test_engine_version_refused_with_one_line_and_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli("fit", "--model", "llama3.1-8b", "--memory", "79GiB", *args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_fit_help_names_both_version_options(cli) -> None:
    text = cli.help("fit")
    assert "--sglang-version" in text and "--trtllm-version" in text


@pytest.mark.parametrize(
    ("version", "per_logit"),
    [("0.10.2", 38), ("0.11.0", 38), ("0.8.5.post1", 38), ("0.11.1", 38), ("0.16.0", 38), ("0.17.0", 15), ("0.19.1", 15),
     ("0.7.3", 15)],
)  # fmt: skip
def test_a_vllm_release_without_flashinfer_profiles_the_sorting_sampler(cli, version: str, per_logit: int) -> None:
    # vllm/v1/sample/ops/topk_topp_sampler.py: without FlashInfer (none in a pip install before 0.11.1, opt-in from
    # 0.11.1) the native path sorts the logits up to 0.16, 38 B per logit in the 0.10.2 logs that say so; from 0.17.0
    # it runs a Triton top-k/top-p kernel, 15 B as the v0.19 logs fit
    def budget(release: str) -> dict:
        # the batch given, so a V0 release (0.7.3) profiles the same 1,024 requests as V1 (its defaults differ)
        args = ["--engine", "vllm", "--vllm-version", release, "--max-num-seqs", "1024", "--max-num-batched-tokens", "8192"]
        return cli.json("fit", "--model", "llama3.1-8b", "--memory", "79GiB", *args)["budget"]

    def activation(doc: dict) -> int:
        return next(term["bytes"] for term in doc["terms"] if term["name"] == "activation peak")

    doc, flashinfer = budget(version), budget("0.19.1")
    assert activation(doc) - activation(flashinfer) == 1024 * 128_256 * (per_logit - 15)
    term = next(term for term in doc["terms"] if term["name"] == "activation peak")
    assert f"({per_logit} B per logit: vLLM {version}" in term["formula"]
