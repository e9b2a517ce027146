"""Finding and reading presets: shipped YAML, user YAML files and folders, Hugging Face config.json.

The only module that reads files. YAML is read with safe loading only; every failure becomes an
InvalidPreset or PresetNotFound naming the file (and line or field) and the fix. A model or GPU preset
file without a `name:` takes its file's stem as its name, both when listed and when loaded.
"""

from __future__ import annotations

import difflib
import json
import os
import stat
from collections.abc import Hashable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from kvcalc.base import Frozen
from kvcalc.errors import InvalidPreset, KvcalcError, PresetNotFound
from kvcalc.spec import GpuSpec, ModelSpec

Kind = Literal["models", "gpus"]
PRESETS_ENV = "KVCALC_PRESETS"
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's safe loader when built in: same rules, faster


class _UniqueKeysLoader(_SafeLoader):  # type: ignore[misc, valid-type]
    """The safe loader, refusing a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                continue  # the base loader's error
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"{key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


_SPEC_TYPES: dict[str, type[BaseModel]] = {"models": ModelSpec, "gpus": GpuSpec}
MAX_NESTING = 64  # presets nest two levels (mla:, moe:); libyaml's composer recurses in C and crashes near 20,000


def shipped_presets_dir() -> Path:
    """The presets inside the installed wheel, or the repository's presets/ in a source checkout."""
    packaged = Path(__file__).resolve().parent / "presets"  # the wheel maps presets/ here
    return packaged if packaged.is_dir() else packaged.parent.parent / "presets"


