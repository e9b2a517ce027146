"""`kvcalc check`: a CI budget check of a plan's workloads against their expectations."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kvcalc import presets
from kvcalc.cli.common import JsonOpt, RooflineOpt, print_json, single_command, warn
from kvcalc.errors import DoesNotFit, KvcalcError


def check(
    plan: Annotated[
        Path,
        typer.Argument(
            metavar="PLAN.yaml", help="Plan YAML: presets to add and workloads with their expectations (see docs/check.md)."
        ),
    ],
    roofline: RooflineOpt = False,
    json_out: JsonOpt = False,
) -> None:
    r"""CI budget check: exit 0 when every workload meets its expectations, 1 when one does not, 2 on a bad file.

    A plan is YAML. workloads: a list, each with name, model, gpu (or memory: 80GiB) and seq (8192 or 128k); optionally batch, tp, pp, kv_dtype, weight_dtype, block_size, engine (vllm, or {name: llamacpp, swa_full: false}), utilization, reserve, and expect: any of fits, max_batch_at_least, max_context_at_least, kv_bytes_at_most (bytes per GPU), decode_ms_at_most.

    Optional at the top: presets: \[files or folders, relative to the plan], and decode_judge: roofline. decode_ms_at_most judges the expected time per token, or the roofline's with --roofline or decode_judge: roofline.

    Example plan: workloads: \[{name: chat, model: llama3-8b, gpu: h100-sxm, seq: 8k, batch: 16, expect: {fits: true, max_batch_at_least: 16}}]

    The full reference: docs/check.md.
    """
    from kvcalc.check import CheckReport, Plan, check_workload

    plan_spec, sources = presets.load_plan(plan, Plan)
    judge = "roofline" if roofline else plan_spec.decode_judge
    verdicts = []
    specs: dict[tuple[presets.Kind, str], Any] = {}  # each name resolved once, however many workloads use it

    def resolve(kind: presets.Kind, ref: str) -> Any:
        if (kind, ref) not in specs:
            specs[kind, ref] = sources.resolve(kind, ref)
        return specs[kind, ref]

    for planned in plan_spec.workloads:
        where = f"{plan}: workload {planned.name!r}"
        try:
            model_spec = resolve("models", planned.model)
            gpu_spec = resolve("gpus", planned.gpu) if planned.gpu else None
            verdicts.append(check_workload(planned, model_spec, gpu_spec, judge))
        except KvcalcError as exc:
            raise type(exc)(f"{where}: {exc}") from None
    report = CheckReport(passed=all(v.passed for v in verdicts), workloads=verdicts)
    for verdict in verdicts:
        for warning in verdict.warnings:
            warn(f"{plan}: workload {verdict.name!r}: {warning}")
    if json_out:
        print_json(report)
    else:
        from kvcalc import render

        render.check_table(report)
    if not report.passed:
        raise typer.Exit(DoesNotFit.exit_code)


app = single_command(check)
