"""Figures of kvcalc's answers (`--plot FILE.png|svg`): the one module that draws, and the only one
that imports matplotlib (the [plot] extra), inside `save`, so `import kvcalc.plots` costs nothing.

Each `*_chart` turns core results into a `Chart`: plain data (lines, bars, marks, labels with their
units) that `save` draws with matplotlib's Agg canvas and writes as PNG or SVG. A chart's data is
its identity: `save` writes the SHA-256 of the data into the file (PNG tEXt / SVG dc:description),
`fingerprint_of` reads it back, so a stored figure is stale exactly when its data changed, whichever
matplotlib version drew it.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

from kvcalc import engines
from kvcalc.base import Frozen
from kvcalc.capacity import FitReport
from kvcalc.compare import Comparison
from kvcalc.errors import InvalidInput
from kvcalc.kvcache import KvEstimate, estimate_kv
from kvcalc.spec import ModelSpec, Workload
from kvcalc.units import GB, MB, GiB, MiB, format_bytes, format_tokens

FORMATS = (".png", ".svg")
NEEDS_MATPLOTLIB = '--plot needs matplotlib, which is not installed: pip install "kvcalc[plot]"'
SIZE_POINTS = 64  # contexts sampled from 0 to the end of the size chart's axis
WIDTH_IN, DPI = 8.0, 100  # fixed: the same data draws the same image
_FINGERPRINT = "kvcalc chart data sha256:"


class Line(Frozen):
    """A curve through (x, y) points."""

    label: str
    x: list[float]
    y: list[float]
    dashed: bool = False
    markers: bool = False  # a dot and its value at each point (few points, each a figure of the table)
    points_only: bool = False  # the dots alone, on a curve drawn by another line


class Bars(Frozen):
    """One value per category of the panel."""

    label: str
    values: list[float]


class Mark(Frozen):
    """A horizontal or vertical line across a panel at `value`."""

    label: str
    value: float


class Panel(Frozen):
    """One set of axes: lines over x, or bars over categories; labels carry their units."""

    title: str = ""
    x_label: str
    y_label: str
    lines: list[Line] = []
    categories: list[str] = []
    bars: list[Bars] = []
    hlines: list[Mark] = []
    vlines: list[Mark] = []
    x_ticks: list[int] = []  # token counts, labelled as context lengths are named (8k, 128k)
    log_x: bool = False


class Chart(Frozen):
    """A figure: a title saying model, dtype and GPU, and its panels, stacked."""

    title: str
    panels: list[Panel]

    def fingerprint(self) -> str:
        """SHA-256 of the plotted data: what decides whether a stored figure is current."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()


def target(text: str) -> Path:
    """The --plot file, checked before any work: a .png or .svg in an existing folder. Whether matplotlib is
    installed is asked when the figure is drawn, after the answer is printed: the answer is not lost to it."""
    path = Path(text)
    if text.endswith(("/", os.sep)):  # Path("a.png/") drops the slash: the user named a folder, not a file
        raise InvalidInput(f"--plot {text!r}: names a folder (it ends in a slash); give a file ending in .png or .svg")
    if path.suffix.lower() not in FORMATS:
        raise InvalidInput(f"--plot {text!r}: give a file ending in .png or .svg")
    if not path.parent.is_dir():
        raise InvalidInput(f"--plot {text!r}: folder {str(path.parent)!r} does not exist")
    return path


def _unit(largest_bytes: float, decimal: bool) -> tuple[int, str]:
    """The unit of a byte axis: GiB (GB with --units gb), or MiB (MB) when every value is below one."""
    if decimal:
        return (GB, "GB") if largest_bytes >= GB else (MB, "MB")
    return (GiB, "GiB") if largest_bytes >= GiB else (MiB, "MiB")


def _axis_ticks(end: int, count: int = 6) -> list[int]:
    """Ticks from 0 to `end` at a power-of-two step, about `count` of them (0, 32k, 64k, ... 128k)."""
    step = 1
    while end // step > count:
        step *= 2
    return list(range(0, end + 1, step))


def _workload_words(kv: KvEstimate) -> str:
    """The batch, the split and the engine, as the KV table's title names them."""
    split = (f", tp {kv.tp}" if kv.tp > 1 else "") + (f", pp {kv.pp}" if kv.pp > 1 else "")
    engine = f", engine {kv.engine}" if kv.engine != "textbook" else ""
    return f"batch {kv.batch}{split}{engine}"


