"""Shipped presets are validated here, not at every start: kvcalc.shipped builds each without a
validator, and must build exactly what validating its file in presets/ gives (scripts/shipped_presets.py
writes it). A corrupted, changed or added preset fails these tests until the script is run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from kvcalc import shipped
from kvcalc.errors import InvalidPreset
from kvcalc.presets import load_file, load_gpu, load_model

ROOT = Path(__file__).resolve().parents[1]


def _same(built: Any, validated: Any) -> bool:
    """The same values of the same types, down to each nested spec and the fields it was given."""
    if isinstance(validated, BaseModel):
        return (
            type(built) is type(validated)
            and built.model_fields_set == validated.model_fields_set
            and built.__dict__.keys() == validated.__dict__.keys()
            and all(_same(built.__dict__[name], value) for name, value in validated.__dict__.items())
        )
    if isinstance(validated, dict):
        return type(built) is dict and built.keys() == validated.keys() and all(_same(built[k], v) for k, v in validated.items())
    if isinstance(validated, list | tuple):
        return type(built) is type(validated) and len(built) == len(validated) and all(map(_same, built, validated))
    return type(built) is type(validated) and built == validated  # DType.bf16, not "bf16"


def mismatches(folder: Path) -> list[str]:
    """Each preset file of `folder` that does not validate, or that kvcalc.shipped does not build as it
    validates, and each preset kvcalc.shipped builds that has no file there."""
    found = []
    for kind, table in (("models", shipped.MODELS), ("gpus", shipped.GPUS)):
        files = {path.stem: path for path in (folder / kind).glob("*.yaml")}
        for name in sorted(files.keys() | table.keys()):
            if name not in table or name not in files:
                found.append(f"{kind}/{name}: {'no file' if name in table else 'not in kvcalc/shipped.py'}")
                continue
            try:
                validated = load_file(kind, files[name])
            except InvalidPreset as exc:
                found.append(str(exc))
                continue
            if not _same(table[name](), validated):
                found.append(f"{kind}/{name}: kvcalc/shipped.py builds something else than its file")
    return found


def test_shipped_presets_build_as_their_files_validate() -> None:
    assert mismatches(ROOT / "presets") == [], "run python scripts/shipped_presets.py"


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda text: text.replace("layers: 32", "layers: 0"), "llama3-8b.yaml: layers:"),
        (lambda text: text + "kv_head: 8\n", "kv_head: unknown field"),
        (lambda text: text + "heads: [\n", "invalid YAML"),
        (lambda text: text.replace("max_positions: 8192", "max_positions: 16384"), "builds something else"),
    ],
    ids=["invalid value", "unknown field", "broken YAML", "changed, still valid"],
)
def test_a_corrupted_or_changed_shipped_preset_is_caught(tmp_path: Path, edit: Any, expected: str) -> None:
    presets = tmp_path / "presets"
    shutil.copytree(ROOT / "presets", presets)
    path = presets / "models" / "llama3-8b.yaml"
    path.write_text(edit(path.read_text()))
    found = mismatches(presets)
    assert len(found) == 1 and "llama3-8b" in found[0] and expected in found[0], found


def test_an_added_preset_is_caught(tmp_path: Path) -> None:
    presets = tmp_path / "presets"
    shutil.copytree(ROOT / "presets", presets)
    shutil.copy(presets / "gpus" / "h100-sxm.yaml", presets / "gpus" / "h100-copy.yaml")
    assert mismatches(presets) == ["gpus/h100-copy: not in kvcalc/shipped.py"]


def test_a_named_shipped_preset_builds_no_validator() -> None:
    """Naming a shipped preset builds its spec as validated, without building the spec's validator."""
    code = (
        "from kvcalc.presets import load_model, load_gpu; from kvcalc.spec import GpuSpec, ModelSpec; "
        "load_model('llama3-8b'), load_gpu('h100-sxm'); print(ModelSpec.__pydantic_complete__, GpuSpec.__pydantic_complete__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False"]
    assert _same(load_model("llama3-8b"), load_file("models", ROOT / "presets" / "models" / "llama3-8b.yaml"))
    assert _same(load_gpu("h100-sxm"), load_file("gpus", ROOT / "presets" / "gpus" / "h100-sxm.yaml"))
