"""fit's verdict line when a llama.cpp placement plan follows the budget table."""

from __future__ import annotations


def test_weights_over_one_gpu_point_to_the_placement_not_to_tp(cli) -> None:
    # Llama-3-70B in bf16 (131 GiB) on one RTX 4090: llama.cpp keeps most layers in host RAM, so the plan fits.
    result = cli("fit", "--model", "llama3-70b", "--gpu", "rtx4090", "--engine", "llamacpp", "--seq", "8192")
    assert result.exit_code == 0
    assert "does not fit whole" in result.stdout and "placement below" in result.stdout
    assert "try a larger --tp" not in result.stdout
    assert "offloaded 13/81 layers to GPU" in result.stdout
    assert "13 (68–80)" in result.stdout  # the layers the GPU holds: the last 13 of 81, output layer included


def test_weights_over_one_gpu_without_a_plan_still_say_does_not_fit(cli) -> None:
    result = cli("fit", "--model", "llama3-70b", "--gpu", "rtx4090", "--engine", "vllm", "--seq", "8192")
    assert result.exit_code == 1
    assert "does not fit:" in result.stdout and "try a larger --tp" in result.stdout


def test_the_placement_command_asks_for_the_swa_cache_the_plan_counts(cli) -> None:
    # kvcalc's llamacpp default counts full-size SWA caches (the library's); llama-server's own default is window-sized
    # (common/common.h: swa_full = false), so the printed command adds --swa-full, and --no-swa-full plans without it.
    args = ("fit", "--model", "gemma3-27b", "--gpu", "rtx4090", "--engine", "llamacpp", "--seq", "32768")
    full, windowed = cli.json(*args)["placement"], cli.json(*args, "--no-swa-full")["placement"]
    assert full["command"].endswith("--swa-full") and "--swa-full" not in windowed["command"]
    assert windowed["n_gpu_layers"] > full["n_gpu_layers"]  # window-sized caches leave room for more layers
    assert (
        "--swa-full"
        not in cli.json("fit", "--model", "llama3-70b", "--gpu", "rtx4090", "--engine", "llamacpp")["placement"]["command"]
    )
