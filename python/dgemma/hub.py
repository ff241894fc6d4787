"""`dgemma pull`: models from the Hugging Face Hub into a local cache of ready GGUF files.

Names (docs/pull.md):
  OWNER/REPO[:TYPE]   a repository. If it holds GGUF files, the one whose name carries TYPE (a quant tag
                      such as Q4_K_M, matched case-insensitively) is fetched; if it holds a safetensors
                      checkpoint, it is downloaded, converted and quantized to TYPE in one pass.
TYPE defaults to Q4_K_M. Either way the result is `<cache>/<OWNER>--<REPO>/<TYPE>.gguf`, where the cache
is $DGEMMA_CACHE, else $XDG_CACHE_HOME/dgemma, else ~/.cache/dgemma (a fetched GGUF is a symbolic link
into the Hugging Face cache, so it is stored once). `-m NAME` resolves from that cache only.

huggingface_hub does the downloading (resumable, its progress bars, its token discovery, HF_HUB_OFFLINE,
HF_HUB_CACHE). Nothing half-written ever carries a cache name: the converter writes a temporary file
renamed on success, links are made under a temporary name and renamed.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import sys
from pathlib import Path

from .errors import FileIOError, InvalidArgumentError

DEFAULT_TYPE = "Q4_K_M"
# What the converter reads from a checkpoint (convert/hf_to_gguf.py, convert/tokenizer.py).
CHECKPOINT_FILES = ["config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                    "chat_template.jinja", "chat_template.json"]
_NAME = re.compile(r"^(?P<owner>[A-Za-z0-9][\w.-]*)/(?P<repo>[\w.-]+)(?::(?P<tag>[\w.-]+))?$")


def default_cache() -> Path:
    """Where pulled models live: $DGEMMA_CACHE, else $XDG_CACHE_HOME/dgemma, else ~/.cache/dgemma."""
    if os.environ.get("DGEMMA_CACHE"):
        return Path(os.environ["DGEMMA_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "dgemma"


def parse_name(name: str) -> tuple[str, str | None] | None:
    """(repo id, tag or None) when `name` reads as OWNER/REPO[:TAG], else None."""
    m = _NAME.match(name)
    if m is None or name.lower().endswith(".gguf"):
        return None
    return f"{m['owner']}/{m['repo']}", m["tag"]


def cached_path(repo_id: str, type_name: str, root: Path | None = None) -> Path:
    """The cache file of `repo_id` at `type_name` (which may not exist)."""
    return (root or default_cache()) / repo_id.replace("/", "--") / f"{type_name.upper()}.gguf"


def resolve_model(model: str) -> str:
    """A model argument as a file path: an existing path (or anything that is not a hub name) unchanged,
    a hub name from the dgemma cache. Never downloads."""
    parsed = None if os.path.exists(model) else parse_name(model)
    if parsed is None:
        return model
    repo_id, tag = parsed
    path = cached_path(repo_id, tag or DEFAULT_TYPE)
    if path.is_file():
        return str(path)
    have = sorted(p.stem for p in path.parent.glob("*.gguf") if p.is_file())
    note = f" (the cache has {', '.join(f'{repo_id}:{t}' for t in have)})" if have else ""
    raise FileIOError(f"{model} is not a file, nor a pulled model in {path.parent}{note}; "
                      f"run `dgemma pull {repo_id}:{(tag or DEFAULT_TYPE).upper()}` first")


def free_bytes(path: Path) -> int:
    """Free space on the filesystem holding `path` (its nearest existing parent)."""
    while not path.exists():
        path = path.parent
    return shutil.disk_usage(path).free


def pull(name: str, type: str | None = None, cache_dir: str | os.PathLike | None = None, progress: bool = True,
         threads: int | None = None) -> Path:
    """Fetches or builds model `name` (see the module doc) at `type`; returns the cached GGUF's path."""
    parsed = parse_name(name)
    if parsed is None:
        raise InvalidArgumentError(f"{name!r} is not a Hugging Face model name (OWNER/REPO or OWNER/REPO:TYPE)")
    repo_id, tag = parsed
    if tag and type and tag.upper() != type.upper():
        raise InvalidArgumentError(f"{name} names type {tag} but --type is {type}; give one of them")
    type_name = (tag or type or DEFAULT_TYPE).upper()
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache()
    out = cached_path(repo_id, type_name, root)
    if out.is_file():
        _say(progress, f"{repo_id}:{type_name} is already in the cache")
        return out
    files = _repo_files(repo_id)
    ggufs = {f: s for f, s in files.items() if f.lower().endswith(".gguf")}
    if ggufs:
        return _fetch_gguf(repo_id, type_name, ggufs, out, progress)
    if "config.json" in files and any(f.endswith(".safetensors") for f in files):
        return _convert_checkpoint(repo_id, type_name, files, out, progress, threads)
    raise FileIOError(f"{repo_id} holds neither GGUF files nor a safetensors checkpoint "
                      f"(it has: {', '.join(sorted(files)) or 'no files'})")


