"""Finding and reading presets: shipped YAML, user YAML files and folders, Hugging Face config.json.

Files are read and validated by kvcalc.files (safe YAML only); every failure becomes an InvalidPreset
or PresetNotFound naming the file (and line or field) and the fix. Models and GPUs kept elsewhere (GGUF,
Hub, vendors' tools) come from kvcalc.sources, which this module calls and which never calls it. A model or GPU preset
file without a `name:` takes its file's stem as its name, both when listed and when loaded.
"""

# no `from __future__ import annotations`: pydantic takes the fields' annotations as objects rather than
# compiling and evaluating each string (start-up, docs/benchmarks.md)

import difflib
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple, cast

from pydantic import BaseModel

from kvcalc.base import Frozen
from kvcalc.errors import InvalidPreset, PresetNotFound
from kvcalc.files import SPEC_TYPES, Kind, read_mapping, require_file, validate, validate_as, what_is
from kvcalc.spec import DERIVED_FIELDS, GpuSpec, ModelSpec

PRESETS_ENV = "KVCALC_PRESETS"


def shipped_presets_dir() -> Path:
    """The presets inside the installed wheel, or the repository's presets/ in a source checkout."""
    packaged = Path(__file__).resolve().parent / "presets"  # the wheel maps presets/ here
    return packaged if packaged.is_dir() else packaged.parent.parent / "presets"


def user_presets_dirs(extra: Sequence[str | Path] | None = None) -> list[Path]:
    """Folders named by --presets and by KVCALC_PRESETS (os.pathsep-separated, empty entries skipped), in that order."""
    if "" in (extra or []):
        raise InvalidPreset("--presets: empty folder name; give a folder (--presets . for the current one)")
    dirs = [Path(p) for p in extra or []]
    dirs += [Path(p) for p in os.environ.get(PRESETS_ENV, "").split(os.pathsep) if p]
    for folder in dirs:
        found = what_is(folder)
        if found == "file":
            raise InvalidPreset(
                f"{folder}: is a file, not a presets folder (from --presets or ${PRESETS_ENV}); "
                "give the folder holding it, or pass the file to --model or --gpu"
            )
        if found != "folder":
            problem = "does not exist" if found == "missing" else "is not a folder"
            raise InvalidPreset(f"{folder}: presets folder {problem} (from --presets or ${PRESETS_ENV})")
    return dirs


def load_file(kind: Kind, path: Path) -> Any:
    """A spec from a YAML file, or (models only) a Hugging Face config.json."""
    return _spec_from(kind, path, read_mapping(path))


def _spec_from(kind: Kind, path: Path, data: dict[str, Any]) -> Any:
    if kind == "models" and path.suffix == ".json":
        from kvcalc.hf_config import model_fields_from_hf

        # without _name_or_path: a config.json is named after its folder (its repo's), another file after its stem
        folder = path.resolve().parent.name if path.name == "config.json" else None
        data = model_fields_from_hf(data, default_name=folder or path.stem.removesuffix("-config"), origin=str(path))
    else:
        data = {**data, "name": _preset_name(data, path)}
    return validate(kind, data, str(path))


def _preset_name(data: dict[str, Any], path: Path) -> Any:
    """The file's `name:`, or its stem when it gives none (absent or null); a name given is validated as it is."""
    return path.stem if data.get("name") is None else data["name"]


def _looks_like(data: dict[str, Any]) -> Kind:
    return "gpus" if "memory_bytes" in data or "bandwidth_bytes_per_s" in data else "models"


class PresetEntry(Frozen):
    """A preset's name, the file it comes from, and its validated spec."""

    name: str
    path: Path
    origin: Literal["shipped", "user"]
    spec: ModelSpec | GpuSpec


class PresetProblem(Frozen):
    """A preset file that cannot be used, and why: an error when its preset is asked for, a warning in a listing."""

    path: Path
    reason: str


