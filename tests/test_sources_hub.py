"""Hugging Face repo ids: config.json from a local Hugging Face cache built in a temp folder (no
network), snapshot paths named after their repo, and every way the lookup can fail."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from kvcalc.sources.hub import hub_cache, repo_reference, snapshot_of

from .conftest import HF_CONFIGS

COMMIT = "8cb4f4b8fa3b2e4c6cb7d1b1cb0f2a6b7c9d0e1f"
OTHER = "0123456789abcdef0123456789abcdef01234567"
LLAMA = (HF_CONFIGS / "llama3-8b-config.json").read_text()


def cache_repo(cache: Path, repo: str, commit: str = COMMIT, ref: str | None = "main", config: str = LLAMA) -> Path:
    """A repo as huggingface_hub caches it: the file in blobs/, linked from snapshots/<commit>/, refs/<ref> naming the commit."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    blob = folder / "blobs" / f"blob-{commit}"
    blob.write_text(config)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "config.json").symlink_to(Path("..") / ".." / "blobs" / blob.name)
    if ref is not None:
        (folder / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
        (folder / "refs" / ref).write_text(commit)
    return snapshot / "config.json"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache; the network is off unless a test turns it on."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HOME", raising=False)
    (tmp_path / "hub").mkdir()
    return tmp_path / "hub"


def test_repo_id_from_the_cache_is_named_after_the_repo(cli, cache: Path) -> None:
    cache_repo(cache, "meta-llama/Meta-Llama-3-8B")
    doc = cli.json("size", "--model", "meta-llama/Meta-Llama-3-8B", "--seq", "8192")
    from_file = cli.json("size", "--model", HF_CONFIGS / "llama3-8b-config.json", "--seq", "8192")
    assert doc["model"]["name"] == doc["kv"]["model"] == "meta-llama/Meta-Llama-3-8B"
    assert doc["kv"]["bytes_per_sequence"] == from_file["kv"]["bytes_per_sequence"] == 1_073_741_824
    assert doc["weights"] == from_file["weights"]
    assert doc["model"]["source"] == (
        f"Hugging Face meta-llama/Meta-Llama-3-8B at main (commit {COMMIT[:12]}): config.json from the local cache {cache}"
    )


def test_revisions_branch_tag_commit_and_prefix(cli, cache: Path) -> None:
    cache_repo(cache, "Qwen/Qwen3-8B", COMMIT)
    qwen = (HF_CONFIGS / "llama3-8b-config.json").read_text().replace('"num_key_value_heads": 8', '"num_key_value_heads": 4')
    cache_repo(cache, "Qwen/Qwen3-8B", OTHER, ref="v2", config=qwen)
    per_token = {
        ref: cli.json("size", "--model", f"Qwen/Qwen3-8B{ref}", "--seq", "1")["kv"]["bytes_per_token"]
        for ref in ("", "@main", "@v2", f"@{OTHER}", "@0123456", f"@{COMMIT[:10]}")
    }
    assert per_token == {
        "": 131_072,
        "@main": 131_072,
        "@v2": 65_536,
        f"@{OTHER}": 65_536,
        "@0123456": 65_536,
        f"@{COMMIT[:10]}": 131_072,
    }
    assert cli.json("size", "--model", "Qwen/Qwen3-8B@v2", "--seq", "1")["model"]["name"] == "Qwen/Qwen3-8B@v2"


