"""Loading a checkpoint into transformers for `forward`: the torch extra's guard, the model, its tokenizer.

Sources are resolved by normscope first (`open_model`: HF directory, .safetensors, .gguf, hub id through
normscope's resolver, `example:NAME`); transformers then loads the local files it resolved, never the
network: a GGUF through transformers' GGUF loader (which dequantizes, and subtracts the converter's +1
from Gemma norms), everything else with `from_pretrained`. Weights are held in float32 so fake-quantized
values are kept exactly. torch and transformers are imported here, never at `import normscope`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...errors import CheckpointError, ConfigError, MissingExtraError
from ...io import parse_hub_id
from ...results import SourceInfo

__all__ = ["INSTALL_HINT", "require_torch", "load_causal_lm", "load_tokenizer"]

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install torch==2.13.0 'normscope[torch]'"


def require_torch(what: str = "normscope forward") -> tuple[Any, Any]:
    """(torch, transformers), or MissingExtraError saying in one line what to install."""
    try:
        import torch
        import transformers
    except ImportError as e:
        missing = getattr(e, "name", None) or "torch"
        raise MissingExtraError(f"{what} needs the torch extra ({missing} is not installed): {INSTALL_HINT} "
                                "(the == pin takes a CPU build)") from None
    return torch, transformers


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight-loading progress bar on stderr while loading (restored afterwards)."""
    from transformers.utils import logging as tlog

    enabled = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    # the GGUF loader draws its own tqdm bar, which ignores the switch above: pass its iterable through
    try:
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:  # pragma: no cover - a transformers without GGUF support
        gguf_utils = None
    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
        if enabled:
            tlog.enable_progress_bar()


def _files(source: SourceInfo) -> tuple[Path, str | None]:
    """(directory, gguf file name or None) that transformers loads."""
    path = Path(source.path)
    if path.is_file():
        if source.format == "gguf":
            return path.parent, path.name
        return path.parent, None
    return path, None


def load_causal_lm(source: SourceInfo) -> Any:
    """The model at `source` as a float32 transformers causal LM in eval mode, from local files only.

    Raises:
        MissingExtraError: torch or transformers missing; CheckpointError: transformers cannot load it.
    """
    torch, transformers = require_torch()
    directory, gguf = _files(source)
    kwargs: dict[str, Any] = {"dtype": torch.float32, "local_files_only": True}
    if gguf:
        kwargs["gguf_file"] = gguf
    elif not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory}: no config.json beside the weights; transformers needs one to build "
                              "the model for a forward pass")
    try:
        with _quiet_transformers():
            model = transformers.AutoModelForCausalLM.from_pretrained(str(directory), **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{source.path}: transformers could not load it as a causal LM "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    model.eval()
    return model


def _usable(tok: Any) -> bool:
    try:
        return len(tok("The quick brown fox jumps over the lazy dog.")["input_ids"]) >= 2
    except Exception:  # noqa: BLE001 - a tokenizer that cannot encode a sentence is not usable, whatever it raises
        return False


def load_tokenizer(source: SourceInfo, tokenizer: str | Path | None = None) -> Any:
    """The tokenizer: `tokenizer` if given, else the one beside the weights (or inside the GGUF); for a hub id
    whose snapshot holds only weights, the hub repo's tokenizer through the HF cache.

    Raises:
        ConfigError: no tokenizer can be found (pass `tokenizer=`).
    """
    _, transformers = require_torch()
    auto = transformers.AutoTokenizer
    tried = []
    candidates: list[tuple[str, dict[str, Any]]] = []
    if tokenizer is not None:
        given = Path(tokenizer)
        if given.suffix.lower() == ".gguf" and given.is_file():  # transformers reads a GGUF's own tokenizer
            candidates.append((str(given.parent), {"gguf_file": given.name}))
        else:
            candidates.append((str(tokenizer), {}))
    else:
        directory, gguf = _files(source)
        candidates.append((str(directory), {"gguf_file": gguf, "local_files_only": True} if gguf
                           else {"local_files_only": True}))
        hub = parse_hub_id(source.spec) if source.kind == "hub" else None
        if hub is not None:
            candidates.append((hub.repo_id, {"revision": hub.revision} if hub.revision else {}))
    for where, kwargs in candidates:
        try:
            with _quiet_transformers():
                tok = auto.from_pretrained(where, **kwargs)
        except (OSError, ValueError, KeyError, TypeError) as e:
            tried.append(f"{where}: {type(e).__name__}")
            continue
        if _usable(tok):
            return tok
        # transformers builds an empty tokenizer from missing or empty tokenizer files instead of failing
        tried.append(f"{where}: no usable tokenizer (it splits a sentence into fewer than 2 tokens)")
    if len(tried) == 1 and "no usable tokenizer" in tried[0]:
        raise ConfigError(f"no usable tokenizer in {candidates[0][0]} (its tokenizer files are missing or empty); "
                          "pass --tokenizer DIR, a hub id or a .gguf")
    raise ConfigError(f"no tokenizer found for {source.spec or source.path} (tried {'; '.join(tried)}); "
                      "pass --tokenizer DIR, a hub id or a .gguf")
