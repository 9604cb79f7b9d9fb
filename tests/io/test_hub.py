"""Hub ids through huggingface_hub, against an HF cache directory the test builds (no network).

The cache is laid out as huggingface_hub writes it: models--org--name/{blobs,snapshots/<sha>,refs/main},
each snapshot file a relative symlink to its blob. huggingface_hub reads HF_HUB_OFFLINE and HF_HUB_CACHE
when it is imported, so the end-to-end runs are subprocesses with those variables set; the unit tests
patch huggingface_hub's functions and constants instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub as hf
import huggingface_hub.constants as hf_constants
import numpy as np
import pytest
from huggingface_hub import errors as hf_errors

from helpers import GEMMA_CONFIG, gemma_tensors, write_model
from normscope.errors import SourceNotFoundError
from normscope.io import hub as hub_mod
from normscope.io.hub import BIN_PATTERNS, CONFIG_PATTERNS, SAFETENSORS_PATTERNS, HubId, _choose_patterns, \
    parse_hub_id, resolve_hub

REPO = "google/gemma-3-270m-it"
SHA_MAIN = "a" * 40
SHA_OLD = "b" * 40


def add_snapshot(cache: Path, repo: str, sha: str, files: dict[str, Path], refs: tuple[str, ...] = ()) -> Path:
    """One snapshot of `repo` in an HF cache, blobs symlinked like huggingface_hub does; returns its folder."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snap = root / "snapshots" / sha
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for name, source in files.items():
        blob = root / "blobs" / hashlib.sha256(f"{sha}/{name}".encode()).hexdigest()
        if not blob.exists():
            blob.symlink_to(source.resolve())  # the test's stand-in for the downloaded bytes
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    for ref in refs:
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / ref).write_text(sha)
    return snap


def _files_of(directory: Path) -> dict[str, Path]:
    return {p.name: p for p in directory.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory, gemma_hf) -> Path:
    cache = tmp_path_factory.mktemp("hf") / "hub"
    add_snapshot(cache, REPO, SHA_MAIN, _files_of(gemma_hf), refs=("main",))
    tiny = write_model(tmp_path_factory.mktemp("tiny") / "m", gemma_tensors(), GEMMA_CONFIG, "BF16")
    add_snapshot(cache, REPO, SHA_OLD, _files_of(tiny), refs=("old",))
    return cache


