"""Rich tables, warnings and errors for the CLI: the only module that imports rich, loaded only to print one."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kvcalc.decode_profiles import MIN_BAND_CASES
from kvcalc.kvcache import KvEstimate
from kvcalc.units import format_bytes, format_seconds
from kvcalc.weights import MtpWeights, ParamCount, WeightFormat

if TYPE_CHECKING:  # annotations only: `size` and `fit` print their tables without importing these models,
    # and `size` without a GPU without importing capacity, latency or residents
    from kvcalc.capacity import FitReport
    from kvcalc.compare import CompareRow, Comparison, RowDecode, RowFit
    from kvcalc.latency import DecodeEstimate, PrefillEstimate
    from kvcalc.residents import CpuTier
    from kvcalc.speculative import SpeculativeDecode
    from kvcalc.throughput import Cost, ThroughputPlan

PIPED_WIDTH = 160  # columns when stdout is no terminal and COLUMNS is unset (CI logs): Rich would cut tables to 80
console = Console(highlight=False, width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else PIPED_WIDTH)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def warn(message: str) -> None:
    """A one-line warning on stderr."""
    err_console.print(f"[yellow]warning:[/] {escape(message)}")


def error(message: str) -> None:
    """A one-line error on stderr."""
    err_console.print(f"[red]Error:[/] {escape(message)}")


def _bytes_cell(n: int, decimal: bool) -> str:
    return f"{n:,} B  ({format_bytes(n, decimal)})"


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold")
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right", overflow="fold")  # wrap, never cut a figure
    return table


def _narrowest(column: Any, wraps: Sequence[str] = ()) -> int:
    """The narrowest a column can be without splitting a number or a name: its widest cell (its widest
    word where the column is one of `wraps`, whose cells are words), and the widest word of its header."""
    words = [str(column.header), *map(str, column._cells)] if column.header in wraps else [str(column.header)]
    whole = [] if column.header in wraps else [cell_len(str(cell)) for cell in column._cells]
    return max([*(cell_len(word) for text in words for word in text.split()), *whole], default=0)


def _print_table(table: Table, droppable: Sequence[str] = (), wraps: Sequence[str] = ()) -> None:
    """Print `table` so that no number or name is split across lines: on a terminal too narrow for
    every column's widest cell, leave out the `droppable` columns (the last named first) and say which."""
    dropped: list[str] = []
    needed = sum(_narrowest(c, wraps) + 3 for c in table.columns) + 1  # padding 1 + 1 and a border per column, and the last
    for header in reversed(droppable):
        if needed <= console.width:
            break
        table.columns[:] = [c for c in table.columns if c.header != header]
        dropped.insert(0, header)
        needed = sum(_narrowest(c, wraps) + 3 for c in table.columns) + 1
    natural = sum(max(cell_len(str(c.header)), _narrowest(c)) + 3 for c in table.columns) + 1
    if needed <= console.width < natural:  # each column at its narrowest, the room left to those that wrap most
        spare = console.width - needed
        for column in table.columns:
            narrow = _narrowest(column, wraps)
            column.width = narrow + min(spare, max(cell_len(str(column.header)), _narrowest(column)) - narrow)
            spare -= column.width - narrow
    console.print(table)
    if dropped:
        console.print(f"({', '.join(dropped)} left out at {console.width} columns: widen the terminal, or --json)", style="dim")


def _explain(lines: list[str]) -> None:
    for line in lines:
        console.print(f"  {line}", markup=False, soft_wrap=True)


def kv_table(kv: KvEstimate, decimal: bool, explain: bool) -> None:
    """The KV-cache figures of `size`."""
    where = f", tp {kv.tp}" if kv.tp > 1 else ""
    where += f", pp {kv.pp}" if kv.pp > 1 else ""
    paged = f", pages of {kv.block_size}" if kv.block_size else ""
    engine = f", engine {kv.engine}" if kv.engine != "textbook" else ""
    table = _table(f"KV cache: {kv.model}, {kv.cache_types}, seq {kv.seq:,}, batch {kv.batch}{where}{paged}{engine}", "", "bytes")
    compressed = any(g.compress_ratio for g in kv.groups)  # DeepSeek-V4: a recent token sits in windows and states
    label = "per recent token (windows, compressor states)" if compressed else "per token (all layers)"
    table.add_row(label, _bytes_cell(kv.bytes_per_token, decimal))
    unit = "shared buffer" if kv.allocation_units != kv.batch else "per sequence"
    tokens = f"n_ctx {kv.seq:,} / {kv.batch}" if kv.engine == "llamacpp" and kv.batch > 1 else f"{kv.seq:,} tokens"
    table.add_row(f"{unit} ({tokens})", _bytes_cell(kv.bytes_per_sequence, decimal))
    table.add_row(f"batch of {kv.batch}", _bytes_cell(kv.bytes_per_batch, decimal))
    if kv.state_groups:
        table.add_row("state per sequence (any context)", _bytes_cell(kv.state_bytes_per_sequence, decimal))
        table.add_row(f"state, batch of {kv.batch}", _bytes_cell(kv.state_bytes_per_batch, decimal))
        table.add_row(f"KV + state, batch of {kv.batch}", _bytes_cell(kv.total_bytes_per_batch, decimal))
    if kv.tp > 1 or kv.pp > 1:
        table.add_row("per GPU (busiest)", _bytes_cell(kv.bytes_per_gpu, decimal))
    if kv.paging_waste_bytes:
        table.add_row("allocated beyond the textbook need", _bytes_cell(kv.paging_waste_bytes, decimal))
    if kv.peak_bytes_per_batch > kv.bytes_per_batch:
        table.add_row("peak, right after prefill", _bytes_cell(kv.peak_bytes_per_batch, decimal))
    console.print(table)
    if len(kv.groups) > 1 or kv.state_groups or (kv.groups and kv.groups[0].kind != "full"):
        groups = _table("Per layer kind", "kind", "layers", "B/token/layer", "tokens held", "per sequence")
        for g in kv.groups:
            kind = f"{g.kind} {'W' if g.kind == 'sliding' else 'C'}={g.window:,}" if g.window else g.kind
            if g.compress_ratio is not None:  # DeepSeek-V4: every layer keeps its window, r > 1 compressed rows too
                kind = f"compressed r={g.compress_ratio}, W={g.window:,}" if g.compress_ratio > 1 else f"window W={g.window:,}"
            kind += " (shares an earlier cache)" if g.shared else ""
            groups.add_row(
                kind,
                str(g.layers),
                f"{g.bytes_per_token_per_layer:,}",
                f"{g.tokens_held:,}" + (f" + {g.compressed_rows:,} rows" if g.compressed_rows else ""),
                format_bytes(g.bytes_per_sequence, decimal),
            )
        for st in kv.state_groups:
            dtypes = (
                st.conv_dtype.value
                if st.conv_dtype == st.recurrent_dtype
                else f"{st.conv_dtype.value}/{st.recurrent_dtype.value}"
            )
            groups.add_row(
                f"{st.kind} state ({dtypes})",
                str(st.layers),
                "-",
                f"fixed {st.allocated_bytes_per_layer:,} B/layer",
                format_bytes(st.bytes_per_sequence, decimal),
            )
        console.print(groups)
    if kv.replicated_kv_heads:
        warn(f"tp {kv.tp} exceeds the KV heads: each GPU keeps a replica of one KV head")
    if explain:
        _explain(kv.explain)


