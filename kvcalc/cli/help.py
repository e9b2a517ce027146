"""A command's --help: its options in panels (the workload, the GPU, each engine's own flags, placement,
throughput and cost, other residents, output), every option's names whole at any terminal width.

Typer's own help squeezes the option names into a column and cuts them (`--mamba-full-memory-rat…`) on
an 80-column terminal; here the names keep their width, and when the terminal is too narrow for a name
and its help side by side, the help goes on the lines below the name.
"""

from __future__ import annotations

from typing import Any

from kvcalc.spec import ENGINE_OPTIONS

ENGINE_PANELS = {
    "hf": "transformers (--engine hf)",
    "llamacpp": "llama.cpp (--engine llamacpp)",
    "vllm": "vLLM (--engine vllm)",
    "sglang": "SGLang (--engine sglang)",
    "trtllm": "TensorRT-LLM (--engine trtllm)",
}
PANELS = {  # option (by parameter name) -> panel; engine options by the engine they belong to
    **{name: "Model and workload" for name in (
        "model", "names", "seq", "batch", "kv_dtype", "k_dtype", "v_dtype", "state_dtype", "weight_dtype", "tp", "pp",
        "block_size", "params", "active_params", "variants", "layers", "shared_prefix",
    )},
    **{name: "GPU and budget" for name in (
        "gpu", "memory", "interconnect", "engine", "utilization", "reserve", "max_seqs", "efficiency", "overhead_ms", "device",
        "max_memory", "gpu_preset", "roofline",
    )},
    **{name: ENGINE_PANELS[engine] for name, engine in ENGINE_OPTIONS.items()},
    **{name: "llama.cpp placement (GPUs, host RAM, Macs)" for name in (
        "ram", "fit_target", "fit_ctx", "n_gpu_layers", "n_cpu_moe", "tensor_split", "wired_limit", "no_mmap", "mtp",
        "mmproj", "model_draft", "ram_bandwidth",
    )},
    **{name: "Throughput and cost" for name in ("max_tpot_ms", "max_ttft_ms", "prompt", "price_per_hour")},
    **{name: "Other residents (drafts, LoRA, CPU KV tier)" for name in (
        "speculative_model", "max_loras", "max_lora_rank", "lora_dtype", "kv_offloading_size", "pcie_gb_per_s",
        "num_speculative_tokens", "acceptance_rate", "lmcache_cpu_size",
        "limit_mm_per_prompt", "language_model_only", "skip_mm_profiling", "mm_processor_kwargs",
    )},
    **{name: "Output" for name in ("json_out", "explain", "units", "plot", "presets_dir", "help")},
}  # fmt: skip
HELP_COLUMN_MIN = 32  # narrower than this beside the names, the help goes below them


def panel_of(name: str | None) -> str:
    return PANELS.get(name or "", "Options")


def _names(param: Any) -> str:
    """Every spelling of an option, long ones first (--enforce-eager / --no-enforce-eager, -m)."""
    spellings = " ".join(sorted(param.opts, key=lambda opt: (not opt.startswith("--"), opt)))
    return " / ".join([spellings, *param.secondary_opts])


def render(command: Any, ctx: Any) -> None:
    """Print `command`'s help: usage, its docstring, then its options panel by panel."""
    from rich.console import Console, Group
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, width=ctx.terminal_width or None)
    console.print(f"\n [bold]Usage:[/] {ctx.command_path} {' '.join(command.collect_usage_pieces(ctx))}\n", soft_wrap=True)
    if command.help:
        paragraphs = [
            Padding(Text.from_markup(" ".join(para.split())), (0, 0, 1, 1)) for para in command.help.split("\n\n") if para.strip()
        ]
        console.print(Group(*paragraphs))
    panels: dict[str, list[Any]] = {}
    for param in command.get_params(ctx):
        if getattr(param, "hidden", False) or not getattr(param, "opts", None):
            continue
        panels.setdefault(panel_of(param.name), []).append(param)
    widest = max((len(_names(p)) + len(_metavar(p)) + 1 for ps in panels.values() for p in ps), default=0)
    stacked = console.width - widest - 8 < HELP_COLUMN_MIN
    for title, params in sorted(panels.items(), key=lambda item: _PANEL_ORDER.get(item[0], len(_PANEL_ORDER))):
        rows: list[Any] = []
        table = Table.grid(padding=(0, 1), expand=True)
        table.add_column(no_wrap=True)  # the names: never cut
        table.add_column(ratio=1)
        for param in params:
            names = Text(_names(param), style="bold cyan")
            names.append(f" {_metavar(param)}".rstrip(), style="yellow")
            helped = Text.from_markup(_help(param))
            if stacked:  # the names on their own line, the help below them
                rows += [names, Padding(helped, (0, 0, 0, 4))]
            else:
                table.add_row(names, helped)
        console.print(Panel(Group(*rows) if stacked else table, title=title, title_align="left", border_style="dim"))


_PANEL_ORDER = {
    title: i
    for i, title in enumerate(
        ["Model and workload", "GPU and budget", *ENGINE_PANELS.values(), "llama.cpp placement (GPUs, host RAM, Macs)",
         "Throughput and cost", "Other residents (drafts, LoRA, CPU KV tier)", "Options", "Output"]
    )
}  # fmt: skip


def _metavar(param: Any) -> str:
    """The placeholder the option declares (TOKENS, N|auto, FILE.png|svg); none for a switch or a plain value."""
    return "" if getattr(param, "is_flag", False) else (getattr(param, "metavar", None) or "")


def _help(param: Any) -> str:
    text = param.help or ""
    if getattr(param, "required", False):
        text += " [red](required)[/]"
    default = param.default
    if getattr(param, "show_default", False) and default not in (None, False, ""):
        text += f" [dim](default: {default})[/]"
    return text
