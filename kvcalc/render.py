"""Rich tables and JSON for the CLI: the only module that imports rich."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from kvcalc.capacity import FitReport, ParamCount
from kvcalc.kvcache import KvEstimate
from kvcalc.latency import DecodeEstimate, PrefillEstimate
from kvcalc.units import format_bytes, format_seconds

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(document: dict[str, Any]) -> None:
    """One JSON document on stdout; bytes stay integers."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def warn(message: str) -> None:
    """A one-line warning on stderr."""
    err_console.print(f"[yellow]warning:[/] {message}")


def error(message: str) -> None:
    """A one-line error on stderr."""
    err_console.print(f"[red]Error:[/] {message}", markup=True)


def _bytes_cell(n: int, decimal: bool) -> str:
    return f"{n:,} B  ({format_bytes(n, decimal)})"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    return table


def _explain(lines: list[str]) -> None:
    for line in lines:
        console.print(f"  {line}", markup=False, soft_wrap=True)


def kv_table(kv: KvEstimate, decimal: bool, explain: bool) -> None:
    """The KV-cache figures of `size`."""
    where = f", tp {kv.tp}" if kv.tp > 1 else ""
    where += f", pp {kv.pp}" if kv.pp > 1 else ""
    paged = f", pages of {kv.block_size}" if kv.block_size else ""
    table = _table(f"KV cache: {kv.model}, {kv.kv_dtype.value}, seq {kv.seq:,}, batch {kv.batch}{where}{paged}", "", "bytes")
    table.add_row("per token (all layers)", _bytes_cell(kv.bytes_per_token, decimal))
    table.add_row(f"per sequence ({kv.seq:,} tokens)", _bytes_cell(kv.bytes_per_sequence, decimal))
    table.add_row(f"batch of {kv.batch}", _bytes_cell(kv.bytes_per_batch, decimal))
    if kv.tp > 1 or kv.pp > 1:
        table.add_row("per GPU (busiest)", _bytes_cell(kv.bytes_per_gpu, decimal))
    if kv.block_size:
        table.add_row("paging waste vs exact", _bytes_cell(kv.paging_waste_bytes, decimal))
    console.print(table)
    if len(kv.groups) > 1 or kv.groups[0].kind != "full":
        groups = _table("Per layer kind", "kind", "layers", "B/token/layer", "tokens held", "per sequence")
        for g in kv.groups:
            kind = f"sliding W={g.window:,}" if g.kind == "sliding" else g.kind
            groups.add_row(kind, str(g.layers), f"{g.bytes_per_token_per_layer:,}", f"{g.tokens_held:,}", format_bytes(g.bytes_per_sequence, decimal))
        console.print(groups)
    if kv.replicated_kv_heads:
        warn(f"tp {kv.tp} exceeds the KV heads: each GPU keeps a replica of one KV head")
    if explain:
        _explain(kv.explain)


def weights_line(params: ParamCount | None, weights_bytes: int | None, dtype: str, decimal: bool) -> None:
    """The weights' size, or why it is unknown."""
    if params is None or weights_bytes is None:
        console.print("weights: unknown (the model gives neither params nor hidden/intermediate/vocab)")
        return
    how = "counted from the shapes" if params.from_shapes else "published"
    active = f", {params.active:,} active per token" if params.active != params.total else ""
    console.print(f"weights: {params.total:,} params ({how}{active}) in {dtype} = {_bytes_cell(weights_bytes, decimal)}")