def weights_line(params: ParamCount | None, weights_bytes: int | None, fmt: WeightFormat, decimal: bool, unknown: str) -> None:
    """The weights' size, or why it is `unknown`."""
    if params is None or weights_bytes is None:
        console.print(f"weights: {escape(unknown)}", soft_wrap=True)
        return
    how = (
        "summed from the checkpoint's tensors" if fmt.stored else "counted from the shapes" if params.from_shapes else "published"
    )
    active = f", {params.active:,} active per token" if params.active != params.total else ""
    console.print(
        f"weights: {params.total:,} params ({how}{active}) in {fmt.label} = {_bytes_cell(weights_bytes, decimal)}",
        soft_wrap=True,
    )


def mtp_line(mtp: MtpWeights | None, decimal: bool, explain: bool) -> None:
    """The MTP layers the checkpoint stores beside the weights above (not loaded unless drafting)."""
    if mtp is None:
        return
    if mtp.bytes is not None and mtp.params is not None:
        what = (
            f"stored in the checkpoint, not in the weights above: {mtp.params.total:,} params = {_bytes_cell(mtp.bytes, decimal)}"
        )
    else:
        what = escape(mtp.formula)
    console.print(f"MTP layers: {mtp.layers} {what} (loaded only with --speculative-model mtp)", soft_wrap=True)
    if explain:
        console.print(f"  {escape(mtp.formula)}; {escape(mtp.source)}", soft_wrap=True)


_CONTEXT_LIMITS = {
    "memory": "limited by memory",
    "max_positions": "limited by the model's max positions",
    "max_cache_len": "limited by the StaticCache's --max-cache-len",
    "max_seq_len": "limited by TensorRT-LLM's --max-seq-len",
    "unbounded": "no limit found: the model states no max positions and memory allows 2^31 tokens",
}


def _memory_alone(tokens: int | None) -> str:
    """What memory alone allows when another limit binds, as fit_tables words it."""
    from kvcalc.capacity import UNBOUNDED_CONTEXT  # a fit report's tables: capacity is loaded

    if tokens is None:
        return ""
    if tokens >= UNBOUNDED_CONTEXT:
        return "; memory alone sets no limit up to 2^31 tokens"
    return f"; memory would allow {tokens:,} tokens" if tokens else "; memory would allow none"


