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
import json
import sys

from kvcalc.compare import derive, parse_variant
from kvcalc.measure.runner import measure
from kvcalc.presets import load_gpu, load_model
from kvcalc.spec import Workload
from kvcalc.units import format_bytes, parse_dtype


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
        report = measure(subjects, work, args.device, args.layers, None, peak, lambda _s: None)
        if args.json:
            print(json.dumps(report.flat()), file=sys.stderr)
        base = report.variants[0]
        for v in report.variants:
            best = min(v.measured_seconds, v.grouped_seconds)
            print(
                f"{dtype:6} {v.variant:8} {format_bytes(v.predicted_bytes):>11} {v.measured_seconds * 1e3:9.3f}ms"
                f" {v.grouped_seconds * 1e3:9.3f}ms {v.repeat_kv_seconds * 1e3:9.3f}ms {v.predicted_seconds * 1e3:9.3f}ms {v.bound:8}"
                f" {best / v.predicted_seconds:8.2f}x {v.share_of_copy_bandwidth:10.0%} {base.measured_seconds / v.measured_seconds:8.2f}x"
                f" {base.predicted_bytes / v.predicted_bytes:6.1f}x"
            )
        print(
            f"# {report.device_name}, torch {report.torch_version}, {report.threads} threads, load {report.load_average:.2f},"
            f" copy bandwidth {report.copy_bandwidth_bytes_per_s / 1e9:.1f} GB/s, SDPA backend {base.sdpa_backend},"
            f" layers {base.layers_measured}/{base.layers_total}, batch {base.batch}, seq {base.seq}"
            + ("; NOISY" if report.busy or any(v.noisy for v in report.variants) else "")
        )


if __name__ == "__main__":
    main()
