"""Pure accumulators, fed chunk by chunk: weight statistics, exact quantiles, norm statistics, quantization
error. They know values and shapes, never a model or a file."""

from .norms import norm_stats, percentiles
from .quant_error import ErrorAccumulator, ErrorSums, rel_l2, sqnr_db
from .quantiles import PERCENTILES, ExactQuantiles
from .stats import WeightAccumulator, count_beyond, top_k_indices

__all__ = ["ErrorAccumulator", "ErrorSums", "ExactQuantiles", "PERCENTILES", "WeightAccumulator", "count_beyond",
           "norm_stats", "percentiles", "rel_l2", "sqnr_db", "top_k_indices"]