def _what_is(path: Path) -> Literal["file", "folder", "missing", "other"]:
    """What `path` names; a path the system refuses to look up (too long, no permission) is an InvalidPreset."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError, ValueError):  # ValueError: a NUL byte in the path
        return "missing"
    except OSError as exc:
        raise InvalidPreset(f"{path}: cannot open ({exc.strerror}); check the path") from None
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"


def _require_file(path: Path, what: str, folder_hint: str, error: type[KvcalcError]) -> None:
    """Raise `error` saying what `path` names unless it is a regular file."""
    found = _what_is(path)
    if found == "missing":
        raise error(f"{path}: no such {what}")
    if found == "folder":
        raise error(f"{path}: is a folder, not a {what}; {folder_hint}")
    if found == "other":
        raise error(f"{path}: is not a regular file (a device, pipe or socket); give a {what}")


def user_presets_dirs(extra: Sequence[str | Path] | None = None) -> list[Path]:
    """Folders named by --presets and by KVCALC_PRESETS (os.pathsep-separated, empty entries skipped), in that order."""
    if "" in (extra or []):
        raise InvalidPreset("--presets: empty folder name; give a folder (--presets . for the current one)")
    dirs = [Path(p) for p in extra or []]
    dirs += [Path(p) for p in os.environ.get(PRESETS_ENV, "").split(os.pathsep) if p]
    for folder in dirs:
        found = _what_is(folder)
        if found == "file":
            raise InvalidPreset(
                f"{folder}: is a file, not a presets folder (from --presets or ${PRESETS_ENV}); "
                "give the folder holding it, or pass the file to --model or --gpu"
            )
        if found != "folder":
            problem = "does not exist" if found == "missing" else "is not a folder"
            raise InvalidPreset(f"{folder}: presets folder {problem} (from --presets or ${PRESETS_ENV})")
    return dirs


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidPreset(f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    except OSError as exc:
        raise InvalidPreset(f"{path}: cannot read ({exc.strerror})") from None


def _too_deep(path: Path) -> InvalidPreset:
    return InvalidPreset(f"{path}: nested too deeply (more than {MAX_NESTING} levels); a preset is a flat mapping")


def _flow_depth(text: str) -> int:
    """An upper bound on the flow nesting ('[' and '{' not yet closed) at the end of `text`."""
    return text.count("[") + text.count("{") - text.count("]") - text.count("}")


def _refuse_aliases_and_deep_nesting(path: Path, text: str) -> None:
    """Refuse YAML aliases and nesting deeper than MAX_NESTING before the (recursive) loader sees them.

    Walks the parser's events, which libyaml produces without recursion, only when the text has a '*'
    or enough indicators and lines to nest that deep: a few str.count calls for a usual preset.
    """
    # Each level opens at a new line or at a '[', '{', '-' or '?' (two levels at most: `- a: 1`), so this bounds the depth.
    could_nest_too_deep = 2 * sum(map(text.count, "[{-?")) + len(text.splitlines()) + 1 > MAX_NESTING
    if "*" not in text and not could_nest_too_deep:
        return
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                line = event.start_mark.line + 1
                raise InvalidPreset(f"{path}:{line}: YAML aliases (*name) are not accepted in presets; write the values out")
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_NESTING:
                    raise _too_deep(path)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as exc:  # the scanner reads a flow collection's openers before it yields their events
        mark = getattr(exc, "problem_mark", None)
        if mark is not None and _flow_depth(text[: mark.index + 1]) > MAX_NESTING:
            raise _too_deep(path) from None
        raise


def read_mapping(path: Path) -> dict[str, Any]:
    """Parse a YAML (safe loader) or JSON file that must hold one mapping."""
    text = _read_text(path)
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            _refuse_aliases_and_deep_nesting(path, text)
            data = yaml.load(text, Loader=_UniqueKeysLoader)
    except RecursionError:
        raise InvalidPreset(f"{path}: nested too deeply; a config.json nests a few levels at most") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidPreset(f"{path}{where}: invalid YAML: {problem}") from None
    except json.JSONDecodeError as exc:
        raise InvalidPreset(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        found = "an empty file" if data is None else f"a {type(data).__name__}"
        raise InvalidPreset(f"{path}: expected a mapping of fields, found {found}")
    return data


def validate(kind: Kind, data: dict[str, Any], origin: str) -> Any:
    """Validate a mapping as a model or GPU spec; errors name the origin, the field and the problem."""
    return validate_as(_SPEC_TYPES[kind], data, origin)


def validate_as(spec_type: type[BaseModel], data: dict[str, Any], origin: str) -> Any:
    """Validate a mapping as `spec_type`; the first error names the origin, the field and the problem."""
    try:
        return spec_type.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        field = f"{where}: " if where else ""  # a rule on the whole spec names no field
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            owner = _model_at(spec_type, error["loc"][:-1])
            close = difflib.get_close_matches(str(error["loc"][-1]), list(owner.model_fields), n=1) if owner else []
            message = "unknown field" + (f"; did you mean {close[0]!r}?" if close else "")
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise InvalidPreset(f"{origin}: {field}{message}{more}") from None


def _model_at(spec_type: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The nested model a validation error's location points into (for "did you mean")."""
    current: Any = spec_type
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(str(part)) if isinstance(current, type) and issubclass(current, BaseModel) else None
        if field is None:
            return None
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            inner = (
                getattr(candidate, "__args__", (candidate,))[0] if getattr(candidate, "__origin__", None) is list else candidate
            )
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                current = inner
                break
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def load_file(kind: Kind, path: Path) -> Any:
    """A spec from a YAML file, or (models only) a Hugging Face config.json."""
    return _spec_from(kind, path, read_mapping(path))


def _spec_from(kind: Kind, path: Path, data: dict[str, Any]) -> Any:
    if kind == "models" and path.suffix == ".json":
        from kvcalc.hf_config import model_fields_from_hf

        data = model_fields_from_hf(data, default_name=path.parent.name or path.stem, origin=str(path))
    else:
        data = {**data, "name": _preset_name(data, path)}
    return validate(kind, data, str(path))


def _preset_name(data: dict[str, Any], path: Path) -> Any:
    """The file's `name:`, or its stem when it gives none."""
    return data.get("name") or path.stem


class PresetEntry(Frozen):
    """A preset's name and the file it comes from."""

    name: str
    path: Path
    origin: Literal["shipped", "user"]


