"""clip against its references: numpy's percentiles, transformers loading the output, the input's own bytes;
refusals; fault injection; invariants (hypothesis)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from helpers import GEMMA_CONFIG, LLAMA_CONFIG, gemma_tensors, llama_tensors, write_gguf, write_model
from normscope import clip
from normscope.analysis import open_model
from normscope.analysis.engine.clipping import clip_rows
from normscope.analysis.engine.superweight import super_weight_candidates
from normscope.errors import ConfigError, OutputError
from normscope.io import SafetensorsCheckpoint, read_header
from normscope.io.writer import encode, hash_file
from normscope.results import NormConvention

L16 = "model.layers.16.post_feedforward_layernorm.weight"
MANIFEST = "normscope-clip.json"


def _hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file under a directory (following symlinks), by relative path."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _read(directory: Path, name: str) -> np.ndarray:
    """A tensor as stored (float64), read through the safetensors library: an independent reader."""
    from safetensors import safe_open  # framework "pt": numpy has no bf16

    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            if name in f.keys():
                return f.get_tensor(name).double().numpy()
    raise KeyError(name)


# -- the real Gemma 3 270M ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gemma_clipped(gemma_hf, tmp_path_factory):
    before = _hashes(gemma_hf)
    out = tmp_path_factory.mktemp("clip") / "gemma-p99"
    return clip(gemma_hf, 99, out=out), out, before


def test_layer16_post_ffn_gain_is_brought_to_its_own_p99(gemma_clipped, gemma_hf):
    result, out, _ = gemma_clipped
    gain_before = _read(gemma_hf, L16) + 1.0  # Gemma's RMSNorm: x̂ · (1 + w)
    gain_after = _read(out, L16) + 1.0
    p99 = np.percentile(np.abs(gain_before), 99, method="lower")  # a gain the tensor holds
    assert p99 <= np.percentile(np.abs(gain_before), 99)  # at most the interpolated p99 too
    assert np.abs(gain_before).max() == 1657.0
    assert np.abs(gain_after).max() == p99  # stored exactly: it is a bf16 value of the tensor
    t = result.tensor(L16)
    assert (t.threshold, t.max_before, t.max_after, t.domain, t.convention) == \
        (p99, 1657.0, p99, "gain", NormConvention.ONE_PLUS_W)
    changed = gain_before != gain_after
    np.testing.assert_array_equal(changed, np.abs(gain_before) > p99)  # exactly the cells above p99
    assert t.clipped == changed.sum() == 7
    assert result.changed == result.considered == 109 and result.verified


def test_output_loads_in_transformers_and_gives_finite_logits(gemma_clipped):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    _, out, _ = gemma_clipped
    model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape[-1] == 262144 and torch.isfinite(logits).all()
    gain = model.state_dict()[L16].double() + 1.0
    assert gain.abs().max().item() == np.abs(_read(out, L16) + 1.0).max()  # transformers holds the clipped gains


def test_input_bytes_are_unchanged(gemma_clipped, gemma_hf):
    _, _, before = gemma_clipped
    assert _hashes(gemma_hf) == before


def test_output_keeps_the_source_layout(gemma_clipped, gemma_hf):
    result, out, _ = gemma_clipped
    src, dst = _hashes(gemma_hf), _hashes(out)
    assert set(dst) == set(src) | {MANIFEST}
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "model.safetensors.index.json"):
        assert dst[name] == src[name], name
    changed = {t.name for t in result.tensors}
    for shard in sorted(gemma_hf.glob("*.safetensors")):
        before, meta_before = read_header(shard)
        after, meta_after = read_header(out / shard.name)
        assert meta_after == meta_before == {"format": "pt"}
        assert [(e.name, e.dtype, e.shape, e.offset, e.nbytes) for e in after] == \
            [(e.name, e.dtype, e.shape, e.offset, e.nbytes) for e in before]
        h_before, h_after = hash_file(shard, before).tensors, hash_file(out / shard.name, after).tensors
        for name in h_before:
            assert (h_before[name] == h_after[name]) == (name not in changed), name
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest == json.loads(json.dumps(result.to_dict()))
    assert {f["name"]: f["sha256"] for f in manifest["files"]} == {k: v for k, v in dst.items() if k != MANIFEST}


# -- tiny checkpoints ----------------------------------------------------------------------------------

def _gemma(tmp_path: Path, seed: int = 0, shards: int = 2) -> Path:
    return write_model(tmp_path / f"gemma{seed}", gemma_tensors(seed=seed), GEMMA_CONFIG, "BF16", shards=shards)


@pytest.mark.parametrize("per", ["tensor", "channel"])
def test_dry_run_reports_exactly_what_a_write_does(tmp_path, per):
    src = _gemma(tmp_path)
    dry = clip(src, 97.5, scope="all", per=per, dry_run=True)
    real = clip(src, 97.5, scope="all", per=per, out=tmp_path / "out")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    strip = [{k: v for k, v in t.to_dict().items() if k != "sha256"} for t in dry.tensors]
    assert strip == [{k: v for k, v in t.to_dict().items() if k != "sha256"} for t in real.tensors]
    assert dry.dry_run and dry.files == () and not dry.verified and real.verified
    assert (dry.changed, dry.values_clipped) == (real.changed, real.values_clipped) and real.changed > 0


@pytest.mark.parametrize("p", [0.0, 37.5, 99.0, 99.9, 100.0])
def test_streamed_weight_threshold_is_numpys_percentile_to_the_bit(tmp_path, p):
    src = write_model(tmp_path / "m", llama_tensors(hidden=128, ffn=256), LLAMA_CONFIG, "BF16")
    name = "model.layers.1.mlp.up_proj.weight"  # 256 × 128: streamed in 16 chunks of 2048 values
    result = clip(src, p, scope="linear", include=[name], dry_run=True, chunk_elements=2048)
    w = _read(src, name)
    want = np.percentile(np.abs(w), p, method="lower")  # a value of the tensor: clipping is idempotent
    assert want <= np.percentile(np.abs(w), p)  # and never above the interpolated percentile
    if p == 100.0:
        assert result.changed == 0
    else:
        assert result.tensor(name).threshold == want
        assert result.tensor(name).clipped == int((np.abs(w) > want).sum())


def test_per_channel_clips_each_row_at_its_own_percentile(tmp_path):
    src = write_model(tmp_path / "m", llama_tensors(), LLAMA_CONFIG, "F16")
    name = "model.layers.0.self_attn.o_proj.weight"
    result = clip(src, 90, scope="linear", per="channel", include=[name], out=tmp_path / "out")
    before, after = _read(src, name), _read(tmp_path / "out", name)
    limits = np.percentile(np.abs(before), 90, axis=1, method="lower")
    assert (np.abs(after) <= limits[:, None]).all()
    np.testing.assert_array_equal(before != after, np.abs(before) > limits[:, None])
    t = result.tensor(name)
    assert (t.threshold_min, t.threshold) == (limits.min(), limits.max())
    # the note says per channel, as it clipped (it said "their tensor's p90", issue 21 item 11)
    for r in (result, clip(src, 90, scope="linear", per="channel", include=[name], dry_run=True)):
        (note,) = [n for n in r.notes if "Linear weight tensors" in n]
        assert "their output channel's (row's) p90 of |w|" in note and "tensor's" not in note
    (note,) = [n for n in clip(src, 90, scope="linear", include=[name], dry_run=True).notes if "Linear weight" in n]
    assert "their tensor's p90 of |w|" in note


def test_each_norm_is_clipped_in_its_own_convention(tmp_path):
    """The same stored numbers: Gemma clips 1 + w and stores w; Llama clips w itself."""
    stored = np.concatenate([[-3.0], np.linspace(-1.0, 10.0, 62), [100.0]])  # 64 channels
    g = gemma_tensors(layers=1)
    g["model.norm.weight"] = stored
    ll = llama_tensors(layers=1)
    ll["model.norm.weight"] = stored
    cfg_g, cfg_l = dict(GEMMA_CONFIG, num_hidden_layers=1), dict(LLAMA_CONFIG, num_hidden_layers=1)
    rg = clip(write_model(tmp_path / "g", g, cfg_g, "F32"), 90, include=["model.norm.weight"], out=tmp_path / "go")
    rl = clip(write_model(tmp_path / "l", ll, cfg_l, "F32"), 90, include=["model.norm.weight"], out=tmp_path / "lo")
    tg, tl = rg.tensor("model.norm.weight"), rl.tensor("model.norm.weight")
    stored = stored.astype(np.float32).astype(np.float64)  # as the F32 file holds it
    assert tg.threshold == np.percentile(np.abs(stored + 1.0), 90, method="lower") and tg.max_before == 101.0
    assert tl.threshold == np.percentile(np.abs(stored), 90, method="lower") and tl.max_before == 100.0
    gain_after = _read(tmp_path / "go", "model.norm.weight") + 1.0
    w_after = _read(tmp_path / "lo", "model.norm.weight")
    assert np.abs(gain_after).max() == pytest.approx(tg.threshold, rel=1e-6) and gain_after.max() <= tg.threshold
    assert np.abs(w_after).max() <= tl.threshold
    # -3 is a gain of -2 in Gemma (kept: |−2| is below the threshold), a weight of −3 in Llama
    assert gain_after[0] == -2.0 and w_after[0] == -3.0


def _with_super_weight(tmp_path: Path) -> tuple[Path, str]:
    t = llama_tensors()
    name = "model.layers.0.mlp.down_proj.weight"  # (64, 128), σ = 0.02
    t[name][7, 33] = -0.9  # ~45σ: extreme in its row and its column
    return write_model(tmp_path / "sw", t, LLAMA_CONFIG, "BF16"), name


def test_super_weight_candidates_are_found_and_never_clipped(tmp_path):
    src, name = _with_super_weight(tmp_path)
    with open_model(src) as m:
        found = super_weight_candidates(m)
    assert [(c.tensor, c.row, c.col) for c in found] == [(name, 7, 33)]
    assert found[0].value == pytest.approx(-0.9, abs=4e-3) and found[0].z > 25
    kept = clip(src, 99, scope="linear", out=tmp_path / "kept")
    assert _read(tmp_path / "kept", name)[7, 33] == _read(src, name)[7, 33]
    assert kept.tensor(name).protected == 1 and kept.super_weights == found
    gone = clip(src, 99, scope="linear", protect=False, out=tmp_path / "gone")
    assert abs(_read(tmp_path / "gone", name)[7, 33]) <= gone.tensor(name).threshold
    assert gone.tensor(name).clipped == kept.tensor(name).clipped + 1


@pytest.mark.parametrize("per", ["tensor", "channel"])
def test_memory_is_bounded_by_a_chunk_not_by_a_tensor(tmp_path, per):
    import tracemalloc

    t = llama_tensors(layers=1, hidden=2048, ffn=4096, vocab=64)  # mlp tensors of 8 Mi values: 32 MiB as float32
    src = write_model(tmp_path / "big", t, dict(LLAMA_CONFIG, num_hidden_layers=1), "BF16")
    tracemalloc.start()
    try:
        result = clip(src, 99, scope="all", per=per, out=tmp_path / "out", chunk_elements=1 << 18)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.verified and result.values_clipped > 300_000
    assert peak < 24 << 20, f"peak {peak / 2 ** 20:.1f} MiB: more than a chunk's worth"


# -- refusals ---------------------------------------------------------------------------------------------

def test_refusals(tmp_path):
    src = _gemma(tmp_path)
    (src / "sub").mkdir()
    cases = [
        (dict(out=src), OutputError, "is the input itself"),
        (dict(out=src / "sub" / "out"), OutputError, "is inside the input"),
        (dict(out=tmp_path, force=True), OutputError, "contains the input"),
        (dict(out=src / "sub"), OutputError, "is inside the input"),
        (dict(), ConfigError, "no output directory"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            clip(src, 99, **kwargs)
    with pytest.raises(ConfigError, match="outside \\[0, 100\\]"):
        clip(src, 100.5, dry_run=True)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="already exists; pass --force"):
        clip(src, 99, out=tmp_path / "taken")
    with pytest.raises(OutputError, match="not an earlier normscope output"):
        clip(src, 99, out=tmp_path / "taken", force=True)
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_gguf_input_is_refused_with_one_clear_line(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", {"blk.0.attn_norm.weight": ("F32", np.ones(32))})
    with pytest.raises(ConfigError, match="a GGUF file; clip writes HF safetensors checkpoints only") as e:
        clip(path, 99, out=tmp_path / "out")
    assert "\n" not in str(e.value) and not (tmp_path / "out").exists()


def test_force_replaces_an_earlier_output_only_when_the_new_one_is_complete(tmp_path):
    src = _gemma(tmp_path)
    out = tmp_path / "out"
    first = clip(src, 90, out=out)
    second = clip(src, 99, out=out, force=True)
    assert json.loads((out / MANIFEST).read_text())["percentile"] == 99.0
    assert second.values_clipped < first.values_clipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma0", "out"]


# -- fault injection ----------------------------------------------------------------------------------------

def test_a_writer_failure_mid_way_leaves_no_output(tmp_path, monkeypatch):
    import normscope.io.writer as writer

    src = _gemma(tmp_path)
    before = _hashes(src)
    real = writer._write_rows
    calls = []

    def failing(out, entry, chunks, h):
        calls.append(entry.name)
        if len(calls) == 5:  # some tensors and files are already written
            out.write(b"\0" * 7)
            raise OSError(28, "No space left on device")
        return real(out, entry, chunks, h)

    monkeypatch.setattr(writer, "_write_rows", failing)
    with pytest.raises(OSError, match="No space left"):
        clip(src, 99, scope="all", out=tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma0"]  # no output, no staging directory
    assert _hashes(src) == before
    # with --force over an earlier output, the earlier output survives the failure intact
    monkeypatch.setattr(writer, "_write_rows", real)
    clip(src, 90, out=tmp_path / "out")
    earlier = _hashes(tmp_path / "out")
    calls.clear()
    monkeypatch.setattr(writer, "_write_rows", failing)
    with pytest.raises(OSError):
        clip(src, 99, scope="all", out=tmp_path / "out", force=True)
    assert _hashes(tmp_path / "out") == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma0", "out"]


def test_a_corrupted_write_is_caught_before_anything_is_published(tmp_path, monkeypatch):
    from normscope.analysis.clip import write as clip_module

    src = _gemma(tmp_path)
    real = clip_module.rewrite_safetensors

    def corrupting(source, target, entries, replace, *args):
        written = real(source, target, entries, replace, *args)
        data = bytearray(target.read_bytes())
        data[-2] ^= 0x40  # the disk returns one wrong bit in the last tensor
        target.write_bytes(bytes(data))
        return written

    monkeypatch.setattr(clip_module, "rewrite_safetensors", corrupting)
    with pytest.raises(OutputError, match="nothing was published"):
        clip(src, 99, out=tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gemma0"]


# -- invariants ------------------------------------------------------------------------------------------

settings_files = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@settings_files
@given(seed=st.integers(0, 1000), scope=st.sampled_from(["norms", "linear", "all"]),
       per=st.sampled_from(["tensor", "channel"]), dtype=st.sampled_from(["BF16", "F16", "F32"]))
def test_percentile_100_changes_nothing(seed, scope, per, dtype):
    with tempfile.TemporaryDirectory() as d:
        src = write_model(Path(d) / "m", gemma_tensors(seed=seed), GEMMA_CONFIG, dtype, shards=2)
        result = clip(src, 100, scope=scope, per=per, out=Path(d) / "out")
        assert result.changed == 0 and result.values_clipped == 0
        out = _hashes(Path(d) / "out")
        assert out.pop(MANIFEST) and out == _hashes(src)  # every file byte-identical


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2 ** 31), dtype=st.sampled_from(["BF16", "F16", "F32", "F64"]),
       conv=st.sampled_from([None, NormConvention.ONE_PLUS_W, NormConvention.W]),
       scale=st.sampled_from([0.01, 1.0, 300.0, 1000.0]), t=st.floats(0.0, 2.0), per_row=st.booleans())
def test_clip_rows_is_idempotent_and_honours_its_threshold(seed, dtype, conv, scale, t, per_row):
    rng = np.random.default_rng(seed)
    raw = encode(np.clip(rng.standard_t(3, size=(4, 16)), -30, 30) * scale, dtype)  # heavy tails, finite in F16
    limit = (np.abs(raw.astype(np.float64)).max(axis=1) * t) if per_row else float(scale * t)
    once, mask, after = clip_rows(raw, dtype, limit, conv)
    twice, mask2, _ = clip_rows(once, dtype, limit, conv)
    assert twice.tobytes() == once.tobytes() and not mask2.any()  # the same thresholds change nothing more
    lim = np.broadcast_to(np.reshape(limit, (-1, 1)) if per_row else limit, raw.shape)
    gain = once.astype(np.float64) + (1.0 if conv is NormConvention.ONE_PLUS_W else 0.0)
    assert (np.abs(gain) <= lim).all() and (after == np.abs(gain)).all()
    kept = ~mask
    assert once[kept].tobytes() == raw[kept].tobytes()  # unclipped cells keep their bits


@settings_files
@example(seed=966, p=50.0, scope="norms", per="tensor")  # a -t gain bf16 cannot hold: the fixed-point threshold
@given(seed=st.integers(0, 1000), p=st.sampled_from([50.0, 90.0, 97.5, 99.0]),
       scope=st.sampled_from(["norms", "linear", "all"]), per=st.sampled_from(["tensor", "channel"]))
def test_manifest_matches_the_files_and_clipping_is_idempotent(seed, p, scope, per):
    with tempfile.TemporaryDirectory() as d:
        src = write_model(Path(d) / "m", gemma_tensors(seed=seed), GEMMA_CONFIG, "BF16", shards=2)
        out = Path(d) / "out"
        clip(src, p, scope=scope, per=per, out=out)
        manifest = json.loads((out / MANIFEST).read_text())
        files = _hashes(out)
        assert {f["name"]: (f["sha256"], f["size"]) for f in manifest["files"]} == \
            {k: (v, (out / k).stat().st_size) for k, v in files.items() if k != MANIFEST}
        listed = {t["name"]: t for t in manifest["tensors"]}
        with SafetensorsCheckpoint.open_dir(src) as a, SafetensorsCheckpoint.open_dir(out) as b:
            for name, entry in a.entries.items():
                x, y = _read(src, name), _read(out, name)
                if name not in listed:
                    assert x.tobytes() == y.tobytes(), name
                    continue
                t = listed[name]
                one = 1.0 if t["convention"] == "1+w" else 0.0
                gx, gy = np.abs(x + one), np.abs(y + one)
                limits = np.percentile(gx.reshape(-1, gx.shape[-1]) if per == "channel" and x.ndim > 1
                                       else gx.reshape(1, -1), p, axis=1, method="lower")
                if one:  # a (1 + w) norm: at or below the percentile, and the percentile of its own output
                    own = np.percentile(gy.reshape(-1), p, method="lower")
                    assert t["threshold_min"] == t["threshold"] == own <= limits.max()
                else:
                    assert (t["threshold_min"], t["threshold"]) == (limits.min(), limits.max())
                assert t["clipped"] == int((x != y).sum()) > 0
                assert (t["max_before"], t["max_after"]) == (gx.max(), gy.max())
                assert t["sha256"] == hash_file(b.entries[name].file, [b.entries[name]]).tensors[name]
        # clipping the output again at the same percentile finds the same thresholds and changes nothing
        out2 = Path(d) / "out2"
        again = clip(out, p, scope=scope, per=per, out=out2)
        assert again.changed == 0 and again.values_clipped == 0
        assert {k: v for k, v in _hashes(out2).items() if k != MANIFEST} == \
            {k: v for k, v in files.items() if k != MANIFEST}


# -- docs/clip.md runs as written ----------------------------------------------------------------------------

DOCS = (Path(__file__).resolve().parents[2] / "docs" / "clip.md").read_text(encoding="utf-8")


def _doc_commands() -> list[str]:
    return [line[2:] for line in re.findall(r"^\$ normscope .*$", DOCS, re.M)]


@pytest.mark.parametrize("line", _doc_commands(), ids=["clip", "dry-run", "sweep"])
def test_docs_commands_run_and_match_the_pasted_output(line, gemma_hf, tmp_path):
    (tmp_path / "gemma-3-270m-hf").symlink_to(gemma_hf)
    argv = shlex.split(line)[1:]
    out = subprocess.run([sys.executable, "-m", "normscope", *argv], capture_output=True, text=True, timeout=900,
                         cwd=tmp_path, env={**os.environ, "COLUMNS": "130"})
    assert out.returncode == 0, out.stderr
    pasted = DOCS.split("$ " + line, 1)[1].split("```", 1)[0]
    real = " ".join(out.stdout.split())  # wrapping depends on the width; the words must not
    for row in pasted.strip().splitlines():
        if row.strip() and row.strip() != "…":
            assert " ".join(row.split()) in real, f"docs/clip.md line not in the real output: {row!r}"


def test_docs_python_block_runs(gemma_hf, tmp_path, monkeypatch, capsys):
    (tmp_path / "gemma-3-270m-hf").symlink_to(gemma_hf)
    monkeypatch.chdir(tmp_path)
    (code,) = re.findall(r"```python\n(.+?)```", DOCS, re.S)
    exec(compile(code, "docs/clip.md", "exec"), {"__name__": "__docs__"})
    printed = capsys.readouterr().out
    for line in code.splitlines():
        if line.startswith("print(") and "#" in line:
            assert line.split("#", 1)[1].strip() in printed