def fit_tables(
    report: FitReport, model: str, gpu: str, decimal: bool, explain: bool, placement_follows: bool = False, split_over: int = 0
) -> None:
    """The budget breakdown, term by term as the engine sees it, and what fits (`placement_follows`: a llama.cpp
    placement plan is printed next, so weights that overflow one GPU are not the last word; `split_over`: that plan's
    GPUs (1: one GPU and host RAM), so every figure here is one GPU holding the whole model's)."""
    b = report.budget
    engine = report.budget.engine.name
    one_gpu = ""
    if split_over:  # `size` prints this table too, without importing kvcalc.placement
        from kvcalc.placement import ONE_GPU_SCOPE as one_gpu

        where = f"splits the layers over {split_over} GPUs (-sm layer)" if split_over > 1 else "places the layers (its --fit)"
        console.print(
            f"llama.cpp {where}: the figures down to its placement are for {one_gpu},"
            " and the verdict and exit code follow the placement",
            soft_wrap=True,
        )
    title = (f"Budget of {one_gpu}: {gpu}" if one_gpu else f"Budget per GPU: {gpu}") + (
        f" ({engine})" if engine != "textbook" else ""
    )
    table = _table(title, "", "bytes")
    table.add_row("memory", _bytes_cell(b.memory_bytes, decimal))
    for term in b.terms:
        table.add_row(term.name, _bytes_cell(term.bytes, decimal))
    table.add_row("left for KV cache", _bytes_cell(b.usable_bytes, decimal))
    console.print(table)
    if explain:
        _explain(b.explain)
    if not report.weights_fit:
        short = f"{report.shortfall_bytes:,} B ({format_bytes(report.shortfall_bytes, decimal)})"
        if b.overcommitted_bytes:
            console.print(f"[red]does not fit:[/] the KV cache asked for and the rest exceed the memory by {short}")
        elif b.usable_bytes + b.reserve_bytes >= 0:  # the weights alone would fit: the overheads are what overflows
            overheads = "--reserve" if b.fraction.startswith("--utilization") else "the overheads (or --reserve)"
            console.print(
                f"[red]does not fit:[/] weights + {overheads} exceed the budget by {-b.usable_bytes:,} B"
                f" ({format_bytes(-b.usable_bytes, decimal)}); lower --reserve"
            )
        elif placement_follows:
            console.print(
                f"does not fit whole: the weights exceed one GPU's budget by {format_bytes(-b.usable_bytes, decimal)};"
                " the llama.cpp placement below keeps the rest in host RAM"
            )
            _engine_log(report)  # the cache lines hold wherever the layers go
        else:
            console.print(
                f"[red]does not fit:[/] the weights exceed the budget by {-b.usable_bytes:,} B ({format_bytes(-b.usable_bytes, decimal)});"
                " try a larger --tp or a smaller --weight-dtype (fp8, int4)"
            )
        return
    for pool in report.pools:
        window = f"window {pool.window:,}" if pool.window else "full attention"
        if pool.per_sequence:
            console.print(
                f"pool {pool.name}: {pool.tokens:,} state slots of {pool.layers} state layers ({pool.bytes_per_token:,} B per slot,"
                f" {format_bytes(pool.bytes, decimal)}); {pool.per_sequence} per running sequence"
            )
            continue
        console.print(
            f"pool {pool.name}: {pool.tokens:,} tokens of {pool.layers} {window} layers ({pool.bytes_per_token:,} B per token,"
            f" {format_bytes(pool.bytes, decimal)})"
        )
    if report.verdict == "tight":
        verdict = (
            f"[yellow]tight[/]: fits with {format_bytes(report.headroom_bytes, decimal)} to spare, within the engine's calibration"
            f" error ({format_bytes(report.margin_bytes, decimal)})"
        )
    elif report.refused:
        verdict = f"[red]does not start[/]: {report.refused}"
    elif report.fits:
        verdict = "[green]fits[/]"
    else:
        verdict = f"[red]does not fit[/] (short by {format_bytes(report.shortfall_bytes, decimal)})"
    console.print(
        f"batch {report.batch} at {report.context_per_sequence:,} tokens needs {format_bytes(report.kv_bytes_per_gpu, decimal)}"
        f" of KV{' and state' if report.state_bytes_per_sequence_per_gpu else ''}"
        + (f" on {one_gpu}: {verdict}" if one_gpu else f" per GPU: {verdict}")
    )
    if report.shared_prefix_tokens:
        console.print(
            f"shared prefix: {report.shared_prefix_tokens:,} tokens held once for the batch"
            f" ({format_bytes(report.shared_prefix_bytes_per_gpu, decimal)} per GPU); each sequence holds the rest of its context"
        )
    console.print(
        f"max batch at {report.context_per_sequence:,} tokens: [bold]{report.max_batch:,}[/] (limited by {report.max_batch_limit.replace('_', ' ')};"
        f" {report.bytes_per_sequence_per_gpu:,} B per sequence per GPU"
        + (
            f", of which {report.state_bytes_per_sequence_per_gpu:,} B of state whatever the context"
            if report.state_bytes_per_sequence_per_gpu
            else ""
        )
        + ")"
    )
    console.print(
        f"max context at batch {report.batch}: [bold]{report.max_context:,}[/] tokens per sequence"
        f" ({_CONTEXT_LIMITS[report.max_context_limit]}{_memory_alone(report.max_context_by_memory)})",
        soft_wrap=True,
    )
    if report.paging_waste_bytes_at_max_batch:
        console.print(
            f"allocated beyond the textbook need at max batch: {format_bytes(report.paging_waste_bytes_at_max_batch, decimal)} (pages, padding, reservations)"
        )
    _engine_log(report)
    if report.max_batch_by_context:
        ctx = _table("Max batch by context", "context", *[f"{s:,}" for s in report.max_batch_by_context])
        ctx.add_row("max batch", *[f"{v:,}" for v in report.max_batch_by_context.values()])
        console.print(ctx)


def split_verdict(laid_out: Any, max_batch: int | None = None, seq: int | None = None) -> None:
    """The verdict of llama.cpp's placement (a kvcalc.placement.Placement), which the exit code follows, and the
    largest batch of `seq`-token sequences it holds (placement_options.split_memory_batch)."""
    verdict = "[green]fits[/]" if laid_out.fits else "[red]does not fit[/] (a device is over)"
    n = len(laid_out.devices)
    where = f"split over {n} GPUs (-sm layer)" if n > 1 else "placement on one GPU and host RAM"
    held = ""
    if max_batch is not None and seq:
        held = f"; it holds {max_batch:,} sequence{'' if max_batch == 1 else 's'} of {seq:,} tokens"
    console.print(f"llama.cpp's {where}: {verdict}{held}", soft_wrap=True)


def _engine_log(report: FitReport) -> None:
    for logged in report.engine_log:
        console.print(f"{logged.engine} would log: {logged.line} ({logged.note})", soft_wrap=True)


