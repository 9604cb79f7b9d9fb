"""An importance matrix over one model's plans: which weights each tensor gets, as llama-quantize hands them to
ggml_quantize_chunk, and llama-quantize's refusals.

ref: src/llama-quant.cpp (llama_model_quantize_impl): every loaded entry must be finite ("imatrix contains
non-finite value"); a tensor takes the entry of its GGUF name, of n_per_row x n_expert values, expert by
expert; an entry of another size is an error, except for token_embd (quantized without weights); and a tensor
whose type requires weights (plan.requires_imatrix) without them stops the quantization.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ...errors import ConfigError
from ...io.imatrix import Imatrix
from ...quant import GGMLFormat, PlannedTensor, get_format, is_gguf_scheme, requires_imatrix
from ...results import ImatrixUse, TensorInfo

__all__ = ["ImportancePlan", "plan_importance"]


@dataclass(frozen=True)
class ImportancePlan:
    weights: dict[str, np.ndarray]  # HF name -> (n_expert, n_per_row) float32
    status: dict[tuple[str, str], str]  # (scheme, HF name) -> "used" / "ignored" / "no entry"
    use: ImatrixUse | None


def plan_importance(imx: Imatrix | None, tensors: Sequence[TensorInfo], schemes: Sequence[str],
                    plans: Mapping[str, Mapping[str, PlannedTensor]], warnings: list[str]) -> ImportancePlan:
    """The weights of every tensor a GGUF scheme quantizes, and what each of its types does with them.

    Raises:
        ConfigError: a non-finite entry, an entry whose size is not the tensor's, or a tensor whose type
            llama-quantize refuses to make without importance weights (Q2_K under Q2_K_S, IQ2_XXS, …).
    """
    weights: dict[str, np.ndarray] = {}
    taken: set[str] = set()
    gguf = [s for s in schemes if is_gguf_scheme(s)]
    if imx is not None:
        for name in imx:
            w = imx[name]
            if not np.all(np.isfinite(w)):
                raise ConfigError(f"{imx.path}: the importance matrix of {name} holds {int(np.sum(~np.isfinite(w)))} "
                                  "non-finite values; llama-quantize refuses it (imatrix contains non-finite value)")
        for t in tensors:
            if not t.gguf_name or t.gguf_name not in imx or not any(plans[s][t.name].type for s in gguf):
                continue
            try:
                w = imx.weights_for(t.gguf_name, t.shape)
            except ConfigError:
                if t.gguf_name != "token_embd.weight":
                    raise
                warnings.append(f"{imx.path}: the importance matrix of token_embd.weight does not fit the tensor; "
                                "llama-quantize quantizes it without (as here)")
                continue
            weights[t.name] = w
            taken.add(t.gguf_name)
    status: dict[tuple[str, str], str] = {}
    refused: dict[str, list[str]] = {}
    for s in gguf:
        for t in tensors:
            typ = plans[s][t.name].type
            if typ is None:
                continue
            has = t.name in weights
            if requires_imatrix(t.gguf_name or t.name, typ, s) and not has:
                refused.setdefault(s, []).append(t.gguf_name or t.name)
            fmt = get_format(typ)
            if imx is not None and issubclass(fmt, GGMLFormat):
                status[(s, t.name)] = "no entry" if not has else ("ignored" if fmt.imatrix == "ignored" else "used")
    for s, names in refused.items():
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        where = f"{imx.path} has no entry for" if imx is not None else "no importance matrix (--imatrix) for"
        raise ConfigError(f"{s}: llama-quantize refuses to make it without importance weights (\"Missing importance "
                          f"matrix for tensor ... in a very low-bit quantization\"); {where} {shown}")
    use = None
    if imx is not None:
        missing = sorted({t.gguf_name or t.name for t in tensors for s in gguf
                          if status.get((s, t.name)) == "no entry"})
        used = sum(1 for t in tensors if any(status.get((s, t.name)) == "used" for s in gguf))
        use = ImatrixUse(path=str(imx.path), format=imx.format, datasets=tuple(imx.datasets),
                         chunk_count=imx.chunk_count, chunk_size=imx.chunk_size, entries=len(imx), used=used,
                         missing=tuple(missing), unused=tuple(sorted(n for n in imx if n not in taken)))
    return ImportancePlan(weights, status, use)