def fit_tables(report: FitReport, model: str, gpu: str, decimal: bool, explain: bool) -> None:
    """The budget breakdown and what fits."""
    b = report.budget
    table = _table(f"Budget per GPU: {gpu}", "", "bytes")
    table.add_row("memory", _bytes_cell(b.memory_bytes, decimal))
    table.add_row(f"not used (utilization {b.utilization:g})", _bytes_cell(b.memory_bytes - int(b.memory_bytes * b.utilization), decimal))
    table.add_row("reserve (runtime, activations)", _bytes_cell(b.reserve_bytes, decimal))
    table.add_row("weights", _bytes_cell(b.weights_bytes, decimal))
    table.add_row("left for KV cache", _bytes_cell(b.usable_bytes, decimal))
    console.print(table)
    if explain:
        _explain(b.explain)
    if not report.weights_fit:
        console.print(f"[red]does not fit:[/] the weights exceed the budget by {-b.usable_bytes:,} B ({format_bytes(-b.usable_bytes, decimal)}); try a larger --tp or a smaller --weight-dtype (fp8, int4)")
        return
    verdict = "[green]fits[/]" if report.fits else f"[red]does not fit[/] (short by {format_bytes(report.shortfall_bytes, decimal)})"
    console.print(f"batch {report.batch} at {report.seq:,} tokens needs {format_bytes(report.kv_bytes_per_gpu, decimal)} of KV per GPU: {verdict}")
    console.print(f"max batch at {report.seq:,} tokens: [bold]{report.max_batch}[/] (limited by {report.max_batch_limit.replace('_', ' ')};"
                  f" {report.bytes_per_sequence_per_gpu:,} B per sequence per GPU)")
    console.print(f"max context at batch {report.batch}: [bold]{report.max_context:,}[/] tokens (limited by {report.max_context_limit.replace('_', ' ')})")
    if report.paging_waste_bytes_at_max_batch:
        console.print(f"paging waste at max batch: {format_bytes(report.paging_waste_bytes_at_max_batch, decimal)} against the exact need")
    if report.max_batch_by_context:
        ctx = _table("Max batch by context", "context", *[f"{s:,}" for s in report.max_batch_by_context])
        ctx.add_row("max batch", *[str(v) for v in report.max_batch_by_context.values()])
        console.print(ctx)


def decode_tables(step: DecodeEstimate, first: PrefillEstimate | None, decimal: bool, explain: bool) -> None:
    """Decode roofline and, when given, prefill."""
    r = step.roofline
    table = _table(f"Decode: {step.model} on {step.gpu}, batch {step.batch}, context {step.seq:,}"
                   + (f", tp {step.tp}" if step.tp > 1 else "") + (f", efficiency {step.efficiency:g}" if step.efficiency < 1 else ""), "", "value")
    table.add_row("bytes read per step (per GPU)", _bytes_cell(r.bytes_moved, decimal))
    table.add_row("  weights / KV", f"{format_bytes(step.weights_read_bytes, decimal)} / {format_bytes(step.kv_read_bytes, decimal)}")
    table.add_row("memory time", format_seconds(r.memory_seconds))
    table.add_row("compute time", format_seconds(r.compute_seconds))
    table.add_row("time per output token", f"[bold]{format_seconds(step.seconds_per_token)}[/] ({r.bound}-bound)")
    table.add_row("tokens/s per sequence / total", f"{step.tokens_per_s_per_sequence:,.1f} / {step.tokens_per_s:,.1f}")
    table.add_row("arithmetic intensity vs ridge", f"{r.arithmetic_intensity:,.1f} vs {r.ridge_point:,.0f} FLOP/B")
    if first is not None:
        table.add_row(f"prefill of {first.seq:,} tokens (TTFT)", f"{format_seconds(first.seconds)} ({first.roofline.bound}-bound)")
        table.add_row("naive attention scores per layer", format_bytes(first.naive_scores_bytes_per_layer, decimal))
        table.add_row("FlashAttention row stats per layer", format_bytes(first.flash_stats_bytes_per_layer, decimal))
    console.print(table)
    if explain:
        _explain(step.explain)


def presets_tables(document: dict[str, list[dict[str, str]]]) -> None:
    """The presets list."""
    for kind, entries in document.items():
        table = _table(f"{kind} ({len(entries)})", "name", "origin", "file")
        for e in entries:
            table.columns[2].justify = "left"
            table.add_row(e["name"], e["origin"], e["path"])
        console.print(table)


def spec_table(document: dict[str, Any]) -> None:
    """One preset's fields."""
    table = _table(str(document.get("name")), "field", "value")
    table.columns[1].justify = "left"
    for key, value in document.items():
        table.add_row(key, f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value))
    console.print(table)