def decode_tables(step: DecodeEstimate, first: PrefillEstimate | None, decimal: bool, explain: bool) -> None:
    """Decode roofline and, when given, prefill."""
    r = step.roofline
    table = _table(
        f"Decode: {step.model} on {step.gpu}, batch {step.batch}, context {step.seq:,}"
        + (f", tp {step.tp}" if step.tp > 1 else "")
        + (f", efficiency {step.efficiency:g}" if step.efficiency < 1 else ""),
        "",
        "value",
    )
    moved = "moved (state read and written back)" if step.state_read_bytes else "read"
    table.add_row(f"bytes {moved} per step (per TP rank)", _bytes_cell(r.bytes_moved, decimal))
    table.add_row(
        "  weights / KV", f"{format_bytes(step.weights_read_bytes, decimal)} / {format_bytes(step.kv_read_bytes, decimal)}"
    )
    if step.state_read_bytes:
        table.add_row(
            "  state read / written",
            f"{format_bytes(step.state_read_bytes, decimal)} / {format_bytes(step.state_written_bytes, decimal)}",
        )
    table.add_row("memory time", format_seconds(r.memory_seconds))
    table.add_row("compute time", format_seconds(r.compute_seconds))
    e = step.expected
    table.add_row("time per output token, roofline", f"{format_seconds(step.seconds_per_token)} ({r.bound}-bound)")
    table.add_row("  tokens/s per sequence / total", f"{step.tokens_per_s_per_sequence:,.1f} / {step.tokens_per_s:,.1f}")
    table.add_row(
        "time per output token, expected",
        f"[bold]{format_seconds(e.seconds)}[/] ({e.profile}{', overridden' if e.overridden else ''};"
        f" {e.share_of_roofline:.0%} of roofline speed)",
    )
    table.add_row(
        "  tokens/s per sequence / total",
        f"{step.expected_tokens_per_s_per_sequence:,.1f} / {step.expected_tokens_per_s:,.1f}",
    )
    band = e.band
    why = (
        f"widened: {band.group} has {band.cases} < {MIN_BAND_CASES} cases"
        if band.widened
        else f"{band.group}, {band.cases} cases"
    )
    table.add_row(
        "  band, 10th-90th pct", f"{step.expected_tokens_per_s_low:,.1f} - {step.expected_tokens_per_s_high:,.1f} ({why})"
    )
    if e.tp_comm_seconds:
        table.add_row(f"  of which all-reduces over {e.interconnect}", format_seconds(e.tp_comm_seconds))
    table.add_row("arithmetic intensity vs ridge", f"{r.arithmetic_intensity:,.1f} vs {r.ridge_point:,.0f} FLOP/B")
    if first is not None:
        table.add_row(
            f"prefill of {first.seq:,} tokens (TTFT)", f"{format_seconds(first.seconds)} ({first.roofline.bound}-bound)"
        )
        table.add_row("naive attention scores per layer", format_bytes(first.naive_scores_bytes_per_layer, decimal))
        table.add_row("FlashAttention row stats per layer", format_bytes(first.flash_stats_bytes_per_layer, decimal))
    console.print(table)
    if explain:
        _explain(step.explain)


def plot_written(path: Path) -> None:
    """The line that says where --plot drew its figure."""
    console.print(f"plot: {escape(str(path))}", soft_wrap=True)


def _attention_cell(model: Any) -> str:
    windows = {"sliding": model.sliding_window, "chunked": model.attention_chunk_size}
    kinds = [f"{kind} {windows[kind]:,}" if windows.get(kind) else kind for kind in model.attention]
    return " + ".join(kinds + model.state) or "-"


def _or_dash(value: int | None, show: Callable[[int], str] = "{:,}".format) -> str:
    return "-" if value is None else show(value)


def presets_tables(document: Any) -> None:
    """The presets list (document: kvcalc.documents.PresetsDocument): each model's shape and figures, each GPU's
    memory and bandwidth, and where a user preset comes from."""
    models = _table(
        f"models ({len(document.models)})", "name", "layers", "KV heads", "head dim", "layer kinds", "max context",
        "params", "KV / token", "state / seq", "origin",
    )  # fmt: skip
    for m in document.models:
        models.add_row(
            m.name, str(m.layers), "latent" if m.attention == ["mla"] else str(m.kv_heads), f"{m.head_dim}" + (f"/{m.v_head_dim}" if m.v_head_dim else ""),
            _attention_cell(m), _or_dash(m.max_positions), _or_dash(m.params, lambda n: f"{n / 1e9:,.2f}B"),
            _or_dash(m.kv_bytes_per_token, format_bytes), _or_dash(m.state_bytes_per_sequence or None, format_bytes),
            "shipped" if m.origin == "shipped" else escape(str(m.path)),
        )  # fmt: skip
    _print_table(
        models,
        droppable=("KV heads", "layer kinds", "head dim", "state / seq", "origin"),
        wraps=("layer kinds", "KV / token", "origin"),
    )
    gpus = _table(f"GPUs ({len(document.gpus)})", "name", "memory", "bandwidth", "origin")
    for g in document.gpus:
        gpus.add_row(
            g.name, format_bytes(g.memory_bytes), f"{format_bytes(g.bandwidth_bytes_per_s, decimal=True)}/s",
            "shipped" if g.origin == "shipped" else escape(str(g.path)),
        )  # fmt: skip
    _print_table(gpus, droppable=("origin",), wraps=("origin",))
    console.print(
        "params in billions (10^9); KV / token: all layers in the model's dtype on one GPU;"
        " state / seq: a hybrid's recurrent state per sequence, whatever the context",
        style="dim",
    )


