"""Hugging Face repo ids: config.json from a local Hugging Face cache built in a temp folder (no
network), snapshot paths named after their repo, and every way the lookup can fail."""

from __future__ import annotations

import json
import logging
import math
import re
import struct
import sys
import types
from pathlib import Path

import pytest

from kvcalc.errors import InvalidPreset
from kvcalc.sources import safetensors
from kvcalc.sources.hub import hub_cache, repo_reference, snapshot_of

from .conftest import HF_CONFIGS
from .safetensors_writer import ELEMENT_BYTES, Tensors, header, header_bytes, in_shards, llama_tensors, write_checkpoint

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
        f"Hugging Face meta-llama/Meta-Llama-3-8B at main (commit {COMMIT[:12]}): config.json from the local cache {cache};"
        " weights counted from config.json: no safetensors header is cached and HF_HUB_OFFLINE keeps kvcalc offline"
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
    assert doc["model"]["source"] == (
        f"Hugging Face meta-llama/Meta-Llama-3-8B snapshot {COMMIT[:12]}: config.json at {config};"
        " weights counted from config.json: no safetensors header is cached and a config.json path is read locally"
    )
    shown = cli.json("presets", "show", config)["spec"]
    assert shown["name"] == "meta-llama/Meta-Llama-3-8B" and "snapshot" in shown["source"]


def test_offline_and_not_cached(cli, cache: Path) -> None:
    result = cli("size", "--model", "Qwen/Qwen3-8B@v2", "--seq", "1")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "Qwen/Qwen3-8B: config.json is not in the Hugging Face cache" in result.stderr
    assert "HF_HUB_OFFLINE keeps kvcalc offline" in result.stderr
    assert "`hf download Qwen/Qwen3-8B config.json --revision v2`" in result.stderr