class PresetListing(Frozen):
    """Every usable model and GPU preset (user presets over shipped ones), and the files that are not usable."""

    models: list[PresetEntry]
    gpus: list[PresetEntry]
    errors: list[PresetProblem]


class _Scanned(NamedTuple):
    """One file of a presets folder, read and validated: its spec, or the error that stops it."""

    name: str  # the validated name; for a broken file, its `name:` when readable, else its stem
    path: Path
    kind: Kind | None  # None: a file too broken to tell
    spec: Any
    error: InvalidPreset | None

    def load(self) -> Any:
        """The spec, or the file's error raised."""
        if self.error is not None:
            raise self.error
        return self.spec


def _scan_file(path: Path, kind: Kind | None) -> "_Scanned":
    """Read and validate one preset file as `kind`, or as what its fields say when `kind` is None."""
    name, found_kind = path.stem, kind
    try:
        if what_is(path) != "file":
            problem = "a broken symbolic link" if path.is_symlink() and not path.exists() else "not a regular file"
            raise InvalidPreset(f"{path}: {problem}")
        data = read_mapping(path)
        if isinstance(data.get("name"), str):
            name = data["name"]
        if kind is not None and _looks_like(data) != kind:  # claims its name as both kinds, so either finds the error
            found_kind, wrong = None, "a GPU (it has memory_bytes)" if kind == "models" else "a model (no memory_bytes)"
            raise InvalidPreset(f"{path}: describes {wrong} but is in a {kind} folder; move it to {_looks_like(data)}/")
        found_kind = kind or _looks_like(data)
        spec = _spec_from(found_kind, path, data)
    except InvalidPreset as exc:
        return _Scanned(name, path, found_kind, None, exc)
    return _Scanned(spec.name, path, found_kind, spec, None)


def _scan_folder(folder: Path) -> list[_Scanned]:
    """Every preset file of a folder: its models/ and gpus/ subfolders (each file its folder's kind) and the
    YAML files beside them (each the kind its fields say)."""
    scanned = [_scan_file(path, None) for path in sorted(folder.glob("*.y*ml"))]
    for kind in ("models", "gpus"):
        sub = folder / kind
        if what_is(sub) == "folder":
            scanned += [_scan_file(path, kind) for path in sorted(sub.glob("*.y*ml"))]
    return scanned


_Folders = list[tuple[Literal["shipped", "user"], list[_Scanned]]]


def _by_name(kind: Kind, folders: _Folders) -> dict[str, tuple[Literal["shipped", "user"], _Scanned]]:
    """The presets of `kind` by name, later folders over earlier ones. A broken file claims its name too, so
    asking for that name reports it; two files of one folder claiming one name are an error for that name."""
    merged: dict[str, tuple[Literal["shipped", "user"], _Scanned]] = {}
    for origin, scanned in folders:
        here: dict[str, _Scanned] = {}
        for item in scanned:
            if item.kind not in (kind, None):
                continue
            if item.name in here:
                other = here[item.name].path
                item = item._replace(error=InvalidPreset(f"{item.path}: preset name {item.name!r} is also defined in {other}"))
            here[item.name] = item
        merged.update((name, (origin, item)) for name, item in here.items())
    return merged


def _user_folders(extra_dirs: Sequence[str | Path] | None) -> _Folders:
    """The user folders scanned, lowest precedence first: user_presets_dirs' order reversed, so --presets wins."""
    return [("user", _scan_folder(folder)) for folder in reversed(user_presets_dirs(extra_dirs))]


def _all_folders(extra_dirs: Sequence[str | Path] | None) -> _Folders:
    folder = shipped_presets_dir()
    shipped = [
        _Scanned(name, folder / kind / f"{name}.yaml", kind, build(), None)
        for kind in ("models", "gpus")
        for name, build in _shipped(kind).items()
    ]
    return [("shipped", shipped), *_user_folders(extra_dirs)]


