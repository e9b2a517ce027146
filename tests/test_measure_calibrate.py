"""measure --calibrate: a fit of streaming bandwidth and overhead per layer, saved as a GPU file decode reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from kvcalc.measure.calibrate import calibration, fit_stream
from kvcalc.measure.figures import summarise
from kvcalc.presets import load_gpu


@given(
    seconds_per_byte=st.floats(1e-13, 1e-8),
    overhead=st.floats(0, 1e-3),
    sizes=st.lists(st.integers(1 << 20, 1 << 30), min_size=2, max_size=3, unique=True),
)
def test_fit_recovers_exact_terms(seconds_per_byte: float, overhead: float, sizes: list[int]) -> None:
    points = [(b, n, b * seconds_per_byte + n * overhead) for b in sizes for n in (1, 4, 16, 64)]
    a, b = fit_stream(points)
    assert a == pytest.approx(seconds_per_byte, rel=1e-6)
    assert b == pytest.approx(overhead, rel=1e-6, abs=1e-12)


def test_fit_needs_bytes_and_layers_apart() -> None:
    with pytest.raises(ValueError):
        fit_stream([(100, 1, 1.0), (200, 2, 2.0)])  # layers proportional to bytes: the terms cannot be told apart


def test_calibrate_saves_a_gpu_file_decode_uses(cli, tmp_path: Path) -> None:
    saved = tmp_path / "this-cpu.yaml"
    doc = cli.json("measure", "--calibrate", "--device", "cpu", "--max-memory", "32MiB", "--save", saved)
    result = doc["calibration"]
    assert doc["saved"] == str(saved) and len(result["points"]) == 8
    assert max(p["bytes_read"] for p in result["points"]) == 32 * 2**20  # the buffer --max-memory allows, no more
    assert result["bandwidth_bytes_per_s"] > 0 and result["overhead_seconds_per_layer"] >= 0
    raw = yaml.safe_load(saved.read_text())
    assert raw["decode_efficiency"] == 1.0 and raw["bandwidth_bytes_per_s"] == round(result["bandwidth_bytes_per_s"])
    gpu = load_gpu(str(saved))
    assert gpu.name == "this-cpu" and gpu.decode_overhead_s_per_layer == result["overhead_seconds_per_layer"]
    decode = cli.json("decode", "--gpu", saved, "--model", "llama3-8b", "--seq", "1024")["decode"]
    expected = decode["expected"]
    assert expected["efficiency"] == 1.0 and expected["overridden"] == []
    assert expected["overhead_seconds_per_layer"] == gpu.decode_overhead_s_per_layer
    assert expected["memory_seconds"] == pytest.approx(expected["bytes_moved"] / gpu.bandwidth_bytes_per_s)
    assert expected["overhead_seconds"] == pytest.approx(32 * gpu.decode_overhead_s_per_layer)
    assert decode["expected_seconds_per_token"] == pytest.approx(
        max(
            decode["seconds_per_token"],
            max(expected["memory_seconds"], expected["compute_seconds"]) + expected["overhead_seconds"],
        )
    )
    explain = cli("decode", "--gpu", saved, "--model", "llama3-8b", "--explain").stdout
    assert "this-cpu's decode_overhead_s_per_layer" in explain and "this-cpu's decode_efficiency" in explain


def test_calibrate_table_sets_the_profiles_beside(cli) -> None:
    result = cli("measure", "--calibrate", "--device", "cpu", "--max-memory", "32MiB", "--gpu-preset", "h100-sxm")
    assert result.exit_code == 0, result.output
    assert "measured (efficiency 1.0)" in result.stdout and "mode graphs" in result.stdout
    # the fitted 16-bit efficiency on the H100 SXM (capped at the peak) x its 3.35 TB/s
    assert "1 x 3350 = 3350 GB/s" in result.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--save", "x.yaml"], "--save writes a calibration: give --calibrate"),
        (["--calibrate", "--save", "x.json"], "--save 'x.json': give a file ending in .yaml"),
        (["--calibrate", "--plot", "x.png"], "--plot draws a measure run, not a calibration"),
        (["--calibrate", "--save", "nodir/x.yaml"], "--save 'nodir/x.yaml': folder 'nodir' does not exist"),  # before calibrating
    ],
)
def test_calibrate_bad_input(cli, args: list[str], expected: str) -> None:
    result = cli("measure", "--device", "cpu", *args)
    assert result.exit_code == 2 and expected in result.stderr, result.output


def test_gpu_file_terms_are_checked(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmemory_bytes: 1000\nbandwidth_bytes_per_s: 1000\nbf16_flops: 1000\ndecode_efficiency: 1.5\n")
    result = cli("decode", "--gpu", bad, "--model", "llama3-8b")
    assert result.exit_code == 2 and "decode_efficiency" in result.stderr


def test_a_point_far_off_the_line_is_left_out() -> None:
    """A burst that slows one point 8x does not move the fit: it is refitted without it, and says so."""
    env = {"device": "cpu", "device_name": "test", "torch_version": "x", "threads": 2, "load_average": 0.0, "cpu_count": 2}
    points = []
    for size in (2**26, 2**27):
        for layers in (1, 4, 16, 64):
            seconds = size * 1e-10 + layers * 2e-5
            seconds *= 8 if (size, layers) == (2**27, 16) else 1
            points.append((size, layers, summarise("p", [seconds] * 4)))
    result = calibration(points, env, 2**30, ("fp32", 1e10))
    assert result.bandwidth_bytes_per_s == pytest.approx(1e10)
    assert result.overhead_seconds_per_layer == pytest.approx(2e-5)
    assert result.notes == [
        "left out of the fit, more than 1.33x off the line of the others (a busy machine's bursts): 16 layers of 128.00 MiB"
    ]
