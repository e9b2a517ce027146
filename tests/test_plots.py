"""--plot: the charts' data (kvcalc.plots, pure) and real PNG and SVG files written through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from kvcalc import plots
from kvcalc.capacity import budget, fit, max_batch_curve
from kvcalc.compare import Subject, compare
from kvcalc.kvcache import estimate_kv
from kvcalc.measure.report import MeasureReport
from kvcalc.presets import load_gpu, load_model
from kvcalc.spec import Engine, Workload
from kvcalc.units import GiB
from kvcalc.weights import weight_format

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    data = path.read_bytes()
    return data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82") and len(data) > 10_000


def _is_svg(path: Path) -> bool:
    root = ET.parse(path).getroot()
    return root.tag == "{http://www.w3.org/2000/svg}svg" and len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 10


def _size_chart(name: str, seq: int, batch: int, gpu: str | None = None) -> tuple[plots.Chart, int]:
    model = load_model(name)
    work = Workload(seq=seq, batch=batch)
    report = fit(model, work, budget(model, work, load_gpu(gpu).memory_bytes)) if gpu else None
    chart = plots.size_chart(model, work, estimate_kv(model, work), report, gpu, decimal=False)
    return chart, report.budget.usable_bytes if report else 0


def test_size_chart_follows_the_kv_bytes_and_shows_the_budget() -> None:
    chart, usable = _size_chart("llama3-8b", 8192, 2, "h100-sxm")
    (panel,) = chart.panels
    (total,) = panel.lines  # one layer kind: no per-kind lines
    # llama3-8b: 128 KiB per token (test_golden): 2 sequences of 8,192 tokens are 2 GiB; the axis ends at max positions 8,192
    assert (total.x[-1], total.y[-1]) == (8192, 2.0)
    assert all(y == x * 2 * 131_072 / GiB for x, y in zip(total.x, total.y, strict=True))
    assert [m.value for m in panel.hlines] == [usable / GiB] and panel.vlines[0].value == 8192
    assert chart.title == "KV cache: llama3-8b, bf16, batch 2, on h100-sxm" and panel.y_label.endswith("(GiB)")
    assert panel.x_label == "context, --seq (tokens)" and panel.x_ticks == [0, 2048, 4096, 6144, 8192]


def test_size_chart_splits_mixed_layer_kinds() -> None:
    # gemma3-12b: 40 sliding layers (window 1,024) and 8 full ones; past the window only the full layers grow
    chart, _ = _size_chart("gemma3-12b", 32768, 1)
    total, sliding, full = chart.panels[0].lines
    assert sliding.label == "sliding window 1,024 (40 layers)" and full.label == "full (8 layers)"
    assert all(abs(t - s - f) < 1e-12 for t, s, f in zip(total.y, sliding.y, full.y, strict=True))
    past_window = [y for x, y in zip(sliding.x, sliding.y, strict=True) if x >= 1024]
    assert len(set(past_window)) == 1 and 1024 in sliding.x  # flat from the window on, which is sampled
    assert total.x[-1] == 131_072  # the model's max positions, beyond --seq


def test_size_chart_shows_a_hybrids_state_flat() -> None:
    # jamba-1.5-mini: 4 attention layers grow with the context, 28 Mamba layers keep one state per sequence
    chart, _ = _size_chart("jamba-1.5-mini", 32768, 2)
    total, full, state = chart.panels[0].lines
    assert (full.label, state.label) == ("full (4 layers)", "mamba1 state (28 layers)")
    assert len(set(state.y)) == 1 and state.y[0] > 0
    assert all(abs(t - f - m) < 1e-9 for t, f, m in zip(total.y, full.y, state.y, strict=True))


def test_fit_chart_is_the_max_batch_table() -> None:
    model = load_model("llama3.1-8b")
    work = Workload(seq=12288, batch=4)
    report = fit(model, work, budget(model, work, 80 * GiB))
    panel = plots.fit_chart(report, model.name, "bf16", "80GiB").panels[0]
    assert dict(zip(panel.lines[0].x, panel.lines[0].y, strict=True)) == report.max_batch_by_context
    assert 12288 in panel.x_ticks and panel.log_x and [m.value for m in panel.hlines] == [4]


def test_compare_chart_has_a_bar_per_row() -> None:
    models = [load_model(name) for name in ("llama3-8b", "mistral-7b")]
    work = Workload(seq=8192)
    subjects = [Subject(name=m.name, spec=m, weights=weight_format(m)) for m in models]
    result = compare(subjects, work, [None])
    chart = plots.compare_chart(result, None, decimal=False)
    (panel,) = chart.panels  # no GPU: the KV cache only
    assert panel.categories == ["llama3-8b", "mistral-7b"]
    assert panel.bars[0].values == [row.bytes_per_batch / GiB for row in result.variants] == [1.0, 1.0]


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_save_writes_a_valid_file_with_its_data_fingerprint(tmp_path: Path, suffix: str) -> None:
    chart, _ = _size_chart("gemma2-9b", 8192, 4, "l40s")
    first, second = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    plots.save(chart, first)
    plots.save(chart, second)
    assert (_is_png if suffix == ".png" else _is_svg)(first)
    assert plots.fingerprint_of(first) == chart.fingerprint() and len(chart.fingerprint()) == 64
    assert first.read_bytes() == second.read_bytes()  # no timestamp: the same data, the same file
    other, _ = _size_chart("gemma2-9b", 8192, 5, "l40s")
    assert other.fingerprint() != chart.fingerprint()


@pytest.mark.parametrize(
    "args",
    [
        ["size", "--model", "gemma2-9b", "--seq", "8k", "--batch", "4", "--gpu", "l40s"],
        ["size", "--model", "llama3.1-8b", "--seq", "128k", "--tp", "2", "--units", "gb"],
        ["fit", "--model", "llama3.1-8b", "--gpu", "h100-sxm", "--seq", "32k"],
        ["compare", "mha", "gqa", "mqa", "mla", "--model", "llama3-70b", "--gpu", "h100-sxm", "--tp", "4"],
        ["compare", "textbook", "hf", "vllm", "llamacpp", "--model", "gemma2-9b", "--gpu", "l40s", "--kv-dtype", "fp16,fp32"],
        ["compare", "llama3-8b", "mistral-7b"],
    ],
    ids=["size", "size-tp", "fit", "compare-variants", "compare-engines", "compare-models"],
)
@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_commands_write_real_files(cli, tmp_path: Path, args: list[str], suffix: str) -> None:
    path = tmp_path / f"figure{suffix}"
    result = cli(*args, "--plot", path)
    assert result.exit_code == 0, result.output
    assert (_is_png if suffix == ".png" else _is_svg)(path)
    assert result.stdout.rstrip().endswith(f"plot: {path}") and plots.fingerprint_of(path)


def test_measure_plots_predicted_vs_measured(cli, tmp_path: Path) -> None:
    path = tmp_path / "measure.png"
    args = ("measure", "--device", "cpu", "--seq", "256", "--layers", "1", "--variants", "mha,mqa")
    doc = json.loads(cli(*args, "--plot", path, "--json").stdout)
    assert _is_png(path) and plots.fingerprint_of(path)
    chart = plots.measure_chart(MeasureReport.model_validate(doc))
    time, cache = chart.panels
    assert time.categories == cache.categories == ["mha", "mqa"]
    assert [v / 1e3 for v in time.bars[1].values] == [v["measured_seconds"] for v in doc["variants"]]
    assert time.bars[1].label == "measured (SDPA, steady)"  # measured_seconds is the lower quartile, not the median
    assert chart.title.startswith("Measured: llama3-8b, fp32, on ") and cache.title == "KV cache"


def test_measure_plot_under_tp_has_a_bar_per_rank(cli, tmp_path: Path) -> None:
    path = tmp_path / "measure-tp.svg"
    args = ("measure", "--device", "cpu", "--seq", "128", "--layers", "1", "--tp", "2")
    doc = json.loads(cli(*args, "--plot", path, "--json").stdout)
    assert _is_svg(path)
    time, cache = plots.measure_chart(MeasureReport.model_validate(doc)).panels
    assert time.categories == cache.categories == ["rank 0", "rank 1"]
    assert [v / 1e3 for v in time.bars[1].values] == [r["decode_seconds"] for r in doc["ranks"]]
    assert cache.x_label == "KV cache (MiB)"  # 1 layer x 4 KV heads x 256 values x 128 tokens x 4 B on each rank
    assert [v * 2**20 for v in cache.bars[1].values] == [r["allocated_bytes"] for r in doc["ranks"]] == [2**19, 2**19]


def test_json_stays_one_document_with_a_plot(cli, tmp_path: Path) -> None:
    path = tmp_path / "fit.png"
    result = cli("fit", "--model", "llama3-8b", "--memory", "80GiB", "--plot", path, "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["max_batch"] > 0 and _is_png(path)


def test_a_plot_is_drawn_when_the_answer_is_no(cli, tmp_path: Path) -> None:
    path = tmp_path / "size.svg"
    result = cli("size", "--model", "llama3.1-8b", "--seq", "128k", "--batch", "8", "--gpu", "l4", "--plot", path)
    assert result.exit_code == 1 and _is_svg(path)


@pytest.mark.parametrize(
    "plot, says",
    [
        ("figure.jpg", "--plot 'figure.jpg': give a file ending in .png or .svg"),
        ("figure", "--plot 'figure': give a file ending in .png or .svg"),
        ("no/such/folder/figure.png", "--plot 'no/such/folder/figure.png': folder 'no/such/folder' does not exist"),
        ("figure.png/", "--plot 'figure.png/': names a folder (it ends in a slash)"),
    ],
)
def test_bad_plot_files_are_one_line(cli, plot: str, says: str) -> None:
    result = cli("size", "--model", "llama3-8b", "--seq", "8k", "--plot", plot)
    assert result.exit_code == 2 and result.stdout == ""
    assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["size", "--seq", "8k"], ["fit", "--memory", "80GiB"], ["compare", "mha", "gqa"]])
def test_without_matplotlib_plot_is_one_line(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed: find_spec and import both fail
    result = cli(*command, "--model", "llama3-8b", "--plot", tmp_path / "figure.png")
    # issue 23 item 13: the answer is printed, then the one-line error (it was the error alone)
    assert result.exit_code == 2 and "│" in result.stdout and not (tmp_path / "figure.png").exists()  # a table
    assert result.stderr.strip() == 'Error: --plot needs matplotlib, which is not installed: pip install "kvcalc[plot]"'


def test_an_unwritable_file_is_one_line(cli, tmp_path: Path) -> None:
    folder = tmp_path / "figure.png"
    folder.mkdir()  # a folder where the file should go
    result = cli("size", "--model", "llama3-8b", "--seq", "8k", "--plot", folder)
    assert result.exit_code == 2 and "--plot" in result.stderr and "cannot write" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_matplotlib_writes_nothing_into_home(tmp_path: Path) -> None:
    """A --plot run with matplotlib's config folder unset keeps its caches out of $HOME (a fresh process:
    matplotlib reads MPLCONFIGDIR once, when first imported)."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    argv = [sys.executable, "-m", "kvcalc", "size", "--model", "llama3-8b", "--seq", "8k", "--plot", str(tmp_path / "f.png")]
    done = subprocess.run(argv, env={**env, "HOME": str(home)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "f.png").is_file() and list(home.rglob("*")) == []


def test_help_says_how_to_install_it(cli) -> None:
    for command in ("size", "fit", "compare", "measure"):
        assert "--plot FILE.png|svg Also draw" in cli.help(command) and 'pip install "kvcalc[plot]"' in cli.help(command)


def test_fit_chart_draws_the_curve_through_the_tables_points() -> None:
    # issue 23 item 13: max batch goes about as 1 / context; the chart joined the table's points with straight lines
    model, gpu = load_model("llama3-8b"), load_gpu("h100-sxm")
    work = Workload(seq=8192)
    budget_ = budget(model, work, gpu.memory_bytes, weight_format(model))
    report = fit(model, work, budget_)
    curve = max_batch_curve(model, work, report)
    assert len(curve) >= 40 and all(curve[s] == n for s, n in report.max_batch_by_context.items())
    batches = [curve[s] for s in sorted(curve)]
    assert batches == sorted(batches, reverse=True)  # never more sequences at a longer context
    # the curve bends below the chord: halfway in log scale, 1 / context is below the straight line's midpoint
    middle = min(curve, key=lambda s: abs(s - 4096))
    assert curve[middle] < (report.max_batch_by_context[2048] + report.max_batch_by_context[8192]) / 2
    [drawn, points] = plots.fit_chart(report, model.name, "bf16", gpu.name, curve).panels[0].lines
    assert drawn.x == list(curve) and points.points_only and points.markers


def test_fit_chart_curve_is_settled_as_the_table_is() -> None:
    # an MLA model on vLLM (blocks of 64 with FlashMLA), at a context no block divides: the curve is set up
    # as fit is (capacity._settled), so its points at the table's contexts are the table's
    model, gpu = load_model("deepseek-v2-lite"), load_gpu("h100-sxm")
    work = Workload(seq=8200, engine=Engine(name="vllm"))
    report = fit(model, work, budget(model, work, gpu.memory_bytes, weight_format(model)))
    curve = max_batch_curve(model, work, report)
    assert 8200 in report.max_batch_by_context
    assert all(curve[s] == n for s, n in report.max_batch_by_context.items())
