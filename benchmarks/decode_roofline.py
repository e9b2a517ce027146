"""Decode against its roofline: MHA, GQA and MQA caches of one model, measured in one run.

    python benchmarks/decode_roofline.py --device cpu --seq 2048 --batch 1 --layers 8 --dtypes fp32,bf16
    python benchmarks/decode_roofline.py --device cuda --seq 32768 --batch 4 --dtypes bf16

Prints one row per (dtype, variant): KV bytes, measured SDPA and grouped-matmul times, the
roofline prediction (measured copy bandwidth and compute rate), the fastest path over the
prediction, SDPA's share of the copy bandwidth, and the speed-up over MHA beside the byte ratio.
Ratios come from one run on one machine; absolute times on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import sys

from kvcalc.compare import derive, parse_variant
from kvcalc.documents import MeasureDocument
from kvcalc.kvcache import estimate_kv
from kvcalc.measure.plan import truncated
from kvcalc.measure.runner import measure
from kvcalc.presets import load_gpu, load_model
from kvcalc.spec import ModelSpec, Workload
from kvcalc.units import format_bytes, parse_dtype


def at_least(model: ModelSpec, work: Workload, layers: int | None, target: int) -> Workload:
    """The workload with its batch doubled until the measured layers' cache holds `target` bytes."""
    measured = truncated(model, min(layers or model.layers, model.layers))
    while estimate_kv(measured, work).bytes_per_batch < target:
        work = work.model_copy(update={"batch": work.batch * 2})
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="llama3-8b")
    parser.add_argument("--variants", default="mha,gqa,mqa")
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--dtypes", default="fp32")
    parser.add_argument("--gpu-preset", default=None)
    parser.add_argument("--json", action="store_true", help="print the raw reports as JSON lines")
    parser.add_argument(
        "--each-at-least",
        type=int,
        default=None,
        metavar="BYTES",
        help="measure each variant alone, its batch raised until its cache holds at least BYTES (roofline accuracy)",
    )
    args = parser.parse_args()

    model = load_model(args.model)
    subjects = [(name, derive(model, parse_variant(name))) for name in args.variants.split(",")]
    peak = load_gpu(args.gpu_preset) if args.gpu_preset else None
    print(
        f"{'dtype':6} {'variant':8} {'KV':>11} {'SDPA':>10} {'grouped':>10} {'repeat_kv':>10} {'roofline':>10} {'bound':8}"
        f" {'best/pred':>9} {'SDPA/copyBW':>11} {'speed-up':>9} {'bytes':>7}"
    )
    for dtype in args.dtypes.split(","):
        work = Workload(seq=args.seq, batch=args.batch, kv_dtype=parse_dtype(dtype))
        if args.each_at_least:
            reports = [
                measure(
                    [s],
                    at_least(s[1], work, args.layers, args.each_at_least),
                    args.device,
                    args.layers,
                    None,
                    peak,
                    lambda _s: None,
                )
                for s in subjects
            ]
        else:
            reports = [measure(subjects, work, args.device, args.layers, None, peak, lambda _s: None)]
        if args.json:
            for report in reports:
                print(MeasureDocument.of(report).model_dump_json(), file=sys.stderr)
        base = reports[0].variants[0]
        same_shape = len(reports) == 1  # speed-ups only compare variants measured at one shape
        for report in reports:
            for v in report.variants:
                best = min(v.measured_seconds, v.grouped_seconds)
                speedup = f"{base.measured_seconds / v.measured_seconds:8.2f}x" if same_shape else f"{'-':>9}"
                ratio = f"{base.predicted_bytes / v.predicted_bytes:6.1f}x" if same_shape else f"{'-':>7}"
                print(
                    f"{dtype:6} {v.variant:8} {format_bytes(v.predicted_bytes):>11} {v.measured_seconds * 1e3:9.3f}ms"
                    f" {v.grouped_seconds * 1e3:9.3f}ms {v.repeat_kv_seconds * 1e3:9.3f}ms {v.predicted_seconds * 1e3:9.3f}ms"
                    f" {v.bound:8} {best / v.predicted_seconds:8.2f}x {v.share_of_copy_bandwidth:10.0%} {speedup} {ratio}"
                )
            print(
                f"# {report.device_name}, torch {report.torch_version}, {report.threads} threads, load {report.load_average:.2f},"
                f" copy bandwidth {report.copy_bandwidth_bytes_per_s / 1e9:.1f} GB/s, SDPA backend {report.variants[0].sdpa_backend},"
                f" layers {report.variants[0].layers_measured}/{report.variants[0].layers_total},"
                f" batch {report.variants[0].batch}, seq {report.variants[0].seq}"
                + ("; NOISY" if report.busy or any(v.noisy for v in report.variants) else "")
            )


if __name__ == "__main__":
    main()
