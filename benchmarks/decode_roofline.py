"""Decode against its roofline: MHA, GQA and MQA caches of one model, measured in one run.

    python benchmarks/decode_roofline.py --device cpu --seq 8192 --batch 4 --layers 8 --variants mha,gqa:2,mqa
    python benchmarks/decode_roofline.py --device cpu ... --burners 2     # the same with 2 busy processes beside it
    python benchmarks/decode_roofline.py --device cuda --seq 32768 --batch 4 --dtypes bf16

Prints one row per (dtype, variant): KV bytes, the steady SDPA and grouped-matmul times, the roofline
prediction (read bandwidth and compute rate measured in the same run, interleaved with the steps),
the fastest path over the prediction, SDPA's share of the read bandwidth, and the speed-up over MHA
beside the byte ratio; then the run's verdict: judged, or why not. `--burners N` keeps N pure-Python
busy loops running through the measurement (the "busy machine" case).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
from collections.abc import Iterator
from contextlib import contextmanager

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


def _burn() -> None:
    while True:
        pass


@contextmanager
def burners(count: int) -> Iterator[None]:
    """`count` processes spinning on a core each for the duration."""
    procs = [multiprocessing.Process(target=_burn, daemon=True) for _ in range(count)]
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
            proc.join()


def ratio(value: float | None) -> str:
    return f"{value:8.2f}x" if value is not None else f"{'-':>9}"


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
    parser.add_argument("--burners", type=int, default=0, help="busy processes to run beside the measurement")
    parser.add_argument("--json", action="store_true", help="print the raw reports as JSON lines on stderr")
    parser.add_argument(
        "--each-at-least",
        type=int,
        default=None,
        metavar="BYTES",
        help="measure each variant alone, its batch raised until its cache holds at least BYTES",
    )
    args = parser.parse_args()

    model = load_model(args.model)
    subjects = [(name, derive(model, parse_variant(name))) for name in args.variants.split(",")]
    peak = load_gpu(args.gpu_preset) if args.gpu_preset else None
    print(
        f"{'dtype':6} {'variant':8} {'KV':>11} {'SDPA':>10} {'grouped':>10} {'roofline':>10} {'bound':8}"
        f" {'best/pred':>9} {'SDPA/pred':>9} {'SDPA/readBW':>11} {'speed-up':>9} {'bytes':>7}"
    )
    with burners(args.burners):
        for dtype in args.dtypes.split(","):
            work = Workload(seq=args.seq, batch=args.batch, kv_dtype=parse_dtype(dtype))
            if args.each_at_least:
                reports = [
                    measure([s], at_least(s[1], work, args.layers, args.each_at_least), args.device, args.layers, None, peak, lambda _s: None)
                    for s in subjects
                ]  # fmt: skip
            else:
                reports = [measure(subjects, work, args.device, args.layers, None, peak, lambda _s: None)]
            if args.json:
                for report in reports:
                    print(MeasureDocument.of(report).model_dump_json(), file=sys.stderr)
            base = reports[0].variants[0]
            same_shape = len(reports) == 1  # speed-ups only compare variants measured at one shape
            for report in reports:
                for v in report.variants:
                    speedup = f"{base.fastest_seconds / v.fastest_seconds:8.2f}x" if same_shape else f"{'-':>9}"
                    byte_ratio = f"{base.predicted_bytes / v.predicted_bytes:6.1f}x" if same_shape else f"{'-':>7}"
                    print(
                        f"{dtype:6} {v.variant:8} {format_bytes(v.predicted_bytes):>11} {v.measured_seconds * 1e3:9.3f}ms"
                        f" {v.grouped_seconds * 1e3:9.3f}ms {v.predicted_seconds * 1e3:9.3f}ms {v.bound:8}"
                        f" {ratio(v.fastest_over_predicted)} {ratio(v.measured_over_predicted)}"
                        f" {v.share_of_read_bandwidth:10.0%} {speedup} {byte_ratio}"
                    )
                print(
                    f"# {report.device_name}, torch {report.torch_version}, {report.threads} threads, load {report.load_average:.2f},"
                    f" read bandwidth {report.read_bandwidth_bytes_per_s / 1e9:.1f} GB/s, copy {report.copy_bandwidth_bytes_per_s / 1e9:.1f} GB/s,"
                    f" SDPA backend {report.variants[0].sdpa_backend}, layers {report.variants[0].layers_measured}/{report.variants[0].layers_total},"
                    f" batch {report.variants[0].batch}, seq {report.variants[0].seq}, burners {args.burners}"
                )
                if report.judged:
                    print(f"# judged: every figure held within {report.tolerance:.2f}x")
                for why in report.why:
                    print(f"# cannot judge: {why}")


if __name__ == "__main__":
    main()
