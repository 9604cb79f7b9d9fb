"""Choosing tensors by glob: `--include` / `--exclude` on HF or file names, shared by every command."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from ...results import TensorInfo

__all__ = ["selected", "select_tensors"]


def selected(info: TensorInfo, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> bool:
    """True when a name of `info` (HF, file or GGUF) matches an include glob (or there are none) and no
    exclude glob.

    Example:
        >>> selected(info, include=["*.mlp.*"])  # doctest: +SKIP
    """
    names = [n for n in (info.name, info.source_name, info.gguf_name) if n]
    if include and not any(fnmatch.fnmatchcase(n, p) for n in names for p in include):
        return False
    return not any(fnmatch.fnmatchcase(n, p) for n in names for p in exclude)


def select_tensors(tensors: Iterable[TensorInfo], include: Sequence[str] = (), exclude: Sequence[str] = ()
                   ) -> list[TensorInfo]:
    return [t for t in tensors if selected(t, include, exclude)]
