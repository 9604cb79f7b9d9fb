"""What `recipe` returns: a ggml type per tensor under a size budget, and the plans it was compared with."""

from __future__ import annotations

import dataclasses
from typing import Any

from .base import ResultBase
from .common import Role, SourceInfo

__all__ = ["RECIPE_SCHEMA_VERSION", "RecipeTensor", "PlanSummary", "RecipeResult"]

RECIPE_SCHEMA_VERSION = "1.0"


@dataclasses.dataclass(frozen=True)
class RecipeTensor(ResultBase):
    """One tensor llama.cpp would quantize: the type the recipe gives it and what every candidate costs."""

    name: str
    gguf_name: str | None
    role: Role
    layer: int | None
    shape: tuple[int, ...]
    type: str  # the recipe's choice (a type the row length can hold: fallbacks already applied)
    reference_type: str  # the reference file type's plan (e.g. Q4_K_M's)
    bits_per_weight: float
    nbytes: int
    error: float  # the objective of the chosen type (see RecipeResult.objective)
    reference_error: float
    candidates: dict[str, tuple[int, float]]  # type -> (bytes, objective)


@dataclasses.dataclass(frozen=True)
class PlanSummary(ResultBase):
    """A whole plan (the recipe, or a llama.cpp file type's) measured on the same tensors."""

    label: str
    nbytes: int  # tensor data of the model it produces
    bits_per_weight: float  # over all parameters, as simulate counts it
    total_error: float  # Σ objective over the quantized tensors
    sqnr_db: float  # plain, over the quantized tensors
    norm_aware_sqnr_db: float | None  # over the quantized tensors a norm weighs (simulate's figure)
    type_counts: dict[str, int]


@dataclasses.dataclass(frozen=True)
class RecipeResult(ResultBase):
    source: SourceInfo
    architecture: str
    objective: str  # "norm_aware" (Σ gain-weighted squared error) or "sensitivity" (KL-calibrated)
    budget_bytes: int
    budget_bits_per_weight: float
    reference: str  # the file type whose plan the recipe is measured against and llama-quantize is given
    recipe: PlanSummary
    plans: tuple[PlanSummary, ...]  # the llama.cpp file types compared (same measurements)
    tensors: tuple[RecipeTensor, ...]
    tensor_types: tuple[tuple[str, str], ...]  # (regex, type): llama-quantize --tensor-type, simulate tensor_types
    llama_quantize: tuple[str, ...]  # the arguments, one option per item
    llm_compressor_ignore: tuple[str, ...]  # Linear modules to keep in 16 bits under a 4-bit scheme
    quanto_exclude: tuple[str, ...]
    notes: tuple[str, ...]
    warnings: tuple[str, ...]
    options: dict[str, Any]
    schema: str = "normscope.recipe"
    schema_version: str = RECIPE_SCHEMA_VERSION

    def plan(self, label: str) -> PlanSummary:
        for p in (self.recipe, *self.plans):
            if p.label == label:
                return p
        raise KeyError(label)

    def tensor(self, name: str) -> RecipeTensor:
        for t in self.tensors:
            if name in (t.name, t.gguf_name):
                return t
        raise KeyError(name)
