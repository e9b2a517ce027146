"""measure --calibrate: a device's streaming bandwidth and fixed cost per layer of a decode step,
fitted from decode-shaped runs, set beside the decode profiles' terms and saved as a GPU file. torch-free.

The same bytes are read by decode's kernel split over 1 to 64 layers, at two sizes; each point's
figure is its steady time (kvcalc.measure.figures), and least squares over the points (dropping,
one at a time, the point the line misses most while it misses it by more than the tolerance) fits

    t = bytes / bandwidth + layers * overhead_per_layer

which is the expected-decode model's (kvcalc.latency) at efficiency 1.0 against the measured bandwidth.
"""

from __future__ import annotations

import math
from datetime import date

from kvcalc.base import Frozen
from kvcalc.decode_profiles import MODE_LABELS, profile_for, terms
from kvcalc.errors import MeasureUnavailable
from kvcalc.measure.figures import TOLERANCE, Figure, unsteady
from kvcalc.spec import GpuSpec
from kvcalc.units import format_bytes, format_seconds

LAYER_COUNTS = (1, 4, 16, 64)  # the same bytes split over this many layers (one kernel call each)
SIZE_SHARES = (1, 2)  # the buffer, and half of it
MIN_POINTS = 4  # the fit keeps at least this many points


class CalibrationPoint(Frozen):
    """One decode-shaped run: its bytes and layers, its steady time, and the fit's time for it."""

    bytes_read: int
    layers: int
    figure: Figure
    fitted_seconds: float


class Calibration(Frozen):
    """The fitted terms, the points they rest on, and the device they were measured on."""

    device: str
    device_name: str
    torch_version: str
    threads: int
    load_average: float
    busy: bool
    memory_bytes: int  # the device's total memory (a CPU: MemTotal)
    matmul_dtype: str
    matmul_flops_per_s: float  # a large square matmul's steady rate
    bandwidth_bytes_per_s: float  # 1 / the fitted seconds per byte
    overhead_seconds_per_layer: float  # the fitted seconds per layer, 0 when the fit went below
    points: list[CalibrationPoint]
    why: list[str]  # figures that did not hold still; empty when every point did
    notes: list[str]


def fit_stream(points: list[tuple[int, int, float]]) -> tuple[float, float]:
    """Least squares of t = bytes * a + layers * b over (bytes, layers, seconds) points, without an
    intercept: (a, b), seconds per byte and per layer.

    >>> a, b = fit_stream([(100, 1, 1.5), (100, 4, 3.0), (50, 1, 1.0), (50, 4, 2.5)])
    >>> round(a, 6), round(b, 6)
    (0.01, 0.5)
    """
    sbb = sum(b * b for b, _, _ in points)
    sll = sum(n * n for _, n, _ in points)
    sbl = sum(b * n for b, n, _ in points)
    sbt = sum(b * t for b, _, t in points)
    slt = sum(n * t for _, n, t in points)
    det = sbb * sll - sbl * sbl
    if det <= 0:
        raise ValueError("the points do not separate bytes from layers")
    return (sbt * sll - slt * sbl) / det, (slt * sbb - sbt * sbl) / det


def _miss(point: tuple[int, int, Figure], per_byte: float, per_layer: float) -> float:
    """How far the line misses a point: |log(measured / fitted)|."""
    fitted = point[0] * per_byte + point[1] * per_layer
    return abs(math.log(point[2].steady_seconds / fitted)) if fitted > 0 else math.inf


