"""Hugging Face hub ids: `org/name`, `org/name@revision`, `org/name:file.gguf`, through huggingface_hub.

Only weights and configuration are fetched (never `*.bin` when safetensors exist), into the
user's shared HF cache with the user's token; `HF_HUB_OFFLINE=1` serves from that cache alone.
Download progress goes to the caller's `progress` callback (huggingface_hub's own tqdm bars are
replaced by a silent class that forwards to it, so a library call prints nothing).
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SourceNotFoundError
from ..results import ProgressFn

__all__ = ["HubId", "parse_hub_id", "resolve_hub"]

_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<rev>[\w./-]+?))?(?::(?P<file>[^:@]+))?$")

CONFIG_PATTERNS = ["config.json", "generation_config.json", "adapter_config.json"]
SAFETENSORS_PATTERNS = ["*.safetensors", "*.safetensors.index.json"]
BIN_PATTERNS = ["*.bin", "*.bin.index.json", "*.pt", "*.pth"]


@dataclass(frozen=True)
class HubId:
    repo_id: str
    revision: str | None
    filename: str | None


def parse_hub_id(spec: str) -> HubId | None:
    """`org/name[@rev][:file]` as a HubId, or None when `spec` is not shaped like one.

    Example:
        >>> parse_hub_id("google/gemma-3-270m-it@main")
        HubId(repo_id='google/gemma-3-270m-it', revision='main', filename=None)
    """
    m = _HUB_ID.match(spec)
    if not m or spec.startswith(("/", ".", "~")):
        return None
    return HubId(m["repo"], m["rev"], m["file"])


def _choose_patterns(files: list[str], hub: HubId) -> list[str]:
    """The allow-patterns for one repo listing: safetensors first, then one GGUF, then .bin."""
    if hub.filename:
        return [hub.filename, *CONFIG_PATTERNS]
    if any(fnmatch.fnmatch(f, p) for f in files for p in SAFETENSORS_PATTERNS):
        return SAFETENSORS_PATTERNS + CONFIG_PATTERNS
    ggufs = [f for f in files if f.endswith(".gguf")]
    if len(ggufs) == 1:
        return ggufs + CONFIG_PATTERNS
    if ggufs:
        raise SourceNotFoundError(f"{hub.repo_id} holds {len(ggufs)} GGUF files and no safetensors; pick one "
                                  f"with {hub.repo_id}:FILE, e.g. {hub.repo_id}:{ggufs[0]}")
    if any(fnmatch.fnmatch(f, p) for f in files for p in BIN_PATTERNS):
        return BIN_PATTERNS + CONFIG_PATTERNS
    raise SourceNotFoundError(f"{hub.repo_id}: no weights found (no *.safetensors, *.gguf or *.bin files)")


def _progress_tqdm(progress: ProgressFn | None, label: str) -> type:
    """A tqdm stand-in for `snapshot_download(tqdm_class=…)`: prints nothing, forwards byte counts.

    huggingface_hub makes its byte bars with unit="B" (the file-count bar has none); the first one
    (bytes received) is forwarded as progress(label, bytes_done, bytes_total).
    """
    from tqdm.auto import tqdm

    first: list[object] = []

    class _Forward(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = False
            kwargs["file"] = _Null()
            super().__init__(*args, **kwargs)
            if self.unit == "B" and not first:
                first.append(self)

        def update(self, n: float | None = 1) -> bool | None:
            out = super().update(n)
            if progress is not None and first and first[0] is self:
                progress(label, int(self.n), int(self.total or 0))
            return out

    return _Forward


class _Null:
    def write(self, _: str) -> None:
        pass

    def flush(self) -> None:
        pass


def _unreachable(endpoint: str, timeout: float = 3.0) -> str | None:
    """Why the hub endpoint cannot be reached (its name does not resolve, or no TCP connection opens within
    `timeout` seconds), or None when it can."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{host}:{port}: {e.strerror or e}"