def presets_listing(extra_dirs: Sequence[str | Path] | None = None) -> "PresetListing":
    """Every usable preset, user presets over shipped ones, and every file that cannot be used with its reason.

    `presets list` and the loaders read the same scan: a name is listed exactly when it loads.
    """
    folders = _all_folders(extra_dirs)
    usable: dict[Kind, list[PresetEntry]] = {}
    problems: dict[Path, PresetProblem] = {}
    for kind in ("models", "gpus"):
        named = _by_name(kind, folders)
        usable[kind] = [
            PresetEntry(name=name, path=item.path, origin=origin, spec=item.spec)
            for name, (origin, item) in sorted(named.items())
            if item.error is None
        ]
        broken = [item for _, item in named.values()] + [item for _, scanned in folders for item in scanned]
        for item in broken:
            if item.error is not None and item.path not in problems:
                problems[item.path] = PresetProblem(path=item.path, reason=_reason(item.path, str(item.error)))
    return PresetListing(models=usable["models"], gpus=usable["gpus"], errors=sorted(problems.values(), key=lambda p: p.path))


def _reason(path: Path, message: str) -> str:
    """An error message without the file it names: "line 3: invalid YAML: ..." for "x.yaml:3: invalid YAML: ..."."""
    rest = message.removeprefix(str(path))
    line = re.match(r":(\d+): ", rest)
    return f"line {line.group(1)}: {rest[line.end() :]}" if line else rest.removeprefix(": ")


def list_presets(kind: Kind, extra_dirs: Sequence[str | Path] | None = None) -> list[PresetEntry]:
    """The usable presets of one kind: shipped ones, overridden by user presets of the same name."""
    listing = presets_listing(extra_dirs)
    return listing.models if kind == "models" else listing.gpus


def _is_path(ref: str) -> bool:
    return ref.endswith((".yaml", ".yml", ".json")) or os.sep in ref or "/" in ref


def _preset_file(ref: str) -> Path:
    """The file a --model or --gpu path names, which must be a regular file."""
    require_file(Path(ref), "file", "a folder of presets goes to --presets", PresetNotFound)
    return Path(ref)


def _named(kind: Kind, ref: str, user: _Folders) -> tuple[Any, Path] | None:
    """The preset `ref` of `kind` and its file, from the user folders, then the shipped ones; None when
    none claims it. A broken file that claims the name raises its error."""
    claimed = _by_name(kind, user).get(ref)
    if claimed is not None:
        return claimed[1].load(), claimed[1].path
    build = _shipped(kind).get(ref)
    return (build(), shipped_presets_dir() / kind / f"{ref}.yaml") if build else None


def _shipped(kind: Kind) -> dict[str, Callable[[], Any]]:
    """The shipped presets of `kind` by name (their files' stems), validated when kvcalc.shipped was
    written from presets/ and built without a validator (the tests check it against the files)."""
    from kvcalc import shipped

    return shipped.MODELS if kind == "models" else shipped.GPUS  # type: ignore[return-value]


def _unknown(what: str, ref: str, names: list[str], listing: PresetListing, first: Sequence[str] = ()) -> PresetNotFound:
    close = list(dict.fromkeys([*first, *_closest(ref, names)]))[:3]
    hint = f"; did you mean {', '.join(close)}?" if close else f"; `kvcalc presets list` shows all {len(names)}"
    broken = len(listing.errors)
    if broken:
        hint += f" ({broken} preset file{'s are' if broken > 1 else ' is'} broken: `kvcalc presets list` says why)"
    return PresetNotFound(f"unknown {what} {ref!r}{hint}")


