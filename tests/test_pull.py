"""`dgemma pull` and `-m OWNER/REPO[:TYPE]`, offline: each test lays out a Hugging Face hub cache itself
(models--OWNER--REPO/{blobs,refs/main,snapshots/<commit>}), with HF_HUB_OFFLINE=1 and HF_HUB_CACHE
pointing at it; the "repositories" are the small test models. Also the release twin at 'tiny' widths,
held to transformers (it must load the twin as the release: every tensor name and shape, the config's
released spelling, the tokenizer)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dgemma
from dgemma import hub
from dgemma.convert.hf_to_gguf import convert
from dgemma.convert.make_release_twin import make_twin, tensor_shapes, vocabulary, SCALES
from dgemma.convert.quantize_gguf import quantize_file
from dgemma.convert.safetensors_reader import SafetensorsCheckpoint
from dgemma.gguf import GGUFFile

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def lay_out_repo(hub_cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Puts `files` (repo name -> local file) into the hub cache as huggingface_hub stores a download:
    content-addressed blobs, a snapshot of symbolic links, refs/main naming the commit."""
    storage = hub_cache / f"models--{repo_id.replace('/', '--')}"
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / "main").write_text(COMMIT)
    snapshot = storage / "snapshots" / COMMIT
    for name, src in files.items():
        data = Path(src).read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An empty hub cache and dgemma cache, offline; (hub cache, dgemma cache, env for subprocesses)."""
    from huggingface_hub import constants

    hub_cache, cache = tmp_path / "hf-hub", tmp_path / "dgemma-cache"
    hub_cache.mkdir()
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hub_cache), "DGEMMA_CACHE": str(cache)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # read once at import by huggingface_hub
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    return hub_cache, cache, {**os.environ, **env}


def checkpoint_files(directory: Path) -> dict[str, Path]:
    return {p.name: p for p in directory.iterdir() if p.is_file()}


def cli(env, *args):
    """The CLI of this tree in a subprocess (the environment carries PYTHONPATH / DGEMMA_LIBRARY)."""
    python_dir = str(Path(dgemma.__file__).resolve().parents[1])
    env = dict(env, PYTHONPATH=os.pathsep.join([python_dir, env.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "dgemma.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def tensors_of(path) -> dict[str, tuple[str, bytes]]:
    with GGUFFile(path) as f:
        return {name: (info.type_name, f.raw(name).tobytes()) for name, info in f.tensors.items()}


@pytest.fixture(scope="module")
def tiny_twin(tmp_path_factory) -> Path:
    return make_twin(tmp_path_factory.mktemp("twin") / "diffusiongemma-twin", "tiny", shards=3, seed=5)


# -- pulling a checkpoint --------------------------------------------------------------------------------
def test_pull_converts_and_quantizes_in_one_pass(offline, tiny_checkpoint, workdir):
    hub_cache, cache, _ = offline
    lay_out_repo(hub_cache, "google/dg-tiny", checkpoint_files(tiny_checkpoint))
    path = hub.pull("google/dg-tiny", type="q4_k_m", progress=False)
    assert path == cache / "google--dg-tiny" / "Q4_K_M.gguf" and path.is_file()
    # the same bytes as converting to F32 and then running `dgemma quantize`
    f32, two_step = workdir / "pull-ref-f32.gguf", workdir / "pull-ref-q4_k_m.gguf"
    convert(tiny_checkpoint, f32, "f32", progress=None)
    quantize_file(f32, two_step, "Q4_K_M", progress=None)
    assert tensors_of(path) == tensors_of(two_step)
    with GGUFFile(path) as a, GGUFFile(two_step) as b:
        assert a.kv["general.file_type"] == b.kv["general.file_type"] == 15
    with dgemma.Model(path, threads=2) as m:
        g = m.generate([2, 17, 300, 41], max_new_tokens=8, seed=0)
        assert len(g.tokens) > 0 and g.steps > 0
    assert sorted(p.name for p in path.parent.iterdir()) == ["Q4_K_M.gguf"]
    # a second pull finds it in the cache
    assert hub.pull("google/dg-tiny:Q4_K_M", progress=False) == path


def test_pull_then_tokenize_and_generate_by_name(offline, tiny_twin):
    hub_cache, cache, env = offline
    lay_out_repo(hub_cache, "google/diffusiongemma-twin", checkpoint_files(tiny_twin))
    r = cli(env, "pull", "google/diffusiongemma-twin", "-q")
    assert r.returncode == 0, r.stderr
    path = cache / "google--diffusiongemma-twin" / "Q4_K_M.gguf"
    assert r.stdout.strip() == str(path) and path.is_file()
    r = cli(env, "tokenize", "-m", "google/diffusiongemma-twin", "--json", "the cat")
    assert r.returncode == 0, r.stderr
    from transformers import AutoTokenizer

    assert json.loads(r.stdout)["ids"] == AutoTokenizer.from_pretrained(tiny_twin)("the cat", add_special_tokens=False).input_ids
    r = cli(env, "generate", "-m", "google/diffusiongemma-twin:q4_k_m", "-n", "8", "--seed", "0", "--json", "the cat")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert 0 < len(out["tokens"]) <= 8
    r = cli(env, "info", "google/diffusiongemma-twin")
    assert r.returncode == 0 and "2 layers" in r.stdout, r.stderr


# -- fetching a ready GGUF -------------------------------------------------------------------------------
@pytest.fixture
def gguf_repo(offline, tiny_gguf, workdir):
    hub_cache = offline[0]
    q8, q4 = workdir / "pull-tiny-q8_0.gguf", workdir / "pull-tiny-q4_k_m.gguf"
    for path, t in ((q8, "Q8_0"), (q4, "Q4_K_M")):
        if not path.exists():
            quantize_file(tiny_gguf, path, t, progress=None)
    readme = workdir / "pull-README.md"
    readme.write_text("Q8_0 and Q4_K_M conversions of dg-tiny\n")
    lay_out_repo(hub_cache, "someone/dg-tiny-GGUF", {"dg-tiny-Q8_0.gguf": q8, "dg-tiny-Q4_K_M.gguf": q4,
                                                     "README.md": readme})
    return q8, q4


def test_gguf_ref_fetches_the_file_with_the_tag(offline, gguf_repo):
    q8, q4 = gguf_repo
    path = hub.pull("someone/dg-tiny-GGUF:q4_k_m", progress=False)
    assert path == offline[1] / "someone--dg-tiny-GGUF" / "Q4_K_M.gguf"
    assert path.read_bytes() == q4.read_bytes()
    assert hub.resolve_model("someone/dg-tiny-GGUF:Q4_K_M") == str(path)
    assert hub.pull("someone/dg-tiny-GGUF", type="Q8_0", progress=False).read_bytes() == q8.read_bytes()
    with dgemma.Model(hub.resolve_model("someone/dg-tiny-GGUF:Q8_0")) as m:
        assert m.config.n_layer == 6


def test_gguf_ref_with_no_or_several_matches(offline, gguf_repo, tiny_gguf):
    with pytest.raises(dgemma.FileIOError, match=r"no GGUF file matching Q2_K.*dg-tiny-Q4_K_M\.gguf, dg-tiny-Q8_0\.gguf"):
        hub.pull("someone/dg-tiny-GGUF:Q2_K", progress=False)
    with pytest.raises(dgemma.FileIOError, match="no GGUF file matching Q4_K"):  # Q4_K is not Q4_K_M
        hub.pull("someone/dg-tiny-GGUF:Q4_K", progress=False)
    lay_out_repo(offline[0], "someone/twice-GGUF", {"a-Q8_0.gguf": gguf_repo[0], "b.q8_0.gguf": gguf_repo[0]})
    with pytest.raises(dgemma.FileIOError, match=r"2 GGUF files \(a-Q8_0\.gguf, b\.q8_0\.gguf\) matching Q8_0"):
        hub.pull("someone/twice-GGUF:Q8_0", progress=False)
    assert not offline[1].exists() or not any(offline[1].rglob("*.gguf"))


# -- names -----------------------------------------------------------------------------------------------
def test_resolve_model_leaves_paths_alone_and_says_how_to_pull(offline, tiny_gguf, monkeypatch, tmp_path):
    assert hub.resolve_model(str(tiny_gguf)) == str(tiny_gguf)
    assert hub.resolve_model("missing.gguf") == "missing.gguf"           # a file name: the loader's error
    assert hub.resolve_model("dir/missing.gguf") == "dir/missing.gguf"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "model").write_bytes(b"")
    assert hub.resolve_model("local/model") == "local/model"              # an existing path wins over a name
    with pytest.raises(dgemma.FileIOError, match=r"run `dgemma pull google/nothing:Q4_K_M` first"):
        hub.resolve_model("google/nothing")
    r = cli(offline[2], "generate", "-m", "google/nothing:Q8_0", "-n", "4", "hi")
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert "run `dgemma pull google/nothing:Q8_0` first" in r.stderr and "Traceback" not in r.stderr


def test_resolve_model_lists_the_types_in_the_cache(offline, gguf_repo):
    hub.pull("someone/dg-tiny-GGUF:Q8_0", progress=False)
    with pytest.raises(dgemma.FileIOError, match=r"the cache has someone/dg-tiny-GGUF:Q8_0"):
        hub.resolve_model("someone/dg-tiny-GGUF:Q6_K")


def test_bad_names_and_types(offline, tiny_checkpoint):
    with pytest.raises(dgemma.InvalidArgumentError, match="not a Hugging Face model name"):
        hub.pull("just-a-name", progress=False)
    with pytest.raises(dgemma.InvalidArgumentError, match="names type Q8_0 but --type is Q4_K_M"):
        hub.pull("google/x:Q8_0", type="Q4_K_M", progress=False)
    lay_out_repo(offline[0], "google/dg-tiny", checkpoint_files(tiny_checkpoint))
    with pytest.raises(dgemma.InvalidArgumentError, match="--type IQ4_XS: cannot be made from a checkpoint"):
        hub.pull("google/dg-tiny", type="IQ4_XS", progress=False)


# -- errors ----------------------------------------------------------------------------------------------
def test_offline_with_nothing_cached(offline):
    with pytest.raises(dgemma.FileIOError, match=r"google/absent is not in the Hugging Face cache .*HF_HUB_OFFLINE"):
        hub.pull("google/absent", progress=False)
    r = cli(offline[2], "pull", "google/absent")
    assert r.returncode == 1 and r.stderr.startswith("dgemma pull: error: google/absent is not in the Hugging Face cache")
    assert "Traceback" not in r.stderr


def test_a_file_missing_from_the_cached_snapshot(offline, tiny_checkpoint):
    files = checkpoint_files(tiny_checkpoint)
    del files["config.json"]
    lay_out_repo(offline[0], "google/no-config", files)
    with pytest.raises(dgemma.FileIOError, match="google/no-config holds neither GGUF files nor a safetensors"):
        hub.pull("google/no-config", progress=False)


def test_not_enough_disk_space_is_found_before_starting(offline, tiny_checkpoint, gguf_repo, monkeypatch):
    lay_out_repo(offline[0], "google/dg-tiny", checkpoint_files(tiny_checkpoint))
    monkeypatch.setattr(hub, "free_bytes", lambda path: 1000)
    with pytest.raises(dgemma.FileIOError, match=r"not enough disk space at .*GB needed"):
        hub.pull("google/dg-tiny", progress=False)
    # a GGUF not yet in the hub cache needs its size free there
    monkeypatch.setattr(hub, "_snapshot", lambda repo_id: None)
    monkeypatch.setattr(hub, "_repo_files", lambda repo_id: {"m-Q8_0.gguf": 10**12})
    with pytest.raises(dgemma.FileIOError, match="not enough disk space"):
        hub.pull("someone/big-GGUF:Q8_0", progress=False)
    assert not offline[1].exists() or not any(offline[1].rglob("*"))


def test_output_size_bound_covers_the_real_file(offline, tiny_twin, tmp_path):
    weights = sum(p.stat().st_size for p in tiny_twin.glob("*.safetensors"))
    out = tmp_path / "twin-q4.gguf"
    convert(tiny_twin, out, "Q4_K_M", progress=None)
    assert out.stat().st_size <= hub._output_bytes(weights, "Q4_K_M")


@pytest.mark.parametrize("failure", [KeyboardInterrupt, OSError])
def test_no_partial_file_after_a_failure_mid_conversion(offline, tiny_checkpoint, monkeypatch, failure):
    from dgemma.convert import hf_to_gguf

    lay_out_repo(offline[0], "google/dg-tiny", checkpoint_files(tiny_checkpoint))
    real, calls = hf_to_gguf._stream, []

    def failing(*args):
        calls.append(1)
        if len(calls) == 10:
            raise failure("induced")
        yield from real(*args)

    monkeypatch.setattr(hf_to_gguf, "_stream", failing)
    with pytest.raises(failure, match="induced"):
        hub.pull("google/dg-tiny", progress=False)
    assert len(calls) == 10
    folder = offline[1] / "google--dg-tiny"
    assert folder.is_dir() and list(folder.iterdir()) == []
    with pytest.raises(dgemma.FileIOError, match="run `dgemma pull"):
        hub.resolve_model("google/dg-tiny")


# -- the release twin ------------------------------------------------------------------------------------
def test_twin_is_laid_out_as_the_release(tiny_twin):
    config = json.loads((tiny_twin / "config.json").read_text())
    tc = config["text_config"]
    assert tc["global_head_dim"] == 32 and tc["num_global_key_value_heads"] == 1 and "per_layer_config" not in tc
    assert tc["layer_types"] == ["sliding_attention", "full_attention"]
    index = json.loads((tiny_twin / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in tiny_twin.glob("*.safetensors"))
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert sorted(set(index["weight_map"].values())) == shards
    ckpt = SafetensorsCheckpoint(tiny_twin)
    try:
        assert {n: e.path.name for n, e in ckpt.entries.items()} == index["weight_map"]
        assert {e.dtype for e in ckpt.entries.values()} == {"BF16"}
        assert index["metadata"]["total_size"] == sum(e.nbytes for e in ckpt.entries.values())
        assert any(n.startswith("model.encoder.vision_tower.") for n in ckpt.entries)
    finally:
        ckpt.close()
    # transformers loads it as the release: every name and shape expected, none left over
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion

    model, info = DiffusionGemmaForBlockDiffusion.from_pretrained(tiny_twin, output_loading_info=True)
    assert not any(info.values()), info
    per_layer = model.config.text_config.per_layer_config
    assert [(per_layer[i].head_dim, per_layer[i].num_key_value_heads) for i in range(2)] == [(16, 2), (32, 1)]
    assert model.generation_config.sampler_config.entropy_bound == 0.1
    tok = AutoTokenizer.from_pretrained(tiny_twin)
    assert len(tok) == 1024
    assert tok("é", add_special_tokens=False).input_ids == [tok.convert_tokens_to_ids(f"<0x{b:02X}>") for b in "é".encode()]
    assert "<|turn>user\nhi<turn|>\n<|turn>model\n" in tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)


def test_twin_converts_with_the_vision_tower_skipped(tiny_twin, tmp_path):
    out = tmp_path / "twin.gguf"
    convert(tiny_twin, out, "bf16", progress=None)
    with GGUFFile(out) as f:
        assert not any("vision" in n for n in f.tensors)
        assert f.kv["diffusion-gemma.attention.key_length"] == 32
        assert f.kv["diffusion-gemma.attention.key_length_swa"] == 16
        assert list(f.kv["diffusion-gemma.attention.head_count_kv"]) == [2, 1]
        assert "blk.1.attn_v.weight" not in f.tensors and "blk.0.attn_v.weight" in f.tensors
        assert len(f.kv["tokenizer.ggml.tokens"]) == 1024 and f.kv["tokenizer.chat_template"]


def test_full_size_vocabulary_is_a_valid_bpe():
    tokens, merges = vocabulary(262_144)
    assert len(tokens) == len(set(tokens)) == 262_144
    vocab = set(tokens)
    assert len(merges) > 500_000
    assert all(a in vocab and b in vocab and a + b in vocab for a, b in merges)
    assert all(f"<0x{b:02X}>" in vocab for b in range(256))


def test_full_width_shapes_are_the_releases():
    shapes = tensor_shapes(SCALES["full"])
    assert shapes["model.decoder.embed_tokens.weight"] == (262_144, 2816)
    assert shapes["model.decoder.layers.0.experts.gate_up_proj"] == (128, 1408, 2816)
    assert shapes["model.decoder.layers.1.self_attn.q_proj.weight"] == (16 * 512, 2816)
    assert shapes["model.decoder.layers.1.self_attn.k_proj.weight"] == (2 * 512, 2816)
    assert shapes["model.decoder.layers.0.self_attn.v_proj.weight"] == (8 * 256, 2816)
    assert "model.decoder.layers.1.self_attn.v_proj.weight" not in shapes


def test_release_twin_cli_at_tiny_scale(tmp_path):
    from dgemma.convert.make_release_twin import main

    assert main([str(tmp_path / "t"), "--scale", "tiny", "--shards", "2"]) == 0
    assert len(list((tmp_path / "t").glob("*.safetensors"))) == 2


def _rss_file_bytes() -> int:
    """This process's resident file-backed pages (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no RssFile in /proc/self/status")


def test_converter_drops_each_tensors_pages_once_read(tmp_path):
    """Mapped pages count toward the resident set once read: without release() converting the twin
    peaked at the whole checkpoint (docs/pull.md)."""
    from safetensors.numpy import save_file

    save_file({"big": np.ones((4096, 4096), np.float32)}, str(tmp_path / "model.safetensors"))
    ckpt = SafetensorsCheckpoint(tmp_path)
    try:
        before = _rss_file_bytes()
        assert ckpt.float32("big").sum() == 4096 * 4096
        read = _rss_file_bytes()
        assert read - before > 48 << 20
        ckpt.release("big")
        assert read - _rss_file_bytes() > 48 << 20
        assert ckpt.float32("big").sum() == 4096 * 4096  # still readable afterwards
    finally:
        ckpt.close()