def _field_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_field_value(v)}" for k, v in value.items() if v is not None)
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _shown_path(path: Path) -> str:
    """A file as the title names it: relative to the current folder when inside it, else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def spec_table(document: Any) -> None:
    """One preset's fields, each with where its value comes from (document: kvcalc.documents.PresetDocument)."""
    where = f": {escape(_shown_path(document.path))}" if document.path else ""
    table = _table(document.spec.name + where, "field", "source", "value")
    table.columns[1].justify = "left"
    table.columns[2].justify = "left"
    for key, value in document.spec.model_dump(mode="json").items():
        table.add_row(key, document.sources.get(key, ""), escape(_field_value(value)))
    console.print(table)


def measure_tables(report: Any, decimal: bool) -> None:
    """Predicted vs measured, one column per variant, then the verdict (report: kvcalc.measure.report.MeasureReport)."""
    console.print(
        f"device: {report.device_name} ({report.device}), torch {report.torch_version}, {report.threads} threads,"
        f" load {report.load_average:.2f}; measured read bandwidth {format_bytes(report.read_bandwidth_bytes_per_s, True)}/s"
        f" (decode's GEMV), copy {format_bytes(report.copy_bandwidth_bytes_per_s, True)}/s",
        soft_wrap=True,
    )
    per_rank = [f"per rank of tp {report.tp}"] if report.tp > 1 else []
    bytes_table = _table(
        "Cache bytes" + "".join(f" ({p})" for p in per_rank) + ": predicted vs allocated",
        "variant",
        "KV heads",
        "layers",
        "batch x seq",
        "predicted",
        "allocated",
        "diff",
    )
    for v in report.variants:
        bytes_table.add_row(
            v.variant,
            str(v.kv_heads) if v.kv_heads else "latent",
            f"{v.layers_measured}/{v.layers_total}",
            f"{v.batch} x {v.seq:,}",
            f"{v.predicted_bytes:,}",
            f"{v.allocated_bytes:,}",
            f"{v.bytes_difference:+,}",
        )
    console.print(bytes_table)
    times = _table(
        f"Decode step ({', '.join([report.variants[0].dtype, *per_rank])}): predicted vs measured (steady times)",
        "",
        *[v.variant for v in report.variants],
    )
    ratio = lambda r: "cannot judge" if r is None else f"{r:.2f}x"  # noqa: E731
    rows: list[tuple[str, Callable[[Any], str]]] = [
        (
            "peak BW (preset)",
            lambda v: format_seconds(v.predicted_seconds_at_peak) if v.predicted_seconds_at_peak else "-",
        ),
        ("copy BW (measured)", lambda v: format_seconds(v.predicted_seconds_at_copy_bandwidth)),
        ("read BW (measured)", lambda v: format_seconds(v.predicted_seconds_at_read_bandwidth)),
        ("compute (measured)", lambda v: format_seconds(v.predicted_compute_seconds)),
        ("roofline", lambda v: f"{format_seconds(v.predicted_seconds)} ({v.bound})"),
        ("SDPA", lambda v: f"[bold]{format_seconds(v.measured_seconds)}[/]"),
        ("SDPA p10-p90", lambda v: f"{v.sdpa.p10 * 1e3:.3g}-{v.sdpa.p90 * 1e3:.3g} ms"),
        ("grouped matmul", lambda v: format_seconds(v.grouped_seconds)),
        ("repeat_kv", lambda v: format_seconds(v.repeat_kv_seconds)),
        ("fastest / roofline", lambda v: f"[bold]{ratio(v.fastest_over_predicted)}[/]"),
        ("SDPA / roofline", lambda v: ratio(v.measured_over_predicted)),
        ("SDPA % of read BW", lambda v: f"{v.share_of_read_bandwidth:.0%}"),
        ("fastest", lambda v: v.fastest_path),
        ("SDPA backend", lambda v: v.sdpa_backend),
    ]
    times.columns[0].no_wrap = True
    for label, cell in rows:
        times.add_row(label, *[cell(v) for v in report.variants])
    console.print(times)
    if report.ranks:
        ranks = _table(
            "Tensor-parallel ranks",
            "rank",
            "device",
            "threads",
            "predicted",
            "allocated",
            "diff",
            "roofline",
            "decode",
            "all-reduce",
        )
        for r in report.ranks:
            ranks.add_row(
                str(r.rank), r.device, str(r.threads), f"{r.predicted_bytes:,}", f"{r.allocated_bytes:,}", f"{r.bytes_difference:+,}",
                format_seconds(r.predicted_seconds), format_seconds(r.decode_seconds), format_seconds(r.all_reduce_seconds),
            )  # fmt: skip
        console.print(ranks)
        s = report.tp_summary
        console.print(
            f"tp {s.tp}: {s.allocated_bytes:,} B allocated over all ranks for {s.predicted_bytes:,} B predicted"
            f" ({'exact on every rank' if s.every_rank_exact else 'NOT exact'}); step {format_seconds(s.step_seconds)}"
            f" = slowest decode (rank {s.slowest_rank}) {format_seconds(s.decode_seconds)} + all-reduce {format_seconds(s.all_reduce_seconds)}",
            soft_wrap=True,
        )
    base = report.variants[0]
    if len(report.variants) > 1:
        for v in report.variants[1:]:
            console.print(
                f"{v.variant} over {base.variant}: measured SDPA speed-up {base.measured_seconds / v.measured_seconds:.2f}x,"
                f" fastest path {base.fastest_seconds / v.fastest_seconds:.2f}x, byte ratio {base.predicted_bytes / v.predicted_bytes:.2f}x",
                soft_wrap=True,
            )
    for note in dict.fromkeys(n for v in report.variants for n in v.notes):
        console.print(f"note: {note}", soft_wrap=True)
    if any(v.bytes_difference for v in report.variants):
        console.print(
            "allocated differs from predicted: the caching allocator rounds each block up (512 B, or 2 MiB for large ones)",
            soft_wrap=True,
        )
    if report.judged:
        console.print(f"judged: every figure the prediction rests on held within {report.tolerance:.2f}x", soft_wrap=True)
    else:
        console.print(f"cannot judge this run (tolerance {report.tolerance:.2f}x):", soft_wrap=True, markup=False)
        for reason in report.why:
            console.print(f"  {reason}", soft_wrap=True, markup=False)
    if report.busy or any(v.noisy for v in report.variants):
        warn(f"the machine was busy or the timings spread widely (load {report.load_average:.2f}); treat the times as rough")