def test_online_without_huggingface_hub(cli, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import fails as if not installed
    result = cli("size", "--model", "Qwen/Qwen3-8B", "--seq", "1")
    assert (
        result.exit_code == 2
        and 'pip install "kvcalc[hub]"' in result.stderr
        and "`hf download Qwen/Qwen3-8B config.json`" in result.stderr
    )


class FakeHub:
    """A stand-in for huggingface_hub: hf_hub_download writes the cache entry the real one would (config.json,
    the safetensors index of `shards`), parse_safetensors_file_metadata answers from `shards`' headers; or they raise."""

    def __init__(
        self, raises: str | None = None, shards: dict[str, Tensors] | None = None, header_raises: str | None = None
    ) -> None:
        self.calls: list[tuple[str, str, str | None]] = []
        self.headers: list[tuple[str, str | None]] = []
        self.raises, self.shards, self.header_raises = raises, shards or {}, header_raises
        self.errors = types.ModuleType("huggingface_hub.errors")
        self.errors.HfHubHTTPError = type("HfHubHTTPError", (OSError,), {})
        for name in ("RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError"):
            setattr(self.errors, name, type(name, (self.errors.HfHubHTTPError,), {}))
        self.errors.GatedRepoError = type("GatedRepoError", (self.errors.RepositoryNotFoundError,), {})
        self.errors.LocalEntryNotFoundError = type("LocalEntryNotFoundError", (self.errors.EntryNotFoundError,), {})
        self.module = types.ModuleType("huggingface_hub")
        self.module.errors = self.errors
        self.module.hf_hub_download = self.download
        self.module.parse_safetensors_file_metadata = self.parse_header
        self.module.hf_hub_url = lambda repo_id, filename, revision=None: f"{repo_id}/{filename}@{revision}"
        self.module.get_hf_file_metadata = self.head
        self.timeouts: list[float] = []

    def head(self, url: str, timeout: float) -> None:
        """The HEAD request: what the Hub answers for the file (here, what the download would raise)."""
        self.timeouts.append(timeout)
        if self.raises != "LocalEntryNotFoundError":  # hf_hub_download's own error, not an HTTP answer
            self._fail(self.raises)

    def _fail(self, raises: str | None) -> None:
        if raises == "network":
            raise ConnectionError("Max retries exceeded with url: /Qwen/Qwen3-8B/resolve/main/config.json")
        if raises:
            raise getattr(self.errors, raises)("from the fake")

    def download(
        self, repo_id: str, filename: str, revision: str | None = None, cache_dir: Path | None = None, etag_timeout: float = 10
    ) -> str:
        self.calls.append((repo_id, filename, revision))
        self.timeouts.append(etag_timeout)
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")  # as 1.x logs its retries
        self._fail(self.raises)
        assert cache_dir is not None
        if filename == "config.json":
            return str(cache_repo(Path(cache_dir), repo_id, ref=revision or "main"))
        if filename == "model.safetensors.index.json" and len(self.shards) > 1:
            snapshot = Path(cache_dir) / ("models--" + repo_id.replace("/", "--")) / "snapshots" / str(revision)
            weight_map = {name: shard for shard, tensors in self.shards.items() for name in tensors}
            (snapshot / filename).write_text(json.dumps({"weight_map": weight_map}))
            return str(snapshot / filename)
        raise self.errors.EntryNotFoundError(filename)

    def parse_header(self, repo_id: str, filename: str, revision: str | None = None) -> types.SimpleNamespace:
        self.headers.append((filename, revision))
        self._fail(self.header_raises)
        if filename not in self.shards:
            raise self.errors.EntryNotFoundError(filename)
        entries = {n: e for n, e in header(self.shards[filename]).items() if n != "__metadata__"}
        return types.SimpleNamespace(tensors={n: types.SimpleNamespace(**e) for n, e in entries.items()})


@pytest.fixture
def fake_hub(cache: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def install(raises: str | None = None, shards: dict[str, Tensors] | None = None, header_raises: str | None = None) -> FakeHub:
        fake = FakeHub(raises, shards, header_raises)
        monkeypatch.setitem(sys.modules, "huggingface_hub", fake.module)
        monkeypatch.setitem(sys.modules, "huggingface_hub.errors", fake.errors)
        return fake

    return install


def test_downloads_config_json_only_when_not_cached(cli, cache: Path, fake_hub) -> None:
    fake = fake_hub()
    doc = cli.json("size", "--model", "Qwen/Qwen3-8B", "--seq", "1")
    assert fake.calls[0] == ("Qwen/Qwen3-8B", "config.json", None)  # then the safetensors index, at the config's commit
    assert "config.json downloaded to the local cache" in doc["model"]["source"] and COMMIT[:12] in doc["model"]["source"]
    cli.json("size", "--model", "Qwen/Qwen3-8B", "--seq", "1")
    assert [call[1] for call in fake.calls].count("config.json") == 1  # the second run reads the cache


@pytest.mark.parametrize(
    "raises, message",
    [
        ("GatedRepoError", "Qwen/Qwen3-8B is gated: accept its terms on huggingface.co, then set HF_TOKEN"),
        ("RepositoryNotFoundError", "no Hugging Face repository Qwen/Qwen3-8B (a private one needs HF_TOKEN)"),
        ("RevisionNotFoundError", "Qwen/Qwen3-8B has no revision 'v9'"),
        ("EntryNotFoundError", "Qwen/Qwen3-8B at revision v9 has no config.json"),
        (
            "LocalEntryNotFoundError",
            "the Hugging Face Hub cannot be reached (set HF_HUB_OFFLINE=1 to skip the network); get it with `hf download",
        ),
        (
            "network",
            "the Hugging Face Hub cannot be reached (set HF_HUB_OFFLINE=1 to skip the network): Max retries exceeded with url",
        ),
        (
            "HfHubHTTPError",
            "downloading it failed: from the fake; get it with `hf download Qwen/Qwen3-8B config.json --revision v9`",
        ),
    ],
)
def test_download_failures_are_one_line(cli, fake_hub, raises: str, message: str) -> None:
    fake = fake_hub(raises)
    result = cli("size", "--model", "Qwen/Qwen3-8B@v9", "--seq", "1")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert set(fake.timeouts) == {5}  # one HEAD without retries, then the download, each with a short timeout


def test_the_librarys_log_lines_are_quiet_when_it_succeeds(cli, fake_hub) -> None:
    fake_hub()
    result = cli("size", "--model", "Qwen/Qwen3-8B", "--seq", "1", "--json")
    assert result.exit_code == 0 and result.stderr == ""


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


# Exact weights from safetensors headers. Golden: meta-llama/Meta-Llama-3-8B's model.safetensors.index.json
# gives metadata.total_size 16,060,522,496 bytes (bf16), twice the 8,030,261,248 parameters its shapes hold.
LLAMA_BYTES, LLAMA_PARAMS = 16_060_522_496, 8_030_261_248


def cached_weights(cache: Path, repo: str, shards: dict[str, Tensors], commit: str = COMMIT) -> Path:
    """Header-only safetensors shards (and their index) in the repo's cached snapshot."""
    snapshot = cache / ("models--" + repo.replace("/", "--")) / "snapshots" / commit
    write_checkpoint(snapshot, shards)
    return snapshot


def test_safetensors_header_alone_gives_each_tensors_bytes(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(
        header_bytes({"a": ("BF16", [4, 3]), "b": ("F32", [5]), "scalar": ("I64", [])}) + b"\0" * 10
    )  # data cut short
    assert safetensors.read_tensors(path) == [("BF16", 12, 24, "a"), ("F32", 5, 20, "b"), ("I64", 1, 8, "scalar")]


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\x05\x00", "its first 8 bytes give no header length"),
        (struct.pack("<Q", 2**40), "its first 8 bytes give no header length"),
        (struct.pack("<Q", 100) + b"{}", "the safetensors header is cut short (2 of 100 bytes)"),
        (struct.pack("<Q", 4) + b"{x}]", "the safetensors header is not JSON"),
        (struct.pack("<Q", 2) + b"[]", "the safetensors header is not a JSON mapping"),
        (
            struct.pack("<Q", 54) + b'{"w":{"dtype":"BF16","shape":-2,"data_offsets":[0,4]}}',
            "tensor 'w' is not a safetensors entry",
        ),
        # Files that lie (issue 23 item 2): unparseable JSON, and offsets that disagree with shape x dtype.
        (struct.pack("<Q", 5000) + b"9" * 5000, "the safetensors header holds a number of more than 4,300 digits"),
        (struct.pack("<Q", 200_000) + b"[" * 100_000 + b"]" * 100_000, "the safetensors header nests too deeply"),
        (header_bytes({"w": ("BF16", [4, 3])}).replace(b"[0,24]", b"[0,12]"), "tensor 'w' (BF16, shape [4, 3]) needs 24 bytes but its data_offsets span 12"),
        (header_bytes({"w": ("BF16", [4, 3])}).replace(b'"BF16"', b'"F32" '), "tensor 'w' (F32, shape [4, 3]) needs 48 bytes but its data_offsets span 24"),
        (header_bytes({"w": ("BF16", [4, 3])}).replace(b'"BF16"', b'"BF17"'), "tensor 'w' has dtype 'BF17', which safetensors does not define"),
    ],
)  # fmt: skip
def test_bad_safetensors_headers_are_named(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(InvalidPreset, match=re.escape(f"{path}: ") + ".*" + re.escape(problem)):
        safetensors.read_tensors(path)


@pytest.mark.parametrize(
    "text, problem",
    [("9" * 5000, "holds a number of more than 4,300 digits"), ("[" * 100_000 + "]" * 100_000, "nests too deeply")],
)
def test_an_index_that_cannot_be_parsed(cli, cache: Path, text: str, problem: str) -> None:
    snapshot = cache_repo(cache, "org/lying").parent
    (snapshot / safetensors.INDEX_FILE).write_text(text)
    result = cli("size", "--model", "org/lying", "--seq", "8")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert f"model.safetensors.index.json: the safetensors index {problem}" in result.stderr


def test_cached_shards_give_the_exact_stored_bytes(cli, cache: Path) -> None:
    cache_repo(cache, "meta-llama/Meta-Llama-3-8B")
    cached_weights(cache, "meta-llama/Meta-Llama-3-8B", in_shards(llama_tensors(), 4))
    doc = cli.json("size", "--model", "meta-llama/Meta-Llama-3-8B", "--seq", "8192")
    assert doc["model"]["stored_weights"] == {"bytes": LLAMA_BYTES, "params": LLAMA_PARAMS, "types": {"BF16": LLAMA_PARAMS}}
    assert doc["weights"]["bytes"] == LLAMA_BYTES and doc["weights"]["params"]["total"] == LLAMA_PARAMS
    assert doc["model"]["source"].endswith(
        "; weights summed from the headers of its 4 safetensors shards (4 read from the cache): 291 tensors"
    )
    text = cli("size", "--model", "meta-llama/Meta-Llama-3-8B", "--seq", "8192", "--explain").stdout
    assert "weights summed from the headers of its 4 safetensors shards" in text
    assert "8,030,261,248 params (summed from the checkpoint's tensors) in BF16 (as stored)" in text


def test_stored_bytes_differ_from_the_configs_dtype(cli, cache: Path) -> None:
    """A checkpoint stored in fp32 although config.json says bfloat16: the headers' bytes win."""
    cache_repo(cache, "org/fp32")
    cached_weights(cache, "org/fp32", in_shards(llama_tensors(dtype="F32"), 2))
    doc = cli.json("fit", "--model", "org/fp32", "--memory", "80GiB")
    assert doc["budget"]["weights_bytes"] == 2 * LLAMA_BYTES


def test_packed_integer_tensors_take_the_params_from_the_config(cli, cache: Path) -> None:
    """GPTQ-style int32 tensors pack 8 values each: bytes as stored, parameters counted from config.json."""
    parts = llama_tensors(dtype="F16")
    for layer in parts[1:-1]:
        for name in [n for n in layer if n.endswith("proj.weight")]:
            rows, cols = layer.pop(name)[1]
            stem = name.removesuffix(".weight")
            layer[stem + ".qweight"] = ("I32", [cols // 8, rows])
            layer[stem + ".scales"] = ("F16", [cols // 128, rows])
    cache_repo(cache, "org/gptq")
    cached_weights(cache, "org/gptq", in_shards(parts, 1))
    stored = cli.json("presets", "show", "org/gptq")["spec"]
    expected = sum(math.prod(shape) * ELEMENT_BYTES[dtype] for part in parts for dtype, shape in part.values())
    assert stored["stored_weights"]["bytes"] == expected and stored["params"] == LLAMA_PARAMS
    assert list(stored["stored_weights"]["types"]) == ["F16", "I32"]
    assert "weights summed from the headers of model.safetensors (1 read from the cache)" in stored["source"]
    assert "params counted from config.json (its I32 tensors pack values or hold scales)" in stored["source"]


def test_snapshot_path_reads_the_headers_beside_it(cli, cache: Path, fake_hub) -> None:
    fake = fake_hub()
    config = cache_repo(cache, "meta-llama/Meta-Llama-3-8B")
    shards = in_shards(llama_tensors(), 2)
    cached_weights(cache, "meta-llama/Meta-Llama-3-8B", shards)
    (config.parent / next(iter(shards))).unlink()
    doc = cli.json("size", "--model", config, "--seq", "1")
    assert doc["model"]["stored_weights"] is None and fake.calls == fake.headers == []  # a path is never fetched
    assert doc["model"]["source"].endswith(
        "weights counted from config.json: 1 of its 2 shards are not cached and a config.json path is read locally"
    )


def test_fetches_the_headers_not_cached(cli, cache: Path, fake_hub) -> None:
    shards = in_shards(llama_tensors(), 4)
    fake = fake_hub(shards=shards)
    doc = cli.json("size", "--model", "meta-llama/Meta-Llama-3-8B", "--seq", "1")
    assert [call[1] for call in fake.calls] == ["config.json", "model.safetensors.index.json"]
    assert fake.calls[1][2] == COMMIT and sorted(fake.headers) == [(shard, COMMIT) for shard in shards]
    assert doc["model"]["stored_weights"]["bytes"] == LLAMA_BYTES
    assert doc["model"]["source"].endswith("(4 fetched by HTTP range requests): 291 tensors")
    snapshot = cache / "models--meta-llama--Meta-Llama-3-8B" / "snapshots" / COMMIT
    first = next(iter(shards))
    (snapshot / first).write_bytes(header_bytes(shards[first]))  # one shard's header now in the cache
    fake.headers.clear()
    doc = cli.json("size", "--model", "meta-llama/Meta-Llama-3-8B", "--seq", "1")
    assert sorted(fake.headers) == [(shard, COMMIT) for shard in list(shards)[1:]]
    assert doc["model"]["stored_weights"]["bytes"] == LLAMA_BYTES
    assert "(1 read from the cache, 3 fetched by HTTP range requests)" in doc["model"]["source"]


def test_a_single_file_checkpoint_is_fetched_without_an_index(cli, cache: Path, fake_hub) -> None:
    fake = fake_hub(shards={"model.safetensors": {"w": ("BF16", [1000, 1000])}})
    cache_repo(cache, "org/small")
    doc = cli.json("presets", "show", "org/small")["spec"]
    assert fake.headers == [("model.safetensors", COMMIT)]
    assert doc["stored_weights"] == {"bytes": 2_000_000, "params": 1_000_000, "types": {"BF16": 1_000_000}}


@pytest.mark.parametrize(
    "shards, header_raises, reason",
    [
        ({}, None, "org/model has no model.safetensors or model.safetensors.index.json"),
        (
            {"model.safetensors": {}},
            "network",
            "no safetensors header is cached and fetching the headers failed (Max retries exceeded with url",
        ),
        (
            {"model.safetensors": {}},
            "GatedRepoError",
            "no safetensors header is cached and fetching the headers failed (from the fake)",
        ),
    ],
)
def test_when_the_headers_cannot_be_fetched_the_config_counts(cli, cache: Path, fake_hub, shards, header_raises, reason) -> None:
    fake_hub(shards=shards, header_raises=header_raises)
    cache_repo(cache, "org/model")
    result = cli("size", "--model", "org/model", "--seq", "1", "--explain")
    assert result.exit_code == 0 and result.stderr == ""
    assert f"weights counted from config.json: {reason}" in " ".join(result.stdout.split())
    assert "(counted from the shapes)" in result.stdout


def test_without_huggingface_hub_the_config_counts(cli, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    cache_repo(cache, "org/model")
    source = cli.json("presets", "show", "org/model")["spec"]["source"]
    assert source.endswith(
        'no safetensors header is cached and huggingface_hub is not installed (pip install "kvcalc[hub]" to fetch them)'
    )
    assert "kvcalc[hub]" in cli("presets", "show", "org/model").stdout  # shown as written, not read as Rich markup


@pytest.mark.parametrize(
    "index, problem",
    [
        ({"weight_map": {"w": "../../elsewhere.safetensors"}}, "weight_map names '../../elsewhere.safetensors'"),
        ({"weight_map": {}}, "no weight_map mapping tensors to shard files"),
    ],
)
def test_a_bad_cached_index_is_an_error(cli, cache: Path, index: dict, problem: str) -> None:
    cache_repo(cache, "org/model")
    (cache / "models--org--model" / "snapshots" / COMMIT / "model.safetensors.index.json").write_text(json.dumps(index))
    result = cli("size", "--model", "org/model", "--seq", "1")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and problem in result.stderr


def test_a_corrupt_cached_shard_is_an_error(cli, cache: Path) -> None:
    cache_repo(cache, "org/model")
    snapshot = cached_weights(cache, "org/model", {"model.safetensors": {"w": ("BF16", [4])}})
    (snapshot / "model.safetensors").write_bytes(b"\xff" * 8)
    result = cli("size", "--model", "org/model", "--seq", "1")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "not a safetensors file" in result.stderr


def test_the_readme_fixture_cache_is_what_the_script_writes(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    from scripts.make_hf_cache_fixture import SNAPSHOT, fixture_files

    assert {name: (SNAPSHOT / name).read_bytes() for name in fixture_files()} == fixture_files(), (
        "run python scripts/make_hf_cache_fixture.py"
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(SNAPSHOT.parents[2]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    stored = cli.json("presets", "show", "meta-llama/Meta-Llama-3-8B")["spec"]["stored_weights"]
    assert stored == {"bytes": LLAMA_BYTES, "params": LLAMA_PARAMS, "types": {"BF16": LLAMA_PARAMS}}