# -- the two kinds of repository -----------------------------------------------------------------------
def _fetch_gguf(repo_id: str, type_name: str, ggufs: dict[str, int | None], out: Path, progress: bool) -> Path:
    tag = re.compile(rf"(?<![A-Za-z0-9]){re.escape(type_name)}(?![A-Za-z0-9_])", re.IGNORECASE)
    matches = sorted(f for f in ggufs if tag.search(f.rsplit("/", 1)[-1]))
    if len(matches) != 1:
        what = "no GGUF file" if not matches else f"{len(matches)} GGUF files ({', '.join(matches)})"
        raise FileIOError(f"{repo_id} has {what} matching {type_name}; it has: {', '.join(sorted(ggufs))}")
    filename = matches[0]
    _check_space([(_hub_cache(), _missing_bytes(repo_id, {filename: ggufs[filename]}))])
    from huggingface_hub import hf_hub_download

    with _hub_errors(repo_id, progress):
        local = Path(hf_hub_download(repo_id, filename, cache_dir=_hub_cache(), local_files_only=_offline()))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(local.resolve())
    os.replace(tmp, out)
    _say(progress, f"{repo_id}:{type_name} -> {filename}")
    return out


def _convert_checkpoint(repo_id: str, type_name: str, files: dict[str, int | None], out: Path, progress: bool,
                        threads: int | None) -> Path:
    from .convert.hf_to_gguf import OUT_TYPES, convert
    from .convert.quantize_gguf import RECIPES

    if type_name.lower() not in OUT_TYPES and type_name not in RECIPES:
        raise InvalidArgumentError(f"--type {type_name}: cannot be made from a checkpoint; choose one of "
                                   f"{', '.join([*RECIPES, *(t.upper() for t in OUT_TYPES)])}")
    wanted = {f: s for f, s in files.items() if any(fnmatch.fnmatch(f, p) for p in CHECKPOINT_FILES)}
    weights = sum(s or 0 for f, s in wanted.items() if f.endswith(".safetensors"))
    _check_space([(_hub_cache(), _missing_bytes(repo_id, wanted)), (out.parent, _output_bytes(weights, type_name))])
    from huggingface_hub import snapshot_download

    with _hub_errors(repo_id, progress):
        snapshot = snapshot_download(repo_id, cache_dir=_hub_cache(), allow_patterns=CHECKPOINT_FILES,
                                     local_files_only=_offline())
    missing = sorted(f for f in wanted if not (Path(snapshot) / f).is_file())
    if missing:
        raise FileIOError(f"the cached copy of {repo_id} lacks {', '.join(missing)}; "
                          f"run `dgemma pull {repo_id}` with network access to complete it")
    _say(progress, f"converting {repo_id} to {type_name} ...")
    out.parent.mkdir(parents=True, exist_ok=True)
    convert(snapshot, out, type_name, progress=sys.stderr if progress else None, threads=threads)
    return out


def _output_bytes(checkpoint_bytes: int, type_name: str) -> int:
    """An upper bound of the GGUF size from the checkpoint's (assumed BF16) weights: every weight at the
    widest type the recipe uses, plus room for the metadata."""
    from .convert.hf_to_gguf import OUT_TYPES
    from .convert.quantize_gguf import RECIPES
    from .gguf import GGML_TYPE_IDS, GGML_TYPES

    if type_name.lower() in OUT_TYPES:
        widest = [OUT_TYPES[type_name.lower()]]
    else:
        widest = [t for t in (RECIPES[type_name].base, RECIPES[type_name].promoted) if t]
    bits = max(GGML_TYPES[GGML_TYPE_IDS[t]][2] * 8 / GGML_TYPES[GGML_TYPE_IDS[t]][1] for t in widest)
    return int(checkpoint_bytes / 2 * bits / 8) + (64 << 20)


# -- the hub -------------------------------------------------------------------------------------------
def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of the repo's main branch, if any."""
    storage = _hub_cache() / f"models--{repo_id.replace('/', '--')}"
    ref = storage / "refs" / "main"
    if not ref.is_file():
        return None
    folder = storage / "snapshots" / ref.read_text().strip()
    return folder if folder.is_dir() else None