def resolve_hub(hub: HubId, token: str | bool | None = None, cache_dir: Path | None = None,
                progress: ProgressFn | None = None) -> Path:
    """Download (or find in the cache) the files normscope needs and return the snapshot directory.

    Args:
        hub: the parsed hub id.
        token: a token, or None for the usual places (HF_TOKEN, the saved login).
        cache_dir: an HF cache directory, or None for the user's (HF_HOME / HF_HUB_CACHE).
        progress: called as progress(description, bytes_done, bytes_total) while files download.

    Returns:
        The local snapshot directory (or the single file when `hub.filename` was given).

    Raises:
        SourceNotFoundError: the repo, revision or file cannot be had: not found, gated without a
            token, or not cached while offline. The message says which and what to do.
    """
    import huggingface_hub as hf
    from huggingface_hub import constants, errors

    offline = constants.HF_HUB_OFFLINE  # read from the environment when huggingface_hub was imported
    unreachable = None if offline else _unreachable(constants.ENDPOINT)
    if unreachable:  # no network: the cache or one clear line, at once (huggingface_hub would retry for ~25 s)
        try:
            folder = Path(hf.snapshot_download(hub.repo_id, revision=hub.revision, cache_dir=cache_dir,
                                               local_files_only=True))
        except (errors.LocalEntryNotFoundError, OSError):
            where = cache_dir or constants.HF_HUB_CACHE
            raise SourceNotFoundError(
                f"cannot reach the hub for {hub.repo_id} ({unreachable}) and it is not in the Hugging Face cache "
                f"({where}); set HF_HUB_OFFLINE=1 to read the cache alone, or pass a local path") from None
        return _pick(folder, hub)
    try:
        if offline:
            files = None
        else:
            files = hf.HfApi().list_repo_files(hub.repo_id, revision=hub.revision, token=token)
        patterns = _choose_patterns(files, hub) if files is not None else None
        if patterns is None:  # offline: look at what the cache holds
            folder = Path(hf.snapshot_download(hub.repo_id, revision=hub.revision, cache_dir=cache_dir,
                                               local_files_only=True))
            cached = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
            _choose_patterns(cached, hub)  # same choice (and errors) as online
        else:
            folder = Path(hf.snapshot_download(hub.repo_id, revision=hub.revision, cache_dir=cache_dir,
                                               token=token, allow_patterns=patterns,
                                               tqdm_class=_progress_tqdm(progress, f"downloading {hub.repo_id}")))
    except errors.GatedRepoError:
        raise SourceNotFoundError(
            f"{hub.repo_id} is gated: accept its license on huggingface.co, then log in with "
            "`hf auth login` or set HF_TOKEN") from None
    except errors.RepositoryNotFoundError:
        raise SourceNotFoundError(f"{hub.repo_id}: no such repository on the hub (or it is private: "
                                  "log in with `hf auth login` or set HF_TOKEN)") from None
    except errors.RevisionNotFoundError:
        raise SourceNotFoundError(f"{hub.repo_id}: revision {hub.revision!r} does not exist") from None
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled):
        state = "HF_HUB_OFFLINE is set" if offline else "the hub cannot be reached"
        raise SourceNotFoundError(f"{hub.repo_id}{'@' + hub.revision if hub.revision else ''} is not in the "
                                  f"Hugging Face cache and {state}; download it once online") from None
    except (OSError, errors.HfHubHTTPError) as e:
        raise SourceNotFoundError(f"{hub.repo_id}: the hub could not be read ({type(e).__name__}: {e})") from None
    except Exception as e:  # the HTTP client's own errors (connection, timeout) are not OSError
        if "Connect" in type(e).__name__ or "Timeout" in type(e).__name__ or "Network" in type(e).__name__:
            raise SourceNotFoundError(f"cannot reach the hub for {hub.repo_id} ({type(e).__name__}: {e}); set "
                                      "HF_HUB_OFFLINE=1 to read the Hugging Face cache alone, or pass a local "
                                      "path") from None
        raise
    return _pick(folder, hub)


def _pick(folder: Path, hub: HubId) -> Path:
    """The snapshot directory, or the one file the hub id names in it."""
    if hub.filename:
        target = folder / hub.filename
        if not target.is_file():
            raise SourceNotFoundError(f"{hub.repo_id}: no file {hub.filename!r} in revision "
                                      f"{hub.revision or 'main'}")
        return target
    return folder
