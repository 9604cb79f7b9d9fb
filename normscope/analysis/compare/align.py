"""Which tensors of a variant go with which of the base, and their row chunks streamed side by side.

Tensors are paired by canonical HF name (multimodal prefixes rewritten), then by GGUF name; a tied head
is paired with the other side's embedding. Pairs of the same shape are streamed together in row chunks
and measured as variant − base; everything else is listed as unmatched, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ...errors import CheckpointError
from ...io import DEFAULT_CHUNK_ELEMENTS
from ...results import Role, TensorDiff, TensorInfo, Unmatched
from ..engine.model import Model
from ..engine.select import select_tensors
from ..metrics.quant_error import ErrorAccumulator, ErrorSums

__all__ = ["align", "paired_rows", "diff_tensors"]


def _keys(model: Model, info: TensorInfo) -> list[str]:
    keys = [model.detected.spec.canonical(info.name)]
    if info.gguf_name:
        keys.append("gguf:" + info.gguf_name)
    return keys


def align(base: Model, variant: Model, include: Sequence[str] = (), exclude: Sequence[str] = ()
          ) -> tuple[list[tuple[TensorInfo, TensorInfo, str]], list[Unmatched]]:
    """Pair the tensors of two models: ([(base tensor, variant tensor, note)], unmatched tensors).

    Pairs are by canonical HF name, then by GGUF name; shapes must agree (else both sides are listed as
    unmatched with the two shapes). An untied lm_head on one side pairs with the embedding of a tied
    model on the other (that embedding is its output head).
    """
    b_tensors = select_tensors(base.tensors, include, exclude)
    v_tensors = select_tensors(variant.tensors, include, exclude)
    index: dict[str, TensorInfo] = {}
    for t in v_tensors:
        for k in _keys(variant, t):
            index.setdefault(k, t)
    used: set[str] = set()
    pairs, unmatched = [], []
    for t in b_tensors:
        other = next((index[k] for k in _keys(base, t) if k in index and index[k].name not in used), None)
        note = ""
        if other is None and t.role is Role.LM_HEAD and variant.tied_embeddings:
            # the variant's embedding is its head too: it may pair twice
            other = next((v for v in v_tensors if v.role is Role.EMBEDDING), None)
            note = "the variant ties its head to the embedding: compared with its token embedding"
        if other is None:
            unmatched.append(Unmatched(t.name, "base", t.shape, "not in the variant"))
            continue
        if tuple(other.shape) != tuple(t.shape):
            unmatched.append(Unmatched(t.name, "base", t.shape, f"shape {_shape(t.shape)} vs {_shape(other.shape)}"))
            unmatched.append(Unmatched(other.name, "variant", other.shape,
                                       f"shape {_shape(other.shape)} vs {_shape(t.shape)}"))
            used.add(other.name)
            continue
        used.add(other.name)
        if not t.n_params:
            note = "empty (a zero-size dimension): no values to compare"
        pairs.append((t, other, note))
    if base.tied_embeddings and not any(a.role is Role.LM_HEAD for a, _, _ in pairs):
        emb = next((a for a, _, _ in pairs if a.role is Role.EMBEDDING), None)
        head = next((v for v in v_tensors if v.role is Role.LM_HEAD and v.name not in used), None)
        if emb is not None and head is not None and head.shape == emb.shape:
            pairs.append((emb, head, "the base ties its head to the embedding: its embedding is compared"))
            used.add(head.name)
    for t in v_tensors:
        if t.name not in used:
            unmatched.append(Unmatched(t.name, "variant", t.shape, "not in the base"))
    return pairs, unmatched


def _shape(shape: Sequence[int]) -> str:
    return "×".join(map(str, shape)) or "scalar"


def paired_rows(a: Model, ia: TensorInfo, b: Model, ib: TensorInfo, max_elements: int = DEFAULT_CHUNK_ELEMENTS
                ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first row, rows of a, the same rows of b), whatever row chunks each model reads in. A tensor whose rows
    are longer than a chunk (a long 1-D norm) comes in flat pieces, each as one row: (0, (1, k), (1, k))."""
    row_len = ia.shape[-1] if ia.shape else 1
    if row_len > max_elements:
        itp = b.iter_values(ib, max_elements)
        for start, va in a.iter_values(ia, max_elements):
            va = va.copy()  # the reader reuses its buffer
            got = next(itp, None)
            if got is None or got[0] != start or got[1].size != va.size:
                raise CheckpointError(f"{ib.name}: the two models read in different pieces; cannot pair them")
            yield 0, va.reshape(1, -1), got[1].reshape(1, -1)
        return
    ita, itb = a.iter_rows(ia, max_elements), b.iter_rows(ib, max_elements)
    bufa = bufb = np.zeros((0, row_len), np.float32)
    row = 0
    while True:
        if not len(bufa):
            nxt = next(ita, None)
            bufa = nxt[1].reshape(-1, row_len) if nxt is not None else bufa
        if not len(bufb):
            nxt = next(itb, None)
            bufb = nxt[1].reshape(-1, row_len) if nxt is not None else bufb
        n = min(len(bufa), len(bufb))
        if n == 0:
            return
        yield row, bufa[:n], bufb[:n]
        bufa, bufb, row = bufa[n:], bufb[n:], row + n


def diff_tensors(base: Model, a: TensorInfo, variant: Model, b: TensorInfo, note: str, chunk_elements: int
          ) -> tuple[TensorDiff, ErrorSums]:
    acc = ErrorAccumulator(a.n_params)
    identical = True
    for _, x, y in paired_rows(base, a, variant, b, chunk_elements):
        identical = identical and bool(np.array_equal(x, y, equal_nan=True))
        acc.update(x, y)
    if acc.second_pass_needed():
        acc.start_second_pass()
        for _, x, y in paired_rows(base, a, variant, b, chunk_elements):
            acc.second_pass(x, y)
    diff = TensorDiff(a.name, b.source_name, a.role, a.layer, a.shape, a.dtype, b.dtype, identical, acc.finish(),
                      note)
    return diff, acc.error_sums()