def _repo_files(repo_id: str) -> dict[str, int | None]:
    """The repository's files and sizes: from the Hub when online, else from the local hub cache."""
    if not _offline():
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile

        try:
            with _hub_errors(repo_id, False):
                return {f.path: f.size for f in HfApi().list_repo_tree(repo_id, recursive=True)
                        if isinstance(f, RepoFile)}
        except _Unreachable:
            pass  # as huggingface_hub does: fall back to what the cache holds
    snapshot = _snapshot(repo_id)
    if snapshot is None:
        why = "HF_HUB_OFFLINE is set" if _offline() else "the Hugging Face Hub cannot be reached"
        raise FileIOError(f"{repo_id} is not in the Hugging Face cache ({_hub_cache()}) and {why}; "
                          f"connect (and unset HF_HUB_OFFLINE) and run `dgemma pull {repo_id}` again")
    return {p.relative_to(snapshot).as_posix(): p.stat().st_size for p in snapshot.rglob("*") if p.is_file()}


def _missing_bytes(repo_id: str, files: dict[str, int | None]) -> int:
    """Bytes still to download for `files` (those not already in the hub cache)."""
    snapshot = _snapshot(repo_id)
    return sum(s or 0 for f, s in files.items() if snapshot is None or not (snapshot / f).is_file())


def _check_space(needs: list[tuple[Path, int]]) -> None:
    """Raises unless each filesystem has room for what will be written to it (summed per filesystem)."""
    by_device: dict[int, tuple[Path, int]] = {}
    for path, n in needs:
        existing = path
        while not existing.exists():
            existing = existing.parent
        dev = existing.stat().st_dev
        prev = by_device.get(dev, (path, 0))
        by_device[dev] = (prev[0], prev[1] + n)
    for path, n in by_device.values():
        free = free_bytes(path)
        if n > free:
            raise FileIOError(f"not enough disk space at {path}: {n / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free; "
                              f"free some space or point HF_HUB_CACHE / DGEMMA_CACHE elsewhere")


class _Unreachable(FileIOError):
    """The Hub could not be reached (network down)."""


class _hub_errors:
    """Turns huggingface_hub's exceptions into one-line dgemma errors naming the repository and the fix;
    hides the progress bars when `progress` is false."""

    def __init__(self, repo_id: str, progress: bool):
        self.repo_id, self.progress = repo_id, progress

    def __enter__(self):
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars

        self.restore = not self.progress and not are_progress_bars_disabled()
        if self.restore:
            disable_progress_bars()
        return self

    def __exit__(self, exc_type, exc, tb):
        from huggingface_hub import errors
        from huggingface_hub.utils import enable_progress_bars

        if self.restore:
            enable_progress_bars()
        r = self.repo_id
        if exc is None or isinstance(exc, FileIOError):
            return False
        if isinstance(exc, errors.GatedRepoError):
            raise FileIOError(f"{r} is gated: accept its terms at https://huggingface.co/{r} and log in "
                              f"(`hf auth login` or HF_TOKEN)") from None
        if isinstance(exc, errors.RepositoryNotFoundError):
            raise FileIOError(f"{r}: no such repository on the Hugging Face Hub (a private one needs "
                              f"`hf auth login` or HF_TOKEN)") from None
        if isinstance(exc, (errors.RevisionNotFoundError, errors.EntryNotFoundError)):
            raise FileIOError(f"{r}: {exc}".splitlines()[0]) from None
        not_cached = (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled,
                      getattr(errors, "IncompleteSnapshotError", errors.LocalEntryNotFoundError))
        if isinstance(exc, not_cached):
            raise FileIOError(f"{r} is not (completely) in the Hugging Face cache ({_hub_cache()}) and it cannot "
                              f"be downloaded now; connect (and unset HF_HUB_OFFLINE) and run `dgemma pull {r}` "
                              f"again") from None
        if isinstance(exc, errors.HfHubHTTPError):
            raise FileIOError(f"{r}: the Hugging Face Hub answered: {str(exc).splitlines()[0]}") from None
        if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
            raise FileIOError(f"disk full while fetching {r}; free some space and run `dgemma pull {r}` again "
                              f"(the download resumes)") from None
        # huggingface_hub's HTTP client changed package across releases (httpx, httpx2): match by name
        if any(c.__name__ in ("ConnectError", "TimeoutException") for c in type(exc).__mro__):
            raise _Unreachable(f"cannot reach the Hugging Face Hub for {r} ({exc})") from None
        return False


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr)