def resolve(kind: Kind, ref: str, extra_dirs: Sequence[str | Path] | None = None) -> Any:
    """A spec by preset name (user presets first), by file path, or from where users keep models
    and GPUs (GGUF files, Hub repo ids, cache snapshots, --gpu auto, vendors' device names)."""
    from kvcalc import sources

    special = sources.model_reference(ref) if kind == "models" else sources.gpu_reference(ref, _gpu_presets(extra_dirs))
    if special is not None:
        return special
    if _is_path(ref):
        return load_file(kind, _preset_file(ref))
    named = _named(kind, ref, _user_folders(extra_dirs))
    if named is not None:
        return named[0]
    listing = presets_listing(extra_dirs)
    names = [e.name for e in (listing.models if kind == "models" else listing.gpus)]
    if kind == "gpus":  # a name as nvidia-smi or amd-smi prints it, else suggestions
        return sources.gpu_by_device_name(ref, _gpu_presets(extra_dirs), _closest(ref, names))
    raise _unknown("model", ref, names, listing)


def _gpu_presets(extra_dirs: Sequence[str | Path] | None) -> Callable[[], list[GpuSpec]]:
    """The GPU presets (user presets first), listed when the readers must match a device name."""
    return lambda: [cast(GpuSpec, entry.spec) for entry in list_presets("gpus", extra_dirs)]


def _closest(ref: str, names: Iterable[str]) -> list[str]:
    """Up to three names that start like `ref` or are spelled close to it."""
    names = list(names)
    prefixed = [n for n in names if n.startswith(ref.lower())]
    return (prefixed + [n for n in difflib.get_close_matches(ref.lower(), names, n=3, cutoff=0.5) if n not in prefixed])[:3]


def load_any(ref: str, extra_dirs: Sequence[str | Path] | None = None) -> ModelSpec | GpuSpec:
    """A model or a GPU: a file read as what its fields say it is, a name looked up among both."""
    return _locate_any(ref, extra_dirs)[0]


class DescribedPreset(NamedTuple):
    """A model or GPU, the file it was read from (None for a Hub repo or `auto`), and the fields that
    file gives (a YAML's keys; every field set for config.json and GGUF files, which name no defaults)."""

    spec: ModelSpec | GpuSpec
    path: Path | None
    given: frozenset[str]

    def field_sources(self) -> dict[str, str]:
        """Every field of the spec, in order, and where its value comes from: the file (`path`),
        derived from other fields, the default, or not given."""
        derived = {**DERIVED_FIELDS, "name": "the file's name"}
        sources = {}
        for field, info in type(self.spec).model_fields.items():
            if field in self.given:
                sources[field] = "file" if self.path is not None else "given"
            elif field in self.spec.model_fields_set:
                sources[field] = f"derived: {derived.get(field, 'from the other fields')}"
            else:
                sources[field] = "not given" if info.default is None else "default"
        return sources


def describe(ref: str, extra_dirs: Sequence[str | Path] | None = None) -> "DescribedPreset":
    """`load_any`'s spec with the file it comes from and the fields that file gives (for `presets show`)."""
    spec, path = _locate_any(ref, extra_dirs)
    given = spec.model_fields_set
    if path is not None and path.suffix in (".yaml", ".yml"):
        given = set(read_mapping(path))
    return DescribedPreset(spec, path, frozenset(given))


def _locate_any(ref: str, extra_dirs: Sequence[str | Path] | None) -> tuple[ModelSpec | GpuSpec, Path | None]:
    """The spec `ref` names and the file it is read from: a GGUF, Hub repo or snapshot; a preset name
    (user presets first, models before GPUs); `auto` or a vendor's device name; a file."""
    from kvcalc import sources  # GGUF files, Hub repo ids, cache snapshots, `auto` and device names

    model = sources.model_reference(ref)
    if model is not None:
        return model, Path(ref) if ref.endswith((".gguf", ".json")) else None
    if not _is_path(ref):
        user = _user_folders(extra_dirs)
        for kind in ("models", "gpus"):
            named = _named(kind, ref, user)
            if named is not None:
                return named  # type: ignore[return-value]
    gpu = sources.gpu_reference(ref, _gpu_presets(extra_dirs), by_device_name=True)
    if gpu is not None:
        return gpu, None
    if _is_path(ref):
        path = _preset_file(ref)
        data = read_mapping(path)
        return _spec_from("models" if path.suffix == ".json" else _looks_like(data), path, data), path
    listing = presets_listing(extra_dirs)
    from kvcalc.sources.gpus import alike_gpus  # "gb10" names DGX Spark's alias, not a preset name

    alike = alike_gpus(ref, lambda: [cast(GpuSpec, entry.spec) for entry in listing.gpus])
    raise _unknown("model or GPU", ref, [e.name for e in listing.models + listing.gpus], listing, alike)


