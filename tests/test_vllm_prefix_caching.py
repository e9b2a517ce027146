"""--enable-prefix-caching on a hybrid model: vLLM keeps each request's Mamba state in mamba_cache_mode
"align", two state blocks a request in each state group instead of one
(vllm/v1/kv_cache_interface.py MambaSpec.max_memory_usage_bytes)."""


def _log(doc: dict, name: str) -> dict:
    return next(line for line in doc["engine_log"] if line["name"] == name)


def test_prefix_caching_holds_two_state_blocks_a_request_in_each_state_group(cli) -> None:
    args = ("fit", "--model", "qwen3.6-27b", "--gpu", "h100-sxm", "--seq", "4096", "--engine", "vllm", "--max-num-seqs", "32")
    off, on = cli.json(*args), cli.json(*args, "--enable-prefix-caching")
    assert on["budget"]["usable_bytes"] == off["budget"]["usable_bytes"]  # the pool is the same, requests take more of it
    blocks = _log(on, "mamba_cache_blocks")["value"]
    assert blocks == _log(off, "mamba_cache_blocks")["value"]
    per_request_off = blocks / _log(off, "max_concurrency")["value"]
    per_request_on = blocks / _log(on, "max_concurrency")["value"]
    assert "2 per state group: mamba_cache_mode align" in _log(on, "max_concurrency")["note"]
    assert "1 per state group: mamba_cache_mode none" in _log(off, "max_concurrency")["note"]
    state_groups = round(per_request_on - per_request_off)
    assert state_groups >= 1 and round(per_request_on) == round(per_request_off) + state_groups
    assert _log(on, "gpu_kv_cache_tokens")["value"] < _log(off, "gpu_kv_cache_tokens")["value"]


def test_prefix_caching_leaves_a_model_without_state_as_it_was(cli) -> None:
    args = ("fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--engine", "vllm")
    assert cli.json(*args, "--enable-prefix-caching")["budget"]["usable_bytes"] == cli.json(*args)["budget"]["usable_bytes"]


def test_prefix_caching_is_a_vllm_option(cli) -> None:
    result = cli("fit", "--model", "llama3.1-8b", "--memory", "79GiB", "--engine", "sglang", "--enable-prefix-caching")
    assert result.exit_code == 2, result.output
    assert "--enable-prefix-caching applies to --engine vllm, not sglang" in result.stderr


# https://github.com/phivan3008/meeting-translator/blob/59159b20b2337c031ca934dbe07146aaf573af70/vllm_serve.log: vLLM 0.27.1,
# Qwen3.6-27B-FP8 on an H100 with --enable-prefix-caching; it logs 71.42x concurrency for 4,096 tokens and 292,522 tokens,
# 857 blocks at 12 a request: 6 attention blocks of 784 tokens and 2 in each of the 3 state groups (align)
PHIVAN = (
    "fit", "--model", "tests/fixtures/engine_logs/models/qwen3.6-27b-fp8.yaml", "--gpu", "h100-sxm", "--memory", "79.19GiB",
    "--seq", "4096", "--engine", "vllm", "--vllm-version", "0.27.1", "--gpu-memory-utilization", "0.88",
    "--max-num-seqs", "32", "--max-num-batched-tokens", "4096", "--enforce-eager", "--enable-prefix-caching",
)  # fmt: skip


def test_the_published_gated_deltanet_hybrid_holds_12_blocks_a_request(cli) -> None:
    doc = cli.json(*PHIVAN)
    concurrency = _log(doc, "max_concurrency")
    assert round(_log(doc, "mamba_cache_blocks")["value"] / concurrency["value"]) == 12
    assert "2 per state group: mamba_cache_mode align" in concurrency["note"]
    assert abs(_log(doc, "gpu_kv_cache_tokens")["value"] / 292_522 - 1) < 0.02  # the logged token line


def test_a_mamba_mixer_model_in_0_19_to_0_27_is_refused_as_all_mode_is_not_modelled(cli) -> None:
    # models/config.py MambaModelConfig: "all" for SupportsMambaPrefixCaching models in 0.19-0.27, "align" from 0.28;
    # counting align's 2 blocks there would report more concurrency than vLLM has, so kvcalc refuses
    args = ("fit", "--model", "nemotron-h-8b", "--gpu", "h100-sxm", "--engine", "vllm", "--max-num-seqs", "64")
    old = cli(*args, "--enable-prefix-caching", "--vllm-version", "0.27.1")
    assert old.exit_code == 2, old.output
    assert "mamba_cache_mode all" in old.stderr and "not modelled" in old.stderr and len(old.stderr.strip().splitlines()) == 1
    new = _log(cli.json(*args, "--enable-prefix-caching", "--vllm-version", "0.28.0"), "max_concurrency")["note"]
    assert "2 per state group: mamba_cache_mode align" in new
    assert cli(*args, "--vllm-version", "0.27.1").exit_code in (0, 1)  # without prefix caching: mode none, modelled
