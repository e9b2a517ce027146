"""Hugging Face repo ids (`org/name[@revision]`): config.json from the local Hugging Face cache first,
downloaded (config.json only) when not cached, the network is allowed and huggingface_hub is
installed (`pip install "kvcalc[hub]"`). huggingface_hub is imported only for that download.

Cache layout (huggingface_hub's): HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub;
in it models--{org}--{name}/refs/{branch or tag} holds a commit hash and
models--{org}--{name}/snapshots/{commit}/config.json the file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from kvcalc.errors import InvalidPreset, PresetNotFound
from kvcalc.spec import ModelSpec

_REPO_REFERENCE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
FILE_SUFFIXES = (".yaml", ".yml", ".json", ".gguf")  # a reference ending so is a file, never a repo id
_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of HF_HUB_OFFLINE


def repo_reference(ref: str) -> tuple[str, str | None] | None:
    """(repo id, revision or None) when `ref` reads as org/name[@revision] and no file of that
    relative path exists; None otherwise.

    >>> repo_reference("Qwen/Qwen3-8B@main"), repo_reference("llama3-8b"), repo_reference("models/x.yaml")
    (('Qwen/Qwen3-8B', 'main'), None, None)
    """
    match = _REPO_REFERENCE.match(ref)
    if match is None or ref.endswith(FILE_SUFFIXES) or ".." in ref or "--" in match.group("repo"):
        return None
    try:
        if Path(ref).exists():
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
    """The model of a Hub repo id, read from its cached config.json (downloaded when allowed)."""
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
    return model_from_config(path, label, source)


def model_from_snapshot(path: Path, repo: str, commit: str) -> ModelSpec:
    """A config.json given by its path inside a cache snapshot, named after its repo."""
    return model_from_config(path, repo, f"Hugging Face {repo} snapshot {commit[:12]}: config.json at {path}")


def model_from_config(path: Path, name: str, source: str) -> ModelSpec:
    from kvcalc.hf_config import model_fields_from_hf
    from kvcalc.presets import read_mapping, validate

    fields = model_fields_from_hf(read_mapping(path), default_name=name, origin=str(path))
    return validate("models", {**fields, "name": name, "source": source}, str(path))  # type: ignore[no-any-return]


def _not_cached(repo: str, revision: str | None, why: str) -> PresetNotFound:
    flag = f" --revision {revision}" if revision else ""
    return PresetNotFound(
        f"{repo}: config.json is not in the Hugging Face cache ({hub_cache()}) and {why}; get it with"
        f" `huggingface-cli download {repo} config.json{flag}`, or pass a config.json path"
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

    def error(name: str) -> type[BaseException]:  # this version's error class, or one never raised
        found: Any = getattr(errors, name, None)
        return found if isinstance(found, type) and issubclass(found, BaseException) else type(name, (Exception,), {})

    where = f"{repo} at revision {revision}" if revision else repo
    try:
        return Path(huggingface_hub.hf_hub_download(repo, "config.json", revision=revision, cache_dir=hub_cache()))
    except error("GatedRepoError"):
        message = f"{repo} is gated: accept its terms on huggingface.co, then set HF_TOKEN to a token with access"
    except error("RepositoryNotFoundError"):
        message = f"no Hugging Face repository {repo} (a private one needs HF_TOKEN)"
    except error("RevisionNotFoundError"):
        message = f"{repo} has no revision {revision!r}"
    except error("LocalEntryNotFoundError"):  # the Hub could not be reached and nothing is cached
        raise _not_cached(repo, revision, "the Hugging Face Hub cannot be reached") from None
    except error("EntryNotFoundError"):
        message = f"{where} has no config.json"
    except Exception as exc:  # network and HTTP failures of whichever HTTP client this version uses
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _not_cached(repo, revision, f"downloading it failed ({detail})") from None
    raise InvalidPreset(message)
