"""What `normscope imatrix` returns: an importance matrix summarised tensor by tensor, and two compared."""

from __future__ import annotations

import dataclasses

from .base import ResultBase

__all__ = ["IMATRIX_SCHEMA_VERSION", "ImatrixFileInfo", "ImatrixTensor", "ImatrixCoverage", "ImatrixResult",
           "ImatrixPair", "ImatrixCompareResult", "ImatrixCollected"]

IMATRIX_SCHEMA_VERSION = "1.0"


@dataclasses.dataclass(frozen=True)
class ImatrixFileInfo(ResultBase):
    path: str
    format: str  # "gguf" or "dat" (llama-imatrix's legacy file)
    datasets: tuple[str, ...]  # the calibration text(s), as the file names them
    chunk_count: int  # chunks of calibration text it saw (0: the file does not say)
    chunk_size: int | None  # tokens per chunk (GGUF files only)
    entries: int


@dataclasses.dataclass(frozen=True)
class ImatrixTensor(ResultBase):
    """One entry, read through the weights llama-quantize derives (sums / tokens per expert).

    The concentration figures are of the per-column profile: the weights of a dense tensor, the mean over the
    experts tokens reached for a MoE one."""

    name: str  # GGUF tensor name
    n_per_row: int
    n_expert: int
    tokens: int  # GGUF: most tokens any expert saw; .dat: the entry's ncall
    idle_experts: int  # experts no token reached (their weights are 1)
    non_finite: int  # NaN or infinite stored sums
    mean: float  # mean weight of the profile (E[x^2] of the input column)
    top1_share: float  # share of the profile's sum in its top 1% of columns
    entropy: float  # of the profile as a distribution over columns, in bits / log2(columns): 1 = uniform
    dominant: tuple[int, ...]  # columns with the largest weights, largest first
    dominant_share: tuple[float, ...]  # each one's share of the sum


@dataclasses.dataclass(frozen=True)
class ImatrixCoverage(ResultBase):
    """The importance matrix against a model: which tensors llama-quantize would quantize with weights."""

    model: str
    quantized: int  # tensors llama-quantize quantizes (2-D weights of its plan)
    covered: int  # ... with an entry of the right size
    covered_params: float  # share of their parameters covered
    missing: tuple[str, ...]  # quantized tensors without an entry (GGUF names)
    mismatched: tuple[str, ...]  # entries whose size is not the tensor's (collected on another model)
    extra: tuple[str, ...]  # entries for no tensor of the model


@dataclasses.dataclass(frozen=True)
class ImatrixResult(ResultBase):
    file: ImatrixFileInfo
    tensors: tuple[ImatrixTensor, ...]  # most concentrated (largest top1_share) first
    unreached: tuple[str, ...]  # entries no token reached at all (every count 0)
    coverage: ImatrixCoverage | None  # with a model
    notes: tuple[str, ...]
    schema: str = "normscope.imatrix"
    schema_version: str = IMATRIX_SCHEMA_VERSION


@dataclasses.dataclass(frozen=True)
class ImatrixPair(ResultBase):
    name: str
    values: int  # weights compared (n_per_row x n_expert)
    cosine: float  # of the two weight vectors
    spearman: float  # rank correlation of the two weight vectors
    top1_overlap: float  # share of A's top 1% of columns also in B's


@dataclasses.dataclass(frozen=True)
class ImatrixCompareResult(ResultBase):
    a: ImatrixFileInfo
    b: ImatrixFileInfo
    pairs: tuple[ImatrixPair, ...]  # least rank agreement first
    only_a: tuple[str, ...]
    only_b: tuple[str, ...]
    mismatched: tuple[str, ...]  # in both, of different sizes
    median_cosine: float
    median_spearman: float
    notes: tuple[str, ...]
    schema: str = "normscope.imatrix_compare"
    schema_version: str = IMATRIX_SCHEMA_VERSION


@dataclasses.dataclass(frozen=True)
class ImatrixCollected(ResultBase):
    """What `normscope imatrix collect` wrote."""

    path: str
    dataset: str  # the text file, or builtin:public-domain
    chunk_count: int
    chunk_size: int
    tokens: int  # tokens run through the model (whole chunks)
    entries: int
    skipped: tuple[str, ...]  # Linear weights not collected: no GGUF name, or outside the blocks (lm_head)