def load_model(ref: str, extra_dirs: Sequence[str | Path] | None = None) -> ModelSpec:
    """A model by preset name, YAML path or config.json path."""
    return resolve("models", ref, extra_dirs)  # type: ignore[no-any-return]


def load_gpu(ref: str, extra_dirs: Sequence[str | Path] | None = None) -> GpuSpec:
    """A GPU by preset name or YAML path."""
    return resolve("gpus", ref, extra_dirs)  # type: ignore[no-any-return]


def load_local_gpus(extra_dirs: Sequence[str | Path] | None = None) -> list[GpuSpec]:
    """`--gpu auto` for a llama.cpp placement: each of this machine's GPUs, alike or not."""
    from kvcalc.sources.gpus import every_gpu

    return every_gpu(_gpu_presets(extra_dirs))


def recognise_gpu(device_name: str) -> str | None:
    """The preset one of whose `aliases` is a device name as torch or nvidia-smi reports it, e.g.
    'NVIDIA H100 80GB HBM3' -> h100-sxm (the aliases are the one list of vendors' names).

    >>> recognise_gpu("NVIDIA H100 80GB HBM3"), recognise_gpu("NVIDIA A100-SXM4-80GB"), recognise_gpu("AMD EPYC")
    ('h100-sxm', 'a100-80gb', None)
    """
    from kvcalc.sources.gpus import gpu_by_device_name

    found = gpu_by_device_name(device_name, _gpu_presets(None))
    return found.name if found is not None else None


class PlanPresets(Frozen):
    """Where a plan's model and GPU names resolve: its single preset files, its folders, user and shipped presets."""

    base: Path
    folders: list[Path]
    specs: list[ModelSpec | GpuSpec]  # the plan's single preset files, read and validated

    def resolve(self, kind: Kind, ref: str) -> Any:
        """A spec by name (the plan's files, then its folders, user and shipped presets), by path
        relative to the plan, or (models) by Hugging Face repo id when no such path exists."""
        wanted = SPEC_TYPES[kind]
        spec = next((s for s in self.specs if s.name == ref and isinstance(s, wanted)), None)
        if spec is not None:
            return spec
        from kvcalc.sources import hub

        if kind == "models" and (repo := hub.repo_reference(ref, self.base)) is not None:
            return hub.model_from_hub(*repo)
        if _is_path(ref):
            return resolve(kind, str(self.base / ref))
        return resolve(kind, ref, self.folders)


def load_plan(path: Path, plan_type: type[BaseModel]) -> tuple[Any, PlanPresets]:
    """Read and validate a `kvcalc check` plan, and read the presets it names (relative to the plan): a
    single file must be usable, a folder's files only when a workload asks for them."""
    require_file(path, "plan file", "give the plan YAML's path", InvalidPreset)
    plan = validate_as(plan_type, read_mapping(path), str(path))
    folders, specs = [], []
    for entry in plan.presets:
        target = path.parent / entry
        found = what_is(target)
        if found == "folder":
            folders.append(target)
        elif found == "file":
            specs.append(_scan_file(target, None).load())
        else:
            raise InvalidPreset(f"{path}: presets: {entry!r} is neither a file nor a folder (paths are relative to the plan)")
    return plan, PlanPresets(base=path.parent, folders=folders, specs=specs)
