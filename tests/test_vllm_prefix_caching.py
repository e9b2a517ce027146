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