def calibration(points: list[tuple[int, int, Figure]], environment: dict, memory_bytes: int,
                matmul: tuple[str, float]) -> Calibration:  # fmt: skip
    """The fitted terms of the points' steady times; an error when they give no positive bandwidth."""
    kept = list(points)
    per_byte, per_layer = fit_stream([(b, n, f.steady_seconds) for b, n, f in kept])
    while len(kept) > MIN_POINTS:  # drop the point the line misses most, while it misses it by more than the tolerance
        misses = [_miss(p, per_byte, per_layer) for p in kept]
        worst = kept[misses.index(max(misses))]
        if max(misses) <= math.log(TOLERANCE):
            break
        try:
            fitted = fit_stream([(b, n, f.steady_seconds) for b, n, f in kept if (b, n) != worst[:2]])
        except ValueError:
            break
        kept.remove(worst)
        per_byte, per_layer = fitted
    left_out = [(b, n) for b, n, _ in points if all((b, n) != k[:2] for k in kept)]
    notes = []
    if left_out:
        notes.append(
            f"left out of the fit, more than {TOLERANCE:.2f}x off the line of the others (a busy machine's bursts):"
            f" {', '.join(f'{n} layers of {format_bytes(b)}' for b, n in left_out)}"
        )
    if per_byte <= 0:
        raise MeasureUnavailable("the calibration runs gave no positive bandwidth (time fell as bytes grew): run it again")
    if per_layer < 0:
        notes.append(f"the fit gave a negative overhead per layer ({format_seconds(per_layer)}): taken as 0")
        per_layer = 0.0
    return Calibration(
        device=environment["device"],
        device_name=environment["device_name"],
        torch_version=environment["torch_version"],
        threads=environment["threads"],
        load_average=environment["load_average"],
        busy=environment["load_average"] > (environment["cpu_count"] or 1) + 0.5,
        memory_bytes=memory_bytes,
        matmul_dtype=matmul[0],
        matmul_flops_per_s=matmul[1],
        bandwidth_bytes_per_s=1 / per_byte,
        overhead_seconds_per_layer=per_layer,
        points=[
            CalibrationPoint(bytes_read=b, layers=n, figure=f, fitted_seconds=b * per_byte + n * per_layer) for b, n, f in points
        ],
        why=unsteady([f for _, _, f in points], TOLERANCE),
        notes=notes,
    )


def profile_terms(result: Calibration, preset: GpuSpec | None) -> list[tuple[str, str, str]]:
    """(source, streaming bandwidth, overhead per layer) rows: the measured terms, then each decode
    mode's fitted ones (16-bit weights through fused kernels: the preset GPU's and the kernels'
    efficiency x its bandwidth, when a preset is given)."""
    rows = [
        (
            "measured (efficiency 1.0)",
            f"{result.bandwidth_bytes_per_s / 1e9:.4g} GB/s",
            format_seconds(result.overhead_seconds_per_layer),
        )
    ]
    engines = {"graphs": "vllm", "eager": "exllama", "transformers": "hf", "mlx": "mlx", "llamacpp-cuda-legacy": "llamacpp"}
    for mode in MODE_LABELS:
        backend = {"llamacpp-metal": "metal", "llamacpp-rocm-vulkan": "rocm"}.get(mode, "cuda")
        profile = profile_for(engines.get(mode, "llamacpp"), backend=backend, legacy_llamacpp=mode == "llamacpp-cuda-legacy")
        fitted = terms(profile, "16-bit", False, preset.name if preset else "", None)
        eff = round(fitted.weights_efficiency, 3)
        stream = (
            f"{eff:g} x {preset.bandwidth_bytes_per_s / 1e9:.4g} = {eff * preset.bandwidth_bytes_per_s / 1e9:.4g} GB/s"
            if preset
            else f"{eff:g} x peak"
        )
        rows.append((f"mode {mode}", stream, format_seconds(fitted.layer_seconds)))
    return rows


def gpu_file(result: Calibration, name: str) -> GpuSpec:
    """The GPU preset of a calibration: its measured bandwidth at decode efficiency 1.0 and its overhead per layer."""
    return GpuSpec(
        name=name,
        memory_bytes=result.memory_bytes,
        bandwidth_bytes_per_s=round(result.bandwidth_bytes_per_s),
        bf16_flops=round(result.matmul_flops_per_s),
        decode_efficiency=1.0,
        decode_overhead_s_per_layer=result.overhead_seconds_per_layer,
        source=f"kvcalc measure --calibrate on {result.device_name} ({result.device}, {result.threads} threads,"
        f" load {result.load_average:.1f}), {date.today().isoformat()}",
        notes=f"bandwidth: decode-shaped streaming reads fitted with a per-layer cost over {len(result.points)} points;"
        f" bf16_flops: a {result.matmul_dtype} square matmul's steady rate"
        + (
            "; measured on a CPU, backend left at cuda: the measured overhead replaces every profile's"
            if result.device == "cpu"
            else ""
        ),
    )
