"""`recipe`: per-tensor ggml types that minimise the norm-aware error under a size budget.

Every tensor llama-quantize would quantize is measured with `simulate`'s own `measure_tensor` under
each candidate type (the default K-quants and Q8_0, each replaced by llama.cpp's fallback when the
row is not a whole number of blocks: on Gemma's 640-wide rows Q4_K becomes Q5_0, Q6_K becomes Q8_0).
Norms and other tensors llama.cpp never quantizes keep their fixed F32/F16 size. The objective of a
tensor under a type is its gain-weighted squared error Σ (r_i c_j d_ij)² (the plain Σ d² where no norm
weighs it), so the total is what `simulate`'s norm-aware SQNR pools; or, with a `forward --sensitivity`
result, that error calibrated per group to the KL the group caused alone (KL ≈ ½ δᵀFδ grows with the
squared error). A multiple-choice knapsack picks one type per tensor (solve.py).

The recipe is written as llama-quantize `--tensor-type` pairs (one anchored regex per type and tensor
kind, types that need no fallback, so the plan is the same whichever order llama.cpp applies them in),
which `simulate(..., tensor_types=…)` reproduces; and projected onto llm-compressor's `ignore` and
quanto's `exclude` lists (Linear modules the recipe keeps at ≥ `keep_bpw` bits, which a uniform 4-bit
scheme should leave in 16 bits).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, UnknownNameError
from ...io import DEFAULT_CHUNK_ELEMENTS
from ...io.imatrix import Imatrix, read_imatrix
from ...quant import FILE_TYPES, canonical_scheme, get_format, is_gguf_scheme, type_imatrix
from ...quant.layouts import LAYOUTS
from ...quant.plan import FALLBACK
from ...results import NormConvention, PlanSummary, ProgressFn, RecipeResult, RecipeTensor, Role, TensorInfo
from ..engine.importance import plan_importance
from ..engine.measure import Measured, measure_planned
from ..engine.model import Model, open_model
from ..engine.parallel import map_tensors
from ..engine.plans import norm_gains, plan_model, tensor_formats, unquantized_storage
from ..engine.workers import Executor, ModelOpener, chunk_threads
from ..metrics.quant_error import sqnr_db
from .solve import solve

__all__ = ["recipe", "recipe_model", "DEFAULT_TYPES", "KEEP_BPW"]

DEFAULT_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0")
KEEP_BPW = 6.0  # Linear tensors the recipe keeps at this many bits or more go to the 16-bit lists


def _fallback(fmt: str, row: int) -> str | None:
    """The type llama.cpp stores when rows of `row` values are not whole `fmt` blocks (ref: tensor_type_fallback);
    None when llama.cpp has no fallback for `fmt` (llama-quantize would stop: not a candidate for this tensor)."""
    if row % LAYOUTS[fmt].block_size == 0:
        return fmt
    new = FALLBACK.get(fmt)
    if new is None:
        return None
    return new if row % LAYOUTS[new].block_size == 0 else "F16"


def _file_type(name: str) -> str:
    """A quantized llama.cpp file type as upstream spells it (any case; llama-quantize's Q4_K is Q4_K_M)."""
    try:
        ft = canonical_scheme(name)
    except UnknownNameError:
        ft = name
    if ft not in FILE_TYPES or FILE_TYPES[ft] in ("F32", "F16", "BF16"):
        raise ConfigError(f"{name!r} is not a quantized llama.cpp file type; valid: "
                          + ", ".join(k for k, v in FILE_TYPES.items() if v not in ("F32", "F16", "BF16")))
    return ft


def recipe(source: str | Path | None = None, *, arch: str | None = None,
           norm_convention: NormConvention | str | None = None, token: str | None = None,
           cache_dir: Path | None = None, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
           progress: ProgressFn | None = None, jobs: int | None = 1, executor: Executor | str = "thread",
           ray_address: str | None = None, budget_bpw: float | None = None, budget_bytes: int | None = None,
           types: Sequence[str] = DEFAULT_TYPES, reference: str = "Q4_K_M",
           compare: Sequence[str] = ("Q4_K_M", "Q5_K_M"), sensitivity: Any = None,
           keep_bpw: float = KEEP_BPW, imatrix: str | Path | Imatrix | None = None) -> RecipeResult:
    """Choose a ggml type per tensor that minimises the norm-aware error under a size budget.

    Args:
        source: what analyze accepts.
        budget_bpw: bits per weight over all parameters (as `simulate` reports a plan's bpw), or
        budget_bytes: tensor bytes of the produced model.
        types: candidate ggml types (each replaced by llama.cpp's fallback where a row needs one).
        reference: the llama.cpp file type the recipe is held against (and that llama-quantize is given).
        compare: file types whose plans are summarised from the same measurements.
        sensitivity: a `forward(..., sensitivity=True)` result, its JSON document or a path to it: the
            objective becomes each group's measured KL, spread over its tensors by their error.
        keep_bpw: Linear tensors at this many bits or more go to the llm-compressor / quanto lists.
        imatrix: an importance matrix (as simulate's): every candidate is measured as llama-quantize
            --imatrix would quantize it, and the llama-quantize arguments start with `--imatrix FILE`.
        arch, norm_convention, token, cache_dir, chunk_elements, progress: as for `analyze`.
        jobs, executor, ray_address: workers for the measurements, as for `simulate`.

    Returns:
        RecipeResult: the choice per tensor, the recipe's and each compared plan's size and error, the
        llama-quantize arguments, llm-compressor ignore and quanto exclude lists.

    Raises:
        ConfigError: no budget, or one smaller than the smallest recipe; UnknownNameError: a type or file type.

    Example:
        >>> r = recipe("gemma-3-270m-hf", budget_bpw=7.6)  # doctest: +SKIP
        >>> r.recipe.total_error < r.plan("Q4_K_M").total_error
        True
    """
    imx = read_imatrix(imatrix) if imatrix is not None and not isinstance(imatrix, Imatrix) else imatrix
    with open_model(source, arch=arch, norm_convention=norm_convention, token=token, cache_dir=cache_dir) as model:
        return recipe_model(model, budget_bpw=budget_bpw, budget_bytes=budget_bytes, types=types,
                            reference=reference, compare=compare, sensitivity=sensitivity, keep_bpw=keep_bpw,
                            chunk_elements=chunk_elements, progress=progress, jobs=jobs, executor=executor,
                            ray_address=ray_address, imatrix=imx)


def recipe_model(model: Model, *, budget_bpw: float | None = None, budget_bytes: int | None = None,
                 types: Sequence[str] = DEFAULT_TYPES, reference: str = "Q4_K_M",
                 compare: Sequence[str] = ("Q4_K_M", "Q5_K_M"), sensitivity: Any = None, keep_bpw: float = KEEP_BPW,
                 chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, progress: ProgressFn | None = None,
                 jobs: int | None = 1, executor: Executor | str = "thread", ray_address: str | None = None,
                 opener: ModelOpener | None = None, imatrix: Imatrix | None = None) -> RecipeResult:
    """`recipe` on an already open model (jobs/executor/opener as for `simulate_model`)."""
    if (budget_bpw is None) == (budget_bytes is None):
        raise ConfigError("give exactly one budget: --budget-bpw (bits per weight) or --budget-bytes")
    reference, *compare = (_file_type(ft) for ft in (reference, *compare))
    types = [get_format(t).name for t in types]
    for t in types:
        if t not in LAYOUTS or t in ("F32", "BF16"):
            raise ConfigError(f"--types {t}: a recipe chooses among ggml types such as {', '.join(DEFAULT_TYPES)}")
        if imatrix is None and type_imatrix(t).startswith("required"):
            raise ConfigError(f"--types {t}: llama-quantize makes {t} only with an importance matrix; collect one "
                              "with `normscope imatrix collect` and pass it")
    warnings = list(model.warnings)
    labels = list(dict.fromkeys([reference, *compare]))
    plans = {ft: plan_model(model, ft, warnings=warnings, has_imatrix=imatrix is not None) for ft in labels}
    ref = plans[reference]
    work = [t for t in model.tensors if ref[t.name].type is not None]
    n_params = sum(t.n_params for t in model.tensors)
    fixed = {t.name: unquantized_storage(model, t, reference) for t in model.tensors if ref[t.name].type is None}
    candidates = {t.name: list(dict.fromkeys([*(f for k in types if (f := _fallback(k, t.shape[-1]))),
                                              *(plans[ft][t.name].type for ft in labels if plans[ft][t.name].type)]))
                  for t in work}
    fixed_bytes = sum(size for _, size in fixed.values())
    budget = int(budget_bytes) if budget_bytes is not None else int(math.floor(budget_bpw * n_params / 8))
    smallest = fixed_bytes + sum(min(get_format(k).nbytes(t.shape) for k in candidates[t.name]) for t in work)
    if budget < smallest:
        raise ConfigError(f"budget {budget:,} bytes ({8 * budget / n_params:.3f} bpw) is below the smallest recipe "
                          f"of these types: {smallest:,} bytes ({8 * smallest / n_params:.3f} bpw)")
    # -- measure every candidate of every tensor -------------------------------------------------
    weights = plan_importance(imatrix, work, labels, plans, warnings).weights  # also llama-quantize's refusals
    gains = norm_gains(model)
    task = partial(measure_planned, formats={t.name: tensor_formats(candidates[t.name], gains.get(t.name),
                                                                    weights.get(t.name)) for t in work},
                   chunk_elements=chunk_elements, threads=chunk_threads(jobs, executor))
    results = map_tensors(opener or ModelOpener.of(model), model, work, task, jobs=jobs, executor=executor,
                          ray_address=ray_address,
                          progress=progress)
    measured: dict[str, dict[str, Measured]] = {
        t.name: {k: m for k, m in zip(candidates[t.name], ms) if m is not None} for t, ms in zip(work, results)}
    objective, scale = "norm_aware", {t.name: 1.0 for t in work}
    if sensitivity is not None:
        objective, scale = "sensitivity", _calibrate(sensitivity, work, measured, model, warnings)

    def err(t: TensorInfo, k: str) -> float:
        m = measured[t.name][k]
        return scale[t.name] * (m.sums.wd2 if m.norm_aware is not None else m.sums.d2)

    # -- solve --------------------------------------------------------------------------------------
    options = [[(get_format(k).nbytes(t.shape), err(t, k)) for k in measured[t.name]] for t in work]
    names = [list(measured[t.name]) for t in work]
    seed = [names[i].index(ref[t.name].type) for i, t in enumerate(work)]
    pick = solve(options, budget - fixed_bytes, seeds=[seed])
    choice = {t.name: names[i][pick[i]] for i, t in enumerate(work)}
    # -- outputs --------------------------------------------------------------------------------------
    rows = tuple(RecipeTensor(t.name, t.gguf_name, t.role, t.layer, t.shape, choice[t.name], ref[t.name].type,
                              get_format(choice[t.name]).bits_per_weight(t.shape),
                              get_format(choice[t.name]).nbytes(t.shape), err(t, choice[t.name]),
                              err(t, ref[t.name].type),
                              {k: (get_format(k).nbytes(t.shape), err(t, k)) for k in measured[t.name]})
                 for t in work)
    summary = _summary("recipe", model, choice, fixed, measured, err, n_params)
    others = tuple(_summary(ft, model, {t.name: plans[ft][t.name].type for t in work}, fixed, measured, err, n_params)
                   for ft in labels)
    pairs = _tensor_types(work, choice)
    args = _llama_args(pairs)
    if imatrix is not None:  # the recipe was measured with these importance weights: quantize with them too
        args = (f"--imatrix {imatrix.path}", *args)
        notes_extra = [f"measured with the importance matrix {imatrix.path}: {len(weights)} of {len(work)} tensors "
                       "have an entry (the others are quantized without, as llama-quantize does)"]
    else:
        notes_extra = []
    keep = tuple(t.name.rsplit(".", 1)[0] for t, r in zip(work, rows)
                 if t.role.is_linear and t.role is not Role.LM_HEAD and r.bits_per_weight >= keep_bpw)
    notes = _notes(summary, others, reference, rows, keep, keep_bpw, objective, budget) + notes_extra
    options_doc = {"budget_bpw": budget_bpw, "budget_bytes": budget_bytes, "types": list(types),
                   "reference": reference, "compare": list(compare), "keep_bpw": keep_bpw,
                   "sensitivity": objective == "sensitivity",
                   "imatrix": str(imatrix.path) if imatrix is not None else None}
    return RecipeResult(model.source, model.detected.spec.name, objective, budget, 8.0 * budget / n_params, reference,
                        summary, others, rows, pairs, args, ("lm_head", *keep), ("lm_head", *keep), tuple(notes),
                        tuple(warnings), options_doc)


def _load_sensitivity(sensitivity: Any) -> tuple[str | None, list[dict[str, Any]]]:
    if isinstance(sensitivity, (str, Path)):
        path = Path(sensitivity).expanduser()
        try:
            sensitivity = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: not a readable forward JSON report ({e})") from None
    doc = sensitivity if isinstance(sensitivity, dict) else sensitivity.to_dict()
    if doc.get("schema") != "normscope.forward" or not doc.get("sensitivity"):
        raise ConfigError("--sensitivity needs a `normscope forward --sensitivity --json` report with groups")
    return doc.get("sensitivity_scheme"), doc["sensitivity"]


def _calibrate(sensitivity: Any, work: Sequence[TensorInfo], measured: dict[str, dict[str, Measured]],
               model: Model, warnings: list[str]) -> dict[str, float]:
    """Per tensor: KL per unit of error, from the group KL `forward --sensitivity` measured with its scheme."""
    scheme, groups = _load_sensitivity(sensitivity)
    plan = plan_model(model, scheme) if scheme else {}
    names = {t.name for t in work}
    scale: dict[str, float] = {}
    for g in groups:
        members = [n for n in g["tensors"] if n in names]
        ref = [(n, plan[n].type) for n in members if n in plan and plan[n].type in measured.get(n, {})]
        base = sum(_raw_err(measured[n][k]) for n, k in ref)
        kl = g["kl"]["mean"]
        if base > 0 and isinstance(kl, (int, float)):
            for n in members:
                scale[n] = max(float(kl), 0.0) / base
    known = [v for v in scale.values() if v > 0]
    fill = float(np.median(known)) if known else 1.0
    missing = [t.name for t in work if t.name not in scale]
    if missing:
        warnings.append(f"sensitivity: {len(missing)} tensors have no measured group; their errors are scaled by the "
                        "median KL per unit of error of the others")
    return {t.name: scale.get(t.name, fill) for t in work}


def _raw_err(m: Measured) -> float:
    return m.sums.wd2 if m.norm_aware is not None else m.sums.d2


def _summary(label: str, model: Model, choice: dict[str, str | None], fixed: dict[str, tuple[str, int]],
             measured: dict[str, dict[str, Measured]], err, n_params: int) -> PlanSummary:
    counts: Counter[str] = Counter()
    nbytes = 0
    total = 0.0
    sums = np.zeros(4)  # Σd², Σx², Σwd², Σwx² (the last two over norm-weighed tensors, as simulate pools them)
    aware = False
    for t in model.tensors:
        if t.name in fixed:
            stored, size = fixed[t.name]
        else:
            stored = choice[t.name]
            size = get_format(stored).nbytes(t.shape)
            m = measured[t.name][stored]
            total += err(t, stored)
            sums[:2] += (m.sums.d2, m.sums.x2)
            if m.norm_aware is not None:
                sums[2:] += (m.sums.wd2, m.sums.wx2)
                aware = aware or math.isfinite(m.norm_aware.delta_db)
        counts[stored] += 1
        nbytes += size
    d2, x2, wd2, wx2 = sums.tolist()
    return PlanSummary(label, nbytes, 8.0 * nbytes / n_params if n_params else 0.0, total, sqnr_db(x2, d2),
                       sqnr_db(wx2, wd2) if aware else None, dict(counts.most_common()))


_BLOCK = re.compile(r"^blk\.(\d{1,9})\.(.+)$")


def _tensor_types(work: Sequence[TensorInfo], choice: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """Anchored regexes per (tensor kind, type): `^blk\\.(0|3|17)\\.attn_v\\.weight$=Q8_0`, one per pair."""
    grouped: dict[tuple[str, str], list[int]] = defaultdict(list)
    single = []
    for t in work:
        name = t.gguf_name or t.name
        m = _BLOCK.match(name)
        if m:
            grouped[(m.group(2), choice[t.name])].append(int(m.group(1)))
        else:
            single.append((f"^{re.escape(name)}$", choice[t.name]))
    out = list(single)
    for (suffix, fmt), layers in sorted(grouped.items(), key=lambda kv: (kv[0][0], min(kv[1]))):
        alt = "|".join(str(i) for i in sorted(layers))
        out.append((f"^blk\\.({alt})\\.{re.escape(suffix)}$", fmt))
    return tuple(out)


def _llama_args(pairs: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """`--tensor-type REGEX=TYPE`, one per pair: what llama-quantize and `normscope simulate` both take."""
    return tuple(f"--tensor-type {pattern}={fmt}" for pattern, fmt in pairs)


def _notes(recipe: PlanSummary, plans: Sequence[PlanSummary], reference: str, rows: Sequence[RecipeTensor],
           keep: Sequence[str], keep_bpw: float, objective: str, budget: int) -> list[str]:
    what = "norm-aware squared error" if objective == "norm_aware" else "KL-calibrated error"
    notes = []
    if all(r.type == r.reference_type for r in rows):
        notes.append(f"the recipe is {reference}'s own plan: within the budget no other candidate type lowers the "
                     f"error of any tensor enough to pay for its bytes ({budget - recipe.nbytes:,} bytes of the budget "
                     "left unused)")
    on_grid = [r for r in rows if any(b > r.candidates[r.reference_type][0] and e > r.reference_error
                                      for b, e in r.candidates.values())]
    if len(on_grid) * 2 > len(rows):
        notes.append(f"on {len(on_grid)} of {len(rows)} tensors a larger type measures more error than {reference}'s "
                     f"plan: the weights already lie on {reference}'s grid (a checkpoint dequantized from a "
                     f"{reference} GGUF re-quantizes to it almost losslessly), so {reference}'s plan is hard to beat "
                     "on this checkpoint")
    for p in plans:
        if p.total_error > 0:
            ratio = recipe.total_error / p.total_error
            notes.append(f"recipe: {recipe.bits_per_weight:.3f} bpw, total {what} {ratio:.3g}× that of "
                         f"{p.label}'s plan ({p.bits_per_weight:.3f} bpw)")
    moved = Counter((r.reference_type, r.type) for r in rows if r.type != r.reference_type)
    if moved:
        notes.append(f"against {reference}: " + ", ".join(f"{n} tensor{'s' if n > 1 else ''} {a} → {b}"
                                                          for (a, b), n in moved.most_common(6)))
    notes.append("norms and every other 1-D tensor stay F32 as llama.cpp keeps them; they are not part of the choice")
    notes.append(f"llm-compressor ignore / quanto exclude: lm_head and the {len(keep)} Linear modules the recipe "
                 f"keeps at ≥ {keep_bpw:g} bits, to leave in 16 bits under a uniform 4-bit scheme (a projection "
                 "of the ggml recipe: those tools cannot mix bit widths per tensor)")
    return notes
