"""Rehearsal of the real checkpoint: the release twin at full width (convert/make_release_twin.py, two
layers, ~4.7 GB of BF16) is put into a Hugging Face hub cache, then, offline and each in its own
process: `dgemma pull` (convert + quantize to Q4_K_M), `dgemma tokenize`, `dgemma generate -n 8`.
Prints one table: wall time and peak resident memory of each step, and the tokenizer's load time. The
bound to hold: peak memory near one tensor (the embedding, 262144 x 2816: 1.48 GB in BF16) plus overhead.

    PYTHONPATH=python DGEMMA_LIBRARY=build/dev/libdgemma.so python bench/rehearse_release.py [--workdir /tmp]

Everything is written under a temporary folder in --workdir and deleted at the end (--keep keeps it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = "google/diffusiongemma-26B-A4B-it"
COMMIT = "0" * 40
EMBEDDING_BF16 = 262_144 * 2816 * 2


def into_hub_cache(twin: Path, hub_cache: Path) -> None:
    """Moves the twin's files into the standard hub cache layout (content-addressed blobs, a snapshot
    of links, refs/main), as huggingface_hub leaves a download."""
    storage = hub_cache / f"models--{REPO.replace('/', '--')}"
    (storage / "blobs").mkdir(parents=True)
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(COMMIT)
    snapshot = storage / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for f in sorted(twin.iterdir()):
        digest = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(16 << 20):
                digest.update(chunk)
        blob = storage / "blobs" / digest.hexdigest()
        os.replace(f, blob)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))


def run(env: dict, *args: str) -> tuple[float, int, str]:
    """(wall seconds, peak RSS bytes, stdout) of `python -m dgemma.cli ARGS` in its own process."""
    start = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "dgemma.cli", *args], env=env, stdout=subprocess.PIPE)
    out = p.stdout.read().decode()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit(f"dgemma {' '.join(args)} failed with exit code {p.returncode}")
    return time.perf_counter() - start, usage.ru_maxrss * 1024, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=tempfile.gettempdir(), help="where the twin and caches go (needs ~7 GB)")
    ap.add_argument("--steps", type=int, default=4, help="denoising steps for the generate run (default 4)")
    ap.add_argument("--keep", action="store_true", help="keep the twin, the caches and the GGUF")
    args = ap.parse_args()

    from dgemma.convert.make_release_twin import make_twin

    root = Path(tempfile.mkdtemp(prefix="dgemma-rehearsal-", dir=args.workdir))
    try:
        hub_cache, cache = root / "hf-hub", root / "dgemma-cache"
        env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache), DGEMMA_CACHE=str(cache))
        t0 = time.perf_counter()
        make_twin(root / "twin", "full", shards=4, seed=0)
        t_twin = time.perf_counter() - t0
        twin_bytes = sum(f.stat().st_size for f in (root / "twin").iterdir())
        into_hub_cache(root / "twin", hub_cache)

        rows = []
        wall, rss, out = run(env, "pull", REPO, "--type", "Q4_K_M", "-q")
        gguf = Path(out.strip())
        rows.append(("dgemma pull (convert + Q4_K_M)", wall, rss, f"{gguf.stat().st_size / 1e9:.2f} GB GGUF"))
        wall, rss, out = run(env, "tokenize", "-m", REPO, "--json", "The quick brown fox jumps over the lazy dog.")
        rows.append(("dgemma tokenize", wall, rss, f"{len(json.loads(out)['ids'])} tokens"))
        wall, rss, _ = run(env, "generate", "-m", f"{REPO}:Q4_K_M", "-n", "8", "--steps", str(args.steps),
                           "--seed", "0", "--json", "Hello")
        rows.append((f"dgemma generate -n 8 --steps {args.steps}", wall, rss, ""))

        from dgemma.gguf import GGUFFile
        from dgemma.tokenizer import Tokenizer

        t0 = time.perf_counter()
        tok = Tokenizer.from_gguf(gguf)
        t_tok = time.perf_counter() - t0
        with GGUFFile(gguf) as f:
            n_merges = len(f.kv["tokenizer.ggml.merges"])

        print(f"release twin: {twin_bytes / 1e9:.2f} GB in BF16 shards, made in {t_twin:.0f} s; "
              f"one tensor (the embedding, BF16) = {EMBEDDING_BF16 / 1e9:.2f} GB")
        print()
        print("| step | wall (s) | peak RSS (GB) | note |")
        print("|---|---|---|---|")
        for name, wall, rss, note in rows:
            print(f"| {name} | {wall:.1f} | {rss / 1e9:.2f} | {note} |")
        print(f"| tokenizer load from the GGUF ({tok.vocab_size} tokens, "
              f"{n_merges} merges) | {t_tok:.2f} | | in-process |")
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