@contextmanager
def progress(enabled: bool) -> Iterator[Callable[[str], None]]:
    """A Rich spinner with the current step, shown only on a terminal and when enabled."""
    if not (enabled and err_console.is_terminal):
        yield lambda _step: None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console, transient=True
    ) as bar:
        task = bar.add_task("starting")
        yield lambda step: bar.update(task, description=step)


_EIGHTHS = " ▏▎▍▌▋▊▉"  # partial blocks, 1/8 to 7/8 of a cell
CHART_WIDTH = 40  # cells of the longest bar


def bar(value: float, largest: float, width: int = CHART_WIDTH) -> str:
    """A bar of block characters, `width` cells for `largest`, to the nearest eighth of a cell.

    >>> bar(1, 4, 8), bar(4, 4, 8), bar(0, 4, 8)
    ('██', '████████', '')
    """
    eighths = round(8 * width * value / largest) if largest > 0 else 0
    full, part = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[part] if part else "")


def _label(row: CompareRow, dtypes: bool) -> str:
    return f"{row.name} {row.kv_dtype.value}" if dtypes else row.name


def _kv_heads_cell(row: CompareRow) -> str:
    if row.compressed_cache:
        return "compressed"
    return f"latent {row.latent_width}" if row.latent_width is not None else str(row.kv_heads)


def _saved_cells(row: CompareRow, baseline: CompareRow, decimal: bool) -> tuple[str, str]:
    if row is baseline:
        return "baseline", ""
    return format_bytes(row.saved_bytes, decimal), f"{row.saved_percent:.1f}%"


def _compare_kv_table(c: Comparison, baseline: CompareRow, dtypes: bool, decimal: bool) -> Table:
    subject = {"variants": f"attention variant: {c.model}, ", "engines": f"engine: {c.model}, ", "models": "model: "}[c.kind]
    dtype = "" if dtypes else f"{c.variants[0].kv_dtype.value}, "
    tp = f", tp {c.tp}" if c.tp > 1 else ""
    state = any(row.state_bytes_per_sequence for row in c.variants)
    batch = [f"batch of {c.batch}"] if c.batch > 1 or state else []  # a batch of 1 is the sequence column again
    states = ["state/sequence"] if state else []
    table = _table(
        f"KV cache by {subject}{dtype}seq {c.seq:,}, batch {c.batch}{tp}",
        {"variants": "variant", "engines": "engine", "models": "model"}[c.kind], "KV heads", "B/token per layer", "B/token", "per sequence", *states, *batch, "saved", "%",
    )  # fmt: skip
    for row in c.variants:
        table.add_row(
            _label(row, dtypes), _kv_heads_cell(row), f"{row.bytes_per_token_per_layer:,}", f"{row.bytes_per_token:,}",
            format_bytes(row.bytes_per_sequence, decimal), *[format_bytes(row.state_bytes_per_sequence, decimal)] * len(states),
            *[format_bytes(row.bytes_per_batch, decimal)] * len(batch), *_saved_cells(row, baseline, decimal),
        )  # fmt: skip
    if state:
        table.caption = "per sequence: KV; state/sequence: the fixed state of hybrid models; batch: KV + state"
    return table


def _fit_cells(fit: RowFit) -> list[str]:
    limit = {
        "max_positions": "model max",
        "max_cache_len": "cache length",
        "max_seq_len": "max_seq_len",
        "unbounded": "search limit",
    }.get(fit.max_context_limit, "memory")
    context = f"{fit.max_context:,} ({limit})" if fit.max_context else "0"
    return [f"{fit.max_batch:,}", context]


def _decode_cells(step: RowDecode | None, judge: str) -> list[str]:
    if step is None:
        return []
    if judge == "roofline":
        return [format_seconds(step.seconds_per_token), step.bound]
    return [format_seconds(step.expected_seconds_per_token), f"{step.profile}, {step.bound}"]


def _compare_fit_table(c: Comparison, gpu: str, dtypes: bool) -> Table:
    heads = ["decode / token (roofline)", "bound"] if c.decode_judge == "roofline" else ["decode / token", "profile, bound"]
    decode = heads if any(row.decode for row in c.variants) else []  # --memory alone: no bandwidth
    title = f"On {gpu}" + (f", tp {c.tp}" if c.tp > 1 else "")
    first = {"variants": "variant", "engines": "engine", "models": "model"}[c.kind]
    table = _table(title, first, f"max batch at {c.seq:,}", f"max context at batch {c.batch}", *decode)
    for row in c.variants:
        if row.fit:
            table.add_row(_label(row, dtypes), *_fit_cells(row.fit), *_decode_cells(row.decode, c.decode_judge))
    return table


def _weights_do_not_fit(c: Comparison, dtypes: bool, decimal: bool) -> None:
    short: dict[int, list[str]] = {}  # weights per GPU -> the rows they leave no room for
    for row in c.variants:
        if row.fit and not row.fit.weights_fit:
            short.setdefault(row.fit.weights_bytes, []).append(_label(row, dtypes))
    for weights, labels in short.items():
        console.print(
            f"[red]does not fit:[/] {format_bytes(weights, decimal)} of weights per GPU leave nothing for the KV cache"
            f" of {', '.join(labels)}; try a larger --tp or a smaller --weight-dtype (fp8, int4)"
        )


