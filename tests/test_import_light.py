"""`import kvcalc` and every command but measure must not import torch; --json output needs no rich."""

from __future__ import annotations

import subprocess
import sys

import pytest

INVOKE = "import sys; from typer.testing import CliRunner; from kvcalc.cli import COMMANDS, app; "
SIZE_ARGS = "['size', '--model', 'llama3-8b', '--seq', '8192'"


def _python(code: str) -> str:
    """What a fresh interpreter prints running `code`."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("statement", ["import kvcalc", "import kvcalc.cli"])
def test_import_does_not_load_torch(statement: str) -> None:
    assert _python(f"{statement}; import sys; print('torch' in sys.modules)") == "False"


def test_size_command_does_not_load_torch() -> None:
    code = INVOKE + (
        f"r = CliRunner().invoke(app, {SIZE_ARGS}, '--gpu', 'h100-sxm']); "
        "assert r.exit_code == 0, r.output; print('torch' in sys.modules)"
    )
    assert _python(code) == "False"


def test_json_output_loads_no_rich_and_builds_one_command() -> None:
    """The start-up path of `kvcalc size --json`: no Rich console (tables only), no measure models
    (its documents are defined when asked for), no figures (--plot only), and no other command's
    module imported or options built."""
    code = INVOKE + (
        "import typer.main; built = []; build = typer.main.get_command; "
        "typer.main.get_command = lambda typer_app: built.append(typer_app) or build(typer_app); "
        f"r = CliRunner().invoke(app, {SIZE_ARGS}, '--json']); "
        "assert r.exit_code == 0, r.output; "
        "print([name for name, module in COMMANDS.items() if module in sys.modules], "
        "[name for name, module in COMMANDS.items() if module in sys.modules and sys.modules[module].app in built], "
        "sorted(m for m in ('torch', 'numpy', 'rich.console', 'kvcalc.render', 'kvcalc.measure', 'kvcalc.plots', 'matplotlib')"
        " if m in sys.modules))"
    )
    assert _python(code) == "['size'] ['size'] []"


def test_matplotlib_loads_only_to_draw(tmp_path) -> None:
    """Every command runs without matplotlib; --plot imports it when the figure is drawn."""
    for args in (
        f"{SIZE_ARGS}, '--gpu', 'h100-sxm']",
        "['fit', '-m', 'llama3-8b', '--memory', '80GB']",
        "['compare', 'mha', 'gqa']",
    ):
        code = (
            INVOKE + f"r = CliRunner().invoke(app, {args}); assert r.exit_code == 0, r.output; print('matplotlib' in sys.modules)"
        )
        assert _python(code) == "False"
    plot = tmp_path / "size.png"
    code = INVOKE + (
        f"r = CliRunner().invoke(app, {SIZE_ARGS}, '--plot', {str(plot)!r}]); assert r.exit_code == 0, r.output; "
        "print('matplotlib' in sys.modules, 'matplotlib.pyplot' in sys.modules)"
    )
    assert _python(code) == "True False" and plot.exists()  # Agg canvas, no pyplot state machine


def test_help_lists_every_command_and_builds_none() -> None:
    """--help lists every command in the order COMMANDS gives, from its help text: no command's options are built."""
    code = INVOKE + (
        "import typer.main; built = []; build = typer.main.get_command; "
        "typer.main.get_command = lambda typer_app: built.append(typer_app) or build(typer_app); "
        "r = CliRunner().invoke(app, ['--help'], prog_name='kvcalc'); assert r.exit_code == 0, r.output; "
        "words = [line[2:].split(' ', 1)[0] for line in r.stdout.splitlines() if line.startswith('│ ')]; "
        "print([w for w in words if w and not w.startswith('-')] == list(COMMANDS), "
        "[name for name, module in COMMANDS.items() if sys.modules[module].app in built])"
    )
    assert _python(code) == "True []"


def test_no_command_tries_to_import_huggingface_hub(tmp_path) -> None:
    """huggingface_hub (the [hub] extra) is imported only to fetch what the cache lacks: a preset, a GGUF
    file and a repo id whose config.json and safetensors headers are cached never try, installed or not
    (a meta-path hook records tries; CliRunner captures what the command prints, so they are printed after)."""
    import os
    from pathlib import Path

    from .safetensors_writer import in_shards, llama_tensors, write_checkpoint
    from .test_sources_hub import COMMIT, cache_repo

    cache_repo(tmp_path / "hub", "org/model")
    write_checkpoint(tmp_path / "hub" / "models--org--model" / "snapshots" / COMMIT, in_shards(llama_tensors(), 1))
    gguf = Path(__file__).parent / "fixtures" / "gguf" / "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf"
    code = (
        "import sys\n"
        "tried = []\n"
        "class Watch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'huggingface_hub': tried.append(name)\n"
        "sys.meta_path.insert(0, Watch())\n" + INVOKE + "\n"
        f"for model in ('llama3-8b', {str(gguf)!r}, 'org/model'):\n"
        "    r = CliRunner().invoke(app, ['size', '--model', model, '--seq', '8', '--json'])\n"
        "    assert r.exit_code == 0, r.output\n"
        "print(tried, sorted(m for m in ('huggingface_hub', 'torch', 'kvcalc.sources.gpus') if m in sys.modules))"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub")}
    env.pop("HF_HUB_OFFLINE", None)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert done.stdout.strip() == "[] []"