def _folder_entries(kind: Kind, folder: Path, origin: Literal["shipped", "user"]) -> dict[str, PresetEntry]:
    sub = folder / kind
    files = sorted(sub.glob("*.y*ml")) if _what_is(sub) == "folder" else sorted(folder.glob("*.y*ml"))
    entries: dict[str, PresetEntry] = {}
    for path in files:
        data = read_mapping(path)
        if origin == "user" and _looks_like(data) != kind:
            continue  # a user folder may mix models and GPUs
        name = str(_preset_name(data, path))
        if name in entries:
            raise InvalidPreset(f"{path}: preset name {name!r} is also defined in {entries[name].path}")
        entries[name] = PresetEntry(name=name, path=path, origin=origin)
    return entries


def _looks_like(data: dict[str, Any]) -> Kind:
    return "gpus" if "memory_bytes" in data or "bandwidth_bytes_per_s" in data else "models"


def list_presets(kind: Kind, extra_dirs: Sequence[str | Path] | None = None) -> list[PresetEntry]:
    """Shipped presets, overridden by user presets of the same name."""
    entries = _folder_entries(kind, shipped_presets_dir(), "shipped")
    for folder in reversed(user_presets_dirs(extra_dirs)):
        entries.update(_folder_entries(kind, folder, "user"))
    return sorted(entries.values(), key=lambda e: e.name)