def _compare_chart(c: Comparison, dtypes: bool, decimal: bool) -> Table:
    """Max batch per row when a GPU or memory is given and anything fits, else KV bytes per token."""
    by_batch = any(row.fit and row.fit.max_batch for row in c.variants)
    per_batch = c.kind == "engines"  # engines differ in tokens held, not in bytes per token
    values = [
        (row.fit.max_batch if row.fit else 0) if by_batch else row.bytes_per_batch if per_batch else row.bytes_per_token
        for row in c.variants
    ]
    title = (
        f"max batch at {c.seq:,} tokens"
        if by_batch
        else f"KV bytes for the batch of {c.batch}"
        if per_batch
        else "KV bytes per token (all layers)"
    )
    chart = Table.grid(padding=(0, 1))
    chart.title, chart.title_justify, chart.title_style = title, "left", "bold"
    chart.add_column()
    chart.add_column()
    chart.add_column(justify="right")
    for row, value in zip(c.variants, values, strict=True):
        chart.add_row(_label(row, dtypes), bar(value, max(values)), f"{value:,}" if by_batch else format_bytes(value, decimal))
    return chart


def compare_tables(c: Comparison, gpu: str | None, decimal: bool) -> None:
    """The comparison's KV table and footnote, what fits and decodes on the GPU, and a bar chart."""
    dtypes = len({row.kv_dtype for row in c.variants}) > 1
    baseline = next(r for r in c.variants if r.name == c.baseline.name and r.kv_dtype == c.baseline.kv_dtype)
    console.print(_compare_kv_table(c, baseline, dtypes, decimal))
    note = f"saved: per batch, against {_label(baseline, dtypes)}." + (f" {c.note}" if c.note else "")
    compressed = [_label(row, dtypes) for row in c.variants if row.compressed_cache]
    if compressed:
        note += (
            f" {', '.join(compressed)}: B/token is what a token within the window costs; older tokens keep one compressed"
            " row per 4 or 128 tokens, so compare per sequence."
        )
    console.print(note, style="dim", markup=False)
    copied = [_label(row, dtypes) for row in c.variants if row.replicated_kv_heads or (row.latent_width and c.tp > 1)]
    if copied:
        warn(f"tp {c.tp}: every GPU keeps a copy of one KV head or of the MLA latent for {', '.join(copied)}; totals count it")
    if gpu is not None:
        console.print(_compare_fit_table(c, gpu, dtypes))
        _weights_do_not_fit(c, dtypes, decimal)
    console.print(_compare_chart(c, dtypes, decimal))