def run_cli(args: list[str], cache: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "hf-home"))
    return subprocess.run([sys.executable, "-m", "normscope", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def _doc(path: Path) -> str:
    doc = json.loads(path.read_text())
    doc.pop("source")
    return json.dumps(doc, sort_keys=True)


def test_hub_id_offline_equals_the_local_path(hf_cache, gemma_hf, tmp_path):
    hub = run_cli(["analyze", REPO, "--json", str(tmp_path / "hub.json"), "-q", "--jobs", "1"], hf_cache, tmp_path)
    assert hub.returncode == 0, hub.stderr
    local = run_cli(["analyze", str(gemma_hf), "--json", str(tmp_path / "local.json"), "-q", "--jobs", "1"],
                    hf_cache, tmp_path)
    assert local.returncode == 0, local.stderr
    assert _doc(tmp_path / "hub.json") == _doc(tmp_path / "local.json")
    source = json.loads((tmp_path / "hub.json").read_text())["source"]
    assert source["kind"] == "hub" and source["spec"] == REPO
    assert source["path"].endswith(f"snapshots/{SHA_MAIN}")


@pytest.mark.parametrize("revision", ["old", SHA_OLD], ids=["branch", "commit"])
def test_revision_picks_that_snapshot(hf_cache, tmp_path, revision):
    r = run_cli(["analyze", f"{REPO}@{revision}", "--json", "-", "-q"], hf_cache, tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["source"]["revision"] == revision and doc["source"]["path"].endswith(SHA_OLD)
    assert doc["summary"]["n_tensors"] == len(gemma_tensors())  # the tiny model, not Gemma


def test_not_in_cache_while_offline_is_one_line_and_exit_2(hf_cache, tmp_path):
    r = run_cli(["analyze", "google/not-downloaded"], hf_cache, tmp_path)
    assert r.returncode == 2
    assert r.stderr == ("normscope: error: google/not-downloaded is not in the Hugging Face cache and "
                        "HF_HUB_OFFLINE is set; download it once online\n")


def test_resolve_from_a_cache_in_process(hf_cache, monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    folder = resolve_hub(HubId(REPO, "old", None), cache_dir=hf_cache)
    assert folder.name == SHA_OLD and (folder / "model.safetensors").is_file()


# -- what is asked of the hub ------------------------------------------------------------------------
def test_parse_hub_ids():
    assert parse_hub_id("org/name@v1.0:model-Q4_K_M.gguf") == HubId("org/name", "v1.0", "model-Q4_K_M.gguf")
    assert parse_hub_id("./org/name") is None and parse_hub_id("just-a-name") is None


def test_safetensors_win_over_bin():
    files = ["config.json", "model.safetensors", "pytorch_model.bin", "training_args.bin", "README.md"]
    patterns = _choose_patterns(files, HubId("o/n", None, None))
    assert patterns == SAFETENSORS_PATTERNS + CONFIG_PATTERNS
    assert not any(p.endswith(".bin") for p in patterns)


def test_one_gguf_then_bin_then_nothing():
    assert _choose_patterns(["m.Q4_K_M.gguf", "config.json"], HubId("o/n", None, None))[0] == "m.Q4_K_M.gguf"
    assert _choose_patterns(["pytorch_model.bin", "config.json"], HubId("o/n", None, None)) == \
        BIN_PATTERNS + CONFIG_PATTERNS
    with pytest.raises(SourceNotFoundError, match="holds 2 GGUF files.*o/n:a.gguf"):
        _choose_patterns(["a.gguf", "b.gguf"], HubId("o/n", None, None))
    with pytest.raises(SourceNotFoundError, match="no weights found"):
        _choose_patterns(["README.md"], HubId("o/n", None, None))
    assert _choose_patterns(["a.gguf", "b.gguf"], HubId("o/n", None, "b.gguf")) == ["b.gguf", *CONFIG_PATTERNS]


def _http_error(cls: type, status: int) -> Exception:
    import httpx2

    response = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/o/n"))
    return cls(f"{status} error", response=response)


@pytest.fixture
def online(monkeypatch):
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_mod, "_unreachable", lambda endpoint, timeout=3.0: None)  # the hub answers (patched)


@pytest.mark.parametrize("error, message", [
    (lambda: _http_error(hf_errors.GatedRepoError, 403),
     "o/n is gated: accept its license on huggingface.co, then log in with `hf auth login` or set HF_TOKEN"),
    (lambda: _http_error(hf_errors.RepositoryNotFoundError, 404),
     "o/n: no such repository on the hub (or it is private: log in with `hf auth login` or set HF_TOKEN)"),
    (lambda: _http_error(hf_errors.RevisionNotFoundError, 404), "o/n: revision 'v9' does not exist"),
    (lambda: hf_errors.LocalEntryNotFoundError("no connection"),
     "o/n@v9 is not in the Hugging Face cache and the hub cannot be reached; download it once online"),
], ids=["gated", "not-found", "revision", "unreachable"])
def test_hub_errors_become_one_clear_line(online, monkeypatch, error, message):
    def listing(self, repo_id, revision=None, token=None):
        raise error()

    monkeypatch.setattr(hf.HfApi, "list_repo_files", listing)
    with pytest.raises(SourceNotFoundError) as exc:
        resolve_hub(HubId("o/n", "v9", None))
    assert str(exc.value) == message


def test_only_weights_and_config_are_downloaded_with_progress(online, monkeypatch, tmp_path):
    asked = {}

    def listing(self, repo_id, revision=None, token=None):
        return ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
                "model.safetensors.index.json", "pytorch_model.bin", "tokenizer.json", "README.md"]

    def download(repo_id, revision=None, cache_dir=None, token=None, allow_patterns=None, tqdm_class=None):
        asked.update(allow_patterns=allow_patterns)
        bar = tqdm_class(total=300, unit="B", desc="Downloading bytes")  # as huggingface_hub makes it
        for _ in range(3):
            bar.update(100)
        bar.close()
        files = tqdm_class(total=4, desc="Fetching 4 files")  # no unit: not forwarded
        files.update(4)
        return str(tmp_path)

    monkeypatch.setattr(hf.HfApi, "list_repo_files", listing)
    monkeypatch.setattr(hf, "snapshot_download", download)
    seen = []
    assert resolve_hub(HubId("o/n", None, None), progress=lambda *a: seen.append(a)) == tmp_path
    assert asked["allow_patterns"] == SAFETENSORS_PATTERNS + CONFIG_PATTERNS
    assert seen == [("downloading o/n", 100, 300), ("downloading o/n", 200, 300), ("downloading o/n", 300, 300)]


def test_the_download_bar_prints_nothing(capsys):
    bar = hub_mod._progress_tqdm(None, "x")(total=10, unit="B")
    bar.update(10)
    bar.close()
    assert capsys.readouterr() == ("", "")


def test_hub_bin_only_repo_is_read_with_torch(online, monkeypatch, tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"model.layers.0.mlp.down_proj.weight": torch.ones(4, 8)}, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text(json.dumps(GEMMA_CONFIG))
    monkeypatch.setattr(hf.HfApi, "list_repo_files", lambda self, *a, **k: ["pytorch_model.bin", "config.json"])
    monkeypatch.setattr(hf, "snapshot_download", lambda *a, **k: str(tmp_path))
    from normscope import analyze

    r = analyze("o/bin-only", jobs=1)
    assert r.source.kind == "hub" and r.source.format == "torch"
    assert r.tensor("model.layers.0.mlp.down_proj.weight").weight.max == 1.0
    assert np.isclose(r.tensor("model.layers.0.mlp.down_proj.weight").weight.std, 0.0)


def test_an_unreachable_hub_is_one_line_and_fast_and_the_cache_still_serves(hf_cache, tmp_path):
    """No network and no HF_HUB_OFFLINE: huggingface_hub retried for ~25 s and normscope printed "internal error:
    ConnectError"; now the cache serves what it holds and the rest is one line, at once."""
    env = {**os.environ, "HF_HUB_CACHE": str(hf_cache), "HF_HOME": str(tmp_path / "hf-home"),
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # the discard port: connection refused at once
    env.pop("HF_HUB_OFFLINE", None)
    run = subprocess.run([sys.executable, "-m", "normscope", "analyze", "other/model", "-q"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and len(run.stderr.splitlines()) == 1
    assert run.stderr.startswith("normscope: error: cannot reach the hub for other/model (127.0.0.1:9: Connection "
                                 "refused) and it is not in the Hugging Face cache (")
    assert run.stderr.endswith("); set HF_HUB_OFFLINE=1 to read the cache alone, or pass a local path\n")
    served = subprocess.run([sys.executable, "-m", "normscope", "analyze", REPO, "-q", "--json", "-"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert served.returncode == 0, served.stderr
    assert json.loads(served.stdout)["summary"]["n_tensors"] == 236