def _is_path(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml", ".json")) or os.sep in ref or "/" in ref


def _preset_file(ref: str) -> Path:
    """The file a --model or --gpu path names, which must be a regular file."""
    _require_file(Path(ref), "file", "a folder of presets goes to --presets", PresetNotFound)
    return Path(ref)


def resolve(kind: Kind, ref: str, extra_dirs: Sequence[str | Path] | None = None) -> Any:
    """A spec by preset name (user presets first) or by file path."""
    from kvcalc import sources  # GGUF files, Hub repo ids, cache snapshots, --gpu auto and device names

    special = sources.model_reference(ref) if kind == "models" else sources.gpu_reference(ref, extra_dirs)
    if special is not None:
        return special
    if _is_path(ref):
        return load_file(kind, _preset_file(ref))
    user = {}
    for folder in reversed(user_presets_dirs(extra_dirs)):
        user.update(_folder_entries(kind, folder, "user"))
    if ref in user:
        return load_file(kind, user[ref].path)
    shipped = shipped_presets_dir() / kind / f"{ref}.yaml"  # shipped presets are named by their file
    try:
        is_shipped = shipped.is_file()
    except OSError:  # a name the system cannot look up (over 255 bytes) names no shipped preset
        is_shipped = False
    if is_shipped:
        return load_file(kind, shipped)
    entries = {e.name: e for e in list_presets(kind, extra_dirs)}
    if ref not in entries and kind == "gpus":  # a name as nvidia-smi or amd-smi prints it, else suggestions
        return sources.gpu_by_device_name(ref, extra_dirs, _closest(ref, entries))
    if ref not in entries:
        hint = f"; did you mean {', '.join(close)}?" if (close := _closest(ref, entries)) else ""
        what = "model" if kind == "models" else "GPU"
        raise PresetNotFound(f"unknown {what} {ref!r}{hint or f'; `kvcalc presets list` shows all {len(entries)}'}")
    return load_file(kind, entries[ref].path)


def _closest(ref: str, names: Iterable[str]) -> list[str]:
    """Up to three names that start like `ref` or are spelled close to it."""
    names = list(names)
    prefixed = [n for n in names if n.startswith(ref.lower())]
    return (prefixed + [n for n in difflib.get_close_matches(ref.lower(), names, n=3, cutoff=0.5) if n not in prefixed])[:3]


def load_any(ref: str, extra_dirs: Sequence[str | Path] | None = None) -> ModelSpec | GpuSpec:
    """A model or a GPU: a file read as what its fields say it is, a name looked up among both."""
    from kvcalc import sources  # GGUF files, Hub repo ids, cache snapshots, `auto` and device names

    special = sources.model_reference(ref) or sources.gpu_reference(ref, extra_dirs, by_device_name=True)
    if special is not None:
        return special
    if _is_path(ref):
        path = _preset_file(ref)
        data = read_mapping(path)
        return _spec_from("models" if path.suffix == ".json" else _looks_like(data), path, data)  # type: ignore[no-any-return]
    models, gpus = ([e.name for e in list_presets(k, extra_dirs)] for k in ("models", "gpus"))
    if ref in models or (ref not in gpus and not _closest(ref, gpus)):
        return load_model(ref, extra_dirs)  # an unknown name: the model error, with its suggestions
    if ref in gpus:
        return load_gpu(ref, extra_dirs)
    close = _closest(ref, models) + _closest(ref, gpus)
    raise PresetNotFound(f"unknown model or GPU {ref!r}; did you mean {', '.join(close)}?")


def load_model(ref: str, extra_dirs: Sequence[str | Path] | None = None) -> ModelSpec:
    """A model by preset name, YAML path or config.json path."""
    return resolve("models", ref, extra_dirs)  # type: ignore[no-any-return]


def load_gpu(ref: str, extra_dirs: Sequence[str | Path] | None = None) -> GpuSpec:
    """A GPU by preset name or YAML path."""
    return resolve("gpus", ref, extra_dirs)  # type: ignore[no-any-return]


# (substrings all present in the lower-cased device name) -> preset; first match wins.
_DEVICE_NAMES: list[tuple[tuple[str, ...], str]] = [
    (("h100", "pcie"), "h100-pcie"), (("h100",), "h100-sxm"), (("h200",), "h200"), (("gb200",), "gb200"), (("b200",), "b200"),
    (("a100", "80gb"), "a100-80gb"), (("a100",), "a100-40gb"), (("l40s",), "l40s"), (("l4",), "l4"), (("a10g",), "a10g"),
    (("t4",), "t4"), (("v100",), "v100-32gb"), (("4090",), "rtx4090"), (("3090",), "rtx3090"), (("5090",), "rtx5090"),
    (("mi300x",), "mi300x"), (("mi325x",), "mi325x"),
]  # fmt: skip


def recognise_gpu(device_name: str) -> str | None:
    """The preset of a device name as torch reports it, e.g. 'NVIDIA H100 80GB HBM3' -> h100-sxm.

    >>> recognise_gpu("NVIDIA H100 80GB HBM3"), recognise_gpu("NVIDIA A100-SXM4-80GB"), recognise_gpu("AMD EPYC")
    ('h100-sxm', 'a100-80gb', None)
    """
    name = device_name.lower()
    return next((preset for parts, preset in _DEVICE_NAMES if all(p in name for p in parts)), None)


class PlanPresets(Frozen):
    """Where a plan's model and GPU names resolve: its folders and its single preset files."""

    base: Path
    folders: list[Path]
    files: dict[str, Path]

    def resolve(self, kind: Kind, ref: str) -> Any:
        """A spec by name (the plan's files, then its folders, user and shipped presets) or by path relative to the plan."""
        if ref in self.files and _looks_like(read_mapping(self.files[ref])) == kind:
            return load_file(kind, self.files[ref])
        if _is_path(ref):
            return resolve(kind, str(self.base / ref))
        return resolve(kind, ref, self.folders)


def load_plan(path: Path, plan_type: type[BaseModel]) -> tuple[Any, PlanPresets]:
    """Read and validate a `kvcalc check` plan, and index the presets it names (relative to the plan)."""
    _require_file(path, "plan file", "give the plan YAML's path", InvalidPreset)
    plan = validate_as(plan_type, read_mapping(path), str(path))
    folders, files = [], {}
    for entry in plan.presets:
        target = path.parent / entry
        found = _what_is(target)
        if found == "folder":
            folders.append(target)
        elif found == "file":
            files[str(_preset_name(read_mapping(target), target))] = target
        else:
            raise InvalidPreset(f"{path}: presets: {entry!r} is neither a file nor a folder (paths are relative to the plan)")
    return plan, PlanPresets(base=path.parent, folders=folders, files=files)
