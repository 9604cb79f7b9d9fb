"""JSON from a checkpoint (safetensors headers, index.json, config.json, side files), parsed defensively.

The bytes come from whoever made the checkpoint, so every failure of the parser is one CheckpointError
naming the file: a size above a cap (read before parsing), nesting too deep for the parser (a
RecursionError otherwise), integers longer than Python converts (4300 digits), invalid UTF-8, lone
surrogates (`"\\ud800"`, which no UTF-8 output can hold; safetensors' serde_json refuses them too), and
nesting deeper than any real checkpoint file has (`MAX_DEPTH`), which later code would recurse on.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

__all__ = ["MAX_DEPTH", "MAX_SIDE_FILE_BYTES", "parse_json", "read_json", "read_weight_map"]

MAX_DEPTH = 64  # real headers nest 3 levels, configs about 5
MAX_SIDE_FILE_BYTES = 100 * 1024 * 1024  # as safetensors caps its header; the largest real index is ~10 MB
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def read_json(file: Path, what: str, max_bytes: int | None = None) -> Any:
    """The JSON document in `file`, checked as `parse_json` does.

    Raises:
        CheckpointError: unreadable, larger than `max_bytes` (default MAX_SIDE_FILE_BYTES), or not JSON
            normscope can hold (the message names the file and what is wrong).

    Example:
        >>> read_json(Path("model/config.json"), "config.json")  # doctest: +SKIP
    """
    max_bytes = MAX_SIDE_FILE_BYTES if max_bytes is None else max_bytes
    try:
        with open(file, "rb") as f:
            # read what the file holds (read(n) allocates n bytes up front, so not read(max_bytes + 1)), and at
            # most one byte past the cap, should it grow meanwhile
            raw = f.read(min(os.fstat(f.fileno()).st_size, max_bytes) + 1)
    except OSError as e:
        raise CheckpointError(f"{file}: cannot read {what} ({e.strerror or e})") from None
    if len(raw) > max_bytes:
        raise CheckpointError(f"{file}: {what} is larger than {max_bytes} bytes, the most normscope reads; "
                              "not a real checkpoint file")
    return parse_json(raw, f"{file}: ", what)


def read_weight_map(index: Path, what: str) -> dict[str, str]:
    """The `weight_map` (tensor -> shard file) of a sharded checkpoint's index.

    Raises:
        CheckpointError: the index is unreadable or malformed, or its weight_map is empty (no tensors).
    """
    data = read_json(index, what)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: malformed index, expected a 'weight_map' of tensor -> file")
    if not weight_map:
        raise CheckpointError(f"{index}: 'weight_map' is empty: the checkpoint holds no tensors")
    return weight_map


def parse_json(raw: bytes, where: str, what: str) -> Any:
    """The JSON value of `raw` bytes; `where` prefixes every message (a file name and ": ").

    Raises:
        CheckpointError: invalid UTF-8 or JSON, too deep, an integer too long to convert, a lone surrogate.
    """
    try:
        value = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise CheckpointError(f"{where}malformed {what}: arrays or objects nested too deeply to parse (more than "
                              f"{MAX_DEPTH} levels are refused); not a real checkpoint file") from None
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{where}malformed {what}: not valid JSON (not UTF-8 at byte {e.start} of the "
                              f"{what}: {e.reason})") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where}malformed {what}: not valid JSON ({e})") from None
    except ValueError as e:  # int("9" * 5000): Python refuses integers of more than 4300 digits
        raise CheckpointError(f"{where}malformed {what}: holds a number too long to read "
                              f"({str(e).split(';')[0]})") from None
    _check_tree(value, where, what, _SURROGATE_ESCAPE.search(raw) is not None)
    return value


def _check_tree(value: Any, where: str, what: str, surrogates: bool) -> None:
    """Depth at most MAX_DEPTH; when the text escapes a surrogate, every string encodable as UTF-8."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = [*node.keys(), *node.values()] if surrogates else list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            if surrogates and isinstance(node, str):
                try:
                    node.encode("utf-8")
                except UnicodeEncodeError:
                    raise CheckpointError(f"{where}malformed {what}: the string {ascii(node)[:80]} holds a lone "
                                          "surrogate (\\ud800-\\udfff), which is not valid Unicode") from None
            continue
        if depth > MAX_DEPTH:
            raise CheckpointError(f"{where}malformed {what}: arrays or objects nested more than {MAX_DEPTH} levels "
                                  "deep; not a real checkpoint file")
        stack.extend((c, depth + 1) for c in children
                     if isinstance(c, (dict, list)) or (surrogates and isinstance(c, str)))
