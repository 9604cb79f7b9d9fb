"""normscope: what an LLM checkpoint really holds, before anyone spends GPU hours on it.

Python API (each returns a result object with `to_dict()`):

    >>> import normscope
    >>> r = normscope.analyze("example:gemma3-270m")  # doctest: +SKIP
    >>> r.tensor("model.layers.16.post_feedforward_layernorm.weight").norm.gain_max
    1657.0
"""

from .analysis import (analyze, analyze_model, check, check_model, clip, clip_model, clip_sweep, clip_sweep_model,
                       collect_imatrix, collect_imatrix_model, compare, compare_imatrices, compare_models, forward, forward_model, open_model, recipe,
                       recipe_model, simulate, simulate_model, summarize_imatrix)
from .analysis.engine import Executor, Model
from .analysis.forward import Evaluation, Sensitivity
from .errors import (CheckpointError, ConfigError, MissingExtraError, NormscopeError, OutputError, SourceNotFoundError,
                     UnknownNameError)
from .io.imatrix import Imatrix, ImatrixEntry, read_imatrix, write_imatrix
from .quant import dequantize_blocks, fake_quantize, quantize_blocks
from .results import (AnalyzeResult, CheckResult, ClipGranularity, ClipResult, ClipScope, ClipSweepResult,
                      CompareResult, Component, ForwardResult, ImatrixCollected, ImatrixCompareResult, ImatrixResult,
                      NormConvention, RecipeResult, Role, SimulateResult)

__version__ = "0.1.0"

__all__ = [
    # commands, each with a form that takes an open model
    "analyze", "analyze_model", "check", "check_model", "clip", "clip_model", "clip_sweep", "clip_sweep_model",
    "compare", "compare_models", "forward", "forward_model", "recipe", "recipe_model", "simulate", "simulate_model",
    "open_model", "Model", "Executor", "Evaluation", "Sensitivity",
    # quantization formats, bit-exact with their toolchains
    "dequantize_blocks", "fake_quantize", "quantize_blocks",
    # llama.cpp importance matrices
    "Imatrix", "ImatrixEntry", "read_imatrix", "write_imatrix", "summarize_imatrix", "compare_imatrices",
    "collect_imatrix", "collect_imatrix_model",
    # results and the user's choices
    "AnalyzeResult", "CheckResult", "ClipGranularity", "ClipResult", "ClipScope", "ClipSweepResult", "CompareResult",
    "Component", "ForwardResult", "ImatrixCollected", "ImatrixCompareResult", "ImatrixResult", "NormConvention",
    "RecipeResult", "Role", "SimulateResult",
    # errors
    "CheckpointError", "ConfigError", "MissingExtraError", "NormscopeError", "OutputError", "SourceNotFoundError",
    "UnknownNameError",
    "__version__",
]