def size_chart(model: ModelSpec, work: Workload, kv: KvEstimate, fit: FitReport | None, gpu: str | None, decimal: bool) -> Chart:
    """KV bytes of the batch on the busiest GPU vs context, from 0 to the longer of --seq and the model's
    limit: the total, each layer kind when the model mixes kinds (tp 1, pp 1), --seq, and with a GPU the
    KV budget per GPU."""
    rules = engines.profile(work.engine)
    limit, _ = rules.context_limit(model, work)
    end = max(work.seq, rules.reshape(work, context=limit).seq if limit else 0)
    contexts = sorted(
        {max(1, end * i // SIZE_POINTS) for i in range(SIZE_POINTS + 1)}
        | {g.window for g in kv.groups if g.window and g.window < end}
        | {work.seq}
    )
    curve = [estimate_kv(model, work.model_copy(update={"seq": c})) for c in contexts]
    budget = fit.budget.usable_bytes if fit is not None else 0
    unit, unit_name = _unit(max(budget, *(e.bytes_per_gpu for e in curve)), decimal)
    lines = [Line(label="all layers", x=contexts, y=[e.bytes_per_gpu / unit for e in curve])]
    if len(kv.groups) + len(kv.state_groups) > 1 and work.tp == 1 and work.pp == 1:
        for i, group in enumerate(kv.groups):
            if group.shared:  # attends to an earlier layer's cache and keeps none
                continue
            kind = f"{group.kind} window {group.window:,}" if group.window else group.kind
            lines.append(
                Line(
                    label=f"{kind} ({group.layers} layers)",
                    x=contexts,
                    y=[e.groups[i].bytes_per_sequence * e.allocation_units / unit for e in curve],
                    dashed=True,
                )
            )
        for i, state in enumerate(kv.state_groups):  # one state per sequence, whatever the context
            y = [e.state_groups[i].bytes_per_sequence * e.batch / unit for e in curve]
            lines.append(Line(label=f"{state.kind} state ({state.layers} layers)", x=contexts, y=y, dashed=True))
    hlines = []
    if budget > 0:
        hlines.append(Mark(label=f"KV budget per GPU: {format_bytes(budget, decimal)}", value=budget / unit))
    return Chart(
        title=f"KV cache: {model.name}, {kv.cache_types}, {_workload_words(kv)}" + (f", on {gpu}" if gpu else ""),
        panels=[
            Panel(
                x_label="context, --seq (tokens)",
                y_label=f"KV cache of the batch per GPU ({unit_name})",
                lines=lines,
                hlines=hlines,
                vlines=[Mark(label=f"--seq {format_tokens(work.seq)}", value=work.seq)],
                x_ticks=_axis_ticks(end),
            )
        ],
    )  # fmt: skip


def fit_chart(report: FitReport, model: str, kv_dtype: str, gpu: str, curve: dict[int, int] | None = None) -> Chart:
    """Max batch per GPU against context: the `curve` (capacity.max_batch_curve) through fit's table's points,
    marked, with the batch and context asked for."""
    contexts = list(report.max_batch_by_context)
    drawn = [Line(label="max batch", x=list(curve), y=list(curve.values()))] if curve else []
    return Chart(
        title=f"Max batch: {model}, {kv_dtype}, on {gpu}",
        panels=[
            Panel(
                x_label="context per sequence (tokens)",
                y_label="max batch per GPU (sequences)",
                lines=[
                    *drawn,
                    Line(
                        label="fit's table" if curve else "max batch",
                        x=contexts,
                        y=list(report.max_batch_by_context.values()),
                        markers=True,
                        points_only=bool(curve),
                    ),
                ],  # fmt: skip
                hlines=[Mark(label=f"--batch {report.batch}", value=report.batch)],
                vlines=[Mark(label=f"--seq {format_tokens(report.context_per_sequence)}", value=report.context_per_sequence)],
                x_ticks=contexts,
                log_x=True,
            )
        ],
    )


def compare_chart(c: Comparison, gpu: str | None, decimal: bool) -> Chart:
    """A bar per variant, engine or model: the KV cache of the batch; with a GPU, the max batch and the
    decode time per token (the expected one, or the roofline's with --roofline)."""
    unit, unit_name = _unit(max(row.bytes_per_batch for row in c.variants), decimal)
    dtypes = len({row.kv_dtype for row in c.variants}) > 1
    names = [f"{row.name} {row.kv_dtype.value}" if dtypes else row.name for row in c.variants]
    what = {"variants": "attention variants", "engines": "engines", "models": "models"}[c.kind]
    panels = [
        Panel(
            title=f"KV cache of the batch at {format_tokens(c.seq)} tokens",
            x_label=f"KV cache ({unit_name})",
            y_label="",
            categories=names,
            bars=[Bars(label="KV cache", values=[row.bytes_per_batch / unit for row in c.variants])],
        )
    ]
    if any(row.fit for row in c.variants):
        panels.append(
            Panel(
                title=f"max batch per GPU at {format_tokens(c.seq)} tokens",
                x_label="max batch (sequences)",
                y_label="",
                categories=names,
                bars=[Bars(label="max batch", values=[row.fit.max_batch if row.fit else 0 for row in c.variants])],
            )
        )
    if any(row.decode for row in c.variants):
        roofline = c.decode_judge == "roofline"
        seconds = [
            (row.decode.seconds_per_token if roofline else row.decode.expected_seconds_per_token) if row.decode else 0
            for row in c.variants
        ]
        panels.append(
            Panel(
                title="decode time per token" + (" (roofline)" if roofline else " (expected)"),
                x_label="time per output token (ms)",
                y_label="",
                categories=names,
                bars=[Bars(label="decode", values=[s * 1e3 for s in seconds])],
            )
        )
    dtype = "" if dtypes else f", {c.variants[0].kv_dtype.value}"
    of = f" of {c.model}" if c.model else ""
    return Chart(
        title=f"Compare {what}{of}{dtype}, batch {c.batch}"
        + (f", tp {c.tp}" if c.tp > 1 else "")
        + (f", on {gpu}" if gpu else ""),
        panels=panels,
    )


def measure_chart(report: Any) -> Chart:
    """Predicted vs measured per variant, or per rank under --tp: the decode step's steady time (lower
    quartile) and the bytes allocated (report: kvcalc.measure.report.MeasureReport)."""
    first = report.variants[0]
    if report.ranks:  # one model, one bar per rank: its shard's roofline and its fastest path
        rows = [
            (f"rank {r.rank}", r.predicted_seconds, r.decode_seconds, r.predicted_bytes, r.allocated_bytes) for r in report.ranks
        ]
        measured = f"measured ({first.fastest_path}, steady)"
    else:
        rows = [
            (v.variant, v.predicted_seconds, v.measured_seconds, v.predicted_bytes, v.allocated_bytes) for v in report.variants
        ]
        measured = "measured (SDPA, steady)"
    names = [row[0] for row in rows]
    unit, unit_name = _unit(max(max(row[3], row[4]) for row in rows), decimal=False)
    model = report.model.removesuffix(f" ({first.variant})")  # the model the variants derive from
    held = "KV cache and state" if any(v.predicted_state_bytes for v in report.variants) else "KV cache"
    tp = f", --tp {report.tp}" if report.ranks else ""
    return Chart(
        title=f"Measured: {model}, {first.dtype}{tp}, on {report.device_name}",
        panels=[
            Panel(
                title="decode step",
                x_label="time per decode step (ms)",
                y_label="",
                categories=names,
                bars=[
                    Bars(label="predicted (roofline)", values=[row[1] * 1e3 for row in rows]),
                    Bars(label=measured, values=[row[2] * 1e3 for row in rows]),
                ],
            ),
            Panel(
                title=held,
                x_label=f"{held} ({unit_name})",
                y_label="",
                categories=names,
                bars=[
                    Bars(label="predicted", values=[row[3] / unit for row in rows]),
                    Bars(label="allocated", values=[row[4] / unit for row in rows]),
                ],
            ),
        ],
    )


def save(chart: Chart, path: Path) -> None:
    """Draw `chart` (Agg canvas, fixed size and resolution, no timestamp) and write it to `path`, a .png
    or .svg, with its data's fingerprint in the file's metadata."""
    fmt = path.suffix.lower().lstrip(".")
    if f".{fmt}" not in FORMATS:
        raise InvalidInput(f"--plot {str(path)!r}: give a file ending in .png or .svg")
    _matplotlib_outside_home()
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise InvalidInput(NEEDS_MATPLOTLIB) from None
    heights = [4.5 if panel.lines else 1.2 + 0.32 * len(panel.categories) * len(panel.bars) for panel in chart.panels]
    description = f"{_FINGERPRINT}{chart.fingerprint()}"
    # no date, creator or software version: the same data writes the same file with the same matplotlib
    metadata = (
        {"Software": None, "Description": description}
        if fmt == "png"
        else {"Date": None, "Creator": None, "Description": description}
    )
    with matplotlib.rc_context({"svg.hashsalt": "kvcalc", "svg.fonttype": "path", "font.size": 9}):
        figure = Figure(figsize=(WIDTH_IN, sum(heights) + 0.6), dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.subplots(len(chart.panels), 1, squeeze=False, height_ratios=heights)[:, 0]
        for ax, panel in zip(axes, chart.panels, strict=True):
            _draw(ax, panel)
        figure.suptitle(chart.title, fontweight="bold")
        try:
            figure.savefig(path, format=fmt, dpi=DPI, metadata=metadata)
        except OSError as exc:
            raise InvalidInput(f"--plot {str(path)!r}: cannot write ({exc.strerror or exc})") from None


def _matplotlib_outside_home() -> None:
    """matplotlib keeps its config and font cache in $HOME (~/.config/matplotlib, ~/.cache/matplotlib) unless
    MPLCONFIGDIR names another folder, read once when it is first imported: kvcalc gives it a temporary
    folder, removed at exit, so --plot writes only the file asked for. A MPLCONFIGDIR of the user's is kept."""
    if "MPLCONFIGDIR" in os.environ or "matplotlib" in sys.modules:
        return
    folder = tempfile.mkdtemp(prefix="kvcalc-matplotlib-")
    atexit.register(shutil.rmtree, folder, True)
    os.environ["MPLCONFIGDIR"] = folder


def _draw(ax: Any, panel: Panel) -> None:
    """One panel on matplotlib axes."""
    if panel.title:
        ax.set_title(panel.title, loc="left")
    if panel.lines:
        _draw_lines(ax, panel)
    else:
        _draw_bars(ax, panel)
    for mark in panel.hlines:
        ax.axhline(mark.value, color="tab:red", linestyle=":", linewidth=1.2, label=mark.label)
    for mark in panel.vlines:
        ax.axvline(mark.value, color="gray", linestyle="--", linewidth=1, label=mark.label)
    ax.set_xlabel(panel.x_label)
    ax.set_ylabel(panel.y_label)
    ax.grid(True, axis="y" if panel.lines else "x", alpha=0.3)
    if len(panel.lines) + len(panel.bars) + len(panel.hlines) + len(panel.vlines) > 1:  # a lone series needs no key
        ax.legend(loc="best", frameon=False)


def _draw_lines(ax: Any, panel: Panel) -> None:
    for line in panel.lines:
        style = "none" if line.points_only else "--" if line.dashed else "-"
        ax.plot(line.x, line.y, linestyle=style, marker="o" if line.markers else None, label=line.label)
        if line.markers:
            for x, y in zip(line.x, line.y, strict=True):
                ax.annotate(f"{y:,.0f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center")
    if panel.log_x:
        ax.set_xscale("log", base=2)
    if panel.x_ticks:
        ax.set_xticks(panel.x_ticks, [format_tokens(t) for t in panel.x_ticks])
        ax.minorticks_off()
    if not panel.log_x:
        ax.set_xlim(left=0)
    ax.set_ylim(bottom=0, top=max([y for line in panel.lines for y in line.y] + [m.value for m in panel.hlines]) * 1.12 or 1)


def _draw_bars(ax: Any, panel: Panel) -> None:
    height = 0.8 / len(panel.bars)
    for i, bars in enumerate(panel.bars):
        rows = [r + (i - (len(panel.bars) - 1) / 2) * height for r in range(len(panel.categories))]
        drawn = ax.barh(rows, bars.values, height=height, label=bars.label)
        ax.bar_label(drawn, labels=[f"{v:,.3g}" for v in bars.values], padding=3)
    ax.set_yticks(range(len(panel.categories)), panel.categories)
    ax.invert_yaxis()  # the first row on top, as in the tables
    ax.set_xlim(right=max(v for bars in panel.bars for v in bars.values) * 1.15 or 1)


def fingerprint_of(path: Path) -> str | None:
    """The data fingerprint `save` wrote into a PNG or SVG file; None when it has none."""
    data = path.read_bytes()
    if path.suffix.lower() == ".svg":
        found = re.search(rb"<dc:description>" + re.escape(_FINGERPRINT.encode()) + rb"([0-9a-f]{64})</dc:description>", data)
        return found.group(1).decode() if found else None
    position = 8  # after the PNG signature: chunks of length, type, data and CRC
    while position + 8 <= len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind, body = data[position + 4 : position + 8], data[position + 8 : position + 8 + length]
        if kind in (b"tEXt", b"zTXt", b"iTXt"):
            text = _png_text(kind, body)
            if text.startswith(_FINGERPRINT):
                return text.removeprefix(_FINGERPRINT)
        position += 12 + length
    return None


def _png_text(kind: bytes, body: bytes) -> str:
    """The text of a PNG text chunk (keyword, NUL, then the text: plain, or compressed for zTXt and iTXt)."""
    _, _, rest = body.partition(b"\0")
    if kind == b"zTXt":
        return zlib.decompress(rest[1:]).decode("latin-1")
    if kind == b"iTXt":  # compression flag, method, language tag NUL, translated keyword NUL, text
        compressed, rest = rest[0], rest[2:]
        text = rest.split(b"\0", 2)[-1]
        return (zlib.decompress(text) if compressed else text).decode("utf-8")
    return rest.decode("latin-1")
