"""normscope: what an LLM checkpoint really holds, before anyone spends GPU hours on it.

Python API (each returns a result object with `to_dict()`):

    >>> import normscope
    >>> r = normscope.analyze("example:gemma3-270m")  # doctest: +SKIP
    >>> r.tensor("model.layers.16.post_feedforward_layernorm.weight").norm.gain_max
    1657.0
"""

from .analysis import analyze, open_model
from .analysis.check import check
from .analysis.clip import clip
from .analysis.clip_sweep import clip_sweep
from .analysis.compare import compare
from .analysis.forward import forward
from .analysis.recipe import recipe
from .analysis.simulate import simulate
from .errors import (CheckpointError, ConfigError, MissingExtraError, NormscopeError, OutputError,
                     SourceNotFoundError, UnknownNameError)
from .quant import dequantize_blocks, fake_quantize, quantize_blocks
from .results import ClipResult, ClipSweepResult
from .results import ForwardResult, RecipeResult
from .results import AnalyzeResult, CheckResult, CompareResult, Component, NormConvention, Role, SimulateResult

__version__ = "0.1.0"

__all__ = [
    "AnalyzeResult", "CheckResult", "CheckpointError", "CompareResult", "Component", "ConfigError", "MissingExtraError",
    "NormConvention",
    "NormscopeError", "OutputError", "Role", "SimulateResult", "SourceNotFoundError", "UnknownNameError", "__version__",
    "analyze", "check", "compare", "dequantize_blocks", "fake_quantize", "open_model", "quantize_blocks", "simulate",
    "ClipResult", "ClipSweepResult", "clip", "clip_sweep",
    "ForwardResult", "RecipeResult", "forward", "recipe",
]
