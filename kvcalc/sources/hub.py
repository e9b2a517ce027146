"""Hugging Face repo ids (`org/name[@revision]`): config.json from the local Hugging Face cache first,
downloaded (config.json only) when not cached, the network is allowed and huggingface_hub is
installed (`pip install "kvcalc[hub]"`); the weights' exact bytes from the safetensors headers, those
cached read from the snapshot, the others fetched by HTTP range requests (as hf-mem does), else
counted from config.json. huggingface_hub is imported only to fetch what the cache lacks.

Cache layout (huggingface_hub's): HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub;
in it models--{org}--{name}/refs/{branch or tag} holds a commit hash and
models--{org}--{name}/snapshots/{commit}/ the files (config.json, model.safetensors.index.json, shards).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from kvcalc.errors import InvalidPreset, PresetNotFound
from kvcalc.sources import safetensors
from kvcalc.spec import ModelSpec, VisionSpec

_REPO_REFERENCE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
FILE_SUFFIXES = (".yaml", ".yml", ".json", ".gguf")  # a reference ending so is a file, never a repo id
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of HF_HUB_OFFLINE
HUB_TIMEOUT_S = 5  # per request; huggingface_hub's default is 10 s, then 60 s on its retry
OFFLINE_HINT = "set HF_HUB_OFFLINE=1 to skip the network"


def repo_reference(ref: str, base: Path = Path()) -> tuple[str, str | None] | None:
    """(repo id, revision or None) when `ref` reads as org/name[@revision] and no file of that
    path relative to `base` (a plan's folder; the working one by default) exists; None otherwise.

    >>> repo_reference("Qwen/Qwen3-8B@main"), repo_reference("llama3-8b"), repo_reference("models/x.yaml")
    (('Qwen/Qwen3-8B', 'main'), None, None)
    """
    match = _REPO_REFERENCE.match(ref)
    if match is None or ref.endswith(FILE_SUFFIXES) or ".." in ref or "--" in match.group("repo"):
        return None
    try:
        if (base / ref).exists():
            return None  # a file or folder of that relative path wins over the repo id
    except OSError:
        pass
    return match.group("repo"), match.group("revision")


def hub_cache() -> Path:
    """huggingface_hub's cache folder, from the same variables it reads."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    """True when HF_HUB_OFFLINE forbids the network."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE


def _repo_folder(repo: str) -> Path:
    return hub_cache() / ("models--" + repo.replace("/", "--"))


def cached_config(repo: str, revision: str | None) -> tuple[Path, str] | None:
    """(config.json path, commit) of the repo at `revision` (default main) in the local cache, or None."""
    folder = _repo_folder(repo)
    wanted = revision or "main"
    commit: str | None = wanted if _COMMIT.match(wanted) else None
    if commit is None:
        try:
            commit = (folder / "refs" / wanted).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            commit = _snapshot_by_prefix(folder, wanted)
    if not commit or not _COMMIT.match(commit):
        return None
    config = folder / "snapshots" / commit / "config.json"
    return (config, commit) if config.is_file() else None


def _snapshot_by_prefix(folder: Path, prefix: str) -> str | None:
    """The one cached snapshot whose commit starts with `prefix` (7 hex digits or more)."""
    if not re.fullmatch(r"[0-9a-f]{7,39}", prefix):
        return None
    try:
        found = [p.name for p in (folder / "snapshots").iterdir() if p.name.startswith(prefix)]
    except OSError:
        return None
    return found[0] if len(found) == 1 else None


def snapshot_of(path: Path) -> tuple[str, str] | None:
    """(repo id, commit) when `path` lies in a cache snapshot (…/models--org--name/snapshots/<commit>/…)."""
    parts = path.absolute().parts  # not resolved: the snapshot's files are links into blobs/
    for i in range(len(parts) - 3, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith("models--") and parts[i - 1].count("--") >= 2:
            return parts[i - 1].removeprefix("models--").replace("--", "/", 1), parts[i + 1]
    return None


def model_from_hub(repo: str, revision: str | None) -> ModelSpec:
    """The model of a Hub repo id, read from its cached config.json (downloaded when allowed), its
    weights summed from its safetensors headers (cached, or fetched when allowed)."""
    cached = cached_config(repo, revision)
    how = "from"
    if cached is None:
        downloaded = _download(repo, revision)
        cached, how = (downloaded, (snapshot_of(downloaded) or ("", "(unknown)"))[1]), "downloaded to"
    path, commit = cached
    label = repo if revision is None else f"{repo}@{revision}"
    source = (
        f"Hugging Face {repo} at {revision or 'main'} (commit {commit[:12]}): config.json {how} the local cache {hub_cache()}"
    )
    pinned = commit if _COMMIT.match(commit) else revision  # the headers of the config's own commit
    return model_from_config(path, label, source, safetensors_weights(repo, pinned, path.parent, fetch=True))


def model_from_snapshot(path: Path, repo: str, commit: str) -> ModelSpec:
    """A config.json given by its path inside a cache snapshot, named after its repo; the weights
    from the safetensors headers cached beside it (a path is read locally, never fetched)."""
    source = f"Hugging Face {repo} snapshot {commit[:12]}: config.json at {path}"
    return model_from_config(path, repo, source, safetensors_weights(repo, commit, path.parent, fetch=False))


class Weights(NamedTuple):
    """A checkpoint's tensors from its safetensors headers, or None; and how they were found, or why not."""

    tensors: list[safetensors.Tensor] | None
    how: str


def model_from_config(path: Path, name: str, source: str, weights: Weights) -> ModelSpec:
    """A config.json's model with the weights' exact stored bytes when found; its source says where they came from."""
    from kvcalc.files import read_mapping, validate
    from kvcalc.hf_config import model_fields_from_hf

    fields = {**model_fields_from_hf(read_mapping(path), default_name=name, origin=str(path)), "name": name}
    spec: ModelSpec = validate("models", {**fields, "source": source}, str(path))
    if not weights.tensors:
        return spec.model_copy(update={"source": f"{source}; weights counted from config.json: {weights.how}"})
    text_tensors, tower_tensors = safetensors.split_tower(weights.tensors)
    spec = with_stored_tower(spec, tower_tensors, weights.how)
    stored = safetensors.stored_weights(text_tensors)
    packed = safetensors.packed_types(stored["types"])
    how = f"weights summed from {weights.how}" + (
        f" ({len(tower_tensors):,} tensors of the multimodal tower budgeted apart, as vision)" if tower_tensors else ""
    )
    if packed:  # integer tensors pack several values (GPTQ, AWQ, MXFP4): the parameters come from the shapes
        from kvcalc.weights import count_params

        counted = count_params(spec)
        stored = safetensors.stored_weights(text_tensors, counted.total if counted else None)
        if counted:
            how += f", params counted from config.json (its {', '.join(packed)} tensors pack values or hold scales)"
    update = {"stored_weights": stored, "params": stored["params"], "source": f"{source}; {how}"}
    if spec.vision is not None:
        update["vision"] = spec.vision.model_dump(exclude_none=True)
    return validate("models", {**fields, **update}, str(path))  # type: ignore[no-any-return]


def with_stored_tower(spec: ModelSpec, tower: list[safetensors.Tensor], how: str) -> ModelSpec:
    """The spec's vision tower with its exact parameters from the checkpoint's tower tensors (the
    config's count, and its shapes for vLLM's profiling, otherwise); a tower the config does not
    describe gets its parameters alone."""
    if not tower:
        return spec
    elements, stored = sum(t.elements for t in tower), sum(t.bytes for t in tower)
    source = f"{len(tower):,} tower and projector tensors summed from {how}"
    exact = {"params": elements, "stored_bytes": stored}
    if spec.vision is not None:
        vision = spec.vision.model_copy(update={**exact, "source": f"{source}; shapes: {spec.vision.source}"})
    else:
        vision = VisionSpec(**exact, source=f"{source}; its shapes are not read (no vLLM profiling term)")
    return spec.model_copy(update={"vision": vision})


def safetensors_weights(repo: str, revision: str | None, snapshot: Path, fetch: bool) -> Weights:
    """The tensors of a repo's safetensors checkpoint: each shard's header from the cache snapshot,
    those not cached fetched by HTTP range requests when `fetch`, the network and huggingface_hub
    allow (the index too, which huggingface_hub caches). Weights(None, why) when they cannot be had."""
    index, single = snapshot / safetensors.INDEX_FILE, snapshot / safetensors.SINGLE_FILE
    shards = safetensors.read_index(index) if index.is_file() else [single.name] if single.is_file() else None
    missing = [shard for shard in shards or [] if not (snapshot / shard).is_file()]
    fetched: dict[str, list[safetensors.Tensor]] = {}
    if shards is None or missing:
        not_cached = (
            "no safetensors header is cached" if shards is None else f"{len(missing)} of its {len(shards)} shards are not cached"
        )
        hub = _hub_for_headers(fetch)
        if isinstance(hub, str):
            return Weights(None, f"{not_cached} and {hub}")
        try:
            with _quiet(hub):
                if shards is None:
                    shards = missing = _remote_shards(hub, repo, revision)
                fetched = _fetch_headers(hub, repo, revision, missing)
        except _NoSafetensors:
            return Weights(None, f"{repo} has no {safetensors.SINGLE_FILE} or {safetensors.INDEX_FILE}")
        except Exception as exc:  # network, HTTP, access and parsing failures of this huggingface_hub version
            hint = "" if _http_error(exc) else f"; {OFFLINE_HINT}"
            return Weights(None, f"{not_cached} and fetching the headers failed ({_first_line(exc)}){hint}")
    tensors = [
        t for shard in shards for t in (fetched[shard] if shard in fetched else safetensors.read_tensors(snapshot / shard))
    ]
    if not sum(t.bytes for t in tensors):
        return Weights(None, f"the safetensors headers of {repo} list no tensor data")
    cached = len(shards) - len(fetched)
    counts = [f"{cached} read from the cache"] if cached else []
    counts += [f"{len(fetched)} fetched by HTTP range requests"] if fetched else []
    where = ", ".join(counts)
    files = f"its {len(shards)} safetensors shards" if len(shards) > 1 else shards[0]
    return Weights(tensors, f"the headers of {files} ({where}): {len(tensors):,} tensors")


class _NoSafetensors(Exception):
    """The repo has neither a single safetensors file nor an index."""


def _hub_for_headers(fetch: bool) -> Any:
    """huggingface_hub when headers may be fetched, else why not (a string)."""
    if not fetch:
        return "a config.json path is read locally"
    if offline():
        return "HF_HUB_OFFLINE keeps kvcalc offline"
    try:
        import huggingface_hub
    except ImportError:
        return 'huggingface_hub is not installed (pip install "kvcalc[hub]" to fetch them)'
    return huggingface_hub


def _remote_shards(hub: Any, repo: str, revision: str | None) -> list[str]:
    """The shards the repo's index names (huggingface_hub downloads the index into the cache), or its single file."""
    from huggingface_hub import errors

    try:
        _head(hub, repo, safetensors.INDEX_FILE, revision)
        index = hub.hf_hub_download(
            repo, safetensors.INDEX_FILE, revision=revision, cache_dir=hub_cache(), etag_timeout=HUB_TIMEOUT_S
        )
    except _hub_error(errors, "LocalEntryNotFoundError"):
        raise  # the Hub cannot be reached (a subclass of EntryNotFoundError in some versions)
    except _hub_error(errors, "EntryNotFoundError"):
        return [safetensors.SINGLE_FILE]
    return safetensors.read_index(Path(index))


def _fetch_headers(hub: Any, repo: str, revision: str | None, shards: list[str]) -> dict[str, list[safetensors.Tensor]]:
    """Each shard's tensors, its header fetched by HTTP range requests (huggingface_hub's
    parse_safetensors_file_metadata, which sends HF_TOKEN), several shards at once."""
    from huggingface_hub import errors

    def header(shard: str) -> list[safetensors.Tensor]:
        try:
            found = hub.parse_safetensors_file_metadata(repo, shard, revision=revision)
        except _hub_error(errors, "EntryNotFoundError"):
            if shard == safetensors.SINGLE_FILE:
                raise _NoSafetensors from None
            raise
        origin = f"{repo}/{shard}"
        return [safetensors.tensor(n, t.dtype, t.shape, t.data_offsets, origin) for n, t in found.tensors.items()]

    with ThreadPoolExecutor(max_workers=min(8, len(shards))) as pool:
        return dict(zip(shards, pool.map(header, shards), strict=True))


def _head(hub: Any, repo: str, filename: str, revision: str | None) -> None:
    """One HEAD request for `filename`, with a short timeout and no retries (get_hf_file_metadata), so an
    unreachable Hub costs seconds: hf_hub_download, when the network fails and nothing is cached, asks
    again with retries (huggingface_hub 1.x file_download.py: retry_on_errors=True, five backoffs, about 24 s)."""
    hub.get_hf_file_metadata(hub.hf_hub_url(repo, filename, revision=revision), timeout=HUB_TIMEOUT_S)


@contextmanager
def _quiet(hub: Any) -> Iterator[None]:
    """huggingface_hub without its log lines (retries, warnings) and progress bars: kvcalc says what happened in one line."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    utils = getattr(hub, "utils", None)
    bars_were_off = getattr(utils, "are_progress_bars_disabled", lambda: True)()
    logger.setLevel(logging.CRITICAL)
    getattr(utils, "disable_progress_bars", lambda: None)()
    try:
        yield
    finally:
        logger.setLevel(level)
        if not bars_were_off:
            getattr(utils, "enable_progress_bars", lambda: None)()


def _http_error(exc: BaseException) -> bool:
    """Whether the Hub answered (an HTTP error) rather than could not be reached."""
    from huggingface_hub import errors

    return isinstance(exc, _hub_error(errors, "HfHubHTTPError"))


def _hub_error(errors: Any, name: str) -> type[BaseException]:
    """This huggingface_hub version's error class `name`, or one never raised."""
    found: Any = getattr(errors, name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else type(name, (Exception,), {})


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _not_cached(repo: str, revision: str | None, why: str) -> PresetNotFound:
    flag = f" --revision {revision}" if revision else ""
    return PresetNotFound(
        f"{repo}: config.json is not in the Hugging Face cache ({hub_cache()}) and {why}; get it with"
        f" `hf download {repo} config.json{flag}`, or pass a config.json path"
    )


def _download(repo: str, revision: str | None) -> Path:
    """config.json fetched into the cache by huggingface_hub (which reads HF_TOKEN for gated repos)."""
    if offline():
        raise _not_cached(repo, revision, "HF_HUB_OFFLINE keeps kvcalc offline")
    try:
        import huggingface_hub
        from huggingface_hub import errors  # 0.25 and later
    except ImportError:
        raise _not_cached(repo, revision, 'huggingface_hub is not installed (pip install "kvcalc[hub]" to download it)') from None

    where = f"{repo} at revision {revision}" if revision else repo
    try:
        with _quiet(huggingface_hub):
            _head(huggingface_hub, repo, "config.json", revision)
            return Path(
                huggingface_hub.hf_hub_download(
                    repo, "config.json", revision=revision, cache_dir=hub_cache(), etag_timeout=HUB_TIMEOUT_S
                )
            )
    except _hub_error(errors, "GatedRepoError"):
        message = f"{repo} is gated: accept its terms on huggingface.co, then set HF_TOKEN to a token with access"
    except _hub_error(errors, "RepositoryNotFoundError"):
        message = f"no Hugging Face repository {repo} (a private one needs HF_TOKEN)"
    except _hub_error(errors, "RevisionNotFoundError"):
        message = f"{repo} has no revision {revision!r}"
    except _hub_error(errors, "LocalEntryNotFoundError"):  # the Hub could not be reached and nothing is cached
        raise _not_cached(repo, revision, f"the Hugging Face Hub cannot be reached ({OFFLINE_HINT})") from None
    except _hub_error(errors, "EntryNotFoundError"):
        message = f"{where} has no config.json"
    except Exception as exc:  # network and HTTP failures of whichever HTTP client this version uses
        why = "downloading it failed" if _http_error(exc) else f"the Hugging Face Hub cannot be reached ({OFFLINE_HINT})"
        raise _not_cached(repo, revision, f"{why}: {_first_line(exc)}") from None
    raise InvalidPreset(message)
