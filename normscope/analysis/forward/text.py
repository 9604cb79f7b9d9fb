"""The evaluation text of `forward`: a file, or the public-domain sample shipped in the package, cut into
windows of token ids that every variant sees identically.

The built-in sample (`normscope/data/eval_sample.txt`, about 1,100 Gemma tokens) holds the openings of
books and speeches that are in the public domain: Carroll, *Alice's Adventures in Wonderland* (1865);
Austen, *Pride and Prejudice* (1813); Lincoln, the Gettysburg Address (1863); Melville, *Moby-Dick*
(1851); Darwin, *On the Origin of Species* (1859); the Declaration of Independence (1776); Dickens,
*A Tale of Two Cities* (1859); Conan Doyle, *A Scandal in Bohemia* (1891).
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

from ...errors import ConfigError, SourceNotFoundError

__all__ = ["BUILTIN_TEXT", "load_text", "windows"]

BUILTIN_TEXT = "builtin:public-domain"


def load_text(text_file: str | Path | None = None) -> tuple[str, str]:
    """(label, text): the file's UTF-8 text, or the built-in sample when `text_file` is None.

    Raises:
        SourceNotFoundError: no such file; ConfigError: the file is empty or not UTF-8.
    """
    if text_file is None:
        return BUILTIN_TEXT, files("normscope").joinpath("data/eval_sample.txt").read_text(encoding="utf-8")
    path = Path(text_file).expanduser()
    if not path.is_file():
        raise SourceNotFoundError(f"{path}: no such text file (--text takes a UTF-8 text file)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text.strip():
        raise ConfigError(f"{path}: the text file is empty")
    return str(path), text


def windows(ids: Sequence[int], n_tokens: int, ctx: int, bos: int | None) -> list[list[int]]:
    """Up to `n_tokens` ids of the text cut into windows of at most `ctx` ids, each opened by `bos`.

    Every id of the text taken is predicted once: with a BOS each window scores all of its text ids;
    without one, the first id of each window is context only (so windows overlap by one id).

    Raises:
        ConfigError: the text has fewer than 2 tokens, or ctx < 2.
    """
    if ctx < 2:
        raise ConfigError(f"context length {ctx}: need at least 2 tokens per window")
    ids = list(ids)
    if bos is not None:
        ids = [i for i in ids[:n_tokens]]
        step = ctx - 1
        out = [[bos, *ids[i:i + step]] for i in range(0, len(ids), step)]
    else:
        ids = ids[:n_tokens + 1]
        step = ctx - 1
        out = [ids[i:i + ctx] for i in range(0, max(1, len(ids) - 1), step)]
    out = [w for w in out if len(w) >= 2]
    if not out:
        raise ConfigError("the evaluation text has fewer than 2 tokens; give a longer --text")
    return out