def test_hf_home_layout(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache() == tmp_path / "home" / "hub"
    cache_repo(tmp_path / "home" / "hub", "org/model")
    assert cli.json("size", "--model", "org/model", "--seq", "1")["kv"]["bytes_per_token"] == 131_072


def test_snapshot_path_is_named_after_its_repo(cli, cache: Path) -> None:
    config = cache_repo(cache, "meta-llama/Meta-Llama-3-8B")
    assert snapshot_of(config) == ("meta-llama/Meta-Llama-3-8B", COMMIT)
    doc = cli.json("size", "--model", config, "--seq", "1")
    assert doc["model"]["name"] == "meta-llama/Meta-Llama-3-8B"
    assert doc["model"]["source"] == f"Hugging Face meta-llama/Meta-Llama-3-8B snapshot {COMMIT[:12]}: config.json at {config}"
    shown = cli.json("presets", "show", config)["spec"]
    assert shown["name"] == "meta-llama/Meta-Llama-3-8B" and "snapshot" in shown["source"]


def test_offline_and_not_cached(cli, cache: Path) -> None:
    result = cli("size", "--model", "Qwen/Qwen3-8B@v2", "--seq", "1")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "Qwen/Qwen3-8B: config.json is not in the Hugging Face cache" in result.stderr
    assert "HF_HUB_OFFLINE keeps kvcalc offline" in result.stderr
    assert "`huggingface-cli download Qwen/Qwen3-8B config.json --revision v2`" in result.stderr


def test_online_without_huggingface_hub(cli, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    result = cli("size", "--model", "Qwen/Qwen3-8B", "--seq", "1")
    assert result.exit_code == 2 and 'pip install "kvcalc[hub]"' in result.stderr and "huggingface-cli download" in result.stderr


class FakeHub:
    """A stand-in for huggingface_hub: hf_hub_download writes the cache entry the real one would, or raises."""

    def __init__(self, raises: str | None = None) -> None:
        self.calls: list[tuple[str, str, str | None]] = []
        self.raises = raises
        self.errors = types.ModuleType("huggingface_hub.errors")
        for name, base in (
            ("RepositoryNotFoundError", OSError),
            ("RevisionNotFoundError", OSError),
            ("EntryNotFoundError", OSError),
        ):
            setattr(self.errors, name, type(name, (base,), {}))
        self.errors.GatedRepoError = type("GatedRepoError", (self.errors.RepositoryNotFoundError,), {})
        self.errors.LocalEntryNotFoundError = type("LocalEntryNotFoundError", (self.errors.EntryNotFoundError,), {})
        self.module = types.ModuleType("huggingface_hub")
        self.module.errors = self.errors
        self.module.hf_hub_download = self.download

    def download(self, repo_id: str, filename: str, revision: str | None = None, cache_dir: Path | None = None) -> str:
        self.calls.append((repo_id, filename, revision))
        if self.raises == "network":
            raise ConnectionError("Max retries exceeded with url: /Qwen/Qwen3-8B/resolve/main/config.json")
        if self.raises:
            raise getattr(self.errors, self.raises)("from the fake")
        assert cache_dir is not None
        return str(cache_repo(Path(cache_dir), repo_id, ref=revision or "main"))


@pytest.fixture
def fake_hub(cache: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def install(raises: str | None = None) -> FakeHub:
        fake = FakeHub(raises)
        monkeypatch.setitem(sys.modules, "huggingface_hub", fake.module)
        monkeypatch.setitem(sys.modules, "huggingface_hub.errors", fake.errors)
        return fake

    return install


def test_downloads_config_json_only_when_not_cached(cli, cache: Path, fake_hub) -> None:
    fake = fake_hub()
    doc = cli.json("size", "--model", "Qwen/Qwen3-8B", "--seq", "1")
    assert fake.calls == [("Qwen/Qwen3-8B", "config.json", None)]
    assert "config.json downloaded to the local cache" in doc["model"]["source"] and COMMIT[:12] in doc["model"]["source"]
    cli.json("size", "--model", "Qwen/Qwen3-8B", "--seq", "1")
    assert len(fake.calls) == 1  # the second run reads the cache


@pytest.mark.parametrize(
    "raises, message",
    [
        ("GatedRepoError", "Qwen/Qwen3-8B is gated: accept its terms on huggingface.co, then set HF_TOKEN"),
        ("RepositoryNotFoundError", "no Hugging Face repository Qwen/Qwen3-8B (a private one needs HF_TOKEN)"),
        ("RevisionNotFoundError", "Qwen/Qwen3-8B has no revision 'v9'"),
        ("EntryNotFoundError", "Qwen/Qwen3-8B at revision v9 has no config.json"),
        ("LocalEntryNotFoundError", "the Hugging Face Hub cannot be reached; get it with `huggingface-cli download"),
        ("network", "downloading it failed (Max retries exceeded with url: /Qwen/Qwen3-8B/resolve/main/config.json)"),
    ],
)
def test_download_failures_are_one_line(cli, fake_hub, raises: str, message: str) -> None:
    fake_hub(raises)
    result = cli("size", "--model", "Qwen/Qwen3-8B@v9", "--seq", "1")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr


def test_which_reference_wins(cli, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name without a slash is a preset; org/name is a repo id unless a file of that relative path exists."""
    assert repo_reference("llama3-8b") is None and repo_reference("./org/name") is None
    assert repo_reference("org/name.yaml") is None and repo_reference("org/name.gguf") is None
    assert repo_reference("org/na--me") is None and repo_reference("org/../name") is None
    assert repo_reference("Qwen/Qwen2.5-7B-Instruct@refs/pr/1") == ("Qwen/Qwen2.5-7B-Instruct", "refs/pr/1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "name").write_text((Path(__file__).parent / "fixtures" / "presets" / "seed-7b.yaml").read_text())
    assert repo_reference("org/name") is None
    assert cli.json("size", "--model", "org/name", "--seq", "1")["model"]["name"] == "seed-7b"
    assert cli("size", "--model", "org/other", "--seq", "1").exit_code == 2  # not a file: a repo id, not cached


def test_unsupported_architecture_in_the_cache(cli, cache: Path) -> None:
    cache_repo(cache, "org/bert", config=(HF_CONFIGS / "bert-config.json").read_text())
    result = cli("size", "--model", "org/bert", "--seq", "1")
    assert result.exit_code == 2 and "model_type 'bert' is not supported" in result.stderr
