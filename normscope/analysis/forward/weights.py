"""Variants built in place on the one loaded model: fake-quantized weights and clipped norm gains.

`WeightEditor` changes parameters of the float32 torch model in place, row chunk by row chunk, and
keeps each changed tensor's original (in bf16 when that is lossless, as for a bf16 checkpoint) until
`restore()`: one model copy plus the originals of what a variant changed, never two models.

A quantized tensor is exactly what `simulate` measures: a ggml type is `dequantize_blocks(quantize_blocks(w))`
of normscope's bit-exact kernels, a simulated scheme its `fake_quantize`, on the same row chunks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...io import DEFAULT_CHUNK_ELEMENTS
from ...io.writer import FLOAT_DTYPES, encode
from ...quant import GGMLFormat, get_format
from ...results import TensorInfo
from ..engine.clipping import clip_rows, convention_of, tensor_thresholds
from ..engine.model import Model

__all__ = ["WeightEditor", "QuantCache", "quantize_in_place", "ClipChange", "clip_norms"]


class WeightEditor:
    """Edit a torch model's parameters by HF tensor name; `restore()` puts every original back."""

    def __init__(self, torch_model: Any):
        import torch

        self._torch = torch
        self.params: dict[str, Any] = {}
        for name, p in torch_model.named_parameters(remove_duplicate=False):
            self.params[name] = p
        self._backup: dict[str, Any] = {}

    def find(self, name: str) -> Any | None:
        """The parameter of an HF tensor name (exact, else the one parameter whose name ends with it)."""
        p = self.params.get(name)
        if p is not None:
            return p
        hits = [v for k, v in self.params.items() if k.endswith("." + name) or name.endswith("." + k)]
        return hits[0] if len(hits) == 1 else None

    def values(self, name: str) -> np.ndarray:
        """The current float32 values of a parameter as a numpy view (writes go to the model)."""
        p = self.find(name)
        if p is None:
            raise KeyError(name)
        if p.dtype != self._torch.float32:
            raise TypeError(f"{name}: parameter is {p.dtype}, forward edits float32 models only")
        return p.data.numpy()

    def original(self, name: str) -> np.ndarray:
        """The value before any edit (a copy when the tensor was edited, else the live view)."""
        if name in self._backup:
            return self._backup[name].float().numpy()
        return self.values(name)

    def edit(self, name: str) -> np.ndarray:
        """A writable view of a parameter, its original saved first (once)."""
        view = self.values(name)
        if name not in self._backup:
            p = self.find(name)
            low = p.data.to(self._torch.bfloat16)
            self._backup[name] = low if self._torch.equal(low.float(), p.data) else p.data.clone()
        return view

    @property
    def edited(self) -> list[str]:
        return list(self._backup)

    def restore(self) -> None:
        for name, saved in self._backup.items():
            self.find(name).data.copy_(saved.float() if saved.dtype != self._torch.float32 else saved)
        self._backup.clear()


class QuantCache:
    """ggml blocks of (tensor, type) pairs that more than one variant uses: quantized once, read back each time.

    Holds the bytes llama.cpp would write (a Q4_K tensor is 4.5 bits per weight), not float copies.
    """

    def __init__(self, keep: Iterable[tuple[str, str]] = ()):
        self.keep = set(keep)
        self.blocks: dict[tuple[str, str], list[np.ndarray]] = {}

    def get(self, key: tuple[str, str]) -> list[np.ndarray] | None:
        return self.blocks.get(key)

    def put(self, key: tuple[str, str], chunks: list[np.ndarray]) -> None:
        if key in self.keep:
            self.blocks[key] = chunks


def _chunk_rows(row_len: int, fmt: type, chunk_elements: int) -> int:
    multiple = fmt.row_multiple
    rows = max(1, chunk_elements // max(1, row_len))
    return max(multiple, rows // multiple * multiple)


def quantize_in_place(editor: WeightEditor, info: TensorInfo, fmt_name: str, cache: QuantCache | None = None,
                      chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> None:
    """Replace a tensor's values by what `fmt_name` stores and reads back (row chunks, as simulate does)."""
    fmt = get_format(fmt_name)
    view = editor.edit(info.name)
    row_len = info.shape[-1] if info.shape else 1
    rows = view.reshape(-1, row_len)  # a view: writes reach the parameter
    step = _chunk_rows(row_len, fmt, chunk_elements)
    key = (info.name, fmt_name)
    if issubclass(fmt, GGMLFormat):
        cached = cache.get(key) if cache is not None else None
        chunks = []
        for i, r in enumerate(range(0, rows.shape[0], step)):
            part = rows[r:r + step]
            raw = cached[i] if cached is not None else fmt.quantize_blocks(part)
            part[...] = fmt.dequantize_blocks(raw, part.shape)
            chunks.append(raw)
        if cache is not None and cached is None:
            cache.put(key, chunks)
        return
    absmax = float(np.abs(rows).max()) if fmt.per_tensor and rows.size else None
    for r in range(0, rows.shape[0], step):
        part = rows[r:r + step]
        part[...] = fmt.fake_quantize(part, absmax).reshape(part.shape)


@dataclass(frozen=True)
class ClipChange:
    name: str
    threshold: float  # the percentile of |effective gain|
    clipped: int
    max_before: float  # largest |effective gain|
    max_after: float


def clip_norms(editor: WeightEditor, model: Model, norms: Sequence[TensorInfo], percentile: float) -> list[ClipChange]:
    """Clip each norm's effective gain in place exactly as `normscope clip` writes it.

    The threshold is `clip`'s (that tensor's percentile of |gain|, from the checkpoint's values) and the
    clipped values are `clip_rows`' (clipped in the convention, stored back in it and rounded to the
    tensor's storage dtype, every other value kept bit for bit), so the variant equals the directory
    `normscope clip --percentile P` would write.
    """
    out = []
    for info in norms:
        if editor.find(info.name) is None:
            continue
        conv = convention_of(info)
        (threshold,), top = tensor_thresholds(model, info, [percentile])
        values = editor.values(info.name).reshape(1, -1)
        dtype = info.dtype if info.dtype in FLOAT_DTYPES else "F32"
        raw = encode(values, dtype)
        if not np.array_equal(raw.astype(np.float32), values):  # the model does not hold the stored values
            dtype, raw = "F32", values.copy()
        new, mask, mag = clip_rows(raw, dtype, threshold, conv)
        n = int(mask.sum())
        if not n:
            continue
        editor.edit(info.name).reshape(1, -1)[...] = new.astype(np.float32)
        out.append(ClipChange(info.name, threshold, n, top, float(mag.max())))
    return out