def _plain(value: Any) -> str:
    """A figure or limit as a plan writes it: true/false, 1,234 or 12.34."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:,.2f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def check_table(report: Any) -> None:
    """One row per workload with its figures; a line per failed assertion (report: kvcalc.check.CheckReport)."""
    judge = report.workloads[0].decode_judge  # one per plan
    table = _table(
        "kvcalc check", "workload", "model", "GPU", "result", "fits", "max batch", "max context", "KV per GPU",
        f"decode/token ({judge})",
    )  # fmt: skip
    for w in report.workloads:
        result = "[green]pass[/]" if w.passed else "[red]FAIL[/]"
        decode = format_seconds(w.decode_ms / 1e3) if w.decode_ms is not None else "-"
        table.add_row(
            w.name,
            w.model,
            w.gpu,
            result,
            "yes" if w.fits else "no",
            f"{w.max_batch:,}",
            f"{w.max_context:,}",
            format_bytes(w.kv_bytes_per_gpu),
            decode,
        )
    console.print(table)
    for w in report.workloads:
        if w.refused and not w.passed:
            console.print(f"[red]FAIL[/] {escape(w.name)}: {escape(w.refused)}", soft_wrap=True)
        for a in w.assertions:
            if not a.passed:
                console.print(
                    f"[red]FAIL[/] {escape(w.name)}: {a.name} {_plain(a.limit)} — kvcalc computes {_plain(a.figure)}",
                    soft_wrap=True,
                )
    passed = sum(w.passed for w in report.workloads)
    console.print(f"{passed} of {len(report.workloads)} workloads pass")


def placement_table(plan: Any, decimal: bool, explain: bool) -> None:
    """A llama.cpp placement (kvcalc.placement.Placement): per GPU and the host, the flags, the log lines llama.cpp would print."""
    verdict = "fits" if plan.fits else "[red]does NOT fit[/]"
    table = _table(
        f"llama.cpp placement: -ngl {plan.n_gpu_layers}, n_ctx {plan.ctx_size:,}: {verdict}",
        "", "layers", "weights", "KV", "compute", "total", "free - margin",
    )  # fmt: skip
    for d in plan.devices:
        mark = "" if d.fits else " [red](over)[/]"
        table.add_row(
            escape(d.name), f"{d.layers} ({d.first_layer}–{d.first_layer + d.layers - 1})" if d.layers else "0", format_bytes(d.weights_bytes, decimal),
            format_bytes(d.kv_bytes, decimal), format_bytes(d.compute_bytes, decimal), format_bytes(d.total_bytes, decimal) + mark,
            format_bytes(d.target_bytes, decimal),
        )  # fmt: skip
    h = plan.host
    ram = format_bytes(h.ram_bytes, decimal) + ("" if h.fits else " [red](over)[/]") if h.ram_bytes is not None else "not checked"
    table.add_row(
        "host RAM" + (" (mmap)" if h.mapped else ""), "", format_bytes(h.weights_bytes, decimal), format_bytes(h.kv_bytes, decimal),
        format_bytes(h.compute_bytes + h.output_bytes, decimal), format_bytes(h.total_bytes, decimal), ram,
    )  # fmt: skip
    console.print(table)
    console.print(f"  {plan.command}", markup=False, soft_wrap=True)
    if plan.overrides and "--n-cpu-moe" in plan.command:  # else the command spells the patterns itself
        console.print("  (the same experts by pattern: -ot " + " -ot ".join(plan.overrides) + ")", markup=False, soft_wrap=True)
    _explain(plan.log_lines)
    if explain:
        _explain(plan.explain)


def split_decode_table(split: Any, gpus: list[str], explain: bool) -> None:
    """The decode speed of a placement (kvcalc.placement.SplitDecode)."""
    table = _table("Decode of the llama.cpp placement", "", "time per token")
    for name, seconds in zip(gpus, split.device_seconds, strict=True):
        table.add_row(escape(name), format_seconds(seconds))
    table.add_row("host RAM", format_seconds(split.host_seconds))
    table.add_row("hops between devices", format_seconds(split.hop_seconds))
    table.add_row("fixed cost per layer", format_seconds(split.overhead_seconds))
    table.add_row("roofline", f"{format_seconds(split.roofline_seconds)} ({split.roofline_tokens_per_s:,.1f} tok/s)")
    table.add_row("expected", f"[bold]{format_seconds(split.expected_seconds)}[/] ({split.tokens_per_s:,.1f} tok/s)")
    console.print(table)
    if explain:
        _explain(split.explain)


def speed_steps_table(steps: list[Any]) -> None:
    """Tokens/s at each -ngl or --n-cpu-moe step of a placement (kvcalc.placement.SpeedStep)."""
    table = _table("Speed by placement (expected decode)", "-ngl", "--n-cpu-moe", "fits", "tokens/s")
    for s in steps:
        table.add_row(str(s.n_gpu_layers), str(s.n_cpu_moe), "yes" if s.fits else "[red]no[/]", f"{s.tokens_per_s:,.1f}")
    console.print(table)


def throughput_lines(plan: ThroughputPlan | None, cost: Cost | None, explain: bool) -> None:
    """The largest batch within the latency targets, and what a million tokens cost."""
    if plan is not None:
        targets = " and ".join(
            f"{name} {format_seconds(limit)}"
            for name, limit in (("time per token", plan.max_tpot_seconds), ("prefill", plan.max_ttft_seconds))
            if limit is not None
        )
        within = f"largest batch within {targets}" if targets else "the batch memory holds"
        if plan.batch == 0:
            console.print(f"[red]no batch meets[/] {targets} at {plan.seq:,} tokens (limited by {plan.limit.replace('_', ' ')})")
        else:
            ttft = f", prefill of {plan.prompt:,}-token prompts {format_seconds(plan.ttft_seconds)}" if plan.ttft_seconds else ""
            console.print(
                f"{within} at {plan.seq:,} tokens: [bold]{plan.batch:,}[/] (limited by {plan.limit.replace('_', ' ')};"
                f" memory holds {plan.memory_batch:,}): {format_seconds(plan.seconds_per_token or 0)} per token{ttft},"
                f" [bold]{plan.tokens_per_s:,.1f}[/] output tokens/s"
            )
        if explain:
            _explain(plan.explain)
    if cost is not None:
        money = cost.money
        console.print(
            f"cost at {money}{cost.price_per_hour:g} per hour ({cost.gpus} GPU{'s' if cost.gpus > 1 else ''}):"
            f" [bold]{money}{cost.cost_per_million_output_tokens:.4g}[/] per million output tokens"
            f" ({cost.output_tokens_per_s:,.1f}/s), [bold]{money}{cost.cost_per_million_input_tokens:.4g}[/] per million"
            " prompt tokens"
            f" ({cost.input_tokens_per_s:,.0f}/s)"
            + ("" if cost.price_origin == "--price-per-hour" else f"; price per GPU-hour from the {escape(cost.price_origin)}"),
            soft_wrap=True,
        )
        if explain:
            _explain(cost.explain)


def speculative_lines(found: SpeculativeDecode | None, explain: bool) -> None:
    """Speculative decoding's expected time per token, beside the target's own."""
    if found is None:
        return
    console.print(
        f"speculative decoding with {found.draft} (K {found.speculative_tokens}, acceptance {found.acceptance_rate:g}):"
        f" {found.tokens_per_round:.3g} tokens per round of {format_seconds(found.round_seconds)},"
        f" [bold]{format_seconds(found.seconds_per_token)}[/] per token, [bold]{found.tokens_per_s:,.1f}[/] tokens/s"
        f" ({found.speedup:.2f}x the target alone)"
    )
    if explain:
        _explain(found.explain)


def cpu_tier_lines(tier: CpuTier | None, decimal: bool, explain: bool) -> None:
    """vLLM's CPU tier for KV blocks: what it holds and what a reload costs."""
    if tier is None:
        return
    reload = f" back in {format_seconds(tier.reload_seconds)}" if tier.reload_seconds is not None else ""
    label = "CPU tier" if tier.tier == "vllm" else "LMCache CPU tier"
    console.print(
        f"{label}: {tier.tokens:,} tokens ({tier.sequences:,} whole sequences) in {format_bytes(tier.bytes, decimal)} of pinned"
        f" host RAM; a re-used prefix of {tier.reload_tokens:,} tokens is {format_bytes(tier.reload_bytes_per_rank, decimal)}"
        f" per GPU{reload}"
    )
    if explain:
        _explain(tier.explain)
